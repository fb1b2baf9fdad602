//! The three kinds of plugin as the broker calls them: typed inputs and outputs, with every answer
//! checked before it is believed.

use std::sync::Arc;

use ferrymq_proto::plugin_batch::{PluginMessage, encode_batch, encode_message};

use crate::bindings::filter::FilterPre;
use crate::bindings::route::RoutePre;
use crate::bindings::route::ferrymq::plugin::types::{Change, RouteDecision};
use crate::bindings::tx_check::TxCheckPre;
use crate::bindings::tx_check::ferrymq::plugin::types::Resolution;
use crate::engine::{Loaded, PluginEngine};
use crate::error::PluginError;
use crate::limits::PluginLimits;
use crate::plugin::{FaultKey, Grant, Plugin, PluginStats, bind, fault_key};
use crate::state::{BodySource, PluginState};

/// Most topics a route may redirect one message to.
pub const REDIRECT_TOPICS_MAX: usize = 16;

/// A filter bound to a (topic, group).
#[derive(Clone)]
pub struct FilterPlugin(Arc<Plugin<FilterPre<PluginState>>>);

impl FilterPlugin {
    pub fn new(
        engine: &PluginEngine,
        name: &str,
        loaded: &Loaded,
        limits: PluginLimits,
        grant: Grant,
    ) -> Result<Self, PluginError> {
        Ok(Self(bind(engine, name, loaded, limits, grant)?))
    }

    /// Which of `messages` to deliver. Bodies are not sent; `bodies` gives one when the plugin asks.
    pub fn filter(&self, messages: &[PluginMessage<'_>], bodies: BodySource) -> Result<Vec<bool>, PluginError> {
        let mut buf = Vec::with_capacity(messages.len() * 128);
        encode_batch(messages.iter().cloned(), false, &mut buf);
        let count = messages.len();
        self.0.call_on_worker(
            None,
            move |state| state.bodies = Some(bodies),
            move |store, filter| filter.call_filter(store, &buf),
            move |bits| unpack_verdicts(&bits, count),
        )
    }

    pub fn name(&self) -> &str {
        self.0.name()
    }

    pub fn stats(&self) -> PluginStats {
        self.0.stats()
    }

    /// Lets go of idle instances, as when a newer version takes over and this one only judges older
    /// messages now and then. (A superseded route or check is dropped whole instead.)
    pub fn release_idle(&self) {
        self.0.release_idle();
    }
}

/// A filter's answer for `count` messages: one bit per message, in order, least significant bit
/// first, in exactly `ceil(count / 8)` bytes (the bits past `count` are ignored).
pub(crate) fn unpack_verdicts(bits: &[u8], count: usize) -> Result<Vec<bool>, PluginError> {
    let expected = count.div_ceil(8);
    if bits.len() != expected {
        return Err(PluginError::BadOutput(format!(
            "answered {} bytes for {count} messages (expected {expected})",
            bits.len()
        )));
    }
    Ok((0..count).map(|i| bits[i / 8] & (1 << (i % 8)) != 0).collect())
}

/// What a route decided for one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteOutcome {
    Accept {
        tag: Option<String>,
        set_properties: Vec<(String, String)>,
        remove_properties: Vec<String>,
        body: Option<Vec<u8>>,
    },
    Redirect(Vec<String>),
    Reject(String),
    Drop(String),
}

/// A route bound to a topic.
#[derive(Clone)]
pub struct RoutePlugin(Arc<Plugin<RoutePre<PluginState>>>);

impl RoutePlugin {
    pub fn new(
        engine: &PluginEngine,
        name: &str,
        loaded: &Loaded,
        limits: PluginLimits,
        grant: Grant,
    ) -> Result<Self, PluginError> {
        Ok(Self(bind(engine, name, loaded, limits, grant)?))
    }

    pub fn route(&self, message: &PluginMessage<'_>) -> Result<RouteOutcome, PluginError> {
        self.route_keyed(message, None)
    }

    /// [`RoutePlugin::route`] for the message `message_id`: its faults count once toward quarantine
    /// however often its producer retries it, until a call succeeds (a retried poison message does
    /// not quarantine the plugin by itself; `failures_max` distinct failing messages in a row do).
    pub fn route_message(&self, message: &PluginMessage<'_>, message_id: &str) -> Result<RouteOutcome, PluginError> {
        self.route_keyed(message, fault_key(message_id))
    }

    fn route_keyed(&self, message: &PluginMessage<'_>, key: FaultKey) -> Result<RouteOutcome, PluginError> {
        let mut buf = Vec::with_capacity(256 + message.body.map_or(0, <[u8]>::len));
        buf.extend_from_slice(&1u32.to_le_bytes());
        encode_message(message, true, &mut buf);
        let max = self.0.limits().output_bytes_max;
        self.0.call_on_worker(
            key,
            |_| {},
            move |store, route| route.call_route(store, &buf),
            move |decision| check_decision(decision, max),
        )
    }

    pub fn name(&self) -> &str {
        self.0.name()
    }

    pub fn stats(&self) -> PluginStats {
        self.0.stats()
    }
}

/// A route's decision as the broker may act on it: a change, the topic names of a redirect or a
/// reason of at most `max` bytes, and 1 to [`REDIRECT_TOPICS_MAX`] topics for a redirect.
pub(crate) fn check_decision(decision: RouteDecision, max: usize) -> Result<RouteOutcome, PluginError> {
    let too_big =
        |what: &str, n: usize| PluginError::BadOutput(format!("{what} of {n} bytes is over the limit of {max}"));
    Ok(match decision {
        RouteDecision::Accept(Change { tag, set_properties, remove_properties, body }) => {
            let size = tag.as_ref().map_or(0, String::len)
                + set_properties.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
                + remove_properties.iter().map(String::len).sum::<usize>()
                + body.as_ref().map_or(0, Vec::len);
            if size > max {
                return Err(too_big("a change", size));
            }
            RouteOutcome::Accept { tag, set_properties, remove_properties, body }
        }
        RouteDecision::Redirect(topics) => {
            if topics.is_empty() || topics.len() > REDIRECT_TOPICS_MAX {
                return Err(PluginError::BadOutput(format!(
                    "redirected to {} topics (1 to {REDIRECT_TOPICS_MAX} allowed)",
                    topics.len()
                )));
            }
            // The names travel on into send errors and logs: they count against the limit too.
            let size = topics.iter().map(String::len).sum::<usize>();
            if size > max {
                return Err(too_big("redirect topic names", size));
            }
            RouteOutcome::Redirect(topics)
        }
        RouteDecision::Reject(reason) if reason.len() > max => return Err(too_big("a reason", reason.len())),
        RouteDecision::Reject(reason) => RouteOutcome::Reject(reason),
        RouteDecision::Drop(reason) if reason.len() > max => return Err(too_big("a reason", reason.len())),
        RouteDecision::Drop(reason) => RouteOutcome::Drop(reason),
    })
}

/// A transaction's outcome, as a tx-check plugin sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxOutcome {
    Commit,
    Rollback,
    Unknown,
}

/// A transaction check bound to a topic.
#[derive(Clone)]
pub struct TxCheckPlugin(Arc<Plugin<TxCheckPre<PluginState>>>);

impl TxCheckPlugin {
    pub fn new(
        engine: &PluginEngine,
        name: &str,
        loaded: &Loaded,
        limits: PluginLimits,
        grant: Grant,
    ) -> Result<Self, PluginError> {
        Ok(Self(bind(engine, name, loaded, limits, grant)?))
    }

    /// Asks the plugin about one transaction. Call from a thread that is not an async runtime's
    /// worker: outgoing HTTP blocks.
    pub fn check(&self, transaction_id: &str, message: &PluginMessage<'_>) -> Result<TxOutcome, PluginError> {
        let mut buf = Vec::with_capacity(256 + message.body.map_or(0, <[u8]>::len));
        buf.extend_from_slice(&1u32.to_le_bytes());
        encode_message(message, true, &mut buf);
        self.0.call(
            None,
            |_| {},
            |store, tx| tx.call_check(store, transaction_id, &buf),
            |resolution| {
                Ok(match resolution {
                    Resolution::Commit => TxOutcome::Commit,
                    Resolution::Rollback => TxOutcome::Rollback,
                    Resolution::Unknown => TxOutcome::Unknown,
                })
            },
        )
    }

    pub fn name(&self) -> &str {
        self.0.name()
    }

    pub fn stats(&self) -> PluginStats {
        self.0.stats()
    }
}
