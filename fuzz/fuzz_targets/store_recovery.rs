//! Recovery of a store whose files hold any bytes: the input is written as the first log segment
//! (and, when the first byte says so, its first KiB as the checkpoint), then the store is opened.
//!
//! Opening fails with an error or gives a store whose consume queues point only at records that name
//! that queue and position, every one of them intact, which takes an append that reads back, and
//! which opens again after closing with that append in place.
#![no_main]

use std::path::Path;
use std::sync::Arc;

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
    let options = || StoreOptions { config: config(), storage: Arc::new(FsStorage), ..StoreOptions::new(dir) };
    let Ok(store) = Store::open(options()) else { return };
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
    let appended = match store.append_wait(message()) {
        Ok(appended) => {
            let stored = store.record(appended.offset, appended.len).expect("an appended record reads");
            assert_eq!(stored.decode().expect("and decodes").body, b"after recovery");
            Some(appended)
        }
        Err(err) => {
            assert!(!store.accepts_appends(), "a store that takes appends refused one: {err}");
            None
        }
    };
    store.close();
    // What opened once opens again, with the acknowledged append where it was stored.
    let store = Store::open(options()).unwrap_or_else(|err| panic!("a store that opened does not reopen: {err}"));
    if let Some(appended) = appended {
        let stored = store.record(appended.offset, appended.len).expect("the append is still there");
        assert_eq!(stored.decode().expect("and decodes").body, b"after recovery");
    }
    store.close();
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let (checkpoint, data) = if mode & 1 == 1 { rest.split_at(rest.len().min(1024)) } else { (&[][..], rest) };
    // The segment file is the input as it is, up to the segment size: a file cut short (or empty)
    // is one of the cases.
    let segment = &data[..data.len().min(SEGMENT_BYTES)];
    // Memory-backed when there is a /dev/shm: the store syncs every file it recovers.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("tempdir");
    std::fs::create_dir_all(dir.path().join("commitlog")).expect("mkdir");
    std::fs::write(dir.path().join("commitlog").join("00000000000000000000"), segment).expect("segment");
    if !checkpoint.is_empty() {
        std::fs::write(dir.path().join("checkpoint"), checkpoint).expect("checkpoint");
    }
    check(dir.path());
});
