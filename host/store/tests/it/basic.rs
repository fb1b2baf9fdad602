//! Appends and reads on real files: queues, index, segment roll-over, both flush modes.

use std::sync::Arc;
use std::sync::mpsc::channel;

use ferrymq_proto::tag::tag_hash;
use ferrymq_store::clock::SystemClock;
use ferrymq_store::io::FsStorage;
use ferrymq_store::{FlushMode, Store, StoreError};

use crate::support::{message, options, queue_bodies, small_config, wait_dispatched};

fn open(dir: &std::path::Path, flush: FlushMode) -> Store {
    Store::open(options(dir, small_config(flush), Arc::new(FsStorage), Arc::new(SystemClock))).expect("open")
}

#[test]
fn appended_messages_are_read_back_in_queue_order_across_segments() {
    for flush in [FlushMode::Async, FlushMode::Sync] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), flush);
        let mut expected = [Vec::new(), Vec::new()];
        for i in 0..300u32 {
            let body = format!("message {i} ").repeat(1 + (i as usize % 50)).into_bytes();
            let appended =
                store.append_wait(message("orders", i % 2, &body, "TagA", "", &format!("id-{i}"))).expect("append");
            assert_eq!(appended.queue_offset, u64::from(i / 2));
            expected[(i % 2) as usize].push(body);
        }
        wait_dispatched(&store);
        assert!(store.stats().segments >= 3, "test should cross segments: {:?}", store.stats());
        assert_eq!(queue_bodies(&store, "orders", 0), expected[0], "{flush:?}");
        assert_eq!(queue_bodies(&store, "orders", 1), expected[1], "{flush:?}");
        let entry = store.read_queue("orders", 1, 0, 1)[0];
        assert_eq!(entry.tag_hash, tag_hash("TagA"));
    }
}

#[test]
fn keys_and_message_ids_are_found_and_collisions_are_filtered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), FlushMode::Async);
    // 400 keyed messages into 101 slots and 256-entry files: chains collide and files roll over.
    for i in 0..400 {
        let keys = format!("order-{i} customer-{}", i % 7);
        store.append_wait(message("shop", 0, b"x", "", &keys, &format!("ID{i:04}"))).expect("append");
    }
    wait_dispatched(&store);
    let found = store.lookup_key("shop", "order-123", 10);
    assert_eq!(found.len(), 1);
    let rec = found[0].decode().expect("intact");
    assert_eq!(ferrymq_proto::properties::get(rec.properties, "UNIQ_KEY"), Some("ID0123"));
    assert_eq!(store.lookup_key("shop", "customer-3", 1000).len(), 57);
    assert!(store.lookup_key("other-topic", "order-123", 10).is_empty());
    assert!(store.lookup_key("shop", "order-9999", 10).is_empty());
    let by_id = store.lookup_message_id("ID0399", 10);
    assert_eq!(by_id.len(), 1);
    assert_eq!(by_id[0].decode().expect("intact").meta.queue_offset, 399);
}

#[test]
fn concurrent_appenders_get_distinct_contiguous_queue_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(dir.path(), FlushMode::Sync));
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        store
                            .append_wait(message("t", 0, format!("{t}-{i}").as_bytes(), "", "", ""))
                            .expect("append")
                            .queue_offset
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut offsets: Vec<u64> = threads.into_iter().flat_map(|t| t.join().expect("thread")).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (0..800).collect::<Vec<u64>>());
    let stats = store.stats();
    assert_eq!(stats.flushed, stats.written, "sync flush acknowledged only flushed data");
}

#[test]
fn invalid_input_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), FlushMode::Async);
    for topic in ["", "a/b", "..", &"t".repeat(128)] {
        let err = store.append_wait(message(topic, 0, b"x", "", "", "")).expect_err("bad topic");
        assert!(matches!(err, StoreError::InvalidTopic { .. }), "{topic:?}: {err}");
    }
    let err = store.append_wait(message("t", 0, &vec![0; 20_000], "", "", "")).expect_err("too large");
    assert!(matches!(err, StoreError::RecordTooLarge { max: 16384, .. }), "{err}");
    // The store is unharmed.
    store.append_wait(message("t", 0, b"ok", "", "", "")).expect("append after refusals");
}

#[test]
fn callbacks_report_every_append_and_closing_fails_later_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), FlushMode::Sync);
    let (tx, rx) = channel();
    for i in 0..100 {
        let tx = tx.clone();
        store.append(
            message("t", 0, &[i as u8; 100], "", "", ""),
            Box::new(move |r| tx.send(r.map(|a| a.queue_offset)).expect("send")),
        );
    }
    let mut got: Vec<u64> = (0..100).map(|_| rx.recv().expect("callback ran").expect("appended")).collect();
    got.sort_unstable();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    store.close();
    assert!(matches!(store.append_wait(message("t", 0, b"late", "", "", "")), Err(StoreError::Closed)));
}

#[test]
fn async_flush_starts_early_once_enough_is_unflushed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = small_config(FlushMode::Async);
    config.flush_interval_ms = 3_600_000;
    config.flush_dirty_bytes_max = 32 * 1024;
    let store = Store::open(options(dir.path(), config, Arc::new(FsStorage), Arc::new(SystemClock))).expect("open");
    store.append_wait(message("t", 0, &[1; 1000], "", "", "")).expect("append");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(store.stats().flushed, 0, "a small amount waits for the interval");
    for _ in 0..40 {
        store.append_wait(message("t", 0, &[1; 1000], "", "", "")).expect("append");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.stats().flushed < 32 * 1024 {
        assert!(std::time::Instant::now() < deadline, "no early flush: {:?}", store.stats());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
