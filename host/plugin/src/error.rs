//! Why loading or calling a plugin failed.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// The component cannot be used: it does not parse, targets an unsupported contract version,
    /// or asks for something the broker does not grant.
    #[error("plugin refused: {0}")]
    Refused(String),
    #[error("plugin ran past its time limit of {ms} ms")]
    Timeout { ms: u64 },
    #[error("plugin exceeded its memory limit of {bytes} bytes")]
    MemoryLimit { bytes: u64 },
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin answered wrongly: {0}")]
    BadOutput(String),
    #[error("plugin is quarantined after {failures} consecutive failures")]
    Quarantined { failures: u32 },
    #[error("plugin has no free instance (limit {instances})")]
    Busy { instances: usize },
    #[error("all {calls} plugin workers stayed busy for the whole wait")]
    Saturated { calls: usize },
    #[error("plugin cache: {0}")]
    Cache(String),
}

impl PluginError {
    /// Whether this failure counts towards quarantine (the plugin misbehaved, rather than being busy
    /// or already quarantined).
    pub fn is_plugin_fault(&self) -> bool {
        matches!(
            self,
            PluginError::Timeout { .. }
                | PluginError::MemoryLimit { .. }
                | PluginError::Trap(_)
                | PluginError::BadOutput(_)
        )
    }
}
