//! EndTransaction, and the check-back that asks a live producer about an orphaned transaction over
//! its Telemetry stream (RecoverOrphanedTransactionCommand).

use std::sync::atomic::{AtomicUsize, Ordering};

use ferrymq_broker::transaction::{Resolution, TransactionProber};
use ferrymq_proto::grpc::v2::{self as pb, Code, telemetry_command::Command};
use ferrymq_proto::properties::{self, REAL_QUEUE_ID, REAL_TOPIC};
use ferrymq_store::StoredRecord;

use super::GrpcState;
use super::convert;
use super::status::{from_transaction, named, ok, status};

/// Which producer of a topic is asked next, so checks spread over them.
static NEXT_PRODUCER: AtomicUsize = AtomicUsize::new(0);

impl GrpcState {
    pub async fn end_transaction(&self, request: pb::EndTransactionRequest) -> pb::EndTransactionResponse {
        let reply = |status| pb::EndTransactionResponse { status: Some(status) };
        if request.transaction_id.trim().is_empty() {
            return reply(status(Code::InvalidTransactionId, "transaction id is blank"));
        }
        let resolution = match pb::TransactionResolution::try_from(request.resolution) {
            Ok(pb::TransactionResolution::Commit) => Resolution::Commit,
            Ok(pb::TransactionResolution::Rollback) => Resolution::Rollback,
            // Anything else means "not decided yet": the broker checks again later.
            _ => Resolution::Unknown,
        };
        let transactions = self.broker.transactions().clone();
        let id = request.transaction_id.clone();
        // A commit waits for the store.
        let result = tokio::task::spawn_blocking(move || transactions.end(&id, resolution)).await;
        match result {
            Ok(Ok(())) => match self.cluster.replicated(self.broker.store().log_end()).await {
                Ok(()) => reply(ok()),
                Err(failure) => reply(super::status::from_replication(failure)),
            },
            Ok(Err(err)) => reply(from_transaction(&err)),
            Err(_) => reply(named(Code::InternalServerError)),
        }
    }
}

impl TransactionProber for GrpcState {
    fn probe(&self, topic: &str, transaction_id: &str, half: &StoredRecord) -> bool {
        let producers = self.clients.producers_of(topic);
        if producers.is_empty() {
            return false;
        }
        let Ok(record) = half.decode() else { return false };
        let queue_id = properties::get(record.properties, REAL_QUEUE_ID).and_then(|q| q.parse().ok()).unwrap_or(0);
        let real_topic = properties::get(record.properties, REAL_TOPIC).unwrap_or(topic);
        let mut message = convert::message(real_topic, &record, queue_id, record.meta.queue_offset);
        if let Some(sys) = message.system_properties.as_mut() {
            sys.message_type = pb::MessageType::Transaction as i32;
        }
        let command = pb::TelemetryCommand {
            status: Some(ok()),
            command: Some(Command::RecoverOrphanedTransactionCommand(pb::RecoverOrphanedTransactionCommand {
                message: Some(message),
                transaction_id: transaction_id.to_owned(),
            })),
        };
        let start = NEXT_PRODUCER.fetch_add(1, Ordering::Relaxed);
        // Try each producer once, starting with the next in turn; one with a full queue is skipped.
        for i in 0..producers.len() {
            let (client, sender) = &producers[(start + i) % producers.len()];
            if sender.try_send(Ok(command.clone())).is_ok() {
                tracing::debug!(%client, %transaction_id, "asked a producer about an orphaned transaction");
                return true;
            }
        }
        false
    }
}
