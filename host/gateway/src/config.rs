//! The gateway's configuration file (`ferrymq gateway --config FILE`): where messages come from,
//! where they go, and which topics cross under which policy. Unknown keys are errors.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ferrymq_policy::config::{FailurePolicy, LimitsConfig, PluginKind};
use ferrymq_proto::name::{GROUP_BYTES_MAX, TOPIC_BYTES_MAX, problem as name_problem};
use serde::Deserialize;

/// Most routes one gateway runs.
pub const FORWARDS_MAX: usize = 256;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub gateway: GatewaySection,
    pub source: Leg,
    pub target: Leg,
    #[serde(default)]
    pub forward: Vec<Forward>,
    #[serde(default)]
    pub log: LogSection,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Progress, decisions and ferry state; required.
    pub data_dir: PathBuf,
    /// `/healthz`, `/metrics`, `GET /v1/gateway` and policy swaps.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// Names this gateway in the groups it derives and in its clients' ids.
    #[serde(default = "default_name")]
    pub name: String,
    /// Connections the admin endpoint serves at once.
    #[serde(default = "default_admin_connections_max")]
    pub admin_connections_max: usize,
    /// Let the admin endpoint (which has no tokens yet) listen beyond loopback: anyone who reaches
    /// it can replace policies.
    #[serde(default)]
    pub admin_insecure_open: bool,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8083))
}

fn default_name() -> String {
    "gateway".into()
}

fn default_admin_connections_max() -> usize {
    64
}

/// One side of the gateway: a zone's brokers, or a ferry directory.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Leg {
    /// Brokers' gRPC addresses (`host:port`), comma-separated; the first that answers is used.
    pub endpoints: Option<String>,
    /// Instead of endpoints: a directory of batch files (ferry mode, for one-way links).
    pub ferry_dir: Option<PathBuf>,
    /// Names the zone in the properties of messages that cross (`ferrymq-source-zone`).
    #[serde(default)]
    pub zone: Option<String>,
    /// Ferry export (`[target]`): the signing key, a file from `ferrymq plugin keygen`; a relative
    /// path is relative to the configuration file.
    pub ferry_key: Option<PathBuf>,
    /// Ferry import (`[source]`): the exporting gateway's public key, 64 hex digits.
    pub ferry_public_key: Option<String>,
    /// Ferry export: a batch file is written once its messages reach this size…
    #[serde(default = "default_ferry_file_bytes_max")]
    pub ferry_file_bytes_max: usize,
    /// …or its first message has waited this long.
    #[serde(default = "default_ferry_file_age_ms")]
    pub ferry_file_age_ms: u64,
    /// Ferry export: bytes of written files kept for `ferrymq gateway resend`.
    #[serde(default = "default_ferry_keep_bytes")]
    pub ferry_keep_bytes: u64,
}

fn default_ferry_file_bytes_max() -> usize {
    16 << 20
}

fn default_ferry_file_age_ms() -> u64 {
    500
}

fn default_ferry_keep_bytes() -> u64 {
    1 << 30
}

impl Leg {
    /// The endpoints, split and trimmed.
    pub fn endpoint_list(&self) -> Vec<String> {
        self.endpoints
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn validate(&self, side: &str) -> anyhow::Result<()> {
        match (self.endpoints.is_some(), self.ferry_dir.is_some()) {
            (true, true) => bail!("[{side}]: set `endpoints` or `ferry_dir`, not both"),
            (false, false) => bail!("[{side}]: set `endpoints` (a broker's gRPC address) or `ferry_dir`"),
            (true, false) if self.endpoint_list().is_empty() => bail!("[{side}]: `endpoints` lists no address"),
            _ => {}
        }
        for endpoint in self.endpoint_list() {
            let authority = endpoint.rsplit("://").next().unwrap_or(&endpoint);
            match authority.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
                _ => bail!("[{side}]: endpoint {endpoint:?} is not `host:port`"),
            }
        }
        let ferry = self.ferry_dir.is_some();
        match side {
            "target" if ferry && self.ferry_key.is_none() => {
                bail!(
                    "[target]: ferry export signs its files: set `ferry_key` (a key file from `ferrymq plugin keygen`)"
                )
            }
            "source" if ferry && self.ferry_public_key.is_none() => {
                bail!("[source]: ferry import checks signatures: set `ferry_public_key` (the exporter's public key)")
            }
            _ => {}
        }
        if (side == "source" || !ferry) && self.ferry_key.is_some() {
            bail!("[{side}]: `ferry_key` signs exported files: it belongs in [target] beside `ferry_dir`");
        }
        if (side == "target" || !ferry) && self.ferry_public_key.is_some() {
            bail!("[{side}]: `ferry_public_key` checks imported files: it belongs in [source] beside `ferry_dir`");
        }
        if !(4096..=768 << 20).contains(&self.ferry_file_bytes_max) || !(1..=60_000).contains(&self.ferry_file_age_ms) {
            bail!("[{side}]: ferry_file_bytes_max must be 4096 to 805306368 and ferry_file_age_ms 1 to 60000");
        }
        if let Some(zone) = &self.zone
            && (zone.is_empty() || zone.len() > 64 || zone.chars().any(char::is_control))
        {
            bail!("[{side}]: zone must be 1 to 64 printable characters");
        }
        Ok(())
    }
}

/// One forwarded topic.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    /// The source topic.
    pub topic: String,
    /// The target topic; the source topic's name by default.
    pub target_topic: Option<String>,
    /// The gateway's consumer group on the source; `<gateway name>-<topic>` by default.
    pub group: Option<String>,
    /// Messages asked for per receive.
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// Receive-send-settle loops running at once, each with its own connections. FIFO groups stay
    /// in order across them (the source hands out a group's next message only when its previous
    /// one is settled).
    #[serde(default = "default_workers")]
    pub workers: u32,
    /// How long a received message stays invisible on the source before it is delivered again (to
    /// this gateway after a crash). A worker renews the messages it holds every third of it (see
    /// `held`), so a target outage longer than this costs no delivery attempts on the source.
    #[serde(default = "default_invisible_ms")]
    pub invisible_ms: u64,
    pub policy: Option<PolicyConfig>,
}

fn default_batch() -> u32 {
    32
}

fn default_workers() -> u32 {
    4
}

fn default_invisible_ms() -> u64 {
    30_000
}

/// A route-world plugin that judges every message of a forward before it crosses.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The component (`.wasm`); a relative path is relative to the configuration file.
    pub component: PathBuf,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// A call that fails: `fail-closed` (default: the message waits and is judged again),
    /// `fail-open` (it crosses unchanged) or `dead-letter` (it is set aside, recorded, and not
    /// forwarded).
    #[serde(default)]
    pub on_failure: FailurePolicy,
    #[serde(default)]
    pub limits: LimitsConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self { level: default_level() }
    }
}

fn default_level() -> String {
    "info".into()
}

impl Forward {
    pub fn target_topic(&self) -> &str {
        self.target_topic.as_deref().unwrap_or(&self.topic)
    }

    /// The group this forward reads with.
    pub fn group(&self, gateway: &str) -> String {
        self.group.clone().unwrap_or_else(|| format!("{gateway}-{}", self.topic))
    }
}

impl GatewayConfig {
    /// Reads and checks `path`; relative component paths become relative to the file's directory.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let mut config: GatewayConfig = toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(key) = &mut config.target.ferry_key
            && key.is_relative()
        {
            *key = base.join(&*key);
        }
        for leg in [&mut config.source, &mut config.target] {
            if let Some(dir) = &mut leg.ferry_dir
                && dir.is_relative()
            {
                *dir = base.join(&*dir);
            }
        }
        for forward in &mut config.forward {
            if let Some(policy) = &mut forward.policy
                && policy.component.is_relative()
            {
                policy.component = base.join(&policy.component);
            }
        }
        if config.gateway.data_dir.is_relative() {
            config.gateway.data_dir = base.join(&config.gateway.data_dir);
        }
        config.validate().with_context(|| format!("check {}", path.display()))?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(problem) = name_problem(&self.gateway.name, 64) {
            bail!("[gateway] name {:?}: {problem}", self.gateway.name);
        }
        if !self.gateway.admin_listen.ip().is_loopback() && !self.gateway.admin_insecure_open {
            bail!(
                "[gateway] admin_listen {} is beyond loopback and the admin endpoint has no tokens: anyone who \
                 reaches it could replace policies; listen on loopback or set admin_insecure_open = true",
                self.gateway.admin_listen
            );
        }
        if self.gateway.admin_connections_max == 0 {
            bail!("[gateway] admin_connections_max must be positive");
        }
        if self.gateway.data_dir.as_os_str().is_empty() {
            bail!("[gateway] data_dir must name a directory");
        }
        self.source.validate("source")?;
        self.target.validate("target")?;
        if self.source.ferry_dir.is_some() && self.target.ferry_dir.is_some() {
            bail!("a gateway reads a ferry directory or writes one, not both: one side needs `endpoints`");
        }
        if self.forward.is_empty() {
            bail!("no [[forward]]: name at least one topic to forward");
        }
        if self.forward.len() > FORWARDS_MAX {
            bail!("at most {FORWARDS_MAX} [[forward]] tables");
        }
        let mut seen = std::collections::BTreeSet::new();
        for forward in &self.forward {
            let topic = &forward.topic;
            if let Some(problem) = name_problem(topic, TOPIC_BYTES_MAX) {
                bail!("[[forward]] topic {topic:?}: {problem}");
            }
            if let Some(problem) = name_problem(forward.target_topic(), TOPIC_BYTES_MAX) {
                bail!("[[forward]] {topic}: target_topic {:?}: {problem}", forward.target_topic());
            }
            let group = forward.group(&self.gateway.name);
            if let Some(problem) = name_problem(&group, GROUP_BYTES_MAX) {
                bail!("[[forward]] {topic}: group {group:?}: {problem} (set `group`)");
            }
            if !seen.insert(topic.as_str()) {
                bail!("[[forward]] {topic}: the topic is forwarded twice");
            }
            if !(1..=64).contains(&forward.workers) {
                bail!("[[forward]] {topic}: workers must be 1 to 64");
            }
            if !(1..=32).contains(&forward.batch) {
                bail!("[[forward]] {topic}: batch must be 1 to 32");
            }
            if !(1_000..=43_200_000).contains(&forward.invisible_ms) {
                bail!("[[forward]] {topic}: invisible_ms must be 1000 to 43200000");
            }
            if self.target.ferry_dir.is_some() && forward.invisible_ms < 2 * self.target.ferry_file_age_ms + 1_000 {
                bail!(
                    "[[forward]] {topic}: invisible_ms must be at least twice [target] ferry_file_age_ms plus a second, \
                     so that a message is in a file before the source delivers it again"
                );
            }
            if let Some(policy) = &forward.policy {
                let limits = policy.limits.for_kind(PluginKind::Route);
                limits.validate().map_err(|reason| anyhow::anyhow!("[[forward]] {topic}: policy limits: {reason}"))?;
                if let Some(key) = policy.params.keys().find(|k| k.starts_with("ferrymq.")) {
                    bail!(
                        "[[forward]] {topic}: policy parameter {key:?}: names starting with \"ferrymq.\" are reserved"
                    );
                }
            }
        }
        Ok(())
    }

    /// The zone named in forwarded messages' `ferrymq-source-zone`.
    pub fn source_zone(&self) -> &str {
        self.source.zone.as_deref().unwrap_or("source")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<GatewayConfig> {
        let config: GatewayConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    const MINIMAL: &str = r#"
[gateway]
data_dir = "gw"
[source]
endpoints = "127.0.0.1:18081"
[target]
endpoints = "127.0.0.1:28081, 127.0.0.1:28082"
[[forward]]
topic = "applications"
"#;

    #[test]
    fn a_minimal_file_takes_the_defaults() {
        let config = parse(MINIMAL).expect("valid");
        assert_eq!(config.gateway.admin_listen, "127.0.0.1:8083".parse().expect("addr"));
        assert_eq!(config.target.endpoint_list(), ["127.0.0.1:28081", "127.0.0.1:28082"]);
        let forward = &config.forward[0];
        assert_eq!(forward.target_topic(), "applications");
        assert_eq!(forward.group("gateway"), "gateway-applications");
        assert_eq!((forward.batch, forward.invisible_ms, forward.workers), (32, 30_000, 4));
        assert!(forward.policy.is_none());
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (MINIMAL.replace("[gateway]", "[gateway]\ncolour = 1"), "unknown field `colour`"),
            (MINIMAL.replace("data_dir = \"gw\"", ""), "missing field `data_dir`"),
            (MINIMAL.replace("endpoints = \"127.0.0.1:18081\"", "ferry_dir = \"in\""), "ferry_public_key"),
            (MINIMAL.replace("endpoints = \"127.0.0.1:18081\"", "ferry_dir = \"in\"\nferry_public_key = \"00\""), ""),
            (
                MINIMAL.replace("endpoints = \"127.0.0.1:18081\"", "endpoints = \"a:1\"\nferry_key = \"k\""),
                "belongs in [target]",
            ),
            (MINIMAL.replace("endpoints = \"127.0.0.1:18081\"", ""), "set `endpoints`"),
            (MINIMAL.replace("127.0.0.1:18081", "nowhere"), "is not `host:port`"),
            (MINIMAL.replace("topic = \"applications\"", "topic = \"a b\""), "only letters"),
            (format!("{MINIMAL}[[forward]]\ntopic = \"applications\"\n"), "forwarded twice"),
            (MINIMAL.replace("topic = \"applications\"", "topic = \"a\"\nbatch = 0"), "batch must be"),
            (MINIMAL.replace("topic = \"applications\"", "topic = \"a\"\nflavour = 1"), "unknown field `flavour`"),
            (
                MINIMAL.replace(
                    "topic = \"applications\"",
                    "topic = \"a\"\n[forward.policy]\ncomponent = \"p.wasm\"\nparams = { \"ferrymq.x\" = \"1\" }",
                ),
                "reserved",
            ),
            (
                MINIMAL.replace(
                    "topic = \"applications\"",
                    "topic = \"a\"\n[forward.policy]\ncomponent = \"p.wasm\"\nlimits = { call_ms_max = 0 }",
                ),
                "policy limits",
            ),
        ];
        for (text, expected) in cases {
            match parse(&text) {
                Ok(_) if expected.is_empty() => {}
                Ok(_) => panic!("accepted, expected {expected:?}:\n{text}"),
                Err(err) => {
                    let err = format!("{err:#}");
                    assert!(!expected.is_empty() && err.contains(expected), "{err} (expected {expected:?})");
                }
            }
        }
    }

    #[test]
    fn two_ferry_directories_make_no_gateway() {
        let text = MINIMAL
            .replace("endpoints = \"127.0.0.1:18081\"", "ferry_dir = \"in\"\nferry_public_key = \"00\"")
            .replace("endpoints = \"127.0.0.1:28081, 127.0.0.1:28082\"", "ferry_dir = \"out\"\nferry_key = \"k\"");
        let err = format!("{:#}", parse(&text).expect_err("two ferry dirs"));
        assert!(err.contains("not both"), "{err}");
    }
}
