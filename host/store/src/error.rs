//! Errors of the store.

use std::io;

use ferrymq_proto::RecordError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("disk full: {0}; appends resume when space is freed")]
    DiskFull(String),
    #[error("store stopped after a fatal I/O error ({0}); restart to recover")]
    Fatal(String),
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
                StoreError::DiskFull(format!("{context}: {source}"))
            } else {
                StoreError::Io { context, source }
            }
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
