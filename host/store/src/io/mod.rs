//! The file layer under the store, and the contract every implementation keeps.
//!
//! The store never touches `std::fs` directly: it goes through [`Storage`] and [`StorageFile`], so that
//! the same code runs on real files ([`FsStorage`], memory-mapped) and on the fault-injecting
//! [`FaultStorage`] that the crash tests use.
//!
//! # The contract
//! * A file has a fixed length, fixed when it is created; its bytes are reserved on disk at creation, so
//!   a full disk shows up as an error from [`Storage::create`], never later as a signal on write.
//! * [`StorageFile::write`] and [`StorageFile::zero`] change the file's contents at once for every reader
//!   of this process; they become durable only after a later [`StorageFile::sync`] returns `Ok`.
//! * Readers borrow bytes with [`StorageFile::bytes`]. The store only borrows ranges it has finished
//!   writing and never writes them again while a borrow can exist; that is what makes the borrow sound.
//! * A file that is removed stays readable through handles already open.

mod fault;
mod fs;

use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub use fault::{FaultPlan, FaultStorage, SeededRng};
pub use fs::FsStorage;

/// Disk space of the file system a directory lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

impl Space {
    /// Fraction of the file system in use, between 0 and 1.
    pub fn used_ratio(&self) -> f64 {
        if self.total_bytes == 0 {
            return 1.0;
        }
        1.0 - self.available_bytes as f64 / self.total_bytes as f64
    }
}

/// A directory tree of fixed-size files.
pub trait Storage: Send + Sync + Debug {
    /// Creates a new zero-filled file of `len` bytes with its space reserved; fails if it exists.
    fn create(&self, path: &Path, len: u64) -> io::Result<Arc<dyn StorageFile>>;
    /// Opens an existing file. An empty file (left by a crash between creating a file and
    /// reserving its space) fails with [`EmptyFile::error`].
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Names of the entries (files and directories) in `dir`; empty when `dir` does not exist.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes creations and removals of entries in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Space of the file system that holds `dir`.
    fn space(&self, dir: &Path) -> io::Result<Space>;
    /// Last modification time of a file, in milliseconds since the Unix epoch.
    fn modified_ms(&self, path: &Path) -> io::Result<i64>;
}

/// One fixed-size file (never empty, so no `is_empty`).
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync + Debug {
    fn len(&self) -> u64;
    /// Copies `data` into the file at `offset`. Fails (never panics) when the range is out of bounds.
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Sets `len` bytes from `offset` to zero.
    fn zero(&self, offset: u64, len: u64) -> io::Result<()>;
    /// A hint: bring the pages of `[offset, offset + len)` into memory so that a later `write` there
    /// does not fault. Changes no byte and makes nothing dirty; out-of-range parts are ignored.
    fn prefault(&self, _offset: u64, _len: u64) {}
    /// Makes every completed write durable. An error here means the data may be lost: the caller must
    /// treat it as fatal.
    fn sync(&self) -> io::Result<()>;
    /// Borrows `len` bytes from `offset`; out-of-range requests are clipped to the file's end.
    ///
    /// # Safety
    /// No write or zero of any byte in the range may happen while the returned slice is alive.
    unsafe fn bytes(&self, offset: u64, len: usize) -> &[u8];
}

/// Creates the file `path` in `dir` and makes its name durable. If the name cannot be made durable the
/// file is removed again, so that a later attempt (after `EMFILE`, say) creates it afresh rather than
/// finding it in the way. `what` names the file in errors.
pub(crate) fn create_durably(
    storage: &dyn Storage,
    dir: &Path,
    path: &Path,
    len: u64,
    what: &str,
) -> crate::Result<Arc<dyn StorageFile>> {
    use crate::StoreError;
    let file = storage.create(path, len).map_err(StoreError::io(format!("create {what} {}", path.display())))?;
    if let Err(err) = storage.sync_dir(dir) {
        drop(file);
        if let Err(remove) = storage.remove_file(path) {
            tracing::warn!(file = %path.display(), err = %remove, "could not remove a file whose name is not durable");
        }
        return Err(StoreError::io(format!("sync {}", dir.display()))(err));
    }
    Ok(file)
}

/// Why [`Storage::open`] refuses an empty file: store files are never empty, so an empty one was
/// left by a crash between creating it and reserving its space.
#[derive(Debug)]
pub struct EmptyFile;

impl std::fmt::Display for EmptyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the file is empty (store files never are: a crash came between creating it and reserving its space)",
        )
    }
}

impl std::error::Error for EmptyFile {}

impl EmptyFile {
    /// The error [`Storage::open`] returns for an empty file.
    pub fn error() -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, EmptyFile)
    }
}

/// Whether [`Storage::open`] failed because the file is empty ([`EmptyFile`]), and for no other
/// reason: only then may the caller treat the file as holding nothing.
pub(crate) fn is_empty_file(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|inner| inner.is::<EmptyFile>())
}

/// Clips `[offset, offset + len)` to a file of `file_len` bytes.
fn clip(offset: u64, len: usize, file_len: u64) -> (usize, usize) {
    let start = offset.min(file_len);
    let end = offset.saturating_add(len as u64).min(file_len);
    (start as usize, (end - start) as usize)
}

/// Checks that `[offset, offset + len)` lies inside a file of `file_len` bytes.
fn check_range(offset: u64, len: u64, file_len: u64) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("range {offset}+{len} is outside a file of {file_len} bytes"),
        )),
    }
}
