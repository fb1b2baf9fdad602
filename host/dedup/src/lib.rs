//! The de-duplication window: which (topic, message id) pairs were stored recently, what their
//! senders were told, and which pairs are being stored right now.
//!
//! * [`config`] — `[broker.dedup]`: on or off, the window by time and by count, and their limits.
//! * [`window`] — the [`Window`]: admission of a send, settlement of its outcome, expiry and eviction.
//!
//! No IO, no clock, no threads: the caller passes the time, and consults its store when an admission
//! says that memory alone cannot tell (after a start, or once ids still inside the time window were
//! evicted to respect the count). The broker decides what a stored record means; this crate knows
//! only keys and receipts.

pub mod config;
pub mod window;

pub use config::{ConfigError, DedupConfig};
pub use window::{Admission, Consult, DedupStats, Digest, Key, Original, Settlement, Window};
