//! Shared fixtures: messages, small-file configs, and stores on real or fault-injecting storage.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ferrymq_proto::properties::{self, KEYS, TAGS, UNIQ_KEY};
use ferrymq_store::clock::{Clock, ManualClock};
use ferrymq_store::io::{FaultPlan, FaultStorage, Storage};
use ferrymq_store::{FlushMode, NewMessage, Store, StoreConfig, StoreError, StoreOptions};

/// Small files so that tests cross segment and queue-file boundaries quickly.
pub fn small_config(flush: FlushMode) -> StoreConfig {
    StoreConfig {
        segment_bytes: 64 * 1024,
        record_bytes_max: 16 * 1024,
        flush,
        flush_interval_ms: 5,
        queue_file_entries: 64,
        index_slots: 101,
        index_entries_max: 256,
        checkpoint_interval_ms: 20,
        retention_check_interval_ms: 60_000,
        ..StoreConfig::default()
    }
}

pub fn message(topic: &str, queue_id: u32, body: &[u8], tag: &str, keys: &str, id: &str) -> NewMessage {
    let mut props = Vec::new();
    let mut list = vec![(TAGS, tag), (UNIQ_KEY, id)];
    if !keys.is_empty() {
        list.push((KEYS, keys));
    }
    properties::encode(list, &mut props).expect("valid test properties");
    NewMessage {
        topic: topic.to_owned(),
        queue_id,
        flag: 0,
        sys_flag: 0,
        born_timestamp_ms: 1_764_000_000_000,
        born_host: "127.0.0.1:5000".parse().expect("addr"),
        reconsume_times: 0,
        prepared_tx_offset: 0,
        properties: props,
        body: body.to_vec(),
    }
}

pub fn options(dir: &Path, config: StoreConfig, storage: Arc<dyn Storage>, clock: Arc<dyn Clock>) -> StoreOptions {
    StoreOptions { config, storage, clock, ..StoreOptions::new(dir) }
}

pub fn fault_storage(plan: FaultPlan) -> FaultStorage {
    FaultStorage::new(plan, Arc::new(ManualClock::new(1_764_000_000_000)))
}

pub fn open_fault(storage: &FaultStorage, config: StoreConfig) -> Store {
    Store::open(options(
        Path::new("/data"),
        config,
        Arc::new(storage.clone()),
        Arc::new(ManualClock::new(1_764_000_000_000)),
    ))
    .expect("store opens")
}

/// Bodies of every message in a queue, in queue order.
pub fn queue_bodies(store: &Store, topic: &str, queue_id: u32) -> Vec<Vec<u8>> {
    let (min, max) = store.queue_bounds(topic, queue_id).unwrap_or((0, 0));
    store
        .read_queue(topic, queue_id, min, (max - min) as usize)
        .iter()
        .map(|e| {
            let stored = store.record(e.offset, e.len).expect("queue entry points at a readable record");
            stored.decode().expect("record is intact").body.to_vec()
        })
        .collect()
}

pub fn wait_dispatched(store: &Store) {
    let written = store.stats().written;
    assert!(store.wait_dispatched(written, Duration::from_secs(10)), "dispatch did not catch up: {:?}", store.stats());
}

/// Appends `body_bytes`-byte messages to queue 0 of `topic` until one is refused; returns the
/// acknowledged bodies and the refusal.
pub fn fill_until_refused(store: &Store, topic: &str, body_bytes: usize) -> (Vec<Vec<u8>>, StoreError) {
    let mut acked = Vec::new();
    for i in 0..1_000_000u32 {
        let body = format!("{i:08}").repeat(body_bytes / 8).into_bytes();
        match store.append_wait(message(topic, 0, &body, "", "", "")) {
            Ok(_) => acked.push(body),
            Err(err) => return (acked, err),
        }
    }
    panic!("a million appends and no refusal");
}

/// A small ext4 file system on a loop device, unmounted on drop (needs root and e2fsprogs).
pub struct SmallFs {
    image: PathBuf,
    mount: tempfile::TempDir,
}

impl SmallFs {
    pub fn new(megabytes: u32) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let image = std::env::temp_dir().join(format!("ferrymq-small-{}-{n}.ext4", std::process::id()));
        let mount = tempfile::tempdir().expect("mount point");
        let run = |cmd: &mut Command| {
            let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
            assert!(
                out.status.success(),
                "{cmd:?} failed (this test needs root and e2fsprogs): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(Command::new("truncate").arg("-s").arg(format!("{megabytes}M")).arg(&image));
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(&image));
        run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(mount.path()));
        Self { image, mount }
    }

    pub fn path(&self) -> &Path {
        self.mount.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mount.path()).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Waits until everything written is durable (async flush lags by its interval).
pub fn wait_flushed(store: &Store) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.stats().flushed < store.stats().written {
        assert!(std::time::Instant::now() < deadline, "flush did not catch up: {:?}", store.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
}
