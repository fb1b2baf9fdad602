//! The flusher thread: makes written log bytes durable and releases the acknowledgements waiting for it.
//!
//! Under sync flush it flushes as soon as anything is written; appends that arrive while a flush is
//! under way are written meanwhile and share the next one (group commit). Under async flush it wakes
//! every `flush_interval_ms`, or when the writer finds `flush_dirty_bytes_max` unflushed, and flushes
//! whatever was written since. A failed flush stops the store.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::config::FlushMode;
use crate::shared::Shared;

/// How long an idle sync-mode flusher sleeps before looking again (it is woken on every write).
const IDLE_WAIT: Duration = Duration::from_millis(200);

pub(crate) fn run(shared: Arc<Shared>) {
    let interval = Duration::from_millis(shared.config.flush_interval_ms);
    loop {
        // Sync flush follows every write; async flush wakes on its interval or when the store stops.
        let (event, wait) = match shared.config.flush {
            FlushMode::Sync => (&shared.written, IDLE_WAIT),
            FlushMode::Async => (&shared.flush_request, interval),
        };
        let seen = event.generation();
        if shared.fatal().is_some() {
            break;
        }
        let writer_done = shared.writer_done.load(Ordering::Acquire);
        let (written, flushed) = (shared.log.written(), shared.log.flushed());
        if written > flushed {
            if !flush(&shared, flushed, written) {
                break;
            }
            // Sync flush follows writes at once; and once the writer is done nothing will wake this
            // thread again, so look once more instead of waiting.
            if shared.config.flush == FlushMode::Sync || writer_done {
                continue;
            }
        } else if writer_done {
            break;
        }
        event.wait(seen, wait);
    }
    shared.flusher_done.store(true, Ordering::Release);
    shared.notify_all();
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
    shared.flushed.notify();
    true
}
