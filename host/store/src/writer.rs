//! The single log writer: assigns offsets, encodes records into the active segment, and hands each
//! acknowledgement to the caller (async flush) or to the flusher (sync flush).
//!
//! Requests arrive through a bounded queue. The writer takes every request already waiting (up to
//! `write_batch_bytes_max`), encodes them into one buffer, copies it into the segment with one write,
//! and publishes the new end. Under sync flush, all records of a batch, and of every batch written while
//! a flush is under way, share the next flush: that is the group commit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;

use ferrymq_proto::record::{self, Entry, FILLER_BYTES_MIN, RecordMeta, Verify, sys_flag};

use crate::config::FlushMode;
use crate::error::{FatalCause, Result, StoreError};
use crate::log::Segment;
use crate::shared::Shared;
use crate::warmer::Warm;
use ferrymq_proto::throttle::Throttle;

/// Longest topic name (RocketMQ's rule, shared with everything that names a topic; the allowed
/// characters also keep topic names safe as directory names).
pub const TOPIC_BYTES_MAX: usize = ferrymq_proto::name::TOPIC_BYTES_MAX;

/// A message to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    pub topic: String,
    pub queue_id: u32,
    pub flag: u32,
    pub sys_flag: u32,
    pub born_timestamp_ms: i64,
    pub born_host: SocketAddr,
    pub reconsume_times: u32,
    pub prepared_tx_offset: u64,
    /// Encoded properties (see `ferrymq_proto::properties`).
    pub properties: Vec<u8>,
    pub body: Vec<u8>,
}

/// Where an appended message was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Commit-log offset of the record.
    pub offset: u64,
    /// Encoded size of the record.
    pub len: u32,
    /// Position in its consume queue.
    pub queue_offset: u64,
    pub store_timestamp_ms: i64,
}

/// Called once with the outcome of an append, on a store thread: keep it short (e.g. send on a
/// channel).
pub type AppendDone = Box<dyn FnOnce(Result<Appended>) + Send>;
/// Called once with the new log end after a raw append.
pub type RawDone = Box<dyn FnOnce(Result<u64>) + Send>;
/// Called once with the outcome of an atomic batch append, one entry per message.
pub type BatchDone = Box<dyn FnOnce(Result<Vec<Appended>>) + Send>;

pub(crate) enum Request {
    Append(NewMessage, AppendDone),
    Batch(Vec<NewMessage>, BatchDone),
    Raw { offset: u64, bytes: Vec<u8>, done: RawDone },
}

impl Request {
    pub(crate) fn fail(self, err: StoreError) {
        match self {
            Request::Append(_, done) => done(Err(err)),
            Request::Batch(_, done) => done(Err(err)),
            Request::Raw { done, .. } => done(Err(err)),
        }
    }
}

/// An acknowledgement owed to a caller once its record is durable enough.
pub(crate) enum Ack {
    Append(AppendDone, Appended),
    Batch(BatchDone, Vec<Appended>),
    Raw(RawDone, u64),
}

impl Ack {
    pub(crate) fn succeed(self) {
        match self {
            Ack::Append(done, appended) => done(Ok(appended)),
            Ack::Batch(done, appended) => done(Ok(appended)),
            Ack::Raw(done, end) => done(Ok(end)),
        }
    }

    pub(crate) fn fail(self, err: StoreError) {
        match self {
            Ack::Append(done, _) => done(Err(err)),
            Ack::Batch(done, _) => done(Err(err)),
            Ack::Raw(done, _) => done(Err(err)),
        }
    }
}

/// Checks a topic name against [`TOPIC_BYTES_MAX`] and `[A-Za-z0-9%|_-]`.
pub fn validate_topic(topic: &str) -> Result<()> {
    match ferrymq_proto::name::problem(topic, TOPIC_BYTES_MAX) {
        None => Ok(()),
        Some(reason) => Err(StoreError::InvalidTopic { topic: topic.to_owned(), reason }),
    }
}

/// Least time between two warnings that segments cannot be created for lack of descriptors.
const RESOURCE_WARNING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// How long the writer polls for the next request before it sleeps. Waking a sleeping thread on
/// another core costs tens of microseconds on a virtual machine, more than a short poll.
const POLL_BEFORE_SLEEP: std::time::Duration = std::time::Duration::from_micros(50);

/// The next request: polled for a moment, then waited for. `None` when every sender is gone.
fn next_request(requests: &Receiver<Request>) -> Option<Request> {
    let start = std::time::Instant::now();
    loop {
        match requests.try_recv() {
            Ok(request) => return Some(request),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
            Err(std::sync::mpsc::TryRecvError::Empty) if start.elapsed() < POLL_BEFORE_SLEEP => {
                std::thread::yield_now()
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => return requests.recv().ok(),
        }
    }
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    segment: Option<Arc<Segment>>,
    /// Where the next record goes.
    pos: u64,
    /// Encoded records not yet copied into the segment; they start at `batch_start`.
    batch: Vec<u8>,
    batch_start: u64,
    acks: Vec<(u64, Ack)>,
    queue_offsets: HashMap<String, HashMap<u32, u64>>,
    warm: Warm,
    resource_warnings: Throttle,
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>, queue_offsets: HashMap<String, HashMap<u32, u64>>, warm: Warm) -> Self {
        let pos = shared.log.written();
        let segment = shared.log.segment_at(pos);
        Self {
            shared,
            segment,
            pos,
            batch: Vec::new(),
            batch_start: pos,
            acks: Vec::new(),
            queue_offsets,
            warm,
            resource_warnings: Throttle::new(1, RESOURCE_WARNING_INTERVAL.as_millis() as u64),
        }
    }

    /// Serves requests until the queue's senders are gone.
    pub(crate) fn run(mut self, requests: Receiver<Request>) {
        let batch_max = self.shared.config.write_batch_bytes_max;
        while let Some(first) = next_request(&requests) {
            self.handle(first);
            while self.batch.len() < batch_max {
                match requests.try_recv() {
                    Ok(request) => self.handle(request),
                    Err(_) => break,
                }
            }
            self.finish_batch();
        }
        self.shared.writer_done.store(true, Ordering::Release);
        self.shared.notify_all();
    }

    fn handle(&mut self, request: Request) {
        if let Some(err) = self.refusal() {
            request.fail(err);
            return;
        }
        if self.shared.read_only.load(Ordering::Acquire) && !matches!(request, Request::Raw { .. }) {
            request.fail(StoreError::ReadOnly);
            return;
        }
        match request {
            Request::Append(msg, done) => match self.append(&msg, 0) {
                Ok(appended) => self.acks.push((self.pos, Ack::Append(done, appended))),
                Err(err) => done(Err(err)),
            },
            Request::Batch(msgs, done) => match self.append_batch(&msgs) {
                Ok(appended) => self.acks.push((self.pos, Ack::Batch(done, appended))),
                Err(err) => done(Err(err)),
            },
            Request::Raw { offset, bytes, done } => match self.append_raw(offset, &bytes) {
                Ok(()) => self.acks.push((self.pos, Ack::Raw(done, self.pos))),
                Err(err) => {
                    // Whole entries before the bad one stay appended; the log end says where to resume.
                    self.finish_batch();
                    done(Err(err));
                }
            },
        }
    }

    /// Why appends are refused right now, if they are.
    fn refusal(&self) -> Option<StoreError> {
        if let Some(err) = self.shared.fatal_error() {
            return Some(err);
        }
        self.shared.disk.refuse_up_front().map(StoreError::DiskFull)
    }

    /// Checks what can make encoding `msg` fail; returns its encoded length.
    fn check(&self, msg: &NewMessage) -> Result<usize> {
        validate_topic(&msg.topic)?;
        let len = record::encoded_len(&msg.topic, &msg.properties, &msg.body);
        let max = self.shared.config.record_bytes_max;
        if len > max as usize {
            return Err(StoreError::RecordTooLarge { size: len, max });
        }
        if msg.properties.len() > record::PROPERTIES_BYTES_MAX {
            return Err(record::RecordError::PropertiesTooLong(msg.properties.len()).into());
        }
        Ok(len)
    }

    /// Appends `msgs` so that recovery keeps them all or none: one segment, every record but the last
    /// flagged [`sys_flag::BATCH_CONTINUES`].
    fn append_batch(&mut self, msgs: &[NewMessage]) -> Result<Vec<Appended>> {
        let mut total = 0;
        for msg in msgs {
            total += self.check(msg)?;
        }
        let room = self.shared.config.segment_bytes - FILLER_BYTES_MIN as u64;
        if total as u64 > room {
            return Err(StoreError::RecordTooLarge { size: total, max: u32::try_from(room).unwrap_or(u32::MAX) });
        }
        self.make_room(total as u64)?;
        let last = msgs.len().saturating_sub(1);
        msgs.iter()
            .enumerate()
            .map(|(i, msg)| self.append(msg, if i < last { sys_flag::BATCH_CONTINUES } else { 0 }))
            .collect()
    }

    /// Appends one record, with `extra_flags` added to its system flags.
    fn append(&mut self, msg: &NewMessage, extra_flags: u32) -> Result<Appended> {
        let len = self.check(msg)?;
        self.make_room(len as u64)?;
        let queue_offset = self
            .queue_offsets
            .get(msg.topic.as_str())
            .and_then(|queues| queues.get(&msg.queue_id))
            .copied()
            .unwrap_or(0);
        let store_timestamp_ms = self.shared.clock.now_ms();
        let meta = RecordMeta {
            sys_flag: msg.sys_flag | extra_flags,
            flag: msg.flag,
            queue_id: msg.queue_id,
            queue_offset,
            physical_offset: self.pos,
            born_timestamp_ms: msg.born_timestamp_ms,
            store_timestamp_ms,
            born_host: msg.born_host,
            store_host: self.shared.store_host,
            reconsume_times: msg.reconsume_times,
            prepared_tx_offset: msg.prepared_tx_offset,
        };
        record::encode(&meta, &msg.topic, &msg.properties, &msg.body, &mut self.batch)?;
        self.set_next_queue_offset(&msg.topic, msg.queue_id, queue_offset + 1);
        let offset = self.pos;
        self.pos += len as u64;
        Ok(Appended { offset, len: len as u32, queue_offset, store_timestamp_ms })
    }

    fn set_next_queue_offset(&mut self, topic: &str, queue_id: u32, next: u64) {
        match self.queue_offsets.get_mut(topic) {
            Some(queues) => {
                queues.insert(queue_id, next);
            }
            None => {
                self.queue_offsets.insert(topic.to_owned(), HashMap::from([(queue_id, next)]));
            }
        }
    }

    /// Makes sure a record of `len` bytes fits in the active segment, closing it with a filler and
    /// starting the next one when it does not. On error nothing has changed.
    fn make_room(&mut self, len: u64) -> Result<()> {
        let filler = FILLER_BYTES_MIN as u64;
        let Some(segment) = self.segment.clone() else {
            self.segment = Some(self.create_segment(self.pos)?);
            return Ok(());
        };
        if self.pos + len + filler <= segment.end() {
            return Ok(());
        }
        let next = self.create_segment(segment.end())?;
        self.write_filler(&segment)?;
        self.segment = Some(next);
        Ok(())
    }

    /// Writes out the batch, then a filler from `pos` to the end of `segment`, and moves to the next
    /// segment's start.
    fn write_filler(&mut self, segment: &Segment) -> Result<()> {
        self.write_batch()?;
        let remaining = segment.end() - self.pos;
        // A segment this writer filled always keeps room for a filler. One that recovery found
        // ending fewer bytes after its last record than a filler takes (a file cut short) gets none:
        // readers treat such a tail as the segment's end (see `CommitLog::entry_len_at`).
        if remaining >= FILLER_BYTES_MIN as u64 {
            let mut head = Vec::with_capacity(FILLER_BYTES_MIN);
            record::encode_filler_head(remaining as u32, &mut head);
            self.write_or_fatal(segment, self.pos, &head)?;
        }
        self.pos = segment.end();
        self.batch_start = self.pos;
        self.shared.log.publish_written(self.pos);
        Ok(())
    }

    /// Appends a master's log bytes verbatim: they must be whole, valid entries continuing this log.
    fn append_raw(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        if self.segment.is_none() && self.pos == self.shared.log.min_offset() && self.shared.log.segments().is_empty() {
            if offset > crate::bounds::LOG_OFFSET_MAX {
                return Err(StoreError::RawMalformed(format!(
                    "the log cannot start at offset {offset}, past the highest a segment may start at ({})",
                    crate::bounds::LOG_OFFSET_MAX
                )));
            }
            // An empty log adopts the master's starting offset.
            self.pos = offset;
            self.batch_start = offset;
            self.shared.log.publish_written(offset);
            self.shared.log.publish_flushed(offset);
        }
        if offset != self.pos {
            return Err(StoreError::RawOffsetMismatch { expected: self.pos, got: offset });
        }
        let mut at = 0;
        while at < bytes.len() {
            let entry = record::decode(&bytes[at..], self.pos, Verify::Full)
                .map_err(|source| StoreError::RawCorrupt { offset: self.pos, source })?;
            match entry {
                Entry::Record { record, total_bytes } => {
                    if let Some(problem) = crate::bounds::record_problem(&record) {
                        return Err(StoreError::RawMalformed(format!("record at {}: {problem}", self.pos)));
                    }
                    let segment = match self.segment.clone() {
                        Some(segment) => segment,
                        None => {
                            let segment = self.create_segment(self.pos)?;
                            self.segment = Some(segment.clone());
                            segment
                        }
                    };
                    if self.pos + (total_bytes + FILLER_BYTES_MIN) as u64 > segment.end() {
                        return Err(StoreError::RawMalformed(format!(
                            "record at {} overruns the segment ending at {}; master and slave must use the same segment_bytes",
                            self.pos,
                            segment.end()
                        )));
                    }
                    let (topic, queue_id, next) = (record.topic, record.meta.queue_id, record.meta.queue_offset + 1);
                    self.set_next_queue_offset(topic, queue_id, next);
                    self.batch.extend_from_slice(&bytes[at..at + total_bytes]);
                    self.pos += total_bytes as u64;
                    at += total_bytes;
                }
                Entry::Filler { total_bytes } => {
                    let Some(segment) = self.segment.clone() else {
                        return Err(StoreError::RawMalformed("a filler cannot start the log".into()));
                    };
                    if self.pos + total_bytes as u64 != segment.end() {
                        return Err(StoreError::RawMalformed(format!(
                            "filler at {} does not end the segment at {}; master and slave must use the same segment_bytes",
                            self.pos,
                            segment.end()
                        )));
                    }
                    let next = self.create_segment(segment.end())?;
                    self.write_filler(&segment)?;
                    self.segment = Some(next);
                    at += FILLER_BYTES_MIN;
                }
            }
        }
        Ok(())
    }

    /// Creates a segment, if the budget has room for it (see `disk`). A full disk or a lack of
    /// descriptors or maps is an error for this append only, and the next append that needs the
    /// segment tries again; any other failure (a failed directory flush above all) stops the store.
    fn create_segment(&mut self, base: u64) -> Result<Arc<Segment>> {
        let shared = &self.shared;
        if let Some(reason) = shared.disk.admit_segment(&shared.config, shared.own.bytes()) {
            shared.disk.creation_failed(reason.clone());
            return Err(StoreError::DiskFull(reason));
        }
        match shared.log.create_segment(base) {
            Ok(segment) => {
                shared.disk.creation_succeeded();
                // The store's files grew: retention looks now rather than at its next interval.
                shared.retention_request.notify();
                Ok(segment)
            }
            Err(StoreError::DiskFull(reason)) => {
                shared.disk.creation_failed(reason.clone());
                Err(StoreError::DiskFull(reason))
            }
            Err(err @ StoreError::Resource { .. }) => {
                if let Some(held) = self.resource_warnings.admit() {
                    tracing::warn!(%err, failures_not_logged = held,
                        "a log segment could not be created; the append fails and the next one retries");
                }
                Err(err)
            }
            Err(other) => Err(StoreError::Fatal(shared.set_fatal(FatalCause::Segment(other)))),
        }
    }

    fn write_or_fatal(&self, segment: &Segment, at: u64, bytes: &[u8]) -> Result<()> {
        segment.file.write(at - segment.base, bytes).map_err(|source| {
            StoreError::Fatal(self.shared.set_fatal(FatalCause::Write { path: segment.path.clone(), source }))
        })
    }

    /// Copies the batch into the segment and publishes the new end.
    fn write_batch(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let Some(segment) = self.segment.clone() else {
            return Err(StoreError::Inconsistent("records batched with no active segment".into()));
        };
        let result = self.write_or_fatal(&segment, self.batch_start, &self.batch);
        self.batch.clear();
        if result.is_ok() {
            self.batch_start = self.pos;
            self.warm.after_write(&segment, self.pos);
        }
        result
    }

    /// Ends a batch: writes it, publishes, and passes acknowledgements on.
    fn finish_batch(&mut self) {
        let write = self.write_batch();
        let acks = std::mem::take(&mut self.acks);
        if let Err(err) = write {
            let cause = match err {
                StoreError::Fatal(cause) => cause,
                other => Arc::new(FatalCause::Batch(other)),
            };
            for (_, ack) in acks {
                ack.fail(StoreError::Fatal(cause.clone()));
            }
            return;
        }
        match self.shared.config.flush {
            FlushMode::Sync => {
                // Queue the acknowledgements before publishing, so a flush that covers them finds them.
                self.shared.park_acks(acks);
                self.shared.log.publish_written(self.pos);
                // A filler may have published part of this batch already and a flush may have covered it.
                self.shared.complete_waiters(self.shared.log.flushed());
            }
            FlushMode::Async => {
                self.shared.log.publish_written(self.pos);
                for (_, ack) in acks {
                    ack.succeed();
                }
                if self.pos - self.shared.log.flushed() >= self.shared.config.flush_dirty_bytes_max {
                    self.shared.flush_request.notify();
                }
            }
        }
        self.shared.written.notify();
    }
}
