//! Retention: deletes log segments by age, and under `disk_pressure = "delete_oldest"` while the
//! store's own files are over their budget; trims the derived data that pointed into them; reports
//! what each deletion took from each queue; and decides whether the disk counts as full (`disk`).
//!
//! Never deleted: the active segment, and anything from the last checkpoint's recovery floor on (a
//! crash must still be able to recover). Disk pressure also stops at the first segment holding a
//! record of a protected topic (the audit log): such records leave by age only. Until the next
//! checkpoint lets it delete what was just written, usage may run over the budget by that much. Under
//! the default `disk_pressure = "refuse"` nothing is deleted for space at all; appends are refused
//! instead.
//! Deleting a segment does not disturb readers that hold it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::config::DiskPressure;
use crate::disk::{self, Reading};
use crate::error::{BudgetHold, Result, StoreError};
use crate::index::Index;
use crate::log::Segment;
use crate::queue::ConsumeQueues;
use crate::shared::Shared;
use crate::sync::{lock, read, write};

/// Why a segment was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovalCause {
    /// Its last write is older than `retention_hours`.
    Age,
    /// The store's own files were over their budget under `disk_pressure = "delete_oldest"`.
    DiskPressure,
}

impl RemovalCause {
    /// A short name, for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            RemovalCause::Age => "age",
            RemovalCause::DiskPressure => "disk_pressure",
        }
    }
}

/// The messages one queue lost with a segment: queue offsets `from..to` are gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRemoval {
    pub topic: String,
    pub queue_id: u32,
    pub from: u64,
    pub to: u64,
}

/// One deleted segment: the commit-log range `log_from..log_to`, and what each queue lost with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    pub log_from: u64,
    pub log_to: u64,
    pub cause: RemovalCause,
    pub queues: Vec<QueueRemoval>,
}

/// Called on the retention thread after each deleted segment; keep it short.
pub type RemovalHook = Arc<dyn Fn(&Removal) + Send + Sync>;

pub(crate) struct Retention {
    shared: Arc<Shared>,
    queues: Arc<ConsumeQueues>,
    index: Arc<Index>,
    /// Lowest log offset the last checkpoint needs for recovery.
    recovery_floor: Arc<AtomicU64>,
    /// Topics whose records disk pressure never deletes.
    protected_topics: Vec<String>,
    hook: RwLock<Option<RemovalHook>>,
    /// Segments deleted for disk pressure since the store opened.
    pressure_deleted: AtomicU64,
    /// Disk pressure waits for a checkpoint: look again after the checkpoint interval.
    recheck_soon: AtomicBool,
    /// One check at a time: the thread's, and one asked for through the store.
    checking: Mutex<()>,
}

impl Retention {
    pub(crate) fn new(
        shared: Arc<Shared>,
        queues: Arc<ConsumeQueues>,
        index: Arc<Index>,
        recovery_floor: Arc<AtomicU64>,
        protected_topics: Vec<String>,
    ) -> Self {
        Self {
            shared,
            queues,
            index,
            recovery_floor,
            protected_topics,
            hook: RwLock::new(None),
            pressure_deleted: AtomicU64::new(0),
            recheck_soon: AtomicBool::new(false),
            checking: Mutex::new(()),
        }
    }

    /// Segments deleted for disk pressure since the store opened.
    pub(crate) fn pressure_deleted(&self) -> u64 {
        self.pressure_deleted.load(Ordering::Relaxed)
    }

    pub(crate) fn run(self: Arc<Self>) {
        let interval = Duration::from_millis(self.shared.config.retention_check_interval_ms);
        let request = &self.shared.retention_request;
        let stopped = || self.shared.is_closing() || self.shared.fatal().is_some();
        // The store checked once at open; this thread checks when asked or every interval. The
        // generation is read before the stop flags, so a stop signalled after it wakes the wait.
        let mut seen = request.generation();
        loop {
            if stopped() {
                return;
            }
            let soon = Duration::from_millis(self.shared.config.checkpoint_interval_ms);
            request.wait(
                seen,
                if self.recheck_soon.swap(false, Ordering::AcqRel) { soon.min(interval) } else { interval },
            );
            seen = request.generation();
            if stopped() {
                return;
            }
            if let Err(err) = self.check(self.floor()) {
                tracing::warn!(%err, "retention check failed; will retry");
            }
        }
    }

    /// Where the log must be kept from: what the last checkpoint needs, and nothing consumers cannot
    /// read yet.
    pub(crate) fn floor(&self) -> u64 {
        self.recovery_floor.load(Ordering::Acquire).min(self.shared.visible())
    }

    /// One pass: delete what is due by age, then (under `delete_oldest`) for disk pressure, keeping
    /// everything from `floor` on; then decide whether the disk counts as full.
    pub(crate) fn check(&self, floor: u64) -> Result<()> {
        let _one = lock(&self.checking);
        let config = &self.shared.config;
        let oldest_kept_ms = self.shared.clock.now_ms() - (config.retention_hours as i64) * 3_600_000;
        while let Some(oldest) = self.oldest_below(floor) {
            let expired = self.shared.log.storage.modified_ms(&oldest.path).is_ok_and(|ms| ms < oldest_kept_ms);
            if !expired {
                break;
            }
            self.remove(&oldest, RemovalCause::Age)?;
        }
        let held = match config.disk_pressure {
            DiskPressure::Refuse => Some(BudgetHold::Refuse),
            DiskPressure::DeleteOldest => self.relieve_pressure(floor)?,
        };
        let reading = self.read()?;
        self.shared.disk.checked(disk::assess(config, &reading, held), &reading, config.segment_bytes);
        Ok(())
    }

    fn read(&self) -> Result<Reading> {
        let log = &self.shared.log;
        let space = log.storage.space(&log.dir).map_err(StoreError::io("read disk space"))?;
        Ok(Reading {
            dir: log.dir.clone(),
            space,
            own_bytes: self.shared.own.bytes(),
            budget_bytes: disk::budget_bytes(&self.shared.config, space),
        })
    }

    /// The oldest segment unless it is the active one.
    fn oldest(&self) -> Option<Arc<Segment>> {
        let segments = self.shared.log.segments();
        segments.first().filter(|_| segments.len() > 1).cloned()
    }

    /// The oldest segment if retention may delete it: not the active one, and wholly below `floor`.
    fn oldest_below(&self, floor: u64) -> Option<Arc<Segment>> {
        self.oldest().filter(|oldest| oldest.end() <= floor)
    }

    /// Deletes the oldest segments while the store's own files are at or over their budget. Returns
    /// why appends must be refused if it cannot get below: `None` once below, and also while the
    /// oldest segment waits for a checkpoint (it is deletable soon; the check runs again then).
    fn relieve_pressure(&self, floor: u64) -> Result<Option<BudgetHold>> {
        loop {
            let reading = self.read()?;
            if reading.own_bytes < reading.budget_bytes {
                return Ok(None);
            }
            let Some(oldest) = self.oldest() else { return Ok(Some(BudgetHold::NothingDeletable)) };
            if oldest.end() > floor {
                self.recheck_soon.store(true, Ordering::Release);
                return Ok(None);
            }
            if let Some(topic) = self.protected_in(&oldest) {
                return Ok(Some(BudgetHold::Protected { topic, segment: oldest.base }));
            }
            self.remove(&oldest, RemovalCause::DiskPressure)?;
        }
    }

    /// The first protected topic with a record in `segment`.
    fn protected_in(&self, segment: &Segment) -> Option<String> {
        self.protected_topics
            .iter()
            .find(|topic| self.queues.of_topic(topic).iter().any(|cq| cq.points_into(segment.base, segment.end())))
            .cloned()
    }

    /// Deletes one segment, trims the queues and the index that pointed into it, and reports it.
    fn remove(&self, segment: &Segment, cause: RemovalCause) -> Result<()> {
        let log = &self.shared.log;
        let before: Vec<_> = self.queues.all().into_iter().map(|cq| (cq.min(), cq)).collect();
        log.remove_segment(segment.base)?;
        let min = log.min_offset();
        let mut queues = Vec::new();
        for (from, cq) in before {
            cq.trim_to(min)?;
            let to = cq.min();
            if to > from {
                queues.push(QueueRemoval { topic: cq.topic.clone(), queue_id: cq.queue_id, from, to });
            }
        }
        self.index.remove_before(min)?;
        let removal = Removal { log_from: segment.base, log_to: segment.end(), cause, queues };
        let messages: u64 = removal.queues.iter().map(|q| q.to - q.from).sum();
        match cause {
            RemovalCause::Age => tracing::info!(
                segment = %segment.path.display(), log_from = removal.log_from, log_to = removal.log_to, messages,
                "retention deleted a log segment older than retention_hours"
            ),
            RemovalCause::DiskPressure => {
                self.pressure_deleted.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    segment = %segment.path.display(), log_from = removal.log_from, log_to = removal.log_to, messages,
                    own_bytes = self.shared.own.bytes(),
                    "disk pressure (delete_oldest): deleted the oldest log segment, read or not"
                );
            }
        }
        let hook = read(&self.hook).clone();
        if let Some(hook) = hook {
            hook(&removal);
        }
        Ok(())
    }

    pub(crate) fn set_hook(&self, hook: Option<RemovalHook>) {
        *write(&self.hook) = hook;
    }
}
