//! Finding a queue position by time: the first message stored at or after a moment.

use ferrymq_store::Store;

/// The first queue offset of `topic`/`queue_id` whose message was stored at or after `at_ms`; the
/// queue's end when there is none. Binary search: store times grow along a queue.
pub fn offset_at_time(store: &Store, topic: &str, queue_id: u32, at_ms: i64) -> u64 {
    let Some((min, max)) = store.queue_bounds(topic, queue_id) else { return 0 };
    let stored_at = |offset: u64| {
        store
            .read_queue(topic, queue_id, offset, 1)
            .first()
            .and_then(|e| store.record(e.offset, e.len).ok())
            .and_then(|r| r.decode().ok().map(|rec| rec.meta.store_timestamp_ms))
    };
    let (mut lo, mut hi) = (min, max);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match stored_at(mid) {
            // Unreadable entries (deleted by retention meanwhile) count as old.
            Some(ms) if ms >= at_ms => hi = mid,
            _ => lo = mid + 1,
        }
    }
    lo
}
