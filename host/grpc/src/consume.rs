//! ReceiveMessage (long polling), AckMessage, ChangeInvisibleDuration and
//! ForwardMessageToDeadLetterQueue.

use std::time::Duration;

use ferrymq_broker::delivery::Receive;
use ferrymq_broker::filter::{Filter, SqlFilter, TagFilter};
use ferrymq_broker::metadata::{GroupConfig, retry_topic};
use ferrymq_proto::grpc::v2::{self as pb, Code, receive_message_response::Content};
use ferrymq_proto::limit::Limit;
use ferrymq_proto::throttle::Throttle;
use tokio::time::Instant;

use super::GrpcState;
use super::convert::{self, duration_ms};
use super::status::{from_delivery, named, ok, overall, status};

/// A waiting receive looks again at least this often: in-place redeliveries (FIFO, broadcast) store
/// nothing new and so wake nobody.
const RECHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Parses a subscription's filter expression.
pub fn filter(expression: Option<&pb::FilterExpression>) -> Result<Filter, pb::Status> {
    let Some(expression) = expression else { return Ok(Filter::all()) };
    match pb::FilterType::try_from(expression.r#type) {
        Ok(pb::FilterType::Sql) => SqlFilter::parse(&expression.expression)
            .map(Filter::Sql)
            .map_err(|e| status(Code::IllegalFilterExpression, format!("SQL92 expression: {e}"))),
        Ok(pb::FilterType::Tag | pb::FilterType::Unspecified) => {
            TagFilter::parse(&expression.expression).map(Filter::Tag).ok_or_else(|| {
                status(Code::IllegalFilterExpression, format!("TAG expression {:?}", expression.expression))
            })
        }
        Err(_) => Err(status(Code::IllegalFilterExpression, format!("unknown filter type {}", expression.r#type))),
    }
}

fn receive_status(status: pb::Status) -> pb::ReceiveMessageResponse {
    pb::ReceiveMessageResponse { content: Some(Content::Status(status)) }
}

fn delivery_timestamp(now_ms: i64) -> pb::ReceiveMessageResponse {
    pb::ReceiveMessageResponse { content: Some(Content::DeliveryTimestamp(convert::timestamp(now_ms))) }
}

impl GrpcState {
    /// How long a receive may wait: what the client asked, within the broker's bounds and before the
    /// call's own deadline.
    pub fn polling_ms(&self, asked: Option<&prost_types::Duration>, deadline_ms: Option<i64>) -> i64 {
        let max = self.config.long_polling_ms_max;
        let mut wait = asked.map(duration_ms).unwrap_or(max).clamp(0, max);
        if let Some(left) = deadline_ms {
            // Answer before the client gives up: keep a tenth of its time (at least 200 ms) in hand.
            // `grpc-timeout` is the client's to set, to any value a signed count can take.
            wait = wait.min(left.saturating_sub((left / 10).max(200)));
        }
        wait.max(0)
    }

    pub async fn receive_message(
        &self,
        client_id: &str,
        request: pb::ReceiveMessageRequest,
        deadline_ms: Option<i64>,
    ) -> Vec<pb::ReceiveMessageResponse> {
        let now = self.broker.now_ms();
        let fail = |status| vec![receive_status(status), delivery_timestamp(now)];
        let group = match self.group(request.group.as_ref()) {
            Ok(group) => group,
            Err(status) => return fail(status),
        };
        let topic = match self.routable(request.message_queue.as_ref().and_then(|q| q.topic.as_ref())) {
            Ok(topic) => topic.name,
            Err(status) => return fail(status),
        };
        let filter = match filter(request.filter_expression.as_ref()) {
            Ok(filter) => filter,
            Err(status) => return fail(status),
        };
        let invisible_ms = if request.auto_renew {
            self.config.auto_renew_invisible_ms
        } else {
            match request.invisible_duration.as_ref().map(duration_ms) {
                Some(ms) if (self.config.invisible_ms_min..=self.config.invisible_ms_max).contains(&ms) => ms,
                other => {
                    return fail(status(
                        Code::IllegalInvisibleTime,
                        format!(
                            "invisible duration {other:?} ms is outside {}..={} ms",
                            self.config.invisible_ms_min, self.config.invisible_ms_max
                        ),
                    ));
                }
            }
        };
        let batch =
            usize::try_from(request.batch_size).unwrap_or(0).clamp(1, ferrymq_broker::delivery::RECEIVE_BATCH_MAX);
        let Ok(_permit) = self.waiters.try_acquire() else {
            Limit::GrpcReceiveWaiters.reached();
            return fail(status(Code::TooManyRequests, "too many receives are waiting; try again later"));
        };
        let end = Instant::now()
            + Duration::from_millis(self.polling_ms(request.long_polling_timeout.as_ref(), deadline_ms) as u64);
        let delivery = self.broker.delivery().clone();
        let filtered = self.broker.runs_plugins(&topic, Some(&group.name));
        let auto_renew = request.auto_renew;
        let owned = std::sync::Arc::new((group.clone(), client_id.to_owned(), topic.clone(), filter.clone()));
        let on_topic = self.arrivals.listener(&topic);
        let on_retry = self.arrivals.listener(&retry_topic(&group.name, &topic));
        loop {
            let arrived = on_topic.notified();
            let retried = on_retry.notified();
            tokio::pin!(arrived, retried);
            arrived.as_mut().enable();
            retried.as_mut().enable();
            let job = {
                let (delivery, owned) = (delivery.clone(), owned.clone());
                move || {
                    let (group, client_id, topic, filter) = &*owned;
                    delivery.receive(&Receive { group, client_id, topic, filter, batch, invisible_ms, auto_renew })
                }
            };
            let received = if !self.cluster.serving_reads() {
                // A slave hands out messages only while its master is down.
                Ok(Vec::new())
            } else {
                // A filter plugin runs inside `receive`.
                match super::off_the_runtime_if(filtered, "receive", job).await {
                    Some(received) => received,
                    None => return fail(status(Code::InternalServerError, "the receive could not be completed")),
                }
            };
            let got = match received {
                Ok(got) => got,
                Err(err) => return fail(from_delivery(&err)),
            };
            if !got.is_empty() {
                if !self.cluster.is_master() {
                    self.cluster.mark_served();
                }
                let mut out = vec![receive_status(ok())];
                for d in &got {
                    match convert::delivered(d, invisible_ms) {
                        Ok(message) => {
                            out.push(pb::ReceiveMessageResponse { content: Some(Content::Message(message)) })
                        }
                        Err(status) => {
                            static UNENCODED: Throttle = Throttle::per_second(5);
                            if let Some(suppressed) = UNENCODED.admit() {
                                tracing::warn!(?status, suppressed, "a delivered message could not be encoded");
                            }
                        }
                    }
                }
                out.push(delivery_timestamp(self.broker.now_ms()));
                return out;
            }
            let now = Instant::now();
            if now >= end {
                return vec![
                    receive_status(status(Code::MessageNotFound, "no new message")),
                    delivery_timestamp(self.broker.now_ms()),
                ];
            }
            let wait = (end - now).min(RECHECK_INTERVAL);
            tokio::select! {
                _ = &mut arrived => {}
                _ = &mut retried => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    pub fn ack_message(&self, client_id: &str, request: &pb::AckMessageRequest) -> pb::AckMessageResponse {
        let group = match self.group(request.group.as_ref()) {
            Ok(group) => group,
            Err(status) => return pb::AckMessageResponse { status: Some(status), entries: Vec::new() },
        };
        let entries: Vec<pb::AckMessageResultEntry> = request
            .entries
            .iter()
            .map(|e| {
                let status = match self.broker.delivery().ack(&group, client_id, &e.receipt_handle) {
                    Ok(()) => {
                        if !self.cluster.is_master() {
                            self.cluster.mark_served();
                        }
                        ok()
                    }
                    Err(err) => from_delivery(&err),
                };
                pb::AckMessageResultEntry {
                    message_id: e.message_id.clone(),
                    receipt_handle: e.receipt_handle.clone(),
                    status: Some(status),
                }
            })
            .collect();
        let status = if entries.is_empty() {
            status(Code::BadRequest, "no entries to acknowledge")
        } else {
            overall(entries.iter().filter_map(|e| e.status.as_ref()))
        };
        pb::AckMessageResponse { status: Some(status), entries }
    }

    pub fn change_invisible_duration(
        &self,
        client_id: &str,
        request: &pb::ChangeInvisibleDurationRequest,
    ) -> pb::ChangeInvisibleDurationResponse {
        let fail = |status| pb::ChangeInvisibleDurationResponse { status: Some(status), receipt_handle: String::new() };
        let group = match self.group(request.group.as_ref()) {
            Ok(group) => group,
            Err(status) => return fail(status),
        };
        let ms = request.invisible_duration.as_ref().map(duration_ms).unwrap_or(0);
        if !(0..=self.config.invisible_ms_max).contains(&ms) {
            return fail(status(Code::IllegalInvisibleTime, format!("invisible duration {ms} ms is out of range")));
        }
        match self.broker.delivery().change_invisible(&group, client_id, &request.receipt_handle, ms) {
            Ok(handle) => pb::ChangeInvisibleDurationResponse { status: Some(ok()), receipt_handle: handle },
            Err(err) => fail(from_delivery(&err)),
        }
    }

    pub async fn forward_to_dead_letter_queue(
        &self,
        client_id: &str,
        request: pb::ForwardMessageToDeadLetterQueueRequest,
    ) -> pb::ForwardMessageToDeadLetterQueueResponse {
        let group = match self.group(request.group.as_ref()) {
            Ok(group) => group,
            Err(status) => return pb::ForwardMessageToDeadLetterQueueResponse { status: Some(status) },
        };
        let delivery = self.broker.delivery().clone();
        let client_id = client_id.to_owned();
        // Storing the dead-letter copy waits for the store.
        let result =
            tokio::task::spawn_blocking(move || delivery.forward_to_dlq(&group, &client_id, &request.receipt_handle))
                .await;
        let status = match result {
            Ok(Ok(())) => ok(),
            Ok(Err(err)) => from_delivery(&err),
            Err(_) => named(Code::InternalServerError),
        };
        pb::ForwardMessageToDeadLetterQueueResponse { status: Some(status) }
    }

    /// The consumer group a request names: created with defaults on first use when allowed.
    pub fn group(&self, resource: Option<&pb::Resource>) -> Result<GroupConfig, pb::Status> {
        let name = resource.map(|r| r.name.as_str()).unwrap_or_default();
        if let Some(group) = self.broker.metadata().group(name) {
            return Ok(group);
        }
        if !self.broker.config().auto_create_groups {
            return Err(status(Code::ConsumerGroupNotFound, format!("consumer group {name:?} does not exist")));
        }
        self.broker.metadata().group_or_default(name).map_err(|e| super::status::from_metadata(&e))
    }
}
