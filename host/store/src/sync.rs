//! Small synchronisation helpers shared by the store's threads.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// Locks a mutex; a panic elsewhere never makes the store's state unreachable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// A wake-up signal between threads: a generation counter behind a condition variable.
#[derive(Debug, Default)]
pub(crate) struct Event {
    generation: Mutex<u64>,
    cv: Condvar,
}

impl Event {
    pub(crate) fn notify(&self) {
        *lock(&self.generation) += 1;
        self.cv.notify_all();
    }

    /// The current generation, to pass to [`Event::wait`].
    pub(crate) fn generation(&self) -> u64 {
        *lock(&self.generation)
    }

    /// Waits until the generation moves past `seen` or `timeout` passes.
    pub(crate) fn wait(&self, seen: u64, timeout: Duration) {
        let guard = lock(&self.generation);
        let _ = self.cv.wait_timeout_while(guard, timeout, |g| *g == seen).unwrap_or_else(PoisonError::into_inner);
    }
}
