//! Filters and routes bound through the broker's policy hooks: what each verdict does to delivery and
//! storage, and that a slow filter holds up only its own receive.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrymq_broker::delivery::{Delivered, Receive};
use ferrymq_broker::filter::Filter;
use ferrymq_broker::hooks::{FilterInput, FilterVerdict, Policies, RouteVerdict, route_dlq_topic};
use ferrymq_broker::metadata::{GroupConfig, TopicType, dlq_topic};
use ferrymq_broker::send::{Outgoing, SendRejection};
use ferrymq_broker::{SendError, SendReceipt};
use ferrymq_store::StoredRecord;

use crate::support::{Fixture, body, message};

/// Decides by the first word of the body: `keep`, `skip`, `dead` for the filter bound to (`t`, `g`);
/// `hold` for the filter while `holding` is set; `change`, `split`, `refuse`, `drop`, `broken`, `stray` for the route bound to `t`. `slow` bodies make
/// the filter wait for the test's signal.
#[derive(Default)]
struct ByFirstWord {
    /// While set, `hold` bodies are held (the filter "fails", fail-closed); then they are delivered.
    holding: std::sync::atomic::AtomicBool,
    slow_gate: Mutex<Option<mpsc::Receiver<()>>>,
    slow_entered: Mutex<Option<mpsc::Sender<()>>>,
}

fn first_word(record: &StoredRecord) -> String {
    let body = record.decode().expect("intact").body.to_vec();
    String::from_utf8_lossy(&body).split_whitespace().next().unwrap_or_default().to_owned()
}

impl Policies for ByFirstWord {
    fn has_filter(&self, topic: &str, group: &str) -> bool {
        topic == "t" && group == "g"
    }

    fn filter(&self, _topic: &str, _group: &str, messages: &[FilterInput]) -> Vec<FilterVerdict> {
        messages
            .iter()
            .map(|m| match first_word(&m.record).as_str() {
                "skip" => FilterVerdict::Withhold,
                "dead" => FilterVerdict::DeadLetter,
                "hold" if self.holding.load(std::sync::atomic::Ordering::SeqCst) => FilterVerdict::Hold,
                "slow" => {
                    if let Some(entered) = self.slow_entered.lock().unwrap().take() {
                        entered.send(()).unwrap();
                    }
                    if let Some(gate) = self.slow_gate.lock().unwrap().take() {
                        gate.recv_timeout(Duration::from_secs(10)).expect("released");
                    }
                    FilterVerdict::Deliver
                }
                _ => FilterVerdict::Deliver,
            })
            .collect()
    }

    fn has_route(&self, topic: &str) -> bool {
        topic == "t"
    }

    fn route(&self, message: &Outgoing) -> RouteVerdict {
        let text = String::from_utf8_lossy(&message.body).into_owned();
        match text.split_whitespace().next().unwrap_or_default() {
            "change" => {
                let mut changed = message.clone();
                changed.tag = Some("routed".into());
                changed.user_properties.push(("checked".into(), "yes".into()));
                RouteVerdict::Accept(Box::new(changed))
            }
            "split" => RouteVerdict::Redirect(vec!["t-east".into(), "t-west".into()]),
            "stray" => RouteVerdict::Redirect(vec!["t-east".into(), "nowhere".into()]),
            "refuse" => RouteVerdict::Reject("no classification".into()),
            "drop" => RouteVerdict::Drop("spam".into()),
            "broken" => RouteVerdict::DeadLetter("plugin trapped".into()),
            _ => RouteVerdict::Accept(Box::new(message.clone())),
        }
    }
}

fn receive(f: &Fixture, group: &GroupConfig, topic: &str, batch: usize) -> Vec<Delivered> {
    let filter = Filter::all();
    let request =
        Receive { group, client_id: "c", topic, filter: &filter, batch, invisible_ms: 30_000, auto_renew: false };
    f.broker.delivery().receive(&request).expect("receive")
}

fn bodies(ds: &[Delivered]) -> Vec<String> {
    let mut out: Vec<String> = ds.iter().map(body).collect();
    out.sort();
    out
}

fn try_send(f: &Fixture, message: Outgoing) -> Result<SendReceipt, SendError> {
    let (tx, rx) = mpsc::channel();
    f.broker.send(&message, Box::new(move |r| tx.send(r).expect("send result")));
    let result = rx.recv().expect("callback");
    let written = f.broker.store().stats().written;
    assert!(f.broker.store().wait_dispatched(written, Duration::from_secs(10)));
    result
}

fn with_policies(f: &Fixture) -> Arc<ByFirstWord> {
    let policies = Arc::new(ByFirstWord::default());
    f.broker.set_policies(Some(policies.clone()));
    policies
}

#[test]
fn a_filter_delivers_withholds_and_dead_letters_and_looks_past_what_it_withholds() {
    let f = Fixture::new();
    f.topic("t", TopicType::Normal, 1);
    let g = f.group("g", |_| {});
    let other = f.group("other", |_| {});
    // Sent before the filter is bound: filters judge on receive, not on send.
    for i in 0..40 {
        f.send(message("t", &format!("skip {i}")));
    }
    f.send(message("t", "keep a"));
    f.send(message("t", "dead b"));
    f.send(message("t", "keep c"));
    with_policies(&f);

    let got = receive(&f, &g, "t", 2);
    assert_eq!(bodies(&got), ["keep a", "keep c"], "withheld messages are passed over within one receive");
    assert!(receive(&f, &g, "t", 32).is_empty(), "withheld and dead-lettered messages are done for the group");
    let reader = f.group("dlq-reader", |_| {});
    f.revive();
    assert_eq!(bodies(&receive(&f, &reader, &dlq_topic("g"), 8)), ["dead b"]);
    let unfiltered = receive(&f, &other, "t", 32).len() + receive(&f, &other, "t", 32).len();
    assert_eq!(unfiltered, 43, "a group without a filter gets everything");
}

#[test]
fn what_a_filter_passes_beyond_a_receive_is_delivered_by_the_next() {
    let f = Fixture::new();
    f.topic("t", TopicType::Normal, 1);
    let g = f.group("g", |_| {});
    with_policies(&f);
    for i in 0..10 {
        f.send(message("t", &format!("keep {i}")));
        f.send(message("t", &format!("skip {i}")));
    }
    let mut seen = Vec::new();
    for _ in 0..10 {
        let got = receive(&f, &g, "t", 3);
        assert!(got.len() <= 3, "a receive never hands out more than it asked for");
        seen.extend(got.iter().map(body));
    }
    seen.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("keep {i}")).collect();
    expected.sort();
    assert_eq!(seen, expected, "each passed message exactly once");
}

#[test]
fn a_held_message_waits_for_a_filter_that_answers_and_others_pass_it() {
    let f = Fixture::new();
    f.topic("t", TopicType::Normal, 1);
    let g = f.group("g", |_| {});
    let policies = with_policies(&f);
    policies.holding.store(true, std::sync::atomic::Ordering::SeqCst);
    f.send(message("t", "keep 1"));
    f.send(message("t", "hold 2"));
    f.send(message("t", "keep 3"));
    assert_eq!(bodies(&receive(&f, &g, "t", 8)), ["keep 1", "keep 3"]);
    for _ in 0..3 {
        assert!(receive(&f, &g, "t", 8).is_empty(), "held, not delivered, not lost");
    }
    policies.holding.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(bodies(&receive(&f, &g, "t", 8)), ["hold 2"]);
    assert!(receive(&f, &g, "t", 8).is_empty());
}

#[test]
fn a_filtered_fifo_group_keeps_message_group_order() {
    let f = Fixture::new();
    f.topic("t", TopicType::Fifo, 1);
    let g = f.group("g", |g| g.fifo = true);
    with_policies(&f);
    for body in ["keep 1", "skip 2", "keep 3", "keep 4"] {
        let mut m = message("t", body);
        m.message_group = Some("order-7".into());
        f.send(m);
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        let got = receive(&f, &g, "t", 32);
        assert!(got.len() <= 1, "one message of a message group in flight at a time");
        for d in &got {
            seen.push(body(d));
            f.broker.delivery().ack(&g, "c", &d.receipt_handle).expect("ack");
        }
    }
    assert_eq!(seen, ["keep 1", "keep 3", "keep 4"]);
}

#[test]
fn a_slow_filter_does_not_hold_up_other_receives() {
    let f = Fixture::new();
    f.topic("t", TopicType::Normal, 1);
    f.topic("u", TopicType::Normal, 1);
    let g = f.group("g", |_| {});
    let policies = with_policies(&f);
    let (release, gate) = mpsc::channel();
    let (entered_tx, entered) = mpsc::channel();
    *policies.slow_gate.lock().unwrap() = Some(gate);
    *policies.slow_entered.lock().unwrap() = Some(entered_tx);
    f.send(message("t", "slow 1"));
    f.send(message("u", "fast 1"));

    std::thread::scope(|scope| {
        let slow = scope.spawn(|| receive(&f, &g, "t", 8));
        entered.recv_timeout(Duration::from_secs(10)).expect("filter entered");
        // The same group on another topic, and another group on the same topic, are served meanwhile.
        assert_eq!(bodies(&receive(&f, &g, "u", 8)), ["fast 1"]);
        let other = f.group("other", |_| {});
        assert_eq!(bodies(&receive(&f, &other, "t", 8)), ["slow 1"]);
        assert!(receive(&f, &g, "t", 8).is_empty(), "a message being judged is not handed out twice");
        release.send(()).unwrap();
        assert_eq!(bodies(&slow.join().unwrap()), ["slow 1"]);
    });
}

#[test]
fn a_route_changes_redirects_refuses_drops_and_dead_letters() {
    let f = Fixture::new();
    for topic in ["t", "t-east", "t-west"] {
        f.topic(topic, TopicType::Normal, 2);
    }
    let reader = f.group("reader", |_| {});
    with_policies(&f);

    f.send(message("t", "plain"));
    let mut tagged = message("t", "change me");
    tagged.tag = Some("original".into());
    f.send(tagged);
    let stored = receive(&f, &reader, "t", 8);
    assert_eq!(bodies(&stored), ["change me", "plain"]);
    let changed = stored.iter().find(|d| body(d) == "change me").unwrap().record.decode().unwrap().properties.to_vec();
    assert_eq!(ferrymq_proto::properties::get(&changed, "TAGS"), Some("routed"));
    assert_eq!(ferrymq_proto::properties::get(&changed, "checked"), Some("yes"));

    f.send(message("t", "split it"));
    assert!(receive(&f, &reader, "t", 8).is_empty(), "a redirected message is not stored in its own topic");
    assert_eq!(bodies(&receive(&f, &reader, "t-east", 8)), ["split it"]);
    assert_eq!(bodies(&receive(&f, &reader, "t-west", 8)), ["split it"]);

    let written = f.broker.store().stats().written;
    match try_send(&f, message("t", "stray one")) {
        Err(SendError::Rejected(SendRejection::TopicNotFound(topic))) => assert_eq!(topic, "nowhere"),
        other => panic!("a redirect to a missing topic must fail: {other:?}"),
    }
    match try_send(&f, message("t", "refuse this")) {
        Err(SendError::Rejected(SendRejection::RefusedByPolicy(reason))) => assert_eq!(reason, "no classification"),
        other => panic!("expected a refusal: {other:?}"),
    }
    let receipt = try_send(&f, message("t", "drop this")).expect("a dropped message is acknowledged");
    assert_eq!(receipt.message_id, "id-drop this");
    assert_eq!(f.broker.dropped_by_policy(), 1);
    assert_eq!(f.broker.store().stats().written, written, "nothing stored for a stray, refused or dropped message");

    f.send(message("t", "broken input"));
    assert!(receive(&f, &reader, "t", 8).is_empty());
    assert_eq!(bodies(&receive(&f, &reader, &route_dlq_topic("t"), 8)), ["broken input"]);
}

#[test]
fn a_transactional_message_cannot_be_redirected() {
    let f = Fixture::new();
    f.topic("t", TopicType::Transaction, 1);
    with_policies(&f);
    let mut m = message("t", "split it");
    m.kind = Some(ferrymq_broker::metadata::MessageKind::Transaction);
    assert!(matches!(try_send(&f, m), Err(SendError::Rejected(SendRejection::RefusedByPolicy(_)))));
}
