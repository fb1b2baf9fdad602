//! RocketMQ status codes: business outcomes travel as a `Status` inside an OK gRPC response.

use ferrymq_broker::SendError;
use ferrymq_broker::delivery::DeliveryError;
use ferrymq_broker::metadata::MetadataError;
use ferrymq_broker::send::SendRejection;
use ferrymq_broker::transaction::TransactionError;
use ferrymq_proto::grpc::v2::{Code, Status};
use ferrymq_store::StoreError;

pub fn ok() -> Status {
    Status { code: Code::Ok as i32, message: "OK".into() }
}

pub fn status(code: Code, message: impl Into<String>) -> Status {
    Status { code: code as i32, message: message.into() }
}

/// The status carrying `code`'s own name as its message (what clients show for some codes).
pub fn named(code: Code) -> Status {
    status(code, code.as_str_name())
}

pub fn from_rejection(rejection: &SendRejection) -> Status {
    let code = match rejection {
        SendRejection::BodyEmpty => Code::MessageBodyEmpty,
        SendRejection::BodyTooLarge { .. } => Code::MessageBodyTooLarge,
        SendRejection::TooManyProperties { .. } | SendRejection::PropertiesTooLarge { .. } => {
            Code::MessagePropertiesTooLarge
        }
        SendRejection::IllegalPropertyKey(_) | SendRejection::IllegalPropertyValue(_) => {
            Code::IllegalMessagePropertyKey
        }
        SendRejection::IllegalTag(_) => Code::IllegalMessageTag,
        SendRejection::IllegalKey(_) => Code::IllegalMessageKey,
        SendRejection::IllegalMessageGroup(_) | SendRejection::GroupNotFifo(_) => Code::IllegalMessageGroup,
        SendRejection::IllegalMessageId(_) => Code::IllegalMessageId,
        SendRejection::IllegalDeliveryTime(_) => Code::IllegalDeliveryTime,
        SendRejection::TopicNotFound(_) => Code::TopicNotFound,
        SendRejection::IllegalTopic(_) => Code::IllegalTopic,
        SendRejection::TypeMismatch { .. } => Code::MessagePropertyConflictWithType,
        SendRejection::Unsupported(_) => Code::Unsupported,
        SendRejection::IllegalRecoveryTime(_) => Code::BadRequest,
        SendRejection::RefusedByPolicy(_) => Code::Forbidden,
    };
    status(code, rejection.to_string())
}

pub fn from_store(err: &StoreError) -> Status {
    match err {
        StoreError::RecordTooLarge { .. } => status(Code::MessageBodyTooLarge, err.to_string()),
        StoreError::InvalidTopic { .. } => status(Code::IllegalTopic, err.to_string()),
        StoreError::ReadOnly => status(
            Code::Forbidden,
            "this broker is a slave: it takes no sends; send to its set's master (see QueryRoute)",
        ),
        // A full disk or a lack of descriptors passes: the clients' retry with back-off is right.
        err if err.is_retryable() => status(Code::TooManyRequests, err.to_string()),
        _ => status(Code::InternalServerError, err.to_string()),
    }
}

pub fn from_send(err: &SendError) -> Status {
    match err {
        SendError::Rejected(rejection) => from_rejection(rejection),
        SendError::Store(err) => from_store(err),
        SendError::Shared(err) => from_send(err),
    }
}

pub fn from_delivery(err: &DeliveryError) -> Status {
    match err {
        DeliveryError::InvalidHandle => named(Code::InvalidReceiptHandle),
        DeliveryError::TopicNotFound(_) => status(Code::TopicNotFound, err.to_string()),
        DeliveryError::Store(_) | DeliveryError::Gone { .. } | DeliveryError::CopyProperties { .. } => {
            status(Code::InternalServerError, err.to_string())
        }
    }
}

pub fn from_transaction(err: &TransactionError) -> Status {
    let code = match err {
        TransactionError::NotFound(_) => Code::InvalidTransactionId,
        TransactionError::Store(_) | TransactionError::HalfWithoutTopic | TransactionError::Properties(_) => {
            Code::InternalServerError
        }
    };
    status(code, err.to_string())
}

pub fn from_metadata(err: &MetadataError) -> Status {
    let code = match err {
        MetadataError::TopicNotFound(_) => Code::TopicNotFound,
        MetadataError::GroupNotFound(_) => Code::ConsumerGroupNotFound,
        MetadataError::InvalidGroup { .. } => Code::IllegalConsumerGroup,
        MetadataError::InvalidTopic { .. } => Code::IllegalTopic,
        MetadataError::TopicConflict(_) | MetadataError::InvalidQueues(_) => Code::BadRequest,
        MetadataError::TooManyGroups { .. } => Code::Forbidden,
        MetadataError::GroupCreationThrottled { .. } => Code::TooManyRequests,
        MetadataError::Persist(_) => Code::InternalServerError,
    };
    status(code, err.to_string())
}

/// The overall status of a batch: the common code of every entry (with the first entry's message,
/// which clients show, e.g. a route plugin's reason), or MULTIPLE_RESULTS.
pub fn overall<'a>(entries: impl IntoIterator<Item = &'a Status>) -> Status {
    let mut first: Option<&Status> = None;
    for entry in entries {
        match first {
            None => first = Some(entry),
            Some(f) if f.code != entry.code => return named(Code::MultipleResults),
            Some(_) => {}
        }
    }
    match first {
        Some(s) if s.code == Code::Ok as i32 => ok(),
        Some(s) => s.clone(),
        None => ok(),
    }
}

/// The status of a send whose sync replication could not be confirmed.
pub fn from_replication(failure: ferrymq_cluster::ReplicationFailure) -> Status {
    match failure {
        ferrymq_cluster::ReplicationFailure::NoSlave => status(
            Code::HaNotAvailable,
            "stored on the master, but no slave is connected to hold a copy (sync replication); the send may be retried",
        ),
        ferrymq_cluster::ReplicationFailure::Timeout => status(
            Code::SlavePersistenceTimeout,
            "stored on the master, but no slave confirmed a copy in time (sync replication); the send may be retried",
        ),
    }
}
