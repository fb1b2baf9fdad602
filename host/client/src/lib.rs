//! A Rust client for the RocketMQ 5 gRPC protocol (`apache.rocketmq.v2.MessagingService`) as ferrymq
//! serves it: route lookup, batched sends, receive with invisible time, renewal of that time, and
//! acknowledgement.
//!
//! It is deliberately small: no telemetry stream, no client-side retry policy, no route cache. Each
//! call is one RPC and its result; callers that want retries or load balancing build them on top (the
//! workload runner behind `ferrymq bench` lives in `ferrymq-bench`).

mod client;
mod error;
mod message;

pub use client::{Client, ClientOptions, Receive};
pub use error::ClientError;
pub use message::{Kind, Message, MessageIds, Received, ReceivedKind, SendReceipt, now_ms};

/// The generated protocol types, for callers that need a field this client does not surface.
pub use ferrymq_proto::grpc::v2 as pb;
