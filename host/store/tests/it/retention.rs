//! Retention: by age, and under `delete_oldest` by the store's own usage; queues and lookups follow.

use std::path::Path;
use std::sync::Arc;

use ferrymq_store::clock::ManualClock;
use ferrymq_store::io::{FaultPlan, FaultStorage};
use ferrymq_store::{DiskPressure, FlushMode, Store};

use crate::support::{message, options, queue_bodies, small_config, wait_dispatched};

#[test]
fn segments_older_than_the_retention_time_are_deleted_and_readers_follow() {
    let clock = Arc::new(ManualClock::new(1_764_000_000_000));
    let storage = FaultStorage::new(FaultPlan { capacity_bytes: 64 << 20, ..FaultPlan::default() }, clock.clone());
    let open = || {
        Store::open(options(
            Path::new("/data"),
            small_config(FlushMode::Sync),
            Arc::new(storage.clone()),
            clock.clone(),
        ))
        .expect("open")
    };
    let store = open();
    for i in 0..200 {
        store.append_wait(message("t", 0, &[b'o'; 1000], "", &format!("old{i}"), "")).expect("append");
    }
    clock.advance_ms(73 * 3_600_000);
    for i in 0..10 {
        store.append_wait(message("t", 0, &[b'n'; 1000], "", &format!("new{i}"), "")).expect("append");
    }
    wait_dispatched(&store);
    let before = store.stats();
    store.run_retention().expect("retention");
    let after = store.stats();
    assert!(after.segments < before.segments, "{before:?} -> {after:?}");
    assert!(after.min_offset > before.min_offset);

    let (min, max) = store.queue_bounds("t", 0).expect("queue");
    assert_eq!(max, 210);
    assert!(min > 0 && min <= 200, "queue min follows the log: {min}");
    let bodies = queue_bodies(&store, "t", 0);
    assert_eq!(bodies.len() as u64, max - min, "every remaining entry is readable");
    assert!(bodies.ends_with(&vec![vec![b'n'; 1000]; 10]));
    assert!(store.lookup_key("t", "old0", 5).is_empty(), "a deleted record is not found");
    assert_eq!(store.lookup_key("t", "new9", 5).len(), 1);

    store.close();
    drop(store);
    let reopened = open();
    assert_eq!(reopened.queue_bounds("t", 0), Some((min, max)));
}

#[test]
fn under_delete_oldest_own_files_over_the_budget_lose_their_oldest_segments_first() {
    let clock = Arc::new(ManualClock::new(1_764_000_000_000));
    let storage = FaultStorage::new(FaultPlan { capacity_bytes: 1 << 20, ..FaultPlan::default() }, clock.clone());
    let mut config = small_config(FlushMode::Sync);
    config.disk_pressure = DiskPressure::DeleteOldest;
    config.disk_usage_max_ratio = 0.5;
    config.disk_full_ratio = 0.99;
    let store =
        Store::open(options(Path::new("/data"), config, Arc::new(storage.clone()), clock.clone())).expect("open");
    // About 12 segments of 64 KiB against a budget of 8: the store deletes as it goes (each new
    // segment wakes retention) and once more when asked.
    for i in 0..700u32 {
        store.append_wait(message("t", 0, &[b'x'; 1000], "", "", &format!("id{i}"))).expect("append");
    }
    wait_dispatched(&store);
    let written = store.stats().written;
    store.run_retention().expect("retention");
    let after = store.stats();
    let used = ferrymq_store::io::Storage::space(&storage, Path::new("/data")).expect("space").used_ratio();
    assert!(used < 0.5, "usage after retention: {used}");
    assert!(after.min_offset > 0 && after.pressure_deleted_segments > 0, "{after:?}");
    assert_eq!(after.written, written, "the newest data stays");
    let bodies = queue_bodies(&store, "t", 0);
    assert!(!bodies.is_empty() && bodies.len() < 700);
    assert_eq!(store.lookup_message_id("id699", 1).len(), 1);
    assert!(store.lookup_message_id("id0", 1).is_empty());
}
