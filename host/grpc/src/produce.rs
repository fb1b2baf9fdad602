//! SendMessage: check, store, and report each message of a request.

use std::net::SocketAddr;

use ferrymq_proto::grpc::v2::{self as pb, Code};
use ferrymq_proto::throttle::Throttle;
use tokio::sync::oneshot;

use super::GrpcState;
use super::convert;
use super::status::{from_replication, from_send, ok, overall, status};

/// Most messages in one SendMessage request.
pub const SEND_BATCH_MAX: usize = 1024;

enum Pending {
    Failed(String, pb::Status),
    Stored(String, oneshot::Receiver<Result<ferrymq_broker::SendReceipt, ferrymq_broker::SendError>>),
}

impl GrpcState {
    pub async fn send_message(
        &self,
        request: pb::SendMessageRequest,
        peer: Option<SocketAddr>,
    ) -> pb::SendMessageResponse {
        let fail = |status| pb::SendMessageResponse { status: Some(status), entries: Vec::new() };
        if request.messages.is_empty() {
            return fail(status(Code::BadRequest, "no messages to send"));
        }
        if request.messages.len() > SEND_BATCH_MAX {
            return fail(status(Code::PayloadTooLarge, format!("more than {SEND_BATCH_MAX} messages in one request")));
        }
        let routed =
            request.messages.iter().any(|m| m.topic.as_ref().is_some_and(|t| self.broker.runs_plugins(&t.name, None)));
        let converted: Vec<(String, Result<_, pb::Status>)> = request
            .messages
            .into_iter()
            .map(|message| {
                let id = message.system_properties.as_ref().map(|s| s.message_id.clone()).unwrap_or_default();
                (id, convert::outgoing(message, peer))
            })
            .collect();
        let broker = self.broker.clone();
        let submit = move || {
            // In request order, so that a FIFO producer's batch keeps its order.
            converted
                .into_iter()
                .map(|(id, outgoing)| match outgoing {
                    Err(status) => Pending::Failed(id, status),
                    Ok(outgoing) => {
                        let (tx, rx) = oneshot::channel();
                        broker.send(&outgoing, Box::new(move |result| drop(tx.send(result))));
                        Pending::Stored(id, rx)
                    }
                })
                .collect::<Vec<_>>()
        };
        // A route plugin runs inside `send`.
        let Some(pending) = super::off_the_runtime_if(routed, "send", submit).await else {
            return fail(status(Code::InternalServerError, "the send could not be completed"));
        };
        let mut entries = Vec::with_capacity(pending.len());
        // Sync replication: one wait covers every message of the request.
        let mut replicate_to = 0u64;
        for p in pending {
            let entry = match p {
                Pending::Failed(message_id, status) => {
                    pb::SendResultEntry { status: Some(status), message_id, ..pb::SendResultEntry::default() }
                }
                Pending::Stored(message_id, rx) => match rx.await {
                    Ok(Ok(receipt)) => {
                        replicate_to = replicate_to.max(receipt.log_end);
                        pb::SendResultEntry {
                            status: Some(ok()),
                            message_id: receipt.message_id,
                            transaction_id: receipt.transaction_id.unwrap_or_default(),
                            offset: receipt.queue_offset as i64,
                            recall_handle: String::new(),
                        }
                    }
                    Ok(Err(err)) => pb::SendResultEntry {
                        status: Some(from_send(&err)),
                        message_id,
                        ..pb::SendResultEntry::default()
                    },
                    Err(_) => pb::SendResultEntry {
                        status: Some(status(Code::InternalServerError, "the store stopped before answering")),
                        message_id,
                        ..pb::SendResultEntry::default()
                    },
                },
            };
            entries.push(entry);
        }
        if let Err(failure) = self.cluster.replicated(replicate_to).await {
            let failed = from_replication(failure);
            static UNREPLICATED: Throttle = Throttle::per_second(5);
            if let Some(suppressed) = UNREPLICATED.admit() {
                tracing::warn!(code = ?failure, end = replicate_to, suppressed, "a send is stored but not replicated");
            }
            for entry in entries.iter_mut().filter(|e| e.status.as_ref().is_some_and(|s| s.code == Code::Ok as i32)) {
                entry.status = Some(failed.clone());
            }
        }
        let status = overall(entries.iter().filter_map(|e| e.status.as_ref()));
        pb::SendMessageResponse { status: Some(status), entries }
    }
}
