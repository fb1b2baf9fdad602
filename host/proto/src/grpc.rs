//! The RocketMQ v2 gRPC protocol (`apache.rocketmq.v2`), generated from `proto/` at build time.
//!
//! Message, service and field names follow the public schema so the official clients interoperate.

#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod v2 {
    tonic::include_proto!("apache.rocketmq.v2");
}
