//! A bound plugin: a pool of instances of one component, its limits, and quarantine after repeated
//! failures. A trap leaves a store unusable, so the instance that failed is dropped and replaced.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ferrymq_proto::sync::lock;
use ferrymq_proto::throttle::Throttle;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Store, StoreLimitsBuilder, Trap};

use crate::bindings::{
    filter::Filter, filter::FilterPre, route::Route, route::RoutePre, tx_check::TxCheck, tx_check::TxCheckPre,
};
use crate::engine::{EPOCH_TICK, Loaded, PluginEngine, World};
use crate::error::{Cause, PluginError};
use crate::limits::PluginLimits;
use crate::state::PluginState;
use crate::workers::Workers;

/// What a binding gives its plugin.
#[derive(Clone, Debug, Default)]
pub struct Grant {
    /// Parameters the plugin reads with `host.config`.
    pub config: Vec<(String, String)>,
    /// Hosts (`name` or `name:port`) a tx-check plugin may call over HTTP.
    pub http_allowlist: Vec<String>,
    /// Lets the plugin write to this process's stderr (a language runtime prints its tracebacks
    /// there). Only for running a plugin by hand: a broker never grants it.
    pub inherit_stderr: bool,
}

/// Counters of one plugin, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PluginStats {
    pub calls: u64,
    pub failures: u64,
    pub call_ns_total: u64,
    pub quarantined: bool,
    pub log_lines_dropped: u64,
    /// Calls that ran on the low-priority workers (the rest ran on the caller's thread).
    pub worker_calls: u64,
    /// Whether the plugin's calls go to the workers now (after a fault or slow calls).
    pub on_workers: bool,
}

/// A plugin call longer than this is slow: [`SLOW_CALLS_MAX`] of them in a row, or one fault, move
/// the plugin's calls to the engine's low-priority workers.
pub const INLINE_CALL_MAX: Duration = Duration::from_millis(1);
/// Slow calls in a row that move a plugin's calls to the workers (a fault moves them at once).
pub const SLOW_CALLS_MAX: u32 = 3;
/// How long a plugin's calls stay on the workers after that.
pub const DEMOTION: Duration = Duration::from_secs(10);

/// Messages remembered per run of consecutive faults, so that a message retried by its producer
/// counts once toward quarantine (past this many distinct messages every fault counts).
const STREAK_MESSAGES_MAX: usize = 64;

/// The message a call judges, as far as quarantine is concerned: faults on the same message in one
/// run of consecutive faults count once. Route calls carry one (a hash of the message id); others
/// do not, and each of their faults counts.
pub(crate) type FaultKey = Option<u64>;

/// The [`FaultKey`] of a message id (none for an empty id).
pub(crate) fn fault_key(message_id: &str) -> FaultKey {
    use std::hash::{Hash, Hasher};
    (!message_id.is_empty()).then(|| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        message_id.hash(&mut hasher);
        hasher.finish()
    })
}

/// Time an instance may take to set itself up (its start functions), when that is longer than a
/// call's limit: paid once per instance, not per call.
pub const INSTANTIATE_MAX: Duration = Duration::from_secs(1);

/// Epoch ticks in `d` (at least one).
fn ticks(d: Duration) -> u64 {
    (d.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64
}

/// Nanoseconds on a process-wide monotonic clock.
fn now_ns() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Told of each quarantine: the plugin's name and the error that tipped it.
pub type QuarantineHook = Arc<dyn Fn(&str, &PluginError) + Send + Sync>;

/// How each world's pre-instantiated component becomes bindings in a store.
pub(crate) trait WorldPre: Send + Sync + Sized {
    type Bindings: Send;
    /// The world a component must target to be bound as this.
    const WORLD: World;
    /// Whether calls go through the inline-or-workers gate (filters and routes); tx-checks run
    /// one at a time on the broker's check thread, mostly waiting on HTTP.
    const GATED: bool;
    fn new(pre: wasmtime::component::InstancePre<PluginState>) -> wasmtime::Result<Self>;
    fn instantiate(&self, store: &mut Store<PluginState>) -> wasmtime::Result<Self::Bindings>;
}

/// `WorldPre` for a generated `*Pre` type: its bindings, its world, whether it is gated.
macro_rules! world_pre {
    ($pre:ident, $bindings:ident, $world:expr, $gated:expr) => {
        impl WorldPre for $pre<PluginState> {
            type Bindings = $bindings;
            const WORLD: World = $world;
            const GATED: bool = $gated;
            fn new(pre: wasmtime::component::InstancePre<PluginState>) -> wasmtime::Result<Self> {
                $pre::new(pre)
            }
            fn instantiate(&self, store: &mut Store<PluginState>) -> wasmtime::Result<$bindings> {
                $pre::instantiate(self, store)
            }
        }
    };
}

world_pre!(FilterPre, Filter, World::Filter, true);
world_pre!(RoutePre, Route, World::Route, true);
world_pre!(TxCheckPre, TxCheck, World::TxCheck, false);

struct Instance<B> {
    store: Store<PluginState>,
    bindings: B,
}

struct Idle<B> {
    instances: Vec<Instance<B>>,
    live: usize,
}

/// One bound plugin of world `P`.
pub(crate) struct Plugin<P: WorldPre> {
    name: Arc<str>,
    engine: wasmtime::Engine,
    pre: P,
    /// The engine's worker threads, for worlds whose calls run there.
    workers: Option<Arc<Workers>>,
    on_quarantine: Arc<Mutex<Option<QuarantineHook>>>,
    /// Until when (on [`now_ns`]'s clock) calls go to the workers; 0: run them inline.
    demoted_until_ns: AtomicU64,
    /// Slow calls in a row.
    slow_streak: AtomicU32,
    /// Calls that ran on the workers.
    worker_calls: AtomicU64,
    /// Calls running inline now.
    inline_running: std::sync::atomic::AtomicUsize,
    limits: PluginLimits,
    config: Arc<Vec<(String, String)>>,
    http_allowlist: Arc<HashSet<String>>,
    inherit_stderr: bool,
    idle: Mutex<Idle<P::Bindings>>,
    freed: Condvar,
    consecutive_failures: AtomicU32,
    /// The messages (by [`FaultKey`]) that failed in the current run of consecutive faults.
    streak: Mutex<Vec<u64>>,
    quarantined: AtomicBool,
    calls: AtomicU64,
    failures: AtomicU64,
    call_ns: AtomicU64,
    log_dropped: AtomicU64,
}

/// The linker of a world: WASI with nothing granted, the contract's host interfaces, and for
/// tx-check outgoing HTTP.
pub(crate) fn linker(engine: &PluginEngine, world: World) -> Result<Linker<PluginState>, PluginError> {
    let refused = |e: wasmtime::Error| PluginError::Invalid { what: "plugin linker", cause: e.into() };
    let mut linker = Linker::new(&engine.engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(refused)?;
    match world {
        World::Filter => Filter::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(refused)?,
        World::Route => Route::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(refused)?,
        World::TxCheck => {
            wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker).map_err(refused)?;
            TxCheck::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(refused)?;
        }
    }
    Ok(linker)
}

impl<P: WorldPre> Plugin<P> {
    pub(crate) fn new(
        name: &str,
        engine: &PluginEngine,
        pre: P,
        on_workers: bool,
        limits: PluginLimits,
        grant: Grant,
    ) -> Self {
        Self {
            name: name.into(),
            engine: engine.engine.clone(),
            pre,
            workers: on_workers.then(|| engine.workers.clone()),
            on_quarantine: engine.on_quarantine.clone(),
            demoted_until_ns: AtomicU64::new(0),
            slow_streak: AtomicU32::new(0),
            worker_calls: AtomicU64::new(0),
            inline_running: std::sync::atomic::AtomicUsize::new(0),
            limits,
            config: Arc::new(grant.config),
            http_allowlist: Arc::new(grant.http_allowlist.into_iter().map(|h| h.to_ascii_lowercase()).collect()),
            inherit_stderr: grant.inherit_stderr,
            idle: Mutex::new(Idle { instances: Vec::new(), live: 0 }),
            freed: Condvar::new(),
            consecutive_failures: AtomicU32::new(0),
            streak: Mutex::new(Vec::new()),
            quarantined: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            call_ns: AtomicU64::new(0),
            log_dropped: AtomicU64::new(0),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    fn new_instance(&self) -> Result<Instance<P::Bindings>, PluginError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(self.limits.memory_bytes_max).unwrap_or(usize::MAX))
            .trap_on_grow_failure(true)
            .instances(16)
            .tables(16)
            .memories(4)
            .build();
        let state = PluginState::new(
            self.name.clone(),
            limits,
            self.config.clone(),
            self.http_allowlist.clone(),
            self.limits.log_lines_per_s_max,
            self.inherit_stderr,
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // Deadlines must be set before instantiating: instantiation runs guest code too. It gets its
        // own budget: a language runtime's instance (Python's carries its interpreter's heap) can
        // take longer to set up than one call may run, once, and the instance then serves many calls.
        store.set_epoch_deadline(self.deadline_ticks().max(ticks(INSTANTIATE_MAX)));
        let bindings = self.pre.instantiate(&mut store).map_err(|e| self.classify_instantiation(e))?;
        Ok(Instance { store, bindings })
    }

    fn deadline_ticks(&self) -> u64 {
        ticks(Duration::from_millis(self.limits.call_ms_max))
    }

    /// Takes an idle instance, or makes one, waiting a call's time limit for one to free up.
    fn checkout(&self) -> Result<Instance<P::Bindings>, PluginError> {
        let mut idle = lock(&self.idle);
        loop {
            if let Some(instance) = idle.instances.pop() {
                return Ok(instance);
            }
            if idle.live < self.limits.instances_max {
                idle.live += 1;
                drop(idle);
                return self.new_instance().inspect_err(|_| lock(&self.idle).live -= 1);
            }
            let wait = Duration::from_millis(self.limits.call_ms_max.max(10));
            let (guard, timeout) =
                self.freed.wait_timeout(idle, wait).unwrap_or_else(std::sync::PoisonError::into_inner);
            idle = guard;
            if timeout.timed_out() && idle.instances.is_empty() && idle.live >= self.limits.instances_max {
                return Err(PluginError::Busy { instances: self.limits.instances_max });
            }
        }
    }

    /// [`Plugin::classify`] for an instantiation, whose time limit is [`INSTANTIATE_MAX`] or the call's.
    fn classify_instantiation(&self, err: wasmtime::Error) -> PluginError {
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => {
                PluginError::Timeout { ms: self.limits.call_ms_max.max(INSTANTIATE_MAX.as_millis() as u64) }
            }
            _ => self.classify(err),
        }
    }

    fn classify(&self, err: wasmtime::Error) -> PluginError {
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PluginError::Timeout { ms: self.limits.call_ms_max },
            _ if format!("{err:?}").contains("forcing trap when growing memory") => {
                PluginError::MemoryLimit { bytes: self.limits.memory_bytes_max }
            }
            trap => {
                // The trap's own words, without the backtrace (which names nothing in a stripped build).
                let what = trap.map_or_else(|| err.to_string(), ToString::to_string);
                let reason = what.lines().next().unwrap_or_default().to_owned();
                PluginError::Trap { reason, cause: Cause::from(err) }
            }
        }
    }

    /// Runs one call on an instance and checks its answer (`check`); an instance whose call failed
    /// is dropped, and enough consecutive plugin faults (a bad answer included) quarantine the
    /// plugin. Faults on the same message (`key`) in one run count once.
    pub(crate) fn call<R, T>(
        &self,
        key: FaultKey,
        prepare: impl FnOnce(&mut PluginState),
        run: impl FnOnce(&mut Store<PluginState>, &P::Bindings) -> wasmtime::Result<R>,
        check: impl FnOnce(R) -> Result<T, PluginError>,
    ) -> Result<T, PluginError> {
        if self.quarantined.load(Ordering::Acquire) {
            return Err(PluginError::Quarantined { failures: self.limits.failures_max });
        }
        let started = Instant::now();
        let result = self.checkout().and_then(|mut instance| {
            prepare(instance.store.data_mut());
            instance.store.set_epoch_deadline(self.deadline_ticks());
            let mut out = run(&mut instance.store, &instance.bindings).map_err(|e| self.classify(e));
            let state = instance.store.data_mut();
            state.bodies = None;
            let logged = state.last_error.take();
            if let Err(PluginError::Trap { reason, cause }) = &mut out {
                tracing::debug!(plugin = %self.name, %cause, "plugin trap");
                if let Some(logged) = logged {
                    *reason = format!("{logged} ({reason})");
                }
            }
            self.log_dropped.fetch_add(std::mem::take(&mut state.log_dropped), Ordering::Relaxed);
            let mut idle = lock(&self.idle);
            match &out {
                Ok(_) => idle.instances.push(instance),
                // After a trap the store cannot be entered again: let the instance go.
                Err(_) => idle.live -= 1,
            }
            drop(idle);
            self.freed.notify_one();
            out
        });
        // A bad answer is a fault of the call like a trap (the instance itself is fine and stays).
        let result = result.and_then(check);
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.call_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.settle(&result, key);
        result
    }

    /// [`Plugin::call`] for a world whose calls may go to the engine's workers. While the plugin is
    /// quick the call runs on the calling thread (a handoff to another thread costs more than a
    /// whole batch); a fault, or [`SLOW_CALLS_MAX`] calls in a row longer than [`INLINE_CALL_MAX`],
    /// send this plugin's calls to the low-priority workers for [`DEMOTION`], so a plugin that spins takes only the CPU
    /// the broker leaves over. At most as many calls run inline at once as there are workers.
    pub(crate) fn call_on_worker<R, T>(
        self: &Arc<Self>,
        key: FaultKey,
        prepare: impl FnOnce(&mut PluginState) + Send + 'static,
        run: impl FnOnce(&mut Store<PluginState>, &P::Bindings) -> wasmtime::Result<R> + Send + 'static,
        check: impl FnOnce(R) -> Result<T, PluginError> + Send + 'static,
    ) -> Result<T, PluginError>
    where
        T: Send + 'static,
        P: 'static,
    {
        let Some(workers) = &self.workers else { return self.call(key, prepare, run, check) };
        if self.quarantined.load(Ordering::Acquire) {
            // Answered here: no thread needs to wake for a refusal.
            return self.call(key, prepare, run, check);
        }
        if self.try_inline(workers.count()) {
            let started = Instant::now();
            let result = self.call(key, prepare, run, check);
            self.inline_running.fetch_sub(1, Ordering::AcqRel);
            self.judge(started.elapsed(), &result);
            return result;
        }
        self.worker_calls.fetch_add(1, Ordering::Relaxed);
        let plugin = self.clone();
        workers.run(move || {
            let started = Instant::now();
            let result = plugin.call(key, prepare, run, check);
            plugin.judge(started.elapsed(), &result);
            result
        })
    }

    /// Whether the next call may run on the calling thread (and if so, counts it as running).
    fn try_inline(&self, most: usize) -> bool {
        if now_ns() < self.demoted_until_ns.load(Ordering::Acquire) {
            return false;
        }
        self.inline_running.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < most).then_some(n + 1)).is_ok()
    }

    /// Demotes the plugin to the workers after a fault or [`SLOW_CALLS_MAX`] slow calls in a row (one
    /// slow call may just have been preempted).
    fn judge<R>(&self, took: Duration, result: &Result<R, PluginError>) {
        let faulted = result.as_ref().err().is_some_and(PluginError::is_plugin_fault);
        let slow = if took > INLINE_CALL_MAX {
            self.slow_streak.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.slow_streak.store(0, Ordering::Release);
            0
        };
        if faulted || slow >= SLOW_CALLS_MAX {
            let now = now_ns();
            if self.demoted_until_ns.swap(now.saturating_add(DEMOTION.as_nanos() as u64), Ordering::AcqRel) < now {
                tracing::debug!(plugin = %self.name, ?took, faulted, "plugin calls move to the low-priority workers");
            }
        }
    }

    /// Records the outcome of a call for quarantine: a success ends the run of consecutive faults; a
    /// fault extends it, unless it is on a message (`key`) that already failed in this run.
    fn settle<R>(&self, result: &Result<R, PluginError>, key: FaultKey) {
        match result {
            Ok(_) => {
                if self.consecutive_failures.swap(0, Ordering::AcqRel) != 0 {
                    lock(&self.streak).clear();
                }
            }
            Err(err) if err.is_plugin_fault() => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let again = key.is_some_and(|key| {
                    let mut streak = lock(&self.streak);
                    if streak.contains(&key) {
                        return true;
                    }
                    if streak.len() < STREAK_MESSAGES_MAX {
                        streak.push(key);
                    }
                    false
                });
                let n = if again {
                    self.consecutive_failures.load(Ordering::Acquire)
                } else {
                    self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1
                };
                static FAILED: Throttle = Throttle::per_second(10);
                if let Some(suppressed) = FAILED.admit() {
                    tracing::warn!(plugin = %self.name, %err, consecutive = n, same_message = again, suppressed, "plugin call failed");
                }
                if !again && n >= self.limits.failures_max && !self.quarantined.swap(true, Ordering::AcqRel) {
                    tracing::error!(plugin = %self.name, failures = n, "plugin quarantined: its binding's failure policy applies until it is replaced");
                    let hook = lock(&self.on_quarantine).clone();
                    if let Some(hook) = hook {
                        hook(&self.name, err);
                    }
                }
            }
            Err(_) => {}
        }
    }

    /// Drops the idle instances (their memory goes back to the engine's pool); calls still make new
    /// ones when they need them.
    pub(crate) fn release_idle(&self) {
        let released = {
            let mut idle = lock(&self.idle);
            let released = std::mem::take(&mut idle.instances);
            idle.live -= released.len();
            released
        };
        drop(released);
    }

    pub(crate) fn stats(&self) -> PluginStats {
        PluginStats {
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            call_ns_total: self.call_ns.load(Ordering::Relaxed),
            quarantined: self.quarantined.load(Ordering::Acquire),
            log_lines_dropped: self.log_dropped.load(Ordering::Relaxed),
            worker_calls: self.worker_calls.load(Ordering::Relaxed),
            on_workers: self.workers.is_some() && now_ns() < self.demoted_until_ns.load(Ordering::Acquire),
        }
    }
}

/// `loaded` ready to run as a plugin of `P`'s world, named `name`, under `limits`, granted `grant`.
pub(crate) fn bind<P: WorldPre>(
    engine: &PluginEngine,
    name: &str,
    loaded: &Loaded,
    limits: PluginLimits,
    grant: Grant,
) -> Result<Arc<Plugin<P>>, PluginError> {
    if loaded.world != P::WORLD {
        return Err(PluginError::Refused(format!(
            "a {} plugin cannot be bound as a {}",
            loaded.world.name(),
            P::WORLD.name()
        )));
    }
    let linker = linker(engine, loaded.world)?;
    let pre = linker
        .instantiate_pre(&loaded.component)
        .map_err(|e| PluginError::Invalid { what: "the plugin's imports cannot be satisfied", cause: e.into() })?;
    let pre = P::new(pre)
        .map_err(|e| PluginError::Invalid { what: "the plugin does not match its world", cause: e.into() })?;
    Ok(Arc::new(Plugin::new(name, engine, pre, P::GATED, limits, grant)))
}
