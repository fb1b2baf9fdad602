//! The plugins bound to this broker, as the broker's policy hooks: filters on receive and pull,
//! routes on send, tx-checks before any producer is asked.
//!
//! Every failure of a plugin call (trap, limit, bad answer, quarantine, no free instance) becomes the
//! binding's failure policy; nothing here panics or blocks an async worker (callers run plugins on
//! blocking threads).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use anyhow::Context;
use ferrymq_broker::hooks::{FilterInput, FilterVerdict, Policies, RouteVerdict};
use ferrymq_broker::send::Outgoing;
use ferrymq_broker::transaction::{Resolution, TransactionChecker};
use ferrymq_plugin::{
    BodySource, FilterPlugin, Grant, PluginEngine, PluginError, PluginStats, RouteOutcome, RoutePlugin, TxCheckPlugin,
    TxOutcome,
};
use ferrymq_proto::plugin_batch::PluginMessage;
use ferrymq_proto::properties::{self, KEYS, TAGS};
use ferrymq_proto::record::RecordRef;

use super::config::{BindingConfig, FailurePolicy, PluginKind, PluginsConfig};

/// What the admin API and metrics show of a binding.
#[derive(Clone, Debug)]
pub struct BindingInfo {
    pub name: String,
    pub kind: PluginKind,
    pub topic: String,
    pub group: Option<String>,
    pub policy: FailurePolicy,
    pub component: PathBuf,
    /// SHA-256 of the component.
    pub digest: String,
}

struct Bound<P> {
    plugin: P,
    info: BindingInfo,
}

/// One consistent set of bindings; replaced whole.
#[derive(Default)]
struct BindingSet {
    /// topic → group → filter.
    filters: HashMap<String, HashMap<String, Bound<FilterPlugin>>>,
    routes: HashMap<String, Bound<RoutePlugin>>,
    tx_checks: HashMap<String, Bound<TxCheckPlugin>>,
}

/// The plugin engine and the current bindings.
pub struct PluginHost {
    engine: OnceLock<PluginEngine>,
    cache_dir: PathBuf,
    instances_max: u32,
    workers: usize,
    worker_nice: i32,
    set: RwLock<Arc<BindingSet>>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost").field("cache_dir", &self.cache_dir).finish_non_exhaustive()
    }
}

impl PluginHost {
    /// Loads and binds every plugin in `config`; any that cannot be loaded stops the start, naming it.
    pub fn start(config: &PluginsConfig, data_dir: &Path) -> anyhow::Result<Self> {
        let host = Self {
            engine: OnceLock::new(),
            cache_dir: config.cache_dir.clone().unwrap_or_else(|| data_dir.join("plugins").join("cache")),
            instances_max: config.instances_max,
            workers: config.workers.unwrap_or_else(ferrymq_plugin::default_workers),
            worker_nice: config.worker_nice,
            set: RwLock::new(Arc::default()),
        };
        let mut set = BindingSet::default();
        for binding in &config.bindings {
            host.bind(&mut set, binding).with_context(|| format!("plugin binding {:?}", binding.name()))?;
        }
        *host.set.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(set);
        Ok(host)
    }

    fn engine(&self) -> anyhow::Result<&PluginEngine> {
        if let Some(engine) = self.engine.get() {
            return Ok(engine);
        }
        let engine = PluginEngine::with_workers(
            Some(self.cache_dir.clone()),
            self.instances_max,
            self.workers,
            self.worker_nice,
        )
        .context("start the plugin engine")?;
        tracing::info!(workers = self.workers, worker_nice = self.worker_nice, "plugin engine started");
        Ok(self.engine.get_or_init(|| engine))
    }

    fn bind(&self, set: &mut BindingSet, binding: &BindingConfig) -> anyhow::Result<()> {
        let bytes = std::fs::read(&binding.component)
            .with_context(|| format!("read the component {}", binding.component.display()))?;
        let engine = self.engine()?;
        let loaded = engine.load(&bytes)?;
        let name = binding.name();
        let limits = binding.limits.for_kind(binding.kind);
        let grant = Grant {
            config: binding.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            http_allowlist: binding.http_allowlist.clone(),
        };
        let info = BindingInfo {
            name: name.clone(),
            kind: binding.kind,
            topic: binding.topic.clone(),
            group: binding.group.clone(),
            policy: binding.policy,
            component: binding.component.clone(),
            digest: loaded.digest.clone(),
        };
        match binding.kind {
            PluginKind::Filter => {
                let plugin = FilterPlugin::new(engine, &name, &loaded, limits, grant)?;
                let group = binding.group.clone().unwrap_or_default();
                set.filters.entry(binding.topic.clone()).or_default().insert(group, Bound { plugin, info });
            }
            PluginKind::Route => {
                let plugin = RoutePlugin::new(engine, &name, &loaded, limits, grant)?;
                set.routes.insert(binding.topic.clone(), Bound { plugin, info });
            }
            PluginKind::TxCheck => {
                let plugin = TxCheckPlugin::new(engine, &name, &loaded, limits, grant)?;
                set.tx_checks.insert(binding.topic.clone(), Bound { plugin, info });
            }
        }
        tracing::info!(plugin = %name, kind = binding.kind.name(), topic = %binding.topic,
            group = binding.group.as_deref().unwrap_or(""), digest = %loaded.digest, "plugin bound");
        Ok(())
    }

    fn current(&self) -> Arc<BindingSet> {
        self.set.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn is_empty(&self) -> bool {
        let set = self.current();
        set.filters.is_empty() && set.routes.is_empty() && set.tx_checks.is_empty()
    }

    pub fn has_tx_checks(&self) -> bool {
        !self.current().tx_checks.is_empty()
    }

    /// Every binding with its counters, by name.
    pub fn bindings(&self) -> Vec<(BindingInfo, PluginStats)> {
        let set = self.current();
        let mut out: Vec<(BindingInfo, PluginStats)> = set
            .filters
            .values()
            .flat_map(HashMap::values)
            .map(|b| (b.info.clone(), b.plugin.stats()))
            .chain(set.routes.values().map(|b| (b.info.clone(), b.plugin.stats())))
            .chain(set.tx_checks.values().map(|b| (b.info.clone(), b.plugin.stats())))
            .collect();
        out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        out
    }
}

/// Logs a failed call the plugin runtime has not logged already (faults are logged there).
fn note_failure(info: &BindingInfo, err: &PluginError) {
    if !err.is_plugin_fault() {
        tracing::debug!(plugin = %info.name, %err, policy = ?info.policy, "plugin call failed; failure policy applies");
    }
}

/// A stored message as a plugin sees it, body left out.
fn from_record<'a>(topic: &'a str, record: &RecordRef<'a>, attempt: u32) -> PluginMessage<'a> {
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
        let decoded: Vec<_> = messages.iter().map(|m| m.record.decode()).collect();
        if let Some(err) = decoded.iter().find_map(|d| d.as_ref().err()) {
            // The broker decoded these a moment ago; a failure here is the store's, not the plugin's.
            tracing::warn!(plugin = %bound.info.name, %err, "a message could not be decoded for its filter");
        }
        let on_failure = match bound.info.policy {
            FailurePolicy::FailOpen => FilterVerdict::Deliver,
            FailurePolicy::FailClosed => FilterVerdict::Hold,
            FailurePolicy::DeadLetter => FilterVerdict::DeadLetter,
        };
        let mut inputs = Vec::with_capacity(messages.len());
        let mut positions = Vec::with_capacity(messages.len());
        for (i, (m, d)) in messages.iter().zip(&decoded).enumerate() {
            if let Ok(record) = d {
                inputs.push(from_record(topic, record, m.attempt));
                positions.push(i);
            }
        }
        let records: Vec<_> = positions.iter().map(|&i| messages[i].record.clone()).collect();
        let bodies: BodySource = Box::new(move |index| {
            let record = records.get(usize::try_from(index).ok()?)?;
            record.decode().ok().map(|r| r.body.to_vec())
        });
        let mut verdicts = vec![on_failure; messages.len()];
        match bound.plugin.filter(&inputs, bodies) {
            Ok(keep) => {
                for (position, keep) in positions.into_iter().zip(keep) {
                    verdicts[position] = if keep { FilterVerdict::Deliver } else { FilterVerdict::Withhold };
                }
            }
            Err(err) => note_failure(&bound.info, &err),
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
        let outcome = route_once(&bound.plugin, message);
        match outcome {
            Ok(RouteOutcome::Accept { tag, set_properties, remove_properties, body }) => {
                match changed(message, tag, set_properties, remove_properties, body) {
                    Ok(message) => RouteVerdict::Accept(Box::new(message)),
                    Err(reason) => {
                        let err = PluginError::BadOutput(reason);
                        tracing::warn!(plugin = %bound.info.name, %err, "route answer refused");
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

fn route_once(plugin: &RoutePlugin, message: &Outgoing) -> Result<RouteOutcome, PluginError> {
    let mut props = Vec::new();
    properties::encode(message.user_properties.iter().map(|(k, v)| (k.as_str(), v.as_str())), &mut props)
        .map_err(|e| PluginError::BadOutput(format!("the message's properties cannot be encoded: {e}")))?;
    let keys = message.keys.join(" ");
    plugin.route(&PluginMessage {
        topic: &message.topic,
        tag: message.tag.as_deref().unwrap_or(""),
        keys: &keys,
        properties: &props,
        body: Some(&message.body),
        born_ms: message.born_timestamp_ms,
        store_ms: 0,
        attempt: 0,
    })
}

fn on_route_failure(info: &BindingInfo, message: &Outgoing, err: &PluginError) -> RouteVerdict {
    match info.policy {
        FailurePolicy::FailOpen => RouteVerdict::Accept(Box::new(message.clone())),
        FailurePolicy::FailClosed => RouteVerdict::Reject(format!("route plugin {} failed: {err}", info.name)),
        FailurePolicy::DeadLetter => RouteVerdict::DeadLetter(format!("route plugin {} failed: {err}", info.name)),
    }
}

/// `message` with a route's changes applied; a change to a property the broker reserves is refused.
fn changed(
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
        match bound.plugin.check(transaction_id, &message) {
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
