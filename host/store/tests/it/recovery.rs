//! Reopening after a clean close, a crash, corruption, and lost derived data.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferrymq_store::clock::SystemClock;
use ferrymq_store::io::{FaultPlan, FsStorage};
use ferrymq_store::{FlushMode, Store, StoreError};

use crate::support::{fault_storage, message, open_fault, options, queue_bodies, small_config, wait_dispatched};

fn open_fs(dir: &Path) -> Store {
    Store::open(options(dir, small_config(FlushMode::Sync), Arc::new(FsStorage), Arc::new(SystemClock))).expect("open")
}

fn bodies(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("body-{i}-").repeat(1 + i % 40).into_bytes()).collect()
}

#[test]
fn a_clean_close_reopens_without_scanning_and_continues_the_queues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = bodies(200);
    {
        let store = open_fs(dir.path());
        for body in &expected {
            store.append_wait(message("t", 0, body, "", "", "")).expect("append");
        }
        store.close();
    }
    let store = open_fs(dir.path());
    let report = store.recovery();
    assert!(report.clean, "{report:?}");
    assert_eq!(report.scanned_bytes, 0);
    assert_eq!(queue_bodies(&store, "t", 0), expected);
    let next = store.append_wait(message("t", 0, b"next", "", "", "")).expect("append");
    assert_eq!(next.queue_offset, 200);
}

#[test]
fn a_crash_keeps_every_acknowledged_record_and_later_appends_continue() {
    let storage = fault_storage(FaultPlan { capacity_bytes: 64 << 20, ..FaultPlan::default() });
    let expected = bodies(120);
    let store = open_fault(&storage, small_config(FlushMode::Sync));
    for body in &expected {
        store.append_wait(message("t", 1, body, "", "", "")).expect("append");
    }
    storage.crash_now();
    let lost = store.append_wait(message("t", 1, b"after the crash", "", "", ""));
    assert!(matches!(lost, Err(StoreError::Fatal(_))), "{lost:?}");
    for seed in 0..8 {
        let image = storage.crash_image(seed);
        let recovered = open_fault(&image, small_config(FlushMode::Sync));
        assert!(!recovered.recovery().clean);
        assert_eq!(queue_bodies(&recovered, "t", 1), expected, "seed {seed}");
        let next = recovered.append_wait(message("t", 1, b"next", "", "", "")).expect("append after recovery");
        assert_eq!(next.queue_offset, 120);
        recovered.close();
        let again = open_fault(&image, small_config(FlushMode::Sync));
        assert!(again.recovery().clean);
        assert_eq!(queue_bodies(&again, "t", 1).len(), 121);
    }
}

#[test]
fn a_failed_flush_stops_the_store_and_a_restart_recovers() {
    let storage = fault_storage(FaultPlan { capacity_bytes: 64 << 20, ..FaultPlan::default() });
    let stopped = Arc::new(AtomicBool::new(false));
    let hook_flag = stopped.clone();
    let mut opts =
        options(Path::new("/data"), small_config(FlushMode::Sync), Arc::new(storage.clone()), Arc::new(SystemClock));
    opts.on_fatal = Some(Arc::new(move |_reason: &str| hook_flag.store(true, Ordering::SeqCst)));
    let store = Store::open(opts).expect("open");
    let expected = bodies(30);
    for body in &expected {
        store.append_wait(message("t", 0, body, "", "", "")).expect("append");
    }
    storage.fail_next_sync();
    let failed = store.append_wait(message("t", 0, b"unlucky", "", "", ""));
    match &failed {
        Err(err @ StoreError::Fatal(_)) => {
            assert!(std::error::Error::source(err).is_some(), "the cause travels with the error: {err:?}");
        }
        other => panic!("expected a fatal error, got {other:?}"),
    }
    assert!(stopped.load(Ordering::SeqCst), "fatal hook ran");
    assert!(store.stats().fatal.is_some());
    let refused = store.append_wait(message("t", 0, b"refused", "", "", ""));
    assert!(matches!(refused, Err(StoreError::Fatal(_))), "appends stay refused: {refused:?}");
    drop(store);
    let recovered = open_fault(&storage.crash_image(1), small_config(FlushMode::Sync));
    let got = queue_bodies(&recovered, "t", 0);
    assert_eq!(got[..30], expected[..], "acknowledged records survive");
    assert!(got.len() <= 31);
}

#[test]
fn a_corrupt_record_cuts_the_log_there_and_is_never_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = bodies(60);
    let victim;
    {
        let store = open_fs(dir.path());
        let mut offsets = Vec::new();
        for body in &expected {
            offsets.push(store.append_wait(message("t", 0, body, "", "", "")).expect("append").offset);
        }
        victim = offsets[40];
        store.close();
    }
    // Flip one body byte of record 40 and forget the checkpoint, as if the disk damaged it.
    let segment = dir.path().join("commitlog").join(format!("{:020}", victim - victim % (64 * 1024)));
    let mut bytes = std::fs::read(&segment).expect("read segment");
    let at = (victim % (64 * 1024)) as usize + 130;
    bytes[at] ^= 0xFF;
    std::fs::write(&segment, &bytes).expect("write segment");
    std::fs::remove_file(dir.path().join("checkpoint")).expect("remove checkpoint");

    let store = open_fs(dir.path());
    assert_eq!(store.recovery().log_end, victim);
    assert_eq!(queue_bodies(&store, "t", 0), expected[..40]);
    let next = store.append_wait(message("t", 0, b"replacement", "", "", "")).expect("append");
    assert_eq!((next.offset, next.queue_offset), (victim, 40));
}

#[test]
fn lost_queues_and_index_are_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = bodies(150);
    {
        let store = open_fs(dir.path());
        for (i, body) in expected.iter().enumerate() {
            store
                .append_wait(message("t", (i % 3) as u32, body, "", &format!("k{i}"), &format!("id{i}")))
                .expect("append");
        }
        store.close();
    }
    for sub in ["consumequeue", "index"] {
        std::fs::remove_dir_all(dir.path().join(sub)).expect("remove derived data");
    }
    std::fs::remove_file(dir.path().join("checkpoint")).expect("remove checkpoint");
    let store = open_fs(dir.path());
    wait_dispatched(&store);
    assert_eq!(store.recovery().rebuilt_from, 0);
    for q in 0..3u32 {
        let want: Vec<_> =
            expected.iter().enumerate().filter(|(i, _)| i % 3 == q as usize).map(|(_, b)| b.clone()).collect();
        assert_eq!(queue_bodies(&store, "t", q), want);
    }
    assert_eq!(store.lookup_key("t", "k77", 5).len(), 1);
    assert_eq!(store.lookup_message_id("id149", 5).len(), 1);
}
