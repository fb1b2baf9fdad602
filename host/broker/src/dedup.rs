//! De-duplication of sends by message id (`[broker.dedup]`): a send whose id the topic received
//! within the window is answered with the first send's receipt, and nothing is stored.
//!
//! The key is the topic the producer named, the message id it sent, and whether the send is
//! transactional. What counts as a send of the key, in memory and in the store alike:
//! * a plain send: the record in the topic; while a delay message waits, its record in the timer
//!   topic (the receipt names that one, as the first answer did); when a route dead-letters it, its
//!   record in the route's dead-letter topic;
//! * a transactional send: its half message, whatever became of the transaction since.
//!
//! Copies the broker makes itself are not sends: the timer's delivery of a delay message, the
//! message a commit releases, retry and dead-letter copies. So a transactional send never matches a
//! plain one, nor the reverse: a half message is not the message until it is committed, and the
//! committed message was never a plain send. The copies a route redirects to other topics are
//! remembered under the named topic while memory holds the id; the store knows them only under
//! the topics they went to.
//!
//! Memory ([`ferrymq_dedup::Window`]) answers most sends. A send it cannot vouch for (the first
//! window after a start, or after ids were evicted to respect `window_messages`) reads the store's
//! message-id index, which the log rebuilds after a crash and a replica builds from the replicated
//! log. A send's id is marked in memory before its record is queued for the log, and the index,
//! built after the append, is read only once it covers what memory evicted or never saw (waiting
//! up to [`INDEX_WAIT_MS_MAX`] for it — normally nothing).
//!
//! A send that finds its id being stored waits for it: stored, it is answered with its receipt;
//! refused or failed, it gets the same failure ([`SendError::Shared`]) and nothing is remembered, so
//! the next try is stored as new. Sends are never re-submitted from a store thread, which may not
//! wait for room in the store's queue.

use std::sync::Arc;
use std::time::Duration;

use ferrymq_dedup::{Admission, Consult, Digest, Key, Original, Settlement, Window};
use ferrymq_proto::properties::{self, REAL_QUEUE_ID, REAL_TOPIC, TIMER_DELIVER_MS};
use ferrymq_proto::record::{RecordRef, sys_flag};
use ferrymq_proto::throttle::Throttle;
use ferrymq_store::Store;
use ferrymq_store::clock::Clock;

pub use ferrymq_dedup::{DedupConfig, DedupStats};

use crate::broker::{SendDone, SendError, SendReceipt};
use crate::hooks::route_dlq_topic;
use crate::metadata::{MessageKind, TIMER_TOPIC};
use crate::send::Outgoing;
use crate::transaction::HALF_TOPIC;

/// Most records read from the index for one id: the sends of an id reused after its windows, the
/// timer's deliveries and a route's copies. Newest come first, so only an id stored more often
/// than this since its send in the window can hide that send.
pub const STORE_LOOKUP_MAX: usize = 16;

/// Longest a send waits for the index to cover sends memory evicted or never saw.
pub const INDEX_WAIT_MS_MAX: u64 = 1_000;

/// The broker's de-duplication: its window and where to look when memory cannot tell.
pub(crate) struct Dedup {
    window: Option<Arc<Window<SendDone>>>,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    window_ms: i64,
}

impl Dedup {
    pub(crate) fn new(config: &DedupConfig, store: Arc<Store>, clock: Arc<dyn Clock>) -> Self {
        let window = config.enabled.then(|| Arc::new(Window::new(config, clock.now_ms())));
        Self { window, store, clock, window_ms: config.window_ms_i64() }
    }

    /// Answers `done` now (a duplicate) or once the send of the same id in progress settles, and
    /// returns `None`; or returns the `done` to store `message` with, which settles its id.
    pub(crate) fn admit(&self, message: &Outgoing, done: SendDone) -> Option<SendDone> {
        let Some(window) = &self.window else { return Some(done) };
        let transactional = message.kind == Some(MessageKind::Transaction);
        let key = Key { topic: &message.topic, message_id: &message.message_id, transactional };
        let digest = window.digest(key);
        let now_ms = self.clock.now_ms();
        match window.admit(digest, now_ms, done) {
            Admission::Waiting => None,
            Admission::Duplicate { waiter, original } => {
                waiter(Ok(receipt(&message.message_id, original)));
                None
            }
            Admission::Fresh { waiter, consult_store } => {
                let stored = consult_store.and_then(|consult| self.stored_send(key, consult, now_ms));
                let Some((original, at_ms)) = stored else { return Some(self.settling(window, digest, waiter)) };
                let answer = receipt(&message.message_id, original);
                for other in window.settle(digest, Settlement::Found { original, at_ms }) {
                    other(Ok(answer.clone()));
                }
                waiter(Ok(answer));
                None
            }
        }
    }

    /// The store holds sends memory has not seen (a replica becoming writable holds its master's):
    /// for one window the store is consulted, once its index covers them.
    pub(crate) fn cover_from_now(&self) {
        if let Some(window) = &self.window {
            window.cover_from(self.clock.now_ms(), self.store.log_end());
        }
    }

    pub(crate) fn stats(&self) -> DedupStats {
        self.window.as_ref().map(|w| w.stats()).unwrap_or_default()
    }

    /// `done`, wrapped so that the send's outcome settles its id first and answers the sends that
    /// waited for it.
    fn settling(&self, window: &Arc<Window<SendDone>>, digest: Digest, done: SendDone) -> SendDone {
        let mut key = Unsettled { window: window.clone(), digest, settled: false };
        let clock = self.clock.clone();
        Box::new(move |result: Result<SendReceipt, SendError>| {
            // A route may acknowledge a send without storing it (log_end 0): nothing to remember.
            let settlement = match &result {
                Ok(r) if r.log_end > 0 => Settlement::Stored { original: original(r), at_ms: clock.now_ms() },
                _ => Settlement::Failed,
            };
            let waiters = key.settle(settlement);
            if waiters.is_empty() {
                return done(result);
            }
            match result {
                Ok(receipt) => {
                    for other in waiters {
                        other(Ok(receipt.clone()));
                    }
                    done(Ok(receipt));
                }
                Err(err) => {
                    let err = Arc::new(err);
                    for other in waiters {
                        other(Err(SendError::Shared(err.clone())));
                    }
                    done(Err(SendError::Shared(err)));
                }
            }
        })
    }

    /// The newest send of `key` the store holds from within the window, and when it was stored.
    fn stored_send(&self, key: Key<'_>, consult: Consult, now_ms: i64) -> Option<(Original, i64)> {
        // The index follows the log closely; only an id evicted right after it was stored (a tiny
        // `window_messages`) or a replica just made writable can be ahead of it.
        if !self.store.wait_dispatched(consult.indexed_to, Duration::from_millis(INDEX_WAIT_MS_MAX)) {
            static BEHIND: Throttle = Throttle::per_second(1);
            if let Some(suppressed) = BEHIND.admit() {
                tracing::warn!(
                    indexed_to = consult.indexed_to,
                    suppressed,
                    "the message-id index lags the log; a duplicate may be stored"
                );
            }
        }
        let found = self.store.lookup_message_id(key.message_id, STORE_LOOKUP_MAX);
        let records: Vec<(u64, u64, RecordRef<'_>)> = found
            .iter()
            .filter_map(|s| s.decode().ok().map(|r| (s.offset(), s.offset() + s.len() as u64, r)))
            .collect();
        // The delivery times of the topic's messages waiting in the timer topic: a record of the topic
        // with one of them is the timer's delivery of that message.
        let delivered: Vec<&str> = records
            .iter()
            .filter(|(_, _, r)| r.topic == TIMER_TOPIC && properties::get(r.properties, REAL_TOPIC) == Some(key.topic))
            .filter_map(|(_, _, r)| properties::get(r.properties, TIMER_DELIVER_MS))
            .collect();
        let dead_letters = route_dlq_topic(key.topic);
        records.iter().filter(|(_, _, r)| now_ms.saturating_sub(r.meta.store_timestamp_ms) < self.window_ms).find_map(
            |(log_offset, log_end, r)| {
                let (queue_id, transaction) = send_of(r, key, &delivered, &dead_letters)?;
                let queue_offset = r.meta.queue_offset;
                let original =
                    Original { queue_id, transaction, queue_offset, log_offset: *log_offset, log_end: *log_end };
                Some((original, r.meta.store_timestamp_ms))
            },
        )
    }
}

/// A key being stored, freed even if the send's callback is dropped without being called (a store
/// thread that died, a panic on the way): then the sends waiting for it are dropped unanswered too,
/// as the first one is, rather than wait forever.
struct Unsettled {
    window: Arc<Window<SendDone>>,
    digest: Digest,
    /// Once settled the key may be pending again for a later send: it is not this one's to free.
    settled: bool,
}

impl Unsettled {
    fn settle(&mut self, settlement: Settlement) -> Vec<SendDone> {
        self.settled = true;
        self.window.settle(self.digest, settlement)
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        if !self.settled {
            drop(self.window.settle(self.digest, Settlement::Failed));
        }
    }
}

/// If `rec` is a send of `key` (see the module documentation), the queue its producer was told
/// and whether the send was transactional.
fn send_of(rec: &RecordRef<'_>, key: Key<'_>, delivered: &[&str], dead_letters: &str) -> Option<(u32, bool)> {
    let property = |name| properties::get(rec.properties, name);
    let for_topic = property(REAL_TOPIC) == Some(key.topic);
    let real_queue = || property(REAL_QUEUE_ID).and_then(|q| q.parse().ok());
    if key.transactional {
        return (rec.topic == HALF_TOPIC && for_topic).then(real_queue).flatten().map(|q| (q, true));
    }
    if rec.topic == TIMER_TOPIC {
        return for_topic.then(real_queue).flatten().map(|q| (q, false));
    }
    if rec.topic == key.topic {
        let released = rec.meta.sys_flag & sys_flag::TRANSACTION_MASK != 0;
        let timer_copy = property(TIMER_DELIVER_MS).is_some_and(|due| delivered.contains(&due));
        return (!released && !timer_copy).then_some((rec.meta.queue_id, false));
    }
    (rec.topic == dead_letters).then_some((rec.meta.queue_id, false))
}

fn original(receipt: &SendReceipt) -> Original {
    Original {
        queue_id: receipt.queue_id,
        transaction: receipt.transaction_id.is_some(),
        queue_offset: receipt.queue_offset,
        log_offset: receipt.log_offset,
        log_end: receipt.log_end,
    }
}

/// The answer to a duplicate: the first send's receipt. A transaction's id is its message id.
fn receipt(message_id: &str, original: Original) -> SendReceipt {
    SendReceipt {
        message_id: message_id.to_owned(),
        transaction_id: original.transaction.then(|| message_id.to_owned()),
        queue_id: original.queue_id,
        queue_offset: original.queue_offset,
        log_offset: original.log_offset,
        log_end: original.log_end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrymq_store::StoreOptions;
    use ferrymq_store::clock::ManualClock;
    use std::sync::mpsc;

    #[test]
    fn a_send_whose_callback_is_dropped_uncalled_frees_its_id_and_drops_its_waiters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(1_000_000));
        let mut options = StoreOptions::new(dir.path());
        options.clock = clock.clone();
        options.config.index_slots = 64;
        options.config.index_entries_max = 256;
        let store = Arc::new(Store::open(options).expect("store"));
        let dedup = Dedup::new(&DedupConfig::default(), store.clone(), clock);
        let message = Outgoing { topic: "t".into(), message_id: "id".into(), ..Outgoing::default() };
        let first = dedup.admit(&message, Box::new(|_| {})).expect("fresh");
        let (tx, waiting) = mpsc::channel::<Result<SendReceipt, SendError>>();
        assert!(dedup.admit(&message, Box::new(move |r| drop(tx.send(r)))).is_none(), "waits for the first");
        drop(first);
        assert!(matches!(waiting.recv(), Err(mpsc::RecvError)), "dropped unanswered, as the first was");
        assert!(dedup.admit(&message, Box::new(|_| {})).is_some(), "the id is free again");
        store.close();
    }
}
