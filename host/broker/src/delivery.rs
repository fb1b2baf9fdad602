//! Delivery to consumer groups: receive with an invisible time, ack, change the invisible time,
//! redeliver, dead-letter.
//!
//! Each (subscriber, stored topic, queue) has a cursor: `commit` (every message below is done — acked,
//! filtered out, or moved on), the messages in flight with their invisible deadline, and the done
//! offsets above `commit`. A subscriber is the group, or for a broadcast group one client of it.
//!
//! Redelivery takes one of two paths:
//! * **retry topic** (clustering groups that are not FIFO): when a message's invisible time runs out it
//!   is copied to `%RETRY%<group>_<topic>` with its attempt count and the original is done, so a message
//!   that keeps failing never holds back its queue;
//! * **in place** (FIFO and broadcast groups): the message stays where it is and is delivered again
//!   from the cursor, so a FIFO message group keeps its order; at most one message of a message group
//!   is in flight.
//!
//! Either way a message delivered `max_attempts` times without an ack goes to `%DLQ%<group>`.
//! Receipt handles name the broker run, so handles from before a restart are invalid; after a restart
//! every message that was in flight is delivered again (at least once).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ferrymq_proto::properties::{self, DLQ_ORIGIN_MESSAGE_ID, DLQ_ORIGIN_TOPIC, MESSAGE_GROUP, RETRY_TOPIC, UNIQ_KEY};
use ferrymq_proto::record::RecordRef;
use ferrymq_store::clock::Clock;
use ferrymq_store::{NewMessage, Store, StoreError, StoredRecord};
use thiserror::Error;

use crate::filter::{Filter, Verdict};
use crate::hooks::{FilterInput, FilterVerdict, Policies};
use crate::metadata::{ConsumeFrom, GroupConfig, Metadata, dlq_topic, retry_topic};
use crate::offsets::{OffsetKey, Offsets};

/// Most queue entries a FIFO or broadcast cursor looks at past its commit offset in one receive.
pub const IN_PLACE_SCAN_MAX: usize = 2048;
/// Most messages in one receive.
pub const RECEIVE_BATCH_MAX: usize = 32;
/// How long an auto-renewed delivery stays invisible, at most, while its client lives.
pub const AUTO_RENEW_MAX_MS: i64 = 3 * 3_600_000;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DeliveryError {
    #[error("receipt handle is not valid (acknowledged, expired, replaced, or from before a restart)")]
    InvalidHandle,
    #[error("topic {0:?} does not exist")]
    TopicNotFound(String),
    #[error("store: {0}")]
    Store(String),
}

impl From<StoreError> for DeliveryError {
    fn from(err: StoreError) -> Self {
        DeliveryError::Store(err.to_string())
    }
}

/// One message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub record: StoredRecord,
    /// The topic the consumer subscribed to (for a retried message, its original topic).
    pub topic: String,
    /// Where the message is stored (a retry topic for retried messages).
    pub stored_topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub receipt_handle: String,
    /// 1 on first delivery.
    pub delivery_attempt: u32,
    pub invisible_until_ms: i64,
}

/// A receive call.
#[derive(Debug)]
pub struct Receive<'a> {
    pub group: &'a GroupConfig,
    pub client_id: &'a str,
    pub topic: &'a str,
    pub filter: &'a Filter,
    pub batch: usize,
    pub invisible_ms: i64,
    /// Keep extending the invisible time (by `invisible_ms` each time) until the message is acked,
    /// the client is released, or [`AUTO_RENEW_MAX_MS`] passes: for push consumers.
    pub auto_renew: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct CursorKey {
    subscriber: String,
    topic: String,
    queue_id: u32,
}

#[derive(Debug)]
struct Inflight {
    generation: u64,
    deadline_ms: i64,
    attempt: u32,
    message_group: Option<String>,
    /// Auto-renewal: the client it was delivered to, the renewal step, and when renewal stops.
    renew: Option<Renew>,
}

#[derive(Debug, Clone)]
struct Renew {
    client_id: String,
    step_ms: i64,
    until_ms: i64,
}

#[derive(Debug, Default)]
struct Cursor {
    commit: u64,
    /// Retry-topic path: the next offset not yet looked at.
    next: u64,
    inflight: BTreeMap<u64, Inflight>,
    done: BTreeSet<u64>,
    /// Being copied to a retry or dead-letter topic.
    moving: BTreeSet<u64>,
    /// Held while a filter plugin judges them, with their message group.
    judging: BTreeMap<u64, Option<String>>,
    /// In-place path: deliveries so far of messages waiting to be delivered again.
    attempts: HashMap<u64, u32>,
}

impl Cursor {
    fn complete(&mut self, offset: u64) {
        self.inflight.remove(&offset);
        self.moving.remove(&offset);
        self.attempts.remove(&offset);
        if offset >= self.commit {
            self.done.insert(offset);
        }
        while self.done.remove(&self.commit) {
            self.commit += 1;
        }
        self.next = self.next.max(self.commit);
    }
}

#[derive(Debug, Default)]
struct State {
    cursors: HashMap<CursorKey, Cursor>,
    /// Invisible deadlines: (deadline, generation) → cursor and offset.
    deadlines: BTreeMap<(i64, u64), (CursorKey, u64)>,
    /// Which queue a subscriber's next receive starts at, for fairness.
    rotation: HashMap<(String, String), usize>,
}

/// A receipt handle, as the consumer carries it: `<run>:<generation>:<queue>:<offset>:<stored topic>`.
#[derive(Debug, PartialEq, Eq)]
struct Handle {
    epoch: u64,
    generation: u64,
    queue_id: u32,
    offset: u64,
    topic: String,
}

impl Handle {
    fn encode(&self) -> String {
        format!("{:x}:{:x}:{}:{}:{}", self.epoch, self.generation, self.queue_id, self.offset, self.topic)
    }

    fn decode(s: &str) -> Option<Self> {
        let mut parts = s.splitn(5, ':');
        Some(Self {
            epoch: u64::from_str_radix(parts.next()?, 16).ok()?,
            generation: u64::from_str_radix(parts.next()?, 16).ok()?,
            queue_id: parts.next()?.parse().ok()?,
            offset: parts.next()?.parse().ok()?,
            topic: parts.next()?.to_owned(),
        })
    }
}

/// A message that passed the subscription's filter, before any bound filter plugin judges it.
struct Candidate {
    offset: u64,
    record: StoredRecord,
    attempt: u32,
    group: Option<String>,
}

/// Candidates a receive offers a filter plugin at once, however few messages it wants.
const JUDGE_CHUNK: usize = RECEIVE_BATCH_MAX;
/// Rounds of candidates one receive offers a filter plugin per queue, while it withholds them.
const JUDGE_ROUNDS_MAX: usize = 16;

/// What a message is to do after its invisible time ran out.
enum Move {
    Retry { key: CursorKey, offset: u64, record: StoredRecord, attempt: u32, group: String },
    DeadLetter { key: CursorKey, offset: u64, record: StoredRecord, attempt: u32, group: String },
}

pub struct Delivery {
    store: Arc<Store>,
    metadata: Arc<Metadata>,
    offsets: Arc<Offsets>,
    clock: Arc<dyn Clock>,
    epoch: u64,
    generation: AtomicU64,
    filter_errors: AtomicU64,
    policies: std::sync::RwLock<Option<Arc<dyn Policies>>>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

fn subscriber(group: &GroupConfig, client_id: &str) -> String {
    if group.broadcast { format!("{}@{client_id}", group.name) } else { group.name.clone() }
}

fn message_group(rec: &RecordRef<'_>) -> Option<String> {
    properties::get(rec.properties, MESSAGE_GROUP).map(str::to_owned)
}

impl Delivery {
    pub fn new(store: Arc<Store>, metadata: Arc<Metadata>, offsets: Arc<Offsets>, clock: Arc<dyn Clock>) -> Self {
        // Distinct per run, so that handles issued before a restart are refused.
        let epoch = clock.now_ms() as u64 ^ u64::from(std::process::id()).rotate_left(40);
        Self {
            store,
            metadata,
            offsets,
            clock,
            epoch,
            generation: AtomicU64::new(1),
            filter_errors: AtomicU64::new(0),
            policies: std::sync::RwLock::new(None),
            state: Mutex::new(State::default()),
        }
    }

    /// Sets the filters bound to (topic, group) pairs.
    pub fn set_policies(&self, policies: Option<Arc<dyn Policies>>) {
        *self.policies.write().unwrap_or_else(std::sync::PoisonError::into_inner) = policies;
    }

    fn policies(&self) -> Option<Arc<dyn Policies>> {
        self.policies.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// SQL filter evaluations that failed (the message was not delivered to that subscription).
    pub fn filter_errors(&self) -> u64 {
        self.filter_errors.load(Ordering::Relaxed)
    }

    /// Messages in flight, over all subscribers.
    pub fn in_flight(&self) -> usize {
        self.lock().deadlines.len()
    }

    fn next_handle(&self, key: &CursorKey, offset: u64) -> (u64, String) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let handle = Handle { epoch: self.epoch, generation, queue_id: key.queue_id, offset, topic: key.topic.clone() };
        (generation, handle.encode())
    }

    fn cursor<'s>(&self, state: &'s mut State, key: &CursorKey, consume_from: ConsumeFrom) -> &'s mut Cursor {
        state.cursors.entry(key.clone()).or_insert_with(|| {
            let offset_key =
                OffsetKey { subscriber: key.subscriber.clone(), topic: key.topic.clone(), queue_id: key.queue_id };
            let (min, max) = self.store.queue_bounds(&key.topic, key.queue_id).unwrap_or((0, 0));
            let start = self.offsets.get(&offset_key).unwrap_or(match consume_from {
                ConsumeFrom::Earliest => min,
                ConsumeFrom::Latest => max,
            });
            Cursor { commit: start, next: start, ..Cursor::default() }
        })
    }

    /// The cursor, moved up to `min` if retention removed messages this subscriber never got to.
    fn cursor_at_least<'s>(
        &self,
        state: &'s mut State,
        key: &CursorKey,
        consume_from: ConsumeFrom,
        min: u64,
    ) -> &'s mut Cursor {
        let cursor = self.cursor(state, key, consume_from);
        if cursor.commit < min {
            cursor.commit = min;
            cursor.done.retain(|&o| o >= min);
        }
        cursor
    }

    fn save(&self, key: &CursorKey, cursor: &Cursor) {
        let offset_key =
            OffsetKey { subscriber: key.subscriber.clone(), topic: key.topic.clone(), queue_id: key.queue_id };
        self.offsets.set(offset_key, cursor.commit);
    }

    /// Receives up to `batch` messages, each invisible to others for `invisible_ms`.
    ///
    /// A filter plugin bound to (topic, group) judges the messages that passed TAG/SQL; it runs with
    /// the state lock released (its candidates held meanwhile), so a slow plugin delays only its own
    /// receive.
    pub fn receive(&self, req: &Receive<'_>) -> Result<Vec<Delivered>, DeliveryError> {
        let topic = self.metadata.topic(req.topic).ok_or_else(|| DeliveryError::TopicNotFound(req.topic.to_owned()))?;
        let batch = req.batch.clamp(1, RECEIVE_BATCH_MAX);
        let sub = subscriber(req.group, req.client_id);
        let in_place = req.group.fifo || req.group.broadcast;
        let policies = self.policies().filter(|p| p.has_filter(req.topic, &req.group.name));
        let mut out = Vec::new();
        let mut moves = Vec::new();

        // Retried messages first: they are due.
        let mut sources = Vec::new();
        if !in_place {
            sources.push((retry_topic(&req.group.name, req.topic), 0));
        }
        let start = {
            let mut state = self.lock();
            let rotation = state.rotation.entry((sub.clone(), req.topic.to_owned())).or_insert(0);
            let start = *rotation % topic.queues as usize;
            *rotation = rotation.wrapping_add(1);
            start
        };
        sources.extend(
            (0..topic.queues as usize).map(|i| (req.topic.to_owned(), ((start + i) % topic.queues as usize) as u32)),
        );

        let result = (|| {
            for (stored_topic, queue_id) in sources {
                let key = CursorKey { subscriber: sub.clone(), topic: stored_topic, queue_id };
                // A filter plugin may withhold candidates; look again, a bounded number of times.
                let rounds = if policies.is_some() { JUDGE_ROUNDS_MAX } else { 1 };
                for _ in 0..rounds {
                    let want = batch.saturating_sub(out.len());
                    if want == 0 {
                        return Ok(());
                    }
                    // A filter sees a full chunk; what it passes beyond `want` is looked at again later.
                    let gather = if policies.is_some() { want.max(JUDGE_CHUNK) } else { want };
                    let mut state = self.lock();
                    let candidates = if in_place {
                        self.gather_in_place(&mut state, &key, req, gather)?
                    } else {
                        self.gather_from_next(&mut state, &key, req, gather)?
                    };
                    if candidates.is_empty() {
                        break;
                    }
                    let verdicts = match policies.as_deref() {
                        Some(policies) => {
                            let cursor = self.cursor(&mut state, &key, req.group.consume_from);
                            cursor.judging.extend(candidates.iter().map(|c| (c.offset, c.group.clone())));
                            drop(state);
                            let inputs: Vec<FilterInput> = candidates
                                .iter()
                                .map(|c| FilterInput { record: c.record.clone(), attempt: c.attempt })
                                .collect();
                            let verdicts = policies.filter(req.topic, &req.group.name, &inputs);
                            state = self.lock();
                            let cursor = self.cursor(&mut state, &key, req.group.consume_from);
                            for c in &candidates {
                                cursor.judging.remove(&c.offset);
                            }
                            verdicts
                        }
                        None => Vec::new(),
                    };
                    let held = self.settle(&mut state, &key, req, candidates, &verdicts, want, &mut out, &mut moves);
                    if held {
                        break;
                    }
                }
            }
            Ok(())
        })();
        for m in moves {
            self.finish_move(m);
        }
        result.map(|()| out)
    }

    /// Delivers (up to `want`), withholds or dead-letters each candidate by its verdict (deliver when
    /// there is none). Deliverable candidates beyond `want`, and held ones, stay where they are for a
    /// later receive; returns whether any was held.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &self,
        state: &mut State,
        key: &CursorKey,
        req: &Receive<'_>,
        candidates: Vec<Candidate>,
        verdicts: &[FilterVerdict],
        want: usize,
        out: &mut Vec<Delivered>,
        moves: &mut Vec<Move>,
    ) -> bool {
        let now = self.clock.now_ms();
        let mut delivered = 0;
        let mut held = false;
        for (i, c) in candidates.into_iter().enumerate() {
            match verdicts.get(i).copied().unwrap_or(FilterVerdict::Deliver) {
                FilterVerdict::Hold => {
                    held = true;
                    let cursor = self.cursor(state, key, req.group.consume_from);
                    cursor.next = cursor.next.min(c.offset);
                }
                FilterVerdict::Deliver if delivered >= want => {
                    let cursor = self.cursor(state, key, req.group.consume_from);
                    cursor.next = cursor.next.min(c.offset);
                }
                FilterVerdict::Deliver => {
                    delivered += 1;
                    out.push(self.deliver(state, key, c.offset, c.record, c.attempt, c.group, req, now));
                }
                FilterVerdict::Withhold => self.cursor(state, key, req.group.consume_from).complete(c.offset),
                FilterVerdict::DeadLetter => {
                    self.cursor(state, key, req.group.consume_from).moving.insert(c.offset);
                    moves.push(Move::DeadLetter {
                        key: key.clone(),
                        offset: c.offset,
                        record: c.record,
                        attempt: c.attempt,
                        group: req.group.name.clone(),
                    });
                }
            }
        }
        let cursor = self.cursor(state, key, req.group.consume_from);
        self.save(key, cursor);
        held
    }

    /// Checks one entry's filter; a message that does not match is done for this subscriber.
    fn admit(&self, req: &Receive<'_>, record: &RecordRef<'_>) -> bool {
        match req.filter.matches(record.properties) {
            Verdict::Match => true,
            Verdict::NoMatch => false,
            Verdict::Error(reason) => {
                if self.filter_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(group = %req.group.name, %reason, "SQL filter could not be evaluated; message not delivered");
                }
                false
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &self,
        state: &mut State,
        key: &CursorKey,
        offset: u64,
        record: StoredRecord,
        attempt: u32,
        message_group: Option<String>,
        req: &Receive<'_>,
        now: i64,
    ) -> Delivered {
        let (generation, receipt_handle) = self.next_handle(key, offset);
        let deadline_ms = now.saturating_add(req.invisible_ms);
        let renew = req.auto_renew.then(|| Renew {
            client_id: req.client_id.to_owned(),
            step_ms: req.invisible_ms,
            until_ms: now.saturating_add(AUTO_RENEW_MAX_MS),
        });
        if let Some(cursor) = state.cursors.get_mut(key) {
            cursor.inflight.insert(offset, Inflight { generation, deadline_ms, attempt, message_group, renew });
        }
        state.deadlines.insert((deadline_ms, generation), (key.clone(), offset));
        Delivered {
            record,
            topic: req.topic.to_owned(),
            stored_topic: key.topic.clone(),
            queue_id: key.queue_id,
            queue_offset: offset,
            receipt_handle,
            delivery_attempt: attempt,
            invisible_until_ms: deadline_ms,
        }
    }

    /// Retry-topic path: up to `want` messages from the cursor's `next` on that pass TAG/SQL.
    fn gather_from_next(
        &self,
        state: &mut State,
        key: &CursorKey,
        req: &Receive<'_>,
        want: usize,
    ) -> Result<Vec<Candidate>, DeliveryError> {
        let Some((min, _)) = self.store.queue_bounds(&key.topic, key.queue_id) else { return Ok(Vec::new()) };
        let cursor = self.cursor_at_least(state, key, req.group.consume_from, min);
        cursor.next = cursor.next.max(cursor.commit);
        let from = cursor.next;
        let mut candidates = Vec::new();
        for entry in self.store.read_queue(&key.topic, key.queue_id, from, want * 4) {
            if candidates.len() >= want {
                break;
            }
            let cursor = self.cursor(state, key, req.group.consume_from);
            cursor.next = cursor.next.max(entry.queue_offset + 1);
            let o = entry.queue_offset;
            // `next` goes back over what a filter passed but a receive had no room for.
            if cursor.done.contains(&o)
                || cursor.moving.contains(&o)
                || cursor.inflight.contains_key(&o)
                || cursor.judging.contains_key(&o)
            {
                continue;
            }
            if !req.filter.may_match(entry.tag_hash) {
                cursor.complete(entry.queue_offset);
                continue;
            }
            let record = match self.store.record(entry.offset, entry.len) {
                Ok(record) => record,
                Err(err) => {
                    tracing::warn!(topic = %key.topic, queue = key.queue_id, offset = entry.queue_offset, %err, "skipping an unreadable message");
                    cursor.complete(entry.queue_offset);
                    continue;
                }
            };
            let decoded = record.decode()?;
            let foreign_retry = key.topic.starts_with(crate::metadata::RETRY_TOPIC_PREFIX)
                && properties::get(decoded.properties, RETRY_TOPIC) != Some(req.topic);
            if foreign_retry || !self.admit(req, &decoded) {
                self.cursor(state, key, req.group.consume_from).complete(entry.queue_offset);
                continue;
            }
            let attempt = decoded.meta.reconsume_times.saturating_add(1);
            candidates.push(Candidate { offset: entry.queue_offset, record, attempt, group: None });
        }
        let cursor = self.cursor(state, key, req.group.consume_from);
        self.save(key, cursor);
        Ok(candidates)
    }

    /// In-place path: up to `want` messages from `commit` on that pass TAG/SQL, skipping what is done,
    /// in flight or being judged; for FIFO groups, at most one message of each message group in flight.
    fn gather_in_place(
        &self,
        state: &mut State,
        key: &CursorKey,
        req: &Receive<'_>,
        want: usize,
    ) -> Result<Vec<Candidate>, DeliveryError> {
        let Some((min, _)) = self.store.queue_bounds(&key.topic, key.queue_id) else { return Ok(Vec::new()) };
        let fifo = req.group.fifo;
        let cursor = self.cursor_at_least(state, key, req.group.consume_from, min);
        let mut blocked: HashSet<Option<String>> = if fifo {
            cursor.inflight.values().map(|i| i.message_group.clone()).chain(cursor.judging.values().cloned()).collect()
        } else {
            HashSet::new()
        };
        let mut candidates = Vec::new();
        for entry in self.store.read_queue(&key.topic, key.queue_id, cursor.commit, IN_PLACE_SCAN_MAX) {
            if candidates.len() >= want {
                break;
            }
            let o = entry.queue_offset;
            let cursor = self.cursor(state, key, req.group.consume_from);
            if cursor.done.contains(&o)
                || cursor.moving.contains(&o)
                || cursor.inflight.contains_key(&o)
                || cursor.judging.contains_key(&o)
            {
                continue;
            }
            if !req.filter.may_match(entry.tag_hash) {
                cursor.complete(o);
                continue;
            }
            let record = match self.store.record(entry.offset, entry.len) {
                Ok(record) => record,
                Err(err) => {
                    tracing::warn!(topic = %key.topic, queue = key.queue_id, offset = o, %err, "skipping an unreadable message");
                    cursor.complete(o);
                    continue;
                }
            };
            let decoded = record.decode()?;
            let group = message_group(&decoded);
            if !self.admit(req, &decoded) {
                self.cursor(state, key, req.group.consume_from).complete(o);
                continue;
            }
            if fifo && !blocked.insert(group.clone()) {
                continue;
            }
            let earlier = self.cursor(state, key, req.group.consume_from).attempts.get(&o).copied().unwrap_or(0);
            let attempt = decoded.meta.reconsume_times.saturating_add(earlier).saturating_add(1);
            candidates.push(Candidate { offset: o, record, attempt, group });
        }
        let cursor = self.cursor(state, key, req.group.consume_from);
        self.save(key, cursor);
        Ok(candidates)
    }

    /// Finds the in-flight message a handle names, if the handle is current and not expired.
    fn current<'s>(
        &self,
        state: &'s mut State,
        group: &GroupConfig,
        client_id: &str,
        handle: &str,
        now: i64,
    ) -> Result<(CursorKey, u64, &'s mut Cursor), DeliveryError> {
        let handle = Handle::decode(handle).ok_or(DeliveryError::InvalidHandle)?;
        if handle.epoch != self.epoch {
            return Err(DeliveryError::InvalidHandle);
        }
        let key =
            CursorKey { subscriber: subscriber(group, client_id), topic: handle.topic, queue_id: handle.queue_id };
        let cursor = state.cursors.get_mut(&key).ok_or(DeliveryError::InvalidHandle)?;
        match cursor.inflight.get(&handle.offset) {
            // An auto-renewed delivery stays valid between its deadline and the renewal that follows.
            Some(inflight)
                if inflight.generation == handle.generation
                    && (inflight.deadline_ms > now || inflight.renew.is_some()) =>
            {
                Ok((key, handle.offset, cursor))
            }
            _ => Err(DeliveryError::InvalidHandle),
        }
    }

    /// Acknowledges a message: it is done for this subscriber.
    pub fn ack(&self, group: &GroupConfig, client_id: &str, handle: &str) -> Result<(), DeliveryError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let (key, offset, cursor) = self.current(&mut state, group, client_id, handle, now)?;
        let inflight = cursor.inflight.remove(&offset);
        cursor.complete(offset);
        self.save(&key, cursor);
        if let Some(inflight) = inflight {
            state.deadlines.remove(&(inflight.deadline_ms, inflight.generation));
        }
        Ok(())
    }

    /// Gives a delivered message a new invisible time; returns the handle that replaces the old one.
    /// Zero makes it due for redelivery at once.
    pub fn change_invisible(
        &self,
        group: &GroupConfig,
        client_id: &str,
        handle: &str,
        invisible_ms: i64,
    ) -> Result<String, DeliveryError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let (key, offset, cursor) = self.current(&mut state, group, client_id, handle, now)?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let deadline_ms = now.saturating_add(invisible_ms.max(0));
        let Some(inflight) = cursor.inflight.get_mut(&offset) else { return Err(DeliveryError::InvalidHandle) };
        let old = (inflight.deadline_ms, inflight.generation);
        inflight.generation = generation;
        inflight.deadline_ms = deadline_ms;
        // An explicit new invisible time (a nack) ends auto-renewal.
        inflight.renew = None;
        let handle = Handle { epoch: self.epoch, generation, queue_id: key.queue_id, offset, topic: key.topic.clone() };
        state.deadlines.remove(&old);
        state.deadlines.insert((deadline_ms, generation), (key, offset));
        Ok(handle.encode())
    }

    /// Moves a delivered message to the group's dead-letter topic now (a client gave up on it).
    /// Blocks until the copy is stored.
    pub fn forward_to_dlq(&self, group: &GroupConfig, client_id: &str, handle: &str) -> Result<(), DeliveryError> {
        let now = self.clock.now_ms();
        let (key, offset, record, attempt) = {
            let mut state = self.lock();
            let (key, offset, cursor) = self.current(&mut state, group, client_id, handle, now)?;
            let Some(inflight) = cursor.inflight.remove(&offset) else { return Err(DeliveryError::InvalidHandle) };
            cursor.moving.insert(offset);
            state.deadlines.remove(&(inflight.deadline_ms, inflight.generation));
            let record = self.record_at(&key, offset)?;
            (key, offset, record, inflight.attempt)
        };
        self.finish_move(Move::DeadLetter { key, offset, record, attempt, group: group.name.clone() });
        Ok(())
    }

    fn record_at(&self, key: &CursorKey, offset: u64) -> Result<StoredRecord, DeliveryError> {
        let entry = self
            .store
            .read_queue(&key.topic, key.queue_id, offset, 1)
            .into_iter()
            .next()
            .filter(|e| e.queue_offset == offset)
            .ok_or_else(|| DeliveryError::Store(format!("{}/{} offset {offset} is gone", key.topic, key.queue_id)))?;
        Ok(self.store.record(entry.offset, entry.len)?)
    }

    /// Handles every message whose invisible time ran out: delivered again later (in place), copied to
    /// the retry topic, or dead-lettered. Blocks while copies are stored. Returns how many it handled.
    ///
    /// On a read-only (replica) store nothing can be copied: such messages are left for the master.
    pub fn revive(&self) -> usize {
        let now = self.clock.now_ms();
        let read_only = self.store.is_read_only();
        let mut held = 0usize;
        let mut moves = Vec::new();
        let handled = {
            let mut state = self.lock();
            let due: Vec<((i64, u64), (CursorKey, u64))> = {
                let split = state.deadlines.split_off(&(now.saturating_add(1), 0));
                std::mem::replace(&mut state.deadlines, split).into_iter().collect()
            };
            let mut renewed = Vec::new();
            for (_, (key, offset)) in &due {
                let group_name = key.subscriber.split('@').next().unwrap_or_default().to_owned();
                let group = self
                    .metadata
                    .group(&group_name)
                    .unwrap_or(GroupConfig { name: group_name.clone(), ..GroupConfig::default() });
                let in_place = group.fifo || group.broadcast;
                let Some(cursor) = state.cursors.get_mut(key) else { continue };
                if let Some(inflight) = cursor.inflight.get_mut(offset)
                    && let Some(renew) = inflight.renew.as_ref().filter(|r| r.until_ms > now)
                {
                    inflight.deadline_ms = now.saturating_add(renew.step_ms).min(renew.until_ms);
                    renewed.push(((inflight.deadline_ms, inflight.generation), (key.clone(), *offset)));
                    continue;
                }
                let Some(inflight) = cursor.inflight.remove(offset) else { continue };
                if in_place && inflight.attempt < group.max_attempts {
                    cursor.attempts.insert(*offset, inflight.attempt);
                    continue;
                }
                if read_only {
                    // A replica stores no retry copy: the message is delivered again from where it
                    // is (in place), and stays below the committed offset until it is acked.
                    cursor.next = cursor.next.min(*offset);
                    held += 1;
                    continue;
                }
                cursor.moving.insert(*offset);
                let record = match self.record_at(key, *offset) {
                    Ok(record) => record,
                    Err(err) => {
                        tracing::warn!(%err, "an expired message is no longer stored; dropping it from delivery");
                        cursor.complete(*offset);
                        continue;
                    }
                };
                let (key, offset, attempt) = (key.clone(), *offset, inflight.attempt);
                moves.push(if inflight.attempt >= group.max_attempts {
                    Move::DeadLetter { key, offset, record, attempt, group: group.name.clone() }
                } else {
                    Move::Retry { key, offset, record, attempt, group: group.name.clone() }
                });
            }
            state.deadlines.extend(renewed);
            due.len()
        };
        if held > 0 {
            tracing::debug!(held, "expired deliveries on a replica are delivered again in place");
        }
        for m in moves {
            self.finish_move(m);
        }
        handled
    }

    /// Stores the copy a move needs, then marks the original done. If storing fails, the message is
    /// put back in flight for a second to try again.
    fn finish_move(&self, m: Move) {
        let (key, offset, result) = match m {
            Move::Retry { key, offset, record, attempt, group } => {
                let copy = self.copy_for(&record, &retry_topic(&group, &self.real_topic(&key, &record)), attempt, None);
                (key, offset, copy.and_then(|c| self.store.append_wait(c).map(drop).map_err(DeliveryError::from)))
            }
            Move::DeadLetter { key, offset, record, attempt, group } => {
                let real = self.real_topic(&key, &record);
                let copy = self.copy_for(&record, &dlq_topic(&group), attempt, Some(&real));
                let result = copy.and_then(|c| self.store.append_wait(c).map(drop).map_err(DeliveryError::from));
                if result.is_ok() {
                    tracing::info!(group = %group, topic = %real, attempts = attempt, "message moved to the dead-letter topic");
                }
                (key, offset, result)
            }
        };
        let now = self.clock.now_ms();
        let mut state = self.lock();
        match result {
            Ok(()) => {
                if let Some(cursor) = state.cursors.get_mut(&key) {
                    cursor.complete(offset);
                    self.save(&key, cursor);
                }
            }
            Err(err) => {
                tracing::warn!(%err, topic = %key.topic, "could not move an expired message; retrying in a second");
                let generation = self.generation.fetch_add(1, Ordering::Relaxed);
                let deadline_ms = now + 1_000;
                if let Some(cursor) = state.cursors.get_mut(&key) {
                    cursor.moving.remove(&offset);
                    let attempt = cursor.attempts.get(&offset).copied().unwrap_or(1);
                    cursor.inflight.insert(
                        offset,
                        Inflight { generation, deadline_ms, attempt, message_group: None, renew: None },
                    );
                    state.deadlines.insert((deadline_ms, generation), (key, offset));
                }
            }
        }
    }

    /// The topic a stored message was originally sent to.
    fn real_topic(&self, key: &CursorKey, record: &StoredRecord) -> String {
        record
            .decode()
            .ok()
            .and_then(|r| properties::get(r.properties, RETRY_TOPIC).map(str::to_owned))
            .unwrap_or_else(|| key.topic.clone())
    }

    /// A copy of `record` for `topic` (queue 0), carrying `attempt` deliveries so far.
    fn copy_for(
        &self,
        record: &StoredRecord,
        topic: &str,
        attempt: u32,
        dlq_origin: Option<&str>,
    ) -> Result<NewMessage, DeliveryError> {
        let rec = record.decode()?;
        let real = properties::get(rec.properties, RETRY_TOPIC).unwrap_or(rec.topic).to_owned();
        let mut props: Vec<(&str, &str)> = properties::decode(rec.properties)
            .map_while(Result::ok)
            .filter(|p| p.name != RETRY_TOPIC && p.name != DLQ_ORIGIN_TOPIC && p.name != DLQ_ORIGIN_MESSAGE_ID)
            .map(|p| (p.name, p.value))
            .collect();
        props.push((RETRY_TOPIC, &real));
        let id = properties::get(rec.properties, UNIQ_KEY).unwrap_or_default().to_owned();
        if let Some(origin) = dlq_origin {
            props.push((DLQ_ORIGIN_TOPIC, origin));
            props.push((DLQ_ORIGIN_MESSAGE_ID, &id));
        }
        let mut encoded = Vec::with_capacity(rec.properties.len() + 64);
        properties::encode(props, &mut encoded).map_err(|e| DeliveryError::Store(e.to_string()))?;
        Ok(NewMessage {
            topic: topic.to_owned(),
            queue_id: 0,
            flag: rec.meta.flag,
            sys_flag: rec.meta.sys_flag,
            born_timestamp_ms: rec.meta.born_timestamp_ms,
            born_host: rec.meta.born_host,
            reconsume_times: attempt,
            prepared_tx_offset: 0,
            properties: encoded,
            body: rec.body.to_vec(),
        })
    }

    /// Stops auto-renewing what was delivered to `client_id` (it went away): those messages become due
    /// for redelivery at the next [`Delivery::revive`].
    pub fn release_client(&self, client_id: &str) -> usize {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let mut moved = Vec::new();
        for (key, cursor) in state.cursors.iter_mut() {
            for (&offset, inflight) in cursor.inflight.iter_mut() {
                if inflight.renew.as_ref().is_some_and(|r| r.client_id == client_id) {
                    inflight.renew = None;
                    moved.push((
                        (inflight.deadline_ms, inflight.generation),
                        (now, inflight.generation),
                        key.clone(),
                        offset,
                    ));
                    inflight.deadline_ms = now;
                }
            }
        }
        for (old, new, key, offset) in &moved {
            state.deadlines.remove(old);
            state.deadlines.insert(*new, (key.clone(), *offset));
        }
        moved.len()
    }

    /// Committed offset, end of queue and messages in flight for every queue `group` has read.
    pub fn progress(&self, group: &str) -> Vec<QueueProgress> {
        let state = self.lock();
        let mut out: BTreeMap<(String, String, u32), QueueProgress> = BTreeMap::new();
        for (key, offset) in self.offsets.of_subscriber(group) {
            let max = self.store.queue_bounds(&key.topic, key.queue_id).map_or(0, |(_, max)| max);
            out.insert(
                (key.subscriber.clone(), key.topic.clone(), key.queue_id),
                QueueProgress {
                    subscriber: key.subscriber,
                    topic: key.topic,
                    queue_id: key.queue_id,
                    committed: offset,
                    max,
                    in_flight: 0,
                },
            );
        }
        for (key, cursor) in state
            .cursors
            .iter()
            .filter(|(k, _)| k.subscriber == group || k.subscriber.starts_with(&format!("{group}@")))
        {
            let max = self.store.queue_bounds(&key.topic, key.queue_id).map_or(0, |(_, max)| max);
            out.insert(
                (key.subscriber.clone(), key.topic.clone(), key.queue_id),
                QueueProgress {
                    subscriber: key.subscriber.clone(),
                    topic: key.topic.clone(),
                    queue_id: key.queue_id,
                    committed: cursor.commit,
                    max,
                    in_flight: cursor.inflight.len(),
                },
            );
        }
        out.into_values().collect()
    }

    /// The committed offset of a subscriber in a queue.
    pub fn offset(&self, key: &OffsetKey) -> Option<u64> {
        let cursor_key =
            CursorKey { subscriber: key.subscriber.clone(), topic: key.topic.clone(), queue_id: key.queue_id };
        self.lock().cursors.get(&cursor_key).map(|c| c.commit).or_else(|| self.offsets.get(key))
    }

    /// Moves a subscriber's committed offset forward to `offset` (progress made on a replica while
    /// this broker was down); an offset at or behind the current one changes nothing.
    pub fn advance_offset(&self, key: OffsetKey, offset: u64) -> bool {
        if self.offset(&key).is_some_and(|current| current >= offset) {
            return false;
        }
        self.set_offset(key, offset);
        true
    }

    /// Sets a subscriber's committed offset in a queue, forgetting what is in flight there.
    pub fn set_offset(&self, key: OffsetKey, offset: u64) {
        let mut state = self.lock();
        let cursor_key =
            CursorKey { subscriber: key.subscriber.clone(), topic: key.topic.clone(), queue_id: key.queue_id };
        if let Some(cursor) = state.cursors.remove(&cursor_key) {
            for inflight in cursor.inflight.values() {
                state.deadlines.remove(&(inflight.deadline_ms, inflight.generation));
            }
        }
        self.offsets.set(key, offset);
    }

    /// Moves `group`'s position in every queue of `topic` to `offset_of(queue)`, forgetting what is in
    /// flight there.
    pub fn reset(
        &self,
        group: &str,
        topic: &str,
        offset_of: impl Fn(u32) -> u64,
    ) -> Result<Vec<(u32, u64)>, DeliveryError> {
        let config = self.metadata.topic(topic).ok_or_else(|| DeliveryError::TopicNotFound(topic.to_owned()))?;
        let mut out = Vec::new();
        for queue_id in 0..config.queues {
            let offset = offset_of(queue_id);
            self.set_offset(OffsetKey { subscriber: group.to_owned(), topic: topic.to_owned(), queue_id }, offset);
            out.push((queue_id, offset));
        }
        Ok(out)
    }
}

/// Where a subscriber stands in one queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueProgress {
    pub subscriber: String,
    pub topic: String,
    pub queue_id: u32,
    pub committed: u64,
    pub max: u64,
    pub in_flight: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_garbage_is_refused() {
        let h = Handle { epoch: 0xabc, generation: 42, queue_id: 3, offset: 99, topic: "%RETRY%g_t".into() };
        assert_eq!(Handle::decode(&h.encode()), Some(h));
        for bad in ["", "x", "1:2:3:4", "zz:1:1:1:t", "1:1:-1:1:t"] {
            assert_eq!(Handle::decode(bad), None, "{bad}");
        }
    }
}
