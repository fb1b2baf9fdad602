//! The flusher thread: makes written log bytes durable and releases the acknowledgements waiting for it.
//!
//! Under sync flush it flushes as soon as anything is written; appends that arrive while a flush is
//! under way are written meanwhile and share the next one. Under async flush it flushes every
//! `flush_interval_ms`, or sooner once `flush_min_bytes` are waiting. A failed flush stops the store.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::config::FlushMode;
use crate::shared::Shared;

/// How long an idle flusher sleeps before looking again (it is woken on every write).
const IDLE_WAIT: Duration = Duration::from_millis(200);

pub(crate) fn run(shared: Arc<Shared>) {
    let interval = Duration::from_millis(shared.config.flush_interval_ms);
    let mut last_flush = Instant::now();
    loop {
        let seen = shared.progress.generation();
        if shared.fatal().is_some() {
            break;
        }
        let (written, flushed) = (shared.log.written(), shared.log.flushed());
        let writer_done = shared.writer_done.load(Ordering::Acquire);
        let due = match shared.config.flush {
            FlushMode::Sync => true,
            FlushMode::Async => {
                written - flushed >= shared.config.flush_min_bytes || last_flush.elapsed() >= interval || writer_done
            }
        };
        if written > flushed && due {
            if !flush(&shared, flushed, written) {
                break;
            }
            last_flush = Instant::now();
            continue;
        }
        if writer_done && written == flushed {
            break;
        }
        let wait = match shared.config.flush {
            FlushMode::Sync => IDLE_WAIT,
            FlushMode::Async if written > flushed => interval.saturating_sub(last_flush.elapsed()),
            FlushMode::Async => IDLE_WAIT,
        };
        shared.progress.wait(seen, wait.max(Duration::from_millis(1)));
    }
    shared.flusher_done.store(true, Ordering::Release);
    shared.progress.notify();
}

/// Flushes the segments holding `[from, to)`; returns false when the store has gone fatal.
fn flush(shared: &Shared, from: u64, to: u64) -> bool {
    for segment in shared.log.segments_between(from, to) {
        if let Err(err) = segment.file.sync() {
            shared.set_fatal(format!("flush of {} failed: {err}", segment.path.display()));
            return false;
        }
    }
    shared.log.publish_flushed(to);
    shared.complete_waiters(to);
    shared.progress.notify();
    true
}
