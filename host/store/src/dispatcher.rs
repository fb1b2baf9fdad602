//! The dispatcher thread: follows the log and builds the consume queues and the index from it, and
//! takes checkpoint snapshots (written by the checkpointer thread, see `checkpointer`).
//!
//! It reads only up to the visible position (see `Shared::visible`), so consumers never see a record
//! that is not yet as durable as its producer was promised. Because every record carries its own queue
//! offset, dispatching a record twice rewrites the same entry: recovery relies on that.
//!
//! A file it needs that cannot be created for now — no space, no descriptors, no maps — stops
//! nothing: it pauses (10 ms, doubling to 1 s) and dispatches the same record again, and consumers
//! see the record once that succeeds. Keys indexed before the failure are indexed twice then; a
//! lookup reads each candidate once, so that costs an index entry, never a wrong answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrymq_proto::properties::{self, KEY_SEPARATOR, KEYS, TAGS, UNIQ_KEY};
use ferrymq_proto::record::{self, Entry, Verify};
use ferrymq_proto::tag::tag_hash;

use crate::checkpointer::{Checkpoints, Handoff};
use crate::error::{FatalCause, Result, StoreError};
use crate::index::{Index, business_key_hash, message_id_hash};
use crate::queue::{ConsumeQueue, ConsumeQueues};
use crate::shared::Shared;
use ferrymq_proto::throttle::Throttle;

/// Called after each dispatched batch with a queue that grew and its new end offset.
pub type DispatchHook = Arc<dyn Fn(&str, u32, u64) + Send + Sync>;

/// Most log bytes dispatched before entries are published and progress reported.
const DISPATCH_BATCH_BYTES: u64 = 4 << 20;
/// First pause before dispatching a record again after a failure that can pass; it doubles up to
/// [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(10);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(1);
/// Least time between two warnings that dispatch is waiting.
const RETRY_WARNING_INTERVAL: Duration = Duration::from_secs(5);

/// Retries of one record after failures that can pass (see [`StoreError::is_retryable`]).
struct Retry {
    pause: Duration,
    failures: u64,
    last_was_disk_full: bool,
    warnings: Throttle,
}

impl Retry {
    fn new() -> Self {
        Self {
            pause: RETRY_PAUSE_MIN,
            failures: 0,
            last_was_disk_full: false,
            warnings: Throttle::new(1, RETRY_WARNING_INTERVAL.as_millis() as u64),
        }
    }

    /// Counts a failure; returns how long to pause before the next attempt.
    fn failed(&mut self, err: &StoreError) -> Duration {
        self.failures += 1;
        self.last_was_disk_full = matches!(err, StoreError::DiskFull(_));
        let pause = self.pause;
        if let Some(held) = self.warnings.admit() {
            tracing::warn!(%err, failures = self.failures, warnings_not_logged = held, pause_ms = pause.as_millis() as u64,
                "dispatch is waiting: a consume-queue or index file cannot be created yet; consumers see new records once it can");
        }
        self.pause = (self.pause * 2).min(RETRY_PAUSE_MAX);
        pause
    }

    /// A batch went through; returns whether it ended a run of failures for lack of space.
    fn succeeded(&mut self) -> bool {
        if self.failures == 0 {
            return false;
        }
        tracing::info!(failures = self.failures, "dispatch resumed");
        let space_back = self.last_was_disk_full;
        *self = Self::new();
        space_back
    }
}

pub(crate) struct Dispatcher {
    pub(crate) shared: Arc<Shared>,
    pub(crate) queues: Arc<ConsumeQueues>,
    pub(crate) index: Arc<Index>,
    checkpoints: Arc<Checkpoints>,
    /// Where periodic snapshots go; `None` writes them here, synchronously.
    handoff: Option<Handoff>,
    /// Every record below this is in the queues and the index.
    dispatched: Arc<AtomicU64>,
    on_dispatch: Option<DispatchHook>,
    touched: Vec<Arc<ConsumeQueue>>,
    /// Keys that could not be indexed (e.g. the disk was full); the log still holds the records.
    pub(crate) index_skipped: Arc<AtomicU64>,
    /// Whether records are checked against the store's bounds before they go into a queue: those
    /// recovered from disk are; those the writer appended were checked on the way in.
    check_records: bool,
}

impl Dispatcher {
    pub(crate) fn new(
        shared: Arc<Shared>,
        queues: Arc<ConsumeQueues>,
        index: Arc<Index>,
        checkpoints: Arc<Checkpoints>,
        dispatched: Arc<AtomicU64>,
        index_skipped: Arc<AtomicU64>,
        on_dispatch: Option<DispatchHook>,
    ) -> Self {
        Self {
            shared,
            queues,
            index,
            checkpoints,
            handoff: None,
            dispatched,
            on_dispatch,
            touched: Vec::new(),
            index_skipped,
            check_records: true,
        }
    }

    /// From here on the log holds only records the writer checked as it appended them (its own,
    /// and a master's through `append_raw`): they are dispatched without checking them again.
    pub(crate) fn trust_appended(&mut self) {
        self.check_records = false;
    }

    fn position(&self) -> u64 {
        self.dispatched.load(Ordering::Acquire)
    }

    /// Dispatches records from the current position up to `end` (at most one batch per call).
    pub(crate) fn dispatch_batch(&mut self, end: u64) -> Result<()> {
        // An empty replica's log starts where its master's starts, not at 0.
        let mut pos = self.position().max(self.shared.log.min_offset());
        let stop = end.min(pos.saturating_add(DISPATCH_BATCH_BYTES));
        let result = loop {
            if pos >= stop {
                break Ok(());
            }
            let (segment, len, filler) = match self.shared.log.entry_len_at(pos) {
                Ok(found) => found,
                Err(err) => break Err(err),
            };
            if filler {
                pos = segment.end();
                continue;
            }
            // SAFETY: the record lies below `written`.
            let bytes = unsafe { segment.slice(pos, len) };
            let rec = match record::decode(bytes, pos, Verify::Structure) {
                Ok(Entry::Record { record, .. }) => record,
                Ok(Entry::Filler { .. }) => break Err(StoreError::Inconsistent(format!("unexpected filler at {pos}"))),
                Err(source) => break Err(StoreError::Corrupt { offset: pos, source }),
            };
            if let Err(err) = self.dispatch_record(&rec, pos, len as u32) {
                break Err(err);
            }
            pos += len as u64;
        };
        // Publish what was done even when the batch stopped early.
        for cq in self.touched.drain(..) {
            cq.publish();
            if let Some(hook) = &self.on_dispatch {
                hook(&cq.topic, cq.queue_id, cq.max());
            }
        }
        self.dispatched.store(pos, Ordering::Release);
        self.shared.dispatched.notify();
        result
    }

    fn dispatch_record(&mut self, rec: &record::RecordRef<'_>, offset: u64, len: u32) -> Result<()> {
        if self.check_records
            && let Some(problem) = crate::bounds::record_problem(rec)
        {
            // Only a damaged or crafted log holds such a record (the writer and a replica's raw
            // appends refuse them): it stays in the log, readable by offset, but in no queue.
            static SKIPPED: Throttle = Throttle::per_second(1);
            if let Some(suppressed) = SKIPPED.admit() {
                tracing::warn!(offset, %problem, suppressed, "a log record is left out of the consume queues and the index");
            }
            return Ok(());
        }
        let mut tag = 0;
        let mut keys = None;
        let mut id = None;
        for prop in properties::decode(rec.properties).map_while(|p| p.ok()) {
            match prop.name {
                TAGS => tag = tag_hash(prop.value),
                KEYS => keys = Some(prop.value),
                UNIQ_KEY => id = Some(prop.value),
                _ => {}
            }
        }
        let cq = self.queues.get_or_create(rec.topic, rec.meta.queue_id)?;
        cq.put(rec.meta.queue_offset, offset, len, tag)?;
        if !self.touched.iter().any(|t| Arc::ptr_eq(t, &cq)) {
            self.touched.push(cq);
        }
        let key_hashes = keys
            .into_iter()
            .flat_map(|k| k.split(KEY_SEPARATOR))
            .filter(|k| !k.is_empty())
            .map(|k| business_key_hash(rec.topic, k))
            .chain(id.filter(|id| !id.is_empty()).map(message_id_hash));
        for hash in key_hashes {
            match self.index.put(hash, offset, len) {
                Ok(()) => {}
                // A full disk only costs lookups; the queues, which consumers need, keep going.
                Err(StoreError::DiskFull(reason)) => {
                    if self.index_skipped.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(%reason, "a record could not be indexed; lookups by key will miss it");
                    }
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Flushes the queues and the index, then durably records how far they and the log are safe,
    /// before returning.
    pub(crate) fn checkpoint(&mut self, clean: bool) -> Result<()> {
        let snapshot = self.checkpoints.snapshot(&self.shared, self.position())?;
        self.checkpoints.write(snapshot, clean)
    }

    /// Hands periodic checkpoints to the checkpointer thread from now on.
    pub(crate) fn checkpoint_in_background(&mut self, handoff: Handoff) {
        self.handoff = Some(handoff);
    }

    /// A periodic checkpoint: handed over when there is a checkpointer, written here otherwise.
    fn periodic_checkpoint(&mut self) -> Result<()> {
        let snapshot = self.checkpoints.snapshot(&self.shared, self.position())?;
        match &self.handoff {
            Some(handoff) => {
                handoff.offer(snapshot);
                Ok(())
            }
            None => self.checkpoints.write(snapshot, false),
        }
    }

    /// Follows the log until the store closes.
    pub(crate) fn run(mut self) {
        let interval = Duration::from_millis(self.shared.config.checkpoint_interval_ms);
        let mut last_checkpoint = Instant::now();
        let mut retry = Retry::new();
        loop {
            let seen = self.shared.visible_event().generation();
            let visible = self.shared.visible();
            if self.position() < visible {
                match self.dispatch_batch(visible) {
                    Ok(()) => {
                        if retry.succeeded() {
                            self.shared.disk.creation_succeeded();
                        }
                    }
                    Err(err) if err.is_retryable() => {
                        if let StoreError::DiskFull(reason) = &err {
                            self.shared.disk.creation_failed(reason.clone());
                        }
                        if self.shared.is_closing() {
                            // No clean mark: the next start dispatches the rest from the last checkpoint.
                            tracing::error!(%err, "dispatch stopped at shutdown before it caught up; the next start finishes it");
                            break;
                        }
                        let stop = self.shared.stop.generation();
                        self.shared.stop.wait(stop, retry.failed(&err));
                        continue;
                    }
                    Err(err) => {
                        self.shared.set_fatal(FatalCause::Dispatch(err));
                        break;
                    }
                }
            }
            if self.shared.fatal().is_some() {
                break;
            }
            if last_checkpoint.elapsed() >= interval {
                if let Err(err) = self.periodic_checkpoint() {
                    self.shared.set_fatal(FatalCause::Checkpoint(err));
                    break;
                }
                last_checkpoint = Instant::now();
            }
            let writers_done =
                self.shared.writer_done.load(Ordering::Acquire) && self.shared.flusher_done.load(Ordering::Acquire);
            if writers_done && self.position() >= self.shared.visible() {
                // Stop the checkpointer first: the clean mark must be the last one written.
                self.handoff = None;
                if let Err(err) = self.checkpoint(true) {
                    tracing::error!(%err, "final checkpoint failed; the next start will recover");
                }
                break;
            }
            if self.position() < self.shared.visible() {
                continue;
            }
            let wait = interval.saturating_sub(last_checkpoint.elapsed()).max(Duration::from_millis(1));
            self.shared.visible_event().wait(seen, wait);
        }
    }
}
