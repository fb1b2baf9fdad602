//! WebAssembly plugins bound to topics and groups: from the configuration file, or through the admin
//! API (the registry).

pub mod compile;
pub mod config;
mod host;

pub use config::{BindingConfig, FailurePolicy, PluginKind, PluginsConfig, Shape};
pub use host::{BindingInfo, Install, PluginHost, Prepared, RESERVED_PARAM_PREFIX, Source, from_record};
