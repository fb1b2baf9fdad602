//! Transactions survive `kill -9` at random points: no committed message lost, no rolled-back message
//! delivered, no committed message delivered twice.
//!
//! Each round starts a transactional producer (official Python client) that sends eight half messages
//! and commits the even-numbered ones and rolls back the odd ones, kills the broker with SIGKILL after a
//! seeded random number of the producer's steps (before, between and during sends and outcomes),
//! restarts it, and lets a new
//! producer instance answer the check-backs by the same rule until nothing is pending. At the end a
//! fresh consumer group reads the topic: every even message whose send was acknowledged is there
//! exactly once, no odd message is there, and an unacknowledged even one is there at most once.
//!
//! `FERRYMQ_TX_KILLS` sets the number of rounds (default 50); `FERRYMQ_TX_SEED` the seed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferrymq_store::io::SeededRng;

use crate::clients::Client;
use crate::support::Node;

const PER_ROUND: usize = 8;

fn wait_no_pending(node: &Node, limit: Duration) {
    let deadline = Instant::now() + limit;
    while node.metric("ferrymq_transactions_pending") > 0.0 {
        assert!(Instant::now() < deadline, "transactions still pending after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn transactions_survive_kill_minus_nine_at_random_points() {
    let rounds: usize = std::env::var("FERRYMQ_TX_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(50);
    let seed: u64 = std::env::var("FERRYMQ_TX_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x7a11_c0de);
    eprintln!("{rounds} kill rounds, seed {seed} (FERRYMQ_TX_SEED replays)");
    let mut rng = SeededRng(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let limit = crate::compat_limit();
    let mut node = Node::start_for_clients(&data);
    node.admin(&["topic", "create", "pay", "--type", "transaction", "--queues", "2"]);

    // body -> whether its send was acknowledged
    let mut acknowledged: BTreeMap<String, bool> = BTreeMap::new();
    for round in 0..rounds {
        let prefix = format!("r{round}-");
        let count = PER_ROUND.to_string();
        let mut producer = Client::Python.spawn(
            node.grpc,
            &[
                "tx",
                "--topic",
                "pay",
                "--count",
                &count,
                "--prefix",
                &prefix,
                "--decide",
                "even",
                "--checker",
                "even",
                "--stay-s",
                "30",
            ],
        );
        // Kill the broker after a random number of the producer's steps (each send, then each commit or
        // rollback, prints one event), plus a few milliseconds: before, between and during them.
        let steps = rng.below(2 * PER_ROUND as u64 + 1) as usize;
        producer.wait_events(steps, limit);
        std::thread::sleep(Duration::from_millis(rng.below(30)));
        node.signal(libc::SIGKILL);
        node.wait_exit(Duration::from_secs(10));
        let events = producer.kill();
        for i in 0..PER_ROUND {
            acknowledged.entry(format!("{prefix}{i}")).or_insert(false);
        }
        for sent in events.of("sent") {
            if let Some(i) = sent["index"].as_u64() {
                acknowledged.insert(format!("{prefix}{i}"), true);
            }
        }
        // Restart; a new producer instance answers the checks until nothing is pending.
        node = Node::start_for_clients(&data);
        let checker = Client::Python
            .spawn(node.grpc, &["tx", "--topic", "pay", "--count", "0", "--checker", "even", "--stay-s", "60"]);
        wait_no_pending(&node, limit);
        checker.kill();
    }

    let expected = acknowledged.iter().filter(|(b, ack)| **ack && even(b)).count();
    let mut delivered: BTreeMap<String, usize> = BTreeMap::new();
    let read = Client::Python
        .run(
            node.grpc,
            &[
                "simple",
                "--group",
                "auditor",
                "--topic",
                "pay",
                "--expect",
                &(expected + PER_ROUND * rounds).to_string(),
                "--timeout-s",
                "8",
                "--batch",
                "32",
            ],
            limit,
        )
        .ok();
    for body in read.bodies() {
        *delivered.entry(body).or_default() += 1;
    }
    for (body, ack) in &acknowledged {
        let n = delivered.get(body).copied().unwrap_or(0);
        if even(body) {
            assert!(n <= 1, "seed {seed}: committed {body} delivered {n} times");
            if *ack {
                assert_eq!(n, 1, "seed {seed}: acknowledged and committed {body} was lost");
            }
        } else {
            assert_eq!(n, 0, "seed {seed}: rolled-back {body} was delivered");
        }
    }
    assert!(delivered.keys().all(|b| acknowledged.contains_key(b)), "seed {seed}: unknown messages delivered");
    let acked = acknowledged.values().filter(|a| **a).count();
    eprintln!(
        "{rounds} rounds: {acked} of {} sends acknowledged, {} committed messages delivered once",
        acknowledged.len(),
        delivered.len()
    );
    node.stop();
}

fn even(body: &str) -> bool {
    body.rsplit('-').next().and_then(|i| i.parse::<u64>().ok()).is_some_and(|i| i % 2 == 0)
}
