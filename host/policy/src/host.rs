//! The plugins bound to this broker, as the broker's policy hooks: filters on receive and pull,
//! routes on send, tx-checks before any producer is asked.
//!
//! Every failure of a plugin call (trap, limit, bad answer, quarantine, no free instance) becomes the
//! binding's failure policy; nothing here panics or blocks an async worker (callers run plugins on
//! blocking threads).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use anyhow::Context;
use ferrymq_broker::hooks::{FilterInput, FilterVerdict, Policies, RouteVerdict};
use ferrymq_broker::send::Outgoing;
use ferrymq_broker::transaction::{Resolution, TransactionChecker};
use ferrymq_plugin::{
    BodySource, FilterPlugin, Grant, PluginEngine, PluginError, PluginStats, QuarantineHook, RouteOutcome, RoutePlugin,
    TxCheckPlugin, TxOutcome,
};
use ferrymq_proto::plugin_batch::PluginMessage;
use ferrymq_proto::properties::{self, KEYS, TAGS};
use ferrymq_proto::record::RecordRef;

use super::config::{FailurePolicy, PluginKind, PluginsConfig, Shape};

/// Where a binding came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `[[plugins.bindings]]` in the configuration file: fixed until restart.
    Config,
    /// The admin API: changed at run time, recorded in the plugins topic.
    Admin,
}

/// What the admin API and metrics show of a binding.
#[derive(Clone, Debug)]
pub struct BindingInfo {
    pub name: String,
    pub kind: PluginKind,
    pub topic: String,
    pub group: Option<String>,
    pub policy: FailurePolicy,
    pub source: Source,
    /// The component file (configuration bindings).
    pub component: Option<PathBuf>,
    /// The plugin and version (admin bindings).
    pub plugin: Option<String>,
    pub version: Option<u32>,
    /// SHA-256 of the active component.
    pub digest: String,
    /// Commit-log position from which the active version decides.
    pub position: u64,
    /// Filters: the versions kept for older messages, oldest first, as (version, position).
    pub history: Vec<(Option<u32>, u64)>,
}

/// One version of a binding's plugin and the log position from which it decides.
struct Version<P> {
    plugin: P,
    version: Option<u32>,
    position: u64,
}

/// A bound plugin: the active version last; filters keep earlier versions for the messages stored
/// before each later one took over.
struct Bound<P> {
    info: BindingInfo,
    versions: Vec<Version<P>>,
}

impl<P> Bound<P> {
    fn active(&self) -> &P {
        // Never empty: built with one version and only ever grown or trimmed from the front.
        &self.versions[self.versions.len() - 1].plugin
    }
}

/// One consistent set of bindings; replaced whole, so a call sees one set from start to end.
#[derive(Default, Clone)]
struct BindingSet {
    /// topic → group → filter.
    filters: HashMap<String, HashMap<String, Arc<Bound<FilterPlugin>>>>,
    routes: HashMap<String, Arc<Bound<RoutePlugin>>>,
    tx_checks: HashMap<String, Arc<Bound<TxCheckPlugin>>>,
}

impl BindingSet {
    fn infos(&self) -> impl Iterator<Item = &BindingInfo> {
        self.filters
            .values()
            .flat_map(HashMap::values)
            .map(|b| &b.info)
            .chain(self.routes.values().map(|b| &b.info))
            .chain(self.tx_checks.values().map(|b| &b.info))
    }

    /// Removes the binding named `name`; whether there was one.
    fn remove(&mut self, name: &str) -> bool {
        let before = self.infos().count();
        for groups in self.filters.values_mut() {
            groups.retain(|_, b| b.info.name != name);
        }
        self.filters.retain(|_, groups| !groups.is_empty());
        self.routes.retain(|_, b| b.info.name != name);
        self.tx_checks.retain(|_, b| b.info.name != name);
        self.infos().count() != before
    }
}

/// A plugin to bind (or a new version of a bound one).
#[derive(Debug)]
pub struct Install<'a> {
    /// Where it is bound and under which rules.
    pub shape: Shape<'a>,
    pub source: Source,
    pub component: Option<PathBuf>,
    pub plugin: Option<&'a str>,
    pub version: Option<u32>,
    pub bytes: &'a [u8],
    /// Commit-log position from which this version decides.
    pub position: u64,
    /// Keep the binding's earlier versions for messages stored before `position` (a filter's new
    /// version); otherwise this version decides for every message (a new binding or new parameters).
    pub keep_history: bool,
}

/// A plugin loaded and checked, ready to swap in.
pub struct Prepared {
    info: BindingInfo,
    plugin: Built,
    keep_history: bool,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("binding", &self.info.name).finish_non_exhaustive()
    }
}

enum Built {
    Filter(FilterPlugin),
    Route(RoutePlugin),
    TxCheck(TxCheckPlugin),
}

/// Parameter names the broker sets for a plugin: `ferrymq.plugin` and `ferrymq.version`.
pub const RESERVED_PARAM_PREFIX: &str = "ferrymq.";

/// The plugin engine and the current bindings.
pub struct PluginHost {
    engine: OnceLock<PluginEngine>,
    cache_dir: PathBuf,
    instances_max: u32,
    workers: usize,
    worker_nice: i32,
    history_max: usize,
    set: RwLock<Arc<BindingSet>>,
    /// Told of quarantines; handed to the engine when it starts.
    on_quarantine: Mutex<Option<QuarantineHook>>,
    /// Serialises changes to `set` (readers never wait on it).
    changing: Mutex<()>,
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
            history_max: config.filter_history_max,
            set: RwLock::new(Arc::default()),
            on_quarantine: Mutex::new(None),
            changing: Mutex::new(()),
        };
        for binding in &config.bindings {
            let bytes = std::fs::read(&binding.component)
                .with_context(|| format!("read the component {}", binding.component.display()))?;
            let name = binding.name();
            host.install(&Install {
                shape: binding.shape(&name),
                source: Source::Config,
                component: Some(binding.component.clone()),
                plugin: None,
                version: None,
                bytes: &bytes,
                position: 0,
                keep_history: false,
            })
            .with_context(|| format!("plugin binding {name:?}"))?;
        }
        Ok(host)
    }

    /// The engine, started on first use.
    pub fn engine(&self) -> anyhow::Result<&PluginEngine> {
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
        if let Some(hook) = self.on_quarantine.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
            engine.on_quarantine(hook);
        }
        tracing::info!(workers = self.workers, worker_nice = self.worker_nice, "plugin engine started");
        Ok(self.engine.get_or_init(|| engine))
    }

    /// Calls `hook` on every quarantine. The engine (its clock and worker threads) still starts only
    /// when a plugin is first bound.
    pub fn on_quarantine(&self, hook: QuarantineHook) {
        *self.on_quarantine.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(hook.clone());
        if let Some(engine) = self.engine.get() {
            engine.on_quarantine(hook);
        }
    }

    /// Versions a filter binding keeps.
    pub fn history_max(&self) -> usize {
        self.history_max.max(1)
    }

    /// Where compiled components are cached.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Engine settings a separate compiling process must share for its cached output to be used.
    pub fn instances_max(&self) -> u32 {
        self.instances_max
    }

    /// Binds `install`'s plugin at once: [`PluginHost::prepare`] then [`PluginHost::commit`].
    pub fn install(&self, install: &Install<'_>) -> anyhow::Result<BindingInfo> {
        let prepared = self.prepare(install)?;
        Ok(self.commit(prepared, install.position))
    }

    /// Loads `install`'s plugin and checks that it can be bound (its place is free or already its
    /// own): everything that can fail, done before anything changes.
    pub fn prepare(&self, install: &Install<'_>) -> anyhow::Result<Prepared> {
        let engine = self.engine()?;
        let loaded = engine.load(install.bytes)?;
        let limits = install.shape.limits.for_kind(install.shape.kind);
        let mut config: Vec<(String, String)> = install
            .shape
            .params
            .iter()
            .filter(|(k, _)| !k.starts_with(RESERVED_PARAM_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        config.push(("ferrymq.plugin".into(), install.plugin.unwrap_or(install.shape.name).to_owned()));
        if let Some(version) = install.version {
            config.push(("ferrymq.version".into(), version.to_string()));
        }
        let grant = Grant { config, http_allowlist: install.shape.http_allowlist.to_vec() };
        let name = install.shape.name;
        let set = self.current();
        if let Some(owner) = set.infos().find(|b| {
            b.name != name
                && b.kind == install.shape.kind
                && b.topic == install.shape.topic
                && b.group.as_deref() == install.shape.group
        }) {
            anyhow::bail!(
                "binding {:?} already binds a {} plugin to {}{}",
                owner.name,
                install.shape.kind.name(),
                install.shape.topic,
                install.shape.group.map(|g| format!(" for group {g}")).unwrap_or_default()
            );
        }
        let plugin = match install.shape.kind {
            PluginKind::Filter => Built::Filter(FilterPlugin::new(engine, name, &loaded, limits, grant)?),
            PluginKind::Route => Built::Route(RoutePlugin::new(engine, name, &loaded, limits, grant)?),
            PluginKind::TxCheck => Built::TxCheck(TxCheckPlugin::new(engine, name, &loaded, limits, grant)?),
        };
        let info = BindingInfo {
            name: name.to_owned(),
            kind: install.shape.kind,
            topic: install.shape.topic.to_owned(),
            group: install.shape.group.map(str::to_owned),
            policy: install.shape.policy,
            source: install.source,
            component: install.component.clone(),
            plugin: install.plugin.map(str::to_owned),
            version: install.version,
            digest: loaded.digest.clone(),
            position: install.position,
            history: Vec::new(),
        };
        Ok(Prepared { info, plugin, keep_history: install.keep_history })
    }

    /// Swaps a prepared plugin in, deciding from `position`; replaces the binding of the same name.
    /// Readers switch atomically: a call already running finishes on the version it started with.
    pub fn commit(&self, prepared: Prepared, position: u64) -> BindingInfo {
        let _changing = self.changing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Prepared { mut info, plugin, keep_history } = prepared;
        info.position = position;
        let current = self.current();
        let mut set = (*current).clone();
        let same_place = set
            .infos()
            .any(|p| p.name == info.name && p.kind == info.kind && p.topic == info.topic && p.group == info.group);
        let keep = keep_history && same_place;
        set.remove(&info.name);
        let history_max = self.history_max.max(1);
        let version = info.version;
        match plugin {
            Built::Filter(plugin) => {
                let group = info.group.clone().unwrap_or_default();
                let mut versions: Vec<Version<FilterPlugin>> = Vec::new();
                if let Some(old) = current.filters.get(&info.topic).and_then(|g| g.get(&group)).filter(|_| keep) {
                    old.active().release_idle();
                    let skip = old.versions.len().saturating_sub(history_max - 1);
                    versions.extend(old.versions.iter().skip(skip).map(|v| Version {
                        plugin: v.plugin.clone(),
                        version: v.version,
                        position: v.position,
                    }));
                }
                versions.push(Version { plugin, version, position });
                info.history = versions.iter().map(|v| (v.version, v.position)).collect();
                let bound = Arc::new(Bound { info: info.clone(), versions });
                set.filters.entry(info.topic.clone()).or_default().insert(group, bound);
            }
            Built::Route(plugin) => {
                let versions = vec![Version { plugin, version, position }];
                set.routes.insert(info.topic.clone(), Arc::new(Bound { info: info.clone(), versions }));
            }
            Built::TxCheck(plugin) => {
                let versions = vec![Version { plugin, version, position }];
                set.tx_checks.insert(info.topic.clone(), Arc::new(Bound { info: info.clone(), versions }));
            }
        }
        *self.set.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(set);
        tracing::info!(binding = %info.name, kind = info.kind.name(), topic = %info.topic,
            group = info.group.as_deref().unwrap_or(""), plugin = info.plugin.as_deref().unwrap_or(""),
            version = info.version.map(|v| v.to_string()).unwrap_or_default(), digest = %info.digest,
            position, "plugin bound");
        info
    }

    /// Unbinds the binding named `name`; whether there was one.
    pub fn remove(&self, name: &str) -> bool {
        let _changing = self.changing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut set = (*self.current()).clone();
        let removed = set.remove(name);
        if removed {
            *self.set.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(set);
            tracing::info!(binding = %name, "plugin unbound");
        }
        removed
    }

    fn current(&self) -> Arc<BindingSet> {
        self.set.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn is_empty(&self) -> bool {
        self.current().infos().next().is_none()
    }

    pub fn has_tx_checks(&self) -> bool {
        !self.current().tx_checks.is_empty()
    }

    /// The binding named `name`.
    pub fn binding(&self, name: &str) -> Option<BindingInfo> {
        self.current().infos().find(|b| b.name == name).cloned()
    }

    /// Every binding with the active version's counters, by name.
    pub fn bindings(&self) -> Vec<(BindingInfo, PluginStats)> {
        let set = self.current();
        let mut out: Vec<(BindingInfo, PluginStats)> = set
            .filters
            .values()
            .flat_map(HashMap::values)
            .map(|b| (b.info.clone(), b.active().stats()))
            .chain(set.routes.values().map(|b| (b.info.clone(), b.active().stats())))
            .chain(set.tx_checks.values().map(|b| (b.info.clone(), b.active().stats())))
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
        tracing::warn!(plugin = %info.name, %err, "a message could not be decoded for its filter");
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
