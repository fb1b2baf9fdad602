//! Messages as this client sends and receives them, and the ids it gives them.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ferrymq_proto::grpc::v2 as pb;

/// The message type a topic accepts (`--type` of `ferrymq admin topic create`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    #[default]
    Normal,
    Fifo,
    Delay,
}

/// A message to send. Topic and body are required; the rest is optional.
#[derive(Clone, Debug, Default)]
pub struct Message {
    pub topic: String,
    pub body: Vec<u8>,
    pub tag: Option<String>,
    pub keys: Vec<String>,
    /// FIFO messages of one group are delivered in order.
    pub message_group: Option<String>,
    /// Delay messages: when to deliver, in milliseconds since the Unix epoch.
    pub delivery_ms: Option<i64>,
    pub properties: Vec<(String, String)>,
    /// The message id to send under; a new one is made when absent. A broker that de-duplicates
    /// answers a second send of an id it holds with the first one's receipt (the zone gateway
    /// forwards each message under its original id).
    pub message_id: Option<String>,
    /// When the message was born (milliseconds since the Unix epoch); now when absent.
    pub born_ms: Option<i64>,
}

impl Message {
    pub fn new(topic: impl Into<String>, body: impl Into<Vec<u8>>) -> Message {
        Message { topic: topic.into(), body: body.into(), ..Message::default() }
    }

    pub fn kind(&self) -> Kind {
        if self.message_group.is_some() {
            Kind::Fifo
        } else if self.delivery_ms.is_some() {
            Kind::Delay
        } else {
            Kind::Normal
        }
    }

    pub(crate) fn into_pb(self, ids: &MessageIds, born_host: &str, now_ms: i64) -> pb::Message {
        let message_type = match self.kind() {
            Kind::Normal => pb::MessageType::Normal,
            Kind::Fifo => pb::MessageType::Fifo,
            Kind::Delay => pb::MessageType::Delay,
        };
        let message_id = self.message_id.unwrap_or_else(|| ids.next());
        pb::Message {
            topic: Some(pb::Resource { resource_namespace: String::new(), name: self.topic }),
            user_properties: self.properties.into_iter().collect(),
            system_properties: Some(pb::SystemProperties {
                tag: self.tag,
                keys: self.keys,
                message_id,
                body_encoding: pb::Encoding::Identity as i32,
                message_type: message_type as i32,
                born_timestamp: Some(timestamp(self.born_ms.unwrap_or(now_ms))),
                born_host: born_host.to_owned(),
                delivery_timestamp: self.delivery_ms.map(timestamp),
                message_group: self.message_group,
                ..pb::SystemProperties::default()
            }),
            body: self.body,
        }
    }
}

/// The broker's answer for one sent message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendReceipt {
    pub message_id: String,
    /// The message's position in its queue.
    pub offset: i64,
}

/// A received message, with what is needed to acknowledge it.
#[derive(Clone, Debug)]
pub struct Received {
    pub topic: String,
    pub message_id: String,
    pub receipt_handle: String,
    pub queue_id: i32,
    pub queue_offset: i64,
    pub delivery_attempt: i32,
    pub tag: Option<String>,
    pub keys: Vec<String>,
    pub message_group: Option<String>,
    pub properties: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// How the producer sent it.
    pub kind: ReceivedKind,
    /// A delay message's delivery time (milliseconds since the Unix epoch).
    pub delivery_ms: Option<i64>,
    /// When the producer made it and when the broker stored it (milliseconds since the Unix epoch).
    pub born_ms: Option<i64>,
    pub store_ms: Option<i64>,
}

/// The message type a received message was sent with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReceivedKind {
    #[default]
    Normal,
    Fifo,
    Delay,
    /// A committed transactional message.
    Transaction,
}

impl Received {
    pub(crate) fn from_pb(message: pb::Message) -> Received {
        let sys = message.system_properties.unwrap_or_default();
        let mut properties: Vec<(String, String)> = message.user_properties.into_iter().collect();
        properties.sort();
        Received {
            topic: message.topic.map(|t| t.name).unwrap_or_default(),
            message_id: sys.message_id,
            receipt_handle: sys.receipt_handle.unwrap_or_default(),
            queue_id: sys.queue_id,
            queue_offset: sys.queue_offset.unwrap_or(-1),
            delivery_attempt: sys.delivery_attempt.unwrap_or(1),
            tag: sys.tag,
            keys: sys.keys,
            message_group: sys.message_group,
            properties,
            body: message.body,
            kind: match pb::MessageType::try_from(sys.message_type) {
                Ok(pb::MessageType::Fifo) => ReceivedKind::Fifo,
                Ok(pb::MessageType::Delay) => ReceivedKind::Delay,
                Ok(pb::MessageType::Transaction) => ReceivedKind::Transaction,
                _ => ReceivedKind::Normal,
            },
            delivery_ms: sys.delivery_timestamp.as_ref().map(millis),
            born_ms: sys.born_timestamp.as_ref().map(millis),
            store_ms: sys.store_timestamp.as_ref().map(millis),
        }
    }
}

/// Makes message ids in the shape RocketMQ 5 clients use: version `01`, a 6-byte process marker,
/// the low 16 bits of the pid, seconds since 2021-01-01 and a 32-bit sequence, 34 hex digits in all.
#[derive(Debug)]
pub struct MessageIds {
    prefix: String,
    sequence: AtomicU32,
}

/// 2021-01-01T00:00:00Z in seconds since the Unix epoch: the ids' time origin.
const ID_EPOCH_S: u64 = 1_609_459_200;

impl MessageIds {
    pub fn new() -> MessageIds {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let pid = std::process::id();
        // Not a MAC address: a marker that differs between processes started at different instants.
        let marker = (nanos ^ (u64::from(pid) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
        MessageIds { prefix: format!("01{marker:012X}{:04X}", pid & 0xFFFF), sequence: AtomicU32::new(0) }
    }

    pub fn next(&self) -> String {
        let seconds =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()).saturating_sub(ID_EPOCH_S);
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        format!("{}{:08X}{sequence:08X}", self.prefix, seconds as u32)
    }
}

impl Default for MessageIds {
    fn default() -> Self {
        MessageIds::new()
    }
}

pub(crate) fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

fn millis(t: &prost_types::Timestamp) -> i64 {
    t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos) / 1_000_000)
}

pub(crate) fn duration(ms: u64) -> prost_types::Duration {
    prost_types::Duration { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

/// Milliseconds since the Unix epoch by the system clock.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_have_the_rocketmq_5_shape_and_never_repeat() {
        let ids = MessageIds::new();
        let (a, b) = (ids.next(), ids.next());
        assert_eq!(a.len(), 34);
        assert!(a.starts_with("01"));
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(a[..18], b[..18], "one process: the same marker and pid");
    }

    #[test]
    fn a_message_group_makes_a_fifo_message_and_a_delivery_time_a_delay_message() {
        let mut m = Message::new("t", b"x".to_vec());
        assert_eq!(m.kind(), Kind::Normal);
        m.delivery_ms = Some(1);
        assert_eq!(m.kind(), Kind::Delay);
        m.message_group = Some("g".into());
        assert_eq!(m.kind(), Kind::Fifo);
        let m = Message { message_id: Some("id".into()), ..m };
        let pb = m.into_pb(&MessageIds::new(), "h", 1_500);
        let sys = pb.system_properties.expect("system properties");
        assert_eq!(sys.message_type, pb::MessageType::Fifo as i32);
        assert_eq!(sys.born_timestamp, Some(prost_types::Timestamp { seconds: 1, nanos: 500_000_000 }));
    }
}
