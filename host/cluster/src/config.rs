//! The `[cluster]` section of the server configuration.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// When a master acknowledges a send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    /// After local durability (the store's flush mode); slaves follow as fast as they can.
    #[default]
    Async,
    /// After local durability and after at least one slave holds the bytes.
    Sync,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Cluster name, shown by `ferrymq admin cluster`.
    pub name: String,
    /// 0: this broker is the master of its set (`grpc.broker_name`); 1 and up: a slave of that master.
    pub broker_id: u64,
    /// Name servers (`host:port`) to register with; none: a single broker answering for itself.
    pub namesrv: Vec<String>,
    /// A master's acknowledgement: `async` (local durability) or `sync` (and one slave has the bytes).
    pub replication: ReplicationMode,
    /// Where a master listens for its slaves.
    pub ha_listen: SocketAddr,
    /// `host:port` slaves dial to reach this master; defaults to `ha_listen` with the advertised gRPC
    /// host when listening on all interfaces.
    pub ha_advertised_address: Option<String>,
    /// `host:port` other tools use for this broker's admin API (shown by `ferrymq admin cluster`);
    /// defaults like `ha_advertised_address`.
    pub admin_advertised_address: Option<String>,
    /// A slave's master (its `ha_listen`); when absent, learned from the name servers.
    pub master_ha: Option<String>,
    /// Sync replication: how long a send waits for a slave before it fails with
    /// SLAVE_PERSISTENCE_TIMEOUT. Keep it below the clients' request timeout (3 s).
    pub sync_timeout_ms: u64,
    /// Sync replication: a slave further behind than this does not count as holding copies (a send
    /// fails at once with HA_NOT_AVAILABLE instead of waiting for it to catch up).
    pub sync_gap_bytes_max: u64,
    /// How often a broker registers with the name servers (and fetches the cluster view).
    pub heartbeat_ms: u64,
    /// A slave that has not heard from its master for this long (the master sends something at
    /// least every `heartbeat_ms`) counts it as down and serves reads of the set.
    pub master_down_ms: u64,
    /// Most log bytes in one replication frame.
    pub transfer_bytes_max: usize,
    /// How often a master sends its metadata (topics, groups, consumer offsets) to its slaves.
    pub metadata_sync_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            name: "DefaultCluster".into(),
            broker_id: 0,
            namesrv: Vec::new(),
            replication: ReplicationMode::Async,
            ha_listen: SocketAddr::from(([0, 0, 0, 0], 8083)),
            ha_advertised_address: None,
            admin_advertised_address: None,
            master_ha: None,
            sync_timeout_ms: 2_000,
            sync_gap_bytes_max: 256 << 20,
            heartbeat_ms: 1_000,
            master_down_ms: 3_000,
            transfer_bytes_max: 256 << 10,
            metadata_sync_ms: 1_000,
        }
    }
}

impl ClusterConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.sync_timeout_ms == 0 || self.heartbeat_ms == 0 || self.metadata_sync_ms == 0 {
            return Err("sync_timeout_ms, heartbeat_ms and metadata_sync_ms must be positive".into());
        }
        if self.master_down_ms < self.heartbeat_ms {
            return Err("master_down_ms must be at least heartbeat_ms".into());
        }
        if !(4096..=crate::wire::FRAME_BYTES_MAX as usize / 2).contains(&self.transfer_bytes_max) {
            return Err("transfer_bytes_max must be between 4096 and 32 MiB".into());
        }
        for addr in self.namesrv.iter().chain(&self.master_ha) {
            if addr.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok()).is_none() {
                return Err(format!("{addr:?} is not host:port"));
            }
        }
        if self.broker_id > 0 && self.namesrv.is_empty() && self.master_ha.is_none() {
            return Err("a slave (broker_id > 0) needs name servers or master_ha to find its master".into());
        }
        Ok(())
    }
}
