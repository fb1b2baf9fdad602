//! Where policy plugins plug into the broker. The broker defines these traits and never knows what
//! implements them (the server wires in WebAssembly plugins; tests can wire in anything).

use ferrymq_store::StoredRecord;

use crate::send::Outgoing;

/// One message a filter judges.
#[derive(Clone, Debug)]
pub struct FilterInput {
    pub record: StoredRecord,
    /// 1 on first delivery.
    pub attempt: u32,
}

/// What a filter decided for one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterVerdict {
    Deliver,
    /// Not for this group: the message is done for it.
    Withhold,
    /// Moved to the group's dead-letter topic (a failure policy).
    DeadLetter,
    /// Not decided (the filter failed, fail-closed): kept for a later receive, which asks again.
    Hold,
}

/// What becomes of a produced message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteVerdict {
    /// Store this (possibly changed) message.
    Accept(Box<Outgoing>),
    /// Store a copy in each of these topics instead.
    Redirect(Vec<String>),
    /// Refuse the send with this reason.
    Reject(String),
    /// Acknowledge the send and store nothing.
    Drop(String),
    /// Store it in the route's dead-letter topic, `%DLQ%route-<topic>` (a failure policy).
    DeadLetter(String),
}

/// Filters and routes bound to topics and groups.
pub trait Policies: Send + Sync {
    /// Whether a filter is bound to (`topic`, `group`); receives on it then run off the async workers.
    fn has_filter(&self, topic: &str, group: &str) -> bool;
    /// One verdict per message, for messages of `topic` that passed the group's TAG/SQL filter (a
    /// missing verdict means deliver). Called with no broker lock held; it may block.
    fn filter(&self, topic: &str, group: &str, messages: &[FilterInput]) -> Vec<FilterVerdict>;
    /// Whether a route is bound to `topic`.
    fn has_route(&self, topic: &str) -> bool;
    /// The verdict on one produced message. Called on the sending thread; it may block.
    fn route(&self, message: &Outgoing) -> RouteVerdict;
}

/// The dead-letter topic of the route bound to `topic`.
pub fn route_dlq_topic(topic: &str) -> String {
    format!("{}route-{topic}", crate::metadata::DLQ_TOPIC_PREFIX)
}
