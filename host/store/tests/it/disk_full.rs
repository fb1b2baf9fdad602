//! A full disk: appends fail with a clear error, acknowledged data stays intact, and appends resume
//! when space returns, without a restart.

use std::path::Path;
use std::sync::Arc;

use ferrymq_store::clock::SystemClock;
use ferrymq_store::io::{FaultPlan, FsStorage, Storage};
use ferrymq_store::{DiskFull, FlushMode, Store, StoreConfig, StoreError};

use crate::support::{
    SmallFs, fault_storage, message, open_fault, options, queue_bodies, small_config, wait_dispatched,
};

/// Appends 1 KiB messages until the disk is full; returns the acknowledged bodies.
fn fill(store: &Store) -> Vec<Vec<u8>> {
    let mut acked = Vec::new();
    for i in 0..100_000u32 {
        let body = format!("{i:08}").repeat(128).into_bytes();
        match store.append_wait(message("t", 0, &body, "", "", "")) {
            Ok(_) => acked.push(body),
            Err(StoreError::DiskFull(reason)) => {
                let reason = reason.to_string();
                assert!(reason.contains("No space left") || reason.contains("disk"), "{reason}");
                return acked;
            }
            Err(err) => panic!("unexpected error while filling the disk: {err}"),
        }
    }
    panic!("the disk never filled up");
}

#[test]
fn out_of_space_refuses_appends_until_space_returns() {
    let storage = fault_storage(FaultPlan { capacity_bytes: 300_000, ..FaultPlan::default() });
    // A budget far beyond the disk: the file system runs out first.
    let config = StoreConfig {
        disk_bytes_max: 1 << 40,
        disk_usage_max_ratio: 1.0,
        disk_full_ratio: 1.0,
        ..small_config(FlushMode::Sync)
    };
    let store = open_fault(&storage, config.clone());
    let acked = fill(&store);
    assert!(acked.len() > 100, "only {} appends fit", acked.len());
    let again = store.append_wait(message("t", 0, &[b'x'; 1024], "", "", ""));
    assert!(matches!(again, Err(StoreError::DiskFull(DiskFull::NoSpace { .. }))), "{again:?}");
    let stats = store.stats();
    assert!(stats.disk_full, "the failed append reports the disk full at once: {stats:?}");
    assert!(stats.disk_full_reason.unwrap_or_default().contains("No space left"));
    wait_dispatched(&store);
    assert_eq!(queue_bodies(&store, "t", 0), acked, "acknowledged data is intact while the disk is full");

    storage.set_capacity_bytes(10 << 20);
    let resumed = store.append_wait(message("t", 0, b"space is back", "", "", "")).expect("appends resume");
    assert_eq!(resumed.queue_offset, acked.len() as u64);
    store.close();
    let reopened = open_fault(&storage, config);
    assert_eq!(queue_bodies(&reopened, "t", 0).len(), acked.len() + 1);
}

#[test]
fn disk_usage_above_the_full_ratio_refuses_appends_until_it_drops() {
    let storage = fault_storage(FaultPlan { capacity_bytes: 1 << 20, ..FaultPlan::default() });
    let config = StoreConfig { disk_usage_max_ratio: 0.95, disk_full_ratio: 0.95, ..small_config(FlushMode::Sync) };
    let store = open_fault(&storage, config);
    store.append_wait(message("t", 0, b"before", "", "", "")).expect("append");
    // Shrink the disk to just above what the store uses (68 KB): usage is now above 95%.
    storage.set_capacity_bytes(70_000);
    store.run_retention().expect("retention check");
    assert!(store.stats().disk_full, "{:?}", storage.space(Path::new("/data")));
    let refused = store.append_wait(message("t", 0, b"refused", "", "", ""));
    match refused {
        Err(StoreError::DiskFull(DiskFull::AboveRatio { ratio, used_bytes, total_bytes, .. })) => {
            assert_eq!((ratio, total_bytes), (0.95, 70_000));
            assert!(used_bytes >= 66_500, "{used_bytes}");
        }
        other => panic!("expected a disk-full refusal, got {other:?}"),
    }
    storage.set_capacity_bytes(10 << 20);
    store.run_retention().expect("retention check");
    assert!(!store.stats().disk_full);
    store.append_wait(message("t", 0, b"after", "", "", "")).expect("appends resume");
    wait_dispatched(&store);
    assert_eq!(queue_bodies(&store, "t", 0), vec![b"before".to_vec(), b"after".to_vec()]);
}

#[test]
fn a_real_full_file_system_refuses_appends_and_resumes_when_space_returns() {
    let fs = SmallFs::new(24);
    let ballast = fs.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 6 << 20]).expect("ballast");
    let dir = fs.path().join("data");
    let config = StoreConfig {
        segment_bytes: 1 << 20,
        disk_usage_max_ratio: 1.0,
        disk_full_ratio: 1.0,
        ..small_config(FlushMode::Sync)
    };
    let store = Store::open(options(&dir, config.clone(), Arc::new(FsStorage), Arc::new(SystemClock))).expect("open");
    let acked = fill(&store);
    assert!(acked.len() > 1000, "only {} appends fit", acked.len());
    assert!(store.stats().disk_full, "ENOSPC reports the disk full at once");
    wait_dispatched(&store);
    assert_eq!(queue_bodies(&store, "t", 0), acked);

    std::fs::remove_file(&ballast).expect("free space");
    let resumed = store.append_wait(message("t", 0, b"space is back", "", "", "")).expect("appends resume");
    assert_eq!(resumed.queue_offset, acked.len() as u64);
    store.close();
    let reopened = Store::open(options(&dir, config, Arc::new(FsStorage), Arc::new(SystemClock))).expect("reopen");
    assert!(reopened.recovery().clean);
    assert_eq!(queue_bodies(&reopened, "t", 0).len(), acked.len() + 1);
}
