//! The plugins bound to this broker, as the broker's policy hooks: filters on receive and pull,
//! routes on send, tx-checks before any producer is asked.
//!
//! Every failure of a plugin call (trap, limit, bad answer, quarantine, no free instance) becomes the
//! binding's failure policy; nothing here panics or blocks an async worker (callers run plugins on
//! blocking threads).

use ferrymq_broker::hooks::{FilterInput, FilterVerdict, Policies, RouteVerdict};
use ferrymq_broker::send::Outgoing;
use ferrymq_broker::transaction::{Resolution, TransactionChecker};
use ferrymq_plugin::{BodySource, FilterPlugin, PluginError, RouteOutcome, RoutePlugin, TxOutcome};
use ferrymq_proto::plugin_batch::PluginMessage;
use ferrymq_proto::properties::{self, KEYS, TAGS};
use ferrymq_proto::record::RecordRef;
use ferrymq_proto::throttle::Throttle;

use crate::config::FailurePolicy;

use super::PluginHost;
use super::bindings::BindingInfo;

/// Logs a failed call the plugin runtime has not logged already (faults are logged there).
fn note_failure(info: &BindingInfo, err: &PluginError) {
    if !err.is_plugin_fault() {
        tracing::debug!(plugin = %info.name, %err, policy = ?info.policy, "plugin call failed; failure policy applies");
    }
}

/// A stored message as a plugin sees it, body left out.
pub fn from_record<'a>(topic: &'a str, record: &RecordRef<'a>, attempt: u32) -> PluginMessage<'a> {
    PluginMessage {
        topic,
        tag: properties::get(record.properties, TAGS).unwrap_or(""),
        keys: properties::get(record.properties, KEYS).unwrap_or(""),
        properties: record.properties,
        body: None,
        born_ms: record.meta.born_timestamp_ms,
        store_ms: record.meta.store_timestamp_ms,
        attempt,
    }
}

impl Policies for PluginHost {
    fn has_filter(&self, topic: &str, group: &str) -> bool {
        self.current().filters.get(topic).is_some_and(|groups| groups.contains_key(group))
    }

    fn filter(&self, topic: &str, group: &str, messages: &[FilterInput]) -> Vec<FilterVerdict> {
        let set = self.current();
        let Some(bound) = set.filters.get(topic).and_then(|groups| groups.get(group)) else { return Vec::new() };
        let on_failure = match bound.info.policy {
            FailurePolicy::FailOpen => FilterVerdict::Deliver,
            FailurePolicy::FailClosed => FilterVerdict::Hold,
            FailurePolicy::DeadLetter => FilterVerdict::DeadLetter,
        };
        let mut verdicts = vec![on_failure; messages.len()];
        if bound.versions.len() == 1 {
            let all: Vec<usize> = (0..messages.len()).collect();
            filter_with(bound.active(), &bound.info, topic, messages, &all, &mut verdicts);
            return verdicts;
        }
        // Each message is judged by the version active at its position in the log.
        let mut by_version: Vec<Vec<usize>> = vec![Vec::new(); bound.versions.len()];
        for (i, m) in messages.iter().enumerate() {
            let offset = m.record.offset();
            let v = bound.versions.partition_point(|v| v.position <= offset).saturating_sub(1);
            by_version[v].push(i);
        }
        for (v, indices) in by_version.iter().enumerate().filter(|(_, ix)| !ix.is_empty()) {
            filter_with(&bound.versions[v].plugin, &bound.info, topic, messages, indices, &mut verdicts);
        }
        verdicts
    }

    fn has_route(&self, topic: &str) -> bool {
        self.current().routes.contains_key(topic)
    }

    fn route(&self, message: &Outgoing) -> RouteVerdict {
        let set = self.current();
        let Some(bound) = set.routes.get(&message.topic) else {
            return RouteVerdict::Accept(Box::new(message.clone()));
        };
        let outcome = route_once(bound.active(), message);
        match outcome {
            Ok(RouteOutcome::Accept { tag, set_properties, remove_properties, body }) => {
                match changed(message, tag, set_properties, remove_properties, body) {
                    Ok(message) => RouteVerdict::Accept(Box::new(message)),
                    Err(reason) => {
                        let err = PluginError::BadOutput(reason);
                        static REFUSED: Throttle = Throttle::per_second(5);
                        if let Some(suppressed) = REFUSED.admit() {
                            tracing::warn!(plugin = %bound.info.name, %err, suppressed, "route answer refused");
                        }
                        on_route_failure(&bound.info, message, &err)
                    }
                }
            }
            Ok(RouteOutcome::Redirect(topics)) => RouteVerdict::Redirect(topics),
            Ok(RouteOutcome::Reject(reason)) => RouteVerdict::Reject(reason),
            Ok(RouteOutcome::Drop(reason)) => RouteVerdict::Drop(format!("{}: {reason}", bound.info.name)),
            Err(err) => {
                note_failure(&bound.info, &err);
                on_route_failure(&bound.info, message, &err)
            }
        }
    }
}

/// Runs `plugin` on the messages at `indices`, writing its verdicts over the failure policy's.
fn filter_with(
    plugin: &FilterPlugin,
    info: &BindingInfo,
    topic: &str,
    messages: &[FilterInput],
    indices: &[usize],
    verdicts: &mut [FilterVerdict],
) {
    let decoded: Vec<_> = indices.iter().map(|&i| messages[i].record.decode()).collect();
    if let Some(err) = decoded.iter().find_map(|d| d.as_ref().err()) {
        // The broker decoded these a moment ago; a failure here is the store's, not the plugin's.
        static UNDECODED: Throttle = Throttle::per_second(5);
        if let Some(suppressed) = UNDECODED.admit() {
            tracing::warn!(plugin = %info.name, %err, suppressed, "a message could not be decoded for its filter");
        }
    }
    let mut inputs = Vec::with_capacity(indices.len());
    let mut positions = Vec::with_capacity(indices.len());
    for (&i, d) in indices.iter().zip(&decoded) {
        if let Ok(record) = d {
            inputs.push(from_record(topic, record, messages[i].attempt));
            positions.push(i);
        }
    }
    let records: Vec<_> = positions.iter().map(|&i| messages[i].record.clone()).collect();
    let bodies: BodySource = Box::new(move |index| {
        let record = records.get(usize::try_from(index).ok()?)?;
        record.decode().ok().map(|r| r.body.to_vec())
    });
    match plugin.filter(&inputs, bodies) {
        Ok(keep) => {
            for (position, keep) in positions.into_iter().zip(keep) {
                verdicts[position] = if keep { FilterVerdict::Deliver } else { FilterVerdict::Withhold };
            }
        }
        Err(err) => note_failure(info, &err),
    }
}

fn route_once(plugin: &RoutePlugin, message: &Outgoing) -> Result<RouteOutcome, PluginError> {
    let mut props = Vec::new();
    properties::encode(message.user_properties.iter().map(|(k, v)| (k.as_str(), v.as_str())), &mut props)
        .map_err(|e| PluginError::BadOutput(format!("the message's properties cannot be encoded: {e}")))?;
    let keys = message.keys.join(" ");
    // By message id: a producer retrying a message the plugin fails on counts once toward quarantine.
    let message_id = &message.message_id;
    plugin.route_message(
        &PluginMessage {
            topic: &message.topic,
            tag: message.tag.as_deref().unwrap_or(""),
            keys: &keys,
            properties: &props,
            body: Some(&message.body),
            born_ms: message.born_timestamp_ms,
            store_ms: 0,
            attempt: 0,
        },
        message_id,
    )
}

fn on_route_failure(info: &BindingInfo, message: &Outgoing, err: &PluginError) -> RouteVerdict {
    match info.policy {
        FailurePolicy::FailOpen => RouteVerdict::Accept(Box::new(message.clone())),
        FailurePolicy::FailClosed => RouteVerdict::Reject(format!("route plugin {} failed: {err}", info.name)),
        FailurePolicy::DeadLetter => RouteVerdict::DeadLetter(format!("route plugin {} failed: {err}", info.name)),
    }
}

/// `message` with a route's changes applied; a change to a property the broker reserves is refused.
pub(crate) fn changed(
    message: &Outgoing,
    tag: Option<String>,
    set_properties: Vec<(String, String)>,
    remove_properties: Vec<String>,
    body: Option<Vec<u8>>,
) -> Result<Outgoing, String> {
    let mut out = message.clone();
    if let Some(name) =
        set_properties.iter().map(|(k, _)| k).chain(&remove_properties).find(|name| properties::is_reserved(name))
    {
        return Err(format!("property {name:?} is reserved for the broker"));
    }
    if let Some(tag) = tag {
        out.tag = (!tag.is_empty()).then_some(tag);
    }
    out.user_properties.retain(|(k, _)| !remove_properties.contains(k));
    for (name, value) in set_properties {
        match out.user_properties.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => out.user_properties.push((name, value)),
        }
    }
    if let Some(body) = body {
        out.body = body;
    }
    Ok(out)
}

impl TransactionChecker for PluginHost {
    fn check(&self, topic: &str, transaction_id: &str, half: &RecordRef<'_>) -> Option<Resolution> {
        let set = self.current();
        let bound = set.tx_checks.get(topic)?;
        let mut message = from_record(topic, half, 0);
        message.body = Some(half.body);
        match bound.active().check(transaction_id, &message) {
            Ok(TxOutcome::Commit) => Some(Resolution::Commit),
            Ok(TxOutcome::Rollback) => Some(Resolution::Rollback),
            // No opinion: a producer is asked, as without a plugin.
            Ok(TxOutcome::Unknown) => None,
            Err(err) => {
                note_failure(&bound.info, &err);
                match bound.info.policy {
                    FailurePolicy::FailOpen | FailurePolicy::DeadLetter => None,
                    FailurePolicy::FailClosed => Some(Resolution::Unknown),
                }
            }
        }
    }
}
