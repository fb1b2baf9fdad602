//! Seeded fuzz tests of a route plugin's changes applied to a message: a change to a name the broker
//! reserves is refused whole; any other change sets, removes and replaces exactly what it names, and
//! the changed message goes on to the send checks, which take or refuse it without panicking.
//!
//! Budgets and replay: `ferrymq_fuzzgen` (`FERRYMQ_FUZZ_SEED`, `FERRYMQ_FUZZ_CASES`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ferrymq_broker::metadata::{Metadata, TopicConfig, TopicType};
use ferrymq_broker::send::{Outgoing, SendLimits, place};
use ferrymq_fuzzgen::{Rng, cases};
use ferrymq_proto::properties::{self, RESERVED};

use super::hooks::changed;

/// A name or value a route might answer with: a plain word, the name of a property the message has,
/// one the broker reserves, or anything.
fn name(rng: &mut Rng, existing: &[(String, String)]) -> String {
    match rng.below(6) {
        0 if !existing.is_empty() => existing[rng.index(existing.len())].0.clone(),
        1 if rng.one_in(3) => (*rng.pick(RESERVED)).to_owned(),
        2 => rng.text(10),
        _ => rng.word(6),
    }
}

fn message(rng: &mut Rng) -> Outgoing {
    let mut user_properties: Vec<(String, String)> = Vec::new();
    for _ in 0..rng.size(8) {
        let name = rng.word(6);
        if !user_properties.iter().any(|(k, _)| *k == name) {
            user_properties.push((name, rng.word(10)));
        }
    }
    let n = 1 + rng.size(100);
    Outgoing {
        topic: "t".into(),
        tag: rng.bool().then(|| rng.word(8)),
        keys: (0..rng.size(3)).map(|_| rng.word(8)).collect(),
        message_id: format!("ID{}", rng.next_u64()),
        user_properties,
        body: rng.bytes(n),
        born_timestamp_ms: 1_764_000_000_000,
        ..Outgoing::default()
    }
}

#[test]
fn route_changes_apply_exactly_what_they_name_or_are_refused_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metadata = Metadata::open(dir.path()).expect("metadata");
    metadata.create_topic(TopicConfig { name: "t".into(), message_type: TopicType::Mixed, queues: 4 }).expect("topic");
    let limits = SendLimits::default();
    cases!(20_000, |rng| {
        let message = message(rng);
        let existing = message.user_properties.clone();
        let tag = rng.bool().then(|| if rng.one_in(4) { String::new() } else { name(rng, &[]) });
        let set: Vec<(String, String)> = (0..rng.size(6)).map(|_| (name(rng, &existing), rng.text(12))).collect();
        let remove: Vec<String> = (0..rng.size(6)).map(|_| name(rng, &existing)).collect();
        let body = rng.one_in(3).then(|| {
            let n = rng.size(100);
            rng.bytes(n)
        });
        let reserved = set.iter().map(|(k, _)| k).chain(&remove).find(|k| properties::is_reserved(k));
        let out = match changed(&message, tag.clone(), set.clone(), remove.clone(), body.clone()) {
            Err(reason) => {
                let name = reserved.expect("a change without reserved names was refused");
                assert!(reason.contains(&format!("{name:?}")), "{reason}");
                return;
            }
            Ok(out) => out,
        };
        assert!(reserved.is_none(), "a change to {reserved:?} was applied");
        let expected_tag = match tag {
            None => message.tag.clone(),
            Some(t) => (!t.is_empty()).then_some(t),
        };
        assert_eq!(out.tag, expected_tag);
        assert_eq!(out.body, body.unwrap_or_else(|| message.body.clone()));
        let untouched = Outgoing {
            tag: message.tag.clone(),
            body: message.body.clone(),
            user_properties: message.user_properties.clone(),
            ..out.clone()
        };
        assert_eq!(untouched, message, "only tag, body and user properties change");

        let value =
            |name: &str| out.user_properties.iter().filter(|(k, _)| k == name).map(|(_, v)| v).collect::<Vec<_>>();
        for (k, _) in &out.user_properties {
            assert_eq!(value(k).len(), 1, "{k:?} twice");
        }
        for (k, v) in &message.user_properties {
            let set_last = set.iter().rev().find(|(name, _)| name == k).map(|(_, v)| v);
            match (set_last, remove.contains(k)) {
                (Some(new), _) => assert_eq!(value(k), [new]),
                (None, true) => assert!(value(k).is_empty(), "{k:?} was removed"),
                (None, false) => assert_eq!(value(k), [v], "{k:?} was not changed"),
            }
        }
        for (k, _) in &set {
            let last = set.iter().rev().find(|(name, _)| name == k).map(|(_, v)| v);
            assert_eq!(value(k), last.into_iter().collect::<Vec<_>>(), "{k:?} was set");
        }
        let named = |k: &String| message.user_properties.iter().any(|(m, _)| m == k) || set.iter().any(|(s, _)| s == k);
        assert!(out.user_properties.iter().all(|(k, _)| named(k)), "a property came from nowhere");

        // The changed message is checked like any send: taken or refused, never a panic.
        let _ = place(&out, &metadata, &limits, 1_764_000_000_000, 0);
    });
}
