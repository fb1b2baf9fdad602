//! Store benchmarks: append and read throughput of 1 KiB records, beside the disk's own limits
//! measured in the same run.
//!
//! * `disk_baseline/*` — what the file system gives without a broker: sequential 1 MiB writes with one
//!   final `fdatasync`, and 4 KiB writes each followed by `fdatasync`.
//! * `append_1kib/<flush>/<writers>` — writers each appending and waiting for the acknowledgement
//!   (one message in flight per writer), so sync flush shows how well concurrent writers share flushes;
//!   `pipelined` is one submitter that never waits, the writer's own capacity.
//! * `queue_read_1kib` — a consumer's path: 32 consume-queue entries, then each record decoded with its
//!   checksum verified.
//!
//! Throughput is in messages (or 1 KiB writes) per second; `docs/benchmarks.md` turns the figures into
//! ratios against the baseline.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferrymq_proto::properties::{self, TAGS, UNIQ_KEY};
use ferrymq_store::{FlushMode, NewMessage, Store, StoreConfig, StoreOptions};

const BODY_BYTES: usize = 1024;

fn message(i: u64) -> NewMessage {
    let mut props = Vec::new();
    let id = format!("ID{i:016}");
    properties::encode([(TAGS, "bench"), (UNIQ_KEY, id.as_str())], &mut props).unwrap_or_default();
    NewMessage {
        topic: "bench".into(),
        queue_id: (i % 8) as u32,
        flag: 0,
        sys_flag: 0,
        born_timestamp_ms: 0,
        born_host: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
        reconsume_times: 0,
        prepared_tx_offset: 0,
        properties: props,
        body: vec![b'x'; BODY_BYTES],
    }
}

fn open(dir: &std::path::Path, flush: FlushMode) -> Store {
    let config = StoreConfig { flush, segment_bytes: 256 << 20, ..StoreConfig::default() };
    Store::open(StoreOptions { config, ..StoreOptions::new(dir) }).unwrap_or_else(|e| panic!("open store: {e}"))
}

fn disk_baseline(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut group = c.benchmark_group("disk_baseline");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));

    // 1 KiB units so the figure compares directly with messages per second.
    group.throughput(Throughput::Elements(1024));
    group.bench_function("seq_write_1mib_then_fdatasync", |b| {
        let path = dir.path().join("seq");
        let chunk = vec![7u8; 1 << 20];
        b.iter_custom(|iters| {
            let mut file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("{e}"));
            let start = Instant::now();
            for _ in 0..iters {
                file.write_all(&chunk).unwrap_or_else(|e| panic!("{e}"));
            }
            file.sync_data().unwrap_or_else(|e| panic!("{e}"));
            start.elapsed()
        });
    });

    group.throughput(Throughput::Elements(4));
    group.bench_function("write_4kib_fdatasync_each", |b| {
        let path = dir.path().join("sync");
        let file =
            OpenOptions::new().create(true).write(true).truncate(true).open(&path).unwrap_or_else(|e| panic!("{e}"));
        let block = vec![9u8; 4096];
        let mut at = 0u64;
        b.iter(|| {
            file.write_all_at(&block, at).unwrap_or_else(|e| panic!("{e}"));
            file.sync_data().unwrap_or_else(|e| panic!("{e}"));
            at += 4096;
        });
    });
    group.finish();
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_1kib");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    for flush in [FlushMode::Async, FlushMode::Sync] {
        for writers in [1usize, 16, 64] {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
            let store = Arc::new(open(dir.path(), flush));
            let name = format!("{flush:?}").to_lowercase();
            group.bench_with_input(BenchmarkId::new(name, writers), &writers, |b, &writers| {
                b.iter_custom(|iters| {
                    let per_writer = iters.div_ceil(writers as u64);
                    let barrier = Arc::new(Barrier::new(writers + 1));
                    let threads: Vec<_> = (0..writers)
                        .map(|w| {
                            let (store, barrier) = (store.clone(), barrier.clone());
                            std::thread::spawn(move || {
                                let msgs: Vec<_> =
                                    (0..per_writer).map(|i| message(w as u64 * per_writer + i)).collect();
                                barrier.wait();
                                for msg in msgs {
                                    store.append_wait(msg).unwrap_or_else(|e| panic!("append: {e}"));
                                }
                            })
                        })
                        .collect();
                    barrier.wait();
                    let start = Instant::now();
                    for t in threads {
                        t.join().unwrap_or_else(|_| panic!("writer panicked"));
                    }
                    // Normalise to exactly `iters` messages.
                    start.elapsed().mul_f64(iters as f64 / (per_writer * writers as u64) as f64)
                });
            });
            store.close();
        }
        // One submitter that never waits: the writer's own capacity.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let store = open(dir.path(), flush);
        let name = format!("{flush:?}").to_lowercase();
        group.bench_function(BenchmarkId::new(name, "pipelined"), |b| {
            b.iter_custom(|iters| {
                let msgs: Vec<_> = (0..iters).map(message).collect();
                let (tx, rx) = std::sync::mpsc::channel();
                let start = Instant::now();
                for msg in msgs {
                    let tx = tx.clone();
                    store.append(
                        msg,
                        Box::new(move |r| {
                            assert!(r.is_ok(), "append: {r:?}");
                            let _ = tx.send(());
                        }),
                    );
                }
                for _ in 0..iters {
                    rx.recv().unwrap_or_else(|e| panic!("{e}"));
                }
                start.elapsed()
            });
        });
        store.close();
    }
    group.finish();
}

fn queue_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store = open(dir.path(), FlushMode::Async);
    let count = 200_000u64;
    for i in 0..count {
        store.append(message(i), Box::new(|r| assert!(r.is_ok(), "append: {r:?}")));
    }
    let written = loop {
        let stats = store.stats();
        if stats.written > 0
            && store.wait_dispatched(stats.written, Duration::from_secs(60))
            && store.queues().iter().map(|q| q.max).sum::<u64>() == count
        {
            break stats.written;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(written > 0);
    let mut group = c.benchmark_group("queue_read_1kib");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(32));
    let mut next = [0u64; 8];
    let mut queue = 0usize;
    group.bench_function("batch_32", |b| {
        b.iter(|| {
            let q = queue % 8;
            queue += 1;
            let entries = store.read_queue("bench", q as u32, next[q], 32);
            let mut bytes = 0usize;
            for e in &entries {
                let rec = store.record(e.offset, e.len).unwrap_or_else(|err| panic!("{err}"));
                bytes += rec.decode().unwrap_or_else(|err| panic!("{err}")).body.len();
            }
            next[q] = if entries.len() == 32 { next[q] + 32 } else { 0 };
            bytes
        });
    });
    group.finish();
}

criterion_group!(benches, disk_baseline, append, queue_read);
criterion_main!(benches);
