//! Retention: deletes the oldest log segments by age or when the disk is too full, trims the derived
//! data that pointed into them, and refuses appends while the disk is above `disk_full_ratio`.
//!
//! Never deleted: the active segment, and anything from the last checkpoint's recovery floor on (a
//! crash must still be able to recover). Deleting a segment does not disturb readers that hold it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Result, StoreError};
use crate::index::Index;
use crate::queue::ConsumeQueues;
use crate::shared::Shared;

pub(crate) struct Retention {
    pub(crate) shared: Arc<Shared>,
    pub(crate) queues: Arc<ConsumeQueues>,
    pub(crate) index: Arc<Index>,
    pub(crate) recovery_floor: Arc<AtomicU64>,
}

impl Retention {
    pub(crate) fn run(self) {
        let interval = Duration::from_millis(self.shared.config.retention_check_interval_ms);
        loop {
            let seen = self.shared.stop.generation();
            if self.shared.is_closing() || self.shared.fatal().is_some() {
                return;
            }
            if let Err(err) = self.check() {
                tracing::warn!(%err, "retention check failed; will retry");
            }
            self.shared.stop.wait(seen, interval);
        }
    }

    /// One pass: delete what is due, then update the disk-full flag.
    pub(crate) fn check(&self) -> Result<()> {
        let config = &self.shared.config;
        let log = &self.shared.log;
        let space = log.storage.space(&log.dir).map_err(StoreError::io("read disk space"))?;
        let total = space.total_bytes.max(1) as f64;
        let mut used = space.total_bytes.saturating_sub(space.available_bytes);
        let oldest_kept_ms = self.shared.clock.now_ms() - (config.retention_hours as i64) * 3_600_000;
        let floor = self.recovery_floor.load(Ordering::Acquire).min(self.shared.visible());

        let segments = log.segments();
        let mut removed = false;
        for segment in segments.iter().take(segments.len().saturating_sub(1)) {
            if segment.end() > floor {
                break;
            }
            let expired = log.storage.modified_ms(&segment.path).is_ok_and(|ms| ms < oldest_kept_ms);
            let over = used as f64 / total > config.disk_usage_max_ratio;
            if !expired && !over {
                break;
            }
            tracing::info!(segment = %segment.path.display(), expired, disk_used = used as f64 / total, "retention removes a log segment");
            log.remove_segment(segment.base)?;
            used = used.saturating_sub(segment.file.len());
            removed = true;
        }
        if removed {
            let min = log.min_offset();
            for cq in self.queues.all() {
                cq.trim_to(min)?;
            }
            self.index.remove_before(min)?;
        }
        let space = log.storage.space(&log.dir).map_err(StoreError::io("read disk space"))?;
        self.update_disk_full(space.used_ratio());
        Ok(())
    }

    fn update_disk_full(&self, ratio: f64) {
        let full = ratio >= self.shared.config.disk_full_ratio;
        let was = self.shared.disk_full.swap(full, Ordering::AcqRel);
        if full && !was {
            tracing::error!(
                used = ratio,
                limit = self.shared.config.disk_full_ratio,
                "disk full: appends are refused until space is freed"
            );
        } else if was && !full {
            tracing::info!(used = ratio, "disk space recovered: appends resume");
        }
    }
}
