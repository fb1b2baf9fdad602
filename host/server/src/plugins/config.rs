//! `[plugins]`: the plugin engine's settings and the plugins bound to topics and groups.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferrymq_broker::metadata::GROUP_NAME_BYTES_MAX;
use ferrymq_plugin::{CALL_MS_LIMIT, MEMORY_BYTES_LIMIT, PluginLimits};
use ferrymq_store::TOPIC_BYTES_MAX;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Plugin instances the engine keeps at once, over all bindings.
    pub instances_max: u32,
    /// Compiled plugins are cached here; empty means `<data_dir>/plugins/cache`.
    pub cache_dir: Option<PathBuf>,
    pub bindings: Vec<BindingConfig>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self { instances_max: 256, cache_dir: None, bindings: Vec::new() }
    }
}

/// Which world a binding's plugin implements, and so where it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    /// On receive and pull, for one (topic, group).
    Filter,
    /// On send, for one topic.
    Route,
    /// For orphaned transactions of one topic, before any producer is asked.
    TxCheck,
}

impl PluginKind {
    pub fn name(self) -> &'static str {
        match self {
            PluginKind::Filter => "filter",
            PluginKind::Route => "route",
            PluginKind::TxCheck => "tx-check",
        }
    }
}

/// What happens to a message when its plugin call fails (trap, time or memory limit, bad answer,
/// quarantine).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// As if no plugin were bound: deliver; store unchanged; ask the producer.
    FailOpen,
    /// Nothing passes: hold the message for a later receive; refuse the send; check again later.
    #[default]
    FailClosed,
    /// Set the message aside: the group's dead-letter topic; the route's `%DLQ%route-<topic>`.
    DeadLetter,
}

/// One plugin bound to a topic (and, for a filter, a group).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BindingConfig {
    /// Names the binding in logs, metrics and the admin API; the component's file name by default.
    #[serde(default)]
    pub name: Option<String>,
    pub kind: PluginKind,
    /// The component (`.wasm`); a relative path is relative to the configuration file.
    pub component: PathBuf,
    pub topic: String,
    /// The consumer group (filters only).
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub policy: FailurePolicy,
    /// Parameters the plugin reads with `host.config`.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Hosts (`name` or `name:port`) a tx-check plugin may call over HTTP.
    #[serde(default)]
    pub http_allowlist: Vec<String>,
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// Per-binding limits.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub memory_bytes_max: u64,
    pub call_ms_max: u64,
    pub output_bytes_max: usize,
    pub instances_max: usize,
    pub failures_max: u32,
    pub log_lines_per_s_max: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = PluginLimits::default();
        Self {
            memory_bytes_max: d.memory_bytes_max,
            call_ms_max: d.call_ms_max,
            output_bytes_max: d.output_bytes_max,
            instances_max: d.instances_max,
            failures_max: d.failures_max,
            log_lines_per_s_max: d.log_lines_per_s_max,
        }
    }
}

impl From<&LimitsConfig> for PluginLimits {
    fn from(l: &LimitsConfig) -> Self {
        PluginLimits {
            memory_bytes_max: l.memory_bytes_max,
            call_ms_max: l.call_ms_max,
            output_bytes_max: l.output_bytes_max,
            instances_max: l.instances_max,
            failures_max: l.failures_max,
            log_lines_per_s_max: l.log_lines_per_s_max,
        }
    }
}

impl BindingConfig {
    /// The binding's name: given, or the component's file stem.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.component.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "plugin".into())
        })
    }

    fn validate(&self) -> Result<(), String> {
        let name = self.name();
        if let Some(problem) = ferrymq_proto::name::problem(&name, GROUP_NAME_BYTES_MAX) {
            return Err(format!("binding name {name:?}: {problem}"));
        }
        if let Some(problem) = ferrymq_proto::name::problem(&self.topic, TOPIC_BYTES_MAX) {
            return Err(format!("{name}: topic {:?}: {problem}", self.topic));
        }
        match (self.kind, &self.group) {
            (PluginKind::Filter, None) => return Err(format!("{name}: a filter needs the group it filters for")),
            (PluginKind::Filter, Some(group)) => {
                if let Some(problem) = ferrymq_proto::name::problem(group, GROUP_NAME_BYTES_MAX) {
                    return Err(format!("{name}: group {group:?}: {problem}"));
                }
            }
            (kind, Some(_)) => {
                return Err(format!("{name}: a {} plugin is bound to a topic, not a group", kind.name()));
            }
            (_, None) => {}
        }
        if self.kind == PluginKind::TxCheck && self.policy == FailurePolicy::DeadLetter {
            return Err(format!(
                "{name}: a tx-check plugin cannot dead-letter; use fail-open (ask the producer) or fail-closed (check again later)"
            ));
        }
        if self.kind != PluginKind::TxCheck && !self.http_allowlist.is_empty() {
            return Err(format!("{name}: only tx-check plugins may call out over HTTP"));
        }
        if let Some(host) = self.http_allowlist.iter().find(|h| h.is_empty() || h.contains(['/', ' ', '@'])) {
            return Err(format!("{name}: http_allowlist entry {host:?} is not `host` or `host:port`"));
        }
        PluginLimits::from(&self.limits).validate().map_err(|reason| {
            format!(
                "{name}: limits: {reason} (memory at most {MEMORY_BYTES_LIMIT} bytes, time at most {CALL_MS_LIMIT} ms)"
            )
        })
    }
}

impl PluginsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.instances_max == 0 {
            return Err("instances_max must be positive".into());
        }
        let mut seen = std::collections::HashSet::new();
        let mut places = std::collections::HashSet::new();
        for binding in &self.bindings {
            binding.validate()?;
            if !seen.insert(binding.name()) {
                return Err(format!("two bindings are named {:?}; give each a distinct `name`", binding.name()));
            }
            if !places.insert((binding.kind, binding.topic.clone(), binding.group.clone())) {
                return Err(format!(
                    "{}: another {} plugin is already bound to {}{}",
                    binding.name(),
                    binding.kind.name(),
                    binding.topic,
                    binding.group.as_ref().map(|g| format!(" for group {g}")).unwrap_or_default()
                ));
            }
        }
        let wanted: usize = self.bindings.iter().map(|b| b.limits.instances_max).sum();
        if wanted > self.instances_max as usize {
            return Err(format!(
                "the bindings want {wanted} instances in all, more than instances_max = {}",
                self.instances_max
            ));
        }
        Ok(())
    }

    /// Makes relative component paths relative to `base` (the configuration file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        for binding in &mut self.bindings {
            if binding.component.is_relative() {
                binding.component = base.join(&binding.component);
            }
        }
    }
}
