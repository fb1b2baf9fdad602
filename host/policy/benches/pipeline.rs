//! A message's way through the broker with and without a filter plugin bound: send, wait until it is
//! stored, receive in batches of 32 and acknowledge — the broker's own path, in process, without gRPC.
//!
//! * `pipeline/send_receive_ack/no_filter` — the group has no filter.
//! * `pipeline/send_receive_ack/enterprise_inbox` — the same group with the `enterprise_inbox`
//!   filter bound, listing every enterprise so that every message is still delivered: the difference
//!   is the filter's cost on the consumer path.
//!
//! Throughput is in messages per second. The component comes from `plugins/` (built by
//! `ferrymq-test-components`). `FERRYMQ_BENCH_FILTERS=name=path.wasm,…` adds a run for each of
//! those enterprise-inbox components (`scripts/bench_plugins.sh` passes the Python, JavaScript and C
//! ones).

// Setup that fails should stop a benchmark loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferrymq_broker::delivery::Receive;
use ferrymq_broker::filter::Filter;
use ferrymq_broker::metadata::{GroupConfig, TopicConfig, TopicType};
use ferrymq_broker::send::Outgoing;
use ferrymq_broker::{Broker, BrokerConfig};
use ferrymq_policy::config::BindingRules;
use ferrymq_policy::{BindingConfig, FailurePolicy, PluginHost, PluginKind, PluginsConfig};
use ferrymq_store::clock::SystemClock;
use ferrymq_store::{Store, StoreOptions};
use ferrymq_test_components::component;

const MESSAGES: usize = 1024;
const BODY_BYTES: usize = 256;

fn open(dir: &Path, filter: Option<PathBuf>) -> (Arc<Store>, Broker, Option<Arc<PluginHost>>) {
    let mut options = StoreOptions::new(dir.join("store"));
    options.config.segment_bytes = 256 << 20;
    let store = Arc::new(Store::open(options).expect("store"));
    let broker = Broker::open(store.clone(), dir, BrokerConfig::default(), Arc::new(SystemClock)).expect("broker");
    broker
        .metadata()
        .create_topic(TopicConfig { name: "inbox".into(), message_type: TopicType::Normal, queues: 4 })
        .expect("topic");
    let host = filter.map(|component| {
        let binding = BindingConfig {
            name: Some("inbox".into()),
            component,
            rules: BindingRules {
                kind: PluginKind::Filter,
                topic: "inbox".into(),
                group: Some("readers".into()),
                policy: FailurePolicy::FailClosed,
                params: [("enterprise_ids".to_owned(), "E0, E1, E2, E3".to_owned())].into(),
                http_allowlist: Vec::new(),
                limits: Default::default(),
            },
            unknown: Default::default(),
        };
        let config = PluginsConfig { bindings: vec![binding], ..PluginsConfig::default() };
        let host = Arc::new(PluginHost::start(&config, dir).expect("plugin host"));
        broker.set_policies(Some(host.clone()));
        host
    });
    (store, broker, host)
}

fn message(i: usize) -> Outgoing {
    let mut body = format!("notice {i}").into_bytes();
    body.resize(BODY_BYTES, b'.');
    Outgoing {
        topic: "inbox".into(),
        message_id: format!("01F5A1B2C3D4E5F6{i:016}"),
        user_properties: vec![("enterpriseId".into(), format!("E{}", i % 4)), ("region".into(), "north".into())],
        body,
        born_timestamp_ms: 1_764_000_000_000,
        ..Outgoing::default()
    }
}

/// Sends `MESSAGES`, waits until all are stored and dispatched, then receives and acks them all.
fn round(store: &Store, broker: &Broker, group: &GroupConfig, filter: &Filter, start: usize) {
    let (tx, rx) = mpsc::channel();
    for i in start..start + MESSAGES {
        let tx = tx.clone();
        broker.send(
            &message(i),
            Box::new(move |r| {
                let _ = tx.send(r.is_ok());
            }),
        );
    }
    assert!((0..MESSAGES).all(|_| rx.recv().unwrap_or(false)), "every send stored");
    assert!(store.wait_dispatched(store.stats().written, Duration::from_secs(10)));
    let mut got = 0;
    while got < MESSAGES {
        let request = Receive {
            group,
            client_id: "bench",
            topic: "inbox",
            filter,
            batch: 32,
            invisible_ms: 60_000,
            auto_renew: false,
        };
        let delivered = broker.delivery().receive(&request).expect("receive");
        assert!(!delivered.is_empty(), "{got} of {MESSAGES} received, then nothing");
        for d in &delivered {
            broker.delivery().ack(group, "bench", &d.receipt_handle).expect("ack");
        }
        got += delivered.len();
    }
}

fn pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline/send_receive_ack");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.sample_size(20);
    let mut runs =
        vec![("no_filter".to_owned(), None), ("enterprise_inbox".to_owned(), Some(component("enterprise_inbox")))];
    for entry in std::env::var("FERRYMQ_BENCH_FILTERS").unwrap_or_default().split(',').filter(|e| !e.is_empty()) {
        let (name, path) = entry.split_once('=').expect("FERRYMQ_BENCH_FILTERS is name=path.wasm,…");
        runs.push((format!("enterprise_inbox_{name}"), Some(PathBuf::from(path))));
    }
    for (name, filter) in runs {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, broker, _host) = open(dir.path(), filter);
        let readers = broker
            .metadata()
            .put_group(GroupConfig { name: "readers".into(), ..GroupConfig::default() })
            .expect("group");
        let filter = Filter::all();
        let mut next = 0;
        group.bench_function(&name, |b| {
            b.iter(|| {
                round(&store, &broker, &readers, &filter, next);
                next += MESSAGES;
            })
        });
        broker.close();
        store.close();
    }
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
