//! Files the store never writes itself: crafted records, a segment cut short, damaged derived files
//! and checkpoints, and a store thread that panics. Each opens to a working store or a clear error.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferrymq_proto::record::{self, RecordMeta};
use ferrymq_store::bounds::{LOG_OFFSET_MAX, QUEUE_OFFSET_MAX};
use ferrymq_store::clock::SystemClock;
use ferrymq_store::io::{FsStorage, Space, Storage, StorageFile};
use ferrymq_store::{FlushMode, Store, StoreConfig, StoreError};

use crate::support::{message, options, queue_bodies, small_config, wait_dispatched};

fn open_with(dir: &Path, config: StoreConfig) -> Store {
    Store::open(options(dir, config, Arc::new(FsStorage), Arc::new(SystemClock))).expect("open")
}

fn open(dir: &Path) -> Store {
    open_with(dir, small_config(FlushMode::Sync))
}

fn first_segment(dir: &Path) -> PathBuf {
    dir.join("commitlog").join(format!("{:020}", 0))
}

/// A record with a valid checksum, as a damaged or hostile file could hold it.
fn crafted(topic: &str, queue_offset: u64, at: u64, body: &[u8]) -> Vec<u8> {
    let meta = RecordMeta {
        sys_flag: 0,
        flag: 0,
        queue_id: 0,
        queue_offset,
        physical_offset: at,
        born_timestamp_ms: 1_764_000_000_000,
        store_timestamp_ms: 1_764_000_000_001,
        born_host: "127.0.0.1:5000".parse().expect("addr"),
        store_host: "127.0.0.1:10911".parse().expect("addr"),
        reconsume_times: 0,
        prepared_tx_offset: 0,
    };
    let mut out = Vec::new();
    record::encode(&meta, topic, &[], body, &mut out).expect("encodes");
    out
}

fn write_at(path: &Path, at: u64, bytes: &[u8]) {
    let mut file = std::fs::OpenOptions::new().write(true).open(path).expect("open for writing");
    file.seek(SeekFrom::Start(at)).expect("seek");
    file.write_all(bytes).expect("write");
}

/// Appends `n` messages to queue 0 of `t` (keys `k<i>`, ids `id<i>`) and closes; returns the bodies.
fn filled(dir: &Path, n: usize) -> Vec<Vec<u8>> {
    let store = open(dir);
    let bodies: Vec<Vec<u8>> = (0..n).map(|i| format!("body-{i}-").repeat(1 + i % 30).into_bytes()).collect();
    for (i, body) in bodies.iter().enumerate() {
        store.append_wait(message("t", 0, body, "", &format!("k{i}"), &format!("id{i}"))).expect("append");
    }
    store.close();
    bodies
}

#[test]
fn records_that_name_no_valid_queue_stay_out_of_the_queues_and_a_master_cannot_send_them() {
    let outer = tempfile::tempdir().expect("tempdir");
    let dir = outer.path().join("store");
    let bodies = filled(&dir, 3);
    let end = open(&dir).stats().written;
    // After the last record, as if the previous run had written them: a topic that climbs out of
    // the data directory, then a queue offset at the very end of the range.
    let escape = crafted("../../escape", 0, end, b"x");
    let far = crafted("t", u64::MAX - 1, end + escape.len() as u64, b"y");
    write_at(&first_segment(&dir), end, &[escape.clone(), far.clone()].concat());

    let store = open(&dir);
    wait_dispatched(&store);
    assert_eq!(store.stats().written, end + (escape.len() + far.len()) as u64, "both stay in the log");
    assert!(!outer.path().join("escape").exists() && !dir.join("escape").exists());
    for topic in std::fs::read_dir(dir.join("consumequeue")).expect("queues") {
        assert_eq!(topic.expect("entry").file_name(), "t", "no other queue directory");
    }
    assert_eq!(queue_bodies(&store, "t", 0), bodies);
    let next = store.append_wait(message("t", 0, b"next", "", "", "")).expect("append");
    assert_eq!(next.queue_offset, 3);
    store.close();
    assert_eq!(open(&dir).queue_bounds("t", 0), Some((0, 4)));

    let slave_dir = tempfile::tempdir().expect("tempdir");
    let slave = open(slave_dir.path());
    for bytes in [crafted("../../escape", 0, 0, b"x"), crafted("t", QUEUE_OFFSET_MAX + 1, 0, b"y")] {
        let refused = slave.append_raw_wait(0, bytes);
        assert!(matches!(refused, Err(StoreError::RawMalformed(_))), "{refused:?}");
    }
    let far_start = LOG_OFFSET_MAX + 1;
    let refused = slave.append_raw_wait(far_start, crafted("t", 0, far_start, b"z"));
    assert!(matches!(refused, Err(StoreError::RawMalformed(_))), "{refused:?}");
    assert_eq!(slave.stats().written, 0, "nothing was appended");
    let valid = crafted("t", 0, 0, b"ok");
    assert_eq!(slave.append_raw_wait(0, valid.clone()).expect("a valid record"), valid.len() as u64);
}

#[test]
fn a_segment_cut_short_just_after_its_last_record_rolls_over_and_reopens() {
    for crash in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bodies = filled(dir.path(), 20);
        let end = open(dir.path()).stats().written;
        let segment = first_segment(dir.path());
        std::fs::OpenOptions::new().write(true).open(&segment).expect("open").set_len(end + 3).expect("cut");
        if crash {
            std::fs::remove_file(dir.path().join("checkpoint")).expect("remove the checkpoint");
        }
        let store = open(dir.path());
        assert_eq!(store.stats().written, end);
        for i in 0..40 {
            let body = format!("after-{i}").into_bytes();
            store.append_wait(message("t", 0, &body, "", "", "")).expect("append after the short segment");
            bodies.push(body);
        }
        wait_dispatched(&store);
        assert!(queue_bodies(&store, "t", 0) == bodies, "crash: {crash}: every message, in order");
        assert_eq!(store.read_raw(0, 1 << 20).map(|b| b.len()).ok(), Some(end as usize));
        assert!(
            matches!(store.read_raw(end, 1 << 20), Err(StoreError::Inconsistent(_))),
            "a replica is told it cannot follow this segment"
        );
        store.close();
        let reopened = open(dir.path());
        wait_dispatched(&reopened);
        assert!(queue_bodies(&reopened, "t", 0) == bodies, "crash: {crash}: every message after reopening");
    }
}

#[test]
fn an_empty_last_segment_is_removed_and_the_log_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bodies = filled(dir.path(), 5);
    let end = open(dir.path()).stats().written;
    std::fs::File::create(dir.path().join("commitlog").join(format!("{:020}", 64 * 1024))).expect("empty segment");
    let store = open(dir.path());
    assert_eq!((store.stats().written, queue_bodies(&store, "t", 0)), (end, bodies));
}

/// Every consume-queue file of queue 0 of `t`.
fn queue_files(dir: &Path) -> Vec<PathBuf> {
    let qdir = dir.join("consumequeue").join("t").join("0");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(qdir).expect("queue dir").map(|e| e.expect("entry").path()).collect();
    files.sort();
    files
}

fn index_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir.join("index")).expect("index dir").map(|e| e.expect("entry").path()).collect();
    files.sort();
    files
}

#[test]
fn damaged_queues_index_and_checkpoint_are_rebuilt_from_the_log() {
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 6] = [
        ("a queue file of the wrong size", |dir| {
            std::fs::write(&queue_files(dir)[0], [7u8; 100]).expect("write");
        }),
        ("an empty queue file", |dir| {
            std::fs::write(queue_files(dir).last().expect("a file"), b"").expect("write");
        }),
        ("a queue file with a name the store never gives", |dir| {
            std::fs::copy(&queue_files(dir)[0], queue_files(dir)[0].with_file_name(format!("{:020}", 5)))
                .expect("copy");
        }),
        ("an index file's header zeroed", |dir| write_at(&index_files(dir)[0], 0, &[0u8; 64])),
        ("an empty index file", |dir| {
            std::fs::write(&index_files(dir)[0], b"").expect("write");
        }),
        ("a checkpoint cut short", |dir| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("checkpoint"))
                .expect("open")
                .set_len(100)
                .expect("cut");
        }),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().expect("tempdir");
        let bodies = filled(dir.path(), 150);
        damage(dir.path());
        let store =
            Store::open(options(dir.path(), small_config(FlushMode::Sync), Arc::new(FsStorage), Arc::new(SystemClock)))
                .unwrap_or_else(|err| panic!("{what}: {err}"));
        wait_dispatched(&store);
        assert_eq!(queue_bodies(&store, "t", 0), bodies, "{what}");
        assert_eq!(store.lookup_key("t", "k77", 5).len(), 1, "{what}");
        assert_eq!(store.lookup_message_id("id149", 5).len(), 1, "{what}");
        let next = store.append_wait(message("t", 0, b"next", "", "", "")).expect("append");
        assert_eq!(next.queue_offset, 150, "{what}");
    }
}

#[test]
fn a_changed_queue_file_size_rebuilds_the_queues_in_the_new_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bodies = filled(dir.path(), 150);
    let config = StoreConfig { queue_file_entries: 100, ..small_config(FlushMode::Sync) };
    let store = open_with(dir.path(), config);
    wait_dispatched(&store);
    assert_eq!(queue_bodies(&store, "t", 0), bodies);
    assert_eq!(queue_files(dir.path()).len(), 2, "150 entries in files of 100");
}

/// Real files whose `sync` panics once armed: a bug in a store thread, made to happen.
#[derive(Debug)]
struct PanickingSync {
    armed: Arc<AtomicBool>,
}

#[derive(Debug)]
struct PanickingFile {
    inner: Arc<dyn StorageFile>,
    armed: Arc<AtomicBool>,
}

impl StorageFile for PanickingFile {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write(offset, data)
    }
    fn zero(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.inner.zero(offset, len)
    }
    fn sync(&self) -> std::io::Result<()> {
        assert!(!self.armed.load(Ordering::Acquire), "a bug in a store thread");
        self.inner.sync()
    }
    unsafe fn bytes(&self, offset: u64, len: usize) -> &[u8] {
        // SAFETY: forwarded to the caller.
        unsafe { self.inner.bytes(offset, len) }
    }
}

impl PanickingSync {
    fn wrap(&self, file: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        Arc::new(PanickingFile { inner: file, armed: self.armed.clone() })
    }
}

impl Storage for PanickingSync {
    fn create(&self, path: &Path, len: u64) -> std::io::Result<Arc<dyn StorageFile>> {
        FsStorage.create(path, len).map(|f| self.wrap(f))
    }
    fn open(&self, path: &Path) -> std::io::Result<Arc<dyn StorageFile>> {
        FsStorage.open(path).map(|f| self.wrap(f))
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        FsStorage.list(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        FsStorage.create_dir_all(dir)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        FsStorage.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        FsStorage.sync_dir(dir)
    }
    fn space(&self, dir: &Path) -> std::io::Result<Space> {
        FsStorage.space(dir)
    }
    fn modified_ms(&self, path: &Path) -> std::io::Result<i64> {
        FsStorage.modified_ms(path)
    }
}

#[test]
fn a_panicking_store_thread_stops_the_store_and_close_still_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let armed = Arc::new(AtomicBool::new(false));
    let storage = Arc::new(PanickingSync { armed: armed.clone() });
    let store =
        Store::open(options(dir.path(), small_config(FlushMode::Sync), storage, Arc::new(SystemClock))).expect("open");
    store.append_wait(message("t", 0, b"before", "", "", "")).expect("append");
    armed.store(true, Ordering::Release);
    let failed = store.append_wait(message("t", 0, b"during", "", "", ""));
    assert!(matches!(&failed, Err(StoreError::Fatal(cause)) if cause.to_string().contains("panicked")), "{failed:?}");
    assert!(!store.accepts_appends());
    assert!(store.stats().fatal.is_some_and(|reason| reason.contains("a bug in a store thread")));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        store.close();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(20)).expect("close returns");
    armed.store(false, Ordering::Release);
    assert_eq!(queue_bodies(&open(dir.path()), "t", 0)[0], b"before");
}
