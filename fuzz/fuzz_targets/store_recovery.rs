//! Recovery of a store whose files hold any bytes. The first byte chooses: its first KiB as the
//! checkpoint (bit 1); the rest as the first log segment as it is, or (bit 2) written over a real
//! segment of 24 records at a place the input gives, with every record's checksum made valid again
//! (bit 4) and the file cut at a length the input gives (bit 8). Then the store is opened.
//!
//! Opening fails with an error or gives a store whose consume queues point only at records that name
//! that queue and position, every one of them intact, which takes an append that reads back, and
//! which opens again after closing with that append in place.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use ferrymq_proto::record::{self, RecordMeta, sys_flag};
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

/// A segment as the store writes it: records of two topics and three queues in order, an atomic
/// batch, then zeros to the segment's end.
fn base_segment() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut out = Vec::new();
        let mut next = [0u64; 3];
        for i in 0..24u32 {
            let (topic, queue_id) = if i % 5 == 4 { ("%RETRY%g_orders", 0) } else { ("orders", i % 3) };
            let queue_offset = if topic == "orders" {
                next[queue_id as usize] += 1;
                next[queue_id as usize] - 1
            } else {
                u64::from(i / 5)
            };
            let meta = RecordMeta {
                sys_flag: if (20..22).contains(&i) { sys_flag::BATCH_CONTINUES } else { 0 },
                flag: 0,
                queue_id,
                queue_offset,
                physical_offset: out.len() as u64,
                born_timestamp_ms: 1_764_000_000_000,
                store_timestamp_ms: 1_764_000_000_000 + i64::from(i),
                born_host: "127.0.0.1:5000".parse().expect("addr"),
                store_host: "127.0.0.1:10911".parse().expect("addr"),
                reconsume_times: 0,
                prepared_tx_offset: 0,
            };
            let mut properties = Vec::new();
            let (id, key) = (format!("id-{i}"), format!("key-{}", i % 4));
            ferrymq_proto::properties::encode([("UNIQ_KEY", id.as_str()), ("KEYS", key.as_str())], &mut properties)
                .expect("valid");
            let body = vec![b'a' + (i % 26) as u8; 40 + i as usize * 7];
            record::encode(&meta, topic, &properties, &body, &mut out).expect("encodes");
        }
        out.resize(SEGMENT_BYTES, 0);
        out
    })
}

/// Recomputes the checksum of every record found by following the length fields from the start,
/// so that changed fields (a topic, a queue offset, a position) get past the check.
fn reseal(segment: &mut [u8]) {
    let mut at = 0;
    while at + 12 <= segment.len() {
        let total = u32::from_be_bytes([segment[at], segment[at + 1], segment[at + 2], segment[at + 3]]) as usize;
        if total < 12 || at + total > segment.len() {
            return;
        }
        let crc = crc32c::crc32c(&segment[at + 12..at + total]);
        segment[at + 8..at + 12].copy_from_slice(&crc.to_be_bytes());
        at += total;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let (checkpoint, data) = if mode & 1 == 1 { rest.split_at(rest.len().min(1024)) } else { (&[][..], rest) };
    let segment = if mode & 2 == 2 {
        // A real segment with the input written over it at a chosen place, cut at a chosen length,
        // and (mode bit 4) every record's checksum made valid again.
        let Some((place, overlay)) = data.split_first_chunk::<4>() else { return };
        let at = usize::from(u16::from_be_bytes([place[0], place[1]])) % SEGMENT_BYTES;
        let len = usize::from(u16::from_be_bytes([place[2], place[3]])) % (SEGMENT_BYTES + 1);
        let mut segment = base_segment().to_vec();
        let n = overlay.len().min(SEGMENT_BYTES - at);
        segment[at..at + n].copy_from_slice(&overlay[..n]);
        if mode & 4 == 4 {
            reseal(&mut segment);
        }
        segment.truncate(if mode & 8 == 8 { len } else { SEGMENT_BYTES });
        segment
    } else {
        // The input as it is, up to the segment size: a file cut short (or empty) is one of the cases.
        data[..data.len().min(SEGMENT_BYTES)].to_vec()
    };
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
