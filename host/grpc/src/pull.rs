//! Pull consumption: PullMessage from an offset the client keeps, and the offset RPCs
//! (UpdateOffset, GetOffset, QueryOffset) that store and look up its progress.

use std::time::Duration;

use ferrymq_broker::filter::{Filter, Verdict};
use ferrymq_broker::hooks::{FilterInput, FilterVerdict, Policies};
use ferrymq_broker::metadata::RETRY_TOPIC_PREFIX;
use ferrymq_broker::offsets::OffsetKey;
use ferrymq_broker::search::offset_at_time;
use ferrymq_proto::grpc::v2::{self as pb, Code, pull_message_response::Content};
use ferrymq_store::Store;
use tokio::time::Instant;

use super::GrpcState;
use super::consume::filter;
use super::convert::{self, timestamp_ms};
use super::status::{from_store, ok, status};

/// Most messages in one pull.
pub const PULL_BATCH_MAX: usize = 32;
/// Queue entries a pull looks at to find matching messages.
const PULL_SCAN_MAX: usize = 1024;

fn queue_of(q: Option<&pb::MessageQueue>) -> (String, u32) {
    let topic = q.and_then(|q| q.topic.as_ref()).map(|t| t.name.clone()).unwrap_or_default();
    (topic, q.map_or(0, |q| q.id.max(0) as u32))
}

/// Reads up to `batch` matching messages from `from` on; returns them and the offset to pull next.
/// A filter plugin bound to the group judges what passed TAG/SQL; a message it cannot judge (its
/// failure policy is not fail-open) ends the pull there, to be judged again by the next.
fn scan(
    store: &Store,
    key: &OffsetKey,
    filter: &Filter,
    policies: Option<&dyn Policies>,
    from: u64,
    batch: usize,
) -> Result<(Vec<pb::Message>, u64), pb::Status> {
    let mut candidates = Vec::new();
    let mut next = from;
    for entry in store.read_queue(&key.topic, key.queue_id, from, PULL_SCAN_MAX) {
        if candidates.len() >= batch {
            break;
        }
        next = entry.queue_offset + 1;
        if !filter.may_match(entry.tag_hash) {
            continue;
        }
        let record = store.record(entry.offset, entry.len).map_err(|err| from_store(&err))?;
        let Ok(rec) = record.decode() else { continue };
        if filter.matches(rec.properties) == Verdict::Match {
            candidates.push((entry.queue_offset, record));
        }
    }
    let verdicts = match policies {
        Some(policies) => {
            let inputs: Vec<FilterInput> =
                candidates.iter().map(|(_, record)| FilterInput { record: record.clone(), attempt: 1 }).collect();
            policies.filter(&key.topic, &key.subscriber, &inputs)
        }
        None => Vec::new(),
    };
    let mut messages = Vec::with_capacity(candidates.len());
    for (i, (offset, record)) in candidates.iter().enumerate() {
        match verdicts.get(i).copied().unwrap_or(FilterVerdict::Deliver) {
            FilterVerdict::Deliver => {
                if let Ok(rec) = record.decode() {
                    messages.push(convert::message(&key.topic, &rec, key.queue_id, *offset));
                }
            }
            FilterVerdict::Withhold => {}
            FilterVerdict::Hold | FilterVerdict::DeadLetter => {
                next = *offset;
                break;
            }
        }
    }
    Ok((messages, next))
}

impl GrpcState {
    fn queue_key(&self, group: Option<&pb::Resource>, q: Option<&pb::MessageQueue>) -> Result<OffsetKey, pb::Status> {
        let group = self.group(group)?;
        let (topic, queue_id) = queue_of(q);
        // A retry topic holds one group's redeliveries: only that group reads it.
        if topic.starts_with(RETRY_TOPIC_PREFIX) && !topic.starts_with(&format!("{RETRY_TOPIC_PREFIX}{}_", group.name))
        {
            return Err(status(Code::Forbidden, format!("{topic:?} is another group's retry topic")));
        }
        let config = self.routable(q.and_then(|q| q.topic.as_ref()))?;
        if queue_id >= config.queues {
            return Err(status(Code::BadRequest, format!("topic {topic:?} has no queue {queue_id}")));
        }
        Ok(OffsetKey { subscriber: group.name, topic, queue_id })
    }

    pub async fn pull_message(
        &self,
        request: pb::PullMessageRequest,
        deadline_ms: Option<i64>,
    ) -> Vec<pb::PullMessageResponse> {
        let one = |content| pb::PullMessageResponse { content: Some(content) };
        let key = match self.queue_key(request.group.as_ref(), request.message_queue.as_ref()) {
            Ok(key) => key,
            Err(status) => return vec![one(Content::Status(status))],
        };
        let filter = match filter(request.filter_expression.as_ref()) {
            Ok(filter) => filter,
            Err(status) => return vec![one(Content::Status(status))],
        };
        let store = self.broker.store();
        let (min, max) = store.queue_bounds(&key.topic, key.queue_id).unwrap_or((0, 0));
        let Ok(from) = u64::try_from(request.offset) else {
            return vec![one(Content::Status(status(Code::IllegalOffset, "offset is negative")))];
        };
        if from > max {
            return vec![one(Content::Status(status(
                Code::IllegalOffset,
                format!("offset {from} is past the end {max}"),
            )))];
        }
        let from = from.max(min);
        let batch = usize::try_from(request.batch_size).unwrap_or(0).clamp(1, PULL_BATCH_MAX);
        let end = Instant::now()
            + Duration::from_millis(self.polling_ms(request.long_polling_timeout.as_ref(), deadline_ms) as u64);
        let policies = self.broker.filter_bound(&key.topic, &key.subscriber);
        let listener = self.arrivals.listener(&key.topic);
        loop {
            let arrived = listener.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let scan = {
                let (store, key, filter, policies) = (store.clone(), key.clone(), filter.clone(), policies.clone());
                move || scan(&store, &key, &filter, policies.as_deref(), from, batch)
            };
            // A filter plugin runs in the scan.
            let scanned = super::off_the_runtime_if(policies.is_some(), "pull", scan)
                .await
                .unwrap_or_else(|| Err(status(Code::InternalServerError, "the pull could not be completed")));
            let (messages, next) = match scanned {
                Ok(scanned) => scanned,
                Err(status) => return vec![one(Content::Status(status))],
            };
            if !messages.is_empty() || next > from || Instant::now() >= end {
                let code = if messages.is_empty() { status(Code::MessageNotFound, "no new message") } else { ok() };
                let mut out = vec![one(Content::Status(code))];
                out.extend(messages.into_iter().map(|m| one(Content::Message(m))));
                out.push(one(Content::NextOffset(next as i64)));
                return out;
            }
            let wait = end.saturating_duration_since(Instant::now());
            tokio::select! {
                _ = &mut arrived => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    pub fn update_offset(&self, request: &pb::UpdateOffsetRequest) -> pb::UpdateOffsetResponse {
        let status = match self.queue_key(request.group.as_ref(), request.message_queue.as_ref()) {
            Ok(key) => match u64::try_from(request.offset) {
                Ok(offset) => {
                    self.broker.delivery().set_offset(key, offset);
                    if !self.cluster.is_master() {
                        // Progress made on a slave while its master is down goes back to the master.
                        self.cluster.mark_served();
                    }
                    ok()
                }
                Err(_) => status(Code::IllegalOffset, "offset is negative"),
            },
            Err(status) => status,
        };
        pb::UpdateOffsetResponse { status: Some(status) }
    }

    pub fn get_offset(&self, request: &pb::GetOffsetRequest) -> pb::GetOffsetResponse {
        match self.queue_key(request.group.as_ref(), request.message_queue.as_ref()) {
            Ok(key) => match self.broker.delivery().offset(&key) {
                Some(offset) => pb::GetOffsetResponse { status: Some(ok()), offset: offset as i64 },
                None => pb::GetOffsetResponse {
                    status: Some(status(Code::OffsetNotFound, "no offset committed")),
                    offset: 0,
                },
            },
            Err(status) => pb::GetOffsetResponse { status: Some(status), offset: 0 },
        }
    }

    pub fn query_offset(&self, request: &pb::QueryOffsetRequest) -> pb::QueryOffsetResponse {
        let (topic, queue_id) = queue_of(request.message_queue.as_ref());
        let config = match self.routable(request.message_queue.as_ref().and_then(|q| q.topic.as_ref())) {
            Ok(config) => config,
            Err(status) => return pb::QueryOffsetResponse { status: Some(status), offset: 0 },
        };
        if queue_id >= config.queues {
            return pb::QueryOffsetResponse {
                status: Some(status(Code::BadRequest, format!("no queue {queue_id}"))),
                offset: 0,
            };
        }
        let store = self.broker.store();
        let (min, max) = store.queue_bounds(&topic, queue_id).unwrap_or((0, 0));
        let offset = match pb::QueryOffsetPolicy::try_from(request.query_offset_policy) {
            Ok(pb::QueryOffsetPolicy::Beginning) => min,
            Ok(pb::QueryOffsetPolicy::End) => max,
            Ok(pb::QueryOffsetPolicy::Timestamp) => match request.timestamp.as_ref() {
                Some(t) => offset_at_time(store, &topic, queue_id, timestamp_ms(t)),
                None => {
                    return pb::QueryOffsetResponse {
                        status: Some(status(Code::BadRequest, "TIMESTAMP policy needs a timestamp")),
                        offset: 0,
                    };
                }
            },
            Err(_) => {
                return pb::QueryOffsetResponse {
                    status: Some(status(Code::BadRequest, "unknown offset policy")),
                    offset: 0,
                };
            }
        };
        pb::QueryOffsetResponse { status: Some(ok()), offset: offset as i64 }
    }
}
