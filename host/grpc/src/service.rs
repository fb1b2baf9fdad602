//! `apache.rocketmq.v2.MessagingService`: each RPC reads the caller's identity and deadline, then
//! hands over to the `GrpcState` method that does the work. Business errors are `Status` codes in an
//! OK response; gRPC errors are reserved for broken requests (no client id, an invalid stream).

use std::pin::Pin;
use std::sync::Arc;

use ferrymq_proto::grpc::v2::{self as pb, Code, messaging_service_server::MessagingService};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use super::GrpcState;
use super::spans;
use super::status::status;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The gRPC service, a cheap handle on the shared state.
#[derive(Clone, Debug)]
pub struct Messaging {
    pub state: Arc<GrpcState>,
}

pub(crate) const CLIENT_ID: &str = "x-mq-client-id";

/// Longest client id accepted (the official clients send about 60 bytes).
pub(crate) const CLIENT_ID_BYTES_MAX: usize = 256;

/// The client's id, from the `x-mq-client-id` header every official client sends.
fn client_id<T>(request: &Request<T>) -> Result<String, Status> {
    match request.metadata().get(CLIENT_ID).and_then(|v| v.to_str().ok()) {
        Some(id) if id.len() > CLIENT_ID_BYTES_MAX => {
            Err(Status::invalid_argument(format!("{CLIENT_ID} is longer than {CLIENT_ID_BYTES_MAX} bytes")))
        }
        Some(id) if !id.is_empty() => Ok(id.to_owned()),
        _ => Err(Status::invalid_argument(format!(
            "{CLIENT_ID} header is required ({})",
            Code::ClientIdRequired.as_str_name()
        ))),
    }
}

/// Milliseconds left before the caller's deadline (`grpc-timeout`), if it set one.
fn deadline_ms<T>(request: &Request<T>) -> Option<i64> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    // The gRPC spec's TimeoutValue: one to eight ASCII digits (no sign); anything else is ignored.
    if !(1..=8).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    Some(match unit {
        "H" => n.saturating_mul(3_600_000),
        "M" => n.saturating_mul(60_000),
        "S" => n.saturating_mul(1_000),
        "m" => n,
        "u" => n / 1_000,
        "n" => n / 1_000_000,
        _ => return None,
    })
}

fn stream<T: Send + 'static>(items: Vec<T>) -> BoxStream<T> {
    Box::pin(tokio_stream::iter(items.into_iter().map(Ok)))
}

#[tonic::async_trait]
impl MessagingService for Messaging {
    async fn query_route(
        &self,
        request: Request<pb::QueryRouteRequest>,
    ) -> Result<Response<pb::QueryRouteResponse>, Status> {
        self.state.rpcs.count("QueryRoute");
        let _span = spans::rpc("QueryRoute", &request).entered();
        if let Ok(id) = client_id(&request) {
            // An untracked client (beyond clients_max) is still served.
            let _ = self.state.clients.touch(&id);
        }
        Ok(Response::new(self.state.query_route(request.get_ref())))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.state.rpcs.count("Heartbeat");
        let _span = spans::rpc("Heartbeat", &request).entered();
        let id = client_id(&request)?;
        if !self.state.clients.touch(&id) {
            let status = status(Code::TooManyRequests, "the broker tracks as many clients as it may; try again later");
            return Ok(Response::new(pb::HeartbeatResponse { status: Some(status) }));
        }
        let status = match request.get_ref().group.as_ref().filter(|g| !g.name.is_empty()) {
            Some(group) => self.state.group(Some(group)).map(|_| super::status::ok()).unwrap_or_else(|s| s),
            None => super::status::ok(),
        };
        Ok(Response::new(pb::HeartbeatResponse { status: Some(status) }))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        self.state.rpcs.count("SendMessage");
        let span = spans::rpc("SendMessage", &request);
        let peer = request.remote_addr();
        if let Ok(id) = client_id(&request) {
            // An untracked client (beyond clients_max) is still served.
            let _ = self.state.clients.touch(&id);
        }
        Ok(Response::new(self.state.send_message(request.into_inner(), peer).instrument(span).await))
    }

    async fn query_assignment(
        &self,
        request: Request<pb::QueryAssignmentRequest>,
    ) -> Result<Response<pb::QueryAssignmentResponse>, Status> {
        self.state.rpcs.count("QueryAssignment");
        let _span = spans::rpc("QueryAssignment", &request).entered();
        Ok(Response::new(self.state.query_assignment(request.get_ref())))
    }

    type ReceiveMessageStream = BoxStream<pb::ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        request: Request<pb::ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, Status> {
        self.state.rpcs.count("ReceiveMessage");
        let span = spans::rpc("ReceiveMessage", &request);
        let id = client_id(&request)?;
        let _ = self.state.clients.touch(&id);
        let deadline = deadline_ms(&request);
        let responses = self.state.receive_message(&id, request.into_inner(), deadline).instrument(span).await;
        Ok(Response::new(stream(responses)))
    }

    async fn ack_message(
        &self,
        request: Request<pb::AckMessageRequest>,
    ) -> Result<Response<pb::AckMessageResponse>, Status> {
        self.state.rpcs.count("AckMessage");
        let _span = spans::rpc("AckMessage", &request).entered();
        let id = client_id(&request)?;
        Ok(Response::new(self.state.ack_message(&id, request.get_ref())))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<pb::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<pb::ForwardMessageToDeadLetterQueueResponse>, Status> {
        self.state.rpcs.count("ForwardMessageToDeadLetterQueue");
        let span = spans::rpc("ForwardMessageToDeadLetterQueue", &request);
        let id = client_id(&request)?;
        Ok(Response::new(self.state.forward_to_dead_letter_queue(&id, request.into_inner()).instrument(span).await))
    }

    type PullMessageStream = BoxStream<pb::PullMessageResponse>;

    async fn pull_message(
        &self,
        request: Request<pb::PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, Status> {
        self.state.rpcs.count("PullMessage");
        let span = spans::rpc("PullMessage", &request);
        let deadline = deadline_ms(&request);
        Ok(Response::new(stream(self.state.pull_message(request.into_inner(), deadline).instrument(span).await)))
    }

    async fn update_offset(
        &self,
        request: Request<pb::UpdateOffsetRequest>,
    ) -> Result<Response<pb::UpdateOffsetResponse>, Status> {
        self.state.rpcs.count("UpdateOffset");
        let _span = spans::rpc("UpdateOffset", &request).entered();
        Ok(Response::new(self.state.update_offset(request.get_ref())))
    }

    async fn get_offset(
        &self,
        request: Request<pb::GetOffsetRequest>,
    ) -> Result<Response<pb::GetOffsetResponse>, Status> {
        self.state.rpcs.count("GetOffset");
        let _span = spans::rpc("GetOffset", &request).entered();
        Ok(Response::new(self.state.get_offset(request.get_ref())))
    }

    async fn query_offset(
        &self,
        request: Request<pb::QueryOffsetRequest>,
    ) -> Result<Response<pb::QueryOffsetResponse>, Status> {
        self.state.rpcs.count("QueryOffset");
        let _span = spans::rpc("QueryOffset", &request).entered();
        Ok(Response::new(self.state.query_offset(request.get_ref())))
    }

    async fn end_transaction(
        &self,
        request: Request<pb::EndTransactionRequest>,
    ) -> Result<Response<pb::EndTransactionResponse>, Status> {
        self.state.rpcs.count("EndTransaction");
        let span = spans::rpc("EndTransaction", &request);
        if let Ok(id) = client_id(&request) {
            // An untracked client (beyond clients_max) is still served.
            let _ = self.state.clients.touch(&id);
        }
        Ok(Response::new(self.state.end_transaction(request.into_inner()).instrument(span).await))
    }

    type TelemetryStream = BoxStream<pb::TelemetryCommand>;

    async fn telemetry(
        &self,
        request: Request<tonic::Streaming<pb::TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, Status> {
        self.state.rpcs.count("Telemetry");
        let _span = spans::rpc("Telemetry", &request).entered();
        let id = client_id(&request)?;
        if !self.state.clients.admits(&id) {
            return Err(Status::resource_exhausted("the broker tracks as many clients as it may; try again later"));
        }
        let rx = self.state.telemetry(id, request.into_inner());
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn notify_client_termination(
        &self,
        request: Request<pb::NotifyClientTerminationRequest>,
    ) -> Result<Response<pb::NotifyClientTerminationResponse>, Status> {
        self.state.rpcs.count("NotifyClientTermination");
        let _span = spans::rpc("NotifyClientTermination", &request).entered();
        let id = client_id(&request)?;
        self.state.broker.delivery().release_client(&id);
        self.state.clients.remove(&id);
        Ok(Response::new(pb::NotifyClientTerminationResponse { status: Some(super::status::ok()) }))
    }

    async fn change_invisible_duration(
        &self,
        request: Request<pb::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<pb::ChangeInvisibleDurationResponse>, Status> {
        self.state.rpcs.count("ChangeInvisibleDuration");
        let _span = spans::rpc("ChangeInvisibleDuration", &request).entered();
        let id = client_id(&request)?;
        Ok(Response::new(self.state.change_invisible_duration(&id, request.get_ref())))
    }

    async fn recall_message(
        &self,
        _request: Request<pb::RecallMessageRequest>,
    ) -> Result<Response<pb::RecallMessageResponse>, Status> {
        self.state.rpcs.count("RecallMessage");
        let _span = spans::rpc("RecallMessage", &_request).entered();
        let status = status(Code::Unsupported, "recalling delay messages is not supported by this broker yet");
        Ok(Response::new(pb::RecallMessageResponse { status: Some(status), message_id: String::new() }))
    }

    async fn sync_lite_subscription(
        &self,
        _request: Request<pb::SyncLiteSubscriptionRequest>,
    ) -> Result<Response<pb::SyncLiteSubscriptionResponse>, Status> {
        self.state.rpcs.count("SyncLiteSubscription");
        let _span = spans::rpc("SyncLiteSubscription", &_request).entered();
        let status = status(Code::Unsupported, "lite topics are not supported by this broker");
        Ok(Response::new(pb::SyncLiteSubscriptionResponse { status: Some(status) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_timeout(value: &str) -> Request<()> {
        let mut request = Request::new(());
        request.metadata_mut().insert("grpc-timeout", value.parse().expect("header"));
        request
    }

    #[test]
    fn grpc_timeouts_of_every_unit_are_read() {
        assert_eq!(deadline_ms(&with_timeout("3S")), Some(3_000));
        assert_eq!(deadline_ms(&with_timeout("2999m")), Some(2_999));
        assert_eq!(deadline_ms(&with_timeout("1M")), Some(60_000));
        assert_eq!(deadline_ms(&with_timeout("5000000u")), Some(5_000));
        assert_eq!(deadline_ms(&with_timeout("x")), None);
        for not_a_timeout in ["-5S", "+5S", "123456789m", "S", "5 S"] {
            assert_eq!(deadline_ms(&with_timeout(not_a_timeout)), None, "{not_a_timeout}");
        }
        assert_eq!(deadline_ms(&Request::new(())), None);
    }
}
