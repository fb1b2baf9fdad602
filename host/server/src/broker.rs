//! `ferrymq broker`: a node as the master or a slave of a broker set — its cluster settings from the
//! command line, the HA listener or the follower, registration with the name servers, and a slave's
//! plugins following its master's.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use ferrymq_broker::Broker;
use ferrymq_cluster::{self as cluster, Cluster};
use ferrymq_grpc::GrpcState;
use ferrymq_policy::registry::Registry;

use crate::cli::BrokerArgs;
use crate::config::ServerConfig;
use crate::node::run_node;
use crate::standalone::effective_config;

/// The configuration of `ferrymq broker` after its command line's overrides.
pub fn effective_broker_config(args: &BrokerArgs) -> anyhow::Result<ServerConfig> {
    let mut config = effective_config(&args.node)?;
    let cluster = &mut config.cluster;
    if let Some(set) = &args.broker_set {
        config.grpc.broker_name = set.clone();
    }
    if let Some(id) = args.broker_id {
        cluster.broker_id = id;
    }
    if !args.namesrv.is_empty() {
        cluster.namesrv = args.namesrv.clone();
    }
    if let Some(mode) = args.replication {
        cluster.replication = mode;
    }
    if let Some(listen) = args.ha_listen {
        cluster.ha_listen = listen;
    }
    if let Some(master) = &args.master_ha {
        cluster.master_ha = Some(master.clone());
    }
    if let Some(host) = &args.advertise {
        let port = |addr: std::net::SocketAddr| format!("{host}:{}", addr.port());
        config.grpc.advertised_address.get_or_insert_with(|| port(config.grpc.listen));
        cluster.ha_advertised_address.get_or_insert_with(|| port(cluster.ha_listen));
        cluster.admin_advertised_address.get_or_insert_with(|| port(config.admin.listen));
    }
    config.validate()?;
    Ok(config)
}

pub fn run(args: BrokerArgs) -> anyhow::Result<ExitCode> {
    run_node(effective_broker_config(&args)?, true)
}

/// `host:port` for `addr` as others should dial it: the configured address, else the listen address
/// with the gRPC advertised host (or 127.0.0.1) when it listens on all interfaces.
fn advertised(configured: Option<&String>, bound: std::net::SocketAddr, grpc_host: &str) -> String {
    if let Some(addr) = configured {
        return addr.clone();
    }
    if bound.ip().is_unspecified() { format!("{grpc_host}:{}", bound.port()) } else { bound.to_string() }
}

/// Starts what makes a node part of a cluster: the HA listener (master) or the follower (slave),
/// and the registration with the name servers.
pub(crate) fn start_cluster(
    config: &ServerConfig,
    cluster: &Arc<Cluster>,
    broker: &Arc<Broker>,
    grpc: &GrpcState,
    admin_addr: std::net::SocketAddr,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<()> {
    let (grpc_host, grpc_port) = grpc.advertised();
    let mut ha_bound = config.cluster.ha_listen;
    if cluster.is_master() {
        let listener = std::net::TcpListener::bind(config.cluster.ha_listen)
            .with_context(|| format!("bind the HA listener on {}", config.cluster.ha_listen))?;
        ha_bound = listener.local_addr()?;
        cluster::master::start(cluster.clone(), broker.clone(), listener, stop.clone())?;
        tracing::info!(addr = %ha_bound, replication = ?config.cluster.replication, "HA listening for slaves");
    } else {
        cluster::slave::start(cluster.clone(), broker.clone(), stop.clone())?;
    }
    if cluster.clustered() {
        let addresses = cluster::registration::Addresses {
            grpc: format!("{grpc_host}:{grpc_port}"),
            admin: advertised(config.cluster.admin_advertised_address.as_ref(), admin_addr, &grpc_host),
            ha: advertised(config.cluster.ha_advertised_address.as_ref(), ha_bound, &grpc_host),
        };
        tracing::info!(namesrv = ?config.cluster.namesrv, ?addresses, "registering with the name servers");
        cluster::registration::start(cluster.clone(), broker.clone(), addresses, stop.clone())?;
    }
    Ok(())
}

/// A slave binds the plugins its master binds: the registry's records arrive with the log.
pub(crate) fn follow_plugins(registry: Arc<Registry>, stop: Arc<std::sync::atomic::AtomicBool>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("ferrymq-plugins-follow".into())
        .spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                registry.follow_log();
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        })
        .context("start the plugin-following thread")?;
    Ok(())
}
