//! The cursors: where each subscriber stands in each queue, what it has in flight there, and the
//! committed offsets they keep in [`Offsets`](crate::offsets::Offsets).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Delivery, DeliveryError, QueueProgress};
use crate::metadata::ConsumeFrom;
use crate::offsets::OffsetKey;

/// A delivered message waiting for its ack.
#[derive(Debug)]
pub(super) struct Inflight {
    pub(super) generation: u64,
    pub(super) deadline_ms: i64,
    pub(super) attempt: u32,
    pub(super) message_group: Option<String>,
    /// Auto-renewal: the client it was delivered to, the renewal step, and when renewal stops.
    pub(super) renew: Option<Renew>,
}

#[derive(Debug, Clone)]
pub(super) struct Renew {
    pub(super) client_id: String,
    pub(super) step_ms: i64,
    pub(super) until_ms: i64,
}

/// One subscriber's position in one queue.
#[derive(Debug, Default)]
pub(super) struct Cursor {
    pub(super) commit: u64,
    /// Retry-topic path: the next offset not yet looked at.
    pub(super) next: u64,
    pub(super) inflight: BTreeMap<u64, Inflight>,
    pub(super) done: BTreeSet<u64>,
    /// Being copied to a retry or dead-letter topic.
    pub(super) moving: BTreeSet<u64>,
    /// Held while a filter plugin judges them, with their message group.
    pub(super) judging: BTreeMap<u64, Option<String>>,
    /// In-place path: deliveries so far of messages waiting to be delivered again.
    pub(super) attempts: HashMap<u64, u32>,
}

impl Cursor {
    /// Marks `offset` done and moves `commit` past every done offset that follows it.
    pub(super) fn complete(&mut self, offset: u64) {
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

    /// Whether `offset` is done, in flight, being moved or being judged: not to be offered again.
    pub(super) fn taken(&self, offset: u64) -> bool {
        self.done.contains(&offset)
            || self.moving.contains(&offset)
            || self.inflight.contains_key(&offset)
            || self.judging.contains_key(&offset)
    }
}

/// Everything behind the delivery lock.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) cursors: HashMap<OffsetKey, Cursor>,
    /// Invisible deadlines: (deadline, generation) → cursor and offset.
    pub(super) deadlines: BTreeMap<(i64, u64), (OffsetKey, u64)>,
    /// Which queue a subscriber's next receive starts at, for fairness.
    pub(super) rotation: HashMap<(String, String), usize>,
}

impl Delivery {
    /// The cursor of `key`, created at the committed offset (or where `consume_from` says) if new.
    pub(super) fn cursor<'s>(
        &self,
        state: &'s mut State,
        key: &OffsetKey,
        consume_from: ConsumeFrom,
    ) -> &'s mut Cursor {
        state.cursors.entry(key.clone()).or_insert_with(|| {
            let (min, max) = self.store.queue_bounds(&key.topic, key.queue_id).unwrap_or((0, 0));
            let start = self.offsets.get(key).unwrap_or(match consume_from {
                ConsumeFrom::Earliest => min,
                ConsumeFrom::Latest => max,
            });
            Cursor { commit: start, next: start, ..Cursor::default() }
        })
    }

    /// The cursor, moved up to `min` if retention removed messages this subscriber never got to.
    pub(super) fn cursor_at_least<'s>(
        &self,
        state: &'s mut State,
        key: &OffsetKey,
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

    /// Records the cursor's committed offset as the subscriber's progress.
    pub(super) fn save(&self, key: &OffsetKey, cursor: &Cursor) {
        self.offsets.set(key.clone(), cursor.commit);
    }

    /// Committed offset, end of queue and messages in flight for every queue `group` has read.
    pub fn progress(&self, group: &str) -> Vec<QueueProgress> {
        let state = self.lock();
        let mut out: BTreeMap<OffsetKey, QueueProgress> = BTreeMap::new();
        for (key, offset) in self.offsets.of_subscriber(group) {
            let max = self.store.queue_bounds(&key.topic, key.queue_id).map_or(0, |(_, max)| max);
            out.insert(
                key.clone(),
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
                key.clone(),
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
        self.lock().cursors.get(key).map(|c| c.commit).or_else(|| self.offsets.get(key))
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
        if let Some(cursor) = state.cursors.remove(&key) {
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
