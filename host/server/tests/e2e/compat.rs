//! Compatibility with the official RocketMQ 5 clients (Python, Node.js, Rust), each scenario run with
//! every client that has the feature. `docs/compatibility.md` names these tests.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::clients::{Client, Events, names};
use crate::support::Node;

const LIMIT: Duration = Duration::from_secs(90);

struct Fixture {
    node: Node,
    dir: tempfile::TempDir,
    client: Client,
}

impl Fixture {
    fn new(client: Client) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Node::start_for_clients(&dir.path().join("data"));
        Self { node, dir, client }
    }

    fn topic(&self, name: &str, kind: &str, queues: u32) {
        self.node.admin(&["topic", "create", name, "--type", kind, "--queues", &queues.to_string()]);
    }

    fn run(&self, args: &[&str]) -> Events {
        self.client.run(self.node.grpc, args, LIMIT)
    }

    fn produce(&self, topic: &str, count: usize, extra: &[&str]) -> Events {
        self.client.produce(self.node.grpc, topic, count, extra)
    }

    fn simple(&self, group: &str, topic: &str, expect: usize, timeout_s: u32, extra: &[&str]) -> Events {
        self.client.simple(self.node.grpc, group, topic, expect, timeout_s, extra)
    }

    /// Stops the node cleanly and starts it again on the same data.
    fn restart(mut self) -> Self {
        let node = self.node;
        node.stop();
        self.node = Node::start_for_clients(&self.dir.path().join("data"));
        self
    }
}

macro_rules! with_clients {
    ($scenario:ident: $($test:ident => $client:ident),+ $(,)?) => {
        mod $scenario {
            $(#[test] fn $test() { super::$scenario(crate::clients::Client::$client) })+
        }
    };
}

fn send_and_receive(client: Client) {
    let f = Fixture::new(client);
    f.topic("orders", "normal", 4);
    let sent = f.produce("orders", 5, &["--tag", "TagA", "--keys", "k1,k2", "--property", "region=north"]).sent();
    assert_eq!(sent.len(), 5);
    let got = f.simple("g", "orders", 5, 30, &[]);
    assert_eq!(got.sorted_bodies(), names("m", 5));
    for e in got.of("received") {
        assert_eq!(e["topic"], "orders");
        assert_eq!(e["tag"], "TagA");
        assert_eq!(e["keys"], serde_json::json!(["k1", "k2"]));
        assert_eq!(e["properties"]["region"], "north");
        assert_eq!(e["attempt"], 1);
        assert!(sent.contains(&e["id"].as_str().unwrap_or_default().to_owned()), "{e}");
    }
    assert_eq!(got.of("acked").len(), 5);
    assert!(f.simple("g", "orders", 1, 3, &[]).bodies().is_empty(), "acked messages do not come back");
    f.node.assert_called(&[
        "Telemetry",
        "QueryRoute",
        "SendMessage",
        "ReceiveMessage",
        "AckMessage",
        "NotifyClientTermination",
    ]);
}
with_clients!(send_and_receive: python => Python, node => Node, rust => Rust);

fn fifo_message_groups_are_delivered_in_order(client: Client) {
    let f = Fixture::new(client);
    f.topic("steps", "fifo", 4);
    f.node.admin(&["group", "create", "ordered", "--fifo"]);
    f.produce("steps", 5, &["--message-group", "A", "--prefix", "a"]);
    f.produce("steps", 5, &["--message-group", "B", "--prefix", "b"]);
    let got = f.simple("ordered", "steps", 10, 60, &["--batch", "32"]);
    let bodies = got.bodies();
    let a: Vec<&String> = bodies.iter().filter(|b| b.starts_with('a')).collect();
    let b: Vec<&String> = bodies.iter().filter(|b| b.starts_with('b')).collect();
    assert_eq!(a, ["a0", "a1", "a2", "a3", "a4"]);
    assert_eq!(b, ["b0", "b1", "b2", "b3", "b4"]);
    assert!(got.of("received").iter().all(|e| e["message_group"] == "A" || e["message_group"] == "B"));
}
with_clients!(fifo_message_groups_are_delivered_in_order: python => Python, node => Node, rust => Rust);

fn delay_messages_wait_for_their_time(client: Client) {
    let f = Fixture::new(client);
    f.topic("later", "delay", 2);
    let sent_at = now_ms();
    f.produce("later", 1, &["--delay-ms", "3000"]);
    let got = f.simple("g", "later", 1, 30, &[]);
    let e = got.of("received");
    assert_eq!(e.len(), 1);
    let received = e[0]["received_ms"].as_i64().unwrap_or(0);
    assert!(received - sent_at >= 2_900, "delivered after {} ms", received - sent_at);
    let delivery = e[0]["delivery_ms"].as_i64().unwrap_or(0);
    assert!((delivery - (sent_at + 3_000)).abs() < 2_000, "delivery timestamp {delivery} vs sent {sent_at}");
    // Python heartbeats a second after start and Rust at once; Node only after 10 s, past this test.
    if client != Client::Node {
        f.node.assert_called(&["Heartbeat"]);
    }
}
with_clients!(delay_messages_wait_for_their_time: python => Python, node => Node, rust => Rust);

fn tag_and_sql_filters_select_messages(client: Client) {
    let f = Fixture::new(client);
    f.topic("mixed", "normal", 2);
    f.produce("mixed", 2, &["--tag", "A", "--prefix", "a", "--property", "region=north"]);
    f.produce("mixed", 2, &["--tag", "B", "--prefix", "b", "--property", "region=south"]);
    // "Aa" and "BB" share a Java hash code: the broker must still tell them apart.
    f.produce("mixed", 1, &["--tag", "Aa", "--prefix", "aa"]);
    f.produce("mixed", 1, &["--tag", "BB", "--prefix", "bb"]);
    let tags = f.simple("by-tag", "mixed", 4, 6, &["--expr", "A || BB"]);
    assert_eq!(tags.sorted_bodies(), ["a0", "a1", "bb0"]);
    let sql = f.simple("by-sql", "mixed", 3, 6, &["--filter-type", "sql", "--expr", "region = 'south' OR TAGS = 'Aa'"]);
    assert_eq!(sql.sorted_bodies(), ["aa0", "b0", "b1"]);
}
with_clients!(tag_and_sql_filters_select_messages: python => Python, node => Node, rust => Rust);

fn unacked_messages_are_redelivered_then_dead_lettered(client: Client) {
    let f = Fixture::new(client);
    f.topic("jobs", "normal", 2);
    f.node.admin(&["group", "create", "workers", "--max-attempts", "2"]);
    f.produce("jobs", 1, &["--prefix", "job"]);
    let got = f.simple("workers", "jobs", 2, 30, &["--no-ack", "--invisible-s", "1"]);
    let attempts: Vec<i64> = got.of("received").iter().map(|e| e["attempt"].as_i64().unwrap_or(0)).collect();
    assert_eq!(attempts, [1, 2], "redelivered once after its invisible time, with the next attempt");
    let dead = f.simple("auditors", "%DLQ%workers", 1, 30, &[]);
    assert_eq!(dead.bodies(), ["job0"]);
    assert!(f.simple("workers", "jobs", 1, 3, &[]).bodies().is_empty(), "not delivered a third time");
}
with_clients!(unacked_messages_are_redelivered_then_dead_lettered: python => Python, node => Node, rust => Rust);

fn push_consumers_retry_failed_messages(client: Client) {
    let f = Fixture::new(client);
    f.topic("events", "normal", 4);
    f.produce("events", 3, &["--prefix", "e"]);
    let run = f
        .run(&[
            "push",
            "--group",
            "pushers",
            "--topic",
            "events",
            "--expect",
            "3",
            "--timeout-s",
            "60",
            "--fail-times",
            "1",
        ])
        .ok();
    let consumed: BTreeSet<&str> = run.of("consumed").iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(consumed.len(), 3);
    let retried = run.of("received").iter().filter(|e| e["attempt"].as_i64().unwrap_or(0) >= 2).count();
    assert!(retried >= 3, "every message failed once and came back: {:?}", run.events);
    f.node.assert_called(&["QueryAssignment", "ReceiveMessage", "AckMessage", "ChangeInvisibleDuration"]);
}
with_clients!(push_consumers_retry_failed_messages: python => Python, node => Node);

fn fifo_push_consumers_dead_letter_what_keeps_failing(client: Client) {
    let f = Fixture::new(client);
    f.topic("payments", "fifo", 2);
    f.node.admin(&["group", "create", "settlers", "--fifo", "--max-attempts", "2", "--retry-backoff-ms", "200,200"]);
    f.produce("payments", 1, &["--message-group", "acct-1", "--prefix", "pay"]);
    let run = f
        .run(&[
            "push",
            "--group",
            "settlers",
            "--topic",
            "payments",
            "--expect",
            "1",
            "--timeout-s",
            "6",
            "--fail-times",
            "100",
        ])
        .ok();
    assert!(run.of("consumed").is_empty());
    assert!(!run.of("received").is_empty());
    let dead = f.simple("auditors", "%DLQ%settlers", 1, 30, &[]);
    assert_eq!(dead.bodies(), ["pay0"], "the client gave up and the broker dead-lettered the message");
    f.node.assert_called(&["ForwardMessageToDeadLetterQueue"]);
}
with_clients!(fifo_push_consumers_dead_letter_what_keeps_failing: python => Python, node => Node);

fn clustering_splits_and_broadcasting_copies(client: Client) {
    let f = Fixture::new(client);
    f.topic("feed", "normal", 4);
    f.node.admin(&["group", "create", "everyone", "--broadcast"]);
    f.produce("feed", 8, &["--prefix", "f"]);
    let grpc = f.node.grpc;
    // Two consumers of one group, at the same time.
    let pair = |group: &'static str| {
        let runs: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(move || {
                    let args = ["simple", "--group", group, "--topic", "feed", "--expect", "8", "--timeout-s", "8"];
                    client.run(grpc, &args, LIMIT).ok().sorted_bodies()
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().expect("consumer")).collect::<Vec<_>>()
    };
    let split = pair("shared");
    let mut union: Vec<String> = split.concat();
    union.sort();
    assert_eq!(union, names("f", 8), "clustering: each message once across the group");
    for copy in pair("everyone") {
        assert_eq!(copy, names("f", 8), "broadcasting: every consumer gets every message");
    }
}
with_clients!(clustering_splits_and_broadcasting_copies: python => Python, node => Node, rust => Rust);

fn a_restart_between_send_and_receive_loses_nothing(client: Client) {
    let f = Fixture::new(client);
    f.topic("durable", "normal", 4);
    f.produce("durable", 6, &["--prefix", "d"]);
    let f = f.restart();
    assert_eq!(f.simple("g", "durable", 6, 30, &[]).sorted_bodies(), names("d", 6));
}
with_clients!(a_restart_between_send_and_receive_loses_nothing: python => Python, node => Node, rust => Rust);

/// Sends one message with `extra` arguments; `None` if it was accepted, else the error text (some
/// clients refuse before sending, some refuse to start at all, e.g. for an unknown topic).
fn refused(f: &Fixture, topic: &str, extra: &[&str]) -> Option<String> {
    let mut args = vec!["produce", "--topic", topic, "--count", "1"];
    args.extend_from_slice(extra);
    let run = f.run(&args);
    if let Some(fatal) = run.of("fatal").first() {
        return Some(fatal["error"].to_string());
    }
    run.ok().errors().into_values().next()
}

fn limits_hold_at_their_bound_and_fail_just_past(client: Client) {
    let f = Fixture::new(client);
    f.topic("t", "normal", 1);
    f.topic("ordered", "fifo", 1);
    f.topic("later", "delay", 1);
    let body = |n: usize| n.to_string();
    let cases: Vec<(&str, Vec<String>, Vec<String>)> = vec![
        (
            "body of 4 MiB",
            vec!["--body-bytes".into(), body(4 * 1024 * 1024)],
            vec!["--body-bytes".into(), body(4 * 1024 * 1024 + 1)],
        ),
        ("128 user properties", props(128), props(129)),
        (
            "16 KiB of properties",
            vec!["--property".into(), format!("k={}", "v".repeat(16 * 1024 - 1))],
            vec!["--property".into(), format!("k={}", "v".repeat(16 * 1024))],
        ),
    ];
    for (what, ok, bad) in &cases {
        let ok: Vec<&str> = ok.iter().map(String::as_str).collect();
        let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
        assert_eq!(refused(&f, "t", &ok), None, "{what} is allowed");
        assert!(refused(&f, "t", &bad).is_some(), "just past {what} is refused");
    }
    let group = |n: usize| "g".repeat(n);
    assert_eq!(refused(&f, "ordered", &["--message-group", &group(64)]), None);
    assert!(refused(&f, "ordered", &["--message-group", &group(65)]).is_some(), "message group over 64 bytes");
    assert_eq!(refused(&f, "later", &["--delay-ms", "86000000"]), None);
    assert!(refused(&f, "later", &["--delay-ms", "86500000"]).is_some(), "delivery more than a day ahead");
    assert!(refused(&f, "t", &["--tag", "a|b"]).is_some(), "tag with |");
    assert!(refused(&f, "t", &["--property", "UNIQ_KEY=x"]).is_some(), "system property name");
    assert!(refused(&f, "t", &["--property", "k=line\nbreak"]).is_some(), "control character");
    assert!(refused(&f, "t", &["--message-group", "g"]).is_some(), "a FIFO message on a normal topic");
    assert!(refused(&f, "missing", &[]).is_some(), "unknown topic");
}
with_clients!(limits_hold_at_their_bound_and_fail_just_past: python => Python, node => Node, rust => Rust);

fn props(n: usize) -> Vec<String> {
    (0..n).flat_map(|i| ["--property".to_owned(), format!("p{i}=v")]).collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn transactions_commit_and_roll_back(client: Client) {
    let f = Fixture::new(client);
    f.topic("pay", "transaction", 2);
    let run = f.run(&["tx", "--topic", "pay", "--count", "4", "--decide", "even"]).ok();
    assert_eq!(run.of("committed").len(), 2);
    assert_eq!(run.of("rolled_back").len(), 2);
    assert_eq!(f.simple("g", "pay", 4, 4, &[]).sorted_bodies(), ["m0", "m2"], "committed once each; rolled back never");
    f.node.assert_called(&["EndTransaction"]);
}
with_clients!(transactions_commit_and_roll_back: python => Python, node => Node, rust => Rust);

fn a_checker_answers_for_transactions_left_open(client: Client) {
    let f = Fixture::new(client);
    f.topic("pay", "transaction", 2);
    // Left open: the broker asks the producer's checker, which commits even-numbered ones only.
    let run = f
        .run(&[
            "tx",
            "--topic",
            "pay",
            "--count",
            "6",
            "--prefix",
            "e",
            "--decide",
            "none",
            "--checker",
            "even",
            "--stay-s",
            "4",
        ])
        .ok();
    let checked: BTreeSet<&str> = run.of("checked").iter().filter_map(|e| e["body"].as_str()).collect();
    assert_eq!(checked.len(), 6, "every open transaction was checked: {:?}", run.events);
    assert_eq!(f.simple("g", "pay", 6, 4, &[]).sorted_bodies(), ["e0", "e2", "e4"]);
    let rollbacks = f
        .run(&[
            "tx",
            "--topic",
            "pay",
            "--count",
            "2",
            "--prefix",
            "r",
            "--decide",
            "none",
            "--checker",
            "rollback",
            "--stay-s",
            "3",
        ])
        .ok();
    assert_eq!(rollbacks.of("checked").len(), 2);
    assert!(f.simple("g", "pay", 1, 3, &[]).bodies().is_empty(), "a checker's rollback is never delivered");
}
with_clients!(a_checker_answers_for_transactions_left_open: python => Python, node => Node, rust => Rust);

fn a_killed_producers_transactions_are_checked_through_a_new_instance(client: Client) {
    let f = Fixture::new(client);
    f.topic("pay", "transaction", 2);
    // The first producer sends three half messages and is killed before ending any of them.
    let mut first = client.spawn(
        f.node.grpc,
        &["tx", "--topic", "pay", "--count", "3", "--prefix", "k", "--decide", "none", "--stay-s", "60"],
    );
    let deadline = std::time::Instant::now() + LIMIT;
    while f.node.metric("ferrymq_transactions_pending") < 3.0 {
        assert!(std::time::Instant::now() < deadline, "the half messages never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The broker holds all three before the driver prints its last acknowledgement: kill it only
    // once it has said so, so the kill lands after the sends and before any end.
    first.wait_kind("sent", 3, LIMIT);
    assert_eq!(first.kill().sent().len(), 3);
    // A new producer instance of the same topic answers the checks. Checks come every 500 ms, but a
    // client's telemetry stream can take seconds to settle on a loaded machine: stay long enough.
    let second = f.run(&["tx", "--topic", "pay", "--count", "0", "--checker", "commit", "--stay-s", "10"]).ok();
    assert_eq!(second.of("checked").len(), 3, "{:?}", second.events);
    assert_eq!(f.simple("g", "pay", 3, 10, &[]).sorted_bodies(), ["k0", "k1", "k2"]);
}
with_clients!(a_killed_producers_transactions_are_checked_through_a_new_instance: python => Python, node => Node, rust => Rust);
