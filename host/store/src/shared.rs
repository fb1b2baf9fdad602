//! State shared by the store's threads: the log, the flags that stop appends, and the acknowledgements
//! that wait for a flush.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::clock::Clock;
use crate::config::{FlushMode, StoreConfig};
use crate::disk::{DiskState, OwnFiles};
use crate::error::{FatalCause, StoreError};
use crate::log::CommitLog;
use crate::sync::{Event, lock};
use crate::writer::Ack;

/// Called once, from a store thread, when the store stops after a fatal I/O error.
pub type FatalHook = Arc<dyn Fn(&str) + Send + Sync>;

pub(crate) struct Shared {
    pub(crate) config: StoreConfig,
    pub(crate) log: CommitLog,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) store_host: SocketAddr,
    /// Set once, on the first failed flush; appends fail from then on.
    fatal: OnceLock<Arc<FatalCause>>,
    on_fatal: Option<FatalHook>,
    /// Whether appends are refused for lack of disk, and why.
    pub(crate) disk: DiskState,
    /// The store's files, counted: its own disk usage.
    pub(crate) own: Arc<OwnFiles>,
    /// Set while the store is a replica: only raw (replicated) appends are taken.
    pub(crate) read_only: AtomicBool,
    /// Set when the store is closing.
    pub(crate) closing: AtomicBool,
    /// Set when the writer thread has drained its queue and stopped.
    pub(crate) writer_done: AtomicBool,
    /// Set when the flusher thread has flushed everything and stopped.
    pub(crate) flusher_done: AtomicBool,
    /// Notified when `written` moves.
    pub(crate) written: Event,
    /// Notified when `flushed` moves.
    pub(crate) flushed: Event,
    /// Notified when the dispatched position moves.
    pub(crate) dispatched: Event,
    /// Async flush: notified when unflushed data reaches `flush_dirty_bytes_max`.
    pub(crate) flush_request: Event,
    /// Notified when the store starts closing, a thread stops, or the store goes fatal.
    pub(crate) stop: Event,
    /// Notified when retention should look now (a new segment took space, or the store is closing).
    pub(crate) retention_request: Event,
    /// Sync flush: acknowledgements waiting for `flushed` to pass their end offset, in offset order.
    pub(crate) waiters: Mutex<VecDeque<(u64, Ack)>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("log", &self.log).finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        config: StoreConfig,
        log: CommitLog,
        own: Arc<OwnFiles>,
        clock: Arc<dyn Clock>,
        store_host: SocketAddr,
        on_fatal: Option<FatalHook>,
    ) -> Self {
        Self {
            config,
            log,
            clock,
            store_host,
            fatal: OnceLock::new(),
            on_fatal,
            disk: DiskState::default(),
            own,
            read_only: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            writer_done: AtomicBool::new(false),
            flusher_done: AtomicBool::new(false),
            written: Event::default(),
            flushed: Event::default(),
            dispatched: Event::default(),
            flush_request: Event::default(),
            stop: Event::default(),
            retention_request: Event::default(),
            waiters: Mutex::new(VecDeque::new()),
        }
    }

    /// How far consumers may read: flushed data under sync flush, written data under async flush.
    /// Consumers never see a record whose producer could still be told it failed.
    pub(crate) fn visible(&self) -> u64 {
        match self.config.flush {
            FlushMode::Sync => self.log.flushed(),
            FlushMode::Async => self.log.written(),
        }
    }

    /// The event that moves `visible`.
    pub(crate) fn visible_event(&self) -> &Event {
        match self.config.flush {
            FlushMode::Sync => &self.flushed,
            FlushMode::Async => &self.written,
        }
    }

    /// Wakes every thread, whatever it waits for (a thread stopped, the store is closing or fatal).
    pub(crate) fn notify_all(&self) {
        let events = [&self.written, &self.flushed, &self.dispatched, &self.flush_request, &self.stop];
        for event in events.into_iter().chain([&self.retention_request]) {
            event.notify();
        }
    }

    pub(crate) fn fatal(&self) -> Option<&Arc<FatalCause>> {
        self.fatal.get()
    }

    pub(crate) fn fatal_error(&self) -> Option<StoreError> {
        self.fatal().map(|cause| StoreError::Fatal(cause.clone()))
    }

    /// Stops the store after an I/O error that may have lost data: every waiting and future append
    /// fails, and the fatal hook runs. Recovery on the next open restores a consistent state.
    /// Returns `cause`, shared, for the caller's own error (the first cause is the one recorded).
    pub(crate) fn set_fatal(&self, cause: FatalCause) -> Arc<FatalCause> {
        let cause = Arc::new(cause);
        if self.fatal.set(cause.clone()).is_err() {
            return cause;
        }
        let reason = cause.to_string();
        tracing::error!(%reason, "store stopped: data may not be durable; restart to recover");
        // The hook runs first, so that whoever sees a failed append can already see the store stopped.
        if let Some(hook) = &self.on_fatal {
            hook(&reason);
        }
        let waiting = std::mem::take(&mut *lock(&self.waiters));
        for (_, ack) in waiting {
            ack.fail(StoreError::Fatal(cause.clone()));
        }
        self.notify_all();
        cause
    }

    /// Queues acknowledgements until the flush that covers them. If the store has gone fatal, the
    /// flusher is gone: fail them (and anything else waiting) instead.
    pub(crate) fn park_acks(&self, acks: Vec<(u64, Ack)>) {
        lock(&self.waiters).extend(acks);
        // `set_fatal` sets the reason before draining, so either it drained these or this sees it.
        if let Some(cause) = self.fatal() {
            let waiting = std::mem::take(&mut *lock(&self.waiters));
            for (_, ack) in waiting {
                ack.fail(StoreError::Fatal(cause.clone()));
            }
        }
    }

    /// Completes every waiting acknowledgement whose record ends at or below `flushed`.
    pub(crate) fn complete_waiters(&self, flushed: u64) {
        let ready: Vec<Ack> = {
            let mut waiters = lock(&self.waiters);
            let n = waiters.iter().take_while(|(end, _)| *end <= flushed).count();
            waiters.drain(..n).map(|(_, ack)| ack).collect()
        };
        for ack in ready {
            ack.succeed();
        }
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }
}
