//! De-duplication through gRPC: a producer that sends one message id several times — in separate
//! requests, twice in one request, and again after the broker restarted — gets the same receipt each
//! time, and a consumer receives the message once.

use std::time::{Duration, Instant};

use ferrymq_client::{Client, ClientOptions, Message, Receive, Received, SendReceipt};

use crate::support::{Node, run};

const TOPIC: &str = "payments";
const GROUP: &str = "ledger";
const ID: &str = "01A1B2C3D4E5F6000100000000DEDUPE01";

fn options() -> ClientOptions {
    ClientOptions { request_timeout: Duration::from_secs(5), ..ClientOptions::default() }
}

fn payment() -> Message {
    Message { message_id: Some(ID.into()), ..Message::new(TOPIC, b"pay 42".to_vec()) }
}

async fn send(client: &Client, messages: Vec<Message>) -> Vec<SendReceipt> {
    client.send(messages).await.expect("send")
}

/// Receives (and acknowledges) until a receive comes back empty after something arrived, or 20 s.
async fn receive_all(client: &Client) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got: Vec<Received> = Vec::new();
    while Instant::now() < deadline {
        let ask = Receive {
            group: GROUP,
            topic: TOPIC,
            tag_expression: "*",
            batch: 32,
            invisible: Duration::from_secs(30),
            long_polling: Duration::from_secs(1),
        };
        let batch = client.receive(&ask).await.expect("receive");
        if batch.is_empty() && !got.is_empty() {
            break;
        }
        if !batch.is_empty() {
            client.ack(GROUP, TOPIC, &batch).await.expect("ack");
        }
        got.extend(batch);
    }
    got
}

#[test]
fn a_message_id_sent_again_even_after_a_restart_is_stored_once_and_answered_with_one_receipt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node");
    let node = Node::start_for_clients(&data);
    // One queue: a second stored copy would have the next offset, so equal receipts prove one copy.
    node.admin(&["topic", "create", TOPIC, "--queues", "1"]);
    node.admin(&["group", "create", GROUP]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let grpc = node.grpc.to_string();
    let first = runtime.block_on(async {
        let client = Client::connect(&grpc, options()).await.expect("connect");
        let first = send(&client, vec![payment()]).await.remove(0);
        assert_eq!(first.message_id, ID);
        assert_eq!(send(&client, vec![payment()]).await, std::slice::from_ref(&first), "a second request");
        assert_eq!(send(&client, vec![payment(), payment()]).await, [first.clone(), first.clone()], "one request");
        first
    });
    node.stop();

    let node = Node::start_for_clients(&data);
    let grpc = node.grpc.to_string();
    runtime.block_on(async {
        let client = Client::connect(&grpc, options()).await.expect("connect");
        assert_eq!(
            send(&client, vec![payment()]).await,
            std::slice::from_ref(&first),
            "after a restart, from the store"
        );
        let received = receive_all(&client).await;
        let ids: Vec<&str> = received.iter().map(|m| m.message_id.as_str()).collect();
        assert_eq!(ids, [ID], "stored once");
        assert_eq!(received[0].queue_offset, first.offset);
    });
    node.stop();
}

#[test]
fn a_dedup_setting_outside_its_limits_is_refused_with_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (setting, expected) in [
        ("window_ms = 0", "dedup: window_ms = 0 is outside 1..=86400000"),
        ("window_messages = 20000001", "dedup: window_messages = 20000001 is outside 1..=20000000"),
    ] {
        let file = dir.path().join("ferrymq.toml");
        std::fs::write(&file, format!("[broker.dedup]\n{setting}\n")).expect("write config");
        let (code, _, stderr) = run(&["config", "check", file.to_str().expect("utf-8 path")]);
        assert_eq!(code, 2, "{setting}: {stderr}");
        assert!(stderr.contains(expected), "{setting}: {stderr}");
    }
}
