//! Running out of file descriptors (`EMFILE`) is a resource error that passes, never a fatal one: an
//! append that needs a new segment fails and the next one retries; the dispatcher waits and retries
//! the same record; the store never stops.
//!
//! The descriptors really run out: the test lowers its own `RLIMIT_NOFILE` and takes every
//! descriptor left. That limit is per process, so the test runs itself in a child process.

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use ferrymq_store::clock::SystemClock;
use ferrymq_store::io::FsStorage;
use ferrymq_store::{FlushMode, Store, StoreError};

use crate::support::{message, options, queue_bodies, small_config, wait_dispatched};

/// Set in the child process, which does the work.
const CHILD: &str = "FERRYMQ_STORE_EMFILE_CHILD";
/// The open-file limit of the child while descriptors run out.
const NOFILE_LOW: libc::rlim_t = 256;

#[test]
fn running_out_of_descriptors_delays_or_fails_work_but_never_stops_the_store() {
    if std::env::var_os(CHILD).is_some() {
        descriptors_run_out_and_come_back();
        return;
    }
    let name = format!("{}::running_out_of_descriptors_delays_or_fails_work_but_never_stops_the_store", {
        let path = module_path!();
        path.split_once("::").map_or(path, |(_, rest)| rest)
    });
    let exe = std::env::current_exe().expect("test executable");
    let out = std::process::Command::new(exe)
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Holds every descriptor the process may still open, under a lowered limit.
struct Exhausted {
    held: Vec<File>,
    limit: libc::rlimit,
}

impl Exhausted {
    fn take() -> Self {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes one plain struct.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        let low = libc::rlimit { rlim_cur: NOFILE_LOW.min(limit.rlim_cur), rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads one plain struct.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
        let mut held = Vec::new();
        loop {
            match File::open("/dev/null") {
                Ok(file) => held.push(file),
                Err(err) => {
                    assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{err}");
                    break;
                }
            }
        }
        Self { held, limit }
    }

    fn give_back(self) {
        drop(self.held);
        // SAFETY: as in `take`.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.limit) }, 0);
    }
}

fn descriptors_run_out_and_come_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(FlushMode::Sync);
    let store = Store::open(options(dir.path(), config, Arc::new(FsStorage), Arc::new(SystemClock))).expect("open");
    store.append_wait(message("a", 0, b"before", "", "", "")).expect("append");
    wait_dispatched(&store);

    let exhausted = Exhausted::take();
    // The log has room: the append is stored, but its new topic's consume queue cannot be created.
    let stored = store.append_wait(message("b", 0, b"queued later", "", "", "")).expect("append");
    std::thread::sleep(Duration::from_millis(100));
    assert!(queue_bodies(&store, "b", 0).is_empty(), "not dispatched while no descriptor is left");
    // Filling the segment: the append that needs a new one fails, and says it may be retried.
    let refused = loop {
        match store.append_wait(message("a", 0, &[b'x'; 1000], "", "", "")) {
            Ok(_) => continue,
            Err(err) => break err,
        }
    };
    assert!(matches!(refused, StoreError::Resource { .. }) && refused.is_retryable(), "{refused:?}");
    assert!(refused.to_string().contains("open files"), "{refused}");
    let stats = store.stats();
    assert_eq!(stats.fatal, None, "the store did not stop");
    assert!(store.accepts_appends());

    exhausted.give_back();
    store.append_wait(message("a", 0, b"after", "", "", "")).expect("the next append creates the segment");
    assert!(store.wait_dispatched(stored.offset + u64::from(stored.len), Duration::from_secs(10)));
    assert_eq!(queue_bodies(&store, "b", 0), vec![b"queued later".to_vec()], "dispatched once it could be");
    wait_dispatched(&store);
    assert_eq!(queue_bodies(&store, "a", 0).last().map(Vec::as_slice), Some(&b"after"[..]));
    assert_eq!(store.stats().fatal, None);
}
