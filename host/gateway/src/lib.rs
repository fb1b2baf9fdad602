//! The zone gateway (`ferrymq gateway --config FILE`): forwards chosen topics from the brokers of
//! one network zone to the brokers of another, under an optional policy plugin per topic, so that
//! every message the source acknowledged reaches the target once.
//!
//! * [`config`] — the configuration file.
//! * `forward` — one forward, top to bottom: receive, judge, send under the message's own id, record
//!   what does not cross, settle on the source. The target's de-duplication (`[broker.dedup]`)
//!   makes a second send of a message after a crash or a cut link a no-op.
//! * `held` — a batch held from its receive to its ack, its invisible time on the source renewed.
//! * `policy` — the route-world plugin that judges messages, swappable while running.
//! * `leg` — connections to a zone's brokers, made again after they break.
//! * `decisions` — the log of messages that did not cross.
//! * [`ferry`] — batch files for one-way links: export, import, the file format.
//! * `admin` — `/healthz`, `/metrics`, `GET /v1/gateway`, policy swaps.

pub mod config;

mod admin;
mod decisions;
pub mod ferry;
mod forward;
mod held;
mod leg;
mod policy;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ferrymq_plugin::PluginEngine;
use ferrymq_policy::compile::Compiler;
use ferrymq_policy::config::PluginKind;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

pub use config::GatewayConfig;
pub use forward::{SOURCE_STORE_MS, SOURCE_ZONE};

use crate::decisions::Decisions;
use crate::forward::{Route, RouteStats, Target};
use crate::leg::Leg;
use crate::policy::Policy;

/// How long a stopping gateway waits for its forwards to finish what they are sending.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// Time and memory the child process that compiles a policy component may take (as the broker's
/// `plugins.compile_ms_max` and `compile_memory_bytes_max` defaults).
const COMPILE_TIME_MAX: Duration = Duration::from_secs(120);
const COMPILE_MEMORY_BYTES_MAX: u64 = 2 << 30;

/// Runs the gateway until SIGTERM or SIGINT. The caller holds the data directory's lock.
pub fn run(config: GatewayConfig) -> anyhow::Result<()> {
    let data_dir = config.gateway.data_dir.clone();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let decisions = Arc::new(Decisions::open(&data_dir)?);
    let policies = load_policies(&config)?;
    let zone = config.source_zone().to_owned();
    let name = config.gateway.name.clone();
    let routes: Vec<Arc<Route>> = config
        .forward
        .iter()
        .zip(policies)
        .map(|(forward, policy)| {
            Arc::new(Route {
                topic: forward.topic.clone(),
                target_topic: forward.target_topic().to_owned(),
                group: forward.group(&name),
                batch: forward.batch,
                invisible: Duration::from_millis(forward.invisible_ms),
                zone: zone.clone(),
                policy,
                stats: RouteStats::default(),
                decisions: decisions.clone(),
            })
        })
        .collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("ferrymq-gateway")
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async move {
        let mut sigterm = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
        let mut sigint = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
        let listen = config.gateway.admin_listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("bind the gateway's admin endpoint on {listen}"))?;
        let admin_addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let exporter = match &config.target.ferry_dir {
            Some(dir) => {
                let leg = &config.target;
                let key_path = leg.ferry_key.as_deref().unwrap_or(std::path::Path::new(""));
                let settings = ferry::export::ExportSettings {
                    dir: dir.clone(),
                    data_dir: data_dir.clone(),
                    gateway: name.clone(),
                    key: ferrymq_policy::signatures::read_signing_key(key_path).context("[target] ferry_key")?,
                    file_bytes_max: leg.ferry_file_bytes_max,
                    file_age: Duration::from_millis(leg.ferry_file_age_ms),
                    keep_bytes: leg.ferry_keep_bytes,
                };
                let public = ferrymq_proto::hex::encode(settings.key.verifying_key().as_bytes());
                tracing::info!(outbox = %dir.display(), public_key = %public, "ferry export: files are signed; give the importing gateway this public key");
                let (exporter, task) = ferry::export::start(settings, stop_rx.clone())?;
                Some((exporter, task))
            }
            None => None,
        };
        let (exporter, export_task) = match exporter {
            Some((exporter, task)) => (Some(exporter), Some(task)),
            None => (None, None),
        };
        let import_stats = Arc::new(ferry::import::ImportStats::default());
        let gateway = Arc::new(admin::Gateway {
            name: name.clone(),
            source: leg_name(&config.source),
            target: leg_name(&config.target),
            routes: routes.clone(),
            import: config.source.ferry_dir.is_some().then(|| import_stats.clone()),
            started: Instant::now(),
        });
        let admin =
            tokio::spawn(admin::serve(gateway, listener, config.gateway.admin_connections_max, stop_rx.clone()));
        let pid = std::process::id();
        let target_of = |topic: &str| -> anyhow::Result<Target> {
            Ok(match &exporter {
                Some(exporter) => Target::Ferry(exporter.clone()),
                None => Target::Brokers(Box::new(Leg::new(
                    "target",
                    config.target.endpoint_list(),
                    format!("{name}@{topic}@target@{pid}"),
                ))),
            })
        };
        let mut tasks = Vec::new();
        match &config.source.ferry_dir {
            Some(dir) => {
                let key = config.source.ferry_public_key.as_deref().unwrap_or_default();
                let settings = ferry::import::ImportSettings {
                    dir: dir.clone(),
                    data_dir: data_dir.clone(),
                    key: ferrymq_policy::signatures::parse_public_key(key)
                        .map_err(|e| anyhow::anyhow!("[source] ferry_public_key: {e}"))?,
                };
                let (routes, target, stats, stop) = (routes.clone(), target_of("import")?, import_stats.clone(), stop_rx.clone());
                tasks.push(tokio::spawn(async move {
                    if let Err(err) = ferry::import::run(settings, routes, target, stats, stop).await {
                        tracing::error!(err = %format!("{err:#}"), "ferry import stopped");
                    }
                }));
            }
            None => {
                for (route, forward) in routes.iter().zip(&config.forward) {
                    for worker in 0..forward.workers {
                        let client_id = |side: &str| format!("{name}@{}@{side}@{pid}@{worker}", route.topic);
                        let source = Leg::new("source", config.source.endpoint_list(), client_id("source"));
                        let target = match &exporter {
                            Some(_) => target_of(&route.topic)?,
                            None => Target::Brokers(Box::new(Leg::new(
                                "target",
                                config.target.endpoint_list(),
                                client_id("target"),
                            ))),
                        };
                        tasks.push(tokio::spawn(route.clone().run(source, target, stop_rx.clone())));
                    }
                    let lag_source =
                        Leg::new("source", config.source.endpoint_list(), format!("{name}@{}@lag@{pid}", route.topic));
                    tasks.push(tokio::spawn(route.clone().watch_lag(lag_source, stop_rx.clone())));
                }
            }
        }
        tracing::info!(
            admin = %admin_addr,
            forwards = routes.len(),
            source = %leg_name(&config.source),
            target = %leg_name(&config.target),
            "ferrymq gateway ready"
        );
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
        tracing::info!("stopping: forwards finish what they are sending");
        let _ = stop_tx.send(true);
        let all = futures_join(tasks);
        if tokio::time::timeout(STOP_WAIT, all).await.is_err() {
            tracing::warn!("forwards did not stop in time; unsettled messages come again from the source");
        }
        if let Some(task) = export_task {
            let _ = task.await;
        }
        let _ = admin.await;
        tracing::info!("gateway stopped");
        Ok(())
    })
}

/// A leg as logs and `GET /v1/gateway` name it.
fn leg_name(leg: &config::Leg) -> String {
    match (&leg.endpoints, &leg.ferry_dir) {
        (Some(endpoints), _) => endpoints.clone(),
        (None, Some(dir)) => format!("ferry:{}", dir.display()),
        (None, None) => String::new(),
    }
}

/// `ferrymq gateway resend`: places the kept copies of batches `seqs` in the outbox again.
pub fn resend(config: &GatewayConfig, seqs: &[u64]) -> anyhow::Result<()> {
    let Some(outbox) = &config.target.ferry_dir else {
        anyhow::bail!("resend is for a gateway that exports to a ferry directory ([target] ferry_dir)");
    };
    ferry::export::resend(&config.gateway.data_dir, outbox, seqs)
}

/// Waits for every task.
async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

/// The policy of each forward, in order (`None` where there is none).
fn load_policies(config: &GatewayConfig) -> anyhow::Result<Vec<Option<Arc<Policy>>>> {
    let with_policy: Vec<_> = config.forward.iter().filter_map(|f| f.policy.as_ref()).collect();
    if with_policy.is_empty() {
        return Ok(vec![None; config.forward.len()]);
    }
    let instances_max: u32 = with_policy
        .iter()
        .map(|p| u32::try_from(p.limits.for_kind(PluginKind::Route).instances_max).unwrap_or(u32::MAX))
        .fold(0u32, u32::saturating_add)
        .max(1);
    let cache_dir = config.gateway.data_dir.join("plugins").join("cache");
    let engine =
        Arc::new(PluginEngine::new(Some(cache_dir.clone()), instances_max).context("start the plugin engine")?);
    let compiler = match std::env::current_exe() {
        Ok(exe) => Compiler::Process {
            exe,
            cache_dir,
            instances_max,
            time: COMPILE_TIME_MAX,
            memory_bytes: COMPILE_MEMORY_BYTES_MAX,
        },
        Err(_) => Compiler::InProcess,
    };
    config
        .forward
        .iter()
        .map(|forward| {
            forward
                .policy
                .as_ref()
                .map(|p| Policy::load(engine.clone(), compiler.clone(), &forward.topic, p).map(Arc::new))
                .transpose()
        })
        .collect()
}
