//! ferrymq's WebAssembly plugin runtime — the only crate that knows wasmtime.
//!
//! Plugins are components of the `ferrymq:plugin@0.1.0` worlds (`wit/plugin.wit`). [`PluginEngine`]
//! is the broker's one engine: pooled instances, epoch interruption (1 ms ticks), compiled
//! components cached by digest. [`PluginEngine::load`] checks a component before anything runs it:
//! size, which world it implements, that its contract version is supported and that it imports
//! nothing the broker does not grant (WASI with no files, environment or network; outgoing HTTP only
//! for tx-check plugins, only to allowlisted hosts). [`FilterPlugin`], [`RoutePlugin`] and
//! [`TxCheckPlugin`] are bound plugins with a bounded pool of instances and per-binding limits
//! (memory, call time, output size); a trap or limit breach fails the call, drops that instance, and
//! `failures_max` consecutive failures quarantine the plugin.
//!
//! Invariants: no plugin call can panic the broker or run past its time limit by more than a tick;
//! every answer is checked before the broker acts on it.

mod bindings;
mod calls;
#[cfg(test)]
mod calls_fuzz;
mod engine;
mod error;
mod limits;
mod plugin;
mod state;
mod workers;

pub use calls::{FilterPlugin, REDIRECT_TOPICS_MAX, RouteOutcome, RoutePlugin, TxCheckPlugin, TxOutcome};
pub use engine::{ENGINE_MEMORY_BYTES_MAX, Loaded, PluginEngine, SUPPORTED_VERSIONS, World};
pub use error::{Cause, PluginError};
pub use limits::{CALL_MS_LIMIT, MEMORY_BYTES_LIMIT, PLUGIN_BYTES_MAX, PluginLimits, UPLOAD_BYTES_DEFAULT};
pub use plugin::{DEMOTION, Grant, INLINE_CALL_MAX, INSTANTIATE_MAX, PluginStats, QuarantineHook, SLOW_CALLS_MAX};
pub use state::BodySource;
pub use workers::{QUEUE_WAIT_MAX, WORKER_NICE_DEFAULT, default_workers};
