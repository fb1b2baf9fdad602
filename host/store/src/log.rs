//! The commit log: an ordered run of fixed-size segment files and the positions that say how much of
//! it is written, flushed and readable.
//!
//! One writer thread appends (see `writer`); any thread reads. The writer publishes `written` only
//! after the bytes below it are complete records, and never writes below it again, which is what makes
//! borrowing those bytes sound. Recovery, which may rewrite the tail, runs before any reader exists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use ferrymq_proto::record::{self, Entry, FILLER_BYTES_MIN, RecordRef, Verify, sys_flag};

use crate::error::{Result, StoreError};
use crate::io::{Storage, StorageFile};
use crate::sync::{read, write};

/// Name of a file that starts at `offset`: 20 zero-padded digits, so names sort like offsets.
pub(crate) fn file_name(offset: u64) -> String {
    format!("{offset:020}")
}

pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) { name.parse().ok() } else { None }
}

/// One segment file of the log.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: u64,
    pub(crate) file: Arc<dyn StorageFile>,
    pub(crate) path: PathBuf,
}

impl Segment {
    pub(crate) fn end(&self) -> u64 {
        self.base + self.file.len()
    }

    /// Borrows the log bytes `[at, at + len)`, clipped to this segment.
    ///
    /// # Safety
    /// The range must be below the log's published `written` position, or no writer may exist yet.
    pub(crate) unsafe fn slice(&self, at: u64, len: usize) -> &[u8] {
        // SAFETY: forwarded to the caller.
        unsafe { self.file.bytes(at.saturating_sub(self.base), len) }
    }
}

/// A borrowed view of one record, keeping its segment alive (and mapped) while it exists.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    segment: Arc<Segment>,
    offset: u64,
    len: usize,
}

impl StoredRecord {
    /// Commit-log offset of the record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Encoded size of the record in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The record's encoded bytes, exactly as stored and replicated.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: a StoredRecord is only made for a range below `written` (see `CommitLog::record`),
        // which is never written again.
        unsafe { self.segment.slice(self.offset, self.len) }
    }

    /// Decodes the record, verifying its checksum.
    pub fn decode(&self) -> Result<RecordRef<'_>> {
        match record::decode(self.bytes(), self.offset, Verify::Full) {
            Ok(Entry::Record { record, .. }) => Ok(record),
            Ok(Entry::Filler { .. }) => Err(StoreError::Corrupt {
                offset: self.offset,
                source: record::RecordError::BadMagic(record::FILLER_MAGIC),
            }),
            Err(source) => Err(StoreError::Corrupt { offset: self.offset, source }),
        }
    }
}

#[derive(Debug)]
pub(crate) struct CommitLog {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) dir: PathBuf,
    segment_bytes: u64,
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    /// Everything below is complete records; published by the writer.
    written: AtomicU64,
    /// Everything below is durable; published by the flusher.
    flushed: AtomicU64,
}

impl CommitLog {
    /// Opens the segments in `dir`; they must be contiguous.
    pub(crate) fn open(storage: Arc<dyn Storage>, dir: &Path, segment_bytes: u64) -> Result<Self> {
        storage.create_dir_all(dir).map_err(StoreError::io(format!("create {}", dir.display())))?;
        let mut segments = BTreeMap::new();
        let mut expected: Option<u64> = None;
        let names: Vec<(u64, String)> = storage
            .list(dir)
            .map_err(StoreError::io(format!("list {}", dir.display())))?
            .into_iter()
            .filter_map(|name| match parse_file_name(&name) {
                Some(base) => Some((base, name)),
                None => {
                    tracing::warn!(file = %name, dir = %dir.display(), "ignoring a file that is not a log segment");
                    None
                }
            })
            .collect();
        let last = names.last().map(|(base, _)| *base);
        for (base, name) in names {
            let path = dir.join(&name);
            if base > crate::bounds::LOG_OFFSET_MAX {
                return Err(StoreError::Inconsistent(format!(
                    "log segment {} starts past the highest offset a segment may start at ({}); it was not \
                     written by this store: move it away",
                    path.display(),
                    crate::bounds::LOG_OFFSET_MAX
                )));
            }
            let file = match storage.open(&path) {
                Ok(file) => file,
                Err(err) if crate::io::is_empty_file(&err) && Some(base) == last => {
                    // Nothing was ever written to it: the crash came between its creation and
                    // the reservation of its space.
                    tracing::warn!(segment = %path.display(), "removing an empty last log segment");
                    storage.remove_file(&path).map_err(StoreError::io(format!("remove {}", path.display())))?;
                    storage.sync_dir(dir).map_err(StoreError::io(format!("sync {}", dir.display())))?;
                    continue;
                }
                Err(err) => return Err(StoreError::io(format!("open {}", path.display()))(err)),
            };
            if let Some(expected) = expected
                && base != expected
            {
                return Err(StoreError::Inconsistent(format!(
                    "log segment {} starts at {base}, but the previous one ends at {expected}",
                    path.display()
                )));
            }
            expected = Some(base + file.len());
            segments.insert(base, Arc::new(Segment { base, file, path }));
        }
        let start = segments.keys().next().copied().unwrap_or(0);
        Ok(Self {
            storage,
            dir: dir.to_path_buf(),
            segment_bytes,
            segments: RwLock::new(segments),
            written: AtomicU64::new(start),
            flushed: AtomicU64::new(start),
        })
    }

    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    pub(crate) fn flushed(&self) -> u64 {
        self.flushed.load(Ordering::Acquire)
    }

    pub(crate) fn publish_written(&self, offset: u64) {
        self.written.store(offset, Ordering::Release);
    }

    pub(crate) fn publish_flushed(&self, offset: u64) {
        self.flushed.store(offset, Ordering::Release);
    }

    /// Start of the oldest segment still on disk.
    pub(crate) fn min_offset(&self) -> u64 {
        read(&self.segments).keys().next().copied().unwrap_or_else(|| self.written())
    }

    /// The segment holding `offset`.
    pub(crate) fn segment_at(&self, offset: u64) -> Option<Arc<Segment>> {
        let segments = read(&self.segments);
        let (_, seg) = segments.range(..=offset).next_back()?;
        (offset < seg.end()).then(|| seg.clone())
    }

    /// Segments overlapping `[from, to)`, oldest first.
    pub(crate) fn segments_between(&self, from: u64, to: u64) -> Vec<Arc<Segment>> {
        read(&self.segments).values().filter(|s| s.end() > from && s.base < to).cloned().collect()
    }

    /// All segments, oldest first.
    pub(crate) fn segments(&self) -> Vec<Arc<Segment>> {
        read(&self.segments).values().cloned().collect()
    }

    /// Creates the segment starting at `base`, durably named.
    pub(crate) fn create_segment(&self, base: u64) -> Result<Arc<Segment>> {
        let path = self.dir.join(file_name(base));
        let file =
            crate::io::create_durably(self.storage.as_ref(), &self.dir, &path, self.segment_bytes, "log segment")?;
        let seg = Arc::new(Segment { base, file, path });
        write(&self.segments).insert(base, seg.clone());
        Ok(seg)
    }

    /// Removes the oldest segment from the log and from disk. Readers holding it keep their view.
    pub(crate) fn remove_segment(&self, base: u64) -> Result<()> {
        let Some(seg) = write(&self.segments).remove(&base) else { return Ok(()) };
        self.storage
            .remove_file(&seg.path)
            .map_err(StoreError::io(format!("remove log segment {}", seg.path.display())))?;
        tracing::debug!(segment = %seg.path.display(), "log segment removed");
        Ok(())
    }

    /// The record at `offset`, which must start below `written` and end at or below it.
    pub(crate) fn record(&self, offset: u64, len: usize) -> Result<StoredRecord> {
        let written = self.written();
        let out_of_range = || StoreError::OffsetOutOfRange { offset, min: self.min_offset(), max: written };
        if offset.checked_add(len as u64).is_none_or(|end| end > written) {
            return Err(out_of_range());
        }
        let segment = self.segment_at(offset).ok_or_else(out_of_range)?;
        if offset + len as u64 > segment.end() {
            return Err(out_of_range());
        }
        Ok(StoredRecord { segment, offset, len })
    }

    /// The entry (record or filler) at `offset`, below `written`, with its length.
    pub(crate) fn entry_len_at(&self, offset: u64) -> Result<(Arc<Segment>, usize, bool)> {
        let written = self.written();
        let segment = self.segment_at(offset).filter(|_| offset < written).ok_or(StoreError::OffsetOutOfRange {
            offset,
            min: self.min_offset(),
            max: written,
        })?;
        let left = segment.end() - offset;
        if left < FILLER_BYTES_MIN as u64 {
            // Too few bytes for any entry: the segment ended early (see `Writer::write_filler`).
            return Ok((segment, left as usize, true));
        }
        let avail = (segment.end().min(written) - offset) as usize;
        // SAFETY: the range is below `written`.
        let bytes = unsafe { segment.slice(offset, avail) };
        match record::decode(bytes, offset, Verify::Structure) {
            Ok(Entry::Record { total_bytes, .. }) => Ok((segment, total_bytes, false)),
            Ok(Entry::Filler { total_bytes }) => Ok((segment, total_bytes, true)),
            Err(source) => Err(StoreError::Corrupt { offset, source }),
        }
    }

    /// Finds where the valid log ends, scanning and verifying from the record boundary `from`, and cuts
    /// everything after it: the rest of that segment is zeroed, later segments are removed.
    ///
    /// Runs before the writer starts; returns the end offset.
    ///
    /// `zero_tail` is false after a clean shutdown, when nothing past the end was ever written.
    pub(crate) fn recover_tail(&self, from: u64, zero_tail: bool) -> Result<u64> {
        let mut pos = from.max(self.min_offset());
        // Start of an atomic batch whose last record has not been seen yet.
        let mut open_batch = None;
        loop {
            let Some(seg) = self.segment_at(pos) else { break };
            let avail = (seg.end() - pos) as usize;
            if avail < FILLER_BYTES_MIN {
                // A segment that ends fewer bytes after a record than a filler takes (its file was
                // cut short): the log goes on in the next segment, if there is one.
                if self.segment_at(seg.end()).is_none() {
                    break;
                }
                pos = seg.end();
                continue;
            }
            // SAFETY: recovery runs before the writer exists.
            let bytes = unsafe { seg.slice(pos, avail) };
            match record::decode(bytes, pos, Verify::Full) {
                Ok(Entry::Record { record, total_bytes }) => {
                    let continues = record.meta.sys_flag & sys_flag::BATCH_CONTINUES != 0;
                    open_batch = match (continues, open_batch) {
                        (true, None) => Some(pos),
                        (true, started) => started,
                        (false, _) => None,
                    };
                    pos += total_bytes as u64;
                }
                Ok(Entry::Filler { total_bytes }) if total_bytes == avail && self.segment_at(seg.end()).is_some() => {
                    pos = seg.end();
                }
                Ok(Entry::Filler { .. }) | Err(_) => break,
            }
        }
        if let Some(start) = open_batch {
            tracing::warn!(offset = start, "dropping an atomic batch the crash cut short");
            pos = start;
        }
        if zero_tail {
            self.truncate(pos)?;
        }
        self.publish_written(pos);
        self.publish_flushed(pos);
        Ok(pos)
    }

    /// Zeroes the log from `end` to the end of its segment and removes later segments.
    fn truncate(&self, end: u64) -> Result<()> {
        let later: Vec<u64> = read(&self.segments).range(end + 1..).map(|(&base, _)| base).collect();
        for base in later.into_iter().rev() {
            tracing::warn!(offset = base, "removing log segment past the recovered end");
            self.remove_segment(base)?;
        }
        if let Some(seg) = self.segment_at(end) {
            let from = end - seg.base;
            let len = seg.file.len() - from;
            // Zeroing is allowed here because recovery runs before any reader exists.
            seg.file
                .zero(from, len)
                .and_then(|()| seg.file.sync())
                .map_err(StoreError::io(format!("zero the tail of {}", seg.path.display())))?;
        }
        self.storage.sync_dir(&self.dir).map_err(StoreError::io(format!("sync {}", self.dir.display())))?;
        Ok(())
    }
}
