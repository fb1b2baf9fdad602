//! `ferrymq standalone`: one process running the whole broker on one data directory.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use ferrymq_broker::Broker;
use ferrymq_store::clock::SystemClock;
use ferrymq_store::{FlushMode, Store, StoreOptions};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::cli::{FlushArg, StandaloneArgs};
use crate::config::ServerConfig;
use crate::data_dir::DataDirLock;
use crate::grpc::{self, Arrivals, GrpcState};
use crate::logging;
use crate::plugins::PluginHost;

/// Exit code after the store stopped on a fatal I/O error (EX_IOERR): restart to recover.
const EXIT_FATAL_IO: u8 = 74;

/// The configuration after the command line's overrides.
pub fn effective_config(args: &StandaloneArgs) -> anyhow::Result<ServerConfig> {
    let mut config = ServerConfig::load(args.config.as_deref())?;
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(listen) = args.admin_listen {
        config.admin.listen = listen;
    }
    if let Some(listen) = args.grpc_listen {
        config.grpc.listen = listen;
    }
    if let Some(flush) = args.flush {
        config.store.flush = match flush {
            FlushArg::Async => FlushMode::Async,
            FlushArg::Sync => FlushMode::Sync,
        };
    }
    if let Some(level) = &args.log_level {
        config.log.level = level.clone();
    }
    config.validate()?;
    Ok(config)
}

pub fn run(args: StandaloneArgs) -> anyhow::Result<ExitCode> {
    let config = effective_config(&args)?;
    logging::init(&config.log)?;
    let started = Instant::now();
    let _lock = DataDirLock::acquire(&config.data_dir)?;

    let (fatal_tx, mut fatal_rx) = watch::channel(None::<String>);
    let arrivals = Arc::new(Arrivals::default());
    let mut options = StoreOptions::new(config.data_dir.clone());
    options.config = config.store.clone();
    options.store_host = config.grpc.listen;
    options.on_fatal = Some(Arc::new(move |reason: &str| {
        let _ = fatal_tx.send(Some(reason.to_owned()));
    }));
    let notify = arrivals.clone();
    options.on_dispatch = Some(Arc::new(move |topic: &str, _queue: u32, _max: u64| notify.notify(topic)));
    let store =
        Arc::new(Store::open(options).with_context(|| format!("open the store in {}", config.data_dir.display()))?);
    let broker = Arc::new(
        Broker::open(store.clone(), &config.data_dir, config.broker.clone(), Arc::new(SystemClock))
            .with_context(|| format!("open the broker in {}", config.data_dir.display()))?,
    );

    let plugins = Arc::new(PluginHost::start(&config.plugins, &config.data_dir)?);
    if !plugins.is_empty() {
        broker.set_policies(Some(plugins.clone()));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ferrymq-rt")
        .build()
        .context("start the async runtime")?;
    let outcome = runtime.block_on(async {
        // Before anything announces readiness, so that a signal sent right after is handled.
        let mut sigterm = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
        let mut sigint = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
        let grpc_listener = TcpListener::bind(config.grpc.listen)
            .await
            .with_context(|| format!("bind gRPC on {}", config.grpc.listen))?;
        let grpc_addr = grpc_listener.local_addr()?;
        let listener = TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("bind admin HTTP on {}", config.admin.listen))?;
        let admin_addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let grpc = Arc::new(GrpcState::new(broker.clone(), arrivals.clone(), config.grpc.clone(), grpc_addr));
        let checker: Option<Arc<dyn ferrymq_broker::transaction::TransactionChecker>> =
            plugins.has_tx_checks().then(|| plugins.clone() as _);
        broker.set_transaction_hooks(checker, Some(grpc.clone()));
        let grpc_task = tokio::spawn(grpc::serve(grpc_listener, grpc.clone(), stop_rx.clone()));
        let expiry_task = tokio::spawn(grpc.clone().expire_idle_clients(stop_rx.clone()));
        tracing::info!(addr = %grpc_addr, "gRPC listening");
        let state =
            Arc::new(AdminState { broker: broker.clone(), grpc: grpc.clone(), plugins: plugins.clone(), started });
        let admin_task = tokio::spawn(admin::serve(listener, state, config.admin.clone(), stop_rx));
        tracing::info!(addr = %admin_addr, "admin HTTP listening");
        tracing::info!(data_dir = %config.data_dir.display(), flush = ?config.store.flush,
            ms = started.elapsed().as_millis() as u64, "ferrymq standalone ready");

        let code = tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM received, shutting down"); ExitCode::SUCCESS }
            _ = sigint.recv() => { tracing::info!("SIGINT received, shutting down"); ExitCode::SUCCESS }
            _ = fatal_rx.changed() => {
                let reason = fatal_rx.borrow().clone().unwrap_or_default();
                tracing::error!(%reason, "stopping after a fatal store error; restart to recover");
                ExitCode::from(EXIT_FATAL_IO)
            }
        };
        let _ = stop_tx.send(true);
        let _ = admin_task.await;
        let _ = expiry_task.await;
        match tokio::time::timeout(std::time::Duration::from_secs(5), grpc_task).await {
            Ok(Ok(Err(err))) => tracing::warn!(%err, "gRPC server ended with an error"),
            Err(_) => tracing::warn!("gRPC connections did not close within 5 s; closing anyway"),
            _ => {}
        }
        anyhow::Ok(code)
    });
    runtime.shutdown_background();
    let code = outcome?;
    // Save consumer progress, then flush, write the clean checkpoint, stop the store's threads.
    broker.close();
    store.close();
    if store.stats().fatal.is_none() {
        tracing::info!("ferrymq stopped cleanly");
    }
    Ok(code)
}
