//! Disk pressure is back-pressure: under the default `disk_pressure = "refuse"` the store deletes
//! no acknowledged message to make room and refuses appends instead; only the store's own files count
//! against its budget; `delete_oldest` deletes the oldest segments, reports what each queue lost, and
//! stops at protected topics; a disk that cannot hold one segment is refused at start.

use std::path::Path;
use std::sync::{Arc, Mutex};

use ferrymq_store::clock::{Clock, ManualClock, SystemClock};
use ferrymq_store::io::{FaultPlan, FaultStorage, FsStorage, Storage};
use ferrymq_store::{
    BudgetHold, DiskFull, DiskPressure, FlushMode, Removal, RemovalCause, Store, StoreConfig, StoreError,
};

use crate::support::{
    SmallFs, fill_until_refused, message, options, queue_bodies, small_config, wait_dispatched, wait_flushed,
};

const HOUR_MS: i64 = 3_600_000;

fn over_budget(err: &StoreError) -> &ferrymq_store::OverBudget {
    match err {
        StoreError::DiskFull(DiskFull::OverBudget(over)) => over,
        other => panic!("expected an over-budget refusal, got {other:?}"),
    }
}

/// The reproduction in small: default settings on a small real file system, no consumer.
#[test]
fn under_refuse_a_full_budget_refuses_appends_and_keeps_every_acknowledged_message() {
    let fs = SmallFs::new(32);
    let dir = fs.path().join("data");
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let config = StoreConfig { segment_bytes: 1 << 20, ..small_config(FlushMode::Async) };
    assert_eq!(config.disk_pressure, DiskPressure::Refuse, "the default");
    let store = Store::open(options(&dir, config, Arc::new(FsStorage), clock.clone())).expect("open");

    let (acked, refusal) = fill_until_refused(&store, "t", 4096);
    let over = over_budget(&refusal);
    assert_eq!((over.held.clone(), over.needed_bytes), (BudgetHold::Refuse, 1 << 20));
    let text = refusal.to_string();
    for words in ["budget", "disk_bytes_max", "disk_usage_max_ratio", "delete_oldest"] {
        assert!(text.contains(words), "the refusal names {words:?}: {text}");
    }
    assert!(acked.len() > 2_000, "only {} appends fit", acked.len());
    let stats = store.stats();
    assert!(stats.disk_full && stats.disk_full_reason.is_some(), "{stats:?}");
    assert!(stats.own_bytes + (1 << 20) > stats.budget_bytes, "{stats:?}");

    wait_dispatched(&store);
    wait_flushed(&store);
    store.run_retention().expect("retention");
    assert_eq!(store.stats().min_offset, 0, "retention under pressure deleted nothing");
    assert_eq!(queue_bodies(&store, "t", 0), acked, "every acknowledged message is still there");
    let again = store.append_wait(message("t", 0, &[b'x'; 4096], "", "", ""));
    assert!(matches!(again, Err(StoreError::DiskFull(_))), "{again:?}");

    // Only age makes room under `refuse`.
    clock.advance_ms(73 * HOUR_MS);
    store.run_retention().expect("retention");
    let stats = store.stats();
    assert!(!stats.disk_full && stats.min_offset > 0, "{stats:?}");
    store.append_wait(message("t", 0, b"room again", "", "", "")).expect("appends resume");
}

#[test]
fn a_foreign_file_filling_the_disk_refuses_appends_but_never_deletes_the_stores_segments() {
    let fs = SmallFs::new(32);
    let dir = fs.path().join("data");
    // Even the mode that deletes for space must not delete for someone else's files.
    let config = StoreConfig {
        segment_bytes: 1 << 20,
        disk_pressure: DiskPressure::DeleteOldest,
        ..small_config(FlushMode::Async)
    };
    let store = Store::open(options(&dir, config, Arc::new(FsStorage), Arc::new(SystemClock))).expect("open");
    let mut acked = Vec::new();
    for i in 0..1_000u32 {
        let body = format!("{i:08}").repeat(512).into_bytes();
        store.append_wait(message("t", 0, &body, "", "", "")).expect("append");
        acked.push(body);
    }
    wait_dispatched(&store);
    let before = store.stats();
    assert!(before.segments >= 4, "{before:?}");

    // Another process fills the file system to 95 %.
    let space = FsStorage.space(&dir).expect("space");
    let used = space.total_bytes - space.available_bytes;
    let ballast_bytes = (space.total_bytes as f64 * 0.95) as u64 - used;
    let ballast = fs.path().join("ballast");
    std::fs::write(&ballast, vec![7u8; ballast_bytes as usize]).expect("ballast");
    std::fs::File::open(&ballast).and_then(|f| f.sync_all()).expect("sync ballast");

    store.run_retention().expect("retention");
    let after = store.stats();
    assert_eq!((after.min_offset, after.segments), (before.min_offset, before.segments), "nothing deleted");
    assert_eq!(after.pressure_deleted_segments, 0);
    assert!(after.own_bytes < ballast_bytes, "the ballast is not counted as the store's: {after:?}");
    assert!(after.disk_full, "{after:?}");
    let refused = store.append_wait(message("t", 0, b"refused", "", "", "")).expect_err("disk is full");
    assert!(matches!(refused, StoreError::DiskFull(DiskFull::AboveRatio { .. })), "{refused:?}");
    let text = refused.to_string();
    assert!(text.contains("disk_full_ratio") && text.contains("free space"), "{text}");
    assert_eq!(queue_bodies(&store, "t", 0), acked);

    std::fs::remove_file(&ballast).expect("free space");
    store.run_retention().expect("retention");
    assert!(!store.stats().disk_full);
    store.append_wait(message("t", 0, b"after", "", "", "")).expect("appends resume");
}

fn fault_store(config: StoreConfig, protected: &[&str]) -> (Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_764_000_000_000));
    let storage = FaultStorage::new(FaultPlan { capacity_bytes: 64 << 20, ..FaultPlan::default() }, clock.clone());
    let mut options = options(Path::new("/data"), config, Arc::new(storage), clock.clone());
    options.protected_topics = protected.iter().map(|t| t.to_string()).collect();
    (Store::open(options).expect("open"), clock)
}

fn delete_oldest(budget_bytes: u64) -> StoreConfig {
    StoreConfig {
        disk_pressure: DiskPressure::DeleteOldest,
        disk_bytes_max: budget_bytes,
        ..small_config(FlushMode::Sync)
    }
}

fn record_removals(store: &Store) -> Arc<Mutex<Vec<Removal>>> {
    let removals = Arc::new(Mutex::new(Vec::new()));
    let sink = removals.clone();
    store.set_removal_hook(Some(Arc::new(move |removal: &Removal| sink.lock().expect("lock").push(removal.clone()))));
    removals
}

#[test]
fn delete_oldest_deletes_the_oldest_segments_and_reports_what_each_queue_lost() {
    let (store, _clock) = fault_store(delete_oldest(1 << 20), &[]);
    let removals = record_removals(&store);
    for i in 0..2_400u32 {
        store.append_wait(message("t", i % 2, &[b'x'; 1000], "", "", &format!("id{i}"))).expect("append");
    }
    wait_dispatched(&store);
    store.run_retention().expect("retention");

    let stats = store.stats();
    assert!(stats.own_bytes < stats.budget_bytes && !stats.disk_full, "{stats:?}");
    let mut removals = removals.lock().expect("lock").clone();
    removals.sort_by_key(|r| r.log_from);
    assert!(!removals.is_empty());
    assert_eq!(stats.pressure_deleted_segments, removals.len() as u64);
    assert!(removals.iter().all(|r| r.cause == RemovalCause::DiskPressure));
    // The removed log ranges run from the start to where the log now starts.
    assert_eq!(removals[0].log_from, 0);
    assert!(removals.windows(2).all(|w| w[0].log_to == w[1].log_from));
    assert_eq!(removals.last().map(|r| r.log_to), Some(stats.min_offset));
    // Each queue's reported losses run from 0 to where the queue now starts.
    for queue_id in [0, 1] {
        let (min, max) = store.queue_bounds("t", queue_id).expect("queue");
        let lost: Vec<_> =
            removals.iter().flat_map(|r| &r.queues).filter(|q| q.topic == "t" && q.queue_id == queue_id).collect();
        assert_eq!(lost.first().map(|q| q.from), Some(0));
        assert!(lost.windows(2).all(|w| w[0].to == w[1].from));
        assert_eq!(lost.last().map(|q| q.to), Some(min));
        assert_eq!(max, 1_200);
        assert_eq!(queue_bodies(&store, "t", queue_id).len() as u64, max - min, "the rest is readable");
    }
    assert_eq!(store.lookup_message_id("id2399", 1).len(), 1);
    assert!(store.lookup_message_id("id0", 1).is_empty());
}

#[test]
fn delete_oldest_stops_at_the_first_segment_holding_a_protected_topic() {
    let (store, clock) = fault_store(delete_oldest(512 << 10), &["audit"]);
    for _ in 0..300 {
        store.append_wait(message("t", 0, &[b'o'; 1000], "", "", "")).expect("append");
    }
    let audit = store.append_wait(message("audit", 0, b"ops changed a binding", "", "", "")).expect("audit");
    let (_, refusal) = fill_until_refused(&store, "t", 1000);
    assert!(matches!(refusal, StoreError::DiskFull(DiskFull::OverBudget(_))), "{refusal:?}");
    wait_dispatched(&store);
    store.run_retention().expect("retention");

    let stats = store.stats();
    let segment = audit.offset - audit.offset % (64 << 10);
    assert_eq!(stats.min_offset, segment, "everything before the audit record's segment went, nothing after");
    assert_eq!(stats.pressure_deleted_segments, segment / (64 << 10));
    let reason = stats.disk_full_reason.unwrap_or_default();
    assert!(stats.disk_full && reason.contains("protected topic audit"), "{reason}");
    let refused = store.append_wait(message("t", 0, b"refused", "", "", "")).expect_err("pressure remains");
    assert_eq!(over_budget(&refused).held, BudgetHold::Protected { topic: "audit".into(), segment });
    assert_eq!(queue_bodies(&store, "audit", 0), vec![b"ops changed a binding".to_vec()]);

    // Age still removes protected records.
    clock.advance_ms(73 * HOUR_MS);
    store.run_retention().expect("retention");
    assert!(queue_bodies(&store, "audit", 0).is_empty());
    assert!(!store.stats().disk_full);
    store.append_wait(message("t", 0, b"room again", "", "", "")).expect("appends resume");
}

#[test]
fn a_store_over_its_budget_reports_the_disk_full_at_open_before_any_append() {
    let clock = Arc::new(ManualClock::new(1_764_000_000_000));
    let storage = FaultStorage::new(FaultPlan { capacity_bytes: 64 << 20, ..FaultPlan::default() }, clock.clone());
    let open = |config: StoreConfig| {
        Store::open(options(Path::new("/data"), config, Arc::new(storage.clone()), clock.clone())).expect("open")
    };
    let store = open(small_config(FlushMode::Sync));
    for _ in 0..200 {
        store.append_wait(message("t", 0, &[b'x'; 1000], "", "", "")).expect("append");
    }
    store.close();
    drop(store);
    let store = open(StoreConfig { disk_bytes_max: 64 << 10, ..small_config(FlushMode::Sync) });
    let stats = store.stats();
    assert!(stats.disk_full, "known at open: {stats:?}");
    assert_eq!(stats.budget_bytes, 64 << 10);
    assert!(!store.accepts_appends());
}

#[test]
fn start_up_refuses_a_disk_that_cannot_hold_one_segment() {
    let fs = SmallFs::new(16);
    let dir = fs.path().join("data");
    let config = StoreConfig { segment_bytes: 64 << 20, ..small_config(FlushMode::Sync) };
    let err = Store::open(options(&dir, config, Arc::new(FsStorage), Arc::new(SystemClock))).expect_err("refused");
    assert!(matches!(err, StoreError::NoRoomForSegment { segment_bytes: 0x400_0000, .. }), "{err:?}");
    let text = err.to_string();
    for words in [dir.to_string_lossy().as_ref(), "segment_bytes = 67108864", "lower segment_bytes", "free space"] {
        assert!(text.contains(words), "the error names {words:?}: {text}");
    }
    let config = StoreConfig { segment_bytes: 1 << 20, ..small_config(FlushMode::Sync) };
    let store = Store::open(options(&dir, config, Arc::new(FsStorage), Arc::new(SystemClock))).expect("fits");
    store.append_wait(message("t", 0, b"fits", "", "", "")).expect("append");
}

#[test]
fn start_up_refuses_a_budget_smaller_than_one_segment() {
    let storage = FaultStorage::new(
        FaultPlan { capacity_bytes: 100_000, ..FaultPlan::default() },
        Arc::new(ManualClock::new(1_764_000_000_000)),
    );
    let config = StoreConfig { disk_usage_max_ratio: 0.5, ..small_config(FlushMode::Sync) };
    let open =
        |config| Store::open(options(Path::new("/data"), config, Arc::new(storage.clone()), Arc::new(SystemClock)));
    let err = open(config.clone()).expect_err("half of 100 kB holds no 64 KiB segment");
    assert!(matches!(err, StoreError::BudgetBelowSegment { budget_bytes: 50_000, .. }), "{err:?}");
    assert!(err.to_string().contains("disk_bytes_max"), "{err}");
    open(StoreConfig { disk_bytes_max: 64 << 10, ..config }).expect("an explicit budget of one segment");
}
