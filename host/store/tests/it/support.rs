//! Shared fixtures: messages, small-file configs, and stores on real or fault-injecting storage.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferrymq_proto::properties::{self, KEYS, TAGS, UNIQ_KEY};
use ferrymq_store::clock::{Clock, ManualClock};
use ferrymq_store::io::{FaultPlan, FaultStorage, Storage};
use ferrymq_store::{FlushMode, NewMessage, Store, StoreConfig, StoreOptions};

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
