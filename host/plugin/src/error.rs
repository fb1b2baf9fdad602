//! Why loading or calling a plugin failed.

use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

/// The error beneath a [`PluginError`], kept whole and shared: one failed call's error reaches every
/// caller waiting on it, so it is cloned. Shown in the message (with its own chain), so that logs
/// and answers carry what wasmtime or the system said.
#[derive(Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    /// The error itself, to downcast.
    pub fn get(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl From<wasmtime::Error> for Cause {
    fn from(err: wasmtime::Error) -> Self {
        Self(Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(err)))
    }
}

impl From<std::io::Error> for Cause {
    fn from(err: std::io::Error) -> Self {
        Self(Arc::new(err))
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(inner) = source {
            write!(f, ": {inner}")?;
            source = inner.source();
        }
        Ok(())
    }
}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.to_string() == other.to_string()
    }
}

impl Eq for Cause {}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// The component cannot be used: it targets an unsupported contract version, is too large, or
    /// asks for something the broker does not grant (the reason says which).
    #[error("plugin refused: {0}")]
    Refused(String),
    /// The component cannot be used: wasmtime refused it (not a component, imports that cannot be
    /// satisfied, another world).
    #[error("plugin refused: {what}: {cause}")]
    Invalid { what: &'static str, cause: Cause },
    /// The plugin engine or one of its threads could not start.
    #[error("plugin engine: {what}: {cause}")]
    Engine { what: &'static str, cause: Cause },
    #[error("plugin ran past its time limit of {ms} ms")]
    Timeout { ms: u64 },
    #[error("plugin exceeded its memory limit of {bytes} bytes")]
    MemoryLimit { bytes: u64 },
    /// The plugin trapped: `reason` is one line (what the plugin logged as its last error before
    /// trapping, such as a panic message or an exception, and the trap); `cause` is wasmtime's whole
    /// error with the Wasm backtrace, logged at debug level.
    #[error("plugin trapped: {reason}")]
    Trap { reason: String, cause: Cause },
    /// The worker thread running a call went away before answering.
    #[error("the plugin worker failed during the call")]
    WorkerLost,
    #[error("plugin answered wrongly: {0}")]
    BadOutput(String),
    #[error("plugin is quarantined after {failures} consecutive failures")]
    Quarantined { failures: u32 },
    #[error("plugin has no free instance (limit {instances})")]
    Busy { instances: usize },
    #[error("all {calls} plugin workers stayed busy for the whole wait")]
    Saturated { calls: usize },
    #[error("plugin cache {}: {cause}", path.display())]
    Cache { path: PathBuf, cause: Cause },
}

impl PluginError {
    /// Whether this failure counts towards quarantine (the plugin misbehaved, rather than being busy
    /// or already quarantined).
    pub fn is_plugin_fault(&self) -> bool {
        matches!(
            self,
            PluginError::Timeout { .. }
                | PluginError::MemoryLimit { .. }
                | PluginError::Trap { .. }
                | PluginError::WorkerLost
                | PluginError::BadOutput(_)
        )
    }
}
