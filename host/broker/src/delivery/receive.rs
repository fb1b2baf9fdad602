//! A receive call: which queues it reads and in what order, a bound filter plugin's verdicts, and
//! handing the chosen messages out with a receipt handle and an invisible deadline.

use std::sync::MutexGuard;

use super::cursor::{Inflight, Renew, State};
use super::inflight::Handle;
use super::redeliver::{Destination, Move};
use super::scan::Candidate;
use super::{AUTO_RENEW_MAX_MS, Delivered, Delivery, DeliveryError, RECEIVE_BATCH_MAX, Receive, subscriber};
use crate::hooks::{FilterInput, FilterVerdict, Policies};
use crate::metadata::{retries_in_place, retry_topic};
use crate::offsets::OffsetKey;

/// Candidates a receive offers a filter plugin at once, however few messages it wants.
const JUDGE_CHUNK: usize = RECEIVE_BATCH_MAX;
/// Rounds of candidates one receive offers a filter plugin per queue, while it withholds them.
const JUDGE_ROUNDS_MAX: usize = 16;

/// One receive under way: the request, the path its group takes, and what it has produced so far.
pub(super) struct Receiving<'a, 'r> {
    pub(super) req: &'a Receive<'r>,
    /// FIFO and broadcast groups (and a retry topic that would not fit) are delivered again in
    /// place; others through the retry topic.
    pub(super) in_place: bool,
    /// Most messages to deliver, within `1..=RECEIVE_BATCH_MAX`.
    batch: usize,
    delivered: Vec<Delivered>,
    /// Dead letters chosen by a filter plugin, stored once the state lock is released.
    moves: Vec<Move>,
}

impl Delivery {
    /// Receives up to `batch` messages, each invisible to others for `invisible_ms`.
    ///
    /// A filter plugin bound to (topic, group) judges the messages that passed TAG/SQL; it runs with
    /// the state lock released (its candidates held meanwhile), so a slow plugin delays only its own
    /// receive.
    pub fn receive(&self, req: &Receive<'_>) -> Result<Vec<Delivered>, DeliveryError> {
        let topic = self.metadata.topic(req.topic).ok_or_else(|| DeliveryError::TopicNotFound(req.topic.to_owned()))?;
        let policies = self.policies().filter(|p| p.has_filter(req.topic, &req.group.name));
        let mut rx = Receiving {
            req,
            in_place: retries_in_place(req.group, req.topic),
            batch: req.batch.clamp(1, RECEIVE_BATCH_MAX),
            delivered: Vec::new(),
            moves: Vec::new(),
        };
        let mut result = Ok(());
        for key in self.sources(&rx, topic.queues) {
            if rx.delivered.len() >= rx.batch {
                break;
            }
            result = self.receive_queue(&mut rx, &key, policies.as_deref());
            if result.is_err() {
                break;
            }
        }
        for m in std::mem::take(&mut rx.moves) {
            self.finish_move(m);
        }
        result.map(|()| rx.delivered)
    }

    /// The queues a receive reads, in order: the retry topic first (its messages are due), then the
    /// topic's queues, starting one further at each receive of the subscriber for fairness.
    fn sources(&self, rx: &Receiving<'_, '_>, queues: u32) -> Vec<OffsetKey> {
        let sub = subscriber(rx.req.group, rx.req.client_id);
        let mut sources = Vec::new();
        if !rx.in_place {
            let topic = retry_topic(&rx.req.group.name, rx.req.topic);
            sources.push(OffsetKey { subscriber: sub.clone(), topic, queue_id: 0 });
        }
        let start = {
            let mut state = self.lock();
            let rotation = state.rotation.entry((sub.clone(), rx.req.topic.to_owned())).or_insert(0);
            let start = *rotation % queues as usize;
            *rotation = rotation.wrapping_add(1);
            start
        };
        sources.extend((0..queues as usize).map(|i| OffsetKey {
            subscriber: sub.clone(),
            topic: rx.req.topic.to_owned(),
            queue_id: ((start + i) % queues as usize) as u32,
        }));
        sources
    }

    /// Gathers, judges and settles candidates from one queue until the receive is full, the queue has
    /// nothing more, or a filter plugin holds a message back.
    fn receive_queue(
        &self,
        rx: &mut Receiving<'_, '_>,
        key: &OffsetKey,
        policies: Option<&dyn Policies>,
    ) -> Result<(), DeliveryError> {
        // A filter plugin may withhold candidates; look again, a bounded number of times.
        let rounds = if policies.is_some() { JUDGE_ROUNDS_MAX } else { 1 };
        for _ in 0..rounds {
            let want = rx.batch.saturating_sub(rx.delivered.len());
            if want == 0 {
                return Ok(());
            }
            // A filter sees a full chunk; what it passes beyond `want` is looked at again later.
            let gather = if policies.is_some() { want.max(JUDGE_CHUNK) } else { want };
            let mut state = self.lock();
            let candidates = self.gather(&mut state, rx, key, gather)?;
            if candidates.is_empty() {
                break;
            }
            let verdicts = match policies {
                Some(policies) => {
                    let (relocked, verdicts) = self.judge(state, policies, rx, key, &candidates);
                    state = relocked;
                    verdicts
                }
                None => Vec::new(),
            };
            if self.settle(&mut state, rx, key, candidates, &verdicts) {
                break;
            }
        }
        Ok(())
    }

    /// Asks the filter plugin about `candidates` with the state lock released, holding them meanwhile
    /// so no other receive offers them; returns the lock, taken again, with the verdicts.
    fn judge<'s>(
        &'s self,
        mut state: MutexGuard<'s, State>,
        policies: &dyn Policies,
        rx: &Receiving<'_, '_>,
        key: &OffsetKey,
        candidates: &[Candidate],
    ) -> (MutexGuard<'s, State>, Vec<FilterVerdict>) {
        let consume_from = rx.req.group.consume_from;
        let cursor = self.cursor(&mut state, key, consume_from);
        cursor.judging.extend(candidates.iter().map(|c| (c.offset, c.group.clone())));
        drop(state);
        let inputs: Vec<FilterInput> =
            candidates.iter().map(|c| FilterInput { record: c.record.clone(), attempt: c.attempt }).collect();
        let verdicts = policies.filter(rx.req.topic, &rx.req.group.name, &inputs);
        let mut state = self.lock();
        let cursor = self.cursor(&mut state, key, consume_from);
        for c in candidates {
            cursor.judging.remove(&c.offset);
        }
        (state, verdicts)
    }

    /// Delivers (until the receive is full), withholds or dead-letters each candidate by its verdict
    /// (deliver when there is none). Deliverable candidates beyond the batch, and held ones, stay where
    /// they are for a later receive; returns whether any was held.
    fn settle(
        &self,
        state: &mut State,
        rx: &mut Receiving<'_, '_>,
        key: &OffsetKey,
        candidates: Vec<Candidate>,
        verdicts: &[FilterVerdict],
    ) -> bool {
        let now = self.clock.now_ms();
        let consume_from = rx.req.group.consume_from;
        let mut held = false;
        for (i, c) in candidates.into_iter().enumerate() {
            match verdicts.get(i).copied().unwrap_or(FilterVerdict::Deliver) {
                FilterVerdict::Hold => {
                    held = true;
                    let cursor = self.cursor(state, key, consume_from);
                    cursor.next = cursor.next.min(c.offset);
                }
                FilterVerdict::Deliver if rx.delivered.len() >= rx.batch => {
                    let cursor = self.cursor(state, key, consume_from);
                    cursor.next = cursor.next.min(c.offset);
                }
                FilterVerdict::Deliver => {
                    let delivered = self.deliver(state, rx.req, key, c, now);
                    rx.delivered.push(delivered);
                }
                FilterVerdict::Withhold => self.cursor(state, key, consume_from).complete(c.offset),
                FilterVerdict::DeadLetter => {
                    self.cursor(state, key, consume_from).moving.insert(c.offset);
                    rx.moves.push(Move {
                        to: Destination::DeadLetter,
                        key: key.clone(),
                        offset: c.offset,
                        record: c.record,
                        attempt: c.attempt,
                        group: rx.req.group.name.clone(),
                    });
                }
            }
        }
        let cursor = self.cursor(state, key, consume_from);
        self.save(key, cursor);
        held
    }

    /// Puts a candidate in flight until `now + invisible_ms`, with a fresh receipt handle.
    fn deliver(&self, state: &mut State, req: &Receive<'_>, key: &OffsetKey, c: Candidate, now: i64) -> Delivered {
        let generation = self.next_generation();
        let handle = Handle {
            epoch: self.epoch,
            generation,
            queue_id: key.queue_id,
            offset: c.offset,
            topic: key.topic.clone(),
        };
        let deadline_ms = now.saturating_add(req.invisible_ms);
        let renew = req.auto_renew.then(|| Renew {
            client_id: req.client_id.to_owned(),
            step_ms: req.invisible_ms,
            until_ms: now.saturating_add(AUTO_RENEW_MAX_MS),
        });
        if let Some(cursor) = state.cursors.get_mut(key) {
            let inflight = Inflight { generation, deadline_ms, attempt: c.attempt, message_group: c.group, renew };
            cursor.inflight.insert(c.offset, inflight);
        }
        state.deadlines.insert((deadline_ms, generation), (key.clone(), c.offset));
        Delivered {
            record: c.record,
            topic: req.topic.to_owned(),
            stored_topic: key.topic.clone(),
            queue_id: key.queue_id,
            queue_offset: c.offset,
            receipt_handle: handle.encode(),
            delivery_attempt: c.attempt,
            invisible_until_ms: deadline_ms,
        }
    }
}
