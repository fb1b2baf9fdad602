//! Message properties in RocketMQ's text encoding: `name\x01value\x02name\x01value\x02…`.
//!
//! Properties carry both user key/values and the system ones the broker acts on (tags, keys, the
//! message id). The encoding cannot represent names or values that contain the two separator bytes,
//! so [`encode`] refuses them instead of producing a string that decodes differently.

use thiserror::Error;

/// Separates a name from its value.
pub const NAME_VALUE_SEPARATOR: u8 = 0x01;
/// Ends one property.
pub const PROPERTY_SEPARATOR: u8 = 0x02;

/// The message's tag, used by TAG filters and hashed into the consume queue.
pub const TAGS: &str = "TAGS";
/// Business keys, separated by [`KEY_SEPARATOR`]; each is indexed.
pub const KEYS: &str = "KEYS";
/// The client-assigned message id; indexed.
pub const UNIQ_KEY: &str = "UNIQ_KEY";
/// Separates keys inside the [`KEYS`] value.
pub const KEY_SEPARATOR: char = ' ';
/// The FIFO message group.
pub const MESSAGE_GROUP: &str = "__SHARDINGKEY";
/// When a delay/timer message becomes deliverable, in milliseconds since the Unix epoch.
pub const TIMER_DELIVER_MS: &str = "TIMER_DELIVER_MS";
/// Topic and queue a message is headed for while it waits in a system topic (timer, retry).
pub const REAL_TOPIC: &str = "REAL_TOPIC";
pub const REAL_QUEUE_ID: &str = "REAL_QID";
/// Original topic of a message in a retry or dead-letter topic.
pub const RETRY_TOPIC: &str = "RETRY_TOPIC";
/// The topic a dead-lettered message came from.
pub const DLQ_ORIGIN_TOPIC: &str = "DLQ_ORIGIN_TOPIC";
/// The id of the message a dead-lettered message was.
pub const DLQ_ORIGIN_MESSAGE_ID: &str = "DLQ_ORIGIN_MESSAGE_ID";
/// The message type the producer declared (ferrymq's own, so consumers see it back).
pub const MESSAGE_TYPE: &str = "__FERRY_MSG_TYPE";
/// Marks a half (prepared) transactional message.
pub const TRANSACTION_PREPARED: &str = "TRAN_MSG";
/// The transaction a half message or transaction record belongs to.
pub const TRANSACTION_ID: &str = "__transactionId__";
/// The producer group that may be asked about a transaction (for gRPC producers, the topic).
pub const PRODUCER_GROUP: &str = "PGROUP";
/// Per-message delay before the first transaction check, in seconds.
pub const CHECK_IMMUNITY_SECONDS: &str = "CHECK_IMMUNITY_TIME_IN_SECONDS";
/// What a transaction record says: commit, rollback, check or discard (ferrymq's own).
pub const TRANSACTION_OP: &str = "__FERRY_TX_OP";
/// The half-topic queue offset a transaction record is about (ferrymq's own).
pub const HALF_OFFSET: &str = "__FERRY_TX_HALF";

/// Property names the broker sets or reads itself; producers may not use them as user properties.
/// RocketMQ's reserved names are included so that messages mean the same to RocketMQ tools.
pub const RESERVED: &[&str] = &[
    TAGS,
    KEYS,
    UNIQ_KEY,
    MESSAGE_GROUP,
    TIMER_DELIVER_MS,
    REAL_TOPIC,
    REAL_QUEUE_ID,
    RETRY_TOPIC,
    DLQ_ORIGIN_TOPIC,
    DLQ_ORIGIN_MESSAGE_ID,
    MESSAGE_TYPE,
    TRANSACTION_PREPARED,
    TRANSACTION_ID,
    PRODUCER_GROUP,
    CHECK_IMMUNITY_SECONDS,
    TRANSACTION_OP,
    HALF_OFFSET,
    "WAIT",
    "DELAY",
    "TIMER_DELAY_SEC",
    "TIMER_DELAY_MS",
    "TIMER_OUT_MS",
    "RECONSUME_TIME",
    "MAX_RECONSUME_TIMES",
    "ORIGIN_MESSAGE_ID",
    "TRANSACTION_CHECK_TIMES",
    "TRAN_PREPARED_QUEUE_OFFSET",
    "MSG_REGION",
    "TRACE_ON",
    "CLUSTER",
    "POP_CK",
    "BORN_TIMESTAMP",
    "__BORNHOST",
    "INNER_MULTI_DISPATCH",
    "INNER_MULTI_QUEUE_OFFSET",
];

/// Whether `name` is reserved for the broker.
pub fn is_reserved(name: &str) -> bool {
    RESERVED.contains(&name)
}

/// One decoded property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Property<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PropertiesError {
    #[error("property name {name:?} contains a reserved separator byte (0x01 or 0x02)")]
    SeparatorInName { name: String },
    #[error("the value of property {name:?} contains a reserved separator byte (0x01 or 0x02)")]
    SeparatorInValue { name: String },
    #[error("property name is empty")]
    EmptyName,
    #[error("encoded properties are not valid UTF-8")]
    NotUtf8,
    #[error("encoded property at byte {at} has no name/value separator")]
    MissingSeparator { at: usize },
}

fn has_separator(s: &str) -> bool {
    s.bytes().any(|b| b == NAME_VALUE_SEPARATOR || b == PROPERTY_SEPARATOR)
}

/// Appends the encoding of `properties` to `out`.
pub fn encode<'a, I>(properties: I, out: &mut Vec<u8>) -> Result<(), PropertiesError>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    for (name, value) in properties {
        if name.is_empty() {
            return Err(PropertiesError::EmptyName);
        }
        if has_separator(name) {
            return Err(PropertiesError::SeparatorInName { name: name.to_owned() });
        }
        if has_separator(value) {
            return Err(PropertiesError::SeparatorInValue { name: name.to_owned() });
        }
        out.extend_from_slice(name.as_bytes());
        out.push(NAME_VALUE_SEPARATOR);
        out.extend_from_slice(value.as_bytes());
        out.push(PROPERTY_SEPARATOR);
    }
    Ok(())
}

/// Iterates over encoded properties, validating as it goes.
pub fn decode(encoded: &[u8]) -> Decode<'_> {
    Decode { rest: encoded, at: 0 }
}

/// Looks one property up by name; `None` when absent or when the encoding is invalid before it.
pub fn get<'a>(encoded: &'a [u8], name: &str) -> Option<&'a str> {
    decode(encoded).map_while(Result::ok).find(|p| p.name == name).map(|p| p.value)
}

/// Iterator returned by [`decode`].
#[derive(Debug)]
pub struct Decode<'a> {
    rest: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Decode<'a> {
    type Item = Result<Property<'a>, PropertiesError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let end = self.rest.iter().position(|&b| b == PROPERTY_SEPARATOR).unwrap_or(self.rest.len());
        let (item, rest) = self.rest.split_at(end);
        let at = self.at;
        self.rest = rest.get(1..).unwrap_or_default();
        self.at += end + 1;
        let Some(split) = item.iter().position(|&b| b == NAME_VALUE_SEPARATOR) else {
            self.rest = &[];
            return Some(Err(PropertiesError::MissingSeparator { at }));
        };
        let (name, value) = (&item[..split], &item[split + 1..]);
        if name.is_empty() {
            // What the encoder refuses, the decoder does not accept either.
            self.rest = &[];
            return Some(Err(PropertiesError::EmptyName));
        }
        match (std::str::from_utf8(name), std::str::from_utf8(value)) {
            (Ok(name), Ok(value)) => Some(Ok(Property { name, value })),
            _ => {
                self.rest = &[];
                Some(Err(PropertiesError::NotUtf8))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(props: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(props.iter().copied(), &mut out).expect("valid properties");
        out
    }

    #[test]
    fn properties_round_trip_in_order() {
        let props = [(TAGS, "TagA"), (KEYS, "k1 k2"), ("enterpriseId", "91350200"), ("empty", "")];
        let bytes = encoded(&props);
        assert_eq!(bytes, b"TAGS\x01TagA\x02KEYS\x01k1 k2\x02enterpriseId\x0191350200\x02empty\x01\x02");
        let back: Vec<_> = decode(&bytes).collect::<Result<_, _>>().expect("decodes");
        let back: Vec<_> = back.iter().map(|p| (p.name, p.value)).collect();
        assert_eq!(back, props);
        assert_eq!(get(&bytes, KEYS), Some("k1 k2"));
        assert_eq!(get(&bytes, "missing"), None);
    }

    #[test]
    fn separators_inside_names_or_values_are_refused() {
        let mut out = Vec::new();
        assert_eq!(
            encode([("a\u{1}b", "v")], &mut out),
            Err(PropertiesError::SeparatorInName { name: "a\u{1}b".into() })
        );
        assert_eq!(encode([("a", "v\u{2}")], &mut out), Err(PropertiesError::SeparatorInValue { name: "a".into() }));
        assert_eq!(encode([("", "v")], &mut out), Err(PropertiesError::EmptyName));
        let decoded: Vec<_> = decode(b"a\x01b\x02\x01v\x02").collect();
        assert_eq!(decoded.last(), Some(&Err(PropertiesError::EmptyName)), "an empty name does not decode");
    }

    #[test]
    fn malformed_encodings_are_reported_not_skipped() {
        let items: Vec<_> = decode(b"a\x01b\x02broken\x02c\x01d\x02").collect();
        assert_eq!(items[0], Ok(Property { name: "a", value: "b" }));
        assert_eq!(items[1], Err(PropertiesError::MissingSeparator { at: 4 }));
        assert_eq!(items.len(), 2, "decoding stops at the first error");
        let items: Vec<_> = decode(b"a\x01\xff\x02").collect();
        assert_eq!(items, vec![Err(PropertiesError::NotUtf8)]);
    }
}
