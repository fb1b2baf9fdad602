//! The store's disk: how many bytes its own files take, the budget they are held to, and whether
//! appends are refused for lack of space.
//!
//! Usage is counted where files are made and removed ([`OwnFiles`] wraps the injected storage), not
//! by walking directories or asking the file system, so another process's files never count as the
//! store's. Store files are reserved when created (see `io`), so a file's length is the space it takes.
//! Another process can still fill the file system; that shows up as `disk_full_ratio` (real free
//! space) and refuses appends, but never makes the store delete anything.

use std::collections::HashMap;
use std::io;
use std::mem::discriminant;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::{DiskPressure, StoreConfig};
use crate::error::{BudgetHold, DiskFull, OverBudget};
use crate::io::{Space, Storage, StorageFile};
use crate::sync::lock;

/// A [`Storage`] that counts the bytes of every file the store created or opened and has not removed.
pub(crate) struct OwnFiles {
    inner: Arc<dyn Storage>,
    files: Mutex<HashMap<PathBuf, u64>>,
    bytes: AtomicU64,
}

impl std::fmt::Debug for OwnFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnFiles").field("inner", &self.inner).field("bytes", &self.bytes()).finish()
    }
}

impl OwnFiles {
    pub(crate) fn new(inner: Arc<dyn Storage>) -> Self {
        Self { inner, files: Mutex::new(HashMap::new()), bytes: AtomicU64::new(0) }
    }

    /// Bytes of the store's files.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    fn count(&self, path: &Path, len: u64) {
        let previous = lock(&self.files).insert(path.to_path_buf(), len);
        self.bytes.fetch_add(len, Ordering::AcqRel);
        if let Some(previous) = previous {
            self.bytes.fetch_sub(previous, Ordering::AcqRel);
        }
    }
}

impl Storage for OwnFiles {
    fn create(&self, path: &Path, len: u64) -> io::Result<Arc<dyn StorageFile>> {
        let file = self.inner.create(path, len)?;
        self.count(path, file.len());
        Ok(file)
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let file = self.inner.open(path)?;
        self.count(path, file.len());
        Ok(file)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)?;
        if let Some(len) = lock(&self.files).remove(path) {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }

    fn space(&self, dir: &Path) -> io::Result<Space> {
        self.inner.space(dir)
    }

    fn modified_ms(&self, path: &Path) -> io::Result<i64> {
        self.inner.modified_ms(path)
    }
}

/// The budget of the store's own files on a file system of `space`.
pub(crate) fn budget_bytes(config: &StoreConfig, space: Space) -> u64 {
    if config.disk_bytes_max > 0 {
        config.disk_bytes_max
    } else {
        (space.total_bytes as f64 * config.disk_usage_max_ratio) as u64
    }
}

/// What a check found: the file system, and the store's own files against their budget.
#[derive(Clone, Debug)]
pub(crate) struct Reading {
    pub(crate) dir: PathBuf,
    pub(crate) space: Space,
    pub(crate) own_bytes: u64,
    pub(crate) budget_bytes: u64,
}

/// Why appends must be refused now, if they must: the file system at or above `disk_full_ratio`,
/// or the store's own files at or over their budget while `held` says why nothing more is deleted
/// for them (`None`: the budget is not enforced now).
pub(crate) fn assess(config: &StoreConfig, reading: &Reading, held: Option<BudgetHold>) -> Option<DiskFull> {
    let space = reading.space;
    if space.used_ratio() >= config.disk_full_ratio {
        return Some(DiskFull::AboveRatio {
            dir: reading.dir.clone(),
            used_bytes: space.total_bytes.saturating_sub(space.available_bytes),
            total_bytes: space.total_bytes,
            ratio: config.disk_full_ratio,
        });
    }
    let held = held.filter(|_| reading.own_bytes >= reading.budget_bytes)?;
    Some(DiskFull::OverBudget(OverBudget {
        own_bytes: reading.own_bytes,
        budget_bytes: reading.budget_bytes,
        needed_bytes: 0,
        held,
    }))
}

/// Whether a failure a file creation reported still holds by `reading`: no space is back while less
/// than a segment is free; a refused segment stays refused while it would not fit the budget.
fn still_short(reason: &DiskFull, reading: &Reading, segment_bytes: u64) -> bool {
    match reason {
        DiskFull::NoSpace { .. } => reading.space.available_bytes < segment_bytes,
        DiskFull::OverBudget(over) if over.needed_bytes > 0 => {
            reading.own_bytes.saturating_add(over.needed_bytes) > reading.budget_bytes
        }
        DiskFull::OverBudget(_) | DiskFull::AboveRatio { .. } => false,
    }
}

#[derive(Clone, Debug)]
struct Refusal {
    reason: DiskFull,
    /// Set by a check: every append is refused before it is tried. Otherwise (a file creation
    /// failed) each append that needs a new file tries again, and the first that succeeds clears it.
    up_front: bool,
}

/// Whether the store counts its disk as full, and why. Read on every append; written by the
/// retention check, and at once by a file creation that found no space.
#[derive(Debug, Default)]
pub(crate) struct DiskState {
    full: AtomicBool,
    refusal: Mutex<Option<Refusal>>,
    /// The budget the last check computed.
    budget_bytes: AtomicU64,
}

impl DiskState {
    pub(crate) fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    pub(crate) fn reason(&self) -> Option<DiskFull> {
        if !self.is_full() {
            return None;
        }
        lock(&self.refusal).as_ref().map(|r| r.reason.clone())
    }

    pub(crate) fn budget_bytes(&self) -> u64 {
        self.budget_bytes.load(Ordering::Acquire)
    }

    /// Why an append must be refused before it is tried, if it must.
    pub(crate) fn refuse_up_front(&self) -> Option<DiskFull> {
        if !self.is_full() {
            return None;
        }
        lock(&self.refusal).as_ref().filter(|r| r.up_front).map(|r| r.reason.clone())
    }

    /// Refuses a new segment of `segment_bytes` under `disk_pressure = "refuse"` when it would take
    /// the store's own files over their budget.
    pub(crate) fn admit_segment(&self, config: &StoreConfig, own_bytes: u64) -> Option<DiskFull> {
        let budget_bytes = self.budget_bytes();
        let needed_bytes = config.segment_bytes;
        let over = config.disk_pressure == DiskPressure::Refuse
            && budget_bytes > 0
            && own_bytes.saturating_add(needed_bytes) > budget_bytes;
        over.then_some(DiskFull::OverBudget(OverBudget {
            own_bytes,
            budget_bytes,
            needed_bytes,
            held: BudgetHold::Refuse,
        }))
    }

    /// A file could not be created for lack of space: the disk counts as full from now on, until a
    /// creation succeeds or a check finds the space back.
    pub(crate) fn creation_failed(&self, reason: DiskFull) {
        let mut refusal = lock(&self.refusal);
        if refusal.as_ref().is_some_and(|r| r.up_front) {
            return;
        }
        self.replace(&mut refusal, Some(Refusal { reason, up_front: false }));
    }

    /// A file was created: space a failed creation lacked is back.
    pub(crate) fn creation_succeeded(&self) {
        if !self.is_full() {
            return;
        }
        let mut refusal = lock(&self.refusal);
        if refusal.as_ref().is_some_and(|r| !r.up_front) {
            self.replace(&mut refusal, None);
        }
    }

    /// Records what a check found: `found` refuses appends up front; without it, a failure a file
    /// creation reported stays until `reading` shows the space it lacked.
    pub(crate) fn checked(&self, found: Option<DiskFull>, reading: &Reading, segment_bytes: u64) {
        self.budget_bytes.store(reading.budget_bytes, Ordering::Release);
        let mut refusal = lock(&self.refusal);
        let next = match found {
            Some(reason) => Some(Refusal { reason, up_front: true }),
            None => refusal.clone().filter(|r| !r.up_front && still_short(&r.reason, reading, segment_bytes)),
        };
        self.replace(&mut refusal, next);
    }

    /// Sets the refusal, logging when the disk becomes full, changes why, or has room again.
    fn replace(&self, slot: &mut Option<Refusal>, next: Option<Refusal>) {
        match (slot.as_ref(), next.as_ref()) {
            (None, Some(now)) => {
                tracing::error!(reason = %now.reason, "disk full: appends are refused");
            }
            (Some(was), Some(now)) if discriminant(&was.reason) != discriminant(&now.reason) => {
                tracing::error!(reason = %now.reason, "disk full, for another reason now: appends are refused");
            }
            (Some(was), None) => {
                tracing::info!(was = %was.reason, "disk space is back: appends resume");
            }
            _ => {}
        }
        self.full.store(next.is_some(), Ordering::Release);
        *slot = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(total: u64, available: u64, own: u64, budget: u64) -> Reading {
        Reading {
            dir: PathBuf::from("/data"),
            space: Space { total_bytes: total, available_bytes: available },
            own_bytes: own,
            budget_bytes: budget,
        }
    }

    #[test]
    fn the_file_system_limit_comes_first_and_the_budget_counts_own_files_only() {
        let config = StoreConfig { disk_full_ratio: 0.9, ..StoreConfig::default() };
        // Someone else filled 95% of the disk; the store's own files are small.
        let found = assess(&config, &reading(1000, 50, 10, 750), Some(BudgetHold::Refuse));
        assert!(matches!(found, Some(DiskFull::AboveRatio { used_bytes: 950, .. })), "{found:?}");
        // The disk has room, the store's own files do not.
        let found = assess(&config, &reading(1000, 500, 750, 750), Some(BudgetHold::Refuse));
        let message = found.map(|r| r.to_string()).unwrap_or_default();
        assert!(message.contains("750 bytes") && message.contains("delete_oldest"), "{message}");
        assert!(assess(&config, &reading(1000, 500, 749, 750), Some(BudgetHold::Refuse)).is_none());
        assert!(assess(&config, &reading(1000, 500, 800, 750), None).is_none(), "waiting for a checkpoint");
    }

    #[test]
    fn a_failed_creation_reports_full_at_once_and_clears_when_space_is_back() {
        let state = DiskState::default();
        let no_space = DiskFull::NoSpace {
            context: "create segment".into(),
            source: Arc::new(io::Error::from_raw_os_error(libc::ENOSPC)),
        };
        state.creation_failed(no_space);
        assert!(state.is_full());
        assert!(state.refuse_up_front().is_none(), "the next append tries again");
        state.checked(None, &reading(1000, 10, 0, 750), 100);
        assert!(state.is_full(), "still less than a segment free");
        state.checked(None, &reading(1000, 500, 0, 750), 100);
        assert!(!state.is_full());
    }

    #[test]
    fn under_refuse_a_segment_over_the_budget_is_refused() {
        let config = StoreConfig { segment_bytes: 100, disk_bytes_max: 1000, ..StoreConfig::default() };
        let state = DiskState::default();
        state.checked(None, &reading(10_000, 9_000, 0, 1000), 100);
        assert!(state.admit_segment(&config, 900).is_none());
        assert!(state.admit_segment(&config, 901).is_some());
        let delete = StoreConfig { disk_pressure: DiskPressure::DeleteOldest, ..config };
        assert!(state.admit_segment(&delete, 901).is_none(), "delete_oldest makes room afterwards");
    }
}
