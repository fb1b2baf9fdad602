//! ferrymq's messaging domain, above the store and below the protocols.
//!
//! * [`metadata`] — topics (type, queues) and consumer groups (FIFO, attempts, broadcast).
//! * [`send`] — the limits on produced messages and where each message goes.
//! * [`dedup`] — a send whose message id the topic received recently is answered, not stored.
//! * [`delivery`] — receive with an invisible time, ack, redelivery, retry and dead-letter topics.
//! * [`timer`] — delay and timer messages.
//! * [`transaction`] — half messages, commit/rollback, check-back, discard.
//! * [`filter`] — TAG and SQL92 filters.
//! * [`hooks`] — where filter and route plugins plug in.
//! * [`offsets`] — consumer progress; [`loss`] — what retention deleted before groups consumed it.
//! * [`system_topic`] — the broker's own records (plugin registry, audit log) kept in system topics.
//! * [`broker`] — the whole, with its background thread.
//!
//! No async runtime, no network protocol: the server translates RocketMQ's protocols to these calls.

pub mod broker;
pub mod dedup;
pub mod delivery;
pub mod durable_file;
pub mod filter;
pub mod hooks;
pub mod loss;
pub mod metadata;
pub mod offsets;
pub mod search;
pub mod send;
pub mod system_topic;
pub mod timer;
pub mod transaction;

pub use broker::{Broker, BrokerConfig, BrokerError, SendDone, SendError, SendReceipt};
