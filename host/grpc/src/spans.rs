//! One tracing span per RPC — the method, the client id, and the topic and group it concerns — so
//! that every log line a request causes can be tied to it.

use ferrymq_proto::grpc::v2 as pb;
use tonic::Request;

use super::service::CLIENT_ID;

/// The topic and group a request concerns, where it names them.
pub(crate) trait Subject {
    fn topic(&self) -> &str {
        ""
    }
    fn group(&self) -> &str {
        ""
    }
}

fn name(resource: Option<&pb::Resource>) -> &str {
    resource.map_or("", |r| r.name.as_str())
}

fn queue_topic(queue: Option<&pb::MessageQueue>) -> &str {
    name(queue.and_then(|q| q.topic.as_ref()))
}

/// `Subject` from the request's fields: `topic` and `group` resources, or the message queue's topic.
macro_rules! subject {
    ($($request:ty => topic: |$t:ident| $topic:expr, group: |$g:ident| $group:expr;)*) => {
        $(impl Subject for $request {
            fn topic(&self) -> &str {
                let $t = self;
                $topic
            }
            fn group(&self) -> &str {
                let $g = self;
                $group
            }
        })*
    };
}

subject! {
    pb::QueryRouteRequest => topic: |r| name(r.topic.as_ref()), group: |_r| "";
    pb::HeartbeatRequest => topic: |_r| "", group: |r| name(r.group.as_ref());
    pb::SendMessageRequest => topic: |r| name(r.messages.first().and_then(|m| m.topic.as_ref())), group: |_r| "";
    pb::QueryAssignmentRequest => topic: |r| name(r.topic.as_ref()), group: |r| name(r.group.as_ref());
    pb::ReceiveMessageRequest => topic: |r| queue_topic(r.message_queue.as_ref()), group: |r| name(r.group.as_ref());
    pb::AckMessageRequest => topic: |r| name(r.topic.as_ref()), group: |r| name(r.group.as_ref());
    pb::ForwardMessageToDeadLetterQueueRequest => topic: |r| name(r.topic.as_ref()), group: |r| name(r.group.as_ref());
    pb::PullMessageRequest => topic: |r| queue_topic(r.message_queue.as_ref()), group: |r| name(r.group.as_ref());
    pb::UpdateOffsetRequest => topic: |r| queue_topic(r.message_queue.as_ref()), group: |r| name(r.group.as_ref());
    pb::GetOffsetRequest => topic: |r| queue_topic(r.message_queue.as_ref()), group: |r| name(r.group.as_ref());
    pb::QueryOffsetRequest => topic: |r| queue_topic(r.message_queue.as_ref()), group: |_r| "";
    pb::EndTransactionRequest => topic: |r| name(r.topic.as_ref()), group: |_r| "";
    pb::NotifyClientTerminationRequest => topic: |_r| "", group: |r| name(r.group.as_ref());
    pb::ChangeInvisibleDurationRequest => topic: |r| name(r.topic.as_ref()), group: |r| name(r.group.as_ref());
    pb::RecallMessageRequest => topic: |r| name(r.topic.as_ref()), group: |_r| "";
    pb::SyncLiteSubscriptionRequest => topic: |r| name(r.topic.as_ref()), group: |r| name(r.group.as_ref());
}

impl Subject for tonic::Streaming<pb::TelemetryCommand> {}

/// The span of one RPC of `method`.
pub(crate) fn rpc<T: Subject>(method: &'static str, request: &Request<T>) -> tracing::Span {
    let client = request.metadata().get(CLIENT_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    let body = request.get_ref();
    tracing::info_span!("rpc", method, client, topic = body.topic(), group = body.group())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_its_topic_and_group() {
        let resource = |n: &str| Some(pb::Resource { name: n.into(), ..Default::default() });
        let ack = pb::AckMessageRequest { group: resource("g"), topic: resource("t"), ..Default::default() };
        assert_eq!((ack.topic(), ack.group()), ("t", "g"));
        let pull = pb::PullMessageRequest {
            group: resource("g"),
            message_queue: Some(pb::MessageQueue { topic: resource("q"), ..Default::default() }),
            ..Default::default()
        };
        assert_eq!((pull.topic(), pull.group()), ("q", "g"));
        assert_eq!((pb::SendMessageRequest::default().topic(), pb::HeartbeatRequest::default().group()), ("", ""));
    }
}
