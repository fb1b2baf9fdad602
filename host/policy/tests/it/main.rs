//! The plugin registry and host in process, with the real fixture and example components
//! (`tests/plugins/`, `plugins/`, built by `ferrymq-test-components`): bindings checked against the
//! topics that exist, counters that add up over version swaps, dry runs with a binding's
//! parameters, and a retried poison message counted once toward quarantine.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use ferrymq_broker::hooks::{FilterInput, FilterVerdict, Policies, RouteVerdict};
use ferrymq_broker::metadata::{TopicConfig, TopicType};
use ferrymq_broker::send::Outgoing;
use ferrymq_broker::{Broker, BrokerConfig};
use ferrymq_policy::config::{BindingRules, LimitsConfig};
use ferrymq_policy::dry_run::DryRunRequest;
use ferrymq_policy::registry::{BindingSpec, ErrorClass, RegistryError};
use ferrymq_policy::{FailurePolicy, PluginHost, PluginKind, PluginsConfig, Registry};
use ferrymq_store::clock::SystemClock;
use ferrymq_store::{Store, StoreOptions, StoredRecord};

/// A broker in `dir` with the topic `tax-in`, a plugin host and a registry.
struct Node {
    store: Arc<Store>,
    broker: Arc<Broker>,
    host: Arc<PluginHost>,
    registry: Registry,
}

impl Node {
    fn open(dir: &Path) -> Self {
        let mut options = StoreOptions::new(dir.join("store"));
        options.config.segment_bytes = 8 << 20;
        let store = Arc::new(Store::open(options).expect("store"));
        let broker =
            Arc::new(Broker::open(store.clone(), dir, BrokerConfig::default(), Arc::new(SystemClock)).expect("broker"));
        broker
            .metadata()
            .create_topic(TopicConfig { name: "tax-in".into(), message_type: TopicType::Normal, queues: 2 })
            .expect("topic");
        let host = Arc::new(PluginHost::start(&PluginsConfig::default(), dir).expect("plugin host"));
        let registry = Registry::open(broker.clone(), host.clone(), dir, ferrymq_policy::compile::Compiler::InProcess)
            .expect("registry");
        Self { store, broker, host, registry }
    }

    /// Uploads `component` as the next version of `plugin`, under a label that makes it a new one.
    fn push(&self, plugin: &str, component: &str, label: &str) -> u32 {
        let bytes = std::fs::read(ferrymq_test_components::component(component)).expect("read component");
        let (info, created) = self.registry.push(plugin, &relabelled(&bytes, label), "tester", None).expect("push");
        assert!(created, "{plugin} {label} is a new version");
        info.version
    }

    /// Sends `message` (no plugin runs: the broker has no policies) and waits until it is stored.
    fn send(&self, message: Outgoing) {
        let (tx, rx) = mpsc::channel();
        self.broker.send(
            &message,
            Box::new(move |r| {
                let _ = tx.send(r.is_ok());
            }),
        );
        assert!(rx.recv_timeout(Duration::from_secs(10)).expect("answer"), "stored");
        assert!(self.store.wait_dispatched(self.store.stats().written, Duration::from_secs(10)));
    }

    /// Every message of `topic`, oldest first.
    fn stored(&self, topic: &str) -> Vec<StoredRecord> {
        let mut found: Vec<StoredRecord> = self
            .store
            .queues()
            .into_iter()
            .filter(|q| q.topic == topic)
            .flat_map(|q| self.store.read_queue(topic, q.queue_id, q.min, 1000))
            .map(|e| self.store.record(e.offset, e.len).expect("record"))
            .collect();
        found.sort_by_key(StoredRecord::offset);
        found
    }

    /// The calls and failures `GET /v1/bindings` shows for `binding`.
    fn counters(&self, binding: &str) -> (u64, u64, bool) {
        let (_, stats) = self.host.bindings().into_iter().find(|(b, _)| b.name == binding).expect("bound");
        (stats.calls, stats.failures, stats.quarantined)
    }
}

/// `bytes` with a custom section named `label` appended: the same behaviour under another digest.
fn relabelled(bytes: &[u8], label: &str) -> Vec<u8> {
    assert!(label.len() < 0x80, "one-byte lengths only");
    let mut out = bytes.to_vec();
    out.extend_from_slice(&[0, label.len() as u8 + 1, label.len() as u8]);
    out.extend_from_slice(label.as_bytes());
    out
}

fn spec(name: &str, kind: PluginKind, topic: &str, plugin: &str, version: u32) -> BindingSpec {
    BindingSpec {
        name: name.into(),
        plugin: plugin.into(),
        version,
        rules: BindingRules {
            kind,
            topic: topic.into(),
            group: (kind == PluginKind::Filter).then(|| "readers".to_owned()),
            policy: FailurePolicy::FailClosed,
            params: Default::default(),
            http_allowlist: Vec::new(),
            limits: LimitsConfig::default(),
        },
        unknown: Default::default(),
    }
}

fn outgoing(id: &str, properties: &[(&str, &str)]) -> Outgoing {
    Outgoing {
        topic: "tax-in".into(),
        keys: vec![format!("key-{id}")],
        message_id: id.into(),
        user_properties: properties.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        body: format!("body {id}").into_bytes(),
        born_timestamp_ms: 1_764_000_000_000,
        ..Outgoing::default()
    }
}

#[test]
fn a_binding_to_a_topic_that_does_not_exist_is_refused_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(dir.path());
    let v = node.push("tax/stamp", "version_stamp", "v1");
    let err = node.registry.bind(spec("stamp", PluginKind::Route, "tax-nowhere", "tax/stamp", v)).unwrap_err();
    assert!(matches!(&err, RegistryError::NoSuchTopic(topic) if topic == "tax-nowhere"), "{err}");
    assert_eq!(err.class(), ErrorClass::NotFound);
    assert!(err.to_string().contains("tax-nowhere"), "{err}");
    assert!(node.registry.binding("stamp").is_none() && node.host.binding("stamp").is_none(), "nothing was bound");
    node.registry.bind(spec("stamp", PluginKind::Route, "tax-in", "tax/stamp", v)).expect("an existing topic");
}

#[test]
fn a_bindings_counters_add_up_over_activations_and_rollbacks_and_start_afresh_when_it_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(dir.path());
    let (v1, v2) = (node.push("tax/stamp", "version_stamp", "v1"), node.push("tax/stamp", "version_stamp", "v2"));
    node.registry.bind(spec("stamp", PluginKind::Route, "tax-in", "tax/stamp", v1)).expect("bind");
    let route = |n: usize| {
        for i in 0..n {
            let verdict = node.host.route(&outgoing(&format!("m{i}"), &[]));
            assert!(matches!(verdict, RouteVerdict::Accept(_)), "{verdict:?}");
        }
    };
    route(3);
    assert_eq!(node.counters("stamp"), (3, 0, false));
    node.registry.activate("stamp", v2).expect("activate");
    route(2);
    assert_eq!(node.counters("stamp"), (5, 0, false), "an activation keeps the binding's counters");
    node.registry.rollback("stamp").expect("rollback");
    route(1);
    node.registry.activate("stamp", v1).expect("the same version again");
    assert_eq!(node.counters("stamp"), (6, 0, false), "so do rollbacks and activating the active version");
    node.registry.bind(spec("stamp", PluginKind::Route, "tax-in", "tax/stamp", v2)).expect("replace");
    assert_eq!(node.counters("stamp"), (0, 0, false), "a binding replaced by PUT starts afresh");

    // A filter's counters take in the earlier versions it keeps for older messages.
    let (f1, f2) = (node.push("tax/split", "version_split", "v1"), node.push("tax/split", "version_split", "v2"));
    node.registry.bind(spec("split", PluginKind::Filter, "tax-in", "tax/split", f1)).expect("bind");
    node.send(outgoing("old", &[]));
    node.registry.activate("split", f2).expect("activate");
    node.send(outgoing("new", &[]));
    let records = node.stored("tax-in");
    assert_eq!(records.len(), 2);
    let inputs: Vec<FilterInput> = records.into_iter().map(|record| FilterInput { record, attempt: 1 }).collect();
    let verdicts = node.host.filter("tax-in", "readers", &inputs);
    assert!(verdicts.iter().all(|v| matches!(v, FilterVerdict::Deliver | FilterVerdict::Withhold)), "{verdicts:?}");
    assert_eq!(node.counters("split"), (2, 0, false), "one call by each version, both counted");
}

#[test]
fn a_dry_run_takes_a_bindings_parameters_and_limits_and_shows_each_examples_properties() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(dir.path());
    let v = node.push("tax/inbox", "enterprise_inbox", "v1");
    let mut inbox = spec("inbox", PluginKind::Filter, "tax-in", "tax/inbox", v);
    inbox.rules.params = [("enterprise_ids".to_owned(), "E1".to_owned())].into();
    node.registry.bind(inbox).expect("bind");
    for (id, enterprise) in [("a", "E1"), ("b", "E2"), ("c", "E2")] {
        node.send(outgoing(id, &[("enterpriseId", enterprise)]));
    }
    let request = |binding: Option<&str>, params: &[(&str, &str)]| DryRunRequest {
        topic: "tax-in".into(),
        last: None,
        from_ms: None,
        to_ms: None,
        binding: binding.map(str::to_owned),
        params: params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        limits: None,
    };
    let decided = |binding: Option<&str>, params: &[(&str, &str)]| {
        let run = node.registry.dry_run("tax/inbox", v, request(binding, params)).expect("dry run");
        (run.decisions.get("deliver").copied(), run.decisions.get("withhold").copied())
    };
    assert_eq!(decided(None, &[]), (None, Some(3)), "without parameters the inbox takes nothing");
    assert_eq!(decided(Some("inbox"), &[]), (Some(1), Some(2)), "the binding's enterprise_ids = E1");
    assert_eq!(decided(Some("inbox"), &[("enterprise_ids", "E2")]), (Some(2), Some(1)), "a param given wins");

    let run = node.registry.dry_run("tax/inbox", v, request(Some("inbox"), &[])).expect("dry run");
    let delivered = &run.examples["deliver"][0];
    assert_eq!((delivered.message_id.as_str(), delivered.keys.as_str()), ("a", "key-a"));
    assert_eq!(delivered.properties, [("enterpriseId".to_owned(), "E1".to_owned())].into(), "no UNIQ_KEY, no KEYS");

    let err = node.registry.dry_run("tax/inbox", v, request(Some("nobody"), &[])).unwrap_err();
    assert_eq!(err.class(), ErrorClass::NotFound, "{err}");
    let s = node.push("tax/stamp", "version_stamp", "v1");
    let err = node.registry.dry_run("tax/stamp", s, request(Some("inbox"), &[])).unwrap_err();
    assert!(matches!(err, RegistryError::BadRequest(ref reason) if reason.contains("filter")), "{err}");
}

#[test]
fn a_poison_message_retried_by_its_producer_counts_once_toward_quarantine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(dir.path());
    let v = node.push("tax/trap", "route_trap", "v1");
    let mut trap = spec("trap", PluginKind::Route, "tax-in", "tax/trap", v);
    trap.rules.limits.failures_max = 3;
    node.registry.bind(trap).expect("bind");
    // The producer retries the same message (same id) five times: five failed calls, one message.
    for _ in 0..5 {
        let verdict = node.host.route(&outgoing("poison", &[]));
        assert!(matches!(&verdict, RouteVerdict::Reject(reason) if reason.contains("trap")), "{verdict:?}");
    }
    assert_eq!(node.counters("trap"), (5, 5, false), "every call counted, the message once toward quarantine");
    node.host.route(&outgoing("second", &[]));
    assert!(!node.counters("trap").2);
    node.host.route(&outgoing("third", &[]));
    assert!(node.counters("trap").2, "three different messages failing in a row quarantine it");
}
