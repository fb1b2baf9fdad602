//! Between RocketMQ's protobuf messages and the broker's own types.

use std::net::SocketAddr;

use ferrymq_broker::delivery::Delivered;
use ferrymq_broker::metadata::MessageKind;
use ferrymq_broker::send::Outgoing;
use ferrymq_proto::grpc::v2::{self as pb, Code};
use ferrymq_proto::properties::{
    self, DLQ_ORIGIN_MESSAGE_ID, DLQ_ORIGIN_TOPIC, KEY_SEPARATOR, KEYS, MESSAGE_GROUP, MESSAGE_TYPE, TAGS,
    TIMER_DELIVER_MS, UNIQ_KEY,
};
use ferrymq_proto::record::{RecordRef, sys_flag};
use md5::{Digest as _, Md5};

use super::status::status;

pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

pub fn timestamp_ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos) / 1_000_000)
}

pub fn duration(ms: i64) -> prost_types::Duration {
    prost_types::Duration { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

pub fn duration_ms(d: &prost_types::Duration) -> i64 {
    d.seconds.saturating_mul(1000).saturating_add(i64::from(d.nanos) / 1_000_000)
}

/// The last second a timestamp may name (9999-12-31T23:59:59Z), as RFC 3339 and protobuf allow.
const TIMESTAMP_SECONDS_MAX: i64 = 253_402_300_799;

/// `t` in ms since the epoch, if it is a timestamp at all: nanos within a second, seconds between
/// the epoch and the year 9999.
fn checked_ms(t: &prost_types::Timestamp, what: &str, code: Code) -> Result<i64, pb::Status> {
    if !(0..1_000_000_000).contains(&t.nanos) || !(0..=TIMESTAMP_SECONDS_MAX).contains(&t.seconds) {
        return Err(status(code, format!("{what} {}s {}ns is not a time", t.seconds, t.nanos)));
    }
    Ok(timestamp_ms(t))
}

/// A produced message in the broker's terms; `peer` becomes its born host.
pub fn outgoing(message: pb::Message, peer: Option<SocketAddr>) -> Result<Outgoing, pb::Status> {
    let topic = message.topic.map(|t| t.name).unwrap_or_default();
    if topic.is_empty() {
        return Err(status(Code::IllegalTopic, "the message names no topic"));
    }
    let sys = message.system_properties.unwrap_or_default();
    let kind = match pb::MessageType::try_from(sys.message_type) {
        Ok(pb::MessageType::Normal) => Some(MessageKind::Normal),
        Ok(pb::MessageType::Fifo) => Some(MessageKind::Fifo),
        Ok(pb::MessageType::Delay) => Some(MessageKind::Delay),
        Ok(pb::MessageType::Transaction) => Some(MessageKind::Transaction),
        Ok(pb::MessageType::Unspecified) => None,
        Ok(other) => {
            return Err(status(Code::Unsupported, format!("message type {} is not supported", other.as_str_name())));
        }
        Err(_) => return Err(status(Code::BadRequest, format!("unknown message type {}", sys.message_type))),
    };
    let compressed = match pb::Encoding::try_from(sys.body_encoding) {
        Ok(pb::Encoding::Gzip) => true,
        Ok(_) => false,
        Err(_) => return Err(status(Code::BadRequest, format!("unknown body encoding {}", sys.body_encoding))),
    };
    let born_timestamp_ms = match &sys.born_timestamp {
        Some(t) => checked_ms(t, "born_timestamp", Code::BadRequest)?,
        None => 0,
    };
    let delivery_ms = match &sys.delivery_timestamp {
        Some(t) => Some(checked_ms(t, "delivery_timestamp", Code::IllegalDeliveryTime)?),
        None => None,
    };
    let mut user_properties: Vec<(String, String)> = message.user_properties.into_iter().collect();
    user_properties.sort();
    Ok(Outgoing {
        topic,
        kind,
        tag: sys.tag,
        keys: sys.keys,
        message_id: sys.message_id,
        message_group: sys.message_group,
        delivery_ms,
        user_properties,
        body: message.body,
        born_timestamp_ms,
        born_host: peer,
        compressed,
        transaction_recovery_ms: sys.orphaned_transaction_recovery_duration.as_ref().map(duration_ms),
    })
}

fn message_type(reserved: &Reserved<'_>) -> pb::MessageType {
    match reserved.message_type {
        Some("FIFO") => pb::MessageType::Fifo,
        Some("DELAY") => pb::MessageType::Delay,
        Some("TRANSACTION") => pb::MessageType::Transaction,
        Some(_) | None if reserved.message_group.is_some() => pb::MessageType::Fifo,
        Some(_) | None if reserved.deliver_ms.is_some() => pb::MessageType::Delay,
        _ => pb::MessageType::Normal,
    }
}

/// Upper-case hex MD5 of the body, as every official client checks it.
fn md5_hex(body: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut hex = String::with_capacity(32);
    for b in Md5::digest(body) {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xF)]));
    }
    hex
}

/// The system properties a delivered message carries, found in one pass over the record's properties.
#[derive(Default)]
struct Reserved<'a> {
    tag: Option<&'a str>,
    keys: Option<&'a str>,
    message_id: Option<&'a str>,
    message_type: Option<&'a str>,
    message_group: Option<&'a str>,
    deliver_ms: Option<&'a str>,
    dlq_topic: Option<&'a str>,
    dlq_message_id: Option<&'a str>,
}

/// A stored record as a RocketMQ message, without delivery details.
pub fn message(topic: &str, record: &RecordRef<'_>, queue_id: u32, queue_offset: u64) -> pb::Message {
    let mut user_properties = std::collections::HashMap::new();
    let mut reserved = Reserved::default();
    for p in properties::decode(record.properties).map_while(Result::ok) {
        let slot = match p.name {
            TAGS => &mut reserved.tag,
            KEYS => &mut reserved.keys,
            UNIQ_KEY => &mut reserved.message_id,
            MESSAGE_TYPE => &mut reserved.message_type,
            MESSAGE_GROUP => &mut reserved.message_group,
            TIMER_DELIVER_MS => &mut reserved.deliver_ms,
            DLQ_ORIGIN_TOPIC => &mut reserved.dlq_topic,
            DLQ_ORIGIN_MESSAGE_ID => &mut reserved.dlq_message_id,
            name if properties::is_reserved(name) => continue,
            name => {
                user_properties.insert(name.to_owned(), p.value.to_owned());
                continue;
            }
        };
        // The first occurrence wins, as a lookup by name would find it.
        slot.get_or_insert(p.value);
    }
    let owned = |value: Option<&str>| value.map(str::to_owned);
    let keys = reserved.keys.map(|k| k.split(KEY_SEPARATOR).filter(|k| !k.is_empty()).map(str::to_owned).collect());
    let dead_letter_queue = reserved.dlq_topic.map(|topic| pb::DeadLetterQueue {
        topic: topic.to_owned(),
        message_id: reserved.dlq_message_id.unwrap_or_default().to_owned(),
    });
    let compressed = record.meta.sys_flag & sys_flag::COMPRESSED != 0;
    let system = pb::SystemProperties {
        tag: owned(reserved.tag),
        keys: keys.unwrap_or_default(),
        message_id: reserved.message_id.unwrap_or_default().to_owned(),
        body_digest: Some(pb::Digest { r#type: pb::DigestType::Md5 as i32, checksum: md5_hex(record.body) }),
        body_encoding: if compressed { pb::Encoding::Gzip } else { pb::Encoding::Identity } as i32,
        message_type: message_type(&reserved) as i32,
        born_timestamp: Some(timestamp(record.meta.born_timestamp_ms)),
        born_host: record.meta.born_host.ip().to_string(),
        store_timestamp: Some(timestamp(record.meta.store_timestamp_ms)),
        store_host: record.meta.store_host.to_string(),
        delivery_timestamp: reserved.deliver_ms.and_then(|ms| ms.parse().ok()).map(timestamp),
        queue_id: queue_id as i32,
        queue_offset: Some(queue_offset as i64),
        message_group: owned(reserved.message_group),
        dead_letter_queue,
        ..pb::SystemProperties::default()
    };
    pb::Message {
        topic: Some(pb::Resource { resource_namespace: String::new(), name: topic.to_owned() }),
        user_properties,
        system_properties: Some(system),
        body: record.body.to_vec(),
    }
}

/// A delivered message with its receipt handle, attempt and invisible time.
pub fn delivered(d: &Delivered, invisible_ms: i64) -> Result<pb::Message, pb::Status> {
    let record = d.record.decode().map_err(|e| status(Code::MessageCorrupted, e.to_string()))?;
    let mut out = message(&d.topic, &record, d.queue_id, d.queue_offset);
    if let Some(sys) = out.system_properties.as_mut() {
        sys.receipt_handle = Some(d.receipt_handle.clone());
        sys.delivery_attempt = Some(d.delivery_attempt as i32);
        sys.invisible_duration = Some(duration(invisible_ms));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_durations_round_trip_including_before_the_epoch() {
        for ms in [0, 1, 999, 1_764_000_000_123, -1, -1001] {
            assert_eq!(timestamp_ms(&timestamp(ms)), ms);
            assert_eq!(duration_ms(&duration(ms)), ms);
        }
    }

    #[test]
    fn body_digest_is_upper_case_md5() {
        assert_eq!(md5_hex(b"hello"), "5D41402ABC4B2A76B9719D911017C592");
    }

    #[test]
    fn a_produced_message_keeps_every_field() {
        let message = pb::Message {
            topic: Some(pb::Resource { resource_namespace: String::new(), name: "t".into() }),
            user_properties: [("b".to_owned(), "2".to_owned()), ("a".to_owned(), "1".to_owned())].into(),
            system_properties: Some(pb::SystemProperties {
                tag: Some("TagA".into()),
                keys: vec!["k1".into(), "k2".into()],
                message_id: "ID".into(),
                message_type: pb::MessageType::Fifo as i32,
                message_group: Some("g".into()),
                born_timestamp: Some(timestamp(5_000)),
                ..pb::SystemProperties::default()
            }),
            body: b"x".to_vec(),
        };
        let out = outgoing(message.clone(), "10.0.0.1:5".parse().ok()).expect("converts");
        assert_eq!(out.kind, Some(MessageKind::Fifo));
        assert_eq!(out.user_properties, [("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())]);
        assert_eq!((out.tag.as_deref(), out.keys.len(), out.message_group.as_deref()), (Some("TagA"), 2, Some("g")));
        assert_eq!(out.born_timestamp_ms, 5_000);
        let no_topic = pb::Message { topic: None, ..message.clone() };
        assert_eq!(outgoing(no_topic, None).err().map(|s| s.code), Some(Code::IllegalTopic as i32));

        let with_times = |born: prost_types::Timestamp, delivery: Option<prost_types::Timestamp>| {
            let sys = pb::SystemProperties {
                born_timestamp: Some(born),
                delivery_timestamp: delivery,
                ..message.system_properties.clone().unwrap_or_default()
            };
            outgoing(pb::Message { system_properties: Some(sys), ..message.clone() }, None).err().map(|s| s.code)
        };
        let at = |seconds, nanos| prost_types::Timestamp { seconds, nanos };
        assert_eq!(with_times(at(i64::MAX, 0), None), Some(Code::BadRequest as i32), "born in no year");
        assert_eq!(with_times(at(1, 2_000_000_000), None), Some(Code::BadRequest as i32), "nanos past a second");
        assert_eq!(with_times(at(-5, 0), None), Some(Code::BadRequest as i32), "born before the epoch");
        let late = Some(at(i64::MAX / 1000, 0));
        assert_eq!(with_times(at(5, 0), late), Some(Code::IllegalDeliveryTime as i32));
        assert_eq!(with_times(at(TIMESTAMP_SECONDS_MAX, 999_999_999), None), None, "the last valid time");
    }
}
