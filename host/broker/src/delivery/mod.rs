//! Delivery to consumer groups: receive with an invisible time, ack, change the invisible time,
//! redeliver, dead-letter.
//!
//! Each (subscriber, stored topic, queue) has a cursor: `commit` (every message below is done — acked,
//! filtered out, or moved on), the messages in flight with their invisible deadline, and the done
//! offsets above `commit`. A subscriber is the group, or for a broadcast group one client of it.
//!
//! Redelivery takes one of two paths:
//! * **retry topic** (clustering groups that are not FIFO): when a message's invisible time runs out it
//!   is copied to `%RETRY%<group>_<topic>` with its attempt count and the original is done, so a message
//!   that keeps failing never holds back its queue;
//! * **in place** (FIFO and broadcast groups): the message stays where it is and is delivered again
//!   from the cursor, so a FIFO message group keeps its order; at most one message of a message group
//!   is in flight.
//!
//! Either way a message delivered `max_attempts` times without an ack goes to `%DLQ%<group>`.
//! Receipt handles name the broker run, so handles from before a restart are invalid; after a restart
//! every message that was in flight is delivered again (at least once).
//!
//! Files, in the order a message meets them:
//! * `cursor` — the per-queue cursors and the committed offsets they keep;
//! * `scan` — reading a queue from a cursor for messages that pass the subscription's filter;
//! * `receive` — a receive call: which queues, a filter plugin's verdicts, handing messages out;
//! * `inflight` — receipt handles, ack, a new invisible time, releasing a client's renewals;
//! * `redeliver` — what happens when the invisible time runs out: in place, retry topic, dead letter.

mod cursor;
mod inflight;
mod receive;
mod redeliver;
mod scan;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use ferrymq_proto::properties::PropertiesError;
use ferrymq_proto::sync::{lock, read, write};
use ferrymq_store::clock::Clock;
use ferrymq_store::{Store, StoreError, StoredRecord};
use thiserror::Error;

use self::cursor::State;
use crate::filter::Filter;
use crate::hooks::Policies;
use crate::metadata::{GroupConfig, Metadata};
use crate::offsets::Offsets;

/// Most queue entries a FIFO or broadcast cursor looks at past its commit offset in one receive.
pub const IN_PLACE_SCAN_MAX: usize = 2048;
/// Most messages in one receive.
pub const RECEIVE_BATCH_MAX: usize = 32;
/// How long an auto-renewed delivery stays invisible, at most, while its client lives.
pub const AUTO_RENEW_MAX_MS: i64 = 3 * 3_600_000;

#[derive(Debug, Error)]
pub enum DeliveryError {
    #[error("receipt handle is not valid (acknowledged, expired, replaced, or from before a restart)")]
    InvalidHandle,
    #[error("topic {0:?} does not exist")]
    TopicNotFound(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A message in flight is no longer in its queue (retention removed it).
    #[error("store: {topic}/{queue_id} offset {offset} is gone")]
    Gone { topic: String, queue_id: u32, offset: u64 },
    /// A retry or dead-letter copy could not carry the original's properties.
    #[error("store: properties of a copy for {topic:?}: {source}")]
    CopyProperties {
        topic: String,
        #[source]
        source: PropertiesError,
    },
}

/// One message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub record: StoredRecord,
    /// The topic the consumer subscribed to (for a retried message, its original topic).
    pub topic: String,
    /// Where the message is stored (a retry topic for retried messages).
    pub stored_topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub receipt_handle: String,
    /// 1 on first delivery.
    pub delivery_attempt: u32,
    pub invisible_until_ms: i64,
}

/// A receive call.
#[derive(Debug)]
pub struct Receive<'a> {
    pub group: &'a GroupConfig,
    pub client_id: &'a str,
    pub topic: &'a str,
    pub filter: &'a Filter,
    pub batch: usize,
    pub invisible_ms: i64,
    /// Keep extending the invisible time (by `invisible_ms` each time) until the message is acked,
    /// the client is released, or [`AUTO_RENEW_MAX_MS`] passes: for push consumers.
    pub auto_renew: bool,
}

/// Where a subscriber stands in one queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueProgress {
    pub subscriber: String,
    pub topic: String,
    pub queue_id: u32,
    pub committed: u64,
    pub max: u64,
    pub in_flight: usize,
}

pub struct Delivery {
    store: Arc<Store>,
    metadata: Arc<Metadata>,
    offsets: Arc<Offsets>,
    clock: Arc<dyn Clock>,
    epoch: u64,
    generation: AtomicU64,
    filter_errors: AtomicU64,
    policies: RwLock<Option<Arc<dyn Policies>>>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

/// Whose cursor a client of `group` reads: the group's, or for a broadcast group the client's own.
fn subscriber(group: &GroupConfig, client_id: &str) -> String {
    if group.broadcast { format!("{}@{client_id}", group.name) } else { group.name.clone() }
}

impl Delivery {
    pub fn new(store: Arc<Store>, metadata: Arc<Metadata>, offsets: Arc<Offsets>, clock: Arc<dyn Clock>) -> Self {
        // Distinct per run, so that handles issued before a restart are refused.
        let epoch = clock.now_ms() as u64 ^ u64::from(std::process::id()).rotate_left(40);
        Self {
            store,
            metadata,
            offsets,
            clock,
            epoch,
            generation: AtomicU64::new(1),
            filter_errors: AtomicU64::new(0),
            policies: RwLock::new(None),
            state: Mutex::new(State::default()),
        }
    }

    /// Sets the filters bound to (topic, group) pairs.
    pub fn set_policies(&self, policies: Option<Arc<dyn Policies>>) {
        *write(&self.policies) = policies;
    }

    fn policies(&self) -> Option<Arc<dyn Policies>> {
        read(&self.policies).clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// SQL filter evaluations that failed (the message was not delivered to that subscription).
    pub fn filter_errors(&self) -> u64 {
        self.filter_errors.load(Ordering::Relaxed)
    }

    /// Messages in flight, over all subscribers.
    pub fn in_flight(&self) -> usize {
        self.lock().deadlines.len()
    }

    /// A fresh generation: it tells a receipt handle from the ones it replaced.
    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed)
    }
}
