//! `ferrymq admin` against a running node: topics, groups, lag, offset reset, message lookup.

use crate::clients::Client;
use crate::support::{Node, run};

#[test]
fn topics_and_groups_are_managed_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start_for_clients(&dir.path().join("data"));
    let created = node.admin(&["topic", "create", "orders", "--type", "fifo", "--queues", "4"]);
    assert!(created.contains("orders") && created.contains("fifo"), "{created}");
    node.admin(&["topic", "create", "news"]);
    let list = node.admin(&["topic", "list"]);
    assert!(list.contains("orders  fifo    4") && list.contains("news    normal  8"), "{list}");

    // A conflicting re-creation fails with the reason and a non-zero exit.
    let admin = node.admin.to_string();
    let (code, _, err) = run(&["admin", "--admin-addr", &admin, "topic", "create", "orders", "--type", "normal"]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");

    node.admin(&["group", "create", "billing", "--fifo", "--max-attempts", "5", "--retry-backoff-ms", "100,2000"]);
    let groups = node.admin(&["group", "list", "--json"]);
    let groups: serde_json::Value = serde_json::from_str(&groups).expect("json");
    assert_eq!(groups[0]["name"], "billing");
    assert_eq!(groups[0]["max_attempts"], 5);
    assert_eq!(groups[0]["fifo"], true);
    assert_eq!(groups[0]["retry_backoff_ms"], serde_json::json!([100, 2000]));

    node.admin(&["topic", "delete", "news"]);
    assert!(!node.admin(&["topic", "list"]).contains("news"));
    let (code, _, err) = run(&["admin", "--admin-addr", "127.0.0.1:1", "topic", "list"]);
    assert_eq!(code, 2);
    assert!(err.contains("is ferrymq running"), "{err}");
}

#[test]
fn lag_offset_reset_and_message_lookup_reflect_what_clients_did() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start_for_clients(&dir.path().join("data"));
    node.admin(&["topic", "create", "audit", "--queues", "1"]);
    let limit = crate::compat_limit();
    let sent = Client::Python
        .run(node.grpc, &["produce", "--topic", "audit", "--count", "4", "--keys", "case-7"], limit)
        .ok()
        .sent();
    let read = Client::Python
        .run(node.grpc, &["simple", "--group", "auditors", "--topic", "audit", "--expect", "4"], limit)
        .ok();
    assert_eq!(read.bodies().len(), 4);

    let lag: serde_json::Value =
        serde_json::from_str(&node.admin(&["consumer", "lag", "--group", "auditors", "--topic", "audit", "--json"]))
            .expect("json");
    assert_eq!(
        (lag[0]["committed"].as_u64(), lag[0]["max"].as_u64(), lag[0]["lag"].as_u64()),
        (Some(4), Some(4), Some(0))
    );

    let reset = node.admin(&["offset", "reset", "--group", "auditors", "--topic", "audit", "--to-time", "-1h"]);
    assert!(reset.contains("0         0"), "{reset}");
    let again = Client::Python
        .run(node.grpc, &["simple", "--group", "auditors", "--topic", "audit", "--expect", "4"], limit)
        .ok();
    assert_eq!(again.sorted_bodies(), crate::clients::names("m", 4), "a reset to an hour ago replays everything");

    let by_id: serde_json::Value =
        serde_json::from_str(&node.admin(&["message", "get", "--id", &sent[2], "--json"])).expect("json");
    assert_eq!(by_id[0]["body"], "m2");
    assert_eq!(by_id[0]["properties"]["UNIQ_KEY"], sent[2].as_str());
    let by_key: serde_json::Value =
        serde_json::from_str(&node.admin(&["message", "get", "--topic", "audit", "--key", "case-7", "--json"]))
            .expect("json");
    assert_eq!(by_key.as_array().map(Vec::len), Some(4));
}

#[test]
fn transactions_nobody_answers_are_discarded_and_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start_for_clients(&dir.path().join("data"));
    node.admin(&["topic", "create", "pay", "--type", "transaction", "--queues", "1"]);
    let limit = crate::compat_limit();
    let producer = Client::Python.spawn(
        node.grpc,
        &[
            "tx",
            "--topic",
            "pay",
            "--count",
            "2",
            "--prefix",
            "lost",
            "--decide",
            "none",
            "--checker",
            "unknown",
            "--stay-s",
            "30",
        ],
    );
    let deadline = std::time::Instant::now() + limit;
    while node.metric("ferrymq_transaction_discards_total") < 2.0 {
        assert!(std::time::Instant::now() < deadline, "never discarded");
        if node.metric("ferrymq_transactions_pending") == 2.0 {
            let pending = node.admin(&["tx", "pending"]);
            // Both may be discarded between the two reads; then the list is rightly empty.
            let discarded_meanwhile = node.metric("ferrymq_transaction_discards_total") > 0.0;
            assert!(pending.contains("pay") || discarded_meanwhile, "{pending}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let events = producer.kill();
    assert!(events.of("checked").len() >= 8, "four checks each, all answered unknown: {:?}", events.events);
    let discarded: serde_json::Value = serde_json::from_str(&node.admin(&["tx", "discarded", "--json"])).expect("json");
    let mut bodies: Vec<&str> = discarded.as_array().expect("list").iter().filter_map(|m| m["body"].as_str()).collect();
    bodies.sort_unstable();
    assert_eq!(bodies, ["lost0", "lost1"]);
    assert_eq!(discarded[0]["properties"]["REAL_TOPIC"], "pay");
    assert!(node.admin(&["tx", "pending", "--json"]).trim() == "[]");
}
