//! What retention deletes before a group consumed it is counted per group, against the progress the
//! group committed; a group that read past the deleted range lost nothing.

use std::sync::Arc;
use std::time::Duration;

use ferrymq_broker::metadata::{TopicConfig, TopicType};
use ferrymq_broker::offsets::OffsetKey;
use ferrymq_broker::send::Outgoing;
use ferrymq_broker::{Broker, BrokerConfig};
use ferrymq_store::clock::ManualClock;
use ferrymq_store::{DiskPressure, Store, StoreOptions};

use crate::support::{START_MS, message};

fn key(subscriber: &str) -> OffsetKey {
    OffsetKey { subscriber: subscriber.into(), topic: "t".into(), queue_id: 0 }
}

#[test]
fn delete_oldest_counts_per_group_the_messages_it_had_not_consumed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(START_MS));
    let mut options = StoreOptions::new(dir.path().join("store"));
    options.clock = clock.clone();
    options.config.segment_bytes = 64 << 10;
    options.config.record_bytes_max = 16 << 10;
    options.config.queue_file_entries = 1024;
    options.config.index_slots = 256;
    options.config.index_entries_max = 1024;
    options.config.disk_pressure = DiskPressure::DeleteOldest;
    options.config.disk_bytes_max = 1 << 20;
    let store = Arc::new(Store::open(options).expect("store"));
    let config = BrokerConfig { tick_ms: 3_600_000, ..BrokerConfig::default() };
    let broker = Broker::open(store.clone(), dir.path(), config, clock).expect("broker");
    let topic = TopicConfig { name: "t".into(), message_type: TopicType::Normal, queues: 1 };
    broker.metadata().create_topic(topic).expect("topic");
    broker.offsets().set(key("slow"), 100);
    broker.offsets().set(key("fast"), 3_000);

    for i in 0..3_000u32 {
        let (tx, rx) = std::sync::mpsc::channel();
        let outgoing = Outgoing { message_id: format!("id-{i}"), ..message("t", &"x".repeat(1000)) };
        broker.send(&outgoing, Box::new(move |r| tx.send(r).expect("send result")));
        rx.recv().expect("callback").expect("sent");
    }
    let written = store.stats().written;
    assert!(store.wait_dispatched(written, Duration::from_secs(10)));
    // Retention keeps what is not yet flushed (async flush lags by its interval).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.stats().flushed < written && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    store.run_retention().expect("retention");

    let (min, _) = store.queue_bounds("t", 0).expect("queue");
    assert!(min > 100, "retention deleted past the slow group: {:?}", store.stats());
    assert_eq!(broker.messages_lost(), vec![("slow".to_owned(), "disk_pressure", min - 100)]);
    broker.close();
}
