//! Seeded fuzz tests of the checks every plugin answer passes before the broker believes it: a
//! filter's bitset against its batch, a route's decision against its output limit.
//!
//! Budgets and replay: `ferrymq_fuzzgen` (`FERRYMQ_FUZZ_SEED`, `FERRYMQ_FUZZ_CASES`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ferrymq_fuzzgen::{Rng, cases};

use crate::bindings::route::ferrymq::plugin::types::{Change, RouteDecision};
use crate::calls::{REDIRECT_TOPICS_MAX, RouteOutcome, check_decision, unpack_verdicts};
use crate::error::PluginError;

#[test]
fn filter_answers_are_refused_unless_they_hold_exactly_one_bit_per_message() {
    cases!(50_000, |rng| {
        let count = rng.size(3000);
        let expected = count.div_ceil(8);
        let len = match rng.below(3) {
            0 => expected,
            1 => (expected + rng.below(3) as usize).saturating_sub(1),
            _ => rng.size(400),
        };
        let bits = rng.bytes(len);
        match unpack_verdicts(&bits, count) {
            Ok(keep) => {
                assert_eq!(len, expected);
                assert_eq!(keep.len(), count);
                for (i, keep) in keep.iter().enumerate() {
                    assert_eq!(*keep, bits[i / 8] >> (i % 8) & 1 == 1, "message {i}");
                }
            }
            Err(PluginError::BadOutput(_)) => assert_ne!(len, expected),
            Err(other) => panic!("{other:?}"),
        }
    });
}

fn string(rng: &mut Rng, max: usize) -> String {
    if rng.one_in(50) { "é".repeat(rng.size(max)) } else { rng.text(16) }
}

fn decision(rng: &mut Rng, max: usize) -> RouteDecision {
    match rng.below(4) {
        0 => RouteDecision::Accept(Change {
            tag: rng.bool().then(|| string(rng, max)),
            set_properties: (0..rng.size(8)).map(|_| (string(rng, max), string(rng, max))).collect(),
            remove_properties: (0..rng.size(8)).map(|_| string(rng, max)).collect(),
            body: rng.bool().then(|| {
                let n = rng.size(max + 2);
                rng.bytes(n)
            }),
        }),
        1 => RouteDecision::Redirect((0..rng.size(REDIRECT_TOPICS_MAX + 4)).map(|_| string(rng, max)).collect()),
        2 => RouteDecision::Reject(string(rng, max)),
        _ => RouteDecision::Drop(string(rng, max)),
    }
}

/// Bytes of the decision's variable parts, the way the limit counts them.
fn size(decision: &RouteDecision) -> usize {
    match decision {
        RouteDecision::Accept(change) => {
            change.tag.as_ref().map_or(0, String::len)
                + change.set_properties.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
                + change.remove_properties.iter().map(String::len).sum::<usize>()
                + change.body.as_ref().map_or(0, Vec::len)
        }
        RouteDecision::Redirect(topics) => topics.iter().map(String::len).sum(),
        RouteDecision::Reject(reason) | RouteDecision::Drop(reason) => reason.len(),
    }
}

#[test]
fn route_decisions_are_believed_whole_and_only_within_their_limits() {
    cases!(50_000, |rng| {
        let max = *rng.pick(&[0, 1, 16, 64, 300, 4096, 1 << 20]);
        let decision = decision(rng, max);
        let within = size(&decision) <= max;
        let fits = match &decision {
            RouteDecision::Redirect(topics) => within && (1..=REDIRECT_TOPICS_MAX).contains(&topics.len()),
            _ => within,
        };
        match (check_decision(decision.clone(), max), decision) {
            (Err(PluginError::BadOutput(_)), _) => assert!(!fits, "a decision within the limits was refused"),
            (Err(other), _) => panic!("{other:?}"),
            (Ok(outcome), decision) => {
                assert!(fits, "{outcome:?} is over the limit of {max}");
                let same = match (outcome, decision) {
                    (
                        RouteOutcome::Accept { tag, set_properties, remove_properties, body },
                        RouteDecision::Accept(c),
                    ) => {
                        (tag, set_properties, remove_properties, body)
                            == (c.tag, c.set_properties, c.remove_properties, c.body)
                    }
                    (RouteOutcome::Redirect(a), RouteDecision::Redirect(b)) => a == b,
                    (RouteOutcome::Reject(a), RouteDecision::Reject(b))
                    | (RouteOutcome::Drop(a), RouteDecision::Drop(b)) => a == b,
                    _ => false,
                };
                assert!(same, "the outcome is not the decision");
            }
        }
    });
}
