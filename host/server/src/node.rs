//! One ferrymq node: the store, the broker, the plugin host and registry, the gRPC front end and the
//! admin API, wired together and run until a signal or a fatal store error. `ferrymq standalone`
//! runs it alone; `ferrymq broker` runs it as a member of a broker set.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use ferrymq_broker::Broker;
use ferrymq_store::clock::SystemClock;
use ferrymq_store::{Store, StoreOptions};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::admin::audit::AuditLog;
use crate::admin::auth::Tokens;
use crate::admin::{self, AdminState};
use crate::config::ServerConfig;
use crate::data_dir::DataDirLock;
use crate::logging;
use ferrymq_cluster::Cluster;
use ferrymq_grpc::{self as grpc, Arrivals, GrpcState};
use ferrymq_policy::PluginHost;
use ferrymq_policy::compile::Compiler;
use ferrymq_policy::registry::Registry;
use ferrymq_policy::signatures::Signatures;

/// Exit code after the store stopped on a fatal I/O error (EX_IOERR): restart to recover.
const EXIT_FATAL_IO: u8 = 74;

/// Runs one node until a signal or a fatal store error; `clustered` joins it to its broker set.
pub(crate) fn run_node(config: ServerConfig, clustered: bool) -> anyhow::Result<ExitCode> {
    logging::init(&config.log)?;
    let mut config = config;
    crate::open_files::fit(&mut config);
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
    // The audit log leaves by age only: disk pressure never deletes it.
    options.protected_topics = vec![ferrymq_broker::system_topic::AUDIT_TOPIC.to_owned()];
    let store =
        Arc::new(Store::open(options).with_context(|| format!("open the store in {}", config.data_dir.display()))?);
    if config.cluster.broker_id != 0 {
        // A slave's log is its master's: nothing of its own may be appended, from the first moment
        // (the broker's threads start inside `Broker::open`).
        store.set_read_only(true);
    }
    let broker = Arc::new(
        Broker::open(store.clone(), &config.data_dir, config.broker.clone(), Arc::new(SystemClock))
            .with_context(|| format!("open the broker in {}", config.data_dir.display()))?,
    );
    let cluster = Arc::new(Cluster::new(config.cluster.clone(), config.grpc.broker_name.clone()));
    if !cluster.is_master() {
        broker.set_writable(false);
    }
    let cluster_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let plugins = Arc::new(PluginHost::start(&config.plugins, &config.data_dir)?);
    let audit = Arc::new(AuditLog::open(store.clone()));
    let compiler = Compiler::Process {
        exe: std::env::current_exe().context("find the ferrymq executable (it compiles uploaded plugins)")?,
        cache_dir: plugins.cache_dir().to_path_buf(),
        instances_max: plugins.instances_max(),
        time: std::time::Duration::from_millis(config.plugins.compile_ms_max),
        memory_bytes: config.plugins.compile_memory_bytes_max,
    };
    let registry = Arc::new(Registry::open(broker.clone(), plugins.clone(), &config.data_dir, compiler)?);
    {
        let (audit, weak) = (audit.clone(), Arc::downgrade(&plugins));
        plugins.on_quarantine(Arc::new(move |name: &str, err: &ferrymq_plugin::PluginError| {
            let digest = weak.upgrade().and_then(|p| p.binding(name)).map(|b| b.digest);
            audit.record("broker", "plugin.quarantine", name, digest, &err.to_string());
        }));
    }
    // Bindings come and go through the admin API, so the broker always asks the host.
    broker.set_policies(Some(plugins.clone()));
    let tokens = Tokens::from_config(&config.admin.tokens).map_err(anyhow::Error::msg)?;
    let signatures = Signatures::from_config(&config.admin.signatures).map_err(anyhow::Error::msg)?;
    if !tokens.enabled() {
        if config.admin.listen.ip().is_loopback() {
            tracing::info!("admin API authentication is off (no [[admin.tokens]]): every tool on this host is admin");
        } else {
            // Refused at validation unless admin.insecure_open says so.
            tracing::warn!(listen = %config.admin.listen, "admin API authentication is off (no [[admin.tokens]]) and it listens beyond loopback (--insecure-admin): anyone who reaches it is admin");
        }
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
        let grpc =
            Arc::new(GrpcState::new(broker.clone(), arrivals.clone(), config.grpc.clone(), grpc_addr, cluster.clone()));
        if clustered {
            crate::broker::start_cluster(&config, &cluster, &broker, &grpc, admin_addr, &cluster_stop)?;
            if !cluster.is_master() {
                crate::broker::follow_plugins(registry.clone(), cluster_stop.clone())?;
            }
        }
        // Tx-check bindings can arrive at any time; with none bound the host answers "no opinion".
        let checker: Option<Arc<dyn ferrymq_broker::transaction::TransactionChecker>> = Some(plugins.clone() as _);
        broker.set_transaction_hooks(checker, Some(grpc.clone()));
        let grpc_task = tokio::spawn(grpc::serve(grpc_listener, grpc.clone(), stop_rx.clone()));
        let expiry_task = tokio::spawn(grpc.clone().expire_idle_clients(stop_rx.clone()));
        tracing::info!(addr = %grpc_addr, "gRPC listening");
        let state = Arc::new(AdminState {
            broker: broker.clone(),
            grpc: grpc.clone(),
            plugins: plugins.clone(),
            registry,
            audit,
            cluster: cluster.clone(),
            tokens,
            signatures,
            upload_bytes_max: config.plugins.upload_bytes_max,
            started,
        });
        let admin_task = tokio::spawn(admin::serve(listener, state, config.admin.clone(), stop_rx));
        tracing::info!(addr = %admin_addr, "admin HTTP listening");
        if clustered {
            tracing::info!(data_dir = %config.data_dir.display(), flush = ?config.store.flush,
                set = %cluster.broker_set, id = cluster.config.broker_id, role = ?cluster.role(),
                replication = ?cluster.config.replication, ms = started.elapsed().as_millis() as u64,
                "ferrymq broker ready");
        } else {
            tracing::info!(data_dir = %config.data_dir.display(), flush = ?config.store.flush,
                ms = started.elapsed().as_millis() as u64, "ferrymq standalone ready");
        }

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
        cluster_stop.store(true, std::sync::atomic::Ordering::Release);
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
