//! Reading a queue from a cursor: the messages that pass the subscription's TAG/SQL filter become
//! candidates for delivery; what does not match is done for this subscriber.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use ferrymq_proto::properties::{self, MESSAGE_GROUP, RETRY_TOPIC};
use ferrymq_proto::record::RecordRef;
use ferrymq_proto::throttle::Throttle;
use ferrymq_store::StoredRecord;

use super::cursor::State;
use super::receive::Receiving;
use super::{Delivery, DeliveryError, IN_PLACE_SCAN_MAX};
use crate::filter::Verdict;
use crate::metadata::RETRY_TOPIC_PREFIX;
use crate::offsets::OffsetKey;

/// A message that passed the subscription's filter, before any bound filter plugin judges it.
pub(super) struct Candidate {
    pub(super) offset: u64,
    pub(super) record: StoredRecord,
    pub(super) attempt: u32,
    /// The message group, on the in-place path (`None` on the retry-topic path).
    pub(super) group: Option<String>,
}

fn message_group(rec: &RecordRef<'_>) -> Option<String> {
    properties::get(rec.properties, MESSAGE_GROUP).map(str::to_owned)
}

impl Delivery {
    /// Up to `want` candidates from the queue of `key`, skipping what is done, in flight, being moved
    /// or being judged.
    ///
    /// * Retry-topic path: from the cursor's `next`, which moves past every entry looked at (it goes
    ///   back over what a filter passed but a receive had no room for); a retry topic yields only the
    ///   retries of the subscribed topic.
    /// * In-place path: from `commit`, at most [`IN_PLACE_SCAN_MAX`] entries; an attempt counts the
    ///   earlier deliveries; for FIFO groups, at most one message of each message group in flight.
    pub(super) fn gather(
        &self,
        state: &mut State,
        rx: &Receiving<'_, '_>,
        key: &OffsetKey,
        want: usize,
    ) -> Result<Vec<Candidate>, DeliveryError> {
        let req = rx.req;
        let consume_from = req.group.consume_from;
        let Some((min, _)) = self.store.queue_bounds(&key.topic, key.queue_id) else { return Ok(Vec::new()) };
        let cursor = self.cursor_at_least(state, key, consume_from, min);
        let (from, entries_max) = if rx.in_place {
            (cursor.commit, IN_PLACE_SCAN_MAX)
        } else {
            cursor.next = cursor.next.max(cursor.commit);
            (cursor.next, want * 4)
        };
        let fifo = rx.in_place && req.group.fifo;
        let mut blocked: HashSet<Option<String>> = if fifo {
            cursor.inflight.values().map(|i| i.message_group.clone()).chain(cursor.judging.values().cloned()).collect()
        } else {
            HashSet::new()
        };
        let mut candidates = Vec::new();
        for entry in self.store.read_queue(&key.topic, key.queue_id, from, entries_max) {
            if candidates.len() >= want {
                break;
            }
            let o = entry.queue_offset;
            let cursor = self.cursor(state, key, consume_from);
            if !rx.in_place {
                cursor.next = cursor.next.max(o + 1);
            }
            if cursor.taken(o) {
                continue;
            }
            if !req.filter.may_match(entry.tag_hash) {
                cursor.complete(o);
                continue;
            }
            let record = match self.store.record(entry.offset, entry.len) {
                Ok(record) => record,
                Err(err) => {
                    static UNREADABLE: Throttle = Throttle::per_second(5);
                    if let Some(suppressed) = UNREADABLE.admit() {
                        tracing::warn!(topic = %key.topic, queue = key.queue_id, offset = o, %err, suppressed, "skipping an unreadable message");
                    }
                    cursor.complete(o);
                    continue;
                }
            };
            let decoded = record.decode()?;
            let foreign_retry = !rx.in_place
                && key.topic.starts_with(RETRY_TOPIC_PREFIX)
                && properties::get(decoded.properties, RETRY_TOPIC) != Some(req.topic);
            if foreign_retry || !self.admit(rx, &decoded) {
                self.cursor(state, key, consume_from).complete(o);
                continue;
            }
            let group = if rx.in_place { message_group(&decoded) } else { None };
            if fifo && !blocked.insert(group.clone()) {
                continue;
            }
            let earlier = if rx.in_place {
                self.cursor(state, key, consume_from).attempts.get(&o).copied().unwrap_or(0)
            } else {
                0
            };
            let attempt = decoded.meta.reconsume_times.saturating_add(earlier).saturating_add(1);
            candidates.push(Candidate { offset: o, record, attempt, group });
        }
        let cursor = self.cursor(state, key, consume_from);
        self.save(key, cursor);
        Ok(candidates)
    }

    /// Checks one entry's filter; a message that does not match is done for this subscriber.
    fn admit(&self, rx: &Receiving<'_, '_>, record: &RecordRef<'_>) -> bool {
        match rx.req.filter.matches(record.properties) {
            Verdict::Match => true,
            Verdict::NoMatch => false,
            Verdict::Error(reason) => {
                if self.filter_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(group = %rx.req.group.name, %reason, "SQL filter could not be evaluated; message not delivered");
                }
                false
            }
        }
    }
}
