//! The Settings reply on a client's Telemetry stream: the client's own settings plus what the broker
//! decides (retry policy, body limit, batch size, long-polling time). Every official client needs
//! some of these fields to work at all (see `docs/compatibility.md`).

use ferrymq_broker::metadata::GroupConfig;
use ferrymq_proto::grpc::v2::{
    self as pb, CustomizedBackoff, ExponentialBackoff, Metric, Publishing, RetryPolicy, Subscription, retry_policy,
    settings::PubSub,
};

use super::convert::duration;

/// Producer retry policy: 3 attempts, exponential backoff from 10 ms to 1 s.
pub const PRODUCER_MAX_ATTEMPTS: i32 = 3;
const PRODUCER_BACKOFF_INITIAL_MS: i64 = 10;
const PRODUCER_BACKOFF_MAX_MS: i64 = 1_000;
/// Messages a consumer asks for per receive.
pub const RECEIVE_BATCH_SIZE: i32 = 32;

/// The reply to a producer's Settings.
pub fn for_producer(client: &pb::Settings, publishing: &Publishing, body_bytes_max: usize) -> pb::Settings {
    pb::Settings {
        backoff_policy: Some(RetryPolicy {
            max_attempts: PRODUCER_MAX_ATTEMPTS,
            strategy: Some(retry_policy::Strategy::ExponentialBackoff(ExponentialBackoff {
                initial: Some(duration(PRODUCER_BACKOFF_INITIAL_MS)),
                max: Some(duration(PRODUCER_BACKOFF_MAX_MS)),
                multiplier: 2.0,
            })),
        }),
        pub_sub: Some(PubSub::Publishing(Publishing {
            topics: publishing.topics.clone(),
            max_body_size: i32::try_from(body_bytes_max).unwrap_or(i32::MAX),
            validate_message_type: true,
        })),
        metric: Some(Metric { on: false, endpoints: None }),
        ..client.clone()
    }
}

/// The reply to a consumer's Settings, with its group's policy.
pub fn for_consumer(
    client: &pb::Settings,
    subscription: &Subscription,
    group: &GroupConfig,
    long_polling_ms: i64,
) -> pb::Settings {
    pb::Settings {
        backoff_policy: Some(RetryPolicy {
            max_attempts: i32::try_from(group.max_attempts).unwrap_or(i32::MAX),
            strategy: Some(retry_policy::Strategy::CustomizedBackoff(CustomizedBackoff {
                next: group.retry_backoff_ms.iter().map(|&ms| duration(ms as i64)).collect(),
            })),
        }),
        pub_sub: Some(PubSub::Subscription(Subscription {
            group: subscription.group.clone(),
            subscriptions: subscription.subscriptions.clone(),
            fifo: Some(group.fifo),
            receive_batch_size: Some(RECEIVE_BATCH_SIZE),
            long_polling_timeout: Some(duration(long_polling_ms)),
            ..subscription.clone()
        })),
        metric: Some(Metric { on: false, endpoints: None }),
        ..client.clone()
    }
}
