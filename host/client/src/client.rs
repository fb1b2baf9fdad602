//! One connection to one broker, and the RPCs a producer and a simple consumer need.

use std::time::Duration;

use ferrymq_proto::grpc::v2::{self as pb, messaging_service_client::MessagingServiceClient};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::error::{ClientError, check};
use crate::message::{Message, MessageIds, Received, SendReceipt, duration, now_ms};

/// Largest gRPC message this client sends or accepts: a full batch of 4 MiB bodies fits.
const MESSAGE_BYTES_MAX: usize = 64 << 20;

/// How to connect.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Sent as `x-mq-client-id`; brokers use it to tell clients apart.
    pub client_id: String,
    pub connect_timeout: Duration,
    /// Deadline of each unary call (receives add their long-polling time).
    pub request_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        ClientOptions {
            client_id: format!("{host}@{}@ferrymq-client@{nanos:x}", std::process::id()),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// What a receive asks for.
#[derive(Clone, Debug)]
pub struct Receive<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    /// A TAG expression (`*`, `A || B`).
    pub tag_expression: &'a str,
    /// At most this many messages (the broker caps it at 32).
    pub batch: u32,
    /// How long received messages stay invisible to others before they are delivered again.
    pub invisible: Duration,
    /// How long the broker may hold the call open when no message is ready.
    pub long_polling: Duration,
}

/// A connection to a broker's gRPC endpoint. Cloning is cheap and shares the connection.
#[derive(Clone, Debug)]
pub struct Client {
    rpc: MessagingServiceClient<Channel>,
    options: ClientOptions,
    client_id: MetadataValue<tonic::metadata::Ascii>,
    address: String,
    ids: std::sync::Arc<MessageIds>,
}

impl Client {
    /// Connects to `address` (`host:port`, or a full `http://` URI).
    pub async fn connect(address: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let uri = if address.contains("://") { address.to_owned() } else { format!("http://{address}") };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|source| ClientError::Address { address: address.to_owned(), source })?
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            .http2_adaptive_window(true);
        let channel =
            endpoint.connect().await.map_err(|source| ClientError::Connect { address: address.to_owned(), source })?;
        let client_id = options
            .client_id
            .parse()
            .map_err(|source| ClientError::ClientId { client_id: options.client_id.clone(), source })?;
        Ok(Client {
            rpc: MessagingServiceClient::new(channel)
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX),
            options,
            client_id,
            address: address.to_owned(),
            ids: std::sync::Arc::new(MessageIds::new()),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn request<T>(&self, body: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(body);
        request.set_timeout(timeout);
        let metadata = request.metadata_mut();
        metadata.insert("x-mq-client-id", self.client_id.clone());
        metadata.insert("x-mq-language", MetadataValue::from_static("RUST"));
        metadata.insert("x-mq-protocol", MetadataValue::from_static("v2"));
        metadata.insert("x-mq-client-version", MetadataValue::from_static(env!("CARGO_PKG_VERSION")));
        request
    }

    /// The queues of `topic`, as the broker routes them.
    pub async fn route(&self, topic: &str) -> Result<Vec<pb::MessageQueue>, ClientError> {
        const RPC: &str = "QueryRoute";
        let body = pb::QueryRouteRequest { topic: Some(resource(topic)), endpoints: Some(self.endpoints()) };
        let response = self
            .rpc
            .clone()
            .query_route(self.request(body, self.options.request_timeout))
            .await
            .map_err(rpc_failed(RPC))?
            .into_inner();
        check(RPC, response.status.as_ref())?;
        Ok(response.message_queues)
    }

    /// Where `group` should receive `topic` from: one queue per broker set (id -1, "any queue of
    /// that broker") for ordinary groups, one per queue for FIFO groups.
    pub async fn assignment(&self, group: &str, topic: &str) -> Result<Vec<pb::MessageQueue>, ClientError> {
        const RPC: &str = "QueryAssignment";
        let body = pb::QueryAssignmentRequest {
            topic: Some(resource(topic)),
            group: Some(resource(group)),
            endpoints: Some(self.endpoints()),
        };
        let response = self
            .rpc
            .clone()
            .query_assignment(self.request(body, self.options.request_timeout))
            .await
            .map_err(rpc_failed(RPC))?
            .into_inner();
        check(RPC, response.status.as_ref())?;
        Ok(response.assignments.into_iter().filter_map(|a| a.message_queue).collect())
    }

    /// Sends `messages` in one request (all to one topic; at most 1,024 for ferrymq) and returns one
    /// receipt per message, in order. Fails as a whole if any message was refused.
    pub async fn send(&self, messages: Vec<Message>) -> Result<Vec<SendReceipt>, ClientError> {
        self.send_each(messages).await?.into_iter().collect()
    }

    /// Sends `messages` in one request and returns each one's outcome, in order: a refused message
    /// does not hide that the others were stored. Fails as a whole only when the request did.
    pub async fn send_each(
        &self,
        messages: Vec<Message>,
    ) -> Result<Vec<Result<SendReceipt, ClientError>>, ClientError> {
        const RPC: &str = "SendMessage";
        let now = now_ms();
        let born_host = "127.0.0.1";
        let count = messages.len();
        let messages = messages.into_iter().map(|m| m.into_pb(&self.ids, born_host, now)).collect();
        let response = self
            .rpc
            .clone()
            .send_message(self.request(pb::SendMessageRequest { messages }, self.options.request_timeout))
            .await
            .map_err(rpc_failed(RPC))?
            .into_inner();
        if response.entries.len() != count {
            // The request was refused before its messages were looked at.
            check(RPC, response.status.as_ref())?;
            let reason = format!("{} entries answered for {count} messages", response.entries.len());
            return Err(ClientError::Protocol { rpc: RPC, reason });
        }
        Ok(response
            .entries
            .into_iter()
            .map(|entry| {
                check(RPC, entry.status.as_ref())?;
                Ok(SendReceipt { message_id: entry.message_id, offset: entry.offset })
            })
            .collect())
    }

    /// Receives up to `batch` messages, waiting up to the long-polling time for the first. An empty
    /// result means none arrived in time.
    pub async fn receive(&self, ask: &Receive<'_>) -> Result<Vec<Received>, ClientError> {
        const RPC: &str = "ReceiveMessage";
        let body = pb::ReceiveMessageRequest {
            group: Some(resource(ask.group)),
            message_queue: Some(pb::MessageQueue {
                topic: Some(resource(ask.topic)),
                id: -1,
                permission: pb::Permission::ReadWrite as i32,
                broker: None,
                accept_message_types: Vec::new(),
            }),
            filter_expression: Some(pb::FilterExpression {
                r#type: pb::FilterType::Tag as i32,
                expression: ask.tag_expression.to_owned(),
            }),
            batch_size: ask.batch as i32,
            invisible_duration: Some(duration(ask.invisible.as_millis() as u64)),
            auto_renew: false,
            long_polling_timeout: Some(duration(ask.long_polling.as_millis() as u64)),
            attempt_id: None,
        };
        let timeout = self.options.request_timeout + ask.long_polling;
        let mut stream =
            self.rpc.clone().receive_message(self.request(body, timeout)).await.map_err(rpc_failed(RPC))?.into_inner();
        let mut received = Vec::new();
        while let Some(response) = stream.message().await.map_err(rpc_failed(RPC))? {
            match response.content {
                Some(pb::receive_message_response::Content::Message(message)) => {
                    received.push(Received::from_pb(message));
                }
                Some(pb::receive_message_response::Content::Status(status)) => {
                    // No message before the long-polling time ran out is not an error.
                    if status.code != pb::Code::MessageNotFound as i32 {
                        check(RPC, Some(&status))?;
                    }
                }
                Some(pb::receive_message_response::Content::DeliveryTimestamp(_)) | None => {}
            }
        }
        Ok(received)
    }

    /// Acknowledges received messages of one topic for `group`.
    pub async fn ack(&self, group: &str, topic: &str, received: &[Received]) -> Result<(), ClientError> {
        const RPC: &str = "AckMessage";
        let entries = received
            .iter()
            .map(|r| pb::AckMessageEntry {
                message_id: r.message_id.clone(),
                receipt_handle: r.receipt_handle.clone(),
                lite_topic: None,
            })
            .collect();
        let body = pb::AckMessageRequest { group: Some(resource(group)), topic: Some(resource(topic)), entries };
        let response = self
            .rpc
            .clone()
            .ack_message(self.request(body, self.options.request_timeout))
            .await
            .map_err(rpc_failed(RPC))?
            .into_inner();
        check(RPC, response.status.as_ref())?;
        response.entries.iter().try_for_each(|entry| check(RPC, entry.status.as_ref()))
    }

    /// Keeps a received message invisible for `invisible` from now (`ChangeInvisibleDuration`) and
    /// returns the receipt handle that replaces `receipt_handle`: later renewals and the ack must use
    /// it, as a broker that issues a new handle refuses the old one from then on. Renewing does not
    /// count as a delivery attempt; a message whose invisible time already ran out cannot be renewed
    /// (the broker answers `INVALID_RECEIPT_HANDLE`).
    pub async fn change_invisible(
        &self,
        group: &str,
        topic: &str,
        message_id: &str,
        receipt_handle: &str,
        invisible: Duration,
    ) -> Result<String, ClientError> {
        const RPC: &str = "ChangeInvisibleDuration";
        let body = pb::ChangeInvisibleDurationRequest {
            group: Some(resource(group)),
            topic: Some(resource(topic)),
            receipt_handle: receipt_handle.to_owned(),
            invisible_duration: Some(duration(invisible.as_millis() as u64)),
            message_id: message_id.to_owned(),
            lite_topic: None,
            suspend: None,
        };
        let response = self
            .rpc
            .clone()
            .change_invisible_duration(self.request(body, self.options.request_timeout))
            .await
            .map_err(rpc_failed(RPC))?
            .into_inner();
        check(RPC, response.status.as_ref())?;
        // The protocol lets a broker keep the handle it issued; it then answers with none.
        if response.receipt_handle.is_empty() {
            return Ok(receipt_handle.to_owned());
        }
        Ok(response.receipt_handle)
    }

    /// The offset just past the last message of `queue` (`end`), or its first stored one.
    pub async fn queue_offset(&self, queue: &pb::MessageQueue, end: bool) -> Result<i64, ClientError> {
        const RPC: &str = "QueryOffset";
        let policy = if end { pb::QueryOffsetPolicy::End } else { pb::QueryOffsetPolicy::Beginning };
        let body = pb::QueryOffsetRequest {
            message_queue: Some(queue.clone()),
            query_offset_policy: policy as i32,
            timestamp: None,
        };
        let response = self
            .rpc
            .clone()
            .query_offset(self.request(body, self.options.request_timeout))
            .await
            .map_err(rpc_failed(RPC))?
            .into_inner();
        check(RPC, response.status.as_ref())?;
        Ok(response.offset)
    }

    /// The offset `group` has consumed `queue` up to, `None` when it has consumed none of it.
    pub async fn committed_offset(&self, group: &str, queue: &pb::MessageQueue) -> Result<Option<i64>, ClientError> {
        const RPC: &str = "GetOffset";
        let body = pb::GetOffsetRequest { group: Some(resource(group)), message_queue: Some(queue.clone()) };
        let response = self
            .rpc
            .clone()
            .get_offset(self.request(body, self.options.request_timeout))
            .await
            .map_err(rpc_failed(RPC))?
            .into_inner();
        if response.status.as_ref().is_some_and(|s| s.code == pb::Code::OffsetNotFound as i32) {
            return Ok(None);
        }
        check(RPC, response.status.as_ref())?;
        Ok(Some(response.offset))
    }

    fn endpoints(&self) -> pb::Endpoints {
        let authority = self.address.rsplit("://").next().unwrap_or(&self.address);
        let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "8081"));
        pb::Endpoints {
            scheme: pb::AddressScheme::IPv4 as i32,
            addresses: vec![pb::Address { host: host.to_owned(), port: port.parse().unwrap_or(8081) }],
        }
    }
}

/// The error for a call that failed at the gRPC level.
fn rpc_failed(rpc: &'static str) -> impl Fn(tonic::Status) -> ClientError {
    move |status| ClientError::Rpc { rpc, status }
}

fn resource(name: &str) -> pb::Resource {
    pb::Resource { resource_namespace: String::new(), name: name.to_owned() }
}
