//! Seeded crash points: every record acknowledged under sync flush survives, nothing corrupt is read.
//!
//! Each crash point runs appenders against a store on `FaultStorage` that crashes after a seeded number
//! of file operations (during open, appends, segment roll-over, dispatch or checkpoint), takes a seeded
//! crash image (unsynced writes kept, torn or lost), reopens it, and checks:
//! * every acknowledged record is in its queue at its queue offset, intact, and found by its id;
//! * every queue entry from min to max decodes with a valid checksum, with the queue offset it sits at,
//!   and no message appears twice;
//! * every atomic batch is there whole or not at all;
//! * the recovered store takes new appends and survives a clean restart.
//!
//! The same runs under async flush check everything except survival of acknowledged records, which
//! async flush does not promise.
//!
//! `FERRYMQ_CRASH_POINTS` sets the number of points (default 1000); `FERRYMQ_CRASH_SEED` replays one.
//! A seed fixes the workload, the crash point and the crash image; thread interleaving is not fixed,
//! so a replay may take a few runs to hit the same state.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use ferrymq_proto::properties::{self, UNIQ_KEY};
use ferrymq_store::io::{FaultPlan, FaultStorage, SeededRng as Rng};
use ferrymq_store::{FlushMode, Store, StoreConfig, StoreError};

use crate::support::{message, open_fault, small_config};

#[derive(Clone, Debug)]
struct Acked {
    topic: String,
    queue_id: u32,
    queue_offset: u64,
    id: String,
    body: Vec<u8>,
}

fn config(flush: FlushMode) -> StoreConfig {
    StoreConfig {
        segment_bytes: 16 * 1024,
        record_bytes_max: 8 * 1024,
        queue_file_entries: 16,
        index_slots: 17,
        index_entries_max: 48,
        checkpoint_interval_ms: 1,
        ..small_config(flush)
    }
}

fn body_for(seed: u64, thread: u64, i: u64, len: usize) -> Vec<u8> {
    let mut body = format!("{seed}/{thread}/{i}:").into_bytes();
    body.resize(len.max(body.len()), b'a' + (i % 26) as u8);
    body
}

/// Appends from three threads until the crash makes appends fail; returns what was acknowledged.
/// Appends from three threads until the crash makes appends fail; returns what was acknowledged. The
/// third thread appends atomic batches of three records (ids `…P0`, `…P1`, `…P2`).
fn run_workload(store: &Arc<Store>, seed: u64) -> Vec<Acked> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..3u64)
        .map(|thread| {
            let store = store.clone();
            let acked = acked.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(seed.wrapping_mul(31).wrapping_add(thread));
                for i in 0..40u64 {
                    let parts = if thread == 2 { 3 } else { 1 };
                    let batch: Vec<Acked> = (0..parts)
                        .map(|part| {
                            let topic = if rng.below(2) == 0 { "orders" } else { "audit" };
                            let queue_id = rng.below(2) as u32;
                            let body = body_for(seed, thread, i, rng.below(3000) as usize);
                            let id = if parts == 1 {
                                format!("S{seed}T{thread}I{i}")
                            } else {
                                format!("S{seed}T{thread}I{i}P{part}")
                            };
                            Acked { topic: topic.into(), queue_id, queue_offset: 0, id, body }
                        })
                        .collect();
                    let messages = batch
                        .iter()
                        .map(|a| message(&a.topic, a.queue_id, &a.body, "tag", "k", &a.id))
                        .collect::<Vec<_>>();
                    let result = if parts == 1 {
                        store.append_wait(messages.into_iter().next().expect("one")).map(|a| vec![a])
                    } else {
                        store.append_batch_wait(messages)
                    };
                    match result {
                        Ok(appended) => {
                            let mut acked = acked.lock().unwrap();
                            for (mut a, stored) in batch.into_iter().zip(appended) {
                                a.queue_offset = stored.queue_offset;
                                acked.push(a);
                            }
                        }
                        Err(StoreError::Fatal(_)) | Err(StoreError::Closed) => return,
                        Err(err) => panic!("seed {seed}: unexpected append error {err}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("appender thread");
    }
    Arc::try_unwrap(acked).map(|m| m.into_inner().unwrap()).unwrap_or_default()
}

/// Fails unless every atomic batch is wholly present or wholly absent.
fn check_batches_whole(seen: &BTreeMap<String, (String, u32, u64, Vec<u8>)>, seed: u64) {
    let mut parts: BTreeMap<&str, usize> = BTreeMap::new();
    for id in seen.keys() {
        if let Some((batch, _)) = id.split_once('P') {
            *parts.entry(batch).or_default() += 1;
        }
    }
    for (batch, n) in parts {
        assert_eq!(n, 3, "seed {seed}: batch {batch} survived in part");
    }
}

/// Reads every queue fully, checking integrity; returns id -> (topic, queue, queue offset, body).
fn read_everything(store: &Store, seed: u64) -> BTreeMap<String, (String, u32, u64, Vec<u8>)> {
    let mut seen = BTreeMap::new();
    for q in store.queues() {
        let entries = store.read_queue(&q.topic, q.queue_id, q.min, (q.max - q.min) as usize);
        assert_eq!(entries.len() as u64, q.max - q.min, "seed {seed}: queue {q:?} has holes");
        for e in entries {
            let stored = store.record(e.offset, e.len).unwrap_or_else(|err| panic!("seed {seed}: entry {e:?}: {err}"));
            let rec = stored.decode().unwrap_or_else(|err| panic!("seed {seed}: corrupt record returned: {err}"));
            assert_eq!(
                (rec.topic, rec.meta.queue_id, rec.meta.queue_offset),
                (q.topic.as_str(), q.queue_id, e.queue_offset),
                "seed {seed}"
            );
            let id = properties::get(rec.properties, UNIQ_KEY).expect("id").to_owned();
            let previous = seen.insert(id.clone(), (q.topic.clone(), q.queue_id, e.queue_offset, rec.body.to_vec()));
            assert!(previous.is_none(), "seed {seed}: message {id} appears twice");
        }
    }
    seen
}

/// File operations of one whole workload without a crash, to spread crash points over.
fn calibrate(flush: FlushMode) -> u64 {
    let storage = crate::support::fault_storage(FaultPlan { capacity_bytes: 256 << 20, ..FaultPlan::default() });
    let store = Arc::new(open_fault(&storage, config(flush)));
    let acked = run_workload(&store, u64::MAX);
    assert_eq!(acked.len(), 200, "without a crash every append is acknowledged");
    drop(store);
    storage.ops()
}

fn check_crash_point(seed: u64, ops_range: u64, flush: FlushMode) {
    let mut rng = Rng(seed);
    let crash_after = rng.below(ops_range);
    let storage = FaultStorage::new(
        FaultPlan { seed, crash_after_ops: Some(crash_after), capacity_bytes: 256 << 20, ..FaultPlan::default() },
        Arc::new(ferrymq_store::clock::ManualClock::new(1_764_000_000_000)),
    );
    let acked = match Store::open(crate::support::options(
        std::path::Path::new("/data"),
        config(flush),
        Arc::new(storage.clone()),
        Arc::new(ferrymq_store::clock::ManualClock::new(1_764_000_000_000)),
    )) {
        Ok(store) => {
            let store = Arc::new(store);
            let acked = run_workload(&store, seed);
            storage.crash_now();
            drop(store);
            acked
        }
        Err(_) => Vec::new(), // crashed while opening an empty store
    };

    let image = storage.crash_image(seed.rotate_left(7));
    let recovered = open_fault(&image, config(flush));
    let seen = read_everything(&recovered, seed);
    check_batches_whole(&seen, seed);
    let promised = if flush == FlushMode::Sync { acked.as_slice() } else { &[] };
    for a in promised {
        let got = seen
            .get(&a.id)
            .unwrap_or_else(|| panic!("seed {seed}: acknowledged {} lost (crash after {crash_after} ops)", a.id));
        assert_eq!(
            got,
            &(a.topic.clone(), a.queue_id, a.queue_offset, a.body.clone()),
            "seed {seed}: {} changed",
            a.id
        );
    }
    if let Some(a) = promised.last() {
        assert_eq!(recovered.lookup_message_id(&a.id, 2).len(), 1, "seed {seed}: id index lost {}", a.id);
    }

    // The recovered store goes on: new appends, a clean close, and a reopen that sees it all.
    let extra =
        recovered.append_wait(message("orders", 0, b"after recovery", "", "", "after")).expect("append after recovery");
    let expected_next = seen.values().filter(|(t, q, _, _)| t == "orders" && *q == 0).count() as u64;
    assert_eq!(extra.queue_offset, expected_next, "seed {seed}: queue offsets continue without gaps");
    recovered.close();
    drop(recovered);
    let reopened = open_fault(&image, config(flush));
    assert!(reopened.recovery().clean, "seed {seed}");
    let after = read_everything(&reopened, seed);
    assert_eq!(after.len(), seen.len() + 1, "seed {seed}");
    let ids: HashSet<_> = after.keys().collect();
    assert!(ids.contains(&"after".to_owned()));
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

fn run_crash_points(flush: FlushMode, default_points: u64) {
    if let Some(seed) = env_u64("FERRYMQ_CRASH_SEED") {
        eprintln!("replaying crash seed {seed} ({flush:?} flush)");
        check_crash_point(seed, calibrate(flush), flush);
        return;
    }
    let points = env_u64("FERRYMQ_CRASH_POINTS").unwrap_or(default_points);
    let base = env_u64("FERRYMQ_CRASH_BASE").unwrap_or(0);
    let ops_range = calibrate(flush);
    eprintln!("{points} crash points spread over {ops_range} file operations ({flush:?} flush)");
    for seed in base..base + points {
        let outcome = std::panic::catch_unwind(|| check_crash_point(seed, ops_range, flush));
        if outcome.is_err() {
            panic!("crash point failed; replay with FERRYMQ_CRASH_SEED={seed}");
        }
    }
}

#[test]
fn acknowledged_records_survive_seeded_crash_points() {
    run_crash_points(FlushMode::Sync, 1000);
}

#[test]
fn async_flush_crashes_never_return_corrupt_missing_or_duplicate_entries() {
    run_crash_points(FlushMode::Async, 300);
}
