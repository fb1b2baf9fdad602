//! A broker over a real store in a temporary directory, with a clock the test moves.

use std::sync::Arc;
use std::time::Duration;

use ferrymq_broker::filter::{Filter, TagFilter};
use ferrymq_broker::metadata::{GroupConfig, TopicConfig, TopicType};
use ferrymq_broker::send::Outgoing;
use ferrymq_broker::{Broker, BrokerConfig, SendReceipt};
use ferrymq_store::clock::ManualClock;
use ferrymq_store::{Store, StoreOptions};

pub struct Fixture {
    pub broker: Broker,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
    config: BrokerConfig,
}

pub const START_MS: i64 = 1_764_000_000_000;

impl Fixture {
    pub fn new() -> Self {
        Self::with_config(BrokerConfig { tick_ms: 3_600_000, ..BrokerConfig::default() })
    }

    /// A broker with `config` (its threads tick every `tick_ms`), kept across restarts.
    pub fn with_config(config: BrokerConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(START_MS));
        let broker = open(dir.path(), clock.clone(), config.clone());
        Self { broker, clock, dir, config }
    }

    /// Closes everything and opens it again on the same directory (a clean restart).
    pub fn restart(self) -> Self {
        let Fixture { broker, clock, dir, config } = self;
        let store = broker.store().clone();
        broker.close();
        drop(broker);
        store.close();
        drop(store);
        let broker = open(dir.path(), clock.clone(), config.clone());
        Self { broker, clock, dir, config }
    }

    pub fn topic(&self, name: &str, message_type: TopicType, queues: u32) {
        self.broker.metadata().create_topic(TopicConfig { name: name.into(), message_type, queues }).expect("topic");
    }

    pub fn group(&self, name: &str, change: impl FnOnce(&mut GroupConfig)) -> GroupConfig {
        let mut group = GroupConfig { name: name.into(), ..GroupConfig::default() };
        change(&mut group);
        self.broker.metadata().put_group(group).expect("group")
    }

    pub fn send(&self, message: Outgoing) -> SendReceipt {
        let (tx, rx) = std::sync::mpsc::channel();
        self.broker.send(&message, Box::new(move |r| tx.send(r).expect("send result")));
        let receipt = rx.recv().expect("callback").expect("sent");
        let written = self.broker.store().stats().written;
        assert!(self.broker.store().wait_dispatched(written, Duration::from_secs(10)));
        receipt
    }

    pub fn advance(&self, ms: i64) {
        self.clock.advance_ms(ms);
    }

    /// Runs redelivery and waits until whatever it stored (retry or dead-letter copies) is readable.
    pub fn revive(&self) {
        self.broker.delivery().revive();
        let written = self.broker.store().stats().written;
        assert!(self.broker.store().wait_dispatched(written, Duration::from_secs(10)));
    }
}

fn open(dir: &std::path::Path, clock: Arc<ManualClock>, config: BrokerConfig) -> Broker {
    let mut options = StoreOptions::new(dir.join("store"));
    options.clock = clock.clone();
    options.config.segment_bytes = 8 << 20;
    options.config.index_slots = 1024;
    options.config.index_entries_max = 4096;
    let store = Arc::new(Store::open(options).expect("store"));
    Broker::open(store, dir, config, clock).expect("broker")
}

pub fn message(topic: &str, body: &str) -> Outgoing {
    Outgoing {
        topic: topic.into(),
        message_id: format!("id-{body}"),
        body: body.as_bytes().to_vec(),
        born_timestamp_ms: START_MS,
        ..Outgoing::default()
    }
}

pub fn tag(expr: &str) -> Filter {
    Filter::Tag(TagFilter::parse(expr).expect("tag expression"))
}

pub fn body(d: &ferrymq_broker::delivery::Delivered) -> String {
    String::from_utf8(d.record.decode().expect("intact").body.to_vec()).expect("utf-8")
}
