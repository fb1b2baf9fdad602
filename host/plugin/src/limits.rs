//! The limits a binding sets on its plugin.

/// Per-binding limits; defaults from the design's named limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginLimits {
    /// Linear memory of one instance.
    pub memory_bytes_max: u64,
    /// Wall time of one call (enforced with epoch interruption at 1 ms ticks).
    pub call_ms_max: u64,
    /// Largest answer accepted from one call (bitmap, route change, …).
    pub output_bytes_max: usize,
    /// Instances kept for concurrent calls.
    pub instances_max: usize,
    /// Consecutive failed calls before the plugin is quarantined.
    pub failures_max: u32,
    /// Log lines a plugin may write per second; more are dropped and counted.
    pub log_lines_per_s_max: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            memory_bytes_max: 64 << 20,
            call_ms_max: 10,
            output_bytes_max: 1 << 20,
            instances_max: 4,
            failures_max: 5,
            log_lines_per_s_max: 100,
        }
    }
}

/// Largest plugin binary the engine accepts at all; `[plugins] upload_bytes_max` may not exceed it.
pub const PLUGIN_BYTES_MAX: usize = 256 << 20;
/// Largest upload accepted unless configured otherwise: room for a Python component, which carries
/// its interpreter (~18 MB), or a JavaScript one with its engine (~12 MB).
pub const UPLOAD_BYTES_DEFAULT: usize = 64 << 20;
/// Largest memory limit a binding may set: what the engine reserves per instance.
pub const MEMORY_BYTES_LIMIT: u64 = crate::engine::ENGINE_MEMORY_BYTES_MAX;
/// Longest time limit a binding may set.
pub const CALL_MS_LIMIT: u64 = 60_000;

impl PluginLimits {
    pub fn validate(&self) -> Result<(), String> {
        if self.memory_bytes_max == 0 || self.memory_bytes_max > MEMORY_BYTES_LIMIT {
            return Err(format!("memory_bytes_max must be between 1 and {MEMORY_BYTES_LIMIT}"));
        }
        if self.call_ms_max == 0 || self.call_ms_max > CALL_MS_LIMIT {
            return Err(format!("call_ms_max must be between 1 and {CALL_MS_LIMIT}"));
        }
        if self.output_bytes_max == 0 || self.instances_max == 0 || self.failures_max == 0 {
            return Err("output_bytes_max, instances_max and failures_max must be positive".into());
        }
        Ok(())
    }
}
