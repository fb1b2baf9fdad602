//! The plugin registry: uploaded plugin versions and the bindings that run them, changed through the
//! admin API while the broker runs.
//!
//! Every change is a record in the plugins system topic (so the log orders it among messages and
//! replication carries it); a snapshot file (`<data_dir>/plugins/registry.json`) and the components
//! (`<data_dir>/plugins/components/<digest>.wasm`) spare a full replay at start and survive retention.
//! At start the snapshot is loaded, the records after it are replayed, and every binding is bound.
//!
//! An activation's record position is where the new version takes over: a route decides exactly the
//! messages stored after it (sends are held while the record is written and the route swapped); a
//! filter judges each message with the version active where that message was stored.

mod records;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use ferrymq_broker::{Broker, durable_file};
use serde::{Deserialize, Serialize};

pub use records::{Activation, BindingRecord, BindingSpec, VersionInfo};
use records::{CHUNK_BYTES, Record};

use crate::compile::Compiler;
use crate::{BindingInfo, Install, PluginHost, PluginKind, Prepared, Source};
use ferrymq_broker::system_topic::{self, PLUGINS_TOPIC};

/// An error from below the registry (compiling, loading or preparing a component), with its chain.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Why a registry change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A plugin name that is not `<department>/<plugin>` (the reason says which rule it broke).
    #[error("{0}")]
    BadName(String),
    /// A binding that cannot work (the reason says why).
    #[error("{0}")]
    BadBinding(String),
    #[error("plugin {plugin} has no version {version}")]
    NoSuchVersion { plugin: String, version: u32 },
    #[error("no binding named {0}")]
    NoSuchBinding(String),
    #[error("no topic named {0}: create it first (`ferrymq admin topic create {0}`)")]
    NoSuchTopic(String),
    #[error("{plugin} version {version} is a {world} plugin and cannot be bound as a {kind}")]
    WrongWorld { plugin: String, version: u32, world: String, kind: &'static str },
    #[error("binding {binding} runs {plugin} version {version}; activate another version or unbind it first")]
    VersionInUse { binding: String, plugin: String, version: u32 },
    #[error("binding {0} comes from the configuration file and changes only with it")]
    FromConfigFile(String),
    #[error("binding {0} has no earlier version to roll back to")]
    NoEarlierVersion(String),
    /// A request that cannot be carried out as asked (the reason says why).
    #[error("{0}")]
    BadRequest(String),
    /// The upload is not a component this broker can run.
    #[error("the component is refused")]
    Refused(#[source] SourceError),
    /// The stored version could not be made ready to run.
    #[error("binding {binding} cannot run {plugin} version {version}")]
    Unrunnable {
        binding: String,
        plugin: String,
        version: u32,
        #[source]
        source: SourceError,
    },
    #[error("the plugin engine is not available")]
    Engine(#[source] SourceError),
    #[error("the component could not be kept on disk")]
    Disk(#[source] std::io::Error),
    #[error("the registry record could not be stored")]
    Store(#[source] ferrymq_store::StoreError),
}

impl RegistryError {
    /// What kind of failure this is, for a caller that answers with a status.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::NoSuchVersion { .. } | Self::NoSuchBinding(_) | Self::NoSuchTopic(_) => ErrorClass::NotFound,
            Self::VersionInUse { .. }
            | Self::FromConfigFile(_)
            | Self::NoEarlierVersion(_)
            | Self::Unrunnable { .. } => ErrorClass::Conflict,
            Self::BadName(_)
            | Self::BadBinding(_)
            | Self::BadRequest(_)
            | Self::WrongWorld { .. }
            | Self::Refused(_) => ErrorClass::Invalid,
            Self::Engine(_) | Self::Disk(_) | Self::Store(_) => ErrorClass::Unavailable,
        }
    }
}

/// The kinds of [`RegistryError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// What the request names does not exist.
    NotFound,
    /// The request contradicts the registry's state.
    Conflict,
    /// The request itself is wrong.
    Invalid,
    /// The broker could not keep the change; the request may succeed later.
    Unavailable,
}

type Result<T> = std::result::Result<T, RegistryError>;

/// What the registry holds; also the snapshot file's content.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
struct State {
    /// The plugins topic's queue offset of the first record not yet applied.
    next: u64,
    /// plugin name → version → what was uploaded.
    plugins: BTreeMap<String, BTreeMap<u32, VersionInfo>>,
    bindings: BTreeMap<String, BindingRecord>,
    /// plugin name → the number its next version gets (numbers are never reused, deleted or not).
    #[serde(default)]
    next_version: BTreeMap<String, u32>,
    /// Components whose chunks are being collected during a replay: digest → chunks.
    #[serde(skip)]
    partial: BTreeMap<String, Vec<Option<Vec<u8>>>>,
}

/// The registry of a running broker.
pub struct Registry {
    broker: Arc<Broker>,
    host: Arc<PluginHost>,
    dir: PathBuf,
    compiler: Compiler,
    state: Mutex<State>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// `<department>/<plugin>`: each part lowercase letters, digits, `-` and `_`, at most 64 bytes.
pub fn check_plugin_name(name: &str) -> std::result::Result<(), String> {
    let ok = |part: &str| {
        !part.is_empty()
            && part.len() <= 64
            && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    };
    match name.split_once('/') {
        Some((department, plugin)) if ok(department) && ok(plugin) => Ok(()),
        _ => Err(format!(
            "plugin name {name:?} must be <department>/<plugin>, each part lowercase letters, digits, '-' or '_'"
        )),
    }
}

/// Most chunks a component can have.
const CHUNKS_MAX: usize = ferrymq_plugin::PLUGIN_BYTES_MAX.div_ceil(CHUNK_BYTES);

impl Registry {
    /// Loads the snapshot, replays the records after it, and binds every binding.
    pub fn open(
        broker: Arc<Broker>,
        host: Arc<PluginHost>,
        data_dir: &Path,
        compiler: Compiler,
    ) -> anyhow::Result<Self> {
        let dir = data_dir.join("plugins");
        std::fs::create_dir_all(dir.join("components"))
            .with_context(|| format!("create {}", dir.join("components").display()))?;
        let snapshot = dir.join("registry.json");
        let mut state: State = match std::fs::read(&snapshot) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("read {}", snapshot.display()))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(err) => return Err(err).with_context(|| format!("read {}", snapshot.display())),
        };
        let registry = Self { broker, host, dir, compiler, state: Mutex::new(State::default()) };
        let store = registry.broker.store();
        let first = system_topic::first(store, PLUGINS_TOPIC);
        if first > state.next {
            tracing::warn!(
                from = state.next,
                first,
                "plugin registry records were removed by retention before they were saved in registry.json; those changes are lost"
            );
        }
        let replayed = registry.replay_log(&mut state);
        for (name, binding) in &state.bindings {
            if let Err(err) = registry.restore(&state, binding) {
                tracing::error!(binding = %name, err = %format!("{err:#}"), "plugin binding could not be restored; it stays unbound");
            }
        }
        let count = state.bindings.len();
        *registry.lock() = state;
        registry.save()?;
        tracing::info!(bindings = count, replayed, "plugin registry loaded");
        Ok(registry)
    }

    /// Applies the plugin records that reached the log since the last look (a slave's log grows
    /// with its master's): new and changed bindings are bound, removed ones unbound. Returns how many
    /// records it applied.
    pub fn follow_log(&self) -> u64 {
        let mut state = self.lock().clone();
        let before = state.bindings.clone();
        let replayed = self.replay_log(&mut state);
        if replayed == 0 {
            return 0;
        }
        for (name, binding) in &state.bindings {
            if before.get(name) != Some(binding) {
                match self.restore(&state, binding) {
                    Ok(()) => {
                        tracing::info!(binding = %name, version = binding.spec.version, "plugin binding follows the master")
                    }
                    Err(err) => {
                        tracing::error!(binding = %name, err = %format!("{err:#}"), "plugin binding from the master could not be bound")
                    }
                }
            }
        }
        for name in before.keys().filter(|name| !state.bindings.contains_key(*name)) {
            self.host.remove(name);
            tracing::info!(binding = %name, "plugin binding removed, as on the master");
        }
        *self.lock() = state;
        self.save_or_warn();
        replayed
    }

    /// Applies the plugin records from `state.next` to the end of the log; returns how many.
    fn replay_log(&self, state: &mut State) -> u64 {
        let mut replayed = 0u64;
        state.next = system_topic::scan(self.broker.store(), PLUGINS_TOPIC, state.next, |queue_offset, stored| {
            replayed += 1;
            let parsed = stored
                .decode()
                .map_err(|e| e.to_string())
                .and_then(|r| Record::parse(r.body).map(|(record, payload)| (record, payload.to_vec())));
            let at = Appended { offset: stored.offset(), queue_offset };
            match parsed {
                Ok((record, payload)) => self.replay(state, record, payload, at),
                Err(err) => {
                    tracing::warn!(offset = stored.offset(), %err, "plugin registry record unreadable; skipped")
                }
            }
        });
        replayed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        ferrymq_proto::sync::lock(&self.state)
    }

    fn component_path(&self, digest: &str) -> PathBuf {
        self.dir.join("components").join(format!("{digest}.wasm"))
    }

    /// The bytes of an uploaded component.
    pub fn component(&self, digest: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.component_path(digest);
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        anyhow::ensure!(ferrymq_proto::hex::sha256(&bytes) == digest, "{} does not match its digest", path.display());
        Ok(bytes)
    }

    fn write_component(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.component_path(digest);
        if path.exists() {
            return Ok(());
        }
        durable_file::write(&path, bytes)
    }

    /// Writes the snapshot.
    fn save(&self) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(&*self.lock())?;
        Ok(durable_file::write(&self.dir.join("registry.json"), &bytes)?)
    }

    fn save_or_warn(&self) {
        if let Err(err) = self.save() {
            tracing::warn!(err = %format!("{err:#}"), "plugin registry snapshot not saved; the records in the log still hold the change");
        }
    }

    /// Applies one record read back from the log (start-up replay).
    fn replay(&self, state: &mut State, record: Record, payload: Vec<u8>, at: Appended) {
        match record {
            Record::Chunk { digest, index, count } => {
                state.next = state.next.max(at.queue_offset + 1);
                if self.component_path(&digest).exists() {
                    return;
                }
                if count as usize > CHUNKS_MAX || index >= count {
                    tracing::warn!(%digest, index, count, "component chunk out of range; skipped");
                    return;
                }
                let chunks = state.partial.entry(digest.clone()).or_insert_with(|| vec![None; count as usize]);
                if let Some(slot) = chunks.get_mut(index as usize) {
                    *slot = Some(payload);
                }
                if chunks.iter().all(Option::is_some) {
                    let bytes: Vec<u8> = chunks.iter().flatten().flatten().copied().collect();
                    state.partial.remove(&digest);
                    if ferrymq_proto::hex::sha256(&bytes) == digest {
                        if let Err(err) = self.write_component(&digest, &bytes) {
                            tracing::warn!(%digest, err = %format!("{err:#}"), "component not restored");
                        }
                    } else {
                        tracing::warn!(%digest, "component chunks in the log do not match their digest; skipped");
                    }
                }
            }
            other => apply(state, other, at),
        }
    }

    /// Loads `binding`'s plugin into a form ready to swap in (nothing changes yet).
    /// `keep_history` keeps a filter's older versions for older messages.
    fn prepare(&self, state: &State, spec: &BindingSpec, keep_history: bool) -> anyhow::Result<Prepared> {
        let version = state
            .plugins
            .get(&spec.plugin)
            .and_then(|v| v.get(&spec.version))
            .with_context(|| format!("plugin {} version {} is not in the registry", spec.plugin, spec.version))?;
        let bytes = self.component(&version.digest)?;
        self.host.prepare(&Install {
            shape: spec.shape(),
            source: Source::Admin,
            component: None,
            plugin: Some(&spec.plugin),
            version: Some(spec.version),
            bytes: &bytes,
            position: 0,
            keep_history,
        })
    }

    /// Binds a binding restored at start; a filter gets back the versions it keeps for older messages.
    fn restore(&self, state: &State, binding: &BindingRecord) -> anyhow::Result<()> {
        let kept = match binding.spec.rules.kind {
            PluginKind::Filter => self.host.history_max(),
            PluginKind::Route | PluginKind::TxCheck => 1,
        };
        let skip = binding.history.len().saturating_sub(kept);
        let last = (binding.history.len() - skip).saturating_sub(1);
        let mut spec = binding.spec.clone();
        for (i, activation) in binding.history.iter().skip(skip).enumerate() {
            spec.version = activation.version;
            match self.prepare(state, &spec, i > 0) {
                Ok(prepared) => {
                    // One `plugin bound` line at INFO per binding, for the version that decides now.
                    self.host.commit_logged(prepared, activation.position, i == last);
                }
                Err(err) if activation.version != binding.spec.version => {
                    tracing::warn!(binding = %spec.name, version = activation.version, err = %format!("{err:#}"),
                        "an earlier version of a filter could not be restored; the next one judges its messages");
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Appends `record` to the plugins topic; returns where it was stored.
    fn append(&self, record: &Record) -> Result<Appended> {
        let body = record.encode(&[]);
        let stored = system_topic::append(self.broker.store(), PLUGINS_TOPIC, self.broker.now_ms(), body)
            .map_err(RegistryError::Store)?;
        Ok(Appended { offset: stored.offset, queue_offset: stored.queue_offset })
    }

    /// The broker whose store holds the registry's records.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The plugin host the registry binds into.
    pub fn host(&self) -> &PluginHost {
        &self.host
    }

    /// Every plugin and its versions.
    pub fn plugins(&self) -> BTreeMap<String, Vec<VersionInfo>> {
        self.lock()
            .plugins
            .iter()
            .map(|(name, versions)| (name.clone(), versions.values().cloned().collect()))
            .collect()
    }

    pub fn version(&self, plugin: &str, version: u32) -> Option<VersionInfo> {
        self.lock().plugins.get(plugin).and_then(|v| v.get(&version)).cloned()
    }

    pub fn binding(&self, name: &str) -> Option<BindingRecord> {
        self.lock().bindings.get(name).cloned()
    }

    pub fn bindings(&self) -> Vec<BindingRecord> {
        self.lock().bindings.values().cloned().collect()
    }

    /// Validates and stores a new version of `plugin`. A component already uploaded as a version of
    /// it answers that version (`false`: nothing new was stored).
    pub fn push(
        &self,
        plugin: &str,
        bytes: &[u8],
        uploader: &str,
        signed_by: Option<String>,
    ) -> Result<(VersionInfo, bool)> {
        check_plugin_name(plugin).map_err(RegistryError::BadName)?;
        let digest = ferrymq_proto::hex::sha256(bytes);
        if let Some(existing) = self.lock().plugins.get(plugin).and_then(|v| v.values().find(|v| v.digest == digest)) {
            return Ok((existing.clone(), false));
        }
        // Compiled in a separate process under a time and memory budget; the result lands in the
        // engine's cache, so loading it here is only a check of its imports and exports.
        self.compiler.compile(bytes).map_err(|e| RegistryError::Refused(e.into()))?;
        let engine = self.host.engine().map_err(|e| RegistryError::Engine(e.into()))?;
        let loaded = engine.load(bytes).map_err(|e| RegistryError::Refused(e.into()))?;
        self.write_component(&digest, bytes).map_err(RegistryError::Disk)?;
        let mut state = self.lock();
        // Another upload of the same bytes may have finished while this one compiled.
        if let Some(existing) = state.plugins.get(plugin).and_then(|v| v.values().find(|v| v.digest == digest)) {
            return Ok((existing.clone(), false));
        }
        let version = state.next_version.get(plugin).copied().unwrap_or(1);
        let count = u32::try_from(bytes.len().div_ceil(CHUNK_BYTES)).unwrap_or(u32::MAX);
        let mut stored = Vec::with_capacity(count as usize);
        for (index, chunk) in bytes.chunks(CHUNK_BYTES).enumerate() {
            let record = Record::Chunk { digest: digest.clone(), index: index as u32, count };
            stored.push(system_topic::record(PLUGINS_TOPIC, self.broker.now_ms(), record.encode(chunk)));
        }
        let chunks = self.broker.store().append_batch_wait(stored).map_err(RegistryError::Store)?;
        if let Some(last) = chunks.last() {
            state.next = state.next.max(last.queue_offset + 1);
        }
        let mut info = VersionInfo {
            plugin: plugin.to_owned(),
            version,
            digest,
            size: bytes.len() as u64,
            world: loaded.world.name().to_owned(),
            uploader: uploader.to_owned(),
            uploaded_ms: self.broker.now_ms(),
            signed_by,
            position: 0,
        };
        let at = self.append(&Record::Version(info.clone()))?;
        info.position = at.offset;
        apply(&mut state, Record::Version(info.clone()), at);
        drop(state);
        self.save_or_warn();
        tracing::info!(plugin, version, digest = %info.digest, size = info.size, world = %info.world, uploader, "plugin version uploaded");
        Ok((info, true))
    }

    /// Deletes a version no binding runs.
    pub fn delete_version(&self, plugin: &str, version: u32) -> Result<VersionInfo> {
        let mut state = self.lock();
        let info = state
            .plugins
            .get(plugin)
            .and_then(|v| v.get(&version))
            .cloned()
            .ok_or_else(|| RegistryError::NoSuchVersion { plugin: plugin.to_owned(), version })?;
        if let Some(b) = state.bindings.values().find(|b| b.spec.plugin == plugin && b.spec.version == version) {
            return Err(RegistryError::VersionInUse {
                binding: b.spec.name.clone(),
                plugin: plugin.to_owned(),
                version,
            });
        }
        let record = Record::VersionDeleted { plugin: plugin.to_owned(), version };
        let at = self.append(&record)?;
        apply(&mut state, record, at);
        drop(state);
        self.save_or_warn();
        tracing::info!(plugin, version, "plugin version deleted");
        Ok(info)
    }

    /// Creates or replaces a binding. A route's swap happens with sends held, so the record's position
    /// divides the messages it decides from those its predecessor decided.
    pub fn bind(&self, spec: BindingSpec) -> Result<BindingInfo> {
        spec.check().map_err(RegistryError::BadBinding)?;
        // A binding to a topic that does not exist would never run (or run on a topic made later for
        // something else): refused. Bindings in the configuration file are not checked this way:
        // they are bound before the topics they name are created.
        if self.broker.metadata().topic(&spec.rules.topic).is_none() {
            return Err(RegistryError::NoSuchTopic(spec.rules.topic.clone()));
        }
        if let Some(existing) = self.host.binding(&spec.name).filter(|b| b.source == Source::Config) {
            return Err(RegistryError::FromConfigFile(existing.name));
        }
        let mut state = self.lock();
        runnable(&state, &spec.plugin, spec.version, spec.rules.kind)?;
        let prepared = self.prepare(&state, &spec, false).map_err(|e| unrunnable(&spec, e))?;
        // Sends are held if a route comes or goes: the one this binding was may have been a route.
        let replaces_route = state.bindings.get(&spec.name).is_some_and(|b| b.spec.rules.kind == PluginKind::Route);
        let kind = if replaces_route { PluginKind::Route } else { spec.rules.kind };
        let info = self.record_and_swap(&mut state, kind, Record::Bound { spec }, prepared)?;
        drop(state);
        self.save_or_warn();
        Ok(info)
    }

    /// Activates `version` of the bound plugin on `binding`.
    pub fn activate(&self, binding: &str, version: u32) -> Result<BindingInfo> {
        self.switch(binding, Some(version))
    }

    /// Activates the version that was active before the current one.
    pub fn rollback(&self, binding: &str) -> Result<BindingInfo> {
        self.switch(binding, None)
    }

    fn switch(&self, binding: &str, version: Option<u32>) -> Result<BindingInfo> {
        let mut state = self.lock();
        let current = binding_named(&state, binding)?;
        let rollback = version.is_none();
        let version = match version {
            Some(v) => v,
            None => {
                let n = current.history.len();
                current
                    .history
                    .get(n.wrapping_sub(2))
                    .filter(|_| n >= 2)
                    .map(|a| a.version)
                    .ok_or_else(|| RegistryError::NoEarlierVersion(binding.to_owned()))?
            }
        };
        runnable(&state, &current.spec.plugin, version, current.spec.rules.kind)?;
        let mut spec = current.spec.clone();
        spec.version = version;
        let prepared = self.prepare(&state, &spec, true).map_err(|e| unrunnable(&spec, e))?;
        let record = Record::Activated { binding: binding.to_owned(), version, rollback };
        let info = self.record_and_swap(&mut state, spec.rules.kind, record, prepared)?;
        drop(state);
        self.save_or_warn();
        tracing::info!(binding, version, rollback, position = info.position, "plugin version activated");
        Ok(info)
    }

    /// Removes a binding.
    pub fn unbind(&self, binding: &str) -> Result<BindingRecord> {
        let mut state = self.lock();
        let current = binding_named(&state, binding)?;
        let record = Record::Unbound { binding: binding.to_owned() };
        self.with_sends_held(current.spec.rules.kind, || -> Result<()> {
            let at = self.append(&record)?;
            apply(&mut state, record.clone(), at);
            self.host.remove(binding);
            Ok(())
        })?;
        drop(state);
        self.save_or_warn();
        Ok(current)
    }

    /// Appends `record`, applies it, and swaps `prepared` in from the record's position, with sends
    /// held when a route is involved (`kind`).
    fn record_and_swap(
        &self,
        state: &mut State,
        kind: PluginKind,
        record: Record,
        prepared: Prepared,
    ) -> Result<BindingInfo> {
        self.with_sends_held(kind, || {
            let at = self.append(&record)?;
            apply(state, record, at);
            Ok(self.host.commit(prepared, at.offset))
        })
    }

    /// Runs `change` with sends held when it swaps a route (filters and checks need no hold: they
    /// judge by position or at check time).
    fn with_sends_held<R>(&self, kind: PluginKind, change: impl FnOnce() -> R) -> R {
        match kind {
            PluginKind::Route => self.broker.with_sends_held(change),
            PluginKind::Filter | PluginKind::TxCheck => change(),
        }
    }
}

/// Where a record was stored: its commit-log position and its offset in the plugins topic.
#[derive(Clone, Copy, Debug)]
struct Appended {
    offset: u64,
    queue_offset: u64,
}

/// A copy of the binding named `binding`.
fn binding_named(state: &State, binding: &str) -> Result<BindingRecord> {
    state.bindings.get(binding).cloned().ok_or_else(|| RegistryError::NoSuchBinding(binding.to_owned()))
}

/// `version` of `plugin`, if it exists and is a plugin of `kind`.
fn runnable<'a>(state: &'a State, plugin: &str, version: u32, kind: PluginKind) -> Result<&'a VersionInfo> {
    let info = state
        .plugins
        .get(plugin)
        .and_then(|v| v.get(&version))
        .ok_or_else(|| RegistryError::NoSuchVersion { plugin: plugin.to_owned(), version })?;
    if info.world != kind.name() {
        return Err(RegistryError::WrongWorld {
            plugin: plugin.to_owned(),
            version,
            world: info.world.clone(),
            kind: kind.name(),
        });
    }
    Ok(info)
}

fn unrunnable(spec: &BindingSpec, source: anyhow::Error) -> RegistryError {
    RegistryError::Unrunnable {
        binding: spec.name.clone(),
        plugin: spec.plugin.clone(),
        version: spec.version,
        source: source.into(),
    }
}

/// Applies a record stored `at` to `state`; the state then reflects the log up to and including it.
fn apply(state: &mut State, record: Record, at: Appended) {
    state.next = state.next.max(at.queue_offset + 1);
    let position = at.offset;
    match record {
        Record::Chunk { .. } => {}
        Record::Version(mut info) => {
            info.position = position;
            let next = state.next_version.entry(info.plugin.clone()).or_insert(1);
            *next = (*next).max(info.version + 1);
            state.plugins.entry(info.plugin.clone()).or_default().insert(info.version, info);
        }
        Record::VersionDeleted { plugin, version } => {
            if let Some(versions) = state.plugins.get_mut(&plugin) {
                versions.remove(&version);
                if versions.is_empty() {
                    state.plugins.remove(&plugin);
                }
            }
        }
        Record::Bound { spec } => {
            let activation = Activation { version: spec.version, position, rollback: false };
            state.bindings.insert(spec.name.clone(), BindingRecord { spec, history: vec![activation] });
        }
        Record::Activated { binding, version, rollback } => {
            if let Some(b) = state.bindings.get_mut(&binding) {
                b.spec.version = version;
                b.history.push(Activation { version, position, rollback });
                let excess = b.history.len().saturating_sub(records::HISTORY_RECORDS_MAX);
                b.history.drain(..excess);
            }
        }
        Record::Unbound { binding } => {
            state.bindings.remove(&binding);
        }
    }
}
