//! Transactions: commit and rollback, check-back through a checker or a producer, discard, restart.

use std::sync::{Arc, Mutex};

use ferrymq_broker::delivery::Receive;
use ferrymq_broker::filter::Filter;
use ferrymq_broker::metadata::{MessageKind, TopicType};
use ferrymq_broker::send::Outgoing;
use ferrymq_broker::transaction::{DISCARD_TOPIC, Resolution, TransactionChecker, TransactionError, TransactionProber};
use ferrymq_proto::record::RecordRef;
use ferrymq_store::StoredRecord;

use crate::support::{Fixture, body, message};

fn tx(body: &str) -> Outgoing {
    Outgoing { kind: Some(MessageKind::Transaction), ..message("pay", body) }
}

/// Bodies a fresh group can read from `topic`, sorted.
fn readable(f: &Fixture, group: &str, topic: &str) -> Vec<String> {
    let g = f.group(group, |_| {});
    let filter = Filter::all();
    let r = Receive {
        group: &g,
        client_id: "c",
        topic,
        filter: &filter,
        batch: 32,
        invisible_ms: 60_000,
        auto_renew: false,
    };
    let mut got: Vec<String> = f.broker.delivery().receive(&r).expect("receive").iter().map(body).collect();
    got.sort();
    got
}

fn settle(f: &Fixture) {
    let written = f.broker.store().stats().written;
    assert!(f.broker.store().wait_dispatched(written, std::time::Duration::from_secs(5)));
}

fn setup() -> Fixture {
    let f = Fixture::new();
    f.topic("pay", TopicType::Transaction, 2);
    f
}

#[test]
fn a_half_message_is_invisible_until_committed_and_a_rollback_is_never_delivered() {
    let f = setup();
    let commit = f.send(tx("commit-me")).transaction_id.expect("transaction id");
    let rollback = f.send(tx("roll-me-back")).transaction_id.expect("transaction id");
    assert!(readable(&f, "early", "pay").is_empty(), "half messages are invisible");

    let transactions = f.broker.transactions();
    transactions.end(&commit, Resolution::Commit).expect("commit");
    transactions.end(&rollback, Resolution::Rollback).expect("rollback");
    // Ending again (a client retry, or a check answered late) changes nothing.
    transactions.end(&commit, Resolution::Commit).expect("second commit is a no-op");
    transactions.end(&rollback, Resolution::Commit).expect("late commit after rollback is a no-op");
    assert!(matches!(
        transactions.end("never-sent", Resolution::Commit),
        Err(TransactionError::NotFound(id)) if id == "never-sent"
    ));
    settle(&f);
    assert_eq!(readable(&f, "late", "pay"), ["commit-me"]);
    let stats = transactions.stats();
    assert_eq!((stats.pending, stats.commits, stats.rollbacks), (0, 1, 1));
}

/// Records who the broker asked; answers as if a producer were connected. Not a network fake: it
/// stands where the gRPC front end would send a RecoverOrphanedTransactionCommand.
#[derive(Default)]
struct RecordingProber {
    asked: Mutex<Vec<(String, String)>>,
}

impl TransactionProber for RecordingProber {
    fn probe(&self, topic: &str, transaction_id: &str, _half: &StoredRecord) -> bool {
        self.asked.lock().unwrap().push((topic.to_owned(), transaction_id.to_owned()));
        true
    }
}

/// Commits transactions whose body ends in an even digit, rolls back the others.
struct EvenCommits;

impl TransactionChecker for EvenCommits {
    fn check(&self, _topic: &str, _transaction_id: &str, half: &RecordRef<'_>) -> Option<Resolution> {
        let last = half.body.last().copied().unwrap_or(b'0');
        Some(if (last - b'0').is_multiple_of(2) { Resolution::Commit } else { Resolution::Rollback })
    }
}

#[test]
fn orphaned_transactions_are_asked_about_after_the_immunity_time_then_every_interval() {
    let f = setup();
    let prober = Arc::new(RecordingProber::default());
    f.broker.set_transaction_hooks(None, Some(prober.clone()));
    let id = f.send(tx("orphan")).transaction_id.expect("id");
    let transactions = f.broker.transactions();

    f.advance(5_000);
    assert_eq!(transactions.check(None, Some(prober.as_ref())), 0, "still immune at 5 s");
    f.advance(1_001);
    assert_eq!(transactions.check(None, Some(prober.as_ref())), 1);
    assert_eq!(prober.asked.lock().unwrap().as_slice(), [("pay".to_owned(), id.clone())]);
    f.advance(29_000);
    assert_eq!(transactions.check(None, Some(prober.as_ref())), 0, "next check waits the interval");
    f.advance(1_000);
    assert_eq!(transactions.check(None, Some(prober.as_ref())), 1);
    assert_eq!(transactions.stats().checks_sent, 2);
    // The producer finally answers.
    transactions.end(&id, Resolution::Commit).expect("commit");
    settle(&f);
    assert_eq!(readable(&f, "g", "pay"), ["orphan"]);
}

#[test]
fn a_checker_decides_before_any_producer_is_asked() {
    let f = setup();
    let prober = Arc::new(RecordingProber::default());
    for i in 0..6 {
        f.send(tx(&format!("t{i}")));
    }
    f.advance(6_001);
    f.broker.transactions().check(Some(&EvenCommits), Some(prober.as_ref()));
    settle(&f);
    assert_eq!(readable(&f, "g", "pay"), ["t0", "t2", "t4"]);
    assert!(prober.asked.lock().unwrap().is_empty(), "the checker answered; no producer was asked");
    assert_eq!(f.broker.transactions().stats().pending, 0);
}

#[test]
fn a_transaction_nobody_answers_is_discarded_after_the_last_check() {
    let f = setup();
    f.send(tx("forgotten"));
    let transactions = f.broker.transactions();
    f.advance(6_001);
    for _ in 0..15 {
        assert_eq!(transactions.check(None, None), 1);
        f.advance(30_000);
    }
    assert_eq!(transactions.stats().pending, 1, "fifteen checks, still pending");
    transactions.check(None, None);
    settle(&f);
    assert_eq!(transactions.stats().discards, 1);
    assert_eq!(transactions.stats().pending, 0);
    assert!(readable(&f, "g", "pay").is_empty());
    let store = f.broker.store();
    let entry = store.read_queue(DISCARD_TOPIC, 0, 0, 1)[0];
    let stored = store.record(entry.offset, entry.len).expect("record");
    let rec = stored.decode().expect("intact");
    assert_eq!(rec.body, b"forgotten");
    assert_eq!(ferrymq_proto::properties::get(rec.properties, "REAL_TOPIC"), Some("pay"));
}

#[test]
fn pending_transactions_and_their_checks_survive_a_restart_and_resolved_ones_stay_resolved() {
    let f = setup();
    let done = f.send(tx("done")).transaction_id.expect("id");
    let open = f.send(tx("open")).transaction_id.expect("id");
    f.broker.transactions().end(&done, Resolution::Commit).expect("commit");
    f.advance(6_001);
    f.broker.transactions().check(None, None);
    let f = f.restart();
    let pending = f.broker.transactions().pending();
    assert_eq!(pending, [(open.clone(), "pay".to_owned(), 1)], "one pending, its first check remembered");
    f.broker.transactions().end(&done, Resolution::Commit).expect_err("a committed transaction is not pending again");
    f.broker.transactions().end(&open, Resolution::Commit).expect("commit after restart");
    settle(&f);
    assert_eq!(readable(&f, "g", "pay"), ["done", "open"], "each committed message once");
}
