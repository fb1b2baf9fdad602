//! De-duplication by message id: a send whose id the topic received within the window is answered
//! with the first send's receipt and stored once — from memory, from the store's index after a
//! restart or an eviction, under concurrent sends, and for delay and transactional messages.

use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use ferrymq_broker::dedup::DedupConfig;
use ferrymq_broker::hooks::{FilterInput, FilterVerdict, Policies, RouteVerdict};
use ferrymq_broker::metadata::{MessageKind, TIMER_TOPIC, TopicType};
use ferrymq_broker::send::{Outgoing, SendRejection};
use ferrymq_broker::transaction::{HALF_TOPIC, Resolution};
use ferrymq_broker::{BrokerConfig, SendError, SendReceipt};

use crate::support::{Fixture, START_MS, message};

/// The default window, which these tests keep.
const WINDOW_MS: i64 = 120_000;

fn try_send(f: &Fixture, message: &Outgoing) -> Result<SendReceipt, SendError> {
    let (tx, rx) = mpsc::channel();
    f.broker.send(message, Box::new(move |r| tx.send(r).expect("send result")));
    let result = rx.recv_timeout(Duration::from_secs(10)).expect("answered");
    let written = f.broker.store().stats().written;
    assert!(f.broker.store().wait_dispatched(written, Duration::from_secs(10)));
    result
}

/// Messages stored in `topic`, all queues.
fn stored(f: &Fixture, topic: &str) -> u64 {
    f.broker.store().queues().iter().filter(|q| q.topic == topic).map(|q| q.max - q.min).sum()
}

/// A broker whose memory has seen a whole window, so that it answers without the store.
fn warmed() -> Fixture {
    let f = Fixture::new();
    f.advance(WINDOW_MS);
    f.topic("t", TopicType::Normal, 4);
    f
}

#[test]
fn a_second_send_of_an_id_gets_the_first_receipt_and_nothing_is_stored() {
    assert_eq!(DedupConfig::default().window_ms, WINDOW_MS as u64);
    let f = warmed();
    let m = message("t", "once");
    let first = f.send(m.clone());
    let second = f.send(m.clone());
    assert_eq!(second, first);
    assert!(first.log_end > first.log_offset);
    assert_eq!(stored(&f, "t"), 1);
    let stats = f.broker.dedup_stats();
    assert_eq!((stats.duplicates, stats.store_lookups), (1, 0), "answered from memory");
}

#[test]
fn an_id_sent_again_after_a_restart_is_found_in_the_store() {
    let f = warmed();
    let m = message("t", "durable");
    let first = f.send(m.clone());
    let f = f.restart();
    f.advance(1_000);
    assert_eq!(f.send(m.clone()), first);
    assert_eq!(stored(&f, "t"), 1);
    let stats = f.broker.dedup_stats();
    assert_eq!((stats.duplicates, stats.store_lookups), (1, 1));
    // Remembered now: the third send needs no lookup.
    assert_eq!(f.send(m), first);
    assert_eq!(f.broker.dedup_stats().store_lookups, 1);
}

#[test]
fn the_window_ends_window_ms_after_the_first_send_in_memory_and_in_the_store() {
    let f = warmed();
    let a = message("t", "a");
    let first = f.send(a.clone());
    f.advance(WINDOW_MS - 1);
    assert_eq!(f.send(a.clone()), first, "memory, last millisecond");
    f.advance(1);
    let again = f.send(a.clone());
    assert_ne!(again, first, "a send after the window is a new message");
    assert_eq!(stored(&f, "t"), 2);

    let b = message("t", "b");
    let first = f.send(b.clone());
    let f = f.restart();
    f.advance(WINDOW_MS - 1);
    assert_eq!(f.send(b.clone()), first, "store, last millisecond");
    let f = f.restart();
    f.advance(1);
    assert_ne!(f.send(b), first, "store, past the window");
    assert_eq!(stored(&f, "t"), 4);
}

#[test]
fn the_count_bounds_memory_only_and_the_store_still_finds_an_evicted_id_within_the_window() {
    let config = BrokerConfig {
        tick_ms: 3_600_000,
        dedup: DedupConfig { window_messages: 2, ..DedupConfig::default() },
        ..BrokerConfig::default()
    };
    let f = Fixture::with_config(config);
    f.advance(WINDOW_MS);
    f.topic("t", TopicType::Normal, 4);
    let first = f.send(message("t", "a"));
    f.send(message("t", "b"));
    f.send(message("t", "c"));
    assert_eq!(f.broker.dedup_stats().remembered, 2, "a was evicted");
    assert_eq!(f.send(message("t", "a")), first);
    assert_eq!(stored(&f, "t"), 3);
    let stats = f.broker.dedup_stats();
    assert_eq!((stats.duplicates, stats.store_lookups), (1, 1));
}

#[test]
fn concurrent_sends_of_one_id_are_stored_once_and_all_get_its_receipt() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 20;
    let f = warmed();
    for round in 0..ROUNDS {
        let m = message("t", &format!("race-{round}"));
        let start = Barrier::new(THREADS);
        let receipts: Vec<SendReceipt> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        try_send(&f, &m).expect("sent")
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().expect("sender")).collect()
        });
        assert!(receipts.iter().all(|r| *r == receipts[0]), "round {round}: {receipts:?}");
    }
    assert_eq!(stored(&f, "t"), ROUNDS as u64);
    assert_eq!(f.broker.dedup_stats().duplicates, ((THREADS - 1) * ROUNDS) as u64);
}

#[test]
fn the_same_id_on_another_topic_is_another_message() {
    let f = warmed();
    f.topic("u", TopicType::Normal, 4);
    let on_t = f.send(message("t", "shared-id"));
    let on_u = f.send(message("u", "shared-id"));
    assert_ne!(on_t.log_offset, on_u.log_offset);
    assert_eq!((stored(&f, "t"), stored(&f, "u")), (1, 1));
    assert_eq!(f.broker.dedup_stats().duplicates, 0);
}

#[test]
fn a_refused_first_send_leaves_the_id_free() {
    let f = warmed();
    let m = message("later", "refused-first");
    assert!(matches!(try_send(&f, &m), Err(SendError::Rejected(SendRejection::TopicNotFound(_)))));
    f.topic("later", TopicType::Normal, 1);
    let stored_now = try_send(&f, &m).expect("stored");
    assert!(stored_now.log_end > 0);
    assert_eq!(stored(&f, "later"), 1);
    assert_eq!(f.broker.dedup_stats().duplicates, 0);
}

/// A route on `t` that, for its first call, signals `entered`, waits for `release` and refuses the
/// message; later calls accept.
struct RefuseOnce {
    entered: Mutex<Option<mpsc::Sender<()>>>,
    release: Mutex<Option<mpsc::Receiver<()>>>,
    calls: std::sync::atomic::AtomicUsize,
}

impl Policies for RefuseOnce {
    fn has_filter(&self, _topic: &str, _group: &str) -> bool {
        false
    }

    fn filter(&self, _topic: &str, _group: &str, _messages: &[FilterInput]) -> Vec<FilterVerdict> {
        Vec::new()
    }

    fn has_route(&self, topic: &str) -> bool {
        topic == "t"
    }

    fn route(&self, message: &Outgoing) -> RouteVerdict {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let Some(release) = self.release.lock().unwrap().take() else {
            return RouteVerdict::Accept(Box::new(message.clone()));
        };
        if let Some(entered) = self.entered.lock().unwrap().take() {
            entered.send(()).unwrap();
        }
        release.recv_timeout(Duration::from_secs(10)).expect("released");
        RouteVerdict::Reject("not yet".into())
    }
}

#[test]
fn a_send_waiting_for_a_first_that_fails_gets_its_failure_and_the_next_one_is_stored() {
    let f = warmed();
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let route = Arc::new(RefuseOnce {
        entered: Mutex::new(Some(entered_tx)),
        release: Mutex::new(Some(release_rx)),
        calls: Default::default(),
    });
    f.broker.set_policies(Some(route.clone()));
    let m = message("t", "wait-for-me");
    std::thread::scope(|s| {
        let first = s.spawn(|| try_send(&f, &m));
        entered.recv_timeout(Duration::from_secs(10)).expect("the route runs");
        // The id is being decided: this send waits, off this thread, for the first one's outcome.
        let (tx, waiting) = mpsc::channel();
        f.broker.send(&m, Box::new(move |r| tx.send(r).expect("result")));
        assert!(waiting.try_recv().is_err(), "answered before the first send settled");
        release.send(()).expect("release");
        let refused = |r: Result<SendReceipt, SendError>| match r {
            Err(SendError::Shared(err)) => {
                assert!(matches!(*err, SendError::Rejected(SendRejection::RefusedByPolicy(_))), "{err}")
            }
            other => panic!("expected the shared refusal, got {other:?}"),
        };
        refused(first.join().expect("first sender"));
        refused(waiting.recv_timeout(Duration::from_secs(10)).expect("answered"));
    });
    let stored_now = try_send(&f, &m).expect("stored");
    assert!(stored_now.log_end > 0);
    assert_eq!(stored(&f, "t"), 1);
    assert_eq!(route.calls.load(std::sync::atomic::Ordering::SeqCst), 2, "the waiting send never reached the route");
    assert_eq!(try_send(&f, &m).expect("duplicate"), stored_now);
    assert_eq!(route.calls.load(std::sync::atomic::Ordering::SeqCst), 2, "a duplicate is answered before the route");
}

#[test]
fn a_delay_message_is_held_while_it_waits_and_after_the_timer_delivered_it_also_across_a_restart() {
    let f = warmed();
    f.topic("d", TopicType::Delay, 2);
    let mut m = message("d", "later");
    m.delivery_ms = Some(START_MS + WINDOW_MS + 10_000);
    let first = f.send(m.clone());
    assert_eq!(f.send(m.clone()), first, "while it waits in the timer topic");
    assert_eq!((stored(&f, TIMER_TOPIC), stored(&f, "d")), (1, 0));

    f.advance(10_000);
    assert_eq!(f.broker.timer().tick(), 1);
    let written = f.broker.store().stats().written;
    assert!(f.broker.store().wait_dispatched(written, Duration::from_secs(10)));
    assert_eq!(stored(&f, "d"), 1);
    assert_eq!(f.send(m.clone()), first, "once delivered");

    // From the index: the receipt is the timer record's, as the first answer was, not the delivery's.
    let f = f.restart();
    assert_eq!(f.send(m.clone()), first);
    assert_eq!((stored(&f, TIMER_TOPIC), stored(&f, "d")), (1, 1));
}

#[test]
fn transactional_sends_match_their_half_message_and_plain_sends_only_plain_ones() {
    let f = warmed();
    f.topic("m", TopicType::Mixed, 2);
    let mut half = message("m", "tx");
    half.kind = Some(MessageKind::Transaction);
    let first = f.send(half.clone());
    assert_eq!(first.transaction_id.as_deref(), Some(half.message_id.as_str()));
    assert_eq!(f.send(half.clone()), first);
    assert_eq!((stored(&f, HALF_TOPIC), f.broker.transactions().stats().pending), (1, 1));

    // The half message is not the message: a plain send of the id is stored, before the commit...
    let plain = message("m", "tx");
    let plain_first = f.send(plain.clone());
    f.broker.transactions().end(&half.message_id, Resolution::Commit).expect("commit");
    let written = f.broker.store().stats().written;
    assert!(f.broker.store().wait_dispatched(written, Duration::from_secs(10)));
    // ...and the committed message is the transaction's, not a plain send.
    assert_eq!(stored(&f, "m"), 2, "the plain message and the committed one");
    assert_eq!(f.send(plain.clone()), plain_first);
    assert_eq!(f.send(half.clone()), first, "a decided transaction is still answered");

    // The store tells them apart the same way.
    let f = f.restart();
    assert_eq!(f.send(half), first);
    assert_eq!(f.send(plain), plain_first);
    assert_eq!((stored(&f, HALF_TOPIC), stored(&f, "m")), (1, 2));
}

#[test]
fn with_dedup_off_every_send_is_stored() {
    let config = BrokerConfig {
        tick_ms: 3_600_000,
        dedup: DedupConfig { enabled: false, ..DedupConfig::default() },
        ..BrokerConfig::default()
    };
    let f = Fixture::with_config(config);
    f.topic("t", TopicType::Normal, 4);
    let m = message("t", "twice");
    assert_ne!(f.send(m.clone()), f.send(m));
    assert_eq!(stored(&f, "t"), 2);
    assert_eq!(f.broker.dedup_stats(), Default::default());
}
