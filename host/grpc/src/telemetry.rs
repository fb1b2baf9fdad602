//! Telemetry: the long-lived stream on which a client sends its Settings and the broker answers with
//! the merged Settings, then sends commands (such as transaction checks) for as long as it is open.

use ferrymq_proto::grpc::v2::{self as pb, Code, settings::PubSub, telemetry_command::Command};
use tokio::sync::mpsc;
use tonic::Streaming;

use super::GrpcState;
use super::clients::TELEMETRY_QUEUE_MAX;
use super::settings;
use super::status::{ok, status};
use std::sync::Arc;

impl GrpcState {
    /// Answers one Settings message; `Err` ends the stream (a Settings message must say what it is for).
    fn on_settings(&self, client_id: &str, client: pb::Settings) -> Result<pb::TelemetryCommand, tonic::Status> {
        let merged = match client.pub_sub.as_ref() {
            Some(PubSub::Publishing(publishing)) => {
                settings::for_producer(&client, publishing, self.broker.config().send.body_bytes_max)
            }
            Some(PubSub::Subscription(subscription)) => {
                let group =
                    self.group(subscription.group.as_ref()).map_err(|s| tonic::Status::invalid_argument(s.message))?;
                settings::for_consumer(&client, subscription, &group, self.config.long_polling_ms_max)
            }
            None => return Err(tonic::Status::invalid_argument("Settings must carry publishing or subscription")),
        };
        // Admitted when its stream opened; if it idled out since, its Settings are not kept.
        let _ = self.clients.set_settings(client_id, client);
        Ok(pb::TelemetryCommand { status: Some(ok()), command: Some(Command::Settings(merged)) })
    }

    /// Serves one telemetry stream until the client closes it; returns the stream of commands to the
    /// client.
    pub fn telemetry(
        self: &Arc<Self>,
        client_id: String,
        mut inbound: Streaming<pb::TelemetryCommand>,
    ) -> mpsc::Receiver<Result<pb::TelemetryCommand, tonic::Status>> {
        let (tx, rx) = mpsc::channel(TELEMETRY_QUEUE_MAX);
        // Admitted by the caller (`Clients::admits`); a race past the bound only leaves it untracked.
        let _ = self.clients.attach_telemetry(&client_id, tx.clone());
        let state = self.clone();
        tokio::spawn(async move {
            loop {
                let command = match inbound.message().await {
                    Ok(Some(command)) => command,
                    Ok(None) => break,
                    Err(err) => {
                        tracing::debug!(client = %client_id, %err, "telemetry stream broke");
                        break;
                    }
                };
                let _ = state.clients.touch(&client_id);
                let reply = match command.command {
                    Some(Command::Settings(client)) => state.on_settings(&client_id, client),
                    Some(Command::ThreadStackTrace(_) | Command::VerifyMessageResult(_)) => continue,
                    Some(_) => Ok(pb::TelemetryCommand {
                        status: Some(status(Code::Unsupported, "the broker does not take this command")),
                        command: None,
                    }),
                    None => continue,
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
            state.clients.detach_telemetry(&client_id, &tx);
        });
        rx
    }
}
