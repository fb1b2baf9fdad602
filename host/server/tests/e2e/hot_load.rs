//! Plugins hot-loaded over the admin API on a running broker: versions swapped under load with the
//! official clients producing and consuming, signatures and roles enforced, the registry restored
//! after a restart, and the audit chain verified (and broken by an edit).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use ferrymq_test_components::component;
use serde_json::{Value, json};

use crate::clients::Client;
use crate::support::{Node, ferrymq};

/// `bytes` with a custom section named `label` appended: the same behaviour under another digest,
/// which makes it another version.
fn relabelled(bytes: &[u8], label: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                break;
            }
        }
    }
    let mut payload = Vec::new();
    leb(label.len(), &mut payload);
    payload.extend_from_slice(label.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

/// One HTTP request to the admin API: status and JSON body.
fn call(addr: SocketAddr, method: &str, path: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, Value) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(120))).expect("timeout");
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    // As `ferrymq admin` and `ferrymq plugin` send them (an admin API without tokens refuses a change
    // sent as anything else).
    let json = if path.ends_with("/versions") { "application/wasm" } else { "application/json" };
    head.push_str(&format!("Content-Type: {json}\r\n"));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send head");
    stream.write_all(body).expect("send body");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn push(node: &Node, plugin: &str, bytes: &[u8], headers: &[(&str, &str)]) -> (u16, Value) {
    call(node.admin, "POST", &format!("/v1/plugins/{plugin}/versions"), bytes, headers)
}

/// Runs `ferrymq <args>`: exit code and stdout.
fn cli(args: &[&str]) -> (bool, String) {
    let out = ferrymq().args(args).env_remove("RUST_LOG").output().expect("run ferrymq");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
}

/// The version whose activation is the last at or before `offset`.
fn active_at(activations: &[(u64, u32)], offset: u64) -> u32 {
    activations.iter().filter(|(p, _)| *p < offset).map(|(_, v)| *v).next_back().expect("an activation before it")
}

#[test]
fn a_filter_and_a_route_swapped_twenty_times_under_load_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start_for_clients_with(&dir.path().join("data"), "[plugins]\nfilter_history_max = 64\n");
    node.admin(&["topic", "create", "tax-inbox", "--type", "normal", "--queues", "2"]);
    let addr = node.admin.to_string();
    // Five versions of each: the same code under five digests; each reads its version number.
    let stamp = std::fs::read(component("version_stamp")).expect("read");
    let split = std::fs::read(component("version_split")).expect("read");
    for v in 1..=5 {
        let label = format!("v{v}");
        let file = dir.path().join(format!("stamp-{v}.wasm"));
        std::fs::write(&file, relabelled(&stamp, &label)).expect("write");
        let (ok, out) = cli(&[
            "plugin",
            "--admin-addr",
            &addr,
            "push",
            file.to_str().expect("utf-8"),
            "--name",
            "tax/stamp",
            "--json",
        ]);
        assert!(ok, "{out}");
        assert_eq!(serde_json::from_str::<Value>(&out).expect("json")["version"], v);
        let (status, version) = push(&node, "tax/split", &relabelled(&split, &label), &[]);
        assert_eq!((status, version["version"].as_u64()), (201, Some(v)), "{version}");
    }
    let (status, again) = push(&node, "tax/split", &relabelled(&split, "v1"), &[]);
    assert_eq!((status, again["version"].as_u64()), (200, Some(1)), "the same component again is the same version");

    let (ok, out) = cli(&[
        "plugin",
        "--admin-addr",
        &addr,
        "--json",
        "bind",
        "stamp",
        "--kind",
        "route",
        "--topic",
        "tax-inbox",
        "--plugin",
        "tax/stamp",
        "--plugin-version",
        "1",
    ]);
    assert!(ok, "{out}");
    let mut routes =
        vec![(serde_json::from_str::<Value>(&out).expect("json")["position"].as_u64().expect("position"), 1)];
    let body = json!({ "kind": "filter", "topic": "tax-inbox", "group": "tax-reader", "plugin": "tax/split",
                       "version": 1, "policy": "fail-closed", "params": { "modulus": "4" } });
    let (status, bound) = call(node.admin, "PUT", "/v1/bindings/split", body.to_string().as_bytes(), &[]);
    assert_eq!(status, 201, "{bound}");
    let mut filters = vec![(bound["position"].as_u64().expect("position"), 1)];

    let mut consumer = Client::Python.spawn(
        node.grpc,
        &[
            "simple",
            "--group",
            "tax-reader",
            "--topic",
            "tax-inbox",
            "--expect",
            "100000",
            "--timeout-s",
            "150",
            "--idle-s",
            "8",
            "--await-s",
            "1",
            "--batch",
            "16",
        ],
    );
    consumer.wait_events(0, Duration::from_secs(2));
    std::thread::sleep(Duration::from_secs(2));
    let producer = Client::Python.spawn(node.grpc, &["produce", "--topic", "tax-inbox", "--count", "1200"]);
    for swap in 0..20u32 {
        std::thread::sleep(Duration::from_millis(150));
        let route_version = (swap + 1) % 5 + 1;
        let filter_version = (swap + 2) % 5 + 1;
        if swap % 7 == 6 {
            // A rollback is a swap too: back to the version before the current one.
            let (ok, out) = cli(&["plugin", "--admin-addr", &addr, "--json", "rollback", "stamp"]);
            assert!(ok, "{out}");
            let answer: Value = serde_json::from_str(&out).expect("json");
            routes
                .push((answer["position"].as_u64().expect("position"), answer["version"].as_u64().expect("v") as u32));
        } else {
            let body = json!({ "version": route_version }).to_string();
            let (status, answer) = call(node.admin, "POST", "/v1/bindings/stamp/activate", body.as_bytes(), &[]);
            assert_eq!(status, 200, "{answer}");
            routes.push((answer["position"].as_u64().expect("position"), route_version));
        }
        let body = json!({ "version": filter_version }).to_string();
        let (status, answer) = call(node.admin, "POST", "/v1/bindings/split/activate", body.as_bytes(), &[]);
        assert_eq!(status, 200, "{answer}");
        filters.push((answer["position"].as_u64().expect("position"), filter_version));
    }
    let produced = producer.wait(Duration::from_secs(150)).ok();
    let consumed = consumer.wait(Duration::from_secs(170)).ok();
    let sent = produced.sent();
    assert_eq!(sent.len(), 1200, "every send succeeded: {:?}", produced.errors());

    // Where each message was stored and what the route stamped on it.
    let mut expected = BTreeSet::new();
    let mut stamped = BTreeMap::<u32, usize>::new();
    for id in &sent {
        let (status, found) = call(node.admin, "GET", &format!("/v1/messages?id={id}"), b"", &[]);
        assert_eq!(status, 200);
        let message = &found[0];
        let offset = message["log_offset"].as_u64().expect("offset");
        let route_version = active_at(&routes, offset);
        assert_eq!(
            message["properties"]["stamped-by"].as_str(),
            Some(route_version.to_string().as_str()),
            "message {id} at {offset} was routed by the version active there"
        );
        *stamped.entry(route_version).or_default() += 1;
        let n: u64 = message["body"].as_str().and_then(|b| b.trim_start_matches('m').parse().ok()).expect("body");
        if n % 4 != u64::from(active_at(&filters, offset)) % 4 {
            expected.insert(id.clone());
        }
    }
    assert!(stamped.len() >= 3, "the swaps happened while messages flowed: {stamped:?}");
    let received: Vec<String> =
        consumed.of("received").iter().map(|e| e["id"].as_str().expect("id").to_owned()).collect();
    let unique: BTreeSet<String> = received.iter().cloned().collect();
    assert_eq!(unique.len(), received.len(), "no message was delivered twice");
    assert_eq!(unique, expected, "exactly the messages each filter version passes were delivered");
    assert!(expected.len() < sent.len(), "the filter withheld some");

    let bindings: Value = serde_json::from_str(&node.get("/v1/bindings").1).expect("json");
    let split = bindings.as_array().and_then(|b| b.iter().find(|b| b["name"] == "split")).expect("split listed");
    assert_eq!(split["version"].as_u64(), Some(u64::from(filters.last().expect("last").1)));
    node.stop();
}

fn config_with_auth(dir: &Path, public_key: &str) -> String {
    let _ = dir;
    format!(
        "[[admin.tokens]]\nprincipal = \"ops\"\ntoken = \"ops-token-0123456789\"\nroles = [\"admin\"]\n\
         [[admin.tokens]]\nprincipal = \"tax-team\"\ntoken = \"tax-token-0123456789\"\nroles = [\"department:tax\"]\n\
         [[admin.tokens]]\nprincipal = \"auditor\"\ntoken = \"view-token-0123456789\"\nroles = [\"viewer\"]\n\
         [admin.signatures]\nenforce = true\n[[admin.signatures.keys]]\ndepartment = \"tax\"\npublic_key = \"{public_key}\"\n"
    )
}

#[test]
fn signed_uploads_only_roles_enforced_registry_restored_and_audit_chain_verified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("tax.key");
    let rogue = dir.path().join("rogue.key");
    let (ok, public_key) = cli(&["plugin", "keygen", "--out", key.to_str().expect("utf-8")]);
    assert!(ok, "{public_key}");
    assert!(cli(&["plugin", "keygen", "--out", rogue.to_str().expect("utf-8")]).0);
    let data = dir.path().join("data");
    let node = Node::start_for_clients_with(&data, &config_with_auth(dir.path(), public_key.trim()));
    let addr = node.admin.to_string();
    let admin = [("Authorization", "Bearer ops-token-0123456789")];
    let tax = [("Authorization", "Bearer tax-token-0123456789")];
    let viewer = [("Authorization", "Bearer view-token-0123456789")];
    let body = json!({ "name": "tax-inbox", "type": "normal", "queues": 2 }).to_string();
    assert_eq!(
        call(node.admin, "POST", "/v1/topics", body.as_bytes(), &tax).0,
        403,
        "departments do not create topics"
    );
    assert_eq!(call(node.admin, "POST", "/v1/topics", body.as_bytes(), &[]).0, 401);
    assert_eq!(call(node.admin, "POST", "/v1/topics", body.as_bytes(), &admin).0, 201);
    // A caller without a known token who declares a component of 60 MiB is refused at once, before
    // it sends (and the broker buffers) any of it.
    for authorization in ["", "Authorization: Bearer not-a-token-0000\r\n"] {
        let mut stream = TcpStream::connect(node.admin).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let head = format!(
            "POST /v1/plugins/tax/inbox/versions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/wasm\r\n\
             {authorization}Content-Length: {}\r\n\r\n",
            60 << 20
        );
        std::io::Write::write_all(&mut stream, head.as_bytes()).expect("send head");
        let mut answer = [0u8; 12];
        std::io::Read::read_exact(&mut stream, &mut answer).expect("an answer without the body");
        assert_eq!(&answer, b"HTTP/1.1 401", "{authorization:?}");
    }

    let file = component("enterprise_inbox");
    let bytes = std::fs::read(&file).expect("read");
    let (status, refused) = push(&node, "tax/inbox", &bytes, &tax);
    assert_eq!(status, 403, "unsigned under enforcement: {refused}");
    let (_, forged) = cli(&["plugin", "sign", file.to_str().expect("utf-8"), "--key", rogue.to_str().expect("utf-8")]);
    let (status, refused) = push(&node, "tax/inbox", &bytes, &[tax[0], ("x-ferrymq-signature", forged.trim())]);
    assert_eq!(status, 403, "signed by an untrusted key: {refused}");
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm not really").expect("write");
    let tax_cli = ["plugin", "--admin-addr", &addr, "--token", "tax-token-0123456789"];
    let (ok, out) = cli(&[
        &tax_cli[..],
        &["push", junk.to_str().expect("utf-8"), "--name", "tax/inbox", "--sign-key", key.to_str().expect("utf-8")],
    ]
    .concat());
    assert!(!ok && out.contains("HTTP 400"), "a signed component that is not a component is refused: {out}");
    let (ok, out) = cli(&[
        &tax_cli[..],
        &[
            "--json",
            "push",
            file.to_str().expect("utf-8"),
            "--name",
            "tax/inbox",
            "--sign-key",
            key.to_str().expect("utf-8"),
        ],
    ]
    .concat());
    assert!(ok, "{out}");
    let pushed: Value = serde_json::from_str(&out).expect("json");
    assert_eq!((pushed["version"].as_u64(), pushed["signed_by"].as_str()), (Some(1), Some("tax")));
    let (ok, out) = cli(&[
        &tax_cli[..],
        &["push", file.to_str().expect("utf-8"), "--name", "customs/inbox", "--sign-key", key.to_str().expect("utf-8")],
    ]
    .concat());
    assert!(!ok && out.contains("HTTP 403"), "another department's plugin name: {out}");
    let (ok, out) = cli(&[
        &tax_cli[..],
        &[
            "bind",
            "inbox-e1",
            "--kind",
            "filter",
            "--topic",
            "tax-inbox",
            "--group",
            "e1",
            "--plugin",
            "tax/inbox",
            "--plugin-version",
            "1",
            "--param",
            "enterprise_ids=E1",
        ],
    ]
    .concat());
    assert!(ok, "{out}");
    let binding =
        json!({ "kind": "filter", "topic": "customs-inbox", "group": "g", "plugin": "tax/inbox", "version": 1 });
    assert_eq!(call(node.admin, "PUT", "/v1/bindings/x", binding.to_string().as_bytes(), &tax).0, 403);
    assert_eq!(call(node.admin, "PUT", "/v1/bindings/x", binding.to_string().as_bytes(), &viewer).0, 403);
    assert_eq!(call(node.admin, "GET", "/v1/bindings", b"", &viewer).0, 200);

    // What the filter would do to the messages already there, without doing it.
    Client::Python.produce(node.grpc, "tax-inbox", 3, &["--property", "enterpriseId=E1"]);
    Client::Python.produce(node.grpc, "tax-inbox", 2, &["--property", "enterpriseId=E2"]);
    let (ok, out) = cli(&[
        &tax_cli[..],
        &["--json", "dry-run", "tax/inbox", "1", "--topic", "tax-inbox", "--param", "enterprise_ids=E2"],
    ]
    .concat());
    assert!(ok, "{out}");
    let dry: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (dry["decisions"]["deliver"].as_u64(), dry["decisions"]["withhold"].as_u64()),
        (Some(2), Some(3)),
        "{dry}"
    );

    // The registry comes back after a restart: same binding, same version, same digest.
    node.stop();
    let node = Node::start_for_clients_with(&data, &config_with_auth(dir.path(), public_key.trim()));
    let (status, bindings) = call(node.admin, "GET", "/v1/bindings/inbox-e1", b"", &viewer);
    assert_eq!(status, 200, "{bindings}");
    assert_eq!((bindings["version"].as_u64(), bindings["digest"].as_str()), (Some(1), pushed["digest"].as_str()));

    // A second version activated, then a restart: the filter comes back with both versions, each
    // deciding from its own position, and version numbers keep counting after a deletion.
    let second = dir.path().join("inbox-2.wasm");
    std::fs::write(&second, relabelled(&bytes, "second")).expect("write");
    let addr = node.admin.to_string();
    let tax_cli = ["plugin", "--admin-addr", &addr, "--token", "tax-token-0123456789"];
    let sign = ["--sign-key", key.to_str().expect("utf-8")];
    let push_second = [&tax_cli[..], &["push", second.to_str().expect("utf-8"), "--name", "tax/inbox"], &sign].concat();
    assert!(cli(&push_second).0);
    assert!(cli(&[&tax_cli[..], &["activate", "inbox-e1", "2"]].concat()).0);
    let third = dir.path().join("inbox-3.wasm");
    std::fs::write(&third, relabelled(&bytes, "third")).expect("write");
    let push_third =
        [&tax_cli[..], &["--json", "push", third.to_str().expect("utf-8"), "--name", "tax/inbox"], &sign].concat();
    let (ok, out) = cli(&push_third);
    assert!(ok, "{out}");
    assert!(cli(&[&tax_cli[..], &["delete", "tax/inbox", "3"]].concat()).0);
    node.stop();
    let node = Node::start_for_clients_with(&data, &config_with_auth(dir.path(), public_key.trim()));
    let (_, bindings) = call(node.admin, "GET", "/v1/bindings/inbox-e1", b"", &viewer);
    let history: Vec<Option<u64>> =
        bindings["history"].as_array().expect("history").iter().map(|h| h["version"].as_u64()).collect();
    assert_eq!((bindings["version"].as_u64(), history), (Some(2), vec![Some(1), Some(2)]), "{bindings}");
    let addr = node.admin.to_string();
    let tax_cli = ["plugin", "--admin-addr", &addr, "--token", "tax-token-0123456789"];
    let fourth = dir.path().join("inbox-4.wasm");
    std::fs::write(&fourth, relabelled(&bytes, "fourth")).expect("write");
    let push_fourth =
        [&tax_cli[..], &["--json", "push", fourth.to_str().expect("utf-8"), "--name", "tax/inbox"], &sign].concat();
    let (ok, out) = cli(&push_fourth);
    assert!(ok, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).expect("json")["version"], 4, "3 was deleted, not reused");

    // The audit chain holds every change, refused ones included, and an edited copy fails to verify.
    let addr = node.admin.to_string();
    let (ok, out) = cli(&["admin", "--admin-addr", &addr, "--token", "view-token-0123456789", "audit", "verify"]);
    assert!(ok && out.contains("intact"), "{out}");
    let (ok, listed) = cli(&[
        "admin",
        "--admin-addr",
        &addr,
        "--token",
        "view-token-0123456789",
        "--json",
        "audit",
        "list",
        "--limit",
        "1000",
    ]);
    assert!(ok, "{listed}");
    let mut entries: Vec<Value> = serde_json::from_str(&listed).expect("json");
    assert!(
        entries.iter().any(|e| e["principal"] == "tax-team" && e["result"].as_str().unwrap_or("").starts_with("403"))
    );
    assert!(entries.iter().any(|e| e["principal"] == "unauthenticated"));
    assert!(
        entries
            .iter()
            .any(|e| e["digest"] == pushed["digest"] && e["result"].as_str().unwrap_or("").starts_with("201"))
    );
    let saved = dir.path().join("audit.json");
    std::fs::write(&saved, serde_json::to_string(&entries).expect("json")).expect("write");
    let (ok, out) = cli(&["admin", "audit", "verify", "--file", saved.to_str().expect("utf-8")]);
    assert!(ok, "{out}");
    entries[2]["principal"] = json!("someone-else");
    std::fs::write(&saved, serde_json::to_string(&entries).expect("json")).expect("write");
    let (ok, out) = cli(&["admin", "audit", "verify", "--file", saved.to_str().expect("utf-8")]);
    assert!(!ok && out.contains("BROKEN") && out.contains("entry 2"), "{out}");
    node.stop();
}

/// A department engineer's round: a binding to a missing topic refused, dry runs printed as tables
/// with and without a binding's parameters, counters that survive version swaps, `admin audit`
/// listing entries, and one `plugin bound` line per binding after a restart.
#[test]
fn dry_runs_read_as_tables_with_a_bindings_params_and_counters_outlive_version_swaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let node = Node::start_for_clients(&data);
    node.admin(&["topic", "create", "tax-inbox", "--type", "normal", "--queues", "2"]);
    let addr = node.admin.to_string();
    let run = |args: &[&str]| crate::support::run(&[&["plugin"][..], args, &["--admin-addr", &addr]].concat());
    let inbox = std::fs::read(component("enterprise_inbox")).expect("read");
    for v in 1..=3 {
        let file = dir.path().join(format!("inbox-{v}.wasm"));
        std::fs::write(&file, relabelled(&inbox, &format!("v{v}"))).expect("write");
        // The broker's options after the subcommand, as its help shows them.
        let (code, out, err) = run(&["push", file.to_str().expect("utf-8"), "--name", "tax/inbox", "--json"]);
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(serde_json::from_str::<Value>(&out).expect("json")["version"], v);
    }

    let bind = |topic: &str| {
        run(&[
            "bind",
            "inbox-e1",
            "--kind",
            "filter",
            "--topic",
            topic,
            "--group",
            "e1",
            "--plugin",
            "tax/inbox",
            "--plugin-version",
            "1",
            "--param",
            "enterprise_ids=E1",
        ])
    };
    let (code, out, err) = bind("tax-elsewhere");
    assert!(code != 0 && err.contains("HTTP 404") && err.contains("tax-elsewhere"), "{out}{err}");
    let body =
        json!({ "kind": "filter", "topic": "tax-elsewhere", "group": "e1", "plugin": "tax/inbox", "version": 1 });
    let (status, refused) = call(node.admin, "PUT", "/v1/bindings/inbox-e1", body.to_string().as_bytes(), &[]);
    assert_eq!(status, 404, "{refused}");
    assert!(refused["error"].as_str().is_some_and(|e| e.contains("no topic named tax-elsewhere")), "{refused}");
    let (code, out, err) = bind("tax-inbox");
    assert_eq!(code, 0, "{out}{err}");

    Client::Rust.produce(node.grpc, "tax-inbox", 2, &["--property", "enterpriseId=E1", "--keys", "case-e1"]);
    Client::Rust.produce(node.grpc, "tax-inbox", 1, &["--property", "enterpriseId=E2", "--keys", "case-e2"]);

    // Without parameters: a warning, and the inbox withholds everything.
    let (code, out, err) = run(&["dry-run", "tax/inbox", "1", "--topic", "tax-inbox"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("the plugin sees no parameters") && err.contains("--binding"), "{err}");
    let row = |out: &str, first: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(first))
            .unwrap_or_else(|| panic!("no row {first:?} in:\n{out}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(row(&out, "withhold")[..2], ["withhold", "3"], "{out}");
    // With the binding's: one row per decision, and the examples with id, keys and properties.
    let (code, out, err) = run(&["dry-run", "tax/inbox", "1", "--topic", "tax-inbox", "--binding", "inbox-e1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains("warning"), "{err}");
    assert!(!out.contains('{'), "no raw JSON in the table view:\n{out}");
    assert!(out.contains("DECISION") && out.contains("MESSAGE_ID") && out.contains("PROPERTIES"), "{out}");
    let deliver = out.lines().filter(|l| l.starts_with("deliver")).collect::<Vec<_>>();
    assert_eq!(deliver.len(), 3, "the count and two examples:\n{out}");
    assert_eq!(row(&out, "deliver")[..2], ["deliver", "2"], "{out}");
    assert!(deliver[1..].iter().all(|l| l.contains("case-e1") && l.contains("enterpriseId=E1")), "{out}");
    let withheld = out.lines().filter(|l| l.starts_with("withhold")).collect::<Vec<_>>();
    assert!(withheld.len() == 2 && withheld[1].contains("case-e2"), "{out}");
    // A parameter given beside the binding wins over its own.
    let args = ["dry-run", "tax/inbox", "1", "--topic", "tax-inbox", "--binding", "inbox-e1"];
    let (code, out, err) = run(&[&args[..], &["--param", "enterprise_ids=E2", "--json"]].concat());
    assert_eq!(code, 0, "{out}{err}");
    let dry: Value = serde_json::from_str(&out).expect("json");
    assert_eq!((dry["decisions"]["deliver"].as_u64(), dry["decisions"]["withhold"].as_u64()), (Some(1), Some(2)));
    assert_eq!(dry["examples"]["deliver"][0]["properties"], json!({ "enterpriseId": "E2" }), "{dry}");

    // The filter runs for its group; its counters outlive activations and rollbacks.
    let got = Client::Rust.simple(node.grpc, "e1", "tax-inbox", 2, 30, &[]);
    assert_eq!(got.bodies().len(), 2);
    let calls = |node: &Node| {
        let (status, binding) = call(node.admin, "GET", "/v1/bindings/inbox-e1", b"", &[]);
        assert_eq!(status, 200, "{binding}");
        binding["calls"].as_u64().expect("calls")
    };
    let before = calls(&node);
    assert!(before >= 1);
    for step in [&["activate", "inbox-e1", "2"][..], &["activate", "inbox-e1", "3"], &["rollback", "inbox-e1"]] {
        let (code, out, err) = run(step);
        assert_eq!(code, 0, "{step:?}: {out}{err}");
        assert!(calls(&node) >= before, "the calls so far stay after {step:?}");
    }
    let metric = node.metric("ferrymq_plugin_calls_total{plugin=\"inbox-e1\",kind=\"filter\"}");
    assert!(metric >= before as f64, "{metric} < {before}");

    // `admin audit` alone lists the entries.
    let (code, out, err) = crate::support::run(&["admin", "--admin-addr", &addr, "--json", "audit"]);
    assert_eq!(code, 0, "{err}");
    let entries: Vec<Value> = serde_json::from_str(&out).expect("json");
    assert!(entries.iter().any(|e| e["action"].as_str().is_some_and(|a| a.contains("bindings/inbox-e1"))), "{out}");

    // After a restart the binding is bound once in the log, however many versions it keeps.
    node.stop();
    let mut node = Node::start_for_clients(&data);
    node.wait_for_log("plugin registry loaded", Duration::from_secs(10));
    let (_, binding) = call(node.admin, "GET", "/v1/bindings/inbox-e1", b"", &[]);
    assert_eq!(binding["history"].as_array().map(Vec::len), Some(4), "{binding}");
    let bound: Vec<&String> =
        node.log_lines.iter().filter(|l| l.contains("plugin bound") && l.contains("binding=inbox-e1")).collect();
    assert_eq!(bound.len(), 1, "{bound:#?}");
    let active = bound[0].contains("version=\"2\"") || bound[0].contains("version=2 ");
    assert!(bound[0].contains("INFO") && active, "the active version: {}", bound[0]);
    node.stop();
}
