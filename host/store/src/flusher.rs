//! The flusher thread: makes written log bytes durable and releases the acknowledgements waiting for it.
//!
//! Under sync flush it flushes as soon as anything is written; appends that arrive while a flush is
//! under way are written meanwhile and share the next one (group commit). Under async flush it flushes
//! what was written once `flush_interval_ms` has passed since its last flush (or since the log was
//! last clean), or at once when the writer finds `flush_dirty_bytes_max` unflushed or the store stops. A failed flush stops the store.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::config::FlushMode;
use crate::error::FatalCause;
use crate::shared::Shared;

/// How long an idle sync-mode flusher sleeps before looking again (it is woken on every write).
const IDLE_WAIT: Duration = Duration::from_millis(200);
/// Shortest sleep of an async-mode flusher between two looks.
const MIN_WAIT: Duration = Duration::from_millis(1);

pub(crate) fn run(shared: Arc<Shared>) {
    let interval = Duration::from_millis(shared.config.flush_interval_ms);
    let sync = shared.config.flush == FlushMode::Sync;
    // Async flush: when the interval has passed since the last flush, or when asked (enough
    // unflushed bytes, or the store stopping) — not merely because this thread looked.
    let mut last_flush = Instant::now();
    let mut asked = false;
    loop {
        // Sync flush follows every write; async flush wakes on its interval or when asked.
        let event = if sync { &shared.written } else { &shared.flush_request };
        let seen = event.generation();
        if shared.fatal().is_some() {
            break;
        }
        let writer_done = shared.writer_done.load(Ordering::Acquire);
        let (written, flushed) = (shared.log.written(), shared.log.flushed());
        let due = sync || writer_done || asked || last_flush.elapsed() >= interval;
        if written > flushed && due {
            if !flush(&shared, flushed, written) {
                break;
            }
            last_flush = Instant::now();
            asked = false;
            // Sync flush follows writes at once; and once the writer is done nothing will wake this
            // thread again, so look once more instead of waiting.
            if sync || writer_done {
                continue;
            }
        } else if written <= flushed {
            if writer_done {
                break;
            }
            // Nothing to flush: a write from now on waits at most one interval.
            last_flush = Instant::now();
        }
        let wait = if sync { IDLE_WAIT } else { interval.saturating_sub(last_flush.elapsed()).max(MIN_WAIT) };
        event.wait(seen, wait);
        asked |= !sync && event.generation() != seen;
    }
    shared.flusher_done.store(true, Ordering::Release);
    shared.notify_all();
}

/// Flushes the segments holding `[from, to)`; returns false when the store has gone fatal.
fn flush(shared: &Shared, from: u64, to: u64) -> bool {
    for segment in shared.log.segments_between(from, to) {
        if let Err(err) = segment.file.sync() {
            shared.set_fatal(FatalCause::Flush { path: segment.path.clone(), source: err });
            return false;
        }
    }
    shared.log.publish_flushed(to);
    shared.complete_waiters(to);
    shared.flushed.notify();
    true
}
