//! Real files: space reserved with `fallocate`, contents reached through one shared memory map.
//!
//! Writes are `memcpy`s into the map and reads borrow from it, so the page cache is the only copy of
//! the data. `sync` is `fdatasync`, which on Linux also writes back pages dirtied through the map.
//!
//! # Mapping contract
//! A file stays mapped while any handle to it lives. Mapping a file is sound only because nothing
//! truncates a store file while it is open: the store never shrinks files (it zeroes ranges instead), and
//! the data directory belongs to the store alone (the server takes an exclusive lock on it). Removing
//! a file only unlinks it; the map keeps its pages alive.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use memmap2::{MmapOptions, MmapRaw};

use super::{Space, Storage, StorageFile, check_range, clip};

const PAGE_BYTES: u64 = 4096;

/// [`Storage`] on the local file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsStorage;

#[derive(Debug)]
struct FsFile {
    file: File,
    map: MmapRaw,
    len: u64,
}

impl FsFile {
    fn map(file: File, len: u64) -> io::Result<Self> {
        if len == 0 {
            return Err(super::EmptyFile::error());
        }
        let map_len = usize::try_from(len).map_err(|_| io::Error::other("file too large to map"))?;
        // Mapping is safe to create; using it is what needs the module's mapping contract.
        let map = MmapOptions::new().len(map_len).map_raw(&file)?;
        Ok(Self { file, map, len })
    }
}

/// Reserves `len` bytes for `file` so that later writes through the map cannot hit a full disk.
fn reserve(file: &File, len: u64) -> io::Result<()> {
    let len_off = libc::off_t::try_from(len).map_err(|_| io::Error::other("file length overflows off_t"))?;
    // SAFETY: fallocate reads only its integer arguments; the descriptor is open for writing.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len_off) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
        // File systems without fallocate get a sparse file; a full disk then surfaces at writeback.
        tracing::warn!("file system does not support fallocate; store files will be sparse");
        return file.set_len(len);
    }
    Err(err)
}

impl Storage for FsStorage {
    fn create(&self, path: &Path, len: u64) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o644).open(path)?;
        // A file that cannot be reserved or mapped (no space; no maps left) is removed again, so
        // that a later attempt can create it.
        let created = reserve(&file, len).and_then(|()| FsFile::map(file, len));
        if created.is_err() {
            let _ = fs::remove_file(path);
        }
        Ok(Arc::new(created?))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Arc::new(FsFile::map(file, len)?))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let mut names = Vec::new();
        for entry in entries {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn space(&self, dir: &Path) -> io::Result<Space> {
        statvfs(dir)
    }

    fn modified_ms(&self, path: &Path) -> io::Result<i64> {
        let modified = fs::metadata(path)?.modified()?;
        let since = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        Ok(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }
}

fn statvfs(dir: &Path) -> io::Result<Space> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut out: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `out` is a valid, writable statvfs.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut out) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = out.f_frsize;
    Ok(Space { total_bytes: out.f_blocks.saturating_mul(frsize), available_bytes: out.f_bavail.saturating_mul(frsize) })
}

impl StorageFile for FsFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(offset, data.len() as u64, self.len)?;
        // SAFETY: the range is inside the map (checked above); by the store's contract no slice
        // borrowed with `bytes` covers it, and `data` cannot alias the map's writable range.
        unsafe {
            let dst = self.map.as_mut_ptr().add(offset as usize);
            std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len());
        }
        Ok(())
    }

    fn zero(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(offset, len, self.len)?;
        if len == 0 {
            return Ok(());
        }
        let mode = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate reads only its integer arguments.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset as i64, len as i64) };
        if rc == 0 {
            return Ok(());
        }
        // Not every file system can zero a range in place (tmpfs cannot); write the zeros instead.
        // SAFETY: in bounds (checked above) and, by contract, not borrowed.
        unsafe { std::ptr::write_bytes(self.map.as_mut_ptr().add(offset as usize), 0, len as usize) };
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn prefault(&self, offset: u64, len: u64) {
        // Whole pages only: madvise wants a page-aligned start.
        let start = (offset.min(self.len) & !(PAGE_BYTES - 1)) as usize;
        let end = offset.saturating_add(len).min(self.len) as usize;
        if end <= start {
            return;
        }
        // A read fault is what costs: it allocates the page and zeroes it (the file's extents are
        // reserved but unwritten). Populating for read does that here, without dirtying the page,
        // so a flush does not write zeros ahead of the data. Kernels before 5.14 refuse the advice;
        // then the writer takes the faults itself, as it would without this hint.
        // SAFETY: the range lies inside the map; MADV_POPULATE_READ changes no content.
        let rc =
            unsafe { libc::madvise(self.map.as_mut_ptr().add(start).cast(), end - start, libc::MADV_POPULATE_READ) };
        if rc != 0 {
            tracing::debug!(err = %io::Error::last_os_error(), "prefaulting log pages failed");
        }
    }

    unsafe fn bytes(&self, offset: u64, len: usize) -> &[u8] {
        let (start, len) = clip(offset, len, self.len);
        // SAFETY: clipped to the map; the caller guarantees the range is not written while borrowed.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start), len) }
    }
}
