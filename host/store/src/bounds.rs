//! Bounds on the positions that store files and records may name.
//!
//! Log offsets and queue offsets only ever grow by the size or count of what was appended, so a real
//! store stays far below these bounds (2^62 bytes of log, or 2^62 messages in one queue, is
//! thousands of years of appends at any rate this store reaches). A larger value can only come from
//! a damaged or crafted file, or a replication peer that sends one; refusing it keeps every sum the
//! store computes from such a value (a segment's end, the next queue offset, a queue file's last
//! entry) free of overflow.

use ferrymq_proto::record::RecordRef;

/// Highest commit-log offset a segment may start at.
pub const LOG_OFFSET_MAX: u64 = 1 << 62;
/// Highest queue offset a record or a consume-queue file may name.
pub const QUEUE_OFFSET_MAX: u64 = 1 << 62;

/// Why a record read from the log (recovered from disk or replicated from a master) must not be put
/// into a consume queue, if it must not: its topic is not a valid name (a consume queue is a
/// directory named after it) or its queue offset is past [`QUEUE_OFFSET_MAX`].
pub(crate) fn record_problem(record: &RecordRef<'_>) -> Option<String> {
    if let Err(err) = crate::writer::validate_topic(record.topic) {
        return Some(err.to_string());
    }
    let queue_offset = record.meta.queue_offset;
    (queue_offset > QUEUE_OFFSET_MAX)
        .then(|| format!("queue offset {queue_offset} is past the highest a queue may reach ({QUEUE_OFFSET_MAX})"))
}
