//! Seeded fuzz tests of what a gRPC client controls: protobuf requests decoded from any bytes, a
//! produced `Message` with any field values converted and checked, stored, and converted back to
//! what a consumer receives; filter expressions; the long-polling time a client asks for.
//!
//! Budgets and replay: `ferrymq_fuzzgen` (`FERRYMQ_FUZZ_SEED`, `FERRYMQ_FUZZ_CASES`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ferrymq_broker::metadata::{MessageKind, TopicConfig, TopicType};
use ferrymq_broker::send::{SendLimits, place};
use ferrymq_broker::{Broker, BrokerConfig};
use ferrymq_fuzzgen::{Rng, cases, mutate};
use ferrymq_proto::grpc::v2::{self as pb, Code};
use ferrymq_proto::properties::RESERVED;
use ferrymq_proto::record::{self, Entry, RecordMeta, Verify, sys_flag};
use ferrymq_store::clock::SystemClock;
use ferrymq_store::{Store, StoreOptions};
use prost::Message as _;

use crate::convert::{self, timestamp};
use crate::{Arrivals, GrpcConfig, GrpcState};

/// A broker on a temporary directory with one topic of each type, named after it.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    broker: Arc<Broker>,
}

const TOPICS: [(&str, TopicType); 5] = [
    ("normal", TopicType::Normal),
    ("fifo", TopicType::Fifo),
    ("delay", TopicType::Delay),
    ("tx", TopicType::Transaction),
    ("mixed", TopicType::Mixed),
];

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = StoreOptions::new(dir.path());
        options.config.segment_bytes = 1 << 20;
        options.config.record_bytes_max = 64 << 10;
        options.config.index_slots = 64;
        options.config.index_entries_max = 1024;
        let store = Arc::new(Store::open(options).expect("store"));
        let broker = Arc::new(
            Broker::open(store.clone(), dir.path(), BrokerConfig::default(), Arc::new(SystemClock)).expect("broker"),
        );
        for (name, message_type) in TOPICS {
            broker.metadata().create_topic(TopicConfig { name: name.into(), message_type, queues: 4 }).expect("topic");
        }
        Self { _dir: dir, store, broker }
    }

    fn grpc(&self) -> GrpcState {
        let cluster = Arc::new(ferrymq_cluster::Cluster::new(Default::default(), "ferrymq".into()));
        let bound = SocketAddr::from(([127, 0, 0, 1], 8081));
        GrpcState::new(self.broker.clone(), Arc::new(Arrivals::default()), GrpcConfig::default(), bound, cluster)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.broker.close();
        self.store.close();
    }
}

/// A string a producer might send: mostly well formed, often not.
fn field(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => rng.text(12),
        1 => (*rng.pick(&["", " ", "a|b", "a b", "x\u{1}y", "\u{85}"])).to_owned(),
        2 => rng.word(1).repeat(1 + rng.size(300)),
        _ => rng.word(12),
    }
}

fn time(rng: &mut Rng) -> prost_types::Timestamp {
    match rng.below(3) {
        0 => timestamp(NOW_MS + rng.below(200_000_000) as i64 - 100_000_000),
        1 => prost_types::Timestamp { seconds: rng.edge_i64(), nanos: rng.edge_i64() as i32 },
        _ => prost_types::Timestamp {
            seconds: rng.below(253_402_300_800) as i64,
            nanos: rng.below(1_000_000_000) as i32,
        },
    }
}

/// The time the tests place messages at.
const NOW_MS: i64 = 1_764_000_000_000;

/// A message a producer might send: well formed for its topic, then zero to three of its fields
/// broken in any way a client could break them.
fn message(rng: &mut Rng) -> pb::Message {
    let (topic, topic_type) = TOPICS[rng.index(TOPICS.len())];
    let kinds = [pb::MessageType::Normal, pb::MessageType::Fifo, pb::MessageType::Delay, pb::MessageType::Transaction];
    let kind = match topic_type {
        TopicType::Normal => pb::MessageType::Normal,
        TopicType::Fifo => pb::MessageType::Fifo,
        TopicType::Delay => pb::MessageType::Delay,
        TopicType::Transaction => pb::MessageType::Transaction,
        TopicType::Mixed => *rng.pick(&kinds),
    };
    let mut system = pb::SystemProperties {
        tag: rng.bool().then(|| rng.word(12)),
        keys: (0..rng.size(3)).map(|_| rng.word(12)).collect(),
        message_id: format!("ID{}", rng.next_u64()),
        body_encoding: rng.below(3) as i32,
        message_type: if rng.one_in(4) { pb::MessageType::Unspecified } else { kind } as i32,
        born_timestamp: rng.bool().then(|| timestamp(NOW_MS - rng.below(10_000) as i64)),
        delivery_timestamp: (kind == pb::MessageType::Delay)
            .then(|| timestamp(NOW_MS - 3_600_000 + rng.below(30 * 3_600_000) as i64)),
        message_group: (kind == pb::MessageType::Fifo).then(|| rng.word(16)),
        orphaned_transaction_recovery_duration: (kind == pb::MessageType::Transaction && rng.bool())
            .then(|| convert::duration(rng.below(4_000_000) as i64)),
        ..pb::SystemProperties::default()
    };
    let mut user_properties: HashMap<String, String> = (0..rng.size(6)).map(|_| (rng.word(10), rng.word(20))).collect();
    let mut topic = Some(topic.to_owned());
    let n = 1 + rng.size(200);
    let mut body = rng.bytes(n);
    let mut without_system = false;
    for _ in 0..rng.below(4) {
        match rng.below(14) {
            0 => topic = None,
            1 => topic = Some(field(rng)),
            2 => topic = Some((*rng.pick(&["", "%DLQ%g", "rmq_sys_wheel_timer", "missing"])).to_owned()),
            3 => {
                let name = if rng.bool() { (*rng.pick(RESERVED)).to_owned() } else { field(rng) };
                user_properties.insert(name, field(rng));
            }
            4 => user_properties.extend((0..100 + rng.size(100)).map(|i| (format!("k{i}"), rng.word(8)))),
            5 => system.tag = Some(field(rng)),
            6 => system.keys.push(field(rng)),
            7 => system.message_id = field(rng),
            8 => system.body_encoding = rng.edge_i64() as i32,
            9 => system.message_type = if rng.bool() { rng.edge_i64() as i32 } else { rng.below(7) as i32 },
            10 => system.born_timestamp = Some(time(rng)),
            11 => system.delivery_timestamp = rng.bool().then(|| time(rng)),
            12 => {
                system.message_group = rng.bool().then(|| field(rng));
                system.orphaned_transaction_recovery_duration = rng.bool().then(|| prost_types::Duration {
                    seconds: if rng.bool() { rng.edge_i64() } else { rng.below(4000) as i64 },
                    nanos: rng.edge_i64() as i32,
                });
            }
            _ if rng.bool() => body.clear(),
            _ => without_system = true,
        }
    }
    pb::Message {
        topic: topic.map(|name| pb::Resource { resource_namespace: String::new(), name }),
        user_properties,
        system_properties: (!without_system).then_some(system),
        body,
    }
}

/// A consumer's view of the message `placed` stored, as the broker would deliver it.
fn delivered(topic: &str, placed: &ferrymq_store::NewMessage, queue_id: u32) -> pb::Message {
    let meta = RecordMeta {
        sys_flag: placed.sys_flag,
        flag: placed.flag,
        queue_id: placed.queue_id,
        queue_offset: 41,
        physical_offset: 4096,
        born_timestamp_ms: placed.born_timestamp_ms,
        store_timestamp_ms: 1_764_000_000_000,
        born_host: placed.born_host,
        store_host: SocketAddr::from(([10, 0, 0, 1], 10911)),
        reconsume_times: placed.reconsume_times,
        prepared_tx_offset: placed.prepared_tx_offset,
    };
    let mut buf = Vec::new();
    record::encode(&meta, &placed.topic, &placed.properties, &placed.body, &mut buf).expect("a placed message encodes");
    let Ok(Entry::Record { record, .. }) = record::decode(&buf, 4096, Verify::Full) else { panic!("decodes") };
    convert::message(topic, &record, queue_id, 41)
}

#[test]
fn produced_messages_are_refused_or_delivered_back_with_every_field_the_producer_set() {
    let fixture = Fixture::new();
    let limits = SendLimits::default();
    cases!(30_000, |rng| {
        let sent = message(rng);
        let peer = rng.bool().then(|| SocketAddr::from(([192, 168, 1, 7], 40_000)));
        let out = match convert::outgoing(sent.clone(), peer) {
            Ok(out) => out,
            Err(status) => {
                let known = [Code::BadRequest, Code::IllegalTopic, Code::Unsupported, Code::IllegalDeliveryTime];
                assert!(known.iter().any(|&c| c as i32 == status.code), "{status:?}");
                return;
            }
        };
        let sys = sent.system_properties.clone().unwrap_or_default();
        assert_eq!(out.topic, sent.topic.as_ref().map(|t| t.name.clone()).unwrap_or_default());
        let mut user: Vec<_> = sent.user_properties.clone().into_iter().collect();
        user.sort();
        assert_eq!((&out.user_properties, &out.body), (&user, &sent.body));
        assert!((0..=253_402_300_799_999).contains(&out.born_timestamp_ms), "{}", out.born_timestamp_ms);

        let Ok(placed) = place(&out, fixture.broker.metadata(), &limits, NOW_MS, rng.next_u64()) else { return };
        let back = delivered(&out.topic, &placed.message, placed.queue_id);
        let back_sys = back.system_properties.clone().unwrap_or_default();
        assert_eq!(back.body, sent.body);
        assert_eq!(back.user_properties, sent.user_properties, "user properties survive storage");
        assert_eq!(back_sys.message_id, sys.message_id);
        assert_eq!(back_sys.tag, sys.tag);
        assert_eq!(back_sys.keys, sys.keys);
        assert_eq!(back_sys.message_group, sys.message_group);
        assert_eq!(back_sys.born_timestamp, Some(timestamp(out.born_timestamp_ms)));
        assert_eq!(back_sys.born_host, peer.map_or("0.0.0.0".into(), |p| p.ip().to_string()));
        assert_eq!(back_sys.body_encoding == pb::Encoding::Gzip as i32, out.compressed);
        assert_eq!(back_sys.delivery_timestamp, out.delivery_ms.map(timestamp));
        if placed.transaction.is_none() {
            assert_eq!(placed.message.sys_flag & sys_flag::TRANSACTION_PREPARED, 0);
            let kind = match (out.kind, &out.message_group, out.delivery_ms) {
                (Some(kind), _, _) => kind,
                (None, Some(_), _) => MessageKind::Fifo,
                (None, None, Some(_)) => MessageKind::Delay,
                (None, None, None) => MessageKind::Normal,
            };
            // A NORMAL message that carries a message group reads back as FIFO.
            let expected = match kind {
                MessageKind::Normal if out.message_group.is_some() => pb::MessageType::Fifo,
                MessageKind::Normal => pb::MessageType::Normal,
                MessageKind::Fifo => pb::MessageType::Fifo,
                MessageKind::Delay => pb::MessageType::Delay,
                MessageKind::Transaction => pb::MessageType::Transaction,
            };
            assert_eq!(back_sys.message_type, expected as i32, "{kind:?} sent as {}", sys.message_type);
        }
    });
}

/// Valid requests of each kind, encoded: the seeds the byte mutations start from.
fn request_seeds(rng: &mut Rng) -> Vec<Vec<u8>> {
    let resource = |name: &str| Some(pb::Resource { resource_namespace: String::new(), name: name.into() });
    let send = pb::SendMessageRequest { messages: (0..1 + rng.size(3)).map(|_| message(rng)).collect() };
    let receive = pb::ReceiveMessageRequest {
        group: resource("g"),
        message_queue: Some(pb::MessageQueue { topic: resource("normal"), id: 1, ..pb::MessageQueue::default() }),
        filter_expression: Some(pb::FilterExpression {
            r#type: pb::FilterType::Sql as i32,
            expression: "a > 1".into(),
        }),
        batch_size: 32,
        invisible_duration: Some(convert::duration(30_000)),
        auto_renew: false,
        long_polling_timeout: Some(convert::duration(20_000)),
        ..pb::ReceiveMessageRequest::default()
    };
    let ack = pb::AckMessageRequest {
        group: resource("g"),
        topic: resource("normal"),
        entries: vec![pb::AckMessageEntry {
            message_id: "ID".into(),
            receipt_handle: "h".repeat(40),
            ..Default::default()
        }],
    };
    let end = pb::EndTransactionRequest {
        topic: resource("tx"),
        message_id: "ID".into(),
        transaction_id: "T".into(),
        resolution: pb::TransactionResolution::Commit as i32,
        source: pb::TransactionSource::SourceClient as i32,
        trace_context: String::new(),
    };
    vec![send.encode_to_vec(), receive.encode_to_vec(), ack.encode_to_vec(), end.encode_to_vec()]
}

/// Decodes `bytes` as `M`; what decodes must re-encode to something that decodes the same.
fn decodes_stably<M: prost::Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let decoded = M::decode(bytes).ok()?;
    let again = M::decode(decoded.encode_to_vec().as_slice()).expect("a decoded request re-encodes");
    assert_eq!(again, decoded);
    Some(decoded)
}

#[test]
fn requests_decoded_from_any_bytes_convert_or_fail_with_a_status() {
    let fixture = Fixture::new();
    let grpc = fixture.grpc();
    let limits = SendLimits::default();
    cases!(20_000, |rng| {
        let seeds = request_seeds(rng);
        let mut bytes = seeds[rng.index(seeds.len())].clone();
        if rng.one_in(8) {
            let n = rng.size(300);
            bytes = rng.bytes(n);
        }
        let donors: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
        mutate(rng, &mut bytes, &donors);

        if let Some(request) = decodes_stably::<pb::SendMessageRequest>(&bytes) {
            for message in request.messages {
                if let Ok(out) = convert::outgoing(message, None) {
                    let _ = place(&out, fixture.broker.metadata(), &limits, NOW_MS, 0);
                }
            }
        }
        if let Some(request) = decodes_stably::<pb::ReceiveMessageRequest>(&bytes) {
            let _ = crate::consume::filter(request.filter_expression.as_ref());
            let wait = grpc.polling_ms(request.long_polling_timeout.as_ref(), None);
            assert!((0..=grpc.config.long_polling_ms_max).contains(&wait), "{wait}");
            if let Some(d) = &request.invisible_duration {
                let _ = convert::duration_ms(d);
            }
        }
        let _ = decodes_stably::<pb::AckMessageRequest>(&bytes);
        let _ = decodes_stably::<pb::EndTransactionRequest>(&bytes);
        let _ = decodes_stably::<pb::ChangeInvisibleDurationRequest>(&bytes);
        let _ = decodes_stably::<pb::QueryRouteRequest>(&bytes);
        let _ = decodes_stably::<pb::HeartbeatRequest>(&bytes);
        let _ = decodes_stably::<pb::TelemetryCommand>(&bytes);
    });
}

#[test]
fn the_long_polling_wait_stays_within_bounds_whatever_the_client_asks() {
    let fixture = Fixture::new();
    let grpc = fixture.grpc();
    cases!(20_000, |rng| {
        let asked = rng.bool().then(|| prost_types::Duration { seconds: rng.edge_i64(), nanos: rng.edge_i64() as i32 });
        // What `grpc-timeout` can say: any count of hours down to nanoseconds, signed.
        let deadline = rng.bool().then(|| rng.edge_i64());
        let wait = grpc.polling_ms(asked.as_ref(), deadline);
        assert!((0..=grpc.config.long_polling_ms_max).contains(&wait), "{wait} for {asked:?}, deadline {deadline:?}");
    });
}

#[test]
fn timestamps_and_durations_convert_both_ways_without_overflow() {
    cases!(50_000, |rng| {
        // Exact but for the last second before i64::MIN, whose whole seconds saturate.
        let ms = rng.edge_i64().max(i64::MIN + 1000);
        assert_eq!(convert::timestamp_ms(&timestamp(ms)), ms);
        assert_eq!(convert::duration_ms(&convert::duration(ms)), ms);
        let t = prost_types::Timestamp { seconds: rng.edge_i64(), nanos: rng.edge_i64() as i32 };
        let _ = convert::timestamp_ms(&t);
        let d = prost_types::Duration { seconds: t.seconds, nanos: t.nanos };
        let _ = convert::duration_ms(&d);
    });
}

#[test]
fn filter_expressions_of_any_type_and_text_parse_or_fail_with_a_status() {
    cases!(20_000, |rng| {
        let r#type = if rng.bool() { rng.below(4) as i32 } else { rng.edge_i64() as i32 };
        let expression = match rng.below(3) {
            0 => rng.text(60),
            1 => (0..rng.size(6)).map(|_| rng.word(6)).collect::<Vec<_>>().join(*rng.pick(&["||", " || ", "|"])),
            _ => "x".repeat(rng.size(70_000)),
        };
        if let Err(status) = crate::consume::filter(Some(&pb::FilterExpression { r#type, expression })) {
            assert_eq!(status.code, Code::IllegalFilterExpression as i32);
        }
    });
}
