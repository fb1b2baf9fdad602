//! The plugin runtime with the real example and fixture plugins (`plugins/`, `tests/plugins/`), which
//! `ferrymq-test-components` builds.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use ferrymq_plugin::{
    FilterPlugin, Grant, PluginEngine, PluginError, PluginLimits, RouteOutcome, RoutePlugin, TxCheckPlugin, TxOutcome,
    World,
};
use ferrymq_proto::plugin_batch::PluginMessage;

fn wasm(name: &str) -> Vec<u8> {
    let path = ferrymq_test_components::component(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn engine() -> PluginEngine {
    PluginEngine::new(None, 64).expect("engine")
}

fn message<'a>(props: &'a [u8], body: &'a [u8]) -> PluginMessage<'a> {
    PluginMessage {
        topic: "orders",
        tag: "",
        keys: "",
        properties: props,
        body: Some(body),
        born_ms: 1,
        store_ms: 2,
        attempt: 1,
    }
}

fn grant(config: &[(&str, &str)]) -> Grant {
    Grant {
        config: config.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        http_allowlist: vec![],
        ..Grant::default()
    }
}

fn filter(engine: &PluginEngine, name: &str, limits: PluginLimits, config: &[(&str, &str)]) -> FilterPlugin {
    let loaded = engine.load(&wasm(name)).expect("load");
    assert_eq!(loaded.world, World::Filter);
    FilterPlugin::new(engine, name, &loaded, limits, grant(config)).expect("bind")
}

fn no_bodies() -> ferrymq_plugin::BodySource {
    Box::new(|_| None)
}

#[test]
fn enterprise_inbox_delivers_only_the_listed_enterprises() {
    let engine = engine();
    let inbox = filter(&engine, "enterprise_inbox", PluginLimits::default(), &[("enterprise_ids", "913502, 440300")]);
    let props: Vec<Vec<u8>> = ["913502", "110000", "440300", ""]
        .iter()
        .map(|id| if id.is_empty() { Vec::new() } else { format!("enterpriseId\u{1}{id}\u{2}").into_bytes() })
        .collect();
    let messages: Vec<_> = props.iter().map(|p| message(p, b"")).collect();
    assert_eq!(inbox.filter(&messages, no_bodies()).expect("filter"), [true, false, true, false]);
    // Batches longer than a byte of bits, and repeated calls on pooled instances.
    let many: Vec<_> = (0..300).map(|i| message(&props[i % 4], b"")).collect();
    for _ in 0..3 {
        let bits = inbox.filter(&many, no_bodies()).expect("filter");
        assert_eq!(bits.iter().filter(|b| **b).count(), 150);
    }
    assert_eq!(inbox.stats().calls, 4);
}

#[test]
fn bodies_reach_a_filter_only_when_it_asks() {
    let engine = engine();
    let contains = filter(&engine, "body_contains", PluginLimits::default(), &[("needle", "urgent")]);
    let bodies: Vec<&[u8]> = vec![b"urgent: fix", b"later", b"very urgent"];
    let messages: Vec<_> = bodies.iter().map(|_| PluginMessage { body: None, ..message(b"", b"") }).collect();
    let owned: Vec<Vec<u8>> = bodies.iter().map(|b| b.to_vec()).collect();
    let source: ferrymq_plugin::BodySource = Box::new(move |i| owned.get(i as usize).cloned());
    assert_eq!(contains.filter(&messages, source).expect("filter"), [true, false, true]);
}

#[test]
fn routes_redirect_reject_and_rewrite() {
    let engine = engine();
    let bind = |name: &str| {
        RoutePlugin::new(
            &engine,
            name,
            &engine.load(&wasm(name)).expect("load"),
            PluginLimits::default(),
            Grant::default(),
        )
        .expect("bind")
    };
    let region = bind("route_by_region");
    assert_eq!(
        region.route(&message(b"region\x01south\x02", b"x")).expect("route"),
        RouteOutcome::Redirect(vec!["orders-south".into()])
    );
    assert!(matches!(region.route(&message(b"", b"x")).expect("route"), RouteOutcome::Accept { body: None, .. }));

    let deny = bind("deny_unclassified");
    assert!(
        matches!(deny.route(&message(b"", b"x")).expect("route"), RouteOutcome::Reject(reason) if reason.contains("classification"))
    );
    assert!(matches!(
        deny.route(&message(b"classification\x01internal\x02", b"x")).expect("route"),
        RouteOutcome::Accept { .. }
    ));

    let redact = bind("redact_id_numbers");
    let body = "ID 11010519491231002X, phone 13812345678, order 12345".as_bytes();
    match redact.route(&message(b"", body)).expect("route") {
        RouteOutcome::Accept { body: Some(new), set_properties, .. } => {
            assert_eq!(String::from_utf8(new).expect("utf-8"), "ID 110*************2X, phone 138******78, order 12345");
            assert_eq!(set_properties, [("redacted".to_owned(), "true".to_owned())]);
        }
        other => panic!("expected a rewritten body, got {other:?}"),
    }
}

#[test]
fn a_plugin_that_never_returns_is_stopped_at_its_time_limit_then_quarantined() {
    let engine = engine();
    let limits = PluginLimits { call_ms_max: 20, failures_max: 3, ..PluginLimits::default() };
    let spin = filter(&engine, "spin_forever", limits, &[]);
    let messages = [message(b"", b"")];
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(spin.filter(&messages, no_bodies()), Err(PluginError::Timeout { ms: 20 }));
        assert!(started.elapsed() < Duration::from_millis(1_000), "cut off near its limit: {:?}", started.elapsed());
    }
    assert_eq!(spin.filter(&messages, no_bodies()), Err(PluginError::Quarantined { failures: 3 }));
    let stats = spin.stats();
    assert!(stats.quarantined);
    assert_eq!(stats.failures, 3);
    assert!(stats.on_workers, "after its first fault a spinning plugin runs on the low-priority workers");
    assert_eq!(stats.worker_calls, 2, "the first call ran on the caller's thread, the next two on the workers");
}

#[test]
fn a_message_a_route_fails_on_counts_once_toward_quarantine_however_often_it_is_retried() {
    let engine = engine();
    let limits = PluginLimits { failures_max: 3, ..PluginLimits::default() };
    let loaded = engine.load(&wasm("route_trap")).expect("load");
    let trap = RoutePlugin::new(&engine, "trap", &loaded, limits.clone(), Grant::default()).expect("bind");
    let poison = message(b"", b"x");
    for _ in 0..5 {
        assert!(matches!(trap.route_message(&poison, "ID-1"), Err(PluginError::Trap { .. })));
    }
    let stats = trap.stats();
    assert_eq!((stats.calls, stats.failures, stats.quarantined), (5, 5, false), "one message, retried");
    assert!(matches!(trap.route_message(&poison, "ID-2"), Err(PluginError::Trap { .. })));
    assert!(matches!(trap.route_message(&poison, "ID-1"), Err(PluginError::Trap { .. })), "ID-1 again");
    assert!(!trap.stats().quarantined, "two messages failed in a row");
    assert!(matches!(trap.route_message(&poison, "ID-3"), Err(PluginError::Trap { .. })));
    assert!(trap.stats().quarantined, "the third message failing in a row quarantines it");
    assert_eq!(trap.route_message(&poison, "ID-4"), Err(PluginError::Quarantined { failures: 3 }));

    // Without a message id (as the gateway calls it) every failed call counts.
    let unkeyed = RoutePlugin::new(&engine, "trap", &loaded, limits, Grant::default()).expect("bind");
    for _ in 0..3 {
        assert!(matches!(unkeyed.route(&poison), Err(PluginError::Trap { .. })));
    }
    assert_eq!(unkeyed.route(&poison), Err(PluginError::Quarantined { failures: 3 }));
}

#[test]
fn bad_answers_count_toward_quarantine_like_traps() {
    let engine = engine();
    let limits = PluginLimits { call_ms_max: 2_000, failures_max: 2, ..PluginLimits::default() };
    let oversized = filter(&engine, "oversized_output", limits, &[]);
    let messages = [message(b"", b"")];
    for _ in 0..2 {
        assert!(matches!(oversized.filter(&messages, no_bodies()), Err(PluginError::BadOutput(_))));
    }
    assert_eq!(oversized.filter(&messages, no_bodies()), Err(PluginError::Quarantined { failures: 2 }));
    let stats = oversized.stats();
    assert_eq!((stats.calls, stats.failures, stats.quarantined), (2, 2, true));
}

#[test]
fn memory_bombs_traps_and_oversized_answers_fail_the_call_not_the_host() {
    let engine = engine();
    let messages = [message(b"", b"")];
    // A generous time limit: on a loaded machine the page faults of 16 MiB can outlast 10 ms, and this test is
    // about the memory limit, not the clock.
    let bomb_limits = PluginLimits { memory_bytes_max: 16 << 20, call_ms_max: 5_000, ..PluginLimits::default() };
    let bomb = filter(&engine, "memory_bomb", bomb_limits, &[]);
    assert_eq!(bomb.filter(&messages, no_bodies()), Err(PluginError::MemoryLimit { bytes: 16 << 20 }));
    let trap = filter(&engine, "trap", PluginLimits::default(), &[]);
    // The SDK's panic hook logs the panic; the broker makes that line the call's one-line reason.
    match trap.filter(&messages, no_bodies()) {
        Err(err @ PluginError::Trap { .. }) => {
            let reason = err.to_string();
            assert!(reason.contains("the policy panicked: refusing message on topic"), "{reason}");
            assert!(reason.contains("src/lib.rs:") && !reason.contains('\n'), "one line, with where: {reason}");
        }
        other => panic!("a trap, not {other:?}"),
    }
    assert!(
        matches!(trap.filter(&messages, no_bodies()), Err(PluginError::Trap { .. })),
        "a fresh instance replaces the trapped one"
    );
    let oversized =
        filter(&engine, "oversized_output", PluginLimits { call_ms_max: 2_000, ..PluginLimits::default() }, &[]);
    let answer = oversized.filter(&messages, no_bodies());
    assert!(matches!(answer, Err(PluginError::BadOutput(_))), "{answer:?}");
    // The healthy plugin beside them still works.
    let inbox = filter(&engine, "enterprise_inbox", PluginLimits::default(), &[("enterprise_ids", "1")]);
    assert_eq!(inbox.filter(&[message(b"enterpriseId\x011\x02", b"")], no_bodies()).expect("filter"), [true]);
}

#[test]
fn plugins_get_no_files_and_no_network() {
    let engine = engine();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let target = listener.local_addr().expect("addr").to_string();
    let messages = [message(b"", b"")];
    // Each fixture delivers the message only if its attempt failed. What is under test is the
    // sandbox, not the time limit: a first call on a loaded machine may take more than 10 ms.
    let roomy = PluginLimits { call_ms_max: 2_000, ..PluginLimits::default() };
    let files = filter(&engine, "grab_file", roomy.clone(), &[]);
    assert_eq!(files.filter(&messages, no_bodies()).expect("filter"), [true], "reading /etc/hostname failed");
    let net = filter(&engine, "grab_network", roomy, &[("target", &target)]);
    assert_eq!(net.filter(&messages, no_bodies()).expect("filter"), [true], "connecting failed");
    listener.set_nonblocking(true).expect("nonblocking");
    assert!(listener.accept().is_err(), "nothing reached the listener");
}

#[test]
fn components_that_break_the_contract_are_refused_at_load() {
    let engine = engine();
    assert!(matches!(engine.load(b"not wasm"), Err(PluginError::Invalid { .. })));
    let oversized = vec![0u8; ferrymq_plugin::PLUGIN_BYTES_MAX + 1];
    assert!(matches!(engine.load(&oversized), Err(PluginError::Refused(msg)) if msg.contains("size limit")));
    // The smallest core module: a clear word instead of a parse error.
    let core = engine.load(b"\0asm\x01\0\0\0").expect_err("a core module");
    assert!(core.to_string().contains("a core WebAssembly module, not a component: build for wasm32-wasip2"), "{core}");
    let route = engine.load(&wasm("route_by_region")).expect("load");
    let err =
        FilterPlugin::new(&engine, "r", &route, PluginLimits::default(), Grant::default()).err().expect("wrong world");
    assert!(
        matches!(&err, PluginError::Refused(msg) if msg.contains("route plugin cannot be bound as a filter")),
        "{err}"
    );
}

#[test]
fn compiled_components_are_cached_by_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = wasm("enterprise_inbox");
    let first = PluginEngine::new(Some(dir.path().to_path_buf()), 8).expect("engine").load(&bytes).expect("load");
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    let engine = PluginEngine::new(Some(dir.path().to_path_buf()), 8).expect("engine");
    let started = Instant::now();
    let second = engine.load(&bytes).expect("load from cache");
    assert_eq!(first.digest, second.digest);
    assert!(started.elapsed() < Duration::from_secs(1), "loaded from the cache");
    let inbox = FilterPlugin::new(&engine, "i", &second, PluginLimits::default(), grant(&[("enterprise_ids", "7")]))
        .expect("bind");
    assert_eq!(inbox.filter(&[message(b"enterpriseId\x017\x02", b"")], no_bodies()).expect("filter"), [true]);
}

/// A one-request-at-a-time HTTP server answering `GET /tx/<id>` from `answers`.
fn tx_service(
    answers: &'static [(&'static str, &'static str)],
) -> (std::net::SocketAddr, std::thread::JoinHandle<usize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    let handle = std::thread::spawn(move || {
        let mut served = 0;
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && served < answers.len() {
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            stream.set_nonblocking(false).expect("blocking");
            let mut request = [0u8; 2048];
            let n = stream.read(&mut request).unwrap_or(0);
            let line = String::from_utf8_lossy(&request[..n]).lines().next().unwrap_or_default().to_owned();
            let answer =
                answers.iter().find(|(id, _)| line.contains(&format!("/tx/{id} "))).map_or("unknown", |(_, a)| a);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
            served += 1;
        }
        served
    });
    (addr, handle)
}

#[test]
fn tx_check_http_asks_an_allowlisted_service_and_nothing_else() {
    let engine = engine();
    let (addr, server) = tx_service(&[("tx-1", "commit"), ("tx-2", "rollback")]);
    let loaded = engine.load(&wasm("tx_check_http")).expect("load");
    assert_eq!(loaded.world, World::TxCheck);
    let limits = PluginLimits { call_ms_max: 5_000, ..PluginLimits::default() };
    let base = format!("http://{addr}");
    let allowed = Grant {
        config: vec![("base".into(), base.clone())],
        http_allowlist: vec![addr.to_string()],
        ..Grant::default()
    };
    let checker = TxCheckPlugin::new(&engine, "tx", &loaded, limits.clone(), allowed).expect("bind");
    assert_eq!(checker.check("tx-1", &message(b"", b"")).expect("check"), TxOutcome::Commit);
    assert_eq!(checker.check("tx-2", &message(b"", b"")).expect("check"), TxOutcome::Rollback);
    assert_eq!(server.join().expect("server"), 2);

    // The same plugin, bound without the service on its allowlist, never reaches it.
    let (addr, server) = tx_service(&[("tx-3", "commit")]);
    let denied = Grant {
        config: vec![("base".into(), format!("http://{addr}"))],
        http_allowlist: vec!["10.9.9.9:80".into()],
        ..Grant::default()
    };
    let checker = TxCheckPlugin::new(&engine, "tx", &loaded, limits, denied).expect("bind");
    assert_eq!(checker.check("tx-3", &message(b"", b"")).expect("check"), TxOutcome::Unknown);
    let probe = std::net::TcpStream::connect(addr).expect("the test itself can still connect");
    drop(probe);
    assert_eq!(server.join().expect("server"), 1, "the only request the service saw was the test's own probe");
}

#[test]
fn a_filter_may_not_use_http() {
    let engine = engine();
    // tx_check_http imports wasi:http; it cannot be loaded as anything but a tx-check.
    let loaded = engine.load(&wasm("tx_check_http")).expect("load");
    assert!(FilterPlugin::new(&engine, "x", &loaded, PluginLimits::default(), Grant::default()).is_err());
}
