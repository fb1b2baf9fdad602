//! The message index: find records by business key (`topic#key`) or by message id.
//!
//! Each index file is a hash table on disk: a header, `index_slots` slots of 4 bytes holding the newest
//! entry number for that slot, then `index_entries_max` entries of 20 bytes (key hash u32, commit-log
//! offset u64, record size u32, previous entry number u32). Entry number 0 means "none". A lookup
//! walks a slot's chain and returns candidates; the caller confirms each by reading its record, so
//! hash collisions cost a read, never a wrong answer.
//!
//! Files are numbered; the newest one takes writes. Only the dispatcher writes, under the same lock
//! that lookups take. The index is derived data: after a crash the newest file is cut back to the entry
//! count the last checkpoint recorded, its slots are rebuilt from those entries, and the dispatcher
//! indexes the rest again from the log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Result, StoreError};
use crate::io::{Storage, StorageFile};
use crate::log::{file_name, parse_file_name};
use crate::sync::lock;

const MAGIC: u32 = 0xF3B1_1D01;
const HEADER_BYTES: u64 = 64;
const SLOT_BYTES: u64 = 4;
const ENTRY_BYTES: u64 = 20;
/// Highest number an index file may have (files are numbered from 1, one more per full file).
const INDEX_FILE_NUMBER_MAX: u64 = 1 << 62;

/// Where the index stands, as recorded in a checkpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct IndexMark {
    /// Number of the newest file (0: no file yet).
    pub(crate) file: u64,
    /// Entries in that file.
    pub(crate) count: u32,
}

/// A key's hash: CRC32C of its parts in order.
fn key_hash(parts: &[&[u8]]) -> u32 {
    parts.iter().fold(0, |crc, part| crc32c::crc32c_append(crc, part))
}

/// Hash of a business key of `topic`.
pub(crate) fn business_key_hash(topic: &str, key: &str) -> u32 {
    key_hash(&[topic.as_bytes(), b"#", key.as_bytes()])
}

/// Hash of a message id (ids are unique across topics).
pub(crate) fn message_id_hash(id: &str) -> u32 {
    key_hash(&[b"#", id.as_bytes()])
}

#[derive(Debug)]
struct IndexFile {
    number: u64,
    path: PathBuf,
    file: Arc<dyn StorageFile>,
    slots: u32,
    entries_max: u32,
    count: u32,
    /// Commit-log offsets covered: first and last indexed record.
    first_offset: u64,
    last_offset: u64,
    dirty: bool,
}

impl IndexFile {
    fn file_bytes(slots: u32, entries_max: u32) -> u64 {
        HEADER_BYTES + u64::from(slots) * SLOT_BYTES + u64::from(entries_max) * ENTRY_BYTES
    }

    fn entry_at(n: u32, slots: u32) -> u64 {
        HEADER_BYTES + u64::from(slots) * SLOT_BYTES + u64::from(n) * ENTRY_BYTES
    }

    fn read_u32(&self, at: u64) -> u32 {
        // SAFETY: reads and writes of index files happen under the index lock.
        let bytes = unsafe { self.file.bytes(at, 4) };
        bytes.try_into().map(u32::from_be_bytes).unwrap_or(0)
    }

    fn read_u64(&self, at: u64) -> u64 {
        // SAFETY: as in `read_u32`.
        let bytes = unsafe { self.file.bytes(at, 8) };
        bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
    }

    fn open(number: u64, path: PathBuf, file: Arc<dyn StorageFile>) -> Result<Self> {
        let mut this = Self {
            number,
            path,
            file,
            slots: 0,
            entries_max: 0,
            count: 0,
            first_offset: 0,
            last_offset: 0,
            dirty: false,
        };
        if this.read_u32(0) != MAGIC {
            return Err(StoreError::DerivedDamaged(format!("{} is not an index file", this.path.display())));
        }
        this.slots = this.read_u32(8);
        this.entries_max = this.read_u32(12);
        this.count = this.read_u32(16);
        this.first_offset = this.read_u64(24);
        this.last_offset = this.read_u64(32);
        let expected = Self::file_bytes(this.slots, this.entries_max);
        if this.slots == 0 || this.file.len() != expected || this.count >= this.entries_max {
            return Err(StoreError::DerivedDamaged(format!(
                "index file {} has an invalid header",
                this.path.display()
            )));
        }
        Ok(this)
    }

    fn write_header(&self) -> Result<()> {
        let mut h = [0u8; HEADER_BYTES as usize];
        h[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        h[4..8].copy_from_slice(&1u32.to_be_bytes());
        h[8..12].copy_from_slice(&self.slots.to_be_bytes());
        h[12..16].copy_from_slice(&self.entries_max.to_be_bytes());
        h[16..20].copy_from_slice(&self.count.to_be_bytes());
        h[24..32].copy_from_slice(&self.first_offset.to_be_bytes());
        h[32..40].copy_from_slice(&self.last_offset.to_be_bytes());
        self.file.write(0, &h).map_err(StoreError::io(format!("write {}", self.path.display())))
    }

    fn is_full(&self) -> bool {
        self.count + 1 >= self.entries_max
    }

    fn put(&mut self, hash: u32, offset: u64, len: u32) -> Result<()> {
        let slot_at = HEADER_BYTES + u64::from(hash % self.slots) * SLOT_BYTES;
        let prev = self.read_u32(slot_at);
        let n = self.count + 1;
        let mut entry = [0u8; ENTRY_BYTES as usize];
        entry[0..4].copy_from_slice(&hash.to_be_bytes());
        entry[4..12].copy_from_slice(&offset.to_be_bytes());
        entry[12..16].copy_from_slice(&len.to_be_bytes());
        entry[16..20].copy_from_slice(&prev.to_be_bytes());
        // The error's context is formatted only on failure: this runs twice for every record.
        let path = &self.path;
        let io = |e| StoreError::io(format!("write {}", path.display()))(e);
        self.file.write(Self::entry_at(n, self.slots), &entry).map_err(io)?;
        self.file.write(slot_at, &n.to_be_bytes()).map_err(io)?;
        self.count = n;
        if self.first_offset == 0 && n == 1 {
            self.first_offset = offset;
        }
        self.last_offset = offset;
        self.dirty = true;
        Ok(())
    }

    /// Candidates for `hash`, newest first: (commit-log offset, size).
    fn candidates(&self, hash: u32, max: usize, out: &mut Vec<(u64, u32)>) {
        let mut n = self.read_u32(HEADER_BYTES + u64::from(hash % self.slots) * SLOT_BYTES);
        while n != 0 && n <= self.count && out.len() < max {
            let at = Self::entry_at(n, self.slots);
            let prev = self.read_u32(at + 16);
            if self.read_u32(at) == hash {
                out.push((self.read_u64(at + 4), self.read_u32(at + 12)));
            }
            if prev >= n {
                break; // chains only point backwards; anything else is damage
            }
            n = prev;
        }
    }

    /// Cuts the file back to `count` entries and rebuilds its slots from them.
    fn cut_back(&mut self, count: u32) -> Result<()> {
        let io = |what: &str| StoreError::io(format!("{what} {}", self.path.display()));
        let slots_bytes = u64::from(self.slots) * SLOT_BYTES;
        self.file.zero(HEADER_BYTES, slots_bytes).map_err(io("zero slots of"))?;
        let from = Self::entry_at(count + 1, self.slots);
        self.file.zero(from, self.file.len() - from).map_err(io("zero entries of"))?;
        let mut slots = vec![0u32; self.slots as usize];
        let mut last = 0;
        for n in 1..=count {
            let at = Self::entry_at(n, self.slots);
            slots[(self.read_u32(at) % self.slots) as usize] = n;
            last = self.read_u64(at + 4);
        }
        let bytes: Vec<u8> = slots.iter().flat_map(|s| s.to_be_bytes()).collect();
        self.file.write(HEADER_BYTES, &bytes).map_err(io("write slots of"))?;
        self.count = count;
        self.last_offset = if count == 0 { 0 } else { last };
        if count == 0 {
            self.first_offset = 0;
        }
        self.write_header()?;
        self.file.sync().map_err(io("sync"))
    }
}

#[derive(Debug)]
struct State {
    files: BTreeMap<u64, IndexFile>,
}

/// All index files.
#[derive(Debug)]
pub(crate) struct Index {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    slots: u32,
    entries_max: u32,
    state: Mutex<State>,
}

impl Index {
    /// Opens the index; after a crash (`repair_to` set), cuts it back to the checkpoint's mark.
    pub(crate) fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        slots: u32,
        entries_max: u32,
        repair_to: Option<IndexMark>,
    ) -> Result<Self> {
        storage.create_dir_all(dir).map_err(StoreError::io(format!("create {}", dir.display())))?;
        let mut files = BTreeMap::new();
        for name in storage.list(dir).map_err(StoreError::io(format!("list {}", dir.display())))? {
            let Some(number) = parse_file_name(&name) else { continue };
            let path = dir.join(&name);
            if let Some(mark) = repair_to
                && number > mark.file
            {
                storage.remove_file(&path).map_err(StoreError::io(format!("remove {}", path.display())))?;
                continue;
            }
            if number > INDEX_FILE_NUMBER_MAX {
                let reason = format!("{}: not a number this store gives an index file", path.display());
                return Err(StoreError::DerivedDamaged(reason));
            }
            let opened = match storage.open(&path) {
                Err(err) if crate::io::is_empty_file(&err) => {
                    Err(StoreError::DerivedDamaged(format!("index file {} is empty", path.display())))
                }
                Err(err) => return Err(StoreError::io(format!("open {}", path.display()))(err)),
                Ok(file) => IndexFile::open(number, path.clone(), file),
            };
            // Files past the checkpoint's are gone (above); one it vouched for that is unreadable
            // is damage, and the store rebuilds the whole index.
            files.insert(number, opened?);
        }
        if let Some(mark) = repair_to
            && let Some(newest) = files.get_mut(&mark.file)
        {
            newest.cut_back(mark.count.min(newest.entries_max.saturating_sub(1)))?;
        }
        storage.sync_dir(dir).map_err(StoreError::io(format!("sync {}", dir.display())))?;
        Ok(Self { storage, dir: dir.to_path_buf(), slots, entries_max, state: Mutex::new(State { files }) })
    }

    /// Adds one key of the record at `offset`.
    pub(crate) fn put(&self, hash: u32, offset: u64, len: u32) -> Result<()> {
        let mut state = lock(&self.state);
        let needs_new = state.files.values().next_back().is_none_or(IndexFile::is_full);
        if needs_new {
            if let Some(full) = state.files.values_mut().next_back() {
                full.write_header()?;
                full.file.sync().map_err(StoreError::io(format!("sync {}", full.path.display())))?;
                full.dirty = false;
            }
            let number = state.files.keys().next_back().map_or(1, |n| n + 1);
            let created = self.create(number)?;
            state.files.insert(number, created);
        }
        match state.files.values_mut().next_back() {
            Some(newest) => newest.put(hash, offset, len),
            None => Err(StoreError::Inconsistent("no index file to write".into())),
        }
    }

    fn create(&self, number: u64) -> Result<IndexFile> {
        let path = self.dir.join(file_name(number));
        let len = IndexFile::file_bytes(self.slots, self.entries_max);
        let file = crate::io::create_durably(self.storage.as_ref(), &self.dir, &path, len, "index file")?;
        let index_file = IndexFile {
            number,
            path,
            file,
            slots: self.slots,
            entries_max: self.entries_max,
            count: 0,
            first_offset: 0,
            last_offset: 0,
            dirty: true,
        };
        index_file.write_header()?;
        Ok(index_file)
    }

    /// Writes the newest file's header and returns what it vouches for, with the file to sync before
    /// a checkpoint may rely on it (see `checkpointer`).
    pub(crate) fn mark(&self) -> Result<(IndexMark, Option<Arc<dyn StorageFile>>)> {
        let mut state = lock(&self.state);
        let Some(newest) = state.files.values_mut().next_back() else { return Ok((IndexMark::default(), None)) };
        if newest.dirty {
            newest.write_header()?;
            newest.dirty = false;
        }
        Ok((IndexMark { file: newest.number, count: newest.count }, Some(newest.file.clone())))
    }

    /// Syncs a file [`Index::mark`] returned, without holding the index's lock.
    pub(crate) fn sync_file(&self, file: &Arc<dyn StorageFile>, mark: IndexMark) -> Result<()> {
        file.sync().map_err(|e| StoreError::io(format!("sync index file {}", mark.file))(e))
    }

    /// Candidate records for `hash`, newest first.
    pub(crate) fn candidates(&self, hash: u32, max: usize) -> Vec<(u64, u32)> {
        let state = lock(&self.state);
        let mut out = Vec::new();
        for file in state.files.values().rev() {
            file.candidates(hash, max, &mut out);
            if out.len() >= max {
                break;
            }
        }
        out
    }

    /// Removes files whose records all lie below `log_min`, keeping the newest.
    pub(crate) fn remove_before(&self, log_min: u64) -> Result<()> {
        let mut state = lock(&self.state);
        let newest = state.files.keys().next_back().copied();
        let obsolete: Vec<u64> = state
            .files
            .values()
            .filter(|f| Some(f.number) != newest && f.last_offset < log_min)
            .map(|f| f.number)
            .collect();
        for number in obsolete {
            if let Some(file) = state.files.remove(&number) {
                self.storage
                    .remove_file(&file.path)
                    .map_err(StoreError::io(format!("remove {}", file.path.display())))?;
            }
        }
        Ok(())
    }
}
