//! Seeded fuzz tests of what a replication peer controls: the frames of the stream, the JSON of
//! HELLO and META, and the log bytes of DATA frames that a slave appends verbatim. Frames round-trip;
//! any byte stream reads to frames that re-encode the same or to an error; a DATA payload is kept
//! as whole, valid entries or refused (by the slave's topic check or by its store), and the slave's
//! store keeps taking appends afterwards.
//!
//! Budgets and replay: `ferrymq_fuzzgen` (`FERRYMQ_FUZZ_SEED`, `FERRYMQ_FUZZ_CASES`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use ferrymq_fuzzgen::{Rng, cases, json, mutate};
use ferrymq_proto::record::{self, Entry, FILLER_BYTES_MIN, RecordMeta, Verify};
use ferrymq_store::{Store, StoreOptions};

use crate::master::{Hello, MetadataCopy};
use crate::wire::{FRAME_BYTES_MAX, Frame, HELLO_BYTES_MAX};

fn frame(rng: &mut Rng) -> Frame {
    let n = rng.size(300);
    let bytes = rng.bytes(n);
    match rng.below(6) {
        0 => Frame::Hello { json: bytes },
        1 => Frame::Ack { log_end: rng.edge_u64() },
        2 => Frame::Data { offset: rng.edge_u64(), master_written: rng.edge_u64(), bytes },
        3 => Frame::Beat { master_written: rng.edge_u64() },
        4 => Frame::Meta { json: bytes },
        _ => Frame::Refuse { reason: rng.text(40) },
    }
}

fn encoded(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.write_to(&mut out).expect("a frame within the limit writes");
    }
    out
}

#[test]
fn frames_round_trip_one_after_another() {
    cases!(20_000, |rng| {
        let frames: Vec<Frame> = (0..1 + rng.size(6)).map(|_| frame(rng)).collect();
        let stream = encoded(&frames);
        let mut input = stream.as_slice();
        for f in &frames {
            assert_eq!(&Frame::read_from(&mut input).expect("reads"), f);
        }
        assert!(input.is_empty());
        assert!(Frame::read_from(&mut input).is_err(), "the end of the stream is an error");
    });
}

#[test]
fn any_byte_stream_reads_to_frames_that_re_encode_the_same_or_to_an_error() {
    cases!(50_000, |rng| {
        let frames: Vec<Frame> = (0..1 + rng.size(4)).map(|_| frame(rng)).collect();
        let mut stream = encoded(&frames);
        let donor = encoded(&[frame(rng)]);
        mutate(rng, &mut stream, &[&donor]);
        let max = *rng.pick(&[FRAME_BYTES_MAX, HELLO_BYTES_MAX, 64, 0]);
        let mut input = stream.as_slice();
        while let Ok(f) = Frame::read_limited(&mut input, max) {
            let again = encoded(std::slice::from_ref(&f));
            // A refusal's reason is read lossily, so its re-encoding may be longer.
            let refusal = matches!(f, Frame::Refuse { .. });
            assert!(refusal || again.len() <= max as usize + 5, "a frame over the limit of {max} was read");
            assert_eq!(Frame::read_from(&mut again.as_slice()).expect("re-reads"), f);
        }
    });
}

#[test]
fn hello_and_metadata_json_from_any_bytes_parse_or_fail_cleanly() {
    const KEYS: [&str; 11] = [
        "broker_set",
        "broker_id",
        "log_end",
        "tail",
        "offsets",
        "topics",
        "groups",
        "name",
        "queues",
        "message_type",
        "group",
    ];
    cases!(20_000, |rng| {
        let doc = if rng.bool() {
            json(rng, &KEYS, 4).into_bytes()
        } else {
            let valid = br#"{"broker_set":"a","broker_id":1,"log_end":0,"tail":[0,1],"offsets":[]}"#;
            let mut doc = valid.to_vec();
            mutate(rng, &mut doc, &[br#"{"topics":[],"groups":[],"offsets":[]}"#]);
            doc
        };
        let _ = serde_json::from_slice::<Hello>(&doc);
        let _ = serde_json::from_slice::<MetadataCopy>(&doc);
    });
}

// ---------------------------------------------------------------------------------------------------------
// DATA frames applied by a slave

const SEGMENT_BYTES: u64 = 256 << 10;

fn open_store(dir: &std::path::Path) -> Arc<Store> {
    let mut options = StoreOptions::new(dir);
    // Small files, and short intervals so that a close does not wait long for a sleeping thread.
    options.config.segment_bytes = SEGMENT_BYTES;
    options.config.record_bytes_max = 16 << 10;
    options.config.flush_interval_ms = 5;
    options.config.checkpoint_interval_ms = 20;
    options.config.warm_ahead_bytes = 0;
    options.config.queue_file_entries = 1024;
    options.config.index_slots = 64;
    options.config.index_entries_max = 1024;
    Arc::new(Store::open(options).expect("store"))
}

/// Log and queue offsets stay below 2^62 here: the store adds to the log offset an empty slave
/// adopts from its first DATA frame, and to the queue offset a replicated record carries, without a
/// check, so values near `u64::MAX` from a master overflow (the writer thread panics where overflow
/// is checked).
const OFFSET_MAX: u64 = 1 << 62;

/// What a master would send from `pos`: whole records, and a filler where a record no longer fits
/// in the segment.
fn payload(rng: &mut Rng, mut pos: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..1 + rng.size(6) {
        let topic =
            if rng.one_in(30) { *rng.pick(&["../x", "", "a\0b"]) } else { *rng.pick(&["t", "u", "%RETRY%g_t"]) };
        let n = rng.size(3000);
        let body = rng.bytes(n);
        let len = record::encoded_len(topic, b"", &body) as u64;
        let segment_end = (pos / SEGMENT_BYTES + 1).saturating_mul(SEGMENT_BYTES);
        if pos.saturating_add(len + FILLER_BYTES_MIN as u64) > segment_end {
            record::encode_filler_head((segment_end - pos) as u32, &mut out);
            pos = segment_end;
        }
        let meta = RecordMeta {
            sys_flag: if rng.one_in(8) { rng.edge_u64() as u32 } else { 0 },
            flag: 0,
            queue_id: if rng.one_in(8) { rng.edge_u64() as u32 } else { rng.below(4) as u32 },
            queue_offset: if rng.one_in(8) { rng.edge_u64() % OFFSET_MAX } else { rng.below(1000) },
            physical_offset: pos,
            born_timestamp_ms: rng.edge_i64(),
            store_timestamp_ms: rng.edge_i64(),
            born_host: SocketAddr::from(([10, 0, 0, 2], 4000)),
            store_host: SocketAddr::from(([10, 0, 0, 1], 10911)),
            reconsume_times: 0,
            prepared_tx_offset: 0,
        };
        record::encode(&meta, topic, b"", &body, &mut out).expect("encodes");
        pos = pos.saturating_add(len);
    }
    out
}

/// Recomputes the checksum of the record at the start of `buf` over what its length claims, so
/// that forged structure gets past it.
fn fix_crc(buf: &mut [u8]) {
    if buf.len() < 12 {
        return;
    }
    let total = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let end = total.clamp(12, buf.len());
    let crc = crc32c::crc32c(&buf[12..end]);
    buf[8..12].copy_from_slice(&crc.to_be_bytes());
}

/// Every entry from `from` to the log's end decodes, verified, at its own offset.
fn assert_whole_entries(store: &Store, from: u64) {
    let end = store.log_end();
    let mut pos = from.max(store.stats().min_offset);
    while pos < end {
        let (chunk, next) = store.read_raw_chunk(pos, 1 << 20).expect("kept bytes are readable");
        let mut at = 0;
        while at < chunk.len() {
            match record::decode(&chunk[at..], pos + at as u64, Verify::Full) {
                Ok(Entry::Record { total_bytes, .. }) => at += total_bytes,
                Ok(Entry::Filler { .. }) => at = chunk.len(),
                Err(err) => panic!("the slave kept a bad entry at {}: {err}", pos + at as u64),
            }
        }
        assert!(next > pos, "no progress at {pos}");
        pos = next;
    }
}

#[test]
fn data_frames_of_any_bytes_are_kept_as_whole_entries_or_refused() {
    // In memory where there is a /dev/shm: the slave's store syncs and removes many small files.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("tempdir");
    let mut stores = 0;
    let mut store = open_store(&dir.path().join("0"));
    cases!(4000, |rng| {
        // A fresh slave now and then: an empty log adopts the offset of the first DATA frame.
        if rng.one_in(100) {
            store.close();
            stores += 1;
            store = open_store(&dir.path().join(stores.to_string()));
        }
        let before = store.log_end();
        let offset = match rng.below(10) {
            0 if before > 0 => before + rng.below(3) - 1,
            1 if before == 0 => rng.below(4) * SEGMENT_BYTES,
            2 if before == 0 => rng.edge_u64() % OFFSET_MAX / SEGMENT_BYTES * SEGMENT_BYTES,
            _ => before,
        };
        let mut bytes = payload(rng, offset);
        if rng.bool() {
            let donor = payload(rng, 0);
            mutate(rng, &mut bytes, &[&donor]);
            if rng.bool() {
                fix_crc(&mut bytes);
            }
        }
        // As the slave applies a DATA frame: its own topic check first, then the store.
        if let Err(err) = crate::slave::check_topics(&bytes) {
            assert!(matches!(err, ferrymq_store::StoreError::InvalidTopic { .. }), "{err}");
            return;
        }
        let result = store.append_raw_wait(offset, bytes.clone());
        if let Ok(end) = result {
            assert!(end >= offset && end == store.log_end(), "end {end} after {offset}");
        }
        assert!(store.log_end() >= before, "the log went back");
        assert_whole_entries(&store, before);
        // The store still takes what a master sends next.
        let at = store.log_end();
        let next = std::iter::repeat_with(|| payload(rng, at))
            .find(|next| crate::slave::check_topics(next).is_ok())
            .expect("valid topics come soon");
        let taken = store.append_raw_wait(at, next);
        assert!(taken.is_ok(), "after {result:?}, a valid DATA frame was refused: {taken:?}");
    });
    store.close();
}
