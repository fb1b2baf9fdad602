//! gRPC requests decoded from any bytes, and the messages in them converted as a send converts them:
//! checked against the send limits and the topic, stored as a record, and converted back to what a
//! consumer receives, with the body and the user properties unchanged.
#![no_main]

use std::sync::OnceLock;

use ferrymq_broker::metadata::{Metadata, TopicConfig, TopicType};
use ferrymq_broker::send::{SendLimits, place};
use ferrymq_grpc::convert;
use ferrymq_proto::grpc::v2 as pb;
use ferrymq_proto::record::{self, Entry, RecordMeta, Verify};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

const NOW_MS: i64 = 1_764_000_000_000;

/// Topics of every type, named after their type.
fn metadata() -> &'static Metadata {
    static METADATA: OnceLock<(tempfile::TempDir, Metadata)> = OnceLock::new();
    &METADATA
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let metadata = Metadata::open(dir.path()).expect("metadata");
            for (name, message_type) in [
                ("normal", TopicType::Normal),
                ("fifo", TopicType::Fifo),
                ("delay", TopicType::Delay),
                ("tx", TopicType::Transaction),
                ("mixed", TopicType::Mixed),
            ] {
                metadata.create_topic(TopicConfig { name: name.into(), message_type, queues: 4 }).expect("topic");
            }
            (dir, metadata)
        })
        .1
}

fn send(message: pb::Message) {
    let Ok(out) = convert::outgoing(message.clone(), None) else { return };
    let Ok(placed) = place(&out, metadata(), &SendLimits::default(), NOW_MS, 0) else { return };
    let stored = &placed.message;
    let meta = RecordMeta {
        sys_flag: stored.sys_flag,
        flag: stored.flag,
        queue_id: stored.queue_id,
        queue_offset: 0,
        physical_offset: 0,
        born_timestamp_ms: stored.born_timestamp_ms,
        store_timestamp_ms: NOW_MS,
        born_host: stored.born_host,
        store_host: stored.born_host,
        reconsume_times: 0,
        prepared_tx_offset: 0,
    };
    let mut buf = Vec::new();
    record::encode(&meta, &stored.topic, &stored.properties, &stored.body, &mut buf).expect("a placed message encodes");
    let Ok(Entry::Record { record, .. }) = record::decode(&buf, 0, Verify::Full) else { panic!("it decodes") };
    let back = convert::message(&out.topic, &record, placed.queue_id, 0);
    assert_eq!(back.body, message.body);
    assert_eq!(back.user_properties, message.user_properties);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = pb::SendMessageRequest::decode(data) {
        for message in request.messages {
            send(message);
        }
    }
    let _ = pb::ReceiveMessageRequest::decode(data);
    let _ = pb::AckMessageRequest::decode(data);
    let _ = pb::ChangeInvisibleDurationRequest::decode(data);
    let _ = pb::EndTransactionRequest::decode(data);
    let _ = pb::QueryRouteRequest::decode(data);
    let _ = pb::TelemetryCommand::decode(data);
});
