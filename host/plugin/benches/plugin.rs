//! What a plugin call costs the broker, per message, beside the floor of the same run.
//!
//! * `filter/call_floor` — a filter call with an empty batch: entering and leaving the instance,
//!   the floor every call pays.
//! * `filter/encode_only/<n>` — the host encoding a batch of `n` messages, no call.
//! * `filter/enterprise_inbox/<n>` — a property lookup per message (the example filter), batches of
//!   1, 32 and 256 messages, bodies left out.
//! * `filter/body_contains/32` — a filter that asks for every body (1 KiB each).
//! * `route/<plugin>` — one produced message (1 KiB body) through each example route.
//!
//! Throughput is in messages per second; criterion's time per iteration divided by the batch size is
//! the cost per message. The components come from `plugins/` and `tests/plugins/` (built by `ferrymq-test-components`).

// Setup that fails should stop a benchmark loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferrymq_plugin::{BodySource, FilterPlugin, Grant, PluginEngine, PluginLimits, RoutePlugin};
use ferrymq_proto::plugin_batch::{PluginMessage, encode_batch};

const BODY_BYTES: usize = 1024;

fn wasm(name: &str) -> Vec<u8> {
    let path = ferrymq_test_components::component(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn grant(config: &[(&str, &str)]) -> Grant {
    Grant {
        config: config.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        http_allowlist: vec![],
        ..Grant::default()
    }
}

/// Properties as a client sends them: a message id, a tag, keys, and three business properties.
fn properties(i: usize) -> Vec<u8> {
    let enterprise = if i.is_multiple_of(3) { "913502" } else { "110000" };
    format!(
        "UNIQ_KEY\u{1}01F5A1B2C3D4E5F60718293A4B5C{i:06}\u{2}TAGS\u{1}application\u{2}KEYS\u{1}order-{i}\u{2}\
         enterpriseId\u{1}{enterprise}\u{2}region\u{1}north\u{2}classification\u{1}internal\u{2}"
    )
    .into_bytes()
}

fn body(i: usize) -> Vec<u8> {
    let mut body = format!("application {i} for enterprise support, contact 13812345678; ").into_bytes();
    body.resize(BODY_BYTES, b'.');
    body
}

fn message<'a>(props: &'a [u8], body: Option<&'a [u8]>) -> PluginMessage<'a> {
    PluginMessage {
        topic: "applications",
        tag: "application",
        keys: "order",
        properties: props,
        body,
        born_ms: 1_764_000_000_000,
        store_ms: 1_764_000_000_003,
        attempt: 1,
    }
}

fn bodies(all: &[Vec<u8>]) -> BodySource {
    let all = all.to_vec();
    Box::new(move |i| all.get(i as usize).cloned())
}

fn filters(c: &mut Criterion) {
    let engine = PluginEngine::new(None, 16).expect("engine");
    let bind = |name: &str, config: &[(&str, &str)]| {
        let loaded = engine.load(&wasm(name)).expect("load");
        FilterPlugin::new(&engine, name, &loaded, PluginLimits::default(), grant(config)).expect("bind")
    };
    let inbox = bind("enterprise_inbox", &[("enterprise_ids", "913502, 440300")]);
    let contains = bind("body_contains", &[("needle", "13812345678")]);
    let props: Vec<Vec<u8>> = (0..256).map(properties).collect();
    let all_bodies: Vec<Vec<u8>> = (0..256).map(body).collect();

    let mut group = c.benchmark_group("filter");
    group.bench_function("call_floor", |b| b.iter(|| inbox.filter(&[], Box::new(|_| None)).expect("filter")));
    for n in [1usize, 32, 256] {
        let messages: Vec<PluginMessage<'_>> = props[..n].iter().map(|p| message(p, None)).collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("encode_only", n), &messages, |b, messages| {
            let mut buf = Vec::new();
            b.iter(|| {
                buf.clear();
                encode_batch(messages.iter().cloned(), false, &mut buf);
                buf.len()
            })
        });
        group.bench_with_input(BenchmarkId::new("enterprise_inbox", n), &messages, |b, messages| {
            b.iter(|| inbox.filter(messages, Box::new(|_| None)).expect("filter"))
        });
    }
    let messages: Vec<PluginMessage<'_>> = props[..32].iter().map(|p| message(p, None)).collect();
    group.throughput(Throughput::Elements(32));
    group.bench_function(BenchmarkId::new("body_contains", 32), |b| {
        b.iter(|| contains.filter(&messages, bodies(&all_bodies[..32])).expect("filter"))
    });
    group.finish();
}

fn routes(c: &mut Criterion) {
    let engine = PluginEngine::new(None, 16).expect("engine");
    let props = properties(1);
    let body = body(1);
    let one = message(&props, Some(&body));
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(1));
    for name in ["route_by_region", "deny_unclassified", "redact_id_numbers"] {
        let loaded = engine.load(&wasm(name)).expect("load");
        let route = RoutePlugin::new(&engine, name, &loaded, PluginLimits::default(), grant(&[])).expect("bind");
        group.bench_function(name, |b| b.iter(|| route.route(&one).expect("route")));
    }
    group.finish();
}

criterion_group!(benches, filters, routes);
criterion_main!(benches);
