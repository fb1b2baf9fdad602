//! The store's front door: open (with recovery), append, read, look up, close.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrymq_proto::properties::{self, KEY_SEPARATOR, KEYS, UNIQ_KEY};
use ferrymq_proto::record::{Entry, Verify};

use crate::checkpoint::Checkpoint;
use crate::checkpointer::{self, Checkpoints, Handoff};
use crate::clock::{Clock, SystemClock};
use crate::config::StoreConfig;
use crate::disk::OwnFiles;
use crate::dispatcher::{DispatchHook, Dispatcher};
use crate::error::{FatalCause, Result, StoreError};
use crate::flusher;
use crate::index::{Index, IndexMark, business_key_hash, message_id_hash};
use crate::io::{FsStorage, Storage};
use crate::log::{CommitLog, StoredRecord};
use crate::queue::{ConsumeQueues, QueueEntry};
use crate::retention::{RemovalHook, Retention};
use crate::shared::{FatalHook, Shared};
use crate::sync::{lock, read, write};
use crate::writer::{AppendDone, Appended, BatchDone, NewMessage, RawDone, Request, Writer};

/// Everything [`Store::open`] needs.
#[derive(Clone)]
pub struct StoreOptions {
    /// Data directory; holds `checkpoint`, `commitlog/`, `consumequeue/`, `index/`.
    pub dir: PathBuf,
    pub config: StoreConfig,
    pub storage: Arc<dyn Storage>,
    pub clock: Arc<dyn Clock>,
    /// Address recorded as the store host of every record.
    pub store_host: SocketAddr,
    /// Runs once if the store stops after a fatal I/O error.
    pub on_fatal: Option<FatalHook>,
    /// Runs after each dispatched batch for every queue that grew.
    pub on_dispatch: Option<DispatchHook>,
    /// Topics whose records disk pressure never deletes (they leave by age only), such as the
    /// broker's audit log.
    pub protected_topics: Vec<String>,
}

impl StoreOptions {
    /// Real files in `dir`, the system clock, default settings.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            config: StoreConfig::default(),
            storage: Arc::new(FsStorage),
            clock: Arc::new(SystemClock),
            store_host: SocketAddr::from(([127, 0, 0, 1], 0)),
            on_fatal: None,
            on_dispatch: None,
            protected_topics: Vec::new(),
        }
    }
}

/// A point-in-time view of the store's positions and health.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreStats {
    /// First commit-log offset still stored.
    pub min_offset: u64,
    /// End of the written log.
    pub written: u64,
    /// End of the durable log.
    pub flushed: u64,
    /// End of what consumers can read.
    pub visible: u64,
    /// End of what the queues and index cover.
    pub dispatched: u64,
    pub segments: usize,
    pub queues: usize,
    /// Appends are refused (or failing) for lack of disk; `disk_full_reason` says why.
    pub disk_full: bool,
    pub disk_full_reason: Option<String>,
    /// Bytes of the store's own files: log segments, consume queues, index, checkpoint.
    pub own_bytes: u64,
    /// What the store's own files may take (`disk_bytes_max`, or `disk_usage_max_ratio` of the file
    /// system), as of the last retention check.
    pub budget_bytes: u64,
    /// Segments deleted for disk pressure since the store opened.
    pub pressure_deleted_segments: u64,
    /// Why the store stopped, if it did.
    pub fatal: Option<String>,
    pub index_skipped: u64,
}

/// What [`Store::open`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The previous run closed cleanly, so nothing was scanned or repaired.
    pub clean: bool,
    /// Log bytes verified from the checkpoint to the end of the valid log.
    pub scanned_bytes: u64,
    /// End of the valid log.
    pub log_end: u64,
    /// Queues and index were rebuilt from this log offset on.
    pub rebuilt_from: u64,
}

/// Bounds of one consume queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueInfo {
    pub topic: String,
    pub queue_id: u32,
    pub min: u64,
    pub max: u64,
}

/// The commit-log store. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Store {
    shared: Arc<Shared>,
    queues: Arc<ConsumeQueues>,
    index: Arc<Index>,
    retention: Arc<Retention>,
    dispatched: Arc<AtomicU64>,
    index_skipped: Arc<AtomicU64>,
    recovery: RecoveryReport,
    sender: RwLock<Option<SyncSender<Request>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("stats", &self.stats()).finish()
    }
}

/// Opens the consume queues, cut back to what `vouched` covers, and the index, repaired to
/// `repair_index` (`None` after a clean shutdown).
fn open_derived(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    config: &StoreConfig,
    vouched: u64,
    repair_index: Option<IndexMark>,
) -> Result<(Arc<ConsumeQueues>, Arc<Index>)> {
    let queues = ConsumeQueues::open(storage.clone(), &dir.join("consumequeue"), config.queue_file_entries, vouched)?;
    let index =
        Index::open(storage.clone(), &dir.join("index"), config.index_slots, config.index_entries_max, repair_index)?;
    Ok((Arc::new(queues), Arc::new(index)))
}

/// Removes every consume-queue and index file (the directories stay; opening finds them empty).
fn remove_derived(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let list = |d: &Path| storage.list(d).map_err(StoreError::io(format!("list {}", d.display())));
    let remove = |path: &Path| storage.remove_file(path).map_err(StoreError::io(format!("remove {}", path.display())));
    let queues = dir.join("consumequeue");
    for topic in list(&queues)? {
        for queue in list(&queues.join(&topic))? {
            let qdir = queues.join(&topic).join(&queue);
            for name in list(&qdir)?.into_iter().filter(|n| crate::log::parse_file_name(n).is_some()) {
                remove(&qdir.join(name))?;
            }
            storage.sync_dir(&qdir).map_err(StoreError::io(format!("sync {}", qdir.display())))?;
        }
    }
    let index = dir.join("index");
    for name in list(&index)?.into_iter().filter(|n| crate::log::parse_file_name(n).is_some()) {
        remove(&index.join(name))?;
    }
    storage.sync_dir(&index).map_err(StoreError::io(format!("sync {}", index.display())))
}

/// Starts a store thread. A panic in it stops the store as a fatal error would: appends fail with
/// the panic's message, the other threads stop, and [`Store::close`] returns.
fn spawn(shared: &Arc<Shared>, name: &str, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    let shared = shared.clone();
    let thread = name.to_owned();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|m| (*m).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_owned());
                shared.set_fatal(FatalCause::Panic { thread, message });
            }
        })
        .map_err(StoreError::io(format!("start thread {name}")))
}

impl Store {
    /// Opens the store in `options.dir`, recovering from a crash if the last run did not close
    /// cleanly, and starts its threads.
    pub fn open(options: StoreOptions) -> Result<Self> {
        let StoreOptions { dir, config, storage, clock, store_host, on_fatal, on_dispatch, protected_topics } = options;
        config.validate().map_err(StoreError::InvalidConfig)?;
        storage.create_dir_all(&dir).map_err(StoreError::io(format!("create {}", dir.display())))?;
        // Every file goes through this layer, which counts the store's own usage.
        let own = Arc::new(OwnFiles::new(storage));
        let storage: Arc<dyn Storage> = own.clone();
        let started = Instant::now();

        let (checkpoint, mark) = Checkpoint::open(storage.as_ref(), &dir)?;
        let log = CommitLog::open(storage.clone(), &dir.join("commitlog"), config.segment_bytes)?;
        let log_min = log.min_offset();
        let files_end = log.segments().last().map_or(log_min, |segment| segment.end());
        // A mark past the log's files vouches for what is not there (the log was replaced or cut
        // behind the checkpoint's back): recovery then trusts nothing and starts from the log.
        let mark = mark.filter(|m| {
            let fits = m.log_flushed <= files_end && m.dispatched <= files_end;
            if !fits {
                tracing::warn!(
                    log_flushed = m.log_flushed,
                    dispatched = m.dispatched,
                    log_end = files_end,
                    "the checkpoint names positions past the log's files; ignoring it and scanning the whole log"
                );
            }
            fits
        });
        let clean = mark.is_some_and(|m| m.clean);
        let (scan_from, dispatched_mark) = match mark {
            Some(m) if m.clean => (m.log_flushed, m.dispatched),
            Some(m) => (m.log_flushed.min(m.dispatched), m.dispatched),
            None => (log_min, log_min),
        };
        let end = log.recover_tail(scan_from, !clean)?;
        // A disk or a budget that cannot hold one segment is refused now rather than failing every
        // send later.
        let space = storage.space(&dir).map_err(StoreError::io(format!("read disk space of {}", dir.display())))?;
        if log.segment_at(end).is_none() && space.available_bytes < config.segment_bytes {
            // The next append must create a segment.
            let (available_bytes, segment_bytes) = (space.available_bytes, config.segment_bytes);
            return Err(StoreError::NoRoomForSegment { dir, available_bytes, segment_bytes });
        }
        let budget_bytes = crate::disk::budget_bytes(&config, space);
        if budget_bytes < config.segment_bytes {
            let (total_bytes, segment_bytes) = (space.total_bytes, config.segment_bytes);
            return Err(StoreError::BudgetBelowSegment { dir, budget_bytes, total_bytes, segment_bytes });
        }
        if let Some(m) = mark
            && end < m.log_flushed
        {
            tracing::error!(
                flushed = m.log_flushed,
                valid_to = end,
                "the log was durable further than its valid records reach: media corruption lost data"
            );
        }
        // Queue entries are trusted only when they were durable at the checkpoint and point at records
        // that survived.
        let mut vouched = dispatched_mark.min(end).max(log_min);
        let repair_index = if clean { None } else { Some(mark.map(|m| m.index).unwrap_or_default()) };
        let (queues, index) = match open_derived(&storage, &dir, &config, vouched, repair_index) {
            Err(StoreError::DerivedDamaged(reason)) => {
                // Both are derived from the log: rebuilt whole, they are exactly what they were.
                tracing::warn!(%reason, from = log_min, "rebuilding the consume queues and the index from the log");
                remove_derived(storage.as_ref(), &dir)?;
                vouched = log_min;
                open_derived(&storage, &dir, &config, vouched, Some(IndexMark::default()))?
            }
            opened => opened?,
        };
        for cq in queues.all() {
            cq.trim_to(log_min)?;
        }

        let shared = Arc::new(Shared::new(config, log, own, clock, store_host, on_fatal));
        let dispatched = Arc::new(AtomicU64::new(vouched));
        let recovery_floor = Arc::new(AtomicU64::new(scan_from.min(vouched)));
        let index_skipped = Arc::new(AtomicU64::new(0));
        let checkpoints = Arc::new(Checkpoints::new(checkpoint, queues.clone(), index.clone(), recovery_floor.clone()));
        let mut dispatcher = Dispatcher::new(
            shared.clone(),
            queues.clone(),
            index.clone(),
            checkpoints.clone(),
            dispatched.clone(),
            index_skipped.clone(),
            on_dispatch,
        );
        while dispatched.load(Ordering::Acquire) < end {
            dispatcher.dispatch_batch(end)?;
        }
        dispatcher.trust_appended();
        dispatcher.checkpoint(false)?;
        let recovery = RecoveryReport {
            clean,
            scanned_bytes: if clean { 0 } else { end.saturating_sub(scan_from.max(log_min)) },
            log_end: end,
            rebuilt_from: vouched,
        };
        tracing::info!(dir = %dir.display(), ?recovery, ms = started.elapsed().as_millis() as u64, "store opened");

        let retention =
            Arc::new(Retention::new(shared.clone(), queues.clone(), index.clone(), recovery_floor, protected_topics));
        // Whether the disk counts as full is known before the first append.
        if let Err(err) = retention.check(retention.floor()) {
            tracing::warn!(%err, "retention check at open failed; the retention thread retries");
        }

        let (warm, warm_requests) = crate::warmer::Warm::new(shared.config.warm_ahead_bytes);
        let writer = Writer::new(shared.clone(), queues.next_offsets(), warm);
        let (sender, requests) = sync_channel(shared.config.append_queue_max);
        let retention_thread = retention.clone();
        let flusher_shared = shared.clone();
        let (handoff, snapshots) = Handoff::new();
        dispatcher.checkpoint_in_background(handoff);
        let checkpointer_shared = shared.clone();
        let mut threads = vec![
            spawn(&shared, "ferrymq-writer", move || writer.run(requests))?,
            spawn(&shared, "ferrymq-flusher", move || flusher::run(flusher_shared))?,
            spawn(&shared, "ferrymq-dispatch", move || dispatcher.run())?,
            spawn(&shared, "ferrymq-checkpoint", move || {
                checkpointer::run(checkpoints, checkpointer_shared, snapshots)
            })?,
            spawn(&shared, "ferrymq-retention", move || retention_thread.run())?,
        ];
        if let Some(warm_requests) = warm_requests {
            threads.push(spawn(&shared, "ferrymq-warmer", move || crate::warmer::run(warm_requests))?);
        }
        Ok(Self {
            shared,
            queues,
            index,
            retention,
            dispatched,
            index_skipped,
            recovery,
            sender: RwLock::new(Some(sender)),
            threads: Mutex::new(threads),
        })
    }

    /// Appends a message; `done` runs once, on a store thread, when it is acknowledged (per the flush
    /// mode) or has failed. Blocks while the append queue is full.
    pub fn append(&self, message: NewMessage, done: AppendDone) {
        self.submit(Request::Append(message, done));
    }

    /// Appends `messages` atomically: after a crash, recovery finds all of them or none. They must fit in
    /// one segment together. `done` runs once, like [`Store::append`]'s.
    pub fn append_batch(&self, messages: Vec<NewMessage>, done: BatchDone) {
        self.submit(Request::Batch(messages, done));
    }

    /// [`Store::append_batch`], waiting for the outcome.
    pub fn append_batch_wait(&self, messages: Vec<NewMessage>) -> Result<Vec<Appended>> {
        let (tx, rx) = sync_channel(1);
        self.append_batch(
            messages,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        rx.recv().unwrap_or(Err(StoreError::Closed))
    }

    /// Appends and waits for the acknowledgement.
    pub fn append_wait(&self, message: NewMessage) -> Result<Appended> {
        let (tx, rx) = sync_channel(1);
        self.append(
            message,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        rx.recv().unwrap_or(Err(StoreError::Closed))
    }

    /// Appends a master's log bytes verbatim at `offset` (replication); `done` gets the new log end.
    pub fn append_raw(&self, offset: u64, bytes: Vec<u8>, done: RawDone) {
        self.submit(Request::Raw { offset, bytes, done });
    }

    /// [`Store::append_raw`], waiting for the outcome.
    pub fn append_raw_wait(&self, offset: u64, bytes: Vec<u8>) -> Result<u64> {
        let (tx, rx) = sync_channel(1);
        self.append_raw(
            offset,
            bytes,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        rx.recv().unwrap_or(Err(StoreError::Closed))
    }

    fn submit(&self, request: Request) {
        let sender = read(&self.sender);
        match sender.as_ref() {
            Some(sender) => {
                if let Err(returned) = sender.send(request) {
                    returned.0.fail(StoreError::Closed);
                }
            }
            None => request.fail(StoreError::Closed),
        }
    }

    /// Makes the store a replica (only [`Store::append_raw`] is taken; every other append fails with
    /// [`StoreError::ReadOnly`]) or a writable store again.
    pub fn set_read_only(&self, read_only: bool) {
        self.shared.read_only.store(read_only, Ordering::Release);
    }

    pub fn is_read_only(&self) -> bool {
        self.shared.read_only.load(Ordering::Acquire)
    }

    /// Waits until readable log bytes reach past `offset` (see [`Store::read_raw`]), or `timeout`
    /// passes, or the store stops; returns whether there is something past `offset`.
    pub fn wait_visible_past(&self, offset: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let event = self.shared.visible_event();
        loop {
            let seen = event.generation();
            if self.shared.visible() > offset {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || self.shared.fatal().is_some() || self.shared.is_closing() {
                return false;
            }
            event.wait(seen, deadline - now);
        }
    }

    /// Where the last `max_bytes` (at most) of the log before `end` start, within `end`'s segment, and
    /// their CRC32C: a replica's fingerprint of its log end, which its master checks against its own
    /// bytes. `None` for an empty log.
    pub fn tail_digest(&self, end: u64, max_bytes: u64) -> Result<Option<(u64, u32)>> {
        if end <= self.shared.log.min_offset() {
            return Ok(None);
        }
        let out_of_range = || StoreError::OffsetOutOfRange {
            offset: end,
            min: self.shared.log.min_offset(),
            max: self.shared.log.written(),
        };
        let segment = self.shared.log.segment_at(end - 1).ok_or_else(out_of_range)?;
        let start = end.saturating_sub(max_bytes).max(segment.base);
        self.digest(start, end).map(|crc| Some((start, crc)))
    }

    /// The CRC32C of the log bytes `[start, end)`, which must lie in one segment, below `written`.
    pub fn digest(&self, start: u64, end: u64) -> Result<u32> {
        let written = self.shared.log.written();
        let out_of_range =
            || StoreError::OffsetOutOfRange { offset: start, min: self.shared.log.min_offset(), max: written };
        if start > end || end > written {
            return Err(out_of_range());
        }
        let segment = self.shared.log.segment_at(start).ok_or_else(out_of_range)?;
        if end > segment.end() {
            return Err(out_of_range());
        }
        // SAFETY: the range is below `written` (see the writer's invariant).
        let bytes = unsafe { segment.slice(start, (end - start) as usize) };
        Ok(crc32c::crc32c(bytes))
    }

    /// Whole log entries from `offset`, up to about `max_bytes` (at least one entry), for a slave to
    /// append with [`Store::append_raw`]. Only visible (durable per the flush mode) bytes are served.
    pub fn read_raw(&self, offset: u64, max_bytes: usize) -> Result<Vec<u8>> {
        self.read_raw_chunk(offset, max_bytes).map(|(bytes, _)| bytes)
    }

    /// [`Store::read_raw`], with the offset the next chunk starts at (past a segment's filler, the
    /// next segment's start).
    pub fn read_raw_chunk(&self, offset: u64, max_bytes: usize) -> Result<(Vec<u8>, u64)> {
        let visible = self.shared.visible();
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < visible && (out.is_empty() || out.len() < max_bytes) {
            let (segment, len, filler) = self.shared.log.entry_len_at(pos)?;
            if filler {
                if len < ferrymq_proto::record::FILLER_BYTES_MIN {
                    // A segment cut short holds no filler a replica could append (see
                    // `Writer::write_filler`); the replica's segment would end elsewhere.
                    if !out.is_empty() {
                        break;
                    }
                    return Err(StoreError::Inconsistent(format!(
                        "log segment {} ends {len} bytes after offset {pos}, too few for the filler a replica \
                         needs to follow it; the file was cut short",
                        segment.path.display()
                    )));
                }
                // SAFETY: below `written`.
                out.extend_from_slice(unsafe { segment.slice(pos, ferrymq_proto::record::FILLER_BYTES_MIN) });
                pos = segment.end();
                break;
            }
            if !out.is_empty() && out.len() + len > max_bytes {
                break;
            }
            // SAFETY: below `written`.
            out.extend_from_slice(unsafe { segment.slice(pos, len) });
            pos += len as u64;
        }
        if out.is_empty() && offset > visible {
            return Err(StoreError::OffsetOutOfRange { offset, min: self.shared.log.min_offset(), max: visible });
        }
        Ok((out, pos))
    }

    /// The record at `offset` of `len` bytes (as given by a queue entry or an index hit).
    pub fn record(&self, offset: u64, len: u32) -> Result<StoredRecord> {
        let visible = self.shared.visible();
        if offset.saturating_add(u64::from(len)) > visible {
            return Err(StoreError::OffsetOutOfRange { offset, min: self.shared.log.min_offset(), max: visible });
        }
        self.shared.log.record(offset, len as usize)
    }

    /// `(min, max)` queue offsets of a queue: entries `min..max` are readable.
    pub fn queue_bounds(&self, topic: &str, queue_id: u32) -> Option<(u64, u64)> {
        let cq = self.queues.get(topic, queue_id)?;
        Some((cq.min(), cq.max()))
    }

    /// Up to `max_count` entries of a queue from `from`.
    pub fn read_queue(&self, topic: &str, queue_id: u32, from: u64, max_count: usize) -> Vec<QueueEntry> {
        self.queues.get(topic, queue_id).map(|cq| cq.read(from, max_count)).unwrap_or_default()
    }

    /// Every queue with its bounds.
    pub fn queues(&self) -> Vec<QueueInfo> {
        let mut out: Vec<QueueInfo> = self
            .queues
            .all()
            .into_iter()
            .map(|cq| QueueInfo { topic: cq.topic.clone(), queue_id: cq.queue_id, min: cq.min(), max: cq.max() })
            .collect();
        out.sort_by(|a, b| (&a.topic, a.queue_id).cmp(&(&b.topic, b.queue_id)));
        out
    }

    /// Records of `topic` carrying business key `key`, newest first.
    pub fn lookup_key(&self, topic: &str, key: &str, max: usize) -> Vec<StoredRecord> {
        self.lookup(business_key_hash(topic, key), max, |rec| {
            rec.topic == topic
                && properties::get(rec.properties, KEYS).is_some_and(|keys| keys.split(KEY_SEPARATOR).any(|k| k == key))
        })
    }

    /// Records with message id `id`, newest first (more than one only if a producer reused an id).
    pub fn lookup_message_id(&self, id: &str, max: usize) -> Vec<StoredRecord> {
        self.lookup(message_id_hash(id), max, |rec| properties::get(rec.properties, UNIQ_KEY) == Some(id))
    }

    fn lookup(
        &self,
        hash: u32,
        max: usize,
        matches: impl Fn(&ferrymq_proto::RecordRef<'_>) -> bool,
    ) -> Vec<StoredRecord> {
        let mut out: Vec<StoredRecord> = Vec::new();
        // Ask for extra candidates: collisions and stale entries are filtered below.
        for (offset, len) in self.index.candidates(hash, max.saturating_mul(4).max(16)) {
            if out.len() >= max || out.iter().any(|r| r.offset() == offset) {
                continue;
            }
            let Ok(stored) = self.record(offset, len) else { continue };
            let keep = matches!(ferrymq_proto::record::decode(stored.bytes(), offset, Verify::Full),
                Ok(Entry::Record { record, .. }) if matches(&record));
            if keep {
                out.push(stored);
            }
        }
        out
    }

    /// Waits until every record below `offset` is in the queues and index, or `timeout` passes;
    /// returns whether it happened.
    pub fn wait_dispatched(&self, offset: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.shared.dispatched.generation();
            if self.dispatched.load(Ordering::Acquire) >= offset {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || self.shared.fatal().is_some() {
                return false;
            }
            self.shared.dispatched.wait(seen, deadline - now);
        }
    }

    /// End of the written log; [`Store::stats`] without gathering the rest (for per-frame use).
    pub fn log_end(&self) -> u64 {
        self.shared.log.written()
    }

    /// Whether an append could be stored now: the disk is not full and no fatal error stopped the
    /// store ([`Store::stats`] without gathering the rest).
    pub fn accepts_appends(&self) -> bool {
        !self.shared.disk.is_full() && self.shared.fatal().is_none()
    }

    /// Calls `hook` after every segment retention deletes, on the retention thread, with the
    /// commit-log range and what each queue lost; `None` removes it.
    pub fn set_removal_hook(&self, hook: Option<RemovalHook>) {
        self.retention.set_hook(hook);
    }

    pub fn stats(&self) -> StoreStats {
        let log = &self.shared.log;
        StoreStats {
            min_offset: log.min_offset(),
            written: log.written(),
            flushed: log.flushed(),
            visible: self.shared.visible(),
            dispatched: self.dispatched.load(Ordering::Acquire),
            segments: log.segments().len(),
            queues: self.queues.all().len(),
            disk_full: self.shared.disk.is_full(),
            disk_full_reason: self.shared.disk.reason().map(|reason| reason.to_string()),
            own_bytes: self.shared.own.bytes(),
            budget_bytes: self.shared.disk.budget_bytes(),
            pressure_deleted_segments: self.retention.pressure_deleted(),
            fatal: self.shared.fatal().map(|cause| cause.to_string()),
            index_skipped: self.index_skipped.load(Ordering::Relaxed),
        }
    }

    /// What opening the store found and did.
    pub fn recovery(&self) -> RecoveryReport {
        self.recovery
    }

    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// Stops accepting appends, flushes everything, writes a clean checkpoint and stops the threads.
    /// Appends already queued complete first. Idempotent.
    pub fn close(&self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.stop.notify();
        self.shared.retention_request.notify();
        drop(write(&self.sender).take());
        let threads = std::mem::take(&mut *lock(&self.threads));
        for thread in threads {
            let name = thread.thread().name().unwrap_or("store thread").to_owned();
            if thread.join().is_err() {
                tracing::error!(thread = %name, "store thread panicked");
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

impl Store {
    /// Runs retention once, now (for tests and for an operator's "clean up now"): keeps the log from
    /// what is dispatched and flushed on, rather than from the last checkpoint.
    pub fn run_retention(&self) -> Result<()> {
        self.retention.check(self.dispatched.load(Ordering::Acquire).min(self.shared.log.flushed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{Checkpoint, Mark};

    fn message(body: &[u8]) -> NewMessage {
        NewMessage {
            topic: "t".into(),
            queue_id: 0,
            flag: 0,
            sys_flag: 0,
            born_timestamp_ms: 1_764_000_000_000,
            born_host: SocketAddr::from(([127, 0, 0, 1], 5000)),
            reconsume_times: 0,
            prepared_tx_offset: 0,
            properties: Vec::new(),
            body: body.to_vec(),
        }
    }

    fn options(dir: &std::path::Path) -> StoreOptions {
        let config = StoreConfig {
            segment_bytes: 64 << 10,
            record_bytes_max: 16 << 10,
            index_slots: 101,
            index_entries_max: 256,
            ..StoreConfig::default()
        };
        StoreOptions { config, ..StoreOptions::new(dir) }
    }

    #[test]
    fn a_checkpoint_past_the_log_is_ignored_and_the_log_goes_on_where_it_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let end = {
            let store = Store::open(options(dir.path())).expect("open");
            for i in 0..3u8 {
                store.append_wait(message(&[i; 100])).expect("append");
            }
            store.close();
            store.log_end()
        };
        // A checksummed mark that vouches for a log far longer than the files hold.
        let (mut checkpoint, _) = Checkpoint::open(&FsStorage, dir.path()).expect("checkpoint");
        let far = 10 << 20;
        checkpoint.write(&Mark { log_flushed: far, dispatched: far, clean: true, ..Mark::default() }).expect("write");
        drop(checkpoint);

        let store = Store::open(options(dir.path())).expect("open past a bad checkpoint");
        assert_eq!(store.log_end(), end);
        assert_eq!(store.queue_bounds("t", 0), Some((0, 3)));
        let next = store.append_wait(message(b"next")).expect("append");
        assert_eq!((next.offset, next.queue_offset), (end, 3));
        store.close();
        let again = Store::open(options(dir.path())).expect("and it opens again");
        assert_eq!(again.queue_bounds("t", 0), Some((0, 4)));
    }
}
