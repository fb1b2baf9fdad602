//! WebAssembly plugins bound to topics and groups from the configuration.

pub mod config;
mod host;

pub use config::{BindingConfig, FailurePolicy, PluginKind, PluginsConfig};
pub use host::{BindingInfo, PluginHost};
