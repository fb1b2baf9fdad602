//! What can go wrong talking to a broker.

use ferrymq_proto::grpc::v2::Code;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address could not be turned into an endpoint.
    #[error("invalid broker address {address:?}: {source}")]
    Address {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The client id cannot travel in a gRPC header.
    #[error("invalid client id {client_id:?}: {source}")]
    ClientId {
        client_id: String,
        #[source]
        source: tonic::metadata::errors::InvalidMetadataValue,
    },
    /// The connection could not be made or broke.
    #[error("cannot reach the broker at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The call failed at the gRPC level (connection lost, deadline, malformed request).
    #[error("{rpc} failed: {status}")]
    Rpc {
        rpc: &'static str,
        #[source]
        status: tonic::Status,
    },
    /// The broker answered with a business error (`apache.rocketmq.v2.Code`).
    #[error("{rpc}: {}: {message}", code_name(*.code))]
    Broker { rpc: &'static str, code: i32, message: String },
    /// The broker answered with something this client cannot use.
    #[error("{rpc}: unexpected answer: {reason}")]
    Protocol { rpc: &'static str, reason: String },
}

impl ClientError {
    /// The broker's status code, when the broker refused the request.
    pub fn code(&self) -> Option<i32> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn code_name(code: i32) -> String {
    Code::try_from(code).map_or_else(|_| format!("code {code}"), |c| c.as_str_name().to_owned())
}

/// `Ok` when a response's status is OK (or MULTIPLE_RESULTS, whose entries carry their own status).
pub(crate) fn check(rpc: &'static str, status: Option<&ferrymq_proto::grpc::v2::Status>) -> Result<(), ClientError> {
    let Some(status) = status else {
        return Err(ClientError::Protocol { rpc, reason: "the response has no status".into() });
    };
    if status.code == Code::Ok as i32 || status.code == Code::MultipleResults as i32 {
        Ok(())
    } else {
        Err(ClientError::Broker { rpc, code: status.code, message: status.message.clone() })
    }
}
