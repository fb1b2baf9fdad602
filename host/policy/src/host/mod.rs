//! The plugin host: the table of live bindings and the plugins they run. Bindings are installed
//! from the configuration file at start or by the registry while the broker runs; a change is
//! prepared first (loaded, nothing swapped) and committed at a log position.
//!
//! * `bindings` — what a binding is (its info, versions, the set the hooks read).
//! * `hooks` — the broker's policy hooks over the bindings: filters on receive and pull, routes on
//!   send, tx-checks before any producer is asked.

mod bindings;
mod hooks;
#[cfg(test)]
mod hooks_fuzz;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use anyhow::Context;
use ferrymq_plugin::{FilterPlugin, Grant, PluginEngine, PluginStats, QuarantineHook, RoutePlugin, TxCheckPlugin};

use crate::config::{PluginKind, PluginsConfig};

pub use bindings::{BindingInfo, Install, Prepared, Source};
use bindings::{BindingSet, Bound, Built, Version};
pub use hooks::from_record;

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
        if let Some(hook) = ferrymq_proto::sync::lock(&self.on_quarantine).clone() {
            engine.on_quarantine(hook);
        }
        tracing::info!(workers = self.workers, worker_nice = self.worker_nice, "plugin engine started");
        Ok(self.engine.get_or_init(|| engine))
    }

    /// Calls `hook` on every quarantine. The engine (its clock and worker threads) still starts only
    /// when a plugin is first bound.
    pub fn on_quarantine(&self, hook: QuarantineHook) {
        *ferrymq_proto::sync::lock(&self.on_quarantine) = Some(hook.clone());
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
        let grant = Grant { config, http_allowlist: install.shape.http_allowlist.to_vec(), ..Grant::default() };
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
            params: install
                .shape
                .params
                .iter()
                .filter(|(k, _)| !k.starts_with(RESERVED_PARAM_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            limits: install.shape.limits.clone(),
        };
        Ok(Prepared { info, plugin, keep_history: install.keep_history })
    }

    /// Swaps a prepared plugin in, deciding from `position`; replaces the binding of the same name.
    /// Readers switch atomically: a call already running finishes on the version it started with.
    /// A new version of the same binding (`keep_history`) carries its counters on.
    pub fn commit(&self, prepared: Prepared, position: u64) -> BindingInfo {
        self.commit_logged(prepared, position, true)
    }

    /// [`PluginHost::commit`], logging `plugin bound` at INFO when `announce`, at DEBUG otherwise
    /// (the earlier versions of a filter restored at start).
    pub(crate) fn commit_logged(&self, prepared: Prepared, position: u64, announce: bool) -> BindingInfo {
        let _changing = ferrymq_proto::sync::lock(&self.changing);
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
                let mut retired = PluginStats::default();
                if let Some(old) = current.filters.get(&info.topic).and_then(|g| g.get(&group)).filter(|_| keep) {
                    old.active().release_idle();
                    let skip = old.versions.len().saturating_sub(history_max - 1);
                    retired = old.carried(old.versions.len() - skip);
                    versions.extend(old.versions.iter().skip(skip).map(|v| Version {
                        plugin: v.plugin.clone(),
                        version: v.version,
                        position: v.position,
                    }));
                }
                versions.push(Version { plugin, version, position });
                info.history = versions.iter().map(|v| (v.version, v.position)).collect();
                let bound = Arc::new(Bound { info: info.clone(), versions, retired });
                set.filters.entry(info.topic.clone()).or_default().insert(group, bound);
            }
            Built::Route(plugin) => {
                let retired = current.routes.get(&info.topic).filter(|_| keep).map(|old| old.carried(0));
                let versions = vec![Version { plugin, version, position }];
                let bound = Bound { info: info.clone(), versions, retired: retired.unwrap_or_default() };
                set.routes.insert(info.topic.clone(), Arc::new(bound));
            }
            Built::TxCheck(plugin) => {
                let retired = current.tx_checks.get(&info.topic).filter(|_| keep).map(|old| old.carried(0));
                let versions = vec![Version { plugin, version, position }];
                let bound = Bound { info: info.clone(), versions, retired: retired.unwrap_or_default() };
                set.tx_checks.insert(info.topic.clone(), Arc::new(bound));
            }
        }
        *ferrymq_proto::sync::write(&self.set) = Arc::new(set);
        let version = info.version.map(|v| v.to_string()).unwrap_or_default();
        let (group, plugin) = (info.group.as_deref().unwrap_or(""), info.plugin.as_deref().unwrap_or(""));
        if announce {
            tracing::info!(binding = %info.name, kind = info.kind.name(), topic = %info.topic, group, plugin,
                version, digest = %info.digest, position, "plugin bound");
        } else {
            tracing::debug!(binding = %info.name, kind = info.kind.name(), topic = %info.topic, group, plugin,
                version, digest = %info.digest, position, "plugin bound (an earlier version kept for older messages)");
        }
        info
    }

    /// Unbinds the binding named `name`; whether there was one.
    pub fn remove(&self, name: &str) -> bool {
        let _changing = ferrymq_proto::sync::lock(&self.changing);
        let mut set = (*self.current()).clone();
        let removed = set.remove(name);
        if removed {
            *ferrymq_proto::sync::write(&self.set) = Arc::new(set);
            tracing::info!(binding = %name, "plugin unbound");
        }
        removed
    }

    fn current(&self) -> Arc<BindingSet> {
        ferrymq_proto::sync::read(&self.set).clone()
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

    /// Every binding with its counters, by name. The counters add up over the binding's version
    /// swaps (activations and rollbacks) and the versions a filter keeps for older messages; they
    /// start at zero when the binding is bound or replaced (`PUT`) and when the broker starts.
    /// `quarantined` and `on_workers` are the active version's.
    pub fn bindings(&self) -> Vec<(BindingInfo, PluginStats)> {
        let set = self.current();
        let mut out: Vec<(BindingInfo, PluginStats)> = set
            .filters
            .values()
            .flat_map(HashMap::values)
            .map(|b| (b.info.clone(), b.stats()))
            .chain(set.routes.values().map(|b| (b.info.clone(), b.stats())))
            .chain(set.tx_checks.values().map(|b| (b.info.clone(), b.stats())))
            .collect();
        out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        out
    }
}
