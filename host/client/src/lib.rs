//! A Rust client for the RocketMQ 5 gRPC protocol (`apache.rocketmq.v2.MessagingService`) as ferrymq
//! serves it: route lookup, batched sends, receive with invisible time, and acknowledgement.
//!
//! It is deliberately small: no telemetry stream, no client-side retry policy, no route cache. Each
//! call is one RPC and its result; callers that want retries or load balancing build them on top. The
//! `bench` feature adds the workload runner behind `ferrymq bench`, which peer-broker drivers reuse so
//! every broker sees the same workload.

mod client;
mod error;
mod message;

#[cfg(feature = "bench")]
pub mod bench;

pub use client::{Client, ClientOptions, Receive};
pub use error::ClientError;
pub use message::{Kind, Message, MessageIds, Received, SendReceipt};

/// The generated protocol types, for callers that need a field this client does not surface.
pub use ferrymq_proto::grpc::v2 as pb;
