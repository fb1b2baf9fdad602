//! Receive, ack, invisible time, redelivery, dead letters, FIFO order, broadcasting, filters, restarts.

use ferrymq_broker::delivery::{Delivered, DeliveryError, Receive};
use ferrymq_broker::filter::{Filter, SqlFilter};
use ferrymq_broker::metadata::{GroupConfig, TopicType, dlq_topic};

use crate::support::{Fixture, body, message, tag};

fn receive(
    f: &Fixture,
    group: &GroupConfig,
    client: &str,
    topic: &str,
    filter: &Filter,
    batch: usize,
) -> Vec<Delivered> {
    let request = Receive { group, client_id: client, topic, filter, batch, invisible_ms: 30_000, auto_renew: false };
    f.broker.delivery().receive(&request).expect("receive")
}

fn bodies(ds: &[Delivered]) -> Vec<String> {
    let mut out: Vec<String> = ds.iter().map(body).collect();
    out.sort();
    out
}

#[test]
fn each_message_is_delivered_once_per_group_and_an_ack_is_final() {
    let f = Fixture::new();
    f.topic("t", TopicType::Normal, 4);
    let g = f.group("g", |_| {});
    for i in 0..10 {
        f.send(message("t", &format!("m{i}")));
    }
    let got = receive(&f, &g, "c1", "t", &Filter::all(), 32);
    assert_eq!(bodies(&got), (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert!(got.iter().all(|d| d.delivery_attempt == 1));
    assert!(receive(&f, &g, "c2", "t", &Filter::all(), 32).is_empty(), "in flight: invisible to others");
    let other = f.group("other", |_| {});
    assert_eq!(receive(&f, &other, "c3", "t", &Filter::all(), 32).len(), 10, "another group gets its own copy");

    let delivery = f.broker.delivery();
    delivery.ack(&g, "c1", &got[0].receipt_handle).expect("ack");
    assert!(matches!(delivery.ack(&g, "c1", &got[0].receipt_handle), Err(DeliveryError::InvalidHandle)));
    for d in &got[1..] {
        delivery.ack(&g, "c1", &d.receipt_handle).expect("ack");
    }
    f.advance(60_000);
    f.revive();
    assert!(receive(&f, &g, "c1", "t", &Filter::all(), 32).is_empty(), "acked messages never come back");
}

#[test]
fn an_expired_message_comes_back_with_the_next_attempt_and_its_old_handle_is_void() {
    let f = Fixture::new();
    f.topic("t", TopicType::Normal, 2);
    let g = f.group("g", |_| {});
    f.send(message("t", "late"));
    let first = receive(&f, &g, "c", "t", &Filter::all(), 1);
    f.advance(30_001);
    assert!(
        matches!(f.broker.delivery().ack(&g, "c", &first[0].receipt_handle), Err(DeliveryError::InvalidHandle)),
        "expired"
    );
    f.revive();
    let second = receive(&f, &g, "c", "t", &Filter::all(), 1);
    assert_eq!(bodies(&second), ["late"]);
    assert_eq!(second[0].delivery_attempt, 2);
    assert_eq!(second[0].topic, "t");
    assert_eq!(
        second[0].record.decode().expect("intact").properties,
        first[0]
            .record
            .decode()
            .expect("intact")
            .properties
            .iter()
            .copied()
            .chain(b"RETRY_TOPIC\x01t\x02".iter().copied())
            .collect::<Vec<u8>>()
            .as_slice()
    );
}

#[test]
fn a_new_invisible_time_replaces_the_handle() {
    let f = Fixture::new();
    f.topic("t", TopicType::Normal, 1);
    let g = f.group("g", |_| {});
    f.send(message("t", "x"));
    let got = receive(&f, &g, "c", "t", &Filter::all(), 1);
    let delivery = f.broker.delivery();
    let renewed = delivery.change_invisible(&g, "c", &got[0].receipt_handle, 120_000).expect("change");
    assert_ne!(renewed, got[0].receipt_handle);
    assert!(matches!(delivery.ack(&g, "c", &got[0].receipt_handle), Err(DeliveryError::InvalidHandle)));
    f.advance(60_000);
    f.revive();
    assert!(receive(&f, &g, "c", "t", &Filter::all(), 1).is_empty(), "still invisible after the old deadline");
    delivery.ack(&g, "c", &renewed).expect("ack with the new handle");
}

#[test]
fn after_max_attempts_a_message_lands_in_the_dead_letter_topic() {
    let f = Fixture::new();
    f.topic("t", TopicType::Normal, 1);
    let g = f.group("g", |g| g.max_attempts = 3);
    f.send(message("t", "poison"));
    for attempt in 1..=3 {
        let got = receive(&f, &g, "c", "t", &Filter::all(), 1);
        assert_eq!(got.len(), 1, "attempt {attempt}");
        assert_eq!(got[0].delivery_attempt, attempt);
        f.advance(30_001);
        f.revive();
    }
    assert!(receive(&f, &g, "c", "t", &Filter::all(), 1).is_empty());
    let reader = f.group("dlq-reader", |_| {});
    let dead = receive(&f, &reader, "c", &dlq_topic("g"), &Filter::all(), 8);
    assert_eq!(bodies(&dead), ["poison"]);
    let props = dead[0].record.decode().expect("intact").properties.to_vec();
    assert_eq!(ferrymq_proto::properties::get(&props, "DLQ_ORIGIN_TOPIC"), Some("t"));
    assert_eq!(ferrymq_proto::properties::get(&props, "UNIQ_KEY"), Some("id-poison"));
}

#[test]
fn a_group_whose_retry_topic_would_not_fit_gets_its_messages_again_in_place_then_dead_letters_them() {
    let f = Fixture::new();
    // `%RETRY%<group>_<topic>` would be 7 + 100 + 1 + 40 = 148 bytes, over the 127 a topic may have.
    let topic = "t".repeat(40);
    let name = "g".repeat(100);
    f.topic(&topic, TopicType::Normal, 1);
    let g = f.group(&name, |g| g.max_attempts = 3);
    f.send(message(&topic, "kept"));
    for attempt in 1..=3 {
        let got = receive(&f, &g, "c", &topic, &Filter::all(), 1);
        assert_eq!(bodies(&got), ["kept"], "attempt {attempt} comes back");
        assert_eq!(got[0].delivery_attempt, attempt);
        f.advance(30_001);
        f.revive();
    }
    assert!(receive(&f, &g, "c", &topic, &Filter::all(), 1).is_empty(), "set aside after the last attempt");
    let reader = f.group("dlq-reader", |_| {});
    assert_eq!(bodies(&receive(&f, &reader, "c", &dlq_topic(&name), &Filter::all(), 8)), ["kept"]);
}

#[test]
fn a_group_name_too_long_for_its_dead_letter_topic_is_refused() {
    let f = Fixture::new();
    let longest = "g".repeat(ferrymq_broker::metadata::GROUP_NAME_BYTES_MAX);
    assert!(f.broker.metadata().put_group(GroupConfig { name: longest, ..GroupConfig::default() }).is_ok());
    let over = "g".repeat(ferrymq_broker::metadata::GROUP_NAME_BYTES_MAX + 1);
    let refused = f.broker.metadata().put_group(GroupConfig { name: over, ..GroupConfig::default() });
    assert!(refused.is_err(), "{refused:?}");
}

#[test]
fn fifo_groups_get_one_message_per_message_group_at_a_time_in_order() {
    let f = Fixture::new();
    f.topic("orders", TopicType::Fifo, 2);
    let g = f.group("g", |g| g.fifo = true);
    for i in 0..3 {
        for grp in ["a", "b"] {
            let mut m = message("orders", &format!("{grp}{i}"));
            m.message_group = Some(grp.into());
            f.send(m);
        }
    }
    let mut seen = Vec::new();
    for round in 0..3 {
        let got = receive(&f, &g, "c", "orders", &Filter::all(), 32);
        assert_eq!(bodies(&got), [format!("a{round}"), format!("b{round}")], "round {round}");
        assert!(receive(&f, &g, "c", "orders", &Filter::all(), 32).is_empty(), "the next of a group waits");
        if round == 1 {
            // Let a1 and b1 expire: they come back first, in order, with attempt 2.
            f.advance(30_001);
            f.revive();
            let again = receive(&f, &g, "c", "orders", &Filter::all(), 32);
            assert_eq!(bodies(&again), ["a1", "b1"]);
            assert!(again.iter().all(|d| d.delivery_attempt == 2));
            for d in &again {
                f.broker.delivery().ack(&g, "c", &d.receipt_handle).expect("ack");
            }
        } else {
            for d in &got {
                f.broker.delivery().ack(&g, "c", &d.receipt_handle).expect("ack");
            }
        }
        seen.extend(bodies(&got));
    }
    assert!(receive(&f, &g, "c", "orders", &Filter::all(), 32).is_empty());
}

#[test]
fn broadcast_groups_give_every_client_every_message() {
    let f = Fixture::new();
    f.topic("news", TopicType::Normal, 2);
    let g = f.group("all", |g| g.broadcast = true);
    for i in 0..4 {
        f.send(message("news", &format!("n{i}")));
    }
    for client in ["c1", "c2"] {
        assert_eq!(receive(&f, &g, client, "news", &Filter::all(), 32).len(), 4, "{client}");
    }
}

#[test]
fn tag_and_sql_filters_deliver_only_what_matches() {
    let f = Fixture::new();
    f.topic("t", TopicType::Normal, 1);
    for (b, t, region) in [("1", "A", "north"), ("2", "B", "south"), ("3", "BB", "north"), ("4", "Aa", "east")] {
        let mut m = message("t", b);
        m.tag = Some(t.into());
        m.user_properties = vec![("region".into(), region.into())];
        f.send(m);
    }
    let by_tag = f.group("tags", |_| {});
    assert_eq!(bodies(&receive(&f, &by_tag, "c", "t", &tag("A || BB"), 32)), ["1", "3"]);
    let by_sql = f.group("sql", |_| {});
    let sql = Filter::Sql(SqlFilter::parse("region = 'north' AND TAGS <> 'A'").expect("sql"));
    assert_eq!(bodies(&receive(&f, &by_sql, "c", "t", &sql, 32)), ["3"]);
    let bad = f.group("bad", |_| {});
    let numeric = Filter::Sql(SqlFilter::parse("region > 5").expect("sql"));
    assert!(receive(&f, &bad, "c", "t", &numeric, 32).is_empty());
    assert_eq!(f.broker.delivery().filter_errors(), 4, "every failed evaluation is counted");
}

#[test]
fn a_restart_loses_nothing_and_redelivers_what_was_in_flight() {
    let f = Fixture::new();
    f.topic("t", TopicType::Normal, 2);
    let g = f.group("g", |_| {});
    for i in 0..6 {
        f.send(message("t", &format!("m{i}")));
    }
    let got = receive(&f, &g, "c", "t", &Filter::all(), 3);
    for d in &got {
        f.broker.delivery().ack(&g, "c", &d.receipt_handle).expect("ack");
    }
    let in_flight = receive(&f, &g, "c", "t", &Filter::all(), 1);
    let f = f.restart();
    assert!(matches!(
        f.broker.delivery().ack(&g, "c", &in_flight[0].receipt_handle),
        Err(DeliveryError::InvalidHandle)
    ));
    let rest = receive(&f, &g, "c", "t", &Filter::all(), 32);
    let mut expected: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    expected.retain(|b| !bodies(&got).contains(b));
    assert_eq!(bodies(&rest), expected);
}

#[test]
fn auto_renewed_deliveries_stay_invisible_with_the_same_handle_until_the_client_is_released() {
    let f = Fixture::new();
    f.topic("t", TopicType::Normal, 1);
    let g = f.group("g", |_| {});
    f.send(message("t", "slow"));
    let filter = Filter::all();
    let request = Receive {
        group: &g,
        client_id: "push-1",
        topic: "t",
        filter: &filter,
        batch: 1,
        invisible_ms: 60_000,
        auto_renew: true,
    };
    let got = f.broker.delivery().receive(&request).expect("receive");
    for _ in 0..5 {
        f.advance(60_001);
        f.revive();
        assert!(receive(&f, &g, "other", "t", &Filter::all(), 1).is_empty(), "renewed, still invisible");
    }
    assert_eq!(f.broker.delivery().release_client("push-1"), 1);
    f.revive();
    let again = receive(&f, &g, "other", "t", &Filter::all(), 1);
    assert_eq!(bodies(&again), ["slow"]);
    assert_eq!(again[0].delivery_attempt, 2);
    assert!(matches!(f.broker.delivery().ack(&g, "push-1", &got[0].receipt_handle), Err(DeliveryError::InvalidHandle)));
}

#[test]
fn a_replica_stores_nothing_and_delivers_an_expired_message_again_in_place() {
    let f = Fixture::new();
    f.topic("t", TopicType::Normal, 1);
    let g = f.group("g", |_| {});
    f.send(message("t", "a"));
    f.send(message("t", "b"));
    f.broker.set_writable(false);
    assert!(!f.broker.is_writable() && f.broker.store().is_read_only());
    let first = receive(&f, &g, "c", "t", &Filter::all(), 1);
    assert_eq!(bodies(&first), ["a"]);
    let written = f.broker.store().stats().written;
    f.advance(30_001);
    f.revive();
    assert_eq!(f.broker.store().stats().written, written, "no retry copy on a replica");
    let again = receive(&f, &g, "c", "t", &Filter::all(), 32);
    assert_eq!(bodies(&again), ["a", "b"], "the expired message comes back from where it is");
    for d in &again {
        f.broker.delivery().ack(&g, "c", &d.receipt_handle).expect("ack");
    }
    let key = ferrymq_broker::offsets::OffsetKey { subscriber: "g".into(), topic: "t".into(), queue_id: 0 };
    assert_eq!(f.broker.delivery().offset(&key), Some(2));
    // Progress handed back from elsewhere only moves forward.
    assert!(!f.broker.delivery().advance_offset(key.clone(), 1));
    assert_eq!(f.broker.delivery().offset(&key), Some(2));
    f.broker.set_writable(true);
    f.send(message("t", "c"));
    assert!(f.broker.delivery().advance_offset(key.clone(), 3));
    assert!(receive(&f, &g, "c", "t", &Filter::all(), 32).is_empty(), "advanced past c");
}
