//! Checking and placing a produced message: the limits a producer must respect, the topic's type,
//! the queue it goes to, and whether it waits for a delivery time.

use std::net::SocketAddr;

use ferrymq_proto::limit::Limit;
use ferrymq_proto::properties::{
    self, KEYS, MESSAGE_GROUP, MESSAGE_TYPE, REAL_QUEUE_ID, REAL_TOPIC, TAGS, TIMER_DELIVER_MS, UNIQ_KEY,
};
use ferrymq_store::NewMessage;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::metadata::{MessageKind, Metadata, TIMER_TOPIC, TopicType, is_system_topic};
use crate::transaction::Transactions;

/// Limits on produced messages; RocketMQ's defaults.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SendLimits {
    pub body_bytes_max: usize,
    pub user_properties_max: usize,
    /// User property names and values, tag and keys together.
    pub properties_bytes_max: usize,
    pub message_group_bytes_max: usize,
    pub message_id_bytes_max: usize,
    /// How far ahead a delivery time may be.
    pub delay_ms_max: i64,
}

impl Default for SendLimits {
    fn default() -> Self {
        Self {
            body_bytes_max: 4 * 1024 * 1024,
            user_properties_max: 128,
            properties_bytes_max: 16 * 1024,
            message_group_bytes_max: 64,
            message_id_bytes_max: 128,
            delay_ms_max: 24 * 3_600_000,
        }
    }
}

/// A message as a producer sent it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outgoing {
    pub topic: String,
    pub kind: Option<MessageKind>,
    pub tag: Option<String>,
    pub keys: Vec<String>,
    pub message_id: String,
    pub message_group: Option<String>,
    /// Delivery time in milliseconds since the Unix epoch.
    pub delivery_ms: Option<i64>,
    pub user_properties: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub born_timestamp_ms: i64,
    pub born_host: Option<SocketAddr>,
    /// The body is gzip-compressed by the producer; consumers are told so.
    pub compressed: bool,
    /// Transactional messages: how long the producer asks the broker to wait before the first check.
    pub transaction_recovery_ms: Option<i64>,
}

/// Why a message was refused; each maps to one RocketMQ status code.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum SendRejection {
    #[error("message body is empty")]
    BodyEmpty,
    #[error("message body of {size} bytes exceeds the limit of {max} bytes")]
    BodyTooLarge { size: usize, max: usize },
    #[error("{count} user properties exceed the limit of {max}")]
    TooManyProperties { count: usize, max: usize },
    #[error("properties, tag and keys of {size} bytes exceed the limit of {max} bytes")]
    PropertiesTooLarge { size: usize, max: usize },
    #[error("property name {0:?} is empty, reserved for the broker, or contains control characters")]
    IllegalPropertyKey(String),
    #[error("the value of property {0:?} contains control characters")]
    IllegalPropertyValue(String),
    #[error("tag {0:?} is blank or contains '|' or control characters")]
    IllegalTag(String),
    #[error("key {0:?} is blank or contains whitespace or control characters")]
    IllegalKey(String),
    #[error("message group {0:?} is blank, too long or contains control characters")]
    IllegalMessageGroup(String),
    #[error("only FIFO messages take a message group, not {0:?} ones")]
    GroupNotFifo(MessageKind),
    #[error("message id {0:?} is empty, too long or contains control characters")]
    IllegalMessageId(String),
    #[error("delivery time is {0}")]
    IllegalDeliveryTime(String),
    #[error("topic {0:?} does not exist")]
    TopicNotFound(String),
    #[error("topic {0:?} is reserved for the broker")]
    IllegalTopic(String),
    #[error("topic {topic:?} takes {topic_type} messages, not {kind:?} ones")]
    TypeMismatch { topic: String, topic_type: &'static str, kind: MessageKind },
    #[error("{0}")]
    Unsupported(String),
    #[error("transaction recovery time {0} ms is outside 0..={max} ms", max = TRANSACTION_RECOVERY_MS_MAX)]
    IllegalRecoveryTime(i64),
    #[error("refused by the topic's route policy: {0}")]
    RefusedByPolicy(String),
}

/// Longest wait before the first check of a transaction a producer may ask for (RocketMQ's 1 h).
pub const TRANSACTION_RECOVERY_MS_MAX: i64 = 3_600_000;

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Where a checked message goes.
#[derive(Debug)]
pub struct Placed {
    pub message: NewMessage,
    /// The queue of the real topic (for a delayed message, where it will be delivered).
    pub queue_id: u32,
    /// The message waits in the timer topic until this time.
    pub delayed_until_ms: Option<i64>,
    /// A transactional message: stored as a half message, with the immunity the producer asked for.
    pub transaction: Option<HalfMessage>,
}

/// What the transaction service needs about a half message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HalfMessage {
    pub transaction_id: String,
    pub immunity_s: Option<i64>,
}

/// Checks `msg` against `limits` and the topic, and builds the record to append.
pub fn place(
    msg: &Outgoing,
    metadata: &Metadata,
    limits: &SendLimits,
    now_ms: i64,
    round_robin: u64,
) -> Result<Placed, SendRejection> {
    if is_system_topic(&msg.topic) {
        return Err(SendRejection::IllegalTopic(msg.topic.clone()));
    }
    let topic = metadata.topic(&msg.topic).ok_or_else(|| SendRejection::TopicNotFound(msg.topic.clone()))?;
    check_body(msg, limits).and_then(|()| check_properties(msg, limits)).inspect_err(|_| Limit::Send.reached())?;
    let kind = msg.kind.unwrap_or(match (&msg.message_group, msg.delivery_ms) {
        (Some(_), _) => MessageKind::Fifo,
        (None, Some(_)) => MessageKind::Delay,
        (None, None) => MessageKind::Normal,
    });
    if !topic.message_type.accepts(kind) {
        return Err(SendRejection::TypeMismatch { topic: topic.name, topic_type: topic.message_type.name(), kind });
    }
    if kind == MessageKind::Transaction && (msg.message_group.is_some() || msg.delivery_ms.is_some()) {
        return Err(SendRejection::Unsupported(
            "a transactional message cannot also be a FIFO or delay message".into(),
        ));
    }
    if msg.message_group.is_some() && kind != MessageKind::Fifo {
        // It would be stored in its group's queue and delivered as FIFO: not what was sent.
        return Err(SendRejection::GroupNotFifo(kind));
    }
    if msg.delivery_ms.is_some() && kind != MessageKind::Delay {
        return Err(SendRejection::IllegalDeliveryTime(format!(
            "only DELAY messages take a delivery time, not {kind:?} ones"
        )));
    }
    if let Some(ms) = msg.transaction_recovery_ms
        && !(0..=TRANSACTION_RECOVERY_MS_MAX).contains(&ms)
    {
        return Err(SendRejection::IllegalRecoveryTime(ms));
    }
    let queue_id = match &msg.message_group {
        // A message group always maps to the same queue, so its messages stay in order.
        Some(group) => crc32c::crc32c(group.as_bytes()) % topic.queues,
        None => (round_robin % u64::from(topic.queues)) as u32,
    };
    let delayed_until_ms = match msg.delivery_ms {
        Some(ms) if ms > now_ms.saturating_add(limits.delay_ms_max) => {
            return Err(SendRejection::IllegalDeliveryTime(format!(
                "more than {} ms ahead (limit {} ms)",
                ms - now_ms,
                limits.delay_ms_max
            )));
        }
        Some(ms) if ms > now_ms => Some(ms),
        _ => None,
    };
    let (store_topic, store_queue) = match delayed_until_ms {
        Some(_) => (TIMER_TOPIC.to_owned(), 0),
        None => (msg.topic.clone(), queue_id),
    };
    let mut props = Vec::with_capacity(256);
    encode_properties(msg, kind, topic.message_type, queue_id, delayed_until_ms.is_some(), &mut props)?;
    let mut message = NewMessage {
        topic: store_topic,
        queue_id: store_queue,
        flag: 0,
        sys_flag: if msg.compressed { ferrymq_proto::record::sys_flag::COMPRESSED } else { 0 },
        born_timestamp_ms: msg.born_timestamp_ms,
        born_host: msg.born_host.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
        reconsume_times: 0,
        prepared_tx_offset: 0,
        properties: props,
        body: msg.body.clone(),
    };
    let transaction = (kind == MessageKind::Transaction).then(|| HalfMessage {
        transaction_id: msg.message_id.clone(),
        immunity_s: msg.transaction_recovery_ms.map(|ms| (ms + 999) / 1000),
    });
    if let Some(half) = &transaction {
        message = Transactions::half(message, &msg.topic, queue_id, &half.transaction_id, half.immunity_s);
    }
    Ok(Placed { message, queue_id, delayed_until_ms, transaction })
}

fn check_body(msg: &Outgoing, limits: &SendLimits) -> Result<(), SendRejection> {
    if msg.body.is_empty() {
        return Err(SendRejection::BodyEmpty);
    }
    if msg.body.len() > limits.body_bytes_max {
        return Err(SendRejection::BodyTooLarge { size: msg.body.len(), max: limits.body_bytes_max });
    }
    Ok(())
}

fn check_properties(msg: &Outgoing, limits: &SendLimits) -> Result<(), SendRejection> {
    if msg.user_properties.len() > limits.user_properties_max {
        return Err(SendRejection::TooManyProperties {
            count: msg.user_properties.len(),
            max: limits.user_properties_max,
        });
    }
    let mut size = 0;
    for (name, value) in &msg.user_properties {
        if name.trim().is_empty() || has_control(name) || properties::is_reserved(name) {
            return Err(SendRejection::IllegalPropertyKey(name.clone()));
        }
        if has_control(value) {
            return Err(SendRejection::IllegalPropertyValue(name.clone()));
        }
        size += name.len() + value.len();
    }
    if let Some(tag) = &msg.tag {
        if tag.trim().is_empty() || tag.contains('|') || has_control(tag) {
            return Err(SendRejection::IllegalTag(tag.clone()));
        }
        size += tag.len();
    }
    for key in &msg.keys {
        if key.trim().is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SendRejection::IllegalKey(key.clone()));
        }
        size += key.len();
    }
    if size > limits.properties_bytes_max {
        return Err(SendRejection::PropertiesTooLarge { size, max: limits.properties_bytes_max });
    }
    if let Some(group) = &msg.message_group
        && (group.trim().is_empty() || group.len() > limits.message_group_bytes_max || has_control(group))
    {
        return Err(SendRejection::IllegalMessageGroup(group.clone()));
    }
    if msg.message_id.is_empty() || msg.message_id.len() > limits.message_id_bytes_max || has_control(&msg.message_id) {
        return Err(SendRejection::IllegalMessageId(msg.message_id.clone()));
    }
    Ok(())
}

fn encode_properties(
    msg: &Outgoing,
    kind: MessageKind,
    topic_type: TopicType,
    queue_id: u32,
    delayed: bool,
    out: &mut Vec<u8>,
) -> Result<(), SendRejection> {
    let keys = msg.keys.join(" ");
    let delivery = msg.delivery_ms.map(|ms| ms.to_string());
    let queue = queue_id.to_string();
    let kind_name = match kind {
        MessageKind::Normal => "NORMAL",
        MessageKind::Fifo => "FIFO",
        MessageKind::Delay => "DELAY",
        MessageKind::Transaction => "TRANSACTION",
    };
    let mut list: Vec<(&str, &str)> = Vec::with_capacity(msg.user_properties.len() + 8);
    list.push((UNIQ_KEY, &msg.message_id));
    if let Some(tag) = &msg.tag {
        list.push((TAGS, tag));
    }
    if !keys.is_empty() {
        list.push((KEYS, &keys));
    }
    if let Some(group) = &msg.message_group {
        list.push((MESSAGE_GROUP, group));
    }
    if let Some(delivery) = &delivery {
        list.push((TIMER_DELIVER_MS, delivery));
    }
    if topic_type == TopicType::Mixed || kind != MessageKind::Normal {
        list.push((MESSAGE_TYPE, kind_name));
    }
    if delayed {
        list.push((REAL_TOPIC, &msg.topic));
        list.push((REAL_QUEUE_ID, &queue));
    }
    list.extend(msg.user_properties.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    properties::encode(list, out).map_err(|e| SendRejection::IllegalPropertyKey(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::TopicConfig;

    fn setup() -> (tempfile::TempDir, Metadata) {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = Metadata::open(dir.path()).expect("metadata");
        for (name, t) in
            [("n", TopicType::Normal), ("f", TopicType::Fifo), ("d", TopicType::Delay), ("m", TopicType::Mixed)]
        {
            meta.create_topic(TopicConfig { name: name.into(), message_type: t, queues: 4 }).expect("topic");
        }
        (dir, meta)
    }

    fn msg(topic: &str) -> Outgoing {
        Outgoing { topic: topic.into(), message_id: "ID1".into(), body: b"x".to_vec(), ..Outgoing::default() }
    }

    fn check(m: &Outgoing, meta: &Metadata) -> Result<Placed, SendRejection> {
        place(m, meta, &SendLimits::default(), 1_000_000, 7)
    }

    #[test]
    fn each_limit_holds_at_its_bound_and_fails_just_past_it() {
        let (_d, meta) = setup();
        let limits = SendLimits::default();
        let mut m = msg("n");
        m.body = vec![0; limits.body_bytes_max];
        assert!(check(&m, &meta).is_ok());
        m.body.push(0);
        assert_eq!(
            check(&m, &meta).err(),
            Some(SendRejection::BodyTooLarge { size: limits.body_bytes_max + 1, max: limits.body_bytes_max })
        );

        let mut m = msg("n");
        m.user_properties = (0..128).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(check(&m, &meta).is_ok());
        m.user_properties.push(("k128".into(), "v".into()));
        assert!(matches!(check(&m, &meta), Err(SendRejection::TooManyProperties { count: 129, .. })));

        let mut m = msg("n");
        m.tag = Some("t".into());
        m.user_properties = vec![("k".into(), "v".repeat(16 * 1024 - 2))];
        assert!(check(&m, &meta).is_ok());
        m.tag = Some("tt".into());
        assert!(matches!(check(&m, &meta), Err(SendRejection::PropertiesTooLarge { size: 16385, .. })));

        let mut m = msg("f");
        m.message_group = Some("g".repeat(64));
        assert!(check(&m, &meta).is_ok());
        m.message_group = Some("g".repeat(65));
        assert!(matches!(check(&m, &meta), Err(SendRejection::IllegalMessageGroup(_))));
        let mut m = msg("m");
        m.message_group = Some("g".into());
        m.kind = Some(MessageKind::Normal);
        assert!(matches!(check(&m, &meta), Err(SendRejection::GroupNotFifo(MessageKind::Normal))));
        m.topic = "n".into();
        assert!(matches!(check(&m, &meta), Err(SendRejection::GroupNotFifo(MessageKind::Normal))));

        let mut m = msg("d");
        m.delivery_ms = Some(1_000_000 + 86_400_000);
        assert!(check(&m, &meta).is_ok());
        m.delivery_ms = Some(1_000_000 + 86_400_001);
        assert!(matches!(check(&m, &meta), Err(SendRejection::IllegalDeliveryTime(_))));
        let mut m = msg("m");
        m.delivery_ms = Some(1_000_000 + 5_000);
        m.kind = Some(MessageKind::Normal);
        assert!(
            matches!(check(&m, &meta), Err(SendRejection::IllegalDeliveryTime(_))),
            "a NORMAL message with a delivery time"
        );
    }

    #[test]
    fn malformed_fields_are_refused_with_the_offending_value() {
        let (_d, meta) = setup();
        type Change = Box<dyn Fn(&mut Outgoing)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|m| m.body.clear()), "BodyEmpty"),
            (Box::new(|m| m.tag = Some("a|b".into())), "IllegalTag"),
            (Box::new(|m| m.tag = Some(" ".into())), "IllegalTag"),
            (Box::new(|m| m.keys = vec!["a b".into()]), "IllegalKey"),
            (Box::new(|m| m.user_properties = vec![("TAGS".into(), "x".into())]), "IllegalPropertyKey"),
            (Box::new(|m| m.user_properties = vec![("a\u{1}".into(), "x".into())]), "IllegalPropertyKey"),
            (Box::new(|m| m.user_properties = vec![("a".into(), "x\ny".into())]), "IllegalPropertyValue"),
            (Box::new(|m| m.message_id.clear()), "IllegalMessageId"),
            (Box::new(|m| m.topic = "%DLQ%g".into()), "IllegalTopic"),
            (Box::new(|m| m.topic = "missing".into()), "TopicNotFound"),
        ];
        for (change, expected) in cases {
            let mut m = msg("n");
            change(&mut m);
            let err = check(&m, &meta).err().map(|e| format!("{e:?}")).unwrap_or_default();
            assert!(err.starts_with(expected), "{expected}: got {err}");
        }
    }

    #[test]
    fn topic_types_refuse_other_kinds_and_mixed_takes_all() {
        let (_d, meta) = setup();
        let mut fifo = msg("n");
        fifo.message_group = Some("g".into());
        assert!(matches!(check(&fifo, &meta), Err(SendRejection::TypeMismatch { .. })));
        fifo.topic = "m".into();
        assert!(check(&fifo, &meta).is_ok());
    }

    #[test]
    fn one_message_group_always_lands_on_one_queue_and_others_spread() {
        let (_d, meta) = setup();
        let mut m = msg("f");
        m.message_group = Some("order-42".into());
        let queues: std::collections::HashSet<u32> =
            (0..10).map(|rr| place(&m, &meta, &SendLimits::default(), 0, rr).expect("ok").queue_id).collect();
        assert_eq!(queues.len(), 1);
        let spread: std::collections::HashSet<u32> =
            (0..10).map(|rr| place(&msg("n"), &meta, &SendLimits::default(), 0, rr).expect("ok").queue_id).collect();
        assert_eq!(spread.len(), 4);
    }

    #[test]
    fn future_delivery_waits_in_the_timer_topic_and_past_delivery_goes_straight_through() {
        let (_d, meta) = setup();
        let mut m = msg("d");
        m.delivery_ms = Some(2_000_000);
        let placed = check(&m, &meta).expect("ok");
        assert_eq!(placed.message.topic, TIMER_TOPIC);
        assert_eq!(placed.delayed_until_ms, Some(2_000_000));
        assert_eq!(properties::get(&placed.message.properties, REAL_TOPIC), Some("d"));
        m.delivery_ms = Some(10);
        let placed = check(&m, &meta).expect("ok");
        assert_eq!(placed.message.topic, "d");
        assert_eq!(placed.delayed_until_ms, None);
    }
}
