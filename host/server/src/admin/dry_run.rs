//! Dry runs: a candidate plugin version judges the latest messages of a topic and the broker answers
//! what it would have decided, changing nothing (no delivery, no storage, no metrics of the bound
//! plugins).

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use ferrymq_plugin::{FilterPlugin, Grant, RouteOutcome, RoutePlugin};
use ferrymq_proto::properties::{self, KEYS, UNIQ_KEY};
use ferrymq_store::StoredRecord;

use super::auth::Principal;
use super::{AdminState, Call, error, json};
use ferrymq_policy::config::LimitsConfig;
use ferrymq_policy::{PluginKind, from_record};

/// Messages a dry run judges unless told otherwise, and at most.
pub const DRY_RUN_DEFAULT: usize = 100;
pub const DRY_RUN_MAX: usize = 10_000;
/// Examples kept per decision.
const EXAMPLES_MAX: usize = 5;
/// Messages per filter call.
const BATCH: usize = 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    topic: String,
    /// How many of the topic's latest messages (default 100)…
    #[serde(default)]
    last: Option<usize>,
    /// …or the messages stored from this time (ms since the epoch, inclusive)…
    #[serde(default)]
    from_ms: Option<i64>,
    /// …up to this one (exclusive; now if absent). At most `DRY_RUN_MAX` messages either way.
    #[serde(default)]
    to_ms: Option<i64>,
    #[serde(default)]
    params: BTreeMap<String, String>,
    #[serde(default)]
    limits: LimitsConfig,
}

/// Up to `count` messages of `topic` stored in [`from_ms`, `to_ms`), oldest first.
fn between(state: &AdminState, topic: &str, from_ms: i64, to_ms: i64, count: usize) -> Vec<StoredRecord> {
    let store = state.broker.store();
    let mut found: Vec<StoredRecord> = Vec::new();
    for q in store.queues().into_iter().filter(|q| q.topic == topic) {
        let mut at = ferrymq_broker::search::offset_at_time(store, topic, q.queue_id, from_ms);
        'queue: while at < q.max && found.len() < count * 2 {
            let entries = store.read_queue(topic, q.queue_id, at, 256);
            if entries.is_empty() {
                break;
            }
            for e in entries {
                at = e.queue_offset + 1;
                let Ok(record) = store.record(e.offset, e.len) else { continue };
                match record.decode().map(|r| r.meta.store_timestamp_ms) {
                    Ok(t) if t >= to_ms => break 'queue,
                    Ok(t) if t >= from_ms => found.push(record),
                    _ => {}
                }
            }
        }
    }
    found.sort_by_key(StoredRecord::offset);
    found.truncate(count);
    found
}

/// The latest `count` messages of `topic`, oldest first.
fn latest(state: &AdminState, topic: &str, count: usize) -> Vec<StoredRecord> {
    let store = state.broker.store();
    let mut found: Vec<StoredRecord> = store
        .queues()
        .into_iter()
        .filter(|q| q.topic == topic)
        .flat_map(|q| {
            let from = q.max.saturating_sub(count as u64).max(q.min);
            store.read_queue(topic, q.queue_id, from, count)
        })
        .filter_map(|e| store.record(e.offset, e.len).ok())
        .collect();
    found.sort_by_key(StoredRecord::offset);
    let skip = found.len().saturating_sub(count);
    found.split_off(skip)
}

struct Tally {
    counts: BTreeMap<&'static str, u64>,
    examples: BTreeMap<&'static str, Vec<Value>>,
}

impl Tally {
    fn add(&mut self, decision: &'static str, record: &StoredRecord, detail: Option<String>) {
        *self.counts.entry(decision).or_default() += 1;
        let examples = self.examples.entry(decision).or_default();
        if examples.len() < EXAMPLES_MAX {
            let (id, keys) = record
                .decode()
                .map(|r| {
                    (
                        properties::get(r.properties, UNIQ_KEY).unwrap_or("").to_owned(),
                        properties::get(r.properties, KEYS).unwrap_or("").to_owned(),
                    )
                })
                .unwrap_or_default();
            examples.push(json!({ "log_offset": record.offset(), "message_id": id, "keys": keys, "detail": detail }));
        }
    }
}

pub fn answer(
    call: &Call<'_>,
    state: &AdminState,
    who: &Principal,
    plugin: &str,
    version: &str,
) -> Response<Full<Bytes>> {
    let request: Request = match serde_json::from_slice(call.body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
    };
    if !who.owns_topic(&request.topic) {
        return error(StatusCode::FORBIDDEN, format!("{} may not dry-run on topic {}", who.name, request.topic));
    }
    let Some(info) = version.parse().ok().and_then(|v| state.registry.version(plugin, v)) else {
        return error(StatusCode::NOT_FOUND, format!("plugin {plugin} has no version {version}"));
    };
    let count = match (request.last, request.from_ms) {
        (Some(_), Some(_)) => return error(StatusCode::BAD_REQUEST, "give last, or from_ms (and to_ms), not both"),
        (Some(n), None) if n == 0 || n > DRY_RUN_MAX => {
            return error(StatusCode::BAD_REQUEST, format!("last must be 1 to {DRY_RUN_MAX}"));
        }
        (Some(n), None) => n,
        (None, Some(_)) => DRY_RUN_MAX,
        (None, None) => DRY_RUN_DEFAULT,
    };
    let kind = match info.world.as_str() {
        "filter" => PluginKind::Filter,
        "route" => PluginKind::Route,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "tx-check plugins are not dry-run: their checks call out to services, which would be a side effect",
            );
        }
    };
    let limits = request.limits.for_kind(kind);
    if let Err(reason) = limits.validate() {
        return error(StatusCode::BAD_REQUEST, format!("limits: {reason}"));
    }
    let loaded = match state.registry.component(&info.digest).and_then(|bytes| {
        let engine = state.plugins.engine()?;
        Ok((engine, engine.load(&bytes)?))
    }) {
        Ok(loaded) => loaded,
        Err(err) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("{err:#}")),
    };
    let (engine, loaded) = loaded;
    let mut config: Vec<(String, String)> =
        request.params.into_iter().filter(|(k, _)| !k.starts_with(ferrymq_policy::RESERVED_PARAM_PREFIX)).collect();
    config.push(("ferrymq.plugin".into(), plugin.to_owned()));
    config.push(("ferrymq.version".into(), info.version.to_string()));
    let grant = Grant { config, http_allowlist: Vec::new() };
    let name = format!("dry-run:{plugin}@{}", info.version);
    let records = match request.from_ms {
        Some(from_ms) => between(state, &request.topic, from_ms, request.to_ms.unwrap_or(i64::MAX), count),
        None => latest(state, &request.topic, count),
    };
    let mut tally = Tally { counts: BTreeMap::new(), examples: BTreeMap::new() };
    match kind {
        PluginKind::Filter => {
            let filter = match FilterPlugin::new(engine, &name, &loaded, limits, grant) {
                Ok(f) => f,
                Err(err) => return error(StatusCode::BAD_REQUEST, err),
            };
            for batch in records.chunks(BATCH) {
                let decoded: Vec<_> = batch.iter().map(StoredRecord::decode).collect();
                let judged: Vec<(usize, _)> =
                    decoded.iter().enumerate().filter_map(|(i, d)| d.as_ref().ok().map(|r| (i, r))).collect();
                let inputs: Vec<_> = judged.iter().map(|(_, r)| from_record(&request.topic, r, 1)).collect();
                let owned: Vec<StoredRecord> = judged.iter().map(|(i, _)| batch[*i].clone()).collect();
                let bodies = Box::new(move |index: u32| {
                    owned.get(index as usize).and_then(|r| r.decode().ok().map(|r| r.body.to_vec()))
                });
                match filter.filter(&inputs, bodies) {
                    Ok(keep) => {
                        for ((i, _), keep) in judged.iter().zip(keep) {
                            tally.add(if keep { "deliver" } else { "withhold" }, &batch[*i], None);
                        }
                    }
                    Err(err) => {
                        for (i, _) in &judged {
                            tally.add("failed", &batch[*i], Some(err.to_string()));
                        }
                    }
                }
            }
        }
        PluginKind::Route | PluginKind::TxCheck => {
            let route = match RoutePlugin::new(engine, &name, &loaded, limits, grant) {
                Ok(r) => r,
                Err(err) => return error(StatusCode::BAD_REQUEST, err),
            };
            for record in &records {
                let Ok(decoded) = record.decode() else { continue };
                let mut message = from_record(&request.topic, &decoded, 0);
                message.body = Some(decoded.body);
                let (decision, detail) = match route.route(&message) {
                    Ok(RouteOutcome::Accept { tag, set_properties, remove_properties, body }) => {
                        let changed = tag.is_some()
                            || !set_properties.is_empty()
                            || !remove_properties.is_empty()
                            || body.is_some();
                        let detail = changed.then(|| {
                            format!(
                                "tag {tag:?}, set {set_properties:?}, remove {remove_properties:?}, body changed: {}",
                                body.is_some()
                            )
                        });
                        (if changed { "accept-changed" } else { "accept" }, detail)
                    }
                    Ok(RouteOutcome::Redirect(topics)) => ("redirect", Some(topics.join(", "))),
                    Ok(RouteOutcome::Reject(reason)) => ("reject", Some(reason)),
                    Ok(RouteOutcome::Drop(reason)) => ("drop", Some(reason)),
                    Err(err) => ("failed", Some(err.to_string())),
                };
                tally.add(decision, record, detail);
            }
        }
    }
    json(
        StatusCode::OK,
        json!({ "plugin": plugin, "version": info.version, "kind": kind.name(), "topic": request.topic,
                "messages": records.len(), "decisions": tally.counts, "examples": tally.examples }),
    )
}
