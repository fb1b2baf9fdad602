//! The broker's own records kept in system topics (queue 0): appended like messages, so they are as
//! durable as the store's flush mode makes any message, and replication will carry them.

use std::net::SocketAddr;

use ferrymq_proto::throttle::Throttle;
use ferrymq_store::{Appended, NewMessage, Store, StoreError, StoredRecord};

/// The plugin registry: components (in chunks), versions, bindings and activations.
pub const PLUGINS_TOPIC: &str = "rmq_sys_ferrymq_plugins";
/// The admin audit log, one hash-chained entry per record.
pub const AUDIT_TOPIC: &str = "rmq_sys_ferrymq_audit";

/// Appends one record to `topic` and waits until it is stored.
pub fn append(store: &Store, topic: &str, now_ms: i64, body: Vec<u8>) -> Result<Appended, StoreError> {
    store.append_wait(record(topic, now_ms, body))
}

/// A record of `topic`, ready to append.
pub fn record(topic: &str, now_ms: i64, body: Vec<u8>) -> NewMessage {
    NewMessage {
        topic: topic.to_owned(),
        queue_id: 0,
        flag: 0,
        sys_flag: 0,
        born_timestamp_ms: now_ms,
        born_host: SocketAddr::from(([127, 0, 0, 1], 0)),
        reconsume_times: 0,
        prepared_tx_offset: 0,
        properties: Vec::new(),
        body,
    }
}

/// Calls `each(queue offset, record)` for the records of `topic` from queue offset `from` on, in
/// order; returns the queue offset after the last one.
pub fn scan(store: &Store, topic: &str, from: u64, each: impl FnMut(u64, &StoredRecord)) -> u64 {
    scan_at_most(store, topic, from, u64::MAX, each)
}

/// [`scan`] of at most `count` records.
pub fn scan_at_most(
    store: &Store,
    topic: &str,
    from: u64,
    count: u64,
    mut each: impl FnMut(u64, &StoredRecord),
) -> u64 {
    let Some((min, max)) = store.queue_bounds(topic, 0) else { return from };
    let mut at = from.max(min);
    let max = max.min(at.saturating_add(count));
    while at < max {
        let entries = store.read_queue(topic, 0, at, usize::try_from(max - at).unwrap_or(256).min(256));
        if entries.is_empty() {
            break;
        }
        for entry in entries.into_iter().take_while(|e| e.queue_offset < max) {
            at = entry.queue_offset + 1;
            match store.record(entry.offset, entry.len) {
                Ok(stored) => each(entry.queue_offset, &stored),
                Err(err) => {
                    static UNREADABLE: Throttle = Throttle::per_second(5);
                    if let Some(suppressed) = UNREADABLE.admit() {
                        tracing::warn!(topic, offset = entry.offset, %err, suppressed, "system record unreadable; skipped");
                    }
                }
            }
        }
    }
    at
}

/// The first queue offset still held for `topic`.
pub fn first(store: &Store, topic: &str) -> u64 {
    store.queue_bounds(topic, 0).map_or(0, |(min, _)| min)
}

/// The queue offset the next record of `topic` gets.
pub fn end(store: &Store, topic: &str) -> u64 {
    store.queue_bounds(topic, 0).map_or(0, |(_, max)| max)
}
