//! The broker's send path (`Broker::send` of 1 KiB messages to a 4-queue topic over a real store,
//! async flush, one submitter that never waits — as the store's `append_1kib/async/pipelined`), with
//! de-duplication off and on.
//!
//! * `send_1kib/dedup_off` — no window.
//! * `send_1kib/dedup_on` — every id new, memory vouches for it (a window has passed since start).
//! * `send_1kib/dedup_on_store_lookup` — every id new, within the first window after a start (or
//!   after evictions by count): each send also reads the store's message-id index.
//! * `send_1kib/duplicate` — every send repeats a stored id and is answered from memory.
//! * `window/fresh/<ids>`, `window/duplicate/<ids>` — the window alone, what de-duplication adds
//!   to a send without the store threads' noise: a new id admitted and settled as stored (with
//!   `<ids>` remembered, so each also evicts one), and a remembered id admitted as a duplicate.
//!
//! Throughput is in messages per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferrymq_broker::dedup::DedupConfig;
use ferrymq_broker::metadata::{TopicConfig, TopicType};
use ferrymq_broker::send::Outgoing;
use ferrymq_broker::{Broker, BrokerConfig};
use ferrymq_dedup::{Admission, Key, Original, Settlement, Window};
use ferrymq_store::clock::ManualClock;
use ferrymq_store::{Store, StoreConfig, StoreOptions};

const BODY_BYTES: usize = 1024;
const START_MS: i64 = 1_764_000_000_000;

struct Bench {
    broker: Broker,
    next_id: AtomicU64,
    _dir: tempfile::TempDir,
}

fn open(dedup: DedupConfig, warm: bool) -> Bench {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let clock = Arc::new(ManualClock::new(START_MS));
    let mut options = StoreOptions::new(dir.path().join("store"));
    options.config = StoreConfig { segment_bytes: 256 << 20, ..StoreConfig::default() };
    options.clock = clock.clone();
    let store = Arc::new(Store::open(options).unwrap_or_else(|e| panic!("open store: {e}")));
    let window_ms = dedup.window_ms_i64();
    let config = BrokerConfig { dedup, ..BrokerConfig::default() };
    let broker = Broker::open(store, dir.path(), config, clock.clone()).unwrap_or_else(|e| panic!("broker: {e}"));
    broker
        .metadata()
        .create_topic(TopicConfig { name: "bench".into(), message_type: TopicType::Normal, queues: 4 })
        .unwrap_or_else(|e| panic!("topic: {e}"));
    if warm {
        clock.advance_ms(window_ms);
    }
    Bench { broker, next_id: AtomicU64::new(0), _dir: dir }
}

fn message(id: u64) -> Outgoing {
    Outgoing {
        topic: "bench".into(),
        message_id: format!("01BENCH{id:027}"),
        body: vec![b'x'; BODY_BYTES],
        born_timestamp_ms: START_MS,
        ..Outgoing::default()
    }
}

/// Sends `messages` without waiting between them, then waits for every answer.
fn send_all(broker: &Broker, messages: Vec<Outgoing>) -> Duration {
    let count = messages.len();
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    for message in &messages {
        let tx = tx.clone();
        broker.send(
            message,
            Box::new(move |r| {
                assert!(r.is_ok(), "send: {r:?}");
                let _ = tx.send(());
            }),
        );
    }
    for _ in 0..count {
        rx.recv().unwrap_or_else(|e| panic!("{e}"));
    }
    start.elapsed()
}

fn send(c: &mut Criterion) {
    let mut group = c.benchmark_group("send_1kib");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    let cases = [
        ("dedup_off", DedupConfig { enabled: false, ..DedupConfig::default() }, true),
        ("dedup_on", DedupConfig::default(), true),
        ("dedup_on_store_lookup", DedupConfig::default(), false),
    ];
    for (name, dedup, warm) in cases {
        let bench = open(dedup, warm);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let first = bench.next_id.fetch_add(iters, Ordering::Relaxed);
                send_all(&bench.broker, (first..first + iters).map(message).collect())
            });
        });
        bench.broker.close();
        bench.broker.store().close();
    }
    let bench = open(DedupConfig::default(), true);
    let stored = 4096;
    send_all(&bench.broker, (0..stored).map(message).collect());
    group.bench_function(BenchmarkId::from_parameter("duplicate"), |b| {
        b.iter_custom(|iters| {
            let first = bench.next_id.fetch_add(iters, Ordering::Relaxed);
            send_all(&bench.broker, (first..first + iters).map(|i| message(i % stored)).collect())
        });
    });
    bench.broker.close();
    bench.broker.store().close();
    group.finish();
}

fn window(c: &mut Criterion) {
    let mut group = c.benchmark_group("window");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    // The default million ids (the table far larger than the CPU caches), and ten thousand.
    for remembered in [1_000_000usize, 10_000] {
        let config = DedupConfig { window_messages: remembered, ..DedupConfig::default() };
        let window: Window<()> = Window::new(&config, START_MS - config.window_ms_i64());
        let original =
            Original { queue_id: 1, transaction: false, queue_offset: 7, log_offset: 1 << 30, log_end: 1 << 31 };
        let ids: Vec<String> = (0..remembered as u64 * 2).map(|i| format!("01BENCH{i:027}")).collect();
        let key = |i: usize| Key { topic: "bench", message_id: &ids[i % ids.len()], transactional: false };
        // Time moves so that a window spans more ids than memory keeps (every new id evicts one),
        // and an id comes round again only after its window.
        let ids_per_ms = (remembered as u64).div_ceil(config.window_ms) as usize + 1;
        let now = |n: usize| START_MS + (n / ids_per_ms) as i64;
        let mut next = 0usize;
        group.bench_function(BenchmarkId::new("fresh", remembered), |b| {
            b.iter(|| {
                let digest = window.digest(key(next));
                let at_ms = now(next);
                next += 1;
                match window.admit(digest, at_ms, ()) {
                    Admission::Fresh { .. } => window.settle(digest, Settlement::Stored { original, at_ms }),
                    _ => panic!("id {next} is not new"),
                }
            });
        });
        // The window holds `remembered` ids however few iterations the run above made (one, when
        // benchmarks run once as tests).
        while next < remembered {
            let digest = window.digest(key(next));
            let at_ms = now(next);
            next += 1;
            if let Admission::Fresh { .. } = window.admit(digest, at_ms, ()) {
                window.settle(digest, Settlement::Stored { original, at_ms });
            }
        }
        // Any of the last `remembered` ids.
        let mut back = 0usize;
        group.bench_function(BenchmarkId::new("duplicate", remembered), |b| {
            b.iter(|| {
                back = (back + 7919) % remembered;
                let digest = window.digest(key(next + ids.len() - 1 - back));
                assert!(matches!(window.admit(digest, now(next), ()), Admission::Duplicate { .. }));
            });
        });
    }
    group.finish();
}

criterion_group!(benches, send, window);
criterion_main!(benches);
