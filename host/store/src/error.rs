//! Errors of the store.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use ferrymq_proto::RecordError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("disk full: {0}; appends resume when space is freed")]
    DiskFull(#[source] DiskFull),
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
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
        let context = context.into();
        move |source| {
            if source.raw_os_error() == Some(libc::ENOSPC) {
                StoreError::DiskFull(DiskFull::NoSpace { context, source })
            } else {
                StoreError::Io { context, source }
            }
        }
    }
}

/// What stopped the store. Recorded once; every waiting and later append fails with it.
#[derive(Debug, Error)]
pub enum FatalCause {
    #[error("flush of {} failed: {source}", path.display())]
    Flush { path: PathBuf, source: io::Error },
    #[error("write to {} failed: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    /// The next segment could not be created (for a reason other than a full disk).
    #[error("{0}")]
    Segment(#[source] StoreError),
    /// A batch of records could not be written.
    #[error("{0}")]
    Batch(#[source] StoreError),
    #[error("dispatch failed: {0}")]
    Dispatch(#[source] StoreError),
    #[error("checkpoint failed: {0}")]
    Checkpoint(#[source] StoreError),
}

/// Why the store counts the disk as full.
#[derive(Debug, Error)]
pub enum DiskFull {
    /// Disk usage is above the configured `disk_full_ratio`.
    #[error("disk usage is above disk_full_ratio ({ratio})")]
    AboveRatio { ratio: f64 },
    /// A write found no space left on the file system.
    #[error("{context}: {source}")]
    NoSpace { context: String, source: io::Error },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
