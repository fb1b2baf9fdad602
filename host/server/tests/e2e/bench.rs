//! `ferrymq bench` against a real node: every message it claims to have sent is stored once and every
//! message it claims to have received was acknowledged; bad flags and missing topics are clear errors.

use serde_json::Value;

use crate::support::{Node, ferrymq};

fn bench(node: &Node, args: &[&str]) -> (i32, Value, String) {
    let out = ferrymq()
        .arg("bench")
        .args(args)
        .args(["--addr", &node.grpc.to_string(), "--json", "--quiet", "--warmup", "0s", "--long-polling", "1s"])
        .output()
        .expect("run ferrymq bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), report, stderr)
}

fn count(report: &Value, field: &str) -> u64 {
    report[field].as_u64().unwrap_or_else(|| panic!("{field} in {report}"))
}

/// Messages stored in topic `bench`, and how many group `bench` has yet to consume.
fn stored_and_lag(node: &Node) -> (u64, u64) {
    let queues: Value =
        serde_json::from_str(&node.admin(&["consumer", "lag", "--group", "bench", "--topic", "bench", "--json"]))
            .expect("lag JSON");
    let sum = |field: &str| queues.as_array().expect("queues").iter().map(|q| q[field].as_u64().expect(field)).sum();
    (sum("max"), sum("lag"))
}

#[test]
fn bench_sends_receives_and_acknowledges_exactly_what_it_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("data"), &[]);
    node.admin(&["topic", "create", "bench", "--type", "normal", "--queues", "4"]);
    node.admin(&["group", "create", "bench"]);

    let (code, produced, stderr) =
        bench(&node, &["produce", "--count", "2000", "--producers", "4", "--batch", "50", "--size", "512"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(count(&produced, "sent"), 2000);
    assert_eq!(count(&produced, "errors"), 0);
    assert_eq!(produced["send_latency_us"]["samples"].as_u64(), Some(2000), "one latency sample per message");

    let (code, consumed, stderr) = bench(&node, &["consume", "--count", "2000", "--consumers", "2"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(count(&consumed, "received"), 2000);

    // Everything was acknowledged: nothing is left to receive, not even after the invisible time.
    let (code, again, stderr) = bench(&node, &["consume", "--duration", "2s", "--consumers", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(count(&again, "received"), 0, "acknowledged messages came back: {again}");
    assert_eq!(stored_and_lag(&node), (2000, 0), "stored what bench sent, and all of it acknowledged");

    let (code, e2e, stderr) = bench(
        &node,
        &["e2e", "--count", "600", "--rate", "1500", "--producers", "2", "--batch", "10", "--consumers", "2"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(count(&e2e, "sent"), 600);
    assert_eq!(count(&e2e, "received"), 600);
    assert_eq!(e2e["e2e_latency_us"]["samples"].as_u64(), Some(600));
    assert!(e2e["lag"]["samples"].is_array(), "e2e samples the lag: {e2e}");
    node.stop();
}

#[test]
fn bench_refuses_bad_flags_and_missing_topics_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("data"), &[]);

    let (code, _, stderr) = bench(&node, &["produce", "--size", "4", "--count", "1"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--size 4"), "{stderr}");

    let (code, _, stderr) = bench(&node, &["produce", "--topic", "nowhere", "--count", "1"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("TOPIC_NOT_FOUND"), "{stderr}");

    let out = ferrymq().args(["bench", "produce", "--addr", "127.0.0.1:1", "--count", "1"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the broker at 127.0.0.1:1"));
    node.stop();
}
