//! Store settings: every limit and interval, with the defaults a single node runs on.

use serde::{Deserialize, Serialize};

use ferrymq_proto::record::{FILLER_BYTES_MIN, HEADER_BYTES};

/// When an append is acknowledged relative to `fdatasync`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushMode {
    /// Acknowledge once the record is in the page cache; flush every `flush_interval_ms` or once
    /// `flush_dirty_bytes_max` are unflushed. A machine crash (power, kernel) can lose the acknowledged
    /// records of about one interval; a crash of the process alone loses nothing.
    #[default]
    Async,
    /// Acknowledge only after the record's batch is flushed; concurrent appends share one flush.
    Sync,
}

/// What retention does when the store's own files reach their budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskPressure {
    /// Delete nothing for space (only `retention_hours` deletes) and refuse appends until usage
    /// drops below the budget: an acknowledged message is never lost for lack of disk.
    #[default]
    Refuse,
    /// Delete the oldest segments, read or not, until usage is within the budget; each deletion is
    /// logged and counted, with what every consumer group lost. Protected topics stop it.
    DeleteOldest,
}

/// Settings of the store. Sizes are in bytes, durations in milliseconds, unit last in every name.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Size of each commit-log segment file.
    pub segment_bytes: u64,
    /// Largest encoded record (header, topic, properties and body) the log accepts.
    pub record_bytes_max: u32,
    pub flush: FlushMode,
    /// Async flush: how often written data is flushed.
    pub flush_interval_ms: u64,
    /// Async flush: flush early once this much written data is unflushed.
    pub flush_dirty_bytes_max: u64,
    /// Appends waiting for the writer; further appends wait for room.
    pub append_queue_max: usize,
    /// Largest group of records the writer copies into the log at once.
    pub write_batch_bytes_max: usize,
    /// How far ahead of the writer a helper thread brings log pages into memory, so that the writer
    /// does not stop on page faults; 0 turns it off.
    pub warm_ahead_bytes: u64,
    /// Entries per consume-queue file (20 bytes each).
    pub queue_file_entries: u32,
    /// Hash slots per index file.
    pub index_slots: u32,
    /// Entries per index file.
    pub index_entries_max: u32,
    /// How often consume queues and the index are flushed and a checkpoint written.
    pub checkpoint_interval_ms: u64,
    /// Segments whose last write is older than this are deleted.
    pub retention_hours: u64,
    /// Budget of the store's own files (log, queues, index, checkpoint); 0: `disk_usage_max_ratio`
    /// of the file system's size.
    pub disk_bytes_max: u64,
    /// The budget as a fraction of the file system's size, when `disk_bytes_max` is 0.
    pub disk_usage_max_ratio: f64,
    /// What happens when the store's own files reach the budget.
    pub disk_pressure: DiskPressure,
    /// At or above this fraction of the file system in use (by anyone), appends are refused until
    /// space returns.
    pub disk_full_ratio: f64,
    /// How often retention and disk usage are checked.
    pub retention_check_interval_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            record_bytes_max: (4 << 20) + (64 << 10),
            flush: FlushMode::Async,
            flush_interval_ms: 500,
            flush_dirty_bytes_max: 64 << 20,
            append_queue_max: 16_384,
            write_batch_bytes_max: 4 << 20,
            warm_ahead_bytes: 16 << 20,
            queue_file_entries: 300_000,
            index_slots: 5_000_000,
            index_entries_max: 20_000_000,
            checkpoint_interval_ms: 1_000,
            retention_hours: 72,
            disk_bytes_max: 0,
            disk_usage_max_ratio: 0.75,
            disk_pressure: DiskPressure::Refuse,
            disk_full_ratio: 0.90,
            retention_check_interval_ms: 10_000,
        }
    }
}

/// Smallest segment: room for one minimal record and a filler.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Largest segment: a filler records the rest of its segment in 32 bits.
pub const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64;
const _: () = assert!(SEGMENT_BYTES_MIN as usize >= HEADER_BYTES + FILLER_BYTES_MIN);

impl StoreConfig {
    /// Checks the relationships between settings; returns a sentence naming the first one broken.
    pub fn validate(&self) -> Result<(), String> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(format!("segment_bytes must be between {SEGMENT_BYTES_MIN} and {SEGMENT_BYTES_MAX}"));
        }
        if (self.record_bytes_max as usize) < HEADER_BYTES {
            return Err(format!("record_bytes_max must be at least {HEADER_BYTES}"));
        }
        if u64::from(self.record_bytes_max) + FILLER_BYTES_MIN as u64 > self.segment_bytes {
            return Err(format!(
                "record_bytes_max ({}) plus an {FILLER_BYTES_MIN}-byte filler must fit in segment_bytes ({})",
                self.record_bytes_max, self.segment_bytes
            ));
        }
        if self.flush_dirty_bytes_max == 0 {
            return Err("flush_dirty_bytes_max must be positive".into());
        }
        if self.append_queue_max == 0 || self.write_batch_bytes_max == 0 {
            return Err("append_queue_max and write_batch_bytes_max must be positive".into());
        }
        if self.queue_file_entries == 0 || self.index_slots == 0 || self.index_entries_max < 2 {
            return Err("queue_file_entries and index_slots must be positive, index_entries_max at least 2".into());
        }
        if self.flush_interval_ms == 0 || self.checkpoint_interval_ms == 0 || self.retention_check_interval_ms == 0 {
            return Err("flush, checkpoint and retention intervals must be positive".into());
        }
        let ratio_ok = |r: f64| r > 0.0 && r <= 1.0;
        if !ratio_ok(self.disk_usage_max_ratio) || !ratio_ok(self.disk_full_ratio) {
            return Err("disk ratios must be in (0, 1]".into());
        }
        if self.disk_full_ratio < self.disk_usage_max_ratio {
            return Err("disk_full_ratio must not be below disk_usage_max_ratio".into());
        }
        if self.disk_bytes_max != 0 && self.disk_bytes_max < self.segment_bytes {
            return Err(format!(
                "disk_bytes_max ({}) must be 0 (derived from disk_usage_max_ratio) or at least segment_bytes ({})",
                self.disk_bytes_max, self.segment_bytes
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_reference_limits() {
        let config = StoreConfig::default();
        config.validate().expect("defaults validate");
        assert_eq!(config.segment_bytes, 1 << 30);
        assert!(config.record_bytes_max as usize > 4 * 1024 * 1024 + 16 * 1024 + HEADER_BYTES);
    }

    #[test]
    fn broken_relationships_are_named() {
        let config = StoreConfig { segment_bytes: 8192, record_bytes_max: 8190, ..StoreConfig::default() };
        assert!(config.validate().expect_err("too big").contains("record_bytes_max"));
        let config = StoreConfig { disk_full_ratio: 0.5, ..StoreConfig::default() };
        assert!(config.validate().expect_err("ratios").contains("disk_full_ratio"));
        let config = StoreConfig { disk_bytes_max: 1 << 20, ..StoreConfig::default() };
        assert!(config.validate().expect_err("budget below a segment").contains("disk_bytes_max"));
    }
}
