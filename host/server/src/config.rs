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
    /// Time allowed for a client to send its request body (a plugin upload included).
    pub body_timeout_ms: u64,
    /// Bearer tokens and the principal and roles each stands for. None: the API is open and every
    /// caller is admin (keep `listen` on loopback then).
    pub tokens: Vec<crate::admin::auth::TokenConfig>,
    /// Plugin signatures: the keys trusted per department, and whether they are required.
    pub signatures: ferrymq_policy::signatures::SignaturesConfig,
    /// Serve the API without tokens on an address beyond loopback (`--insecure-admin`): anyone who
    /// reaches it is admin. Without this, such a configuration refuses to start.
    pub insecure_open: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
            connections_max: 64,
            header_timeout_ms: 10_000,
            body_timeout_ms: 60_000,
            tokens: Vec::new(),
            signatures: ferrymq_policy::signatures::SignaturesConfig::default(),
            insecure_open: false,
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
        if self.admin.header_timeout_ms == 0 || self.admin.body_timeout_ms == 0 {
            bail!("[admin] header_timeout_ms and body_timeout_ms must be positive");
        }
        if let Err(reason) = crate::admin::auth::Tokens::from_config(&self.admin.tokens) {
            bail!("[admin] {reason}");
        }
        if let Err(reason) = ferrymq_policy::signatures::Signatures::from_config(&self.admin.signatures) {
            bail!("[admin.signatures] {reason}");
        }
        Ok(())
    }

    /// Refuses an admin API that would be open (no tokens) beyond loopback, unless told so; checked
    /// once the command line has had its say.
    pub fn check_exposure(&self) -> anyhow::Result<()> {
        let admin = &self.admin;
        if admin.tokens.is_empty() && !admin.listen.ip().is_loopback() && !admin.insecure_open {
            bail!(
                "[admin] the admin API would listen on {} with no [[admin.tokens]]: anyone who reaches it would be \
                 admin; configure tokens, listen on loopback, or pass --insecure-admin (admin.insecure_open = true)",
                admin.listen
            );
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
        assert_eq!(config.store.disk_pressure, ferrymq_store::DiskPressure::Refuse);
        let config = ServerConfig::parse("[store]\ndisk_pressure = \"delete_oldest\"\ndisk_bytes_max = 10737418240\n")
            .expect("disk settings");
        assert_eq!(config.store.disk_pressure, ferrymq_store::DiskPressure::DeleteOldest);
        assert_eq!(config.store.disk_bytes_max, 10 << 30);
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

    #[test]
    fn an_open_admin_api_beyond_loopback_needs_to_be_asked_for() {
        let open = ServerConfig::parse("[admin]\nlisten = \"0.0.0.0:8082\"\n").expect("parses");
        let err = format!("{:#}", open.check_exposure().expect_err("open beyond loopback"));
        assert!(err.contains("--insecure-admin"), "{err}");
        let asked = ServerConfig::parse("[admin]\nlisten = \"0.0.0.0:8082\"\ninsecure_open = true\n").expect("parses");
        assert!(asked.check_exposure().is_ok());
        let tokens = "[admin]\nlisten = \"0.0.0.0:8082\"\n[[admin.tokens]]\nprincipal = \"ops\"\n\
                      token = \"ops-token-0123456789\"\nroles = [\"admin\"]\n";
        assert!(ServerConfig::parse(tokens).expect("parses").check_exposure().is_ok());
        assert!(ServerConfig::default().check_exposure().is_ok(), "loopback by default");
    }
}
