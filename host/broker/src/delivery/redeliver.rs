//! When an invisible time runs out: renewed (auto-renew), delivered again in place, copied to the
//! retry topic, or copied to the dead-letter topic; and dead-lettering on a client's request.

use ferrymq_proto::properties::{self, DLQ_ORIGIN_MESSAGE_ID, DLQ_ORIGIN_TOPIC, RETRY_TOPIC, UNIQ_KEY};
use ferrymq_proto::throttle::Throttle;
use ferrymq_store::{NewMessage, StoredRecord};

use super::cursor::{Inflight, State};
use super::{Delivery, DeliveryError};
use crate::metadata::{GroupConfig, RETRY_TOPIC_PREFIX, dlq_topic, retries_in_place, retry_topic};
use crate::offsets::OffsetKey;

/// Where a message that will not be delivered again in place goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Destination {
    /// `%RETRY%<group>_<topic>`, to be delivered again from there.
    Retry,
    /// `%DLQ%<group>`: delivered `max_attempts` times, or given up on.
    DeadLetter,
}

/// A message to copy to its destination; the original is done once the copy is stored.
pub(super) struct Move {
    pub(super) to: Destination,
    pub(super) key: OffsetKey,
    pub(super) offset: u64,
    pub(super) record: StoredRecord,
    pub(super) attempt: u32,
    pub(super) group: String,
}

impl Delivery {
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
        self.finish_move(Move { to: Destination::DeadLetter, key, offset, record, attempt, group: group.name.clone() });
        Ok(())
    }

    fn record_at(&self, key: &OffsetKey, offset: u64) -> Result<StoredRecord, DeliveryError> {
        let entry = self
            .store
            .read_queue(&key.topic, key.queue_id, offset, 1)
            .into_iter()
            .next()
            .filter(|e| e.queue_offset == offset)
            .ok_or_else(|| DeliveryError::Gone { topic: key.topic.clone(), queue_id: key.queue_id, offset })?;
        Ok(self.store.record(entry.offset, entry.len)?)
    }

    /// Handles every message whose invisible time ran out: delivered again later (in place), copied to
    /// the retry topic, or dead-lettered. Blocks while copies are stored. Returns how many it handled.
    ///
    /// On a read-only (replica) store nothing can be copied: such messages are left for the master.
    pub fn revive(&self) -> usize {
        let now = self.clock.now_ms();
        let mut held = 0usize;
        let mut moves = Vec::new();
        let handled = {
            let mut state = self.lock();
            let due: Vec<(OffsetKey, u64)> = {
                let split = state.deadlines.split_off(&(now.saturating_add(1), 0));
                std::mem::replace(&mut state.deadlines, split).into_values().collect()
            };
            let mut renewed = Vec::new();
            for (key, offset) in &due {
                match self.expire(&mut state, key, *offset, now) {
                    Expired::Renewed(deadline) => renewed.push((deadline, (key.clone(), *offset))),
                    Expired::Held => held += 1,
                    Expired::Moves(m) => moves.push(m),
                    Expired::Settled => {}
                }
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

    /// Decides what becomes of one message whose invisible deadline passed.
    fn expire(&self, state: &mut State, key: &OffsetKey, offset: u64, now: i64) -> Expired {
        let group_name = key.subscriber.split('@').next().unwrap_or_default().to_owned();
        let group = self
            .metadata
            .group(&group_name)
            .unwrap_or(GroupConfig { name: group_name.clone(), ..GroupConfig::default() });
        // A retry topic's cursor decides as the topic its messages came from.
        let retry_prefix = format!("{RETRY_TOPIC_PREFIX}{group_name}_");
        let in_place = retries_in_place(&group, key.topic.strip_prefix(&retry_prefix).unwrap_or(&key.topic));
        let Some(cursor) = state.cursors.get_mut(key) else { return Expired::Settled };
        if let Some(inflight) = cursor.inflight.get_mut(&offset)
            && let Some(renew) = inflight.renew.as_ref().filter(|r| r.until_ms > now)
        {
            inflight.deadline_ms = now.saturating_add(renew.step_ms).min(renew.until_ms);
            return Expired::Renewed((inflight.deadline_ms, inflight.generation));
        }
        let Some(inflight) = cursor.inflight.remove(&offset) else { return Expired::Settled };
        if in_place && inflight.attempt < group.max_attempts {
            cursor.attempts.insert(offset, inflight.attempt);
            return Expired::Settled;
        }
        if self.store.is_read_only() {
            // A replica stores no retry copy: the message is delivered again from where it
            // is (in place), and stays below the committed offset until it is acked.
            cursor.next = cursor.next.min(offset);
            return Expired::Held;
        }
        cursor.moving.insert(offset);
        let record = match self.record_at(key, offset) {
            Ok(record) => record,
            Err(err) => {
                static GONE: Throttle = Throttle::per_second(5);
                if let Some(suppressed) = GONE.admit() {
                    tracing::warn!(%err, suppressed, "an expired message is no longer stored; dropping it from delivery");
                }
                cursor.complete(offset);
                return Expired::Settled;
            }
        };
        let to = if inflight.attempt >= group.max_attempts { Destination::DeadLetter } else { Destination::Retry };
        Expired::Moves(Move { to, key: key.clone(), offset, record, attempt: inflight.attempt, group: group.name })
    }

    /// Stores the copy a move needs, then marks the original done. If storing fails, the message is
    /// put back in flight for a second to try again.
    pub(super) fn finish_move(&self, m: Move) {
        let real = self.real_topic(&m.key, &m.record);
        let copy = match m.to {
            Destination::Retry => self.copy_for(&m.record, &retry_topic(&m.group, &real), m.attempt, None),
            Destination::DeadLetter => self.copy_for(&m.record, &dlq_topic(&m.group), m.attempt, Some(&real)),
        };
        let result = copy.and_then(|c| self.store.append_wait(c).map(drop).map_err(DeliveryError::from));
        if result.is_ok() && m.to == Destination::DeadLetter {
            tracing::info!(group = %m.group, topic = %real, attempts = m.attempt, "message moved to the dead-letter topic");
        }
        let (key, offset) = (m.key, m.offset);
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
                static UNMOVED: Throttle = Throttle::per_second(5);
                if let Some(suppressed) = UNMOVED.admit() {
                    tracing::warn!(%err, topic = %key.topic, suppressed, "could not move an expired message; retrying in a second");
                }
                let generation = self.next_generation();
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
    fn real_topic(&self, key: &OffsetKey, record: &StoredRecord) -> String {
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
        properties::encode(props, &mut encoded)
            .map_err(|source| DeliveryError::CopyProperties { topic: topic.to_owned(), source })?;
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
}

/// What became of one expired delivery.
enum Expired {
    /// Auto-renewed: in flight again under this (deadline, generation).
    Renewed((i64, u64)),
    /// On a replica: left in place for the master to move.
    Held,
    /// To be copied once the state lock is released.
    Moves(Move),
    /// Nothing more to do here (gone, acked meanwhile, or waiting to be delivered again in place).
    Settled,
}
