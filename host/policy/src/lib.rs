//! What the broker asks of plugins: bindings of plugins to topics and groups, the registry of
//! uploaded versions, dry runs, compile checks and signatures.
//!
//! * [`config`] — `[plugins]`: bindings from the configuration file, failure policies, limits.
//! * [`host`] — the plugin host: the table of live bindings and the broker's hooks
//!   (`ferrymq_broker::hooks`) that call them.
//! * [`registry`] — versions and bindings changed through the admin API, kept as records in a system
//!   topic so that the log orders them and replication carries them.
//! * [`dry_run`] — a candidate version judging stored messages, changing nothing.
//! * [`compile`] — compiling a component in a child process, bounded in time and memory.
//! * [`signatures`] — ed25519 signatures over components, by keys trusted per department.
//!
//! `ferrymq_plugin` runs components; this crate decides which run where. The broker never depends
//! on either: it defines the hook traits this crate implements.

pub mod compile;
pub mod config;
#[cfg(test)]
mod config_fuzz;
pub mod dry_run;
mod host;
pub mod registry;
pub mod signatures;

pub use config::{BindingConfig, FailurePolicy, PluginKind, PluginsConfig, Shape};
pub use host::{BindingInfo, Install, PluginHost, Prepared, RESERVED_PARAM_PREFIX, Source, from_record};
pub use registry::Registry;
