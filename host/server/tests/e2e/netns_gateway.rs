//! The zone gateway between two real network zones: each zone a network (a bridge) with its own
//! broker in its own namespace, the gateway in a namespace with a leg in each. The official Python
//! client produces in zone A — normal messages, FIFO messages in 8 groups, delay messages and
//! transactions committed and rolled back — while a consumer reads in zone B, and meanwhile the
//! links are cut again and again (nftables drops in the gateway's namespace, 0.1–10 s each) and the
//! gateway is killed (`kill -9`) at random points. At the end every acknowledged message was
//! delivered in zone B exactly once, FIFO groups in order, no rolled-back message, no delay message
//! early.
//!
//! `FERRYMQ_GATEWAY_CUTS` (default 50) and `FERRYMQ_GATEWAY_NETNS_KILLS` (default 10) set the counts,
//! `FERRYMQ_GATEWAY_NETNS_SEED` the seed (printed).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrymq_client::{Client, ClientOptions, Receive, Received, now_ms};

use crate::clients::{Client as Official, Running};
use crate::gateway::{Dice, Gateway};
use crate::netns::{Host, Lab};
use crate::support::Node;

const BIN: &str = env!("CARGO_BIN_EXE_ferrymq");

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// A standalone broker on `host`, with short minimum invisible times and quick ticks.
fn broker(host: &Host, dir: &Path) -> Node {
    let config = dir.with_extension("toml");
    std::fs::write(&config, "[grpc]\ninvisible_ms_min = 1000\n[broker]\ntick_ms = 50\n").expect("write config");
    let ip = host.ip;
    let mut command = host.command(BIN);
    command
        .arg("standalone")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir)
        .args(["--grpc-listen", &format!("{ip}:8081"), "--admin-listen", &format!("{ip}:8082")])
        // The lab's admin APIs listen on namespace addresses without tokens.
        .arg("--insecure-admin");
    Node::launch(command, Some("ferrymq standalone ready"))
}

/// The ids a run of the driver reports, by event.
fn ids(events: &crate::clients::Events, kind: &str) -> Vec<String> {
    events.of(kind).iter().filter_map(|e| e["id"].as_str().map(str::to_owned)).collect()
}

/// Producers of one kind, run one after another until `done`.
fn keep_producing(
    zone: &Host,
    endpoint: std::net::SocketAddr,
    done: Arc<AtomicBool>,
    args: impl Fn(u32) -> Vec<String> + Send + 'static,
) -> std::thread::JoinHandle<Vec<crate::clients::Events>> {
    let ns = zone.ns.clone();
    std::thread::spawn(move || {
        let mut runs = Vec::new();
        let mut round = 0;
        while !done.load(Ordering::Acquire) {
            let args = args(round);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let running: Running = Official::Python.spawn_in(Some(&ns), endpoint, &args);
            runs.push(running.wait(Duration::from_secs(120)));
            round += 1;
        }
        runs
    })
}

#[test]
fn across_two_zones_through_cut_links_and_killed_gateways_every_message_arrives_once_in_order() {
    let cuts = env_or("FERRYMQ_GATEWAY_CUTS", 50);
    let kills = env_or("FERRYMQ_GATEWAY_NETNS_KILLS", 10);
    let seed = env_or("FERRYMQ_GATEWAY_NETNS_SEED", now_ms() as u64);
    eprintln!("{cuts} link cuts, {kills} gateway kills, seed {seed} (FERRYMQ_GATEWAY_NETNS_SEED replays the choices)");
    let mut dice = Dice(seed | 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut zone_a, mut zone_b) = (Lab::new(), Lab::new());
    let (a, b) = (zone_a.host("a"), zone_b.host("b"));
    let gw = zone_a.host("gw");
    let gw_in_b = zone_b.attach(&gw);
    let source = broker(&a, &dir.path().join("zone-a"));
    let target = broker(&b, &dir.path().join("zone-b"));
    for (node, transactions) in [(&source, "transaction"), (&target, "normal")] {
        node.admin(&["topic", "create", "applications", "--type", "normal", "--queues", "4"]);
        node.admin(&["topic", "create", "filings", "--type", "fifo", "--queues", "4"]);
        node.admin(&["topic", "create", "reminders", "--type", "delay", "--queues", "2"]);
        // Only committed transactional messages cross, as ordinary ones.
        node.admin(&["topic", "create", "payments", "--type", transactions, "--queues", "2"]);
    }
    source.admin(&["group", "create", "gw-filings", "--fifo"]);
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\ndata_dir = \"gw-data\"\nadmin_listen = \"{}:8083\"\nadmin_insecure_open = true\nname = \"gw\"\n\
             [source]\nendpoints = \"{}\"\nzone = \"zone-a\"\n[target]\nendpoints = \"{}\"\n\
             [[forward]]\ntopic = \"applications\"\ninvisible_ms = 3000\n\
             [[forward]]\ntopic = \"filings\"\ninvisible_ms = 3000\n\
             [[forward]]\ntopic = \"reminders\"\ninvisible_ms = 3000\n\
             [[forward]]\ntopic = \"payments\"\ninvisible_ms = 3000\n",
            gw.ip, source.grpc, target.grpc
        ),
    )
    .expect("write the gateway configuration");
    let start_gateway = || {
        let mut command = gw.command(BIN);
        command.arg("gateway").arg("--config").arg(&config);
        Gateway::launch(command)
    };
    // The forwards' invisible time (3 s) is far shorter than the longest cut (10 s): a worker that
    // waits for a cut link renews what it holds, so those messages are not delivered again and
    // spend none of the group's max_attempts (a message past them would go to the source's %DLQ%),
    // and a killed gateway's messages come back after 3 s.
    let mut gateway = start_gateway();
    eprintln!("gateway up; its zone-b leg is {gw_in_b}");

    // The consumer in zone B reads all along.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let received: Arc<Mutex<Vec<(Received, i64)>>> = Arc::default();
    let stop_reading = Arc::new(AtomicBool::new(false));
    let reader = {
        let (received, stop) = (received.clone(), stop_reading.clone());
        let endpoint = target.grpc.to_string();
        runtime.spawn(async move {
            let client = Client::connect(&endpoint, ClientOptions::default()).await.expect("connect to zone B");
            while !stop.load(Ordering::Acquire) {
                for topic in ["applications", "filings", "reminders", "payments"] {
                    let ask = Receive {
                        group: "zone-b-readers",
                        topic,
                        tag_expression: "*",
                        batch: 32,
                        invisible: Duration::from_secs(60),
                        long_polling: Duration::from_millis(100),
                    };
                    let Ok(got) = client.receive(&ask).await else { continue };
                    if got.is_empty() {
                        continue;
                    }
                    let at = now_ms();
                    client.ack("zone-b-readers", topic, &got).await.expect("ack in zone B");
                    received.lock().expect("lock").extend(got.into_iter().map(|m| (m, at)));
                }
            }
        })
    };

    // The official Python client produces in zone A all along.
    let producing = Arc::new(AtomicBool::new(false));
    let endpoint = source.grpc;
    let normal = keep_producing(&a, endpoint, producing.clone(), |round| {
        ["produce", "--topic", "applications", "--count", "40", "--prefix", &format!("n{round}-")]
            .map(str::to_owned)
            .to_vec()
    });
    let fifo: Vec<_> = (0..8)
        .map(|g| {
            keep_producing(&a, endpoint, producing.clone(), move |round| {
                let prefix = format!("g{g}:{round:04}-");
                [
                    "produce",
                    "--topic",
                    "filings",
                    "--count",
                    "20",
                    "--message-group",
                    &format!("g{g}"),
                    "--prefix",
                    &prefix,
                ]
                .map(str::to_owned)
                .to_vec()
            })
        })
        .collect();
    let delayed = keep_producing(&a, endpoint, producing.clone(), |round| {
        ["produce", "--topic", "reminders", "--count", "10", "--delay-ms", "3000", "--prefix", &format!("d{round}-")]
            .map(str::to_owned)
            .to_vec()
    });
    let transactions = keep_producing(&a, endpoint, producing.clone(), |round| {
        [
            "tx",
            "--topic",
            "payments",
            "--count",
            "10",
            "--decide",
            "even",
            "--checker",
            "even",
            "--prefix",
            &format!("t{round}-"),
        ]
        .map(str::to_owned)
        .to_vec()
    });

    // Chaos: cut links, kill the gateway.
    let kill_at: BTreeSet<u64> = {
        let mut at = BTreeSet::new();
        while (at.len() as u64) < kills.min(cuts.max(1)) {
            at.insert(dice.next() % cuts.max(1));
        }
        at
    };
    let started = Instant::now();
    for cut in 0..cuts {
        std::thread::sleep(Duration::from_millis(100 + dice.next() % 400));
        let peer = if dice.next().is_multiple_of(2) { a.ip } else { b.ip };
        let length = Duration::from_millis(100 + dice.next() % 9_900);
        gw.partition_from(peer);
        if kill_at.contains(&cut) {
            std::thread::sleep(length / 2);
            gateway.node.signal(libc::SIGKILL);
            gateway.node.wait_exit(Duration::from_secs(10));
            std::thread::sleep(length / 2);
            gw.heal();
            gateway = start_gateway();
        } else {
            std::thread::sleep(length);
            gw.heal();
        }
    }
    for _ in 0..kills.saturating_sub(kill_at.len() as u64) {
        gateway.node.signal(libc::SIGKILL);
        gateway.node.wait_exit(Duration::from_secs(10));
        gateway = start_gateway();
    }
    eprintln!("chaos over after {:?}", started.elapsed());
    producing.store(true, Ordering::Release);
    let normal = normal.join().expect("normal producers");
    let fifo: Vec<_> = fifo.into_iter().map(|p| p.join().expect("fifo producers")).collect();
    let delayed = delayed.join().expect("delay producers");
    let transactions = transactions.join().expect("transaction producers");

    let mut expected: BTreeSet<String> = BTreeSet::new();
    for run in normal.iter().chain(fifo.iter().flatten()).chain(&delayed) {
        expected.extend(ids(run, "sent"));
    }
    let committed: BTreeSet<String> = transactions.iter().flat_map(|r| ids(r, "committed")).collect();
    let rolled_back: BTreeSet<String> = transactions.iter().flat_map(|r| ids(r, "rolled_back")).collect();
    expected.extend(committed.iter().cloned());
    eprintln!(
        "acknowledged: {} ({} committed transactions, {} rolled back)",
        expected.len(),
        committed.len(),
        rolled_back.len()
    );
    assert!(expected.len() > 500, "the producers ran: {}", expected.len());

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let arrived: BTreeSet<String> =
            received.lock().expect("lock").iter().map(|(m, _)| m.message_id.clone()).collect();
        if expected.is_subset(&arrived) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Anything still to come (a second copy) has had time to.
    std::thread::sleep(Duration::from_secs(5));
    stop_reading.store(true, Ordering::Release);
    runtime.block_on(reader).expect("reader");
    let received = received.lock().expect("lock").clone();

    let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
    for (m, _) in &received {
        *copies.entry(&m.message_id).or_default() += 1;
    }
    let missing: Vec<_> = expected.iter().filter(|id| !copies.contains_key(id.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages never arrived: {missing:?}",
        missing.len(),
        expected.len()
    );
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "messages arrived more than once: {twice:?}");
    let leaked: Vec<_> = received.iter().filter(|(m, _)| rolled_back.contains(&m.message_id)).collect();
    assert!(leaked.is_empty(), "rolled-back transactions crossed: {leaked:?}");
    assert_eq!(received.len(), expected.len(), "nothing arrived that was not acknowledged");
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for (m, _) in received.iter().filter(|(m, _)| m.topic == "filings") {
        let body = String::from_utf8(m.body.clone()).expect("text");
        let (group, position) = body.split_once(':').expect("g<n>:<round>-<i>");
        let (round, i) = position.split_once('-').expect("<round>-<i>");
        let key = format!("{round}-{:06}", i.parse::<u32>().expect("index"));
        if let Some(previous) = last.get(group) {
            assert!(key > *previous, "group {group}: {key} after {previous}");
        }
        last.insert(group.to_owned(), key);
    }
    for (m, at) in received.iter().filter(|(m, _)| m.topic == "reminders") {
        let due = m.delivery_ms.expect("a delay message keeps its delivery time");
        assert!(*at >= due, "{} delivered at {at}, before its time {due}", m.message_id);
    }
    let view = gateway.view();
    eprintln!("gateway after the run: {view}");
    gateway.node.stop();
    drop(zone_b);
    drop(zone_a);
}
