//! Errors of the store.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use ferrymq_proto::RecordError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("disk full, append refused: {0}")]
    DiskFull(#[source] DiskFull),
    /// The process ran out of open files or memory maps: nothing was changed, and the same call can
    /// succeed once some are released.
    #[error(
        "{context}: {source}: the process is out of open files or memory maps; retry later, and raise the \
         open-file limit (LimitNOFILE / ulimit -n) or vm.max_map_count if it persists"
    )]
    Resource { context: String, source: io::Error },
    #[error(
        "{} has {available_bytes} bytes available, less than one log segment (segment_bytes = {segment_bytes}); \
         lower segment_bytes or free space on that file system",
        dir.display()
    )]
    NoRoomForSegment { dir: PathBuf, available_bytes: u64, segment_bytes: u64 },
    #[error(
        "the budget of the store's files in {}, {budget_bytes} bytes (disk_usage_max_ratio of the file system's \
         {total_bytes} bytes), is less than one log segment (segment_bytes = {segment_bytes}); lower segment_bytes, \
         raise disk_usage_max_ratio or set disk_bytes_max, or use a larger file system",
        dir.display()
    )]
    BudgetBelowSegment { dir: PathBuf, budget_bytes: u64, total_bytes: u64, segment_bytes: u64 },
    #[error("store stopped after a fatal I/O error ({0}); restart to recover")]
    Fatal(#[source] Arc<FatalCause>),
    #[error("store is closed")]
    Closed,
    #[error("this store is a replica: it takes only its master's log bytes")]
    ReadOnly,
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { size: usize, max: u32 },
    #[error("invalid topic name {topic:?}: {reason}")]
    InvalidTopic { topic: String, reason: &'static str },
    #[error("invalid record: {0}")]
    InvalidRecord(#[from] RecordError),
    #[error("corrupt record at commit-log offset {offset}: {source}")]
    Corrupt { offset: u64, source: RecordError },
    #[error("commit-log offset {offset} is not available (log holds {min}..{max})")]
    OffsetOutOfRange { offset: u64, min: u64, max: u64 },
    #[error("raw append at offset {got} does not continue the log at {expected}")]
    RawOffsetMismatch { expected: u64, got: u64 },
    #[error("raw append is not a sequence of whole records: {0}")]
    RawMalformed(String),
    #[error("raw append is not a sequence of whole records: at offset {offset}: {source}")]
    RawCorrupt { offset: u64, source: RecordError },
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
    #[error("unrecoverable store state: {0}")]
    Inconsistent(String),
    /// A consume-queue or index file is not what the store writes; [`Store::open`] rebuilds them
    /// from the log rather than returning this.
    ///
    /// [`Store::open`]: crate::Store::open
    #[error("damaged consume queue or index: {0}")]
    DerivedDamaged(String),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

impl StoreError {
    /// Classifies a failed file operation: no space (`ENOSPC`, `EDQUOT`) is [`StoreError::DiskFull`],
    /// no descriptors or maps (`EMFILE`, `ENFILE`, `ENOMEM`) is [`StoreError::Resource`], anything
    /// else is [`StoreError::Io`]. Whether an error stops the store is the caller's decision.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
        let context = context.into();
        move |source| match source.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => {
                StoreError::DiskFull(DiskFull::NoSpace { context, source: Arc::new(source) })
            }
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM) => StoreError::Resource { context, source },
            _ => StoreError::Io { context, source },
        }
    }

    /// Whether the same request may succeed later without anyone restarting the store: the disk is
    /// full or the process is out of descriptors. A client should retry, with a back-off.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::DiskFull(_) | StoreError::Resource { .. })
    }
}

/// What stopped the store. Recorded once; every waiting and later append fails with it.
#[derive(Debug, Error)]
pub enum FatalCause {
    #[error("flush of {} failed: {source}", path.display())]
    Flush { path: PathBuf, source: io::Error },
    #[error("write to {} failed: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    /// The next segment could not be created (for a reason other than a full disk or a lack of
    /// descriptors).
    #[error("{0}")]
    Segment(#[source] StoreError),
    /// A batch of records could not be written.
    #[error("{0}")]
    Batch(#[source] StoreError),
    #[error("dispatch failed: {0}")]
    Dispatch(#[source] StoreError),
    #[error("checkpoint failed: {0}")]
    Checkpoint(#[source] StoreError),
    /// A store thread panicked: a bug, reported with the thread's name and the panic's message.
    #[error("store thread {thread} panicked: {message}")]
    Panic { thread: String, message: String },
}

/// Why the store counts the disk as full. Each message names the limit, the numbers and what to do.
#[derive(Clone, Debug, Error)]
pub enum DiskFull {
    /// The file system holding the store is at or above `disk_full_ratio`, whoever filled it.
    #[error(
        "the file system holding {} is {:.1}% full ({used_bytes} of {total_bytes} bytes used), at or above \
         disk_full_ratio ({ratio}); free space on it",
        dir.display(),
        percent(*used_bytes, *total_bytes)
    )]
    AboveRatio { dir: PathBuf, used_bytes: u64, total_bytes: u64, ratio: f64 },
    /// The store's own files are at or over its budget and nothing may be deleted to make room.
    #[error("{0}")]
    OverBudget(OverBudget),
    /// A file could not be created or grown: the file system (or a quota) has no space left.
    #[error("{context}: {source}")]
    NoSpace { context: String, source: Arc<io::Error> },
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 { 100.0 } else { part as f64 * 100.0 / whole as f64 }
}

/// The store's own files against its budget (`disk_bytes_max`, or `disk_usage_max_ratio` of the
/// file system).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverBudget {
    /// Bytes of the store's own files: log segments, consume queues, index, checkpoint.
    pub own_bytes: u64,
    pub budget_bytes: u64,
    /// Bytes the refused operation would have added (a new segment); 0 when usage alone is over.
    pub needed_bytes: u64,
    /// Why nothing is deleted to make room.
    pub held: BudgetHold,
}

/// Why disk-pressure retention does not make room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BudgetHold {
    /// `disk_pressure = "refuse"`: unread data is never deleted for space, only by age.
    Refuse,
    /// `delete_oldest` stopped at the segment starting at `segment` because it holds records of a
    /// protected topic (such as the audit log), which only `retention_hours` removes.
    Protected { topic: String, segment: u64 },
    /// `delete_oldest` has nothing more it may delete: the active segment, the log the last
    /// checkpoint needs for recovery, consume queues and index are what remains.
    NothingDeletable,
}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (own, budget) = (self.own_bytes, self.budget_bytes);
        if self.needed_bytes > 0 {
            write!(
                f,
                "a new {}-byte log segment would take the store's own files from {own} to {} bytes, over its \
                 budget of {budget} bytes",
                self.needed_bytes,
                own.saturating_add(self.needed_bytes)
            )?;
        } else {
            write!(f, "the store's own files take {own} bytes, at or over its budget of {budget} bytes")?;
        }
        f.write_str(" (disk_bytes_max, or disk_usage_max_ratio of the file system); ")?;
        match &self.held {
            BudgetHold::Refuse => f.write_str(
                "disk_pressure = \"refuse\" never deletes unread messages to make room: raise disk_bytes_max or \
                 disk_usage_max_ratio, let retention_hours expire old segments, or set disk_pressure = \
                 \"delete_oldest\" to give up the oldest messages instead",
            ),
            BudgetHold::Protected { topic, segment } => write!(
                f,
                "deleting the oldest segments stopped at segment {segment}, which holds records of the protected \
                 topic {topic} (only retention_hours removes those): raise disk_bytes_max or disk_usage_max_ratio"
            ),
            BudgetHold::NothingDeletable => f.write_str(
                "nothing more may be deleted (the active segment, the log the last checkpoint needs, consume \
                 queues and index remain): raise disk_bytes_max or disk_usage_max_ratio",
            ),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
