//! The threads that run the filter and route calls of plugins that faulted or were slow (quick
//! plugins run on the caller's thread, see `Plugin::call_on_worker`): a fixed number of them, at a
//! lower scheduling priority than the broker's own threads.
//!
//! A plugin that spins until its time limit then takes at most `workers` cores, and only the time
//! the broker's threads leave over: their traffic keeps its latency. Workers hold no broker lock
//! while a plugin runs, so the lower priority cannot stall anything but plugin calls.
//!
//! Transaction checks do not come here: they run one at a time on the broker's check thread and
//! spend most of their time waiting on HTTP, not computing.

use std::collections::VecDeque;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrymq_proto::sync::lock;

use crate::error::PluginError;

/// A call that waited this long for a worker fails as `Saturated` instead of running late.
pub const QUEUE_WAIT_MAX: Duration = Duration::from_secs(1);

/// The default niceness of the workers: a plugin gets about a tenth of a core the broker wants.
pub const WORKER_NICE_DEFAULT: i32 = 10;

/// The default number of workers: every core but one, and at least one.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

type Job = Box<dyn FnOnce() + Send>;

struct Queue {
    jobs: VecDeque<Job>,
    stopping: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// The worker threads of one engine.
pub(crate) struct Workers {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    count: usize,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers").field("count", &self.count).finish_non_exhaustive()
    }
}

/// Lowers the calling thread's priority (Linux applies niceness per thread).
fn lower_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    // SAFETY: gettid and setpriority only read their integer arguments and affect the calling
    // thread's scheduling; no memory is shared with the kernel.
    let result = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if result != 0 {
        tracing::warn!(nice, error = %std::io::Error::last_os_error(), "could not lower the priority of a plugin worker");
    }
}

impl Workers {
    pub(crate) fn start(count: usize, nice: i32) -> Result<Self, PluginError> {
        let count = count.max(1);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue { jobs: VecDeque::new(), stopping: false }),
            ready: Condvar::new(),
        });
        let workers = Self { shared: shared.clone(), threads: Mutex::new(Vec::new()), count };
        for i in 0..count {
            let shared = shared.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ferrymq-plugin-{i}"))
                .spawn(move || {
                    lower_priority(nice);
                    work(&shared);
                })
                .map_err(|e| PluginError::Engine { what: "start a plugin worker", cause: e.into() })?;
            lock(&workers.threads).push(thread);
        }
        Ok(workers)
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Runs `job` on a worker and waits for its answer.
    pub(crate) fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce() -> Result<R, PluginError> + Send + 'static,
    ) -> Result<R, PluginError> {
        let (reply, answer) = sync_channel::<Result<R, PluginError>>(1);
        let queued = Instant::now();
        let count = self.count;
        let wrapped: Job = Box::new(move || {
            let result =
                if queued.elapsed() > QUEUE_WAIT_MAX { Err(PluginError::Saturated { calls: count }) } else { job() };
            send(&reply, result);
        });
        {
            let mut queue = lock(&self.shared.queue);
            if queue.stopping {
                return Err(PluginError::Refused("the plugin engine is stopping".into()));
            }
            queue.jobs.push_back(wrapped);
        }
        self.shared.ready.notify_one();
        // A job is always run or dropped; dropped (its worker panicked) closes the channel.
        answer.recv().unwrap_or_else(|_| Err(PluginError::WorkerLost))
    }

    /// Lets queued calls finish, then ends the threads.
    pub(crate) fn stop(&self) {
        lock(&self.shared.queue).stopping = true;
        self.shared.ready.notify_all();
        for thread in lock(&self.threads).drain(..) {
            let _ = thread.join();
        }
    }
}

fn send<R>(reply: &SyncSender<R>, result: R) {
    // The caller always waits for its answer; a send can only fail if it is gone, which nothing does.
    let _ = reply.send(result);
}

fn work(shared: &Shared) {
    let mut queue = lock(&shared.queue);
    loop {
        if let Some(job) = queue.jobs.pop_front() {
            drop(queue);
            // A panicking job drops its reply channel, which its caller reports; the worker lives on.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            queue = lock(&shared.queue);
        } else if queue.stopping {
            return;
        } else {
            queue = shared.ready.wait(queue).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_run_on_workers_and_late_calls_fail_as_saturated() {
        let workers = Workers::start(1, WORKER_NICE_DEFAULT).expect("start");
        let name = workers.run(|| Ok(std::thread::current().name().map(str::to_owned))).expect("run");
        assert_eq!(name.as_deref(), Some("ferrymq-plugin-0"));
        let workers = Arc::new(workers);
        let blocker = {
            let workers = workers.clone();
            std::thread::spawn(move || {
                workers.run(|| {
                    std::thread::sleep(QUEUE_WAIT_MAX + Duration::from_millis(200));
                    Ok(())
                })
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(workers.run(|| Ok(1)), Err(PluginError::Saturated { calls: 1 }));
        assert_eq!(blocker.join().expect("blocker"), Ok(()));
        assert_eq!(
            workers.run(|| -> Result<(), _> { panic!("a broken call") }).err().map(|e| e.is_plugin_fault()),
            Some(true)
        );
        assert_eq!(workers.run(|| Ok(2)), Ok(2), "a worker outlives a panicking call");
        workers.stop();
        assert!(matches!(workers.run(|| Ok(3)), Err(PluginError::Refused(_))));
    }
}
