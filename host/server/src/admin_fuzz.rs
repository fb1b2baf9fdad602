//! Seeded fuzz test of the admin API as a client drives it: random methods, paths, queries and JSON
//! bodies (random, shaped like each endpoint's, or valid ones mutated) through the in-process router.
//! Bad input is answered with a 4xx naming the problem, never a 5xx and never a panic; the broker
//! stays healthy throughout.
//!
//! Budgets and replay: `ferrymq_fuzzgen` (`FERRYMQ_FUZZ_SEED`, `FERRYMQ_FUZZ_CASES`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use ferrymq_broker::{Broker, BrokerConfig};
use ferrymq_fuzzgen::{Rng, cases, json, json_fields, mutate_text};
use ferrymq_grpc::{Arrivals, GrpcConfig, GrpcState};
use ferrymq_policy::PluginHost;
use ferrymq_policy::registry::Registry;
use ferrymq_policy::signatures::Signatures;
use ferrymq_store::{Store, StoreOptions};
use hyper::{Method, StatusCode};

use crate::admin::audit::AuditLog;
use crate::admin::auth::Tokens;
use crate::admin::{AdminState, Call, respond};

/// An admin endpoint on a broker in a temporary directory, without tokens (so every request reaches
/// its handler, as from `ferrymq admin` on the same host).
fn state(dir: &std::path::Path) -> AdminState {
    let mut options = StoreOptions::new(dir);
    options.config.segment_bytes = 8 << 20;
    options.config.index_entries_max = 1024;
    options.config.index_slots = 64;
    let store = Arc::new(Store::open(options).expect("store"));
    let clock = Arc::new(ferrymq_store::clock::SystemClock);
    let broker = Arc::new(Broker::open(store, dir, BrokerConfig::default(), clock).expect("broker"));
    let cluster = Arc::new(ferrymq_cluster::Cluster::new(Default::default(), "ferrymq".into()));
    let bound = std::net::SocketAddr::from(([127, 0, 0, 1], 8081));
    let grpc = Arc::new(GrpcState::new(
        broker.clone(),
        Arc::new(Arrivals::default()),
        GrpcConfig::default(),
        bound,
        cluster.clone(),
    ));
    let plugins = Arc::new(PluginHost::start(&ferrymq_policy::PluginsConfig::default(), dir).expect("no plugins"));
    let registry = Arc::new(
        Registry::open(broker.clone(), plugins.clone(), dir, ferrymq_policy::compile::Compiler::InProcess)
            .expect("registry"),
    );
    let audit = Arc::new(AuditLog::open(broker.store().clone()));
    AdminState {
        broker,
        grpc,
        plugins,
        registry,
        audit,
        cluster,
        tokens: Tokens::default(),
        signatures: Signatures::default(),
        upload_bytes_max: 1 << 20,
        started: Instant::now(),
    }
}

/// A path segment a client might put where a name goes.
fn segment(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => rng.text(10),
        1 => (*rng.pick(&["", "..", "%2F", "0", "-1", "4294967296", "é"])).to_owned(),
        2 => "x".repeat(rng.size(400)),
        3 => rng.word(10),
        // Names that exist: the topic, group and plugin department the test starts with.
        _ => (*rng.pick(&["orders", "g", "tax", "p", "1", "b1"])).to_owned(),
    }
}

/// Every endpoint, with the method it answers and the body it parses (an index into [`BODIES`]).
const ENDPOINTS: [(Method, &str, Option<usize>); 28] = [
    (Method::GET, "/healthz", None),
    (Method::GET, "/metrics", None),
    (Method::GET, "/v1/cluster", None),
    (Method::GET, "/v1/topics", None),
    (Method::POST, "/v1/topics", Some(0)),
    (Method::DELETE, "/v1/topics/{}", None),
    (Method::GET, "/v1/groups", None),
    (Method::POST, "/v1/groups", Some(1)),
    (Method::GET, "/v1/groups/{}/lag", None),
    (Method::POST, "/v1/groups/{}/offsets/reset", Some(2)),
    (Method::GET, "/v1/transactions", None),
    (Method::GET, "/v1/transactions/discarded", None),
    (Method::GET, "/v1/messages", None),
    (Method::GET, "/v1/plugins", None),
    (Method::GET, "/v1/plugins/{}/{}", None),
    (Method::POST, "/v1/plugins/{}/{}/versions", None),
    (Method::GET, "/v1/plugins/{}/{}/versions/{}", None),
    (Method::DELETE, "/v1/plugins/{}/{}/versions/{}", None),
    (Method::POST, "/v1/plugins/{}/{}/versions/{}/dry-run", Some(6)),
    (Method::GET, "/v1/bindings", None),
    (Method::GET, "/v1/bindings/{}", None),
    (Method::PUT, "/v1/bindings/{}", Some(4)),
    (Method::DELETE, "/v1/bindings/{}", None),
    (Method::POST, "/v1/bindings/{}/activate", Some(3)),
    (Method::POST, "/v1/bindings/{}/rollback", None),
    (Method::GET, "/v1/audit", None),
    (Method::GET, "/v1/audit/verify", None),
    (Method::GET, "/v1/{}/{}/{}", None),
];

/// A request for a random endpoint: usually with its own method and a body shaped like its own.
fn request(rng: &mut Rng) -> (Method, String, Vec<u8>) {
    const METHODS: [Method; 6] = [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::HEAD, Method::PATCH];
    let (method, shape, body_index) = rng.pick(&ENDPOINTS).clone();
    let method = if rng.one_in(5) { rng.pick(&METHODS).clone() } else { method };
    let mut path = String::new();
    for (i, part) in shape.split("{}").enumerate() {
        if i > 0 {
            path.push_str(&segment(rng));
        }
        path.push_str(part);
    }
    if rng.one_in(30) {
        path = format!("/{}", rng.text(30));
    }
    let body = match body_index {
        Some(i) if rng.bool() => {
            let valid = BODIES[i];
            if rng.one_in(3) { valid.as_bytes().to_vec() } else { mutate_text(rng, valid, &BODIES).into_bytes() }
        }
        _ => body(rng),
    };
    (method, path, body)
}

fn query(rng: &mut Rng) -> Option<String> {
    const NAMES: [&str; 6] = ["id", "topic", "key", "from", "limit", "x"];
    rng.bool().then(|| {
        let pairs: Vec<String> = (0..1 + rng.size(4))
            .map(|_| {
                let value = match rng.below(3) {
                    0 => rng.edge_i64().to_string(),
                    1 => rng.text(8),
                    _ => (*rng.pick(&["%", "%4", "%zz", "%C3%A9", "+", "a%20b", ""])).to_owned(),
                };
                format!("{}={value}", rng.pick(&NAMES))
            })
            .collect();
        pairs.join(*rng.pick(&["&", "&&", "=", "&="]))
    })
}

/// Keys of every body the API parses: topics, groups, offset resets, activation, bindings, dry runs.
const KEYS: [&str; 25] = [
    "name",
    "type",
    "queues",
    "fifo",
    "max_attempts",
    "broadcast",
    "consume_from",
    "retry_backoff_ms",
    "topic",
    "time_ms",
    "version",
    "kind",
    "plugin",
    "group",
    "policy",
    "params",
    "http_allowlist",
    "limits",
    "last",
    "binding",
    "from_ms",
    "to_ms",
    "memory_bytes_max",
    "call_ms_max",
    "output_bytes_max",
];

/// Valid bodies, for the mutations to start from.
const BODIES: [&str; 7] = [
    r#"{"name":"orders","type":"fifo","queues":8}"#,
    r#"{"name":"billing","fifo":true,"max_attempts":5,"retry_backoff_ms":[1000,2000],"consume_from":"latest"}"#,
    r#"{"topic":"orders","time_ms":1764000000000}"#,
    r#"{"version":1}"#,
    r#"{"kind":"route","topic":"orders","plugin":"tax/p","version":1,"policy":"fail-open"}"#,
    r#"{"kind":"filter","topic":"orders","group":"g","plugin":"tax/p","version":1,"limits":{"call_ms_max":5}}"#,
    r#"{"topic":"orders","last":10,"params":{"k":"v"}}"#,
];

fn body(rng: &mut Rng) -> Vec<u8> {
    match rng.below(6) {
        0 => Vec::new(),
        1 => {
            let n = rng.size(300);
            rng.bytes(n)
        }
        2 => json(rng, &KEYS, 3).into_bytes(),
        3 => json_fields(rng, &KEYS, 2).into_bytes(),
        _ => {
            let valid = *rng.pick(&BODIES);
            if rng.one_in(4) { valid.as_bytes().to_vec() } else { mutate_text(rng, valid, &BODIES).into_bytes() }
        }
    }
}

#[test]
fn random_requests_get_answers_but_never_a_server_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = state(dir.path());
    let tool = |method: Method, path: &str, body: &[u8]| {
        let call = Call {
            method: &method,
            path,
            query: None,
            body,
            authorization: None,
            signature: None,
            host: Some("127.0.0.1:8082"),
            origin: None,
            content_type: Some("application/json"),
        };
        respond(&call, &state).status()
    };
    // What the requests find: a topic, a group, and a route plugin with one version.
    assert_eq!(tool(Method::POST, "/v1/topics", BODIES[0].as_bytes()), StatusCode::CREATED);
    assert_eq!(tool(Method::POST, "/v1/groups", br#"{"name":"g"}"#), StatusCode::CREATED);
    let plugin = std::fs::read(ferrymq_test_components::component("version_stamp")).expect("a test component");
    assert_eq!(tool(Method::POST, "/v1/plugins/tax/p/versions", &plugin), StatusCode::CREATED);
    cases!(3000, |rng| {
        let (method, path, body) = request(rng);
        let query = query(rng);
        let call = Call {
            method: &method,
            path: &path,
            query: query.as_deref(),
            body: &body,
            authorization: None,
            signature: rng.one_in(10).then_some("ed25519:zz"),
            host: Some("127.0.0.1:8082"),
            origin: None,
            content_type: Some("application/json"),
        };
        let status = respond(&call, &state).status();
        assert!(
            !status.is_server_error(),
            "{method} {path}?{} with {:?} answered {status}",
            query.as_deref().unwrap_or(""),
            String::from_utf8_lossy(&body)
        );
    });
    assert_eq!(tool(Method::GET, "/healthz", b""), StatusCode::OK, "the broker is still healthy");
    state.broker.close();
    state.broker.store().close();
}
