//! `ferrymq gateway` between two real brokers: what crosses keeps its id, keys, tag, properties and
//! body, gains where it came from, and FIFO groups keep their order; the gateway stops cleanly and
//! goes on where it stopped; a target away for many invisible times costs no delivery attempts on
//! the source; a policy rejects, drops or redacts, and a broken policy holds its forward without
//! touching another.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ferrymq_client::{Client, ClientOptions, Message, Receive, Received};

use crate::support::{Node, ferrymq};

/// A running `ferrymq gateway`, killed on drop if still alive.
pub struct Gateway {
    pub node: Node,
    pub admin: std::net::SocketAddr,
}

impl Gateway {
    fn start(config: &Path) -> Gateway {
        let mut command = ferrymq();
        command.arg("gateway").arg("--config").arg(config);
        Gateway::launch(command)
    }

    /// Starts `command` (`ferrymq gateway …`, possibly inside a network namespace) and waits until
    /// it is ready.
    pub fn launch(command: std::process::Command) -> Gateway {
        let mut node = Node::launch(command, None);
        let line = node.wait_for_log("ferrymq gateway ready", Duration::from_secs(60));
        let admin = line
            .split("admin=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .expect("admin address in the ready line");
        Gateway { node, admin }
    }

    pub fn view(&self) -> serde_json::Value {
        let (status, body) = crate::support::http_get(self.admin, "/v1/gateway");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("JSON")
    }
}

/// A gateway configuration between `source` and `target` forwarding `forwards` (TOML tables).
fn write_config(dir: &Path, source: &Node, target: &Node, forwards: &str) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    let text = format!(
        "[gateway]\ndata_dir = \"gw-data\"\nadmin_listen = \"127.0.0.1:0\"\nname = \"gw\"\n\
         [source]\nendpoints = \"{}\"\nzone = \"dmz\"\n[target]\nendpoints = \"{}\"\n{forwards}",
        source.grpc, target.grpc
    );
    std::fs::write(&path, text).expect("write the gateway configuration");
    path
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

async fn connect(node: &Node) -> Client {
    Client::connect(&node.grpc.to_string(), ClientOptions::default()).await.expect("connect")
}

/// Everything `group` receives from `topic` until `count` arrived or `wait` passed, acknowledged.
async fn receive(client: &Client, group: &str, topic: &str, count: usize, wait: Duration) -> Vec<Received> {
    let deadline = Instant::now() + wait;
    let mut all = Vec::new();
    while all.len() < count && Instant::now() < deadline {
        let ask = Receive {
            group,
            topic,
            tag_expression: "*",
            batch: 32,
            invisible: Duration::from_secs(30),
            long_polling: Duration::from_millis(500),
        };
        let got = client.receive(&ask).await.expect("receive");
        if !got.is_empty() {
            client.ack(group, topic, &got).await.expect("ack");
        }
        all.extend(got);
    }
    all
}

/// Two brokers, each with `applications` (normal) and `filings` (FIFO), and the gateway's FIFO
/// group `gw-filings` on the source; `target_extra` is TOML added to the target's configuration.
fn two_zones(dir: &Path, target_extra: &str) -> (Node, Node) {
    let source = Node::start_for_clients(&dir.join("dmz"));
    let target = Node::start_for_clients_with(&dir.join("intranet"), target_extra);
    for node in [&source, &target] {
        node.admin(&["topic", "create", "applications", "--type", "normal", "--queues", "4"]);
        node.admin(&["topic", "create", "filings", "--type", "fifo", "--queues", "4"]);
    }
    source.admin(&["group", "create", "gw-filings", "--fifo"]);
    (source, target)
}

/// Starts the node whose data directory is `data_dir` again, with the configuration
/// [`Node::start_for_clients_with`] wrote beside it and on the gRPC address it had, so that a
/// gateway configured with that address finds it again.
fn restart_for_clients_at(data_dir: &Path, grpc: std::net::SocketAddr) -> Node {
    let mut command = ferrymq();
    command
        .arg("standalone")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--config")
        .arg(data_dir.with_extension("toml"))
        .args(["--admin-listen", "127.0.0.1:0", "--grpc-listen", &grpc.to_string()]);
    Node::launch(command, Some("ferrymq standalone ready"))
}

/// Checks that bodies `<group>:<n>` arrive in order within each group: `n` counting up from 0 by
/// one (`consecutive`), or only growing.
fn assert_in_order_per_group<'a>(messages: impl IntoIterator<Item = &'a Received>, consecutive: bool) {
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for m in messages {
        let text = String::from_utf8(m.body.clone()).expect("text");
        let (group, n) = text.split_once(':').expect("group:n");
        let n: i64 = n.parse().expect("number");
        let previous = last.entry(group.to_owned()).or_insert(-1);
        if consecutive {
            assert_eq!(n, *previous + 1, "group {group} out of order");
        } else {
            assert!(n > *previous, "group {group}: {n} after {previous}");
        }
        *previous = n;
    }
}

#[test]
fn messages_cross_once_keeping_what_they_carry_and_fifo_groups_keep_their_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (source, target) = two_zones(dir.path(), "");
    let config = write_config(
        dir.path(),
        &source,
        &target,
        "[[forward]]\ntopic = \"applications\"\ninvisible_ms = 5000\n\
         [[forward]]\ntopic = \"filings\"\ninvisible_ms = 5000\n",
    );
    let gateway = Gateway::start(&config);
    let runtime = runtime();
    let sent = runtime.block_on(async {
        let producer = connect(&source).await;
        let mut sent = BTreeMap::new();
        for i in 0..100 {
            let mut message = Message::new("applications", format!("application {i}").into_bytes());
            message.tag = Some("policy".into());
            message.keys = vec![format!("app-{i}")];
            message.properties = vec![("enterprise".into(), format!("E{}", i % 7))];
            let receipt = producer.send(vec![message]).await.expect("send").remove(0);
            sent.insert(receipt.message_id, i);
        }
        for i in 0..25 {
            for group in 0..8 {
                let mut message = Message::new("filings", format!("{group}:{i}").into_bytes());
                message.message_group = Some(format!("enterprise-{group}"));
                producer.send(vec![message]).await.expect("send fifo");
            }
        }
        sent
    });

    let (applications, filings) = runtime.block_on(async {
        let consumer = connect(&target).await;
        let applications = receive(&consumer, "readers", "applications", 100, Duration::from_secs(60)).await;
        let filings = receive(&consumer, "readers", "filings", 200, Duration::from_secs(60)).await;
        // Nothing more comes: no message crossed twice.
        let more = receive(&consumer, "readers", "applications", 1, Duration::from_secs(2)).await;
        assert!(more.is_empty(), "a second copy crossed: {:?}", more.iter().map(|m| &m.message_id).collect::<Vec<_>>());
        (applications, filings)
    });
    assert_eq!(applications.len(), 100, "every application crossed");
    for m in &applications {
        let i = sent.get(&m.message_id).unwrap_or_else(|| panic!("{} crossed under another id", m.message_id));
        assert_eq!(m.body, format!("application {i}").into_bytes());
        assert_eq!(m.tag.as_deref(), Some("policy"));
        assert_eq!(m.keys, [format!("app-{i}")]);
        let props: BTreeMap<_, _> = m.properties.iter().cloned().collect();
        assert_eq!(props.get("enterprise"), Some(&format!("E{}", i % 7)));
        assert_eq!(props.get(ferrymq_gateway::SOURCE_ZONE).map(String::as_str), Some("dmz"));
        assert!(props.get(ferrymq_gateway::SOURCE_STORE_MS).is_some_and(|v| v.parse::<i64>().is_ok()));
    }
    assert_eq!(filings.len(), 200, "every filing crossed");
    assert_in_order_per_group(&filings, true);
    for m in &filings {
        let group = String::from_utf8_lossy(&m.body).split(':').next().unwrap_or_default().to_owned();
        assert_eq!(m.message_group.as_deref(), Some(format!("enterprise-{group}").as_str()));
    }

    let view = gateway.view();
    let forwards = view["forwards"].as_array().expect("forwards");
    assert_eq!(forwards[0]["forwarded"], 100);
    assert_eq!(forwards[1]["forwarded"], 200);
    assert_eq!(forwards[0]["group"], "gw-applications");
    let (status, metrics) = crate::support::http_get(gateway.admin, "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("ferrymq_gateway_messages_forwarded_total{topic=\"filings\"} 200"), "{metrics}");
    gateway.node.stop();
}

#[test]
fn a_target_away_for_many_invisible_times_and_a_gateway_kill_meanwhile_dead_letter_and_lose_nothing() {
    // The gateway renews the batches it holds; without that, a message held longer than
    // invisible_ms × max_attempts (3 s here) is dead-lettered on the source, and once the worker
    // holding its last delivery is gone (the kill) it never crosses.
    let dir = tempfile::tempdir().expect("tempdir");
    let (source, target) = two_zones(dir.path(), "");
    // One attempt for the delivery the kill cuts short, one for the delivery after it, one spare.
    source.admin(&["group", "create", "gw-applications", "--max-attempts", "3"]);
    source.admin(&["group", "create", "gw-filings", "--fifo", "--max-attempts", "3"]);
    let config = write_config(
        dir.path(),
        &source,
        &target,
        "[[forward]]\ntopic = \"applications\"\ninvisible_ms = 1000\n\
         [[forward]]\ntopic = \"filings\"\ninvisible_ms = 1000\n",
    );
    let mut gateway = Gateway::start(&config);
    let target_grpc = target.grpc;
    target.stop();
    let outage = Instant::now();

    let runtime = runtime();
    let sent = runtime.block_on(async {
        let producer = connect(&source).await;
        let mut sent = Vec::new();
        for round in 0..10 {
            let applications = (0..4).map(|j| Message::new("applications", format!(":{}", round * 4 + j))).collect();
            sent.extend(producer.send(applications).await.expect("send").into_iter().map(|r| r.message_id));
            let filings = (0..8)
                .map(|group| {
                    let mut message = Message::new("filings", format!("{group}:{round}"));
                    message.message_group = Some(format!("enterprise-{group}"));
                    message
                })
                .collect();
            sent.extend(producer.send(filings).await.expect("send fifo").into_iter().map(|r| r.message_id));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        sent
    });
    std::thread::sleep(Duration::from_secs(6).saturating_sub(outage.elapsed()));
    gateway.node.signal(libc::SIGKILL);
    gateway.node.wait_exit(Duration::from_secs(10));
    gateway = Gateway::start(&config);
    // Away for four times invisible_ms × max_attempts.
    std::thread::sleep(Duration::from_secs(12).saturating_sub(outage.elapsed()));
    let during = gateway.view();
    for forward in during["forwards"].as_array().expect("forwards") {
        assert_eq!(forward["forwarded"], 0, "the target was away: {forward}");
    }
    let target = restart_for_clients_at(&dir.path().join("intranet"), target_grpc);

    let (received, dead) = runtime.block_on(async {
        let consumer = connect(&target).await;
        let mut received = receive(&consumer, "readers", "applications", 40, Duration::from_secs(60)).await;
        received.extend(receive(&consumer, "readers", "filings", 80, Duration::from_secs(60)).await);
        received.extend(receive(&consumer, "readers", "applications", 1, Duration::from_secs(2)).await);
        received.extend(receive(&consumer, "readers", "filings", 1, Duration::from_secs(1)).await);
        let auditor = connect(&source).await;
        let mut dead = receive(&auditor, "auditors", "%DLQ%gw-applications", 1, Duration::from_secs(1)).await;
        dead.extend(receive(&auditor, "auditors", "%DLQ%gw-filings", 1, Duration::from_secs(1)).await);
        (received, dead)
    });
    let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &received {
        *copies.entry(&m.message_id).or_default() += 1;
    }
    let lost: Vec<_> = sent.iter().filter(|id| !copies.contains_key(id.as_str())).collect();
    assert!(
        lost.is_empty(),
        "{} of {} messages never crossed ({} dead-lettered on the source): {lost:?}",
        lost.len(),
        sent.len(),
        dead.len()
    );
    assert!(
        dead.is_empty(),
        "dead-lettered on the source: {:?}",
        dead.iter().map(|m| &m.message_id).collect::<Vec<_>>()
    );
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "messages crossed more than once: {twice:?}");
    assert_eq!(received.len(), sent.len());
    assert_in_order_per_group(received.iter().filter(|m| m.topic == "filings"), true);
    for forward in during["forwards"].as_array().expect("forwards") {
        assert!(forward["renewed"].as_u64().expect("renewed") > 0, "held messages were renewed: {forward}");
    }
    gateway.node.stop();
}

#[test]
fn policies_reject_drop_and_redact_and_a_broken_policy_holds_only_its_own_forward_until_replaced() {
    use ferrymq_test_components::component;
    let dir = tempfile::tempdir().expect("tempdir");
    let source = Node::start_for_clients(&dir.path().join("dmz"));
    let target = Node::start_for_clients(&dir.path().join("intranet"));
    for node in [&source, &target] {
        for topic in ["applications", "notices", "checked"] {
            node.admin(&["topic", "create", topic, "--type", "normal", "--queues", "2"]);
        }
    }
    let forwards = format!(
        "[[forward]]\ntopic = \"applications\"\ninvisible_ms = 5000\n[forward.policy]\ncomponent = \"{}\"\n\
         [[forward]]\ntopic = \"notices\"\ninvisible_ms = 5000\n[forward.policy]\ncomponent = \"{}\"\n\
         [[forward]]\ntopic = \"checked\"\ninvisible_ms = 5000\n[forward.policy]\ncomponent = \"{}\"\n",
        component("redact_id_numbers").display(),
        component("deny_unclassified").display(),
        component("route_trap").display(),
    );
    let config = write_config(dir.path(), &source, &target, &forwards);
    let gateway = Gateway::start(&config);
    let runtime = runtime();
    runtime.block_on(async {
        let producer = connect(&source).await;
        for i in 0..10 {
            let body = if i % 2 == 0 { format!("applicant 11010119900307{i:04}") } else { format!("applicant {i}") };
            producer.send(vec![Message::new("applications", body.into_bytes())]).await.expect("send");
            let mut notice = Message::new("notices", format!("notice {i}").into_bytes());
            if i < 5 {
                notice.properties = vec![("classification".into(), "public".into())];
            }
            producer.send(vec![notice]).await.expect("send");
            producer.send(vec![Message::new("checked", format!("checked {i}").into_bytes())]).await.expect("send");
        }
    });
    let (applications, notices, held) = runtime.block_on(async {
        let consumer = connect(&target).await;
        let applications = receive(&consumer, "readers", "applications", 10, Duration::from_secs(60)).await;
        let notices = receive(&consumer, "readers", "notices", 6, Duration::from_secs(10)).await;
        let held = receive(&consumer, "readers", "checked", 1, Duration::from_secs(3)).await;
        (applications, notices, held)
    });
    assert_eq!(applications.len(), 10);
    let redacted: Vec<_> = applications.iter().filter(|m| m.body.windows(3).any(|w| w == b"***")).collect();
    assert_eq!(redacted.len(), 5, "the identity numbers were masked before they crossed");
    assert!(applications.iter().all(|m| !String::from_utf8_lossy(&m.body).contains("1101011990")));
    assert_eq!(notices.len(), 5, "only classified notices crossed");
    assert!(held.is_empty(), "a broken policy lets nothing through");

    let view = gateway.view();
    let forwards = view["forwards"].as_array().expect("forwards");
    assert_eq!(forwards[0]["redacted"], 5);
    assert_eq!(forwards[1]["rejected"], 5);
    assert_eq!(forwards[2]["forwarded"], 0);
    assert!(forwards[2]["policy_waits"].as_u64().expect("waits") > 0);
    assert_eq!(forwards[2]["state"], "waiting for the policy");
    // The source still counts the held messages as not consumed by the gateway's group.
    let deadline = Instant::now() + Duration::from_secs(15);
    while gateway.view()["forwards"][2]["lag_messages"] != 10 {
        assert!(Instant::now() < deadline, "lag in messages: {}", gateway.view()["forwards"][2]);
        std::thread::sleep(Duration::from_millis(250));
    }
    let decisions = std::fs::read_to_string(dir.path().join("gw-data/decisions.jsonl")).expect("decision log");
    let rejected: Vec<serde_json::Value> = decisions.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!(rejected.len(), 5);
    assert!(rejected.iter().all(|e| e["decision"] == "rejected" && e["topic"] == "notices"));

    // A policy that works, swapped in while the gateway runs: the held messages cross.
    let stamp = std::fs::read(component("version_stamp")).expect("read component");
    let (status, body) = crate::support::http_send(
        gateway.admin,
        "PUT",
        "/v1/gateway/forwards/checked/policy",
        "application/wasm",
        &stamp,
    );
    assert_eq!(status, 200, "{body}");
    let checked = runtime.block_on(async {
        let consumer = connect(&target).await;
        receive(&consumer, "readers", "checked", 10, Duration::from_secs(60)).await
    });
    assert_eq!(checked.len(), 10, "nothing the broken policy held was lost");
    assert!(checked.iter().all(|m| m.properties.iter().any(|(k, _)| k == "stamped-by")));
    let (status, _) = crate::support::http_send(
        gateway.admin,
        "PUT",
        "/v1/gateway/forwards/checked/policy",
        "text/plain",
        b"not a component",
    );
    assert_eq!(status, 403, "changes need their own content type");
    // A component over the upload limit is refused by its declared length, before a byte is read.
    let mut stream = std::net::TcpStream::connect(gateway.admin).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let head = format!(
        "PUT /v1/gateway/forwards/checked/policy HTTP/1.1\r\nHost: {}\r\nContent-Type: application/wasm\r\nContent-Length: {}\r\n\r\n",
        gateway.admin,
        ferrymq_plugin::UPLOAD_BYTES_DEFAULT + 1
    );
    std::io::Write::write_all(&mut stream, head.as_bytes()).expect("send head");
    let mut answer = [0u8; 12];
    std::io::Read::read_exact(&mut stream, &mut answer).expect("an answer");
    assert_eq!(&answer, b"HTTP/1.1 413", "an oversized component");
    gateway.node.stop();
}

/// A seeded xorshift, for the carrier's and the chaos's choices.
pub struct Dice(pub u64);

impl Dice {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn percent(&mut self) -> u64 {
        self.next() % 100
    }
}

/// Batch files in `dir`, by name.
fn batch_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "fmq"))
        .collect();
    files.sort();
    files
}

#[test]
fn ferry_files_cross_a_lossy_one_way_link_once_each_and_bad_files_are_quarantined() {
    let seed: u64 = std::env::var("FERRYMQ_FERRY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_f1e5);
    eprintln!("ferry channel seed {seed} (FERRYMQ_FERRY_SEED replays it)");
    let mut dice = Dice(seed | 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let (outbox, inbox) = (dir.path().join("outbox"), dir.path().join("inbox"));
    let source = Node::start_for_clients(&dir.path().join("dmz"));
    let target = Node::start_for_clients(&dir.path().join("intranet"));
    for node in [&source, &target] {
        node.admin(&["topic", "create", "decisions", "--type", "normal", "--queues", "2"]);
        node.admin(&["topic", "create", "orders", "--type", "fifo", "--queues", "2"]);
    }
    source.admin(&["group", "create", "gw-orders", "--fifo"]);
    let key = dir.path().join("ferry.key");
    let (code, public, err) = crate::support::run(&["plugin", "keygen", "--out", key.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    let public = public.trim().to_owned();

    let export_config = dir.path().join("export.toml");
    std::fs::write(
        &export_config,
        format!(
            "[gateway]\ndata_dir = \"export-data\"\nadmin_listen = \"127.0.0.1:0\"\nname = \"gw\"\n\
             [source]\nendpoints = \"{}\"\nzone = \"dmz\"\n\
             [target]\nferry_dir = \"outbox\"\nferry_key = \"ferry.key\"\nferry_file_bytes_max = 4096\nferry_file_age_ms = 50\n\
             [[forward]]\ntopic = \"decisions\"\ninvisible_ms = 5000\n[[forward]]\ntopic = \"orders\"\ninvisible_ms = 5000\n",
            source.grpc
        ),
    )
    .expect("write export config");
    let import_config = dir.path().join("import.toml");
    std::fs::write(
        &import_config,
        format!(
            "[gateway]\ndata_dir = \"import-data\"\nadmin_listen = \"127.0.0.1:0\"\nname = \"gw-in\"\n\
             [source]\nferry_dir = \"inbox\"\nferry_public_key = \"{public}\"\n\
             [target]\nendpoints = \"{}\"\n\
             [[forward]]\ntopic = \"decisions\"\n[[forward]]\ntopic = \"orders\"\n",
            target.grpc
        ),
    )
    .expect("write import config");

    let exporter = Gateway::start(&export_config);
    let runtime = runtime();
    let sent: BTreeMap<String, String> = runtime.block_on(async {
        let producer = connect(&source).await;
        let mut sent = BTreeMap::new();
        for i in 0..300 {
            let body = format!("decision {i} {}", "x".repeat(i % 200));
            let receipt =
                producer.send(vec![Message::new("decisions", body.clone().into_bytes())]).await.expect("send");
            sent.insert(receipt[0].message_id.clone(), body);
        }
        for i in 0..25 {
            for group in 0..8 {
                let body = format!("{group}:{i}");
                let mut message = Message::new("orders", body.clone().into_bytes());
                message.message_group = Some(format!("g{group}"));
                let receipt = producer.send(vec![message]).await.expect("send");
                sent.insert(receipt[0].message_id.clone(), body);
            }
        }
        sent
    });
    // Every message is in a file before the link carries anything.
    let deadline = Instant::now() + Duration::from_secs(60);
    while exporter.view()["forwards"]
        .as_array()
        .expect("forwards")
        .iter()
        .map(|f| f["forwarded"].as_u64().unwrap_or(0))
        .sum::<u64>()
        < 500
    {
        assert!(Instant::now() < deadline, "the exporter did not write every message: {}", exporter.view());
        std::thread::sleep(Duration::from_millis(100));
    }
    let files = batch_files(&outbox);
    assert!(files.len() >= 10, "small files make many batches: {}", files.len());

    // The link: loses, duplicates, reorders and damages files; one is forged with another key.
    std::fs::create_dir_all(&inbox).expect("inbox");
    let last = files.len() - 1;
    let mut carried: Vec<(String, Vec<u8>)> = Vec::new();
    // Batch 1 is replaced by a forgery below; three others are damaged on the way.
    let forged_seq = 1;
    let mut to_damage = std::collections::BTreeSet::new();
    while to_damage.len() < 3 {
        let i = (dice.next() as usize) % last;
        if i as u64 != forged_seq {
            to_damage.insert(i);
        }
    }
    let mut damaged = 0u64;
    for (i, path) in files.iter().enumerate() {
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        let mut bytes = std::fs::read(path).expect("read batch");
        std::fs::remove_file(path).expect("take it off the outbox");
        let roll = dice.percent();
        if i != last && roll < 10 {
            continue; // lost
        }
        if to_damage.contains(&i) {
            let at = (dice.next() as usize) % bytes.len();
            bytes[at] ^= 0x20;
            damaged += 1;
        }
        if roll >= 90 {
            carried.push((name.clone(), bytes.clone())); // duplicated
        }
        carried.push((name, bytes));
    }
    // One file replaced by a forgery: same number, another key.
    let forger = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let mut forged_message = Message::new("decisions", b"forged".to_vec());
    forged_message.message_id = Some("FORGED".into());
    let forged = ferrymq_gateway::ferry::file::encode("gw", forged_seq, 0, Vec::new(), &[forged_message], &forger)
        .expect("encode a forgery");
    let forged_name = ferrymq_gateway::ferry::file::file_name(forged_seq);
    carried.retain(|(name, _)| *name != forged_name);
    carried.push((forged_name, forged));
    for i in (1..carried.len()).rev() {
        let j = (dice.next() as usize) % (i + 1);
        carried.swap(i, j);
    }
    let importer = Gateway::start(&import_config);
    for (name, bytes) in &carried {
        std::fs::write(inbox.join(format!(".{name}.part")), bytes).expect("carry");
        std::fs::rename(inbox.join(format!(".{name}.part")), inbox.join(name)).expect("land");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The importer takes what it can and names what is missing.
    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let view = importer.view();
        let import = &view["ferry_import"];
        let missing: Vec<u64> =
            import["missing"].as_array().expect("missing").iter().filter_map(|v| v.as_u64()).collect();
        let waiting = batch_files(&inbox).len();
        if import["next_seq"].as_u64() == Some(last as u64 + 1) {
            break Vec::new();
        }
        if !missing.is_empty() && waiting > 0 && inbox_settled(&importer) {
            break missing;
        }
        assert!(Instant::now() < deadline, "the importer did not settle: {view}");
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("{} files, {} carried, {damaged} damaged, missing {missing:?}", files.len(), carried.len());
    assert!(missing.contains(&forged_seq), "the forged batch counts as missing: {missing:?}");
    let quarantined = importer.view()["ferry_import"]["files_quarantined"].as_u64().expect("count");
    // A duplicate may land on its first copy's name before the importer saw that one: each damaged
    // file is quarantined once or twice.
    assert!(
        (damaged + 1..=2 * damaged + 1).contains(&quarantined),
        "every damaged file and the forgery were quarantined: {quarantined} for {damaged} damaged"
    );

    // The operator resends what is missing; the link carries it this time.
    let seqs: Vec<String> = missing.iter().map(u64::to_string).collect();
    let (code, out, err) = crate::support::run(&[
        "gateway",
        "resend",
        "--config",
        export_config.to_str().expect("utf-8"),
        "--seq",
        &seqs.join(","),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    for path in batch_files(&outbox) {
        let name = path.file_name().expect("name").to_owned();
        std::fs::rename(&path, inbox.join(name)).expect("carry a resent batch");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while importer.view()["ferry_import"]["next_seq"].as_u64() != Some(last as u64 + 1) {
        assert!(Instant::now() < deadline, "the resent batches were not imported: {}", importer.view());
        std::thread::sleep(Duration::from_millis(200));
    }

    let (decisions, orders) = runtime.block_on(async {
        let consumer = connect(&target).await;
        let decisions = receive(&consumer, "readers", "decisions", 300, Duration::from_secs(30)).await;
        let orders = receive(&consumer, "readers", "orders", 200, Duration::from_secs(30)).await;
        let more = receive(&consumer, "readers", "decisions", 1, Duration::from_secs(2)).await;
        assert!(more.is_empty(), "a message was imported twice or forged: {more:?}");
        (decisions, orders)
    });
    assert_eq!(decisions.len(), 300);
    assert_eq!(orders.len(), 200);
    for m in decisions.iter().chain(&orders) {
        assert_eq!(sent.get(&m.message_id).map(String::as_bytes), Some(m.body.as_slice()), "{}", m.message_id);
    }
    assert_in_order_per_group(&orders, true);
    let quarantine = std::fs::read_dir(dir.path().join("import-data/ferry-quarantine")).expect("quarantine").count();
    assert_eq!(quarantine as u64, quarantined);
    importer.node.stop();
    exporter.node.stop();
}

/// Whether the importer has looked at everything in its inbox (its counters stopped moving).
fn inbox_settled(importer: &Gateway) -> bool {
    let before = importer.view()["ferry_import"].clone();
    std::thread::sleep(Duration::from_millis(600));
    let after = importer.view()["ferry_import"].clone();
    before == after
}

#[test]
fn a_gateway_killed_again_and_again_loses_and_duplicates_nothing() {
    let kills: usize = std::env::var("FERRYMQ_GATEWAY_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let seed: u64 = std::env::var("FERRYMQ_GATEWAY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x6a7e);
    eprintln!("{kills} kills, seed {seed} (FERRYMQ_GATEWAY_KILLS, FERRYMQ_GATEWAY_SEED)");
    let mut dice = Dice(seed | 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = std::env::var("FERRYMQ_GATEWAY_TARGET_CONFIG").unwrap_or_default();
    let (source, target) = two_zones(dir.path(), &extra.replace("\\n", "\n"));
    let config = write_config(
        dir.path(),
        &source,
        &target,
        "[[forward]]\ntopic = \"applications\"\ninvisible_ms = 2000\nbatch = 8\n\
         [[forward]]\ntopic = \"filings\"\ninvisible_ms = 2000\nbatch = 8\n",
    );
    let runtime = runtime();
    let producer = runtime.block_on(connect(&source));
    // Enough load that the gateway is always between a receive and a settle when it is killed.
    let sending = runtime.spawn(async move {
        let mut sent = Vec::new();
        for round in 0..300u32 {
            let mut batch = Vec::new();
            for j in 0..10u32 {
                let i = round * 10 + j;
                let group = format!("g{}", i % 8);
                let mut message = Message::new("filings", format!("{group}:{i}").into_bytes());
                message.message_group = Some(group);
                batch.push(message);
            }
            sent.extend(producer.send(batch).await.expect("send fifo").into_iter().map(|r| r.message_id));
            let batch =
                (0..10).map(|j| Message::new("applications", format!(":{}", round * 10 + j).into_bytes())).collect();
            sent.extend(producer.send(batch).await.expect("send").into_iter().map(|r| r.message_id));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sent
    });
    let mut gateway = Gateway::start(&config);
    for kill in 0..kills {
        std::thread::sleep(Duration::from_millis(300 + dice.next() % 1_200));
        gateway.node.signal(libc::SIGKILL);
        gateway.node.wait_exit(Duration::from_secs(10));
        eprintln!("kill {} of {kills}", kill + 1);
        gateway = Gateway::start(&config);
    }
    let sent = runtime.block_on(sending).expect("producer");
    let received = runtime.block_on(async {
        let consumer = connect(&target).await;
        let mut all = receive(&consumer, "readers", "applications", 3_000, Duration::from_secs(90)).await;
        all.extend(receive(&consumer, "readers", "filings", 3_000, Duration::from_secs(90)).await);
        all.extend(receive(&consumer, "readers", "applications", 1, Duration::from_secs(3)).await);
        all.extend(receive(&consumer, "readers", "filings", 1, Duration::from_secs(1)).await);
        all
    });
    let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &received {
        *copies.entry(&m.message_id).or_default() += 1;
    }
    let lost: Vec<_> = sent.iter().filter(|id| !copies.contains_key(id.as_str())).collect();
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged messages never crossed: {lost:?}", lost.len(), sent.len());
    assert!(twice.is_empty(), "messages crossed more than once: {twice:?}");
    assert_eq!(received.len(), sent.len());
    assert_in_order_per_group(received.iter().filter(|m| m.topic == "filings"), false);
    gateway.node.stop();
}
