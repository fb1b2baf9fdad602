//! Small synchronisation helpers shared by the store's threads.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

pub(crate) use ferrymq_proto::sync::{lock, read, write};

/// A wake-up signal between threads: a generation counter, and a condition variable that is only
/// touched when someone sleeps on it, so that notifying an event nobody waits for costs one atomic add.
#[derive(Debug, Default)]
pub(crate) struct Event {
    generation: AtomicU64,
    sleepers: AtomicUsize,
    mutex: Mutex<()>,
    cv: Condvar,
}

impl Event {
    pub(crate) fn notify(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        // A sleeper registers before it checks the generation, so either it sees the new generation
        // or this sees it registered and wakes it under the mutex.
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            drop(lock(&self.mutex));
            self.cv.notify_all();
        }
    }

    /// The current generation, to pass to [`Event::wait`].
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Waits until the generation moves past `seen` or `timeout` passes.
    pub(crate) fn wait(&self, seen: u64, timeout: Duration) {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let guard = lock(&self.mutex);
        let _ = self
            .cv
            .wait_timeout_while(guard, timeout, |_| self.generation.load(Ordering::SeqCst) == seen)
            .unwrap_or_else(PoisonError::into_inner);
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}
