//! The one wasmtime engine of the broker, its epoch ticker, and loading components: size check,
//! digest, compile (or reuse the cached compilation), and checking what the component imports and
//! exports against the contract.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use ferrymq_proto::sync::lock;
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::error::PluginError;
use crate::limits::PLUGIN_BYTES_MAX;
use crate::plugin::QuarantineHook;
use crate::workers::{WORKER_NICE_DEFAULT, Workers, default_workers};

/// The contract versions this broker runs plugins for.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.1.0"];
/// One epoch tick; call limits are counted in ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Engine-wide ceiling on a plugin's linear memory (bindings set lower limits).
pub const ENGINE_MEMORY_BYTES_MAX: u64 = 256 << 20;
/// Wasm stack of one call.
const WASM_STACK_BYTES_MAX: usize = 256 << 10;

/// Which world a component implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum World {
    Filter,
    Route,
    TxCheck,
}

impl World {
    pub fn name(self) -> &'static str {
        match self {
            World::Filter => "filter",
            World::Route => "route",
            World::TxCheck => "tx-check",
        }
    }
}

/// A compiled, checked component.
#[derive(Clone)]
pub struct Loaded {
    /// SHA-256 of the component's bytes, hex.
    pub digest: String,
    pub world: World,
    pub size: usize,
    pub(crate) component: Component,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").field("digest", &self.digest).field("world", &self.world).finish()
    }
}

/// The plugin engine: one per broker.
pub struct PluginEngine {
    pub(crate) engine: Engine,
    cache_dir: Option<PathBuf>,
    pub(crate) workers: Arc<Workers>,
    pub(crate) on_quarantine: Arc<std::sync::Mutex<Option<QuarantineHook>>>,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine").field("cache_dir", &self.cache_dir).finish_non_exhaustive()
    }
}

impl PluginEngine {
    /// An engine with pooled instances (`instances_max` in all), epoch interruption, compiled
    /// components cached in `cache_dir`, and the default workers ([`default_workers`] threads at
    /// niceness [`WORKER_NICE_DEFAULT`]).
    pub fn new(cache_dir: Option<PathBuf>, instances_max: u32) -> Result<Self, PluginError> {
        Self::with_workers(cache_dir, instances_max, default_workers(), WORKER_NICE_DEFAULT)
    }

    /// [`PluginEngine::new`] with `workers` threads for filter and route calls, run at niceness
    /// `worker_nice` (0 keeps the broker's priority).
    pub fn with_workers(
        cache_dir: Option<PathBuf>,
        instances_max: u32,
        workers: usize,
        worker_nice: i32,
    ) -> Result<Self, PluginError> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(instances_max)
            // A Rust wasip2 component instantiates a few core modules, memories and tables.
            .total_core_instances(instances_max * 4)
            .total_memories(instances_max * 2)
            .total_tables(instances_max * 4)
            .max_memory_size(ENGINE_MEMORY_BYTES_MAX as usize);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .max_wasm_stack(WASM_STACK_BYTES_MAX)
            .memory_reservation(ENGINE_MEMORY_BYTES_MAX)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine { what: "configure", cause: e.into() })?;
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| PluginError::Cache { path: dir.clone(), cause: e.into() })?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (engine, stop) = (engine.clone(), stop.clone());
            std::thread::Builder::new()
                .name("ferrymq-plugin-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| PluginError::Engine { what: "start the plugin clock", cause: e.into() })?
        };
        let workers = Arc::new(Workers::start(workers, worker_nice)?);
        Ok(Self { engine, cache_dir, workers, on_quarantine: Arc::default(), stop, ticker: Some(ticker) })
    }

    /// Calls `hook` whenever one of this engine's plugins is quarantined (on the thread of the call
    /// that tipped it; keep it short).
    pub fn on_quarantine(&self, hook: QuarantineHook) {
        *lock(&self.on_quarantine) = Some(hook);
    }

    /// How many worker threads run filter and route calls.
    pub fn workers(&self) -> usize {
        self.workers.count()
    }

    /// Compiles (or reuses the cached compilation of) a component and checks it against the contract.
    pub fn load(&self, bytes: &[u8]) -> Result<Loaded, PluginError> {
        if bytes.len() > PLUGIN_BYTES_MAX {
            return Err(PluginError::Refused(format!(
                "{} bytes is over the plugin size limit of {PLUGIN_BYTES_MAX}",
                bytes.len()
            )));
        }
        // A core module parses as Wasm but is not a component; say what to do about it.
        if bytes.starts_with(b"\0asm") && bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
            return Err(PluginError::Refused(
                "a core WebAssembly module, not a component: build for wasm32-wasip2 (or wrap the module with \
                 `wasm-tools component new`)"
                    .into(),
            ));
        }
        let digest = ferrymq_proto::hex::sha256(bytes);
        let component = self.compile(bytes, &digest)?;
        let world = self.check(&component)?;
        Ok(Loaded { digest, world, size: bytes.len(), component })
    }

    fn cache_path(&self, digest: &str) -> Option<PathBuf> {
        use std::hash::{Hash, Hasher};
        let dir = self.cache_dir.as_ref()?;
        // The compatibility hash changes with the engine's settings and version.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        Some(dir.join(format!("{digest}-{:016x}.cwasm", hasher.finish())))
    }

    fn compile(&self, bytes: &[u8], digest: &str) -> Result<Component, PluginError> {
        let cached = self.cache_path(digest);
        if let Some(path) = cached.as_deref().filter(|p| p.exists()) {
            // SAFETY: the file is one this engine wrote into the broker's own data directory (named by
            // the component's digest and the engine's compatibility hash) and nothing else writes there.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(component) => return Ok(component),
                Err(err) => {
                    tracing::warn!(path = %path.display(), %err, "cached plugin compilation unusable; compiling again")
                }
            }
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| PluginError::Invalid { what: "not a valid WebAssembly component", cause: e.into() })?;
        if let Some(path) = cached
            && let Err(err) = write_cache(&path, &component)
        {
            tracing::warn!(path = %path.display(), %err, "could not cache a plugin compilation");
        }
        Ok(component)
    }

    /// Which world the component implements, and whether its imports are all granted.
    fn check(&self, component: &Component) -> Result<World, PluginError> {
        let ty = component.component_type();
        let exports: Vec<String> = ty.exports(&self.engine).map(|(name, _)| name.to_owned()).collect();
        let world = match (
            exports.iter().any(|e| e == "filter"),
            exports.iter().any(|e| e == "route"),
            exports.iter().any(|e| e == "check"),
        ) {
            (true, false, false) => World::Filter,
            (false, true, false) => World::Route,
            (false, false, true) => World::TxCheck,
            _ => {
                return Err(PluginError::Refused(format!(
                    "a plugin exports exactly one of filter, route or check; this one exports {exports:?}"
                )));
            }
        };
        for (name, _) in ty.imports(&self.engine) {
            if let Some(rest) = name.strip_prefix("ferrymq:plugin/") {
                let version = rest.split_once('@').map(|(_, v)| v).unwrap_or("none");
                if !SUPPORTED_VERSIONS.contains(&version) {
                    return Err(PluginError::Refused(format!(
                        "built for ferrymq:plugin@{version}; this broker runs plugins for {SUPPORTED_VERSIONS:?}"
                    )));
                }
            } else if name.starts_with("wasi:http/") {
                if world != World::TxCheck {
                    return Err(PluginError::Refused(format!(
                        "{} plugins may not make HTTP requests (imports {name})",
                        world.name()
                    )));
                }
            } else if !name.starts_with("wasi:") {
                return Err(PluginError::Refused(format!("imports {name}, which the broker does not provide")));
            }
        }
        Ok(world)
    }
}

fn write_cache(path: &Path, component: &Component) -> Result<(), String> {
    let bytes = component.serialize().map_err(|e| e.to_string())?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        // Workers first: the calls they finish need the epoch ticker to keep their time limits.
        self.workers.stop();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}
