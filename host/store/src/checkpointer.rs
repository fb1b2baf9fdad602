//! Checkpoints off the dispatcher's thread.
//!
//! A checkpoint makes the consume queues and the index durable and then records how far they and
//! the log are safe. The syncs take milliseconds, tens when the disk is busy; while the dispatcher
//! did them itself, every record behind them waited to become visible to consumers. Now the
//! dispatcher only takes a [`Snapshot`] between two batches — its position, the log's flushed
//! position, and the index's entry count with the index header written — and hands it to the
//! checkpointer thread, which syncs and writes the mark.
//!
//! A snapshot stays true however late it is written: everything it vouches for was written before
//! it was taken, a sync makes at least that durable, and nothing it vouches for is rewritten. One
//! checkpoint runs at a time (the whole procedure holds one lock), so a sync in progress can never
//! let another checkpoint vouch for files it has not finished; and once the clean mark of a shutdown
//! is written, no older snapshot is written after it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::checkpoint::{Checkpoint, Mark};
use crate::error::{FatalCause, Result};
use crate::index::{Index, IndexMark};
use crate::io::StorageFile;
use crate::queue::ConsumeQueues;
use crate::shared::Shared;

/// What one checkpoint will vouch for, taken by the dispatcher between two batches.
pub(crate) struct Snapshot {
    pub(crate) log_flushed: u64,
    pub(crate) dispatched: u64,
    pub(crate) index: IndexMark,
    /// The index file the mark names, to be synced before the mark is written.
    pub(crate) index_file: Option<Arc<dyn StorageFile>>,
}

struct Written {
    checkpoint: Checkpoint,
    /// The clean mark of a shutdown is written: nothing more is.
    closed: bool,
}

/// Writes checkpoints; shared by the dispatcher (its first and last, synchronously) and the
/// checkpointer thread (every other one).
pub(crate) struct Checkpoints {
    written: Mutex<Written>,
    queues: Arc<ConsumeQueues>,
    index: Arc<Index>,
    /// Lowest offset the last checkpoint needs for recovery; retention keeps it.
    recovery_floor: Arc<AtomicU64>,
}

impl Checkpoints {
    pub(crate) fn new(
        checkpoint: Checkpoint,
        queues: Arc<ConsumeQueues>,
        index: Arc<Index>,
        recovery_floor: Arc<AtomicU64>,
    ) -> Checkpoints {
        Checkpoints { written: Mutex::new(Written { checkpoint, closed: false }), queues, index, recovery_floor }
    }

    fn lock(&self) -> MutexGuard<'_, Written> {
        self.written.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a snapshot: call only between dispatch batches, with `dispatched` the dispatcher's
    /// position.
    pub(crate) fn snapshot(&self, shared: &Shared, dispatched: u64) -> Result<Snapshot> {
        let log_flushed = shared.log.flushed();
        let (index, index_file) = self.index.mark()?;
        Ok(Snapshot { log_flushed, dispatched, index, index_file })
    }

    /// Makes what `snapshot` vouches for durable and records it.
    pub(crate) fn write(&self, snapshot: Snapshot, clean: bool) -> Result<()> {
        let mut written = self.lock();
        if written.closed {
            return Ok(());
        }
        for cq in self.queues.all() {
            cq.sync()?;
        }
        if let Some(file) = &snapshot.index_file {
            self.index.sync_file(file, snapshot.index)?;
        }
        let mark =
            Mark { log_flushed: snapshot.log_flushed, dispatched: snapshot.dispatched, index: snapshot.index, clean };
        written.checkpoint.write(&mark)?;
        written.closed = clean;
        self.recovery_floor.store(mark.log_flushed.min(mark.dispatched), Ordering::Release);
        Ok(())
    }
}

/// The dispatcher's side: hands snapshots over without waiting.
pub(crate) struct Handoff {
    requests: SyncSender<Snapshot>,
}

impl Handoff {
    /// A handoff and the receiver its thread serves.
    pub(crate) fn new() -> (Handoff, Receiver<Snapshot>) {
        let (requests, rx) = sync_channel(1);
        (Handoff { requests }, rx)
    }

    /// `false` when a checkpoint is still in progress (the snapshot is dropped; the next one is
    /// fresher anyway) or the thread is gone.
    pub(crate) fn offer(&self, snapshot: Snapshot) -> bool {
        match self.requests.try_send(snapshot) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// The checkpointer thread's loop; ends when the dispatcher drops its handoff.
pub(crate) fn run(checkpoints: Arc<Checkpoints>, shared: Arc<Shared>, requests: Receiver<Snapshot>) {
    while let Ok(snapshot) = requests.recv() {
        if let Err(err) = checkpoints.write(snapshot, false) {
            shared.set_fatal(FatalCause::Checkpoint(err));
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{FsStorage, Storage};

    fn checkpoints(dir: &std::path::Path) -> Checkpoints {
        let storage: Arc<dyn Storage> = Arc::new(FsStorage);
        let (checkpoint, _) = Checkpoint::open(storage.as_ref(), dir).expect("checkpoint");
        let queues = Arc::new(ConsumeQueues::open(storage.clone(), &dir.join("cq"), 1024, 0).expect("queues"));
        let index = Arc::new(Index::open(storage, &dir.join("index"), 64, 1024, None).expect("index"));
        Checkpoints::new(checkpoint, queues, index, Arc::new(AtomicU64::new(0)))
    }

    fn snapshot(dispatched: u64) -> Snapshot {
        Snapshot { log_flushed: dispatched, dispatched, index: IndexMark::default(), index_file: None }
    }

    fn newest_mark(dir: &std::path::Path) -> Mark {
        Checkpoint::open(&FsStorage, dir).expect("reopen").1.expect("a mark")
    }

    #[test]
    fn a_late_snapshot_never_overwrites_the_clean_mark_of_a_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let checkpoints = checkpoints(dir.path());
        checkpoints.write(snapshot(100), false).expect("periodic");
        assert_eq!(newest_mark(dir.path()).dispatched, 100);
        assert_eq!(checkpoints.recovery_floor.load(Ordering::Acquire), 100);

        checkpoints.write(snapshot(300), true).expect("clean");
        // A snapshot taken before the shutdown, written after it, is dropped.
        checkpoints.write(snapshot(200), false).expect("late");
        let mark = newest_mark(dir.path());
        assert!(mark.clean);
        assert_eq!(mark.dispatched, 300);
    }

    #[test]
    fn a_handoff_holds_one_snapshot_and_drops_the_next_while_it_waits() {
        let (handoff, rx) = Handoff::new();
        assert!(handoff.offer(snapshot(1)));
        assert!(!handoff.offer(snapshot(2)), "one checkpoint at a time");
        assert_eq!(rx.try_recv().map(|s| s.dispatched).ok(), Some(1));
        drop(rx);
        assert!(!handoff.offer(snapshot(3)), "the thread is gone");
    }
}
