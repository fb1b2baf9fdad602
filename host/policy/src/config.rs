//! `[plugins]`: the plugin engine's settings and the plugins bound to topics and groups.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferrymq_broker::metadata::GROUP_NAME_BYTES_MAX;
use ferrymq_plugin::{CALL_MS_LIMIT, MEMORY_BYTES_LIMIT, PluginLimits};
use ferrymq_store::TOPIC_BYTES_MAX;
use serde::{Deserialize, Serialize};

/// Most versions a filter binding keeps.
pub const FILTER_HISTORY_MAX: usize = 256;

/// Most plugin worker threads a broker starts.
pub const PLUGIN_WORKERS_MAX: usize = 256;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Plugin instances the engine keeps at once, over all bindings.
    pub instances_max: u32,
    /// Threads that run filter and route calls (so at most this many run at once; a call waits up to
    /// a second for one). Absent means every core but one, and at least one.
    pub workers: Option<usize>,
    /// Niceness of those threads: a plugin that spins gets only the CPU the broker leaves over.
    /// 0 keeps the broker's priority.
    pub worker_nice: i32,
    /// Compiled plugins are cached here; empty means `<data_dir>/plugins/cache`.
    pub cache_dir: Option<PathBuf>,
    /// Versions of a filter binding kept so that each message is judged by the version that was
    /// active where it was stored; older messages go to the oldest kept.
    pub filter_history_max: usize,
    /// Largest component the admin API accepts.
    pub upload_bytes_max: usize,
    /// Time allowed to compile an uploaded component (in a separate process, killed past it).
    pub compile_ms_max: u64,
    /// Memory allowed to that process.
    pub compile_memory_bytes_max: u64,
    pub bindings: Vec<BindingConfig>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            instances_max: 256,
            workers: None,
            worker_nice: ferrymq_plugin::WORKER_NICE_DEFAULT,
            cache_dir: None,
            filter_history_max: 16,
            upload_bytes_max: ferrymq_plugin::UPLOAD_BYTES_DEFAULT,
            compile_ms_max: 120_000,
            compile_memory_bytes_max: 2 << 30,
            bindings: Vec::new(),
        }
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

/// What a binding does: the same rules whether the binding is written in the configuration file
/// ([`BindingConfig`]) or set through the admin API (`registry::BindingSpec`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct BindingRules {
    pub kind: PluginKind,
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

impl BindingRules {
    /// These rules under `name`, to check or to bind.
    pub fn shape<'a>(&'a self, name: &'a str) -> Shape<'a> {
        Shape {
            name,
            kind: self.kind,
            topic: &self.topic,
            group: self.group.as_deref(),
            policy: self.policy,
            params: &self.params,
            http_allowlist: &self.http_allowlist,
            limits: &self.limits,
        }
    }
}

/// The names of fields a binding does not know, collected so that they are refused rather than
/// ignored (serde cannot deny unknown fields beside a flattened struct).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnknownFields(Vec<String>);

impl<'de> Deserialize<'de> for UnknownFields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Names;
        impl<'de> serde::de::Visitor<'de> for Names {
            type Value = UnknownFields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the remaining fields of a binding")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UnknownFields, A::Error> {
                let mut names = Vec::new();
                while let Some((name, serde::de::IgnoredAny)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    names.push(name);
                }
                Ok(UnknownFields(names))
            }
        }
        deserializer.deserialize_map(Names)
    }
}

/// Refuses the first of `unknown`, if any.
pub fn deny_unknown(what: &str, unknown: &UnknownFields) -> Result<(), String> {
    match unknown.0.first() {
        Some(field) => Err(format!("{what}: unknown field `{field}`")),
        None => Ok(()),
    }
}

/// One plugin bound to a topic (and, for a filter, a group) in the configuration file.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct BindingConfig {
    /// Names the binding in logs, metrics and the admin API; the component's file name by default.
    #[serde(default)]
    pub name: Option<String>,
    /// The component (`.wasm`); a relative path is relative to the configuration file.
    pub component: PathBuf,
    #[serde(flatten)]
    pub rules: BindingRules,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// Per-binding limits.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub memory_bytes_max: u64,
    /// Wall time of one call; by default 10 ms, and 2000 ms for a tx-check (it may wait on HTTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_ms_max: Option<u64>,
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
            call_ms_max: None,
            output_bytes_max: d.output_bytes_max,
            instances_max: d.instances_max,
            failures_max: d.failures_max,
            log_lines_per_s_max: d.log_lines_per_s_max,
        }
    }
}

/// Time limit of a tx-check call unless its binding sets one: room for an HTTP round trip.
pub const TX_CHECK_CALL_MS_DEFAULT: u64 = 2_000;

impl LimitsConfig {
    /// The limits of a plugin of `kind`.
    pub fn for_kind(&self, kind: PluginKind) -> PluginLimits {
        let call_ms_default = match kind {
            PluginKind::TxCheck => TX_CHECK_CALL_MS_DEFAULT,
            PluginKind::Filter | PluginKind::Route => PluginLimits::default().call_ms_max,
        };
        PluginLimits {
            memory_bytes_max: self.memory_bytes_max,
            call_ms_max: self.call_ms_max.unwrap_or(call_ms_default),
            output_bytes_max: self.output_bytes_max,
            instances_max: self.instances_max,
            failures_max: self.failures_max,
            log_lines_per_s_max: self.log_lines_per_s_max,
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

    /// Its rules, under `name` (its [`BindingConfig::name`]).
    pub fn shape<'a>(&'a self, name: &'a str) -> Shape<'a> {
        self.rules.shape(name)
    }

    fn validate(&self) -> Result<(), String> {
        let name = self.name();
        deny_unknown(&name, &self.unknown)?;
        self.shape(&name).check()
    }
}

/// A binding's rules, wherever it comes from (the configuration file or the admin API).
#[derive(Clone, Copy, Debug)]
pub struct Shape<'a> {
    pub name: &'a str,
    pub kind: PluginKind,
    pub topic: &'a str,
    pub group: Option<&'a str>,
    pub policy: FailurePolicy,
    pub params: &'a BTreeMap<String, String>,
    pub http_allowlist: &'a [String],
    pub limits: &'a LimitsConfig,
}

impl Shape<'_> {
    /// Why this binding cannot work, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        let name = self.name;
        if let Some(problem) = ferrymq_proto::name::problem(name, GROUP_NAME_BYTES_MAX) {
            return Err(format!("binding name {name:?}: {problem}"));
        }
        if let Some(problem) = ferrymq_proto::name::problem(self.topic, TOPIC_BYTES_MAX) {
            return Err(format!("{name}: topic {:?}: {problem}", self.topic));
        }
        match (self.kind, self.group) {
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
        if let Some(reserved) = self.params.keys().find(|k| k.starts_with(super::host::RESERVED_PARAM_PREFIX)) {
            return Err(format!("{name}: parameter {reserved:?}: names starting with \"ferrymq.\" are the broker's"));
        }
        if self.kind != PluginKind::TxCheck && !self.http_allowlist.is_empty() {
            return Err(format!("{name}: only tx-check plugins may call out over HTTP"));
        }
        if let Some(host) = self.http_allowlist.iter().find(|h| h.is_empty() || h.contains(['/', ' ', '@'])) {
            return Err(format!("{name}: http_allowlist entry {host:?} is not `host` or `host:port`"));
        }
        self.limits.for_kind(self.kind).validate().map_err(|reason| {
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
        if let Some(workers) = self.workers
            && !(1..=PLUGIN_WORKERS_MAX).contains(&workers)
        {
            return Err(format!(
                "workers must be 1 to {PLUGIN_WORKERS_MAX} (leave it out for every core but one), not {workers}"
            ));
        }
        if !(1..=FILTER_HISTORY_MAX).contains(&self.filter_history_max) {
            return Err(format!(
                "filter_history_max must be 1 to {FILTER_HISTORY_MAX}, not {}",
                self.filter_history_max
            ));
        }
        if !(1..=ferrymq_plugin::PLUGIN_BYTES_MAX).contains(&self.upload_bytes_max) {
            return Err(format!(
                "upload_bytes_max must be 1 to {} (the engine's limit), not {}",
                ferrymq_plugin::PLUGIN_BYTES_MAX,
                self.upload_bytes_max
            ));
        }
        if self.compile_ms_max == 0 || self.compile_memory_bytes_max < 64 << 20 {
            return Err("compile_ms_max must be positive and compile_memory_bytes_max at least 64 MiB".into());
        }
        if !(0..=19).contains(&self.worker_nice) {
            return Err(format!("worker_nice must be 0 to 19, not {}", self.worker_nice));
        }
        let mut seen = std::collections::HashSet::new();
        let mut places = std::collections::HashSet::new();
        for binding in &self.bindings {
            binding.validate()?;
            if !seen.insert(binding.name()) {
                return Err(format!("two bindings are named {:?}; give each a distinct `name`", binding.name()));
            }
            let rules = &binding.rules;
            if !places.insert((rules.kind, rules.topic.clone(), rules.group.clone())) {
                return Err(format!(
                    "{}: another {} plugin is already bound to {}{}",
                    binding.name(),
                    rules.kind.name(),
                    rules.topic,
                    rules.group.as_ref().map(|g| format!(" for group {g}")).unwrap_or_default()
                ));
            }
        }
        let wanted: usize = self.bindings.iter().map(|b| b.rules.limits.instances_max).sum();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The `[plugins]` section of a configuration file, parsed and validated as the server does.
    fn parse(text: &str) -> Result<PluginsConfig, String> {
        #[derive(Deserialize)]
        struct File {
            plugins: PluginsConfig,
        }
        let file: File = toml::from_str(text).map_err(|err| err.to_string())?;
        file.plugins.validate()?;
        Ok(file.plugins)
    }

    const INBOX: &str = r#"
[[plugins.bindings]]
name = "inbox-e1"
kind = "filter"
component = "plugins/enterprise_inbox.wasm"
topic = "inbox"
group = "inbox-e1"
policy = "fail-open"
params = { enterprise_ids = "E1,E3" }
limits = { memory_bytes_max = 16777216, call_ms_max = 5 }
"#;

    #[test]
    fn a_binding_parses_with_defaults_for_what_it_leaves_out() {
        let config = parse(INBOX).expect("parses");
        let (b, rules) = (&config.bindings[0], &config.bindings[0].rules);
        assert_eq!(
            (rules.kind, rules.policy, b.name()),
            (PluginKind::Filter, FailurePolicy::FailOpen, "inbox-e1".into())
        );
        assert_eq!(rules.params.get("enterprise_ids").map(String::as_str), Some("E1,E3"));
        let limits = rules.limits.for_kind(rules.kind);
        assert_eq!((limits.memory_bytes_max, limits.call_ms_max, limits.failures_max), (16 << 20, 5, 5));

        let tx =
            parse("[[plugins.bindings]]\nkind = \"tx-check\"\ncomponent = \"/p/tx_check_http.wasm\"\ntopic = \"t\"\n")
                .expect("parses");
        let b = &tx.bindings[0];
        assert_eq!(b.name(), "tx_check_http", "named after the component by default");
        assert_eq!(b.rules.policy, FailurePolicy::FailClosed, "nothing passes unchecked by default");
        assert_eq!(b.rules.limits.for_kind(b.rules.kind).call_ms_max, TX_CHECK_CALL_MS_DEFAULT);
    }

    #[test]
    fn a_binding_written_back_as_toml_reads_the_same() {
        #[derive(Serialize)]
        struct File<'a> {
            plugins: &'a PluginsConfig,
        }
        let config = parse(INBOX).expect("parses");
        let text = toml::to_string_pretty(&File { plugins: &config }).expect("serializes");
        let again = parse(&text).expect("reads back");
        assert_eq!(again.bindings[0].rules, config.bindings[0].rules, "{text}");
        assert_eq!(again.bindings[0].name(), "inbox-e1");
    }

    #[test]
    fn relative_components_are_found_next_to_the_configuration() {
        let mut config = parse(INBOX).expect("parses");
        config.resolve_paths(Path::new("/etc/ferrymq"));
        assert_eq!(config.bindings[0].component, Path::new("/etc/ferrymq/plugins/enterprise_inbox.wasm"));
    }

    #[test]
    fn bindings_that_cannot_work_are_refused_with_the_reason() {
        let bad = |body: &str| {
            let text = format!("[[plugins.bindings]]\ncomponent = \"/p/x.wasm\"\n{body}");
            parse(&text).expect_err(body)
        };
        assert!(bad("kind = \"filter\"\ntopic = \"t\"").contains("needs the group"));
        assert!(bad("kind = \"route\"\ntopic = \"t\"\ngroup = \"g\"").contains("not a group"));
        assert!(bad("kind = \"tx-check\"\ntopic = \"t\"\npolicy = \"dead-letter\"").contains("cannot dead-letter"));
        assert!(bad("kind = \"route\"\ntopic = \"t\"\nhttp_allowlist = [\"a\"]").contains("only tx-check"));
        assert!(bad("kind = \"route\"\ntopic = \"a b\"").contains("only letters"));
        assert!(bad("kind = \"route\"\ntopic = \"t\"\nlimits = { call_ms_max = 0 }").contains("call_ms_max"));
        assert!(bad("kind = \"router\"\ntopic = \"t\"").contains("unknown variant"));
        assert!(bad("kind = \"route\"\ntopic = \"t\"\ngroups = \"g\"").contains("unknown field `groups`"));
        assert!(bad("kind = \"route\"\ntopic = \"t\"\nlimits = { call_ms = 5 }").contains("unknown field"));
        let twice = format!("{INBOX}{}", INBOX.replace("name = \"inbox-e1\"", "name = \"other\""));
        assert!(parse(&twice).expect_err("twice").contains("already bound"));
        let greedy = INBOX.replace("call_ms_max = 5", "instances_max = 300");
        assert!(parse(&greedy).expect_err("greedy").contains("instances_max"));
    }
}
