//! The server's configuration: one TOML file, every field optional and defaulted.
//!
//! `ferrymq config default` prints the defaults; `docs/configuration.md` explains each field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ferrymq_broker::BrokerConfig;
use ferrymq_store::StoreConfig;

use ferrymq_grpc::GrpcConfig;
use ferrymq_policy::PluginsConfig;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the store keeps its files.
    pub data_dir: PathBuf,
    pub grpc: GrpcConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub broker: BrokerConfig,
    pub store: StoreConfig,
    pub plugins: PluginsConfig,
    /// Broker sets, name servers and replication (`ferrymq broker`; unused by `standalone`).
    pub cluster: ferrymq_cluster::ClusterConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            grpc: GrpcConfig::default(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            broker: BrokerConfig::default(),
            store: StoreConfig::default(),
            plugins: PluginsConfig::default(),
            cluster: ferrymq_cluster::ClusterConfig::default(),
        }
    }
}

/// The admin HTTP endpoint (`/healthz`, `/metrics`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address. Loopback by default: the admin API is for operators, not for the network.
    pub listen: SocketAddr,
    /// Connections served at once; more wait in the accept queue.
    pub connections_max: usize,
    /// Time allowed for a client to send its request headers.
    pub header_timeout_ms: u64,
    /// Bearer tokens and the principal and roles each stands for. None: the API is open and every
    /// caller is admin (keep `listen` on loopback then).
    pub tokens: Vec<crate::admin::auth::TokenConfig>,
    /// Plugin signatures: the keys trusted per department, and whether they are required.
    pub signatures: ferrymq_policy::signatures::SignaturesConfig,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
            connections_max: 64,
            header_timeout_ms: 10_000,
            tokens: Vec::new(),
            signatures: ferrymq_policy::signatures::SignaturesConfig::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `info,ferrymq_store=debug`; `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Text }
    }
}

impl ServerConfig {
    /// Reads `path`, or the defaults when there is none.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else { return Ok(Self::default()) };
        let text = std::fs::read_to_string(path).with_context(|| format!("read configuration {}", path.display()))?;
        let mut config = Self::parse(&text).with_context(|| format!("configuration {}", path.display()))?;
        config.plugins.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(config)
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if let Err(reason) = self.store.validate() {
            bail!("[store] {reason}");
        }
        if let Err(reason) = self.broker.validate() {
            bail!("[broker] {reason}");
        }
        if let Err(reason) = self.grpc.validate() {
            bail!("[grpc] {reason}");
        }
        if let Err(reason) = self.plugins.validate() {
            bail!("[plugins] {reason}");
        }
        if let Err(reason) = self.cluster.validate() {
            bail!("[cluster] {reason}");
        }
        if self.admin.connections_max == 0 {
            bail!("[admin] connections_max must be positive");
        }
        if self.admin.header_timeout_ms == 0 {
            bail!("[admin] header_timeout_ms must be positive");
        }
        if let Err(reason) = crate::admin::auth::Tokens::from_config(&self.admin.tokens) {
            bail!("[admin] {reason}");
        }
        if let Err(reason) = ferrymq_policy::signatures::Signatures::from_config(&self.admin.signatures) {
            bail!("[admin.signatures] {reason}");
        }
        Ok(())
    }

    /// The defaults as TOML.
    pub fn default_toml() -> anyhow::Result<String> {
        Ok(toml::to_string_pretty(&Self::default())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_toml_parses_back_to_the_defaults() {
        let text = ServerConfig::default_toml().expect("renders");
        let back = ServerConfig::parse(&text).expect("parses");
        assert_eq!(back.data_dir, PathBuf::from("./data"));
        assert_eq!(back.admin.listen, SocketAddr::from(([127, 0, 0, 1], 8082)));
        assert_eq!(back.store.segment_bytes, 1 << 30);
    }

    #[test]
    fn an_empty_file_is_all_defaults_and_a_partial_one_overrides_only_what_it_names() {
        assert_eq!(ServerConfig::parse("").expect("empty").store.flush, ferrymq_store::FlushMode::Async);
        let config = ServerConfig::parse("[store]\nflush = \"sync\"\n").expect("partial");
        assert_eq!(config.store.flush, ferrymq_store::FlushMode::Sync);
        assert_eq!(config.store.retention_hours, 72);
    }

    #[test]
    fn mistakes_name_the_field() {
        let err = ServerConfig::parse("[store]\nsegmnt_bytes = 5\n").expect_err("unknown field").to_string();
        assert!(err.contains("segmnt_bytes"), "{err}");
        let err = format!("{:#}", ServerConfig::parse("[store]\nsegment_bytes = 100\n").expect_err("too small"));
        assert!(err.contains("segment_bytes must be between 4096 and"), "{err}");
        let err = format!("{:#}", ServerConfig::parse("[admin]\nlisten = \"nowhere\"\n").expect_err("bad address"));
        assert!(err.contains("listen"), "{err}");
    }
}
