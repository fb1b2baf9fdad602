//! Delay messages wait until their delivery time, also across a restart.

use ferrymq_broker::delivery::Receive;
use ferrymq_broker::filter::Filter;
use ferrymq_broker::metadata::TopicType;

use crate::support::{Fixture, START_MS, body, message};

#[test]
fn a_delayed_message_is_delivered_once_due_even_after_a_restart() {
    let f = Fixture::new();
    f.topic("later", TopicType::Delay, 2);
    let g = f.group("g", |_| {});
    let mut m = message("later", "wake up");
    m.delivery_ms = Some(START_MS + 10_000);
    f.send(m);
    let mut now = message("later", "now");
    now.delivery_ms = Some(START_MS - 1);
    f.send(now);

    // Receives and acknowledges everything available.
    let request = |f: &Fixture| {
        let filter = Filter::all();
        let r = Receive {
            group: &g,
            client_id: "c",
            topic: "later",
            filter: &filter,
            batch: 32,
            invisible_ms: 30_000,
            auto_renew: false,
        };
        let got = f.broker.delivery().receive(&r).expect("receive");
        for d in &got {
            f.broker.delivery().ack(&g, "c", &d.receipt_handle).expect("ack");
        }
        got.iter().map(body).collect::<Vec<_>>()
    };
    f.broker.timer().tick();
    assert_eq!(request(&f), ["now"], "a past delivery time is delivered at once");
    assert_eq!(f.broker.timer().pending(), 1);

    let f = f.restart();
    f.broker.timer().tick();
    assert!(request(&f).is_empty(), "not yet due");
    f.advance(10_000);
    assert_eq!(f.broker.timer().tick(), 1);
    let written = f.broker.store().stats().written;
    assert!(f.broker.store().wait_dispatched(written, std::time::Duration::from_secs(5)));
    assert_eq!(request(&f), ["wake up"]);
    assert_eq!(f.broker.timer().tick(), 0, "delivered once");
}
