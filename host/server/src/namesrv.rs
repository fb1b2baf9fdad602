//! `ferrymq namesrv`: runs the name server of `ferrymq_cluster::namesrv` until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ferrymq_cluster::namesrv::{self, Registry};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

#[derive(Debug, Args)]
pub struct NamesrvArgs {
    /// Listen address for brokers and tools.
    #[arg(long, default_value = "0.0.0.0:9876", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// A broker not heard from for this long is dropped from the cluster (and routes stop naming it).
    #[arg(long, default_value_t = 6_000, value_name = "MS")]
    pub broker_ttl_ms: u64,
    /// Connections served at once; more wait in the accept queue.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub connections_max: usize,
    /// Log filter such as `info` or `debug` (RUST_LOG wins).
    #[arg(long, default_value = "info", value_name = "FILTER")]
    pub log_level: String,
}

pub fn run(mut args: NamesrvArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(&crate::config::LogConfig { level: args.log_level.clone(), ..Default::default() })?;
    if args.broker_ttl_ms == 0 || args.connections_max == 0 {
        anyhow::bail!("--broker-ttl-ms and --connections-max must be positive");
    }
    args.connections_max = crate::open_files::fit_connections("--connections-max", args.connections_max, 64);
    let registry = Arc::new(Registry::new(Duration::from_millis(args.broker_ttl_ms)));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("ferrymq-namesrv")
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async move {
        let mut sigterm = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
        let mut sigint = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
        let listener =
            TcpListener::bind(args.listen).await.with_context(|| format!("bind the name server on {}", args.listen))?;
        tracing::info!(addr = %listener.local_addr()?, ttl_ms = args.broker_ttl_ms, "ferrymq name server ready");
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = tokio::spawn(namesrv::serve(listener, registry, args.connections_max, stop_rx));
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
        let _ = stop_tx.send(true);
        let _ = server.await;
        tracing::info!("name server stopped");
        anyhow::Ok(())
    })?;
    runtime.shutdown_background();
    Ok(ExitCode::SUCCESS)
}
