//! Consume queues: for each (topic, queue id), a run of files of fixed 20-byte entries that point into
//! the commit log.
//!
//! Entry `n` of a queue is the `n`-th message of that queue: commit-log offset (u64), record size
//! (u32) and tag hash (i64), big-endian. Files are named by the queue offset of their first entry.
//! Only the dispatcher writes, always at or past the published end, so readers may borrow everything
//! below it. Queues are derived data: recovery cuts them back to what the last checkpoint vouched for
//! and the dispatcher rebuilds the rest from the log.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::error::{Result, StoreError};
use crate::io::{Storage, StorageFile};
use crate::log::{file_name, parse_file_name};
use crate::sync::{lock, read, write};

/// Bytes of one consume-queue entry.
pub const ENTRY_BYTES: u64 = 20;

/// One consume-queue entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueEntry {
    /// Position of the entry in its queue.
    pub queue_offset: u64,
    /// Commit-log offset of the record.
    pub offset: u64,
    pub len: u32,
    /// Java `String.hashCode` of the tag (0 when untagged).
    pub tag_hash: i64,
}

fn encode_entry(offset: u64, len: u32, tag_hash: i64) -> [u8; ENTRY_BYTES as usize] {
    let mut out = [0; ENTRY_BYTES as usize];
    out[..8].copy_from_slice(&offset.to_be_bytes());
    out[8..12].copy_from_slice(&len.to_be_bytes());
    out[12..].copy_from_slice(&tag_hash.to_be_bytes());
    out
}

fn decode_entry(bytes: &[u8], queue_offset: u64) -> Option<QueueEntry> {
    let offset = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let len = u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
    let tag_hash = i64::from_be_bytes(bytes.get(12..20)?.try_into().ok()?);
    Some(QueueEntry { queue_offset, offset, len, tag_hash })
}

#[derive(Debug)]
pub(crate) struct ConsumeQueue {
    pub(crate) topic: String,
    pub(crate) queue_id: u32,
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    entries_per_file: u64,
    files: RwLock<BTreeMap<u64, Arc<dyn StorageFile>>>,
    /// First readable queue offset.
    min: AtomicU64,
    /// One past the last readable queue offset (published by the dispatcher).
    max: AtomicU64,
    /// Entries written but not yet published; dispatcher only.
    pending_max: AtomicU64,
    /// Files written since the last sync.
    dirty: Mutex<BTreeSet<u64>>,
}

impl ConsumeQueue {
    fn new(storage: Arc<dyn Storage>, dir: PathBuf, topic: String, queue_id: u32, entries_per_file: u64) -> Self {
        Self {
            topic,
            queue_id,
            dir,
            storage,
            entries_per_file,
            files: RwLock::new(BTreeMap::new()),
            min: AtomicU64::new(0),
            max: AtomicU64::new(0),
            pending_max: AtomicU64::new(0),
            dirty: Mutex::new(BTreeSet::new()),
        }
    }

    pub(crate) fn min(&self) -> u64 {
        self.min.load(Ordering::Acquire)
    }

    pub(crate) fn max(&self) -> u64 {
        self.max.load(Ordering::Acquire)
    }

    fn file_bytes(&self) -> u64 {
        self.entries_per_file * ENTRY_BYTES
    }

    fn file_for(&self, queue_offset: u64) -> Option<(u64, Arc<dyn StorageFile>)> {
        let files = read(&self.files);
        let (&base, file) = files.range(..=queue_offset).next_back()?;
        (queue_offset < base + self.entries_per_file).then(|| (base, file.clone()))
    }

    /// Reads one entry without checking it against `max`: for recovery, for the dispatcher (the only
    /// writer), and for entries known to be below `max`.
    fn entry_unpublished(&self, queue_offset: u64) -> Option<QueueEntry> {
        let (base, file) = self.file_for(queue_offset)?;
        // SAFETY: called by the dispatcher thread (the only writer) or during recovery.
        let bytes = unsafe { file.bytes((queue_offset - base) * ENTRY_BYTES, ENTRY_BYTES as usize) };
        decode_entry(bytes, queue_offset)
    }

    /// Up to `max_count` entries from `from`, within the readable range.
    pub(crate) fn read(&self, from: u64, max_count: usize) -> Vec<QueueEntry> {
        let (min, max) = (self.min(), self.max());
        let mut out = Vec::new();
        let mut at = from.max(min);
        while at < max && out.len() < max_count {
            let Some((base, file)) = self.file_for(at) else { break };
            let end = max.min(base + self.entries_per_file).min(at + (max_count - out.len()) as u64);
            let n = (end - at) as usize;
            // SAFETY: entries below the published `max` are never written again.
            let bytes = unsafe { file.bytes((at - base) * ENTRY_BYTES, n * ENTRY_BYTES as usize) };
            for (i, chunk) in bytes.chunks_exact(ENTRY_BYTES as usize).enumerate() {
                if let Some(entry) = decode_entry(chunk, at + i as u64) {
                    out.push(entry);
                }
            }
            at = end;
        }
        out
    }

    /// Writes the entry at `queue_offset` (dispatcher only); visible after [`ConsumeQueue::publish`].
    pub(crate) fn put(&self, queue_offset: u64, offset: u64, len: u32, tag_hash: i64) -> Result<()> {
        let pending = self.pending_max.load(Ordering::Relaxed);
        if queue_offset > pending {
            if read(&self.files).is_empty() {
                // A queue whose older files are gone starts where its log records start.
                self.min.store(queue_offset, Ordering::Release);
                self.max.store(queue_offset, Ordering::Release);
            } else {
                tracing::warn!(topic = %self.topic, queue = self.queue_id, expected = pending, got = queue_offset,
                    "consume queue has a gap");
            }
        }
        let (base, file) = match self.file_for(queue_offset) {
            Some(found) => found,
            None => self.create_file(queue_offset - queue_offset % self.entries_per_file)?,
        };
        file.write((queue_offset - base) * ENTRY_BYTES, &encode_entry(offset, len, tag_hash))
            .map_err(|e| StoreError::io(format!("write consume queue {}", self.dir.display()))(e))?;
        lock(&self.dirty).insert(base);
        self.pending_max.fetch_max(queue_offset + 1, Ordering::Relaxed);
        Ok(())
    }

    /// Makes written entries readable.
    pub(crate) fn publish(&self) {
        self.max.store(self.pending_max.load(Ordering::Relaxed), Ordering::Release);
    }

    fn create_file(&self, base: u64) -> Result<(u64, Arc<dyn StorageFile>)> {
        let path = self.dir.join(file_name(base));
        let file = crate::io::create_durably(
            self.storage.as_ref(),
            &self.dir,
            &path,
            self.file_bytes(),
            "consume queue file",
        )?;
        write(&self.files).insert(base, file.clone());
        Ok((base, file))
    }

    /// Flushes every file written since the last call.
    pub(crate) fn sync(&self) -> Result<()> {
        let dirty = std::mem::take(&mut *lock(&self.dirty));
        let files = read(&self.files);
        for base in dirty {
            if let Some(file) = files.get(&base) {
                file.sync().map_err(StoreError::io(format!("sync consume queue {}", self.dir.display())))?;
            }
        }
        Ok(())
    }

    /// Cuts the queue back to the entries the checkpoint vouched for: those that point below
    /// `dispatched`. Everything after them is zeroed or removed; the dispatcher rewrites it.
    fn repair(&self, dispatched: u64) -> Result<()> {
        let vouched = |q: u64| self.entry_unpublished(q).is_some_and(|e| e.len > 0 && e.offset < dispatched);
        let (first, last) = {
            let files = read(&self.files);
            match (files.keys().next(), files.keys().next_back()) {
                (Some(&first), Some(&last)) => (first, last + self.entries_per_file),
                _ => return Ok(()),
            }
        };
        // Entries written before the checkpoint are all vouched for and come first; binary search for
        // the first entry that is not.
        let (mut lo, mut hi) = (first, last);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if vouched(mid) { lo = mid + 1 } else { hi = mid }
        }
        let end = lo;
        // Files are named by multiples of `entries_per_file`; every file after the one that would hold
        // `end` goes.
        let keep_last = end - end % self.entries_per_file;
        let later: Vec<u64> = read(&self.files).range(keep_last + 1..).map(|(&b, _)| b).collect();
        for base in later {
            let path = self.dir.join(file_name(base));
            write(&self.files).remove(&base);
            self.storage.remove_file(&path).map_err(StoreError::io(format!("remove {}", path.display())))?;
        }
        if let Some((base, file)) = self.file_for(end) {
            let from = (end - base) * ENTRY_BYTES;
            file.zero(from, self.file_bytes() - from)
                .and_then(|()| file.sync())
                .map_err(StoreError::io(format!("repair consume queue {}", self.dir.display())))?;
        }
        self.storage.sync_dir(&self.dir).map_err(StoreError::io(format!("sync {}", self.dir.display())))?;
        let min = read(&self.files).keys().next().copied().unwrap_or(end).min(end);
        self.min.store(min, Ordering::Release);
        self.max.store(end, Ordering::Release);
        self.pending_max.store(end, Ordering::Relaxed);
        Ok(())
    }

    /// The first readable queue offset whose entry points at or above the log offset `log_offset`
    /// (`max` when none does): entries point into the log in order, so this is a binary search.
    fn first_at_or_above(&self, log_offset: u64) -> u64 {
        let below = |q: u64| self.entry_unpublished(q).is_none_or(|e| e.offset < log_offset);
        let (mut lo, mut hi) = (self.min(), self.max());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if below(mid) { lo = mid + 1 } else { hi = mid }
        }
        lo
    }

    /// Whether a readable entry of this queue points into the log range `[from, to)`.
    pub(crate) fn points_into(&self, from: u64, to: u64) -> bool {
        let at = self.first_at_or_above(from);
        at < self.max() && self.entry_unpublished(at).is_some_and(|e| e.offset < to)
    }

    /// Forgets entries that point below `log_min` (their records were deleted): moves `min` to the
    /// first entry at or above it and removes files holding only older entries, keeping the newest.
    pub(crate) fn trim_to(&self, log_min: u64) -> Result<()> {
        self.min.fetch_max(self.first_at_or_above(log_min), Ordering::AcqRel);
        loop {
            let (base, next_base) = {
                let files = read(&self.files);
                let mut keys = files.keys();
                match (keys.next(), keys.next()) {
                    (Some(&base), Some(&next)) => (base, next),
                    _ => return Ok(()),
                }
            };
            if next_base > self.min() {
                return Ok(());
            }
            write(&self.files).remove(&base);
            let path = self.dir.join(file_name(base));
            self.storage.remove_file(&path).map_err(StoreError::io(format!("remove {}", path.display())))?;
        }
    }
}

/// Every consume queue of the store.
#[derive(Debug)]
pub(crate) struct ConsumeQueues {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    entries_per_file: u64,
    queues: RwLock<HashMap<String, HashMap<u32, Arc<ConsumeQueue>>>>,
}

impl ConsumeQueues {
    /// Opens every queue under `dir` and cuts it back to what `dispatched` vouches for. A file the
    /// store would not have written is [`StoreError::DerivedDamaged`].
    pub(crate) fn open(storage: Arc<dyn Storage>, dir: &Path, entries_per_file: u32, dispatched: u64) -> Result<Self> {
        storage.create_dir_all(dir).map_err(StoreError::io(format!("create {}", dir.display())))?;
        let this = Self {
            storage: storage.clone(),
            dir: dir.to_path_buf(),
            entries_per_file: u64::from(entries_per_file),
            queues: RwLock::new(HashMap::new()),
        };
        let list = |d: &Path| storage.list(d).map_err(StoreError::io(format!("list {}", d.display())));
        for topic in list(dir)? {
            if crate::writer::validate_topic(&topic).is_err() {
                tracing::warn!(entry = %topic, "ignoring a consume-queue directory that is not a topic");
                continue;
            }
            for queue in list(&dir.join(&topic))? {
                let Ok(queue_id) = queue.parse::<u32>() else { continue };
                let qdir = dir.join(&topic).join(&queue);
                let cq =
                    ConsumeQueue::new(storage.clone(), qdir.clone(), topic.clone(), queue_id, this.entries_per_file);
                for name in list(&qdir)? {
                    let Some(base) = parse_file_name(&name) else { continue };
                    let path = qdir.join(&name);
                    let damaged = |what: String| Err(StoreError::DerivedDamaged(format!("{}: {what}", path.display())));
                    if base % cq.entries_per_file != 0 || base > crate::bounds::QUEUE_OFFSET_MAX {
                        return damaged(format!(
                            "not a name this store gives a consume-queue file of {} entries",
                            cq.entries_per_file
                        ));
                    }
                    let file = match storage.open(&path) {
                        Ok(file) => file,
                        Err(err) if crate::io::is_empty_file(&err) => return damaged("empty".into()),
                        Err(err) => return Err(StoreError::io(format!("open {}", path.display()))(err)),
                    };
                    if file.len() != cq.file_bytes() {
                        return damaged(format!(
                            "{} bytes where {} are expected (queue_file_entries changed?)",
                            file.len(),
                            cq.file_bytes()
                        ));
                    }
                    write(&cq.files).insert(base, file);
                }
                cq.repair(dispatched)?;
                write(&this.queues).entry(topic.clone()).or_default().insert(queue_id, Arc::new(cq));
            }
        }
        Ok(this)
    }

    pub(crate) fn get(&self, topic: &str, queue_id: u32) -> Option<Arc<ConsumeQueue>> {
        read(&self.queues).get(topic)?.get(&queue_id).cloned()
    }

    pub(crate) fn get_or_create(&self, topic: &str, queue_id: u32) -> Result<Arc<ConsumeQueue>> {
        if let Some(cq) = self.get(topic, queue_id) {
            return Ok(cq);
        }
        let topic_dir = self.dir.join(topic);
        let qdir = topic_dir.join(queue_id.to_string());
        self.storage.create_dir_all(&qdir).map_err(StoreError::io(format!("create {}", qdir.display())))?;
        for d in [&topic_dir, &self.dir] {
            self.storage.sync_dir(d).map_err(StoreError::io(format!("sync {}", d.display())))?;
        }
        let cq =
            Arc::new(ConsumeQueue::new(self.storage.clone(), qdir, topic.to_owned(), queue_id, self.entries_per_file));
        let mut queues = write(&self.queues);
        let slot = queues.entry(topic.to_owned()).or_default().entry(queue_id).or_insert(cq);
        Ok(slot.clone())
    }

    /// Every queue of `topic`.
    pub(crate) fn of_topic(&self, topic: &str) -> Vec<Arc<ConsumeQueue>> {
        read(&self.queues).get(topic).map(|q| q.values().cloned().collect()).unwrap_or_default()
    }

    pub(crate) fn all(&self) -> Vec<Arc<ConsumeQueue>> {
        read(&self.queues).values().flat_map(|q| q.values().cloned()).collect()
    }

    /// Next queue offset of every queue, for the writer.
    pub(crate) fn next_offsets(&self) -> HashMap<String, HashMap<u32, u64>> {
        read(&self.queues)
            .iter()
            .map(|(topic, queues)| (topic.clone(), queues.iter().map(|(&q, cq)| (q, cq.max())).collect()))
            .collect()
    }
}
