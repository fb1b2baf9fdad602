//! Dry runs: a candidate plugin version judges messages already stored in a topic and the broker
//! answers what it would have decided, changing nothing (no delivery, no storage, no metrics of the
//! bound plugins).

use std::collections::BTreeMap;

use ferrymq_plugin::{FilterPlugin, Grant, PluginEngine, RouteOutcome, RoutePlugin};
use ferrymq_proto::properties::{self, KEYS, UNIQ_KEY};
use ferrymq_store::{Store, StoredRecord};
use serde::{Deserialize, Serialize};

use crate::config::LimitsConfig;
use crate::registry::{Registry, RegistryError};
use crate::{PluginKind, RESERVED_PARAM_PREFIX, from_record};

/// Messages a dry run judges unless told otherwise, and at most.
pub const DRY_RUN_DEFAULT: usize = 100;
pub const DRY_RUN_MAX: usize = 10_000;
/// Examples kept per decision.
const EXAMPLES_MAX: usize = 5;
/// Messages per filter call.
const BATCH: usize = 32;

/// Which messages to judge, and how the candidate would be bound.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    pub topic: String,
    /// How many of the topic's latest messages (default 100)…
    #[serde(default)]
    pub last: Option<usize>,
    /// …or the messages stored from this time (ms since the epoch, inclusive)…
    #[serde(default)]
    pub from_ms: Option<i64>,
    /// …up to this one (exclusive; now if absent). At most [`DRY_RUN_MAX`] messages either way.
    #[serde(default)]
    pub to_ms: Option<i64>,
    /// Run with the parameters and limits of this existing binding (of the same kind); `params`
    /// given here replace its parameters of the same name, `limits` given here replace its limits.
    #[serde(default)]
    pub binding: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The limits (default: the binding's, or the defaults without a binding).
    #[serde(default)]
    pub limits: Option<LimitsConfig>,
}

/// One message a decision was taken for.
#[derive(Clone, Debug, Serialize)]
pub struct Example {
    pub log_offset: u64,
    pub message_id: String,
    pub keys: String,
    /// The message's own properties (those its producer set; not the broker's, such as `UNIQ_KEY`).
    pub properties: BTreeMap<String, String>,
    pub detail: Option<String>,
}

/// What the candidate would have decided.
#[derive(Clone, Debug, Serialize)]
pub struct DryRun {
    pub plugin: String,
    pub version: u32,
    pub kind: &'static str,
    pub topic: String,
    /// Messages judged.
    pub messages: usize,
    /// Decision (`deliver`, `withhold`, `accept`, `accept-changed`, `redirect`, `reject`, `drop`,
    /// `failed`) → messages.
    pub decisions: BTreeMap<&'static str, u64>,
    /// A few messages of each decision.
    pub examples: BTreeMap<&'static str, Vec<Example>>,
}

impl DryRun {
    fn add(&mut self, decision: &'static str, record: &StoredRecord, detail: Option<String>) {
        *self.decisions.entry(decision).or_default() += 1;
        let examples = self.examples.entry(decision).or_default();
        if examples.len() < EXAMPLES_MAX {
            let (message_id, keys, user_properties) = record
                .decode()
                .map(|r| {
                    let user_properties = properties::decode(r.properties)
                        .map_while(Result::ok)
                        .filter(|p| !properties::is_reserved(p.name))
                        .map(|p| (p.name.to_owned(), p.value.to_owned()))
                        .collect();
                    (
                        properties::get(r.properties, UNIQ_KEY).unwrap_or("").to_owned(),
                        properties::get(r.properties, KEYS).unwrap_or("").to_owned(),
                        user_properties,
                    )
                })
                .unwrap_or_default();
            examples.push(Example {
                log_offset: record.offset(),
                message_id,
                keys,
                properties: user_properties,
                detail,
            });
        }
    }
}

impl Registry {
    /// Runs `version` of `plugin` over the messages `request` selects, as a binding with its params
    /// and limits would, and tallies the decisions.
    pub fn dry_run(&self, plugin: &str, version: u32, request: DryRunRequest) -> Result<DryRun, RegistryError> {
        let info = self
            .version(plugin, version)
            .ok_or_else(|| RegistryError::NoSuchVersion { plugin: plugin.into(), version })?;
        let count = match (request.last, request.from_ms) {
            (Some(_), Some(_)) => {
                return Err(RegistryError::BadRequest("give last, or from_ms (and to_ms), not both".into()));
            }
            (Some(n), None) if n == 0 || n > DRY_RUN_MAX => {
                return Err(RegistryError::BadRequest(format!("last must be 1 to {DRY_RUN_MAX}")));
            }
            (Some(n), None) => n,
            (None, Some(_)) => DRY_RUN_MAX,
            (None, None) => DRY_RUN_DEFAULT,
        };
        let kind =
            match info.world.as_str() {
                "filter" => PluginKind::Filter,
                "route" => PluginKind::Route,
                _ => return Err(RegistryError::BadRequest(
                    "tx-check plugins are not dry-run: their checks call out to services, which would be a side effect"
                        .into(),
                )),
            };
        // The binding whose parameters and limits the candidate takes, if one is named.
        let binding = match &request.binding {
            Some(name) => {
                let binding = self.host().binding(name).ok_or_else(|| RegistryError::NoSuchBinding(name.clone()))?;
                if binding.kind != kind {
                    return Err(RegistryError::BadRequest(format!(
                        "binding {name} is a {} binding; {plugin} version {version} is a {} plugin",
                        binding.kind.name(),
                        kind.name()
                    )));
                }
                Some(binding)
            }
            None => None,
        };
        let (mut params, binding_limits) = binding.map(|b| (b.params, Some(b.limits))).unwrap_or_default();
        params.extend(request.params);
        let limits = request.limits.or(binding_limits).unwrap_or_default().for_kind(kind);
        limits.validate().map_err(|reason| RegistryError::BadRequest(format!("limits: {reason}")))?;
        let bytes = self.component(&info.digest).map_err(|e| RegistryError::Engine(e.into()))?;
        let engine = self.host().engine().map_err(|e| RegistryError::Engine(e.into()))?;
        let loaded = engine.load(&bytes).map_err(|e| RegistryError::Refused(e.into()))?;
        let mut config: Vec<(String, String)> =
            params.into_iter().filter(|(k, _)| !k.starts_with(RESERVED_PARAM_PREFIX)).collect();
        config.push(("ferrymq.plugin".into(), plugin.to_owned()));
        config.push(("ferrymq.version".into(), info.version.to_string()));
        let candidate = Candidate {
            engine,
            name: format!("dry-run:{plugin}@{}", info.version),
            loaded,
            limits,
            grant: Grant { config, http_allowlist: Vec::new(), ..Grant::default() },
        };
        let store = self.broker().store();
        let records = match request.from_ms {
            Some(from_ms) => between(store, &request.topic, from_ms, request.to_ms.unwrap_or(i64::MAX), count),
            None => latest(store, &request.topic, count),
        };
        let mut run = DryRun {
            plugin: plugin.to_owned(),
            version: info.version,
            kind: kind.name(),
            topic: request.topic,
            messages: records.len(),
            decisions: BTreeMap::new(),
            examples: BTreeMap::new(),
        };
        match kind {
            PluginKind::Filter => candidate.filter(&records, &mut run)?,
            PluginKind::Route | PluginKind::TxCheck => candidate.route(&records, &mut run)?,
        }
        Ok(run)
    }
}

/// The version under trial, loaded and granted what a binding would grant it.
struct Candidate<'a> {
    engine: &'a PluginEngine,
    name: String,
    loaded: ferrymq_plugin::Loaded,
    limits: ferrymq_plugin::PluginLimits,
    grant: Grant,
}

impl Candidate<'_> {
    fn filter(self, records: &[StoredRecord], run: &mut DryRun) -> Result<(), RegistryError> {
        let filter = FilterPlugin::new(self.engine, &self.name, &self.loaded, self.limits, self.grant)
            .map_err(|e| RegistryError::Refused(e.into()))?;
        for batch in records.chunks(BATCH) {
            let decoded: Vec<_> = batch.iter().map(StoredRecord::decode).collect();
            let judged: Vec<(usize, _)> =
                decoded.iter().enumerate().filter_map(|(i, d)| d.as_ref().ok().map(|r| (i, r))).collect();
            let inputs: Vec<_> = judged.iter().map(|(_, r)| from_record(&run.topic, r, 1)).collect();
            let owned: Vec<StoredRecord> = judged.iter().map(|(i, _)| batch[*i].clone()).collect();
            let bodies = Box::new(move |index: u32| {
                owned.get(index as usize).and_then(|r| r.decode().ok().map(|r| r.body.to_vec()))
            });
            match filter.filter(&inputs, bodies) {
                Ok(keep) => {
                    for ((i, _), keep) in judged.iter().zip(keep) {
                        run.add(if keep { "deliver" } else { "withhold" }, &batch[*i], None);
                    }
                }
                Err(err) => {
                    for (i, _) in &judged {
                        run.add("failed", &batch[*i], Some(err.to_string()));
                    }
                }
            }
        }
        Ok(())
    }

    fn route(self, records: &[StoredRecord], run: &mut DryRun) -> Result<(), RegistryError> {
        let route = RoutePlugin::new(self.engine, &self.name, &self.loaded, self.limits, self.grant)
            .map_err(|e| RegistryError::Refused(e.into()))?;
        for record in records {
            let Ok(decoded) = record.decode() else { continue };
            let mut message = from_record(&run.topic, &decoded, 0);
            message.body = Some(decoded.body);
            let (decision, detail) = match route.route(&message) {
                Ok(RouteOutcome::Accept { tag, set_properties, remove_properties, body }) => {
                    let changed =
                        tag.is_some() || !set_properties.is_empty() || !remove_properties.is_empty() || body.is_some();
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
            run.add(decision, record, detail);
        }
        Ok(())
    }
}

/// Up to `count` messages of `topic` stored in [`from_ms`, `to_ms`), oldest first.
fn between(store: &Store, topic: &str, from_ms: i64, to_ms: i64, count: usize) -> Vec<StoredRecord> {
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
fn latest(store: &Store, topic: &str, count: usize) -> Vec<StoredRecord> {
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
