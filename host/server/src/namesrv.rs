//! `ferrymq namesrv`: the name server brokers register with.
//!
//! A broker POSTs its registration to `/v1/brokers` every heartbeat and gets the cluster view back;
//! `GET /v1/cluster` answers the same view (for `ferrymq admin cluster`), `GET /healthz` says the
//! server lives. A registration not renewed within `--broker-ttl-ms` is dropped. Name servers share
//! nothing: brokers register with every one of them, so any one answers for the whole cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::cluster::view::{ClusterView, Member, Registration};

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

/// Largest registration body accepted (a broker with many topics).
const BODY_BYTES_MAX: usize = 8 << 20;
/// Time allowed for a client to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The registrations a name server holds.
#[derive(Debug)]
pub struct Registry {
    ttl: Duration,
    brokers: Mutex<BTreeMap<(String, u64), (Registration, Instant)>>,
}

impl Registry {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, brokers: Mutex::new(BTreeMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, u64), (Registration, Instant)>> {
        self.brokers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a heartbeat; a different broker claiming a taken (set, id) replaces it, and says so.
    pub fn register(&self, registration: Registration) {
        let key = (registration.broker_set.clone(), registration.broker_id);
        let mut brokers = self.lock();
        match brokers.get(&key) {
            None => {
                tracing::info!(set = %key.0, id = key.1, grpc = %registration.grpc, role = ?registration.role, "broker registered")
            }
            Some((old, _)) if old.grpc != registration.grpc => {
                tracing::warn!(set = %key.0, id = key.1, old = %old.grpc, new = %registration.grpc, "another broker took this set and id");
            }
            Some(_) => {}
        }
        brokers.insert(key, (registration, Instant::now()));
    }

    /// The live registrations; expired ones are dropped (and logged).
    pub fn view(&self) -> ClusterView {
        let mut brokers = self.lock();
        brokers.retain(|(set, id), (r, seen)| {
            let live = seen.elapsed() < self.ttl;
            if !live {
                tracing::warn!(%set, id, grpc = %r.grpc, "broker registration expired");
            }
            live
        });
        ClusterView {
            brokers: brokers
                .values()
                .map(|(r, seen)| Member { registration: r.clone(), age_ms: seen.elapsed().as_millis() as u64 })
                .collect(),
        }
    }
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// Answers one request.
pub async fn handle(request: Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, BODY_BYTES_MAX).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {BODY_BYTES_MAX} bytes")),
    };
    match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        (&Method::GET, "/v1/cluster") => json(StatusCode::OK, &registry.view()),
        (&Method::POST, "/v1/brokers") => match serde_json::from_slice::<Registration>(&body) {
            Ok(registration) if !registration.broker_set.is_empty() && !registration.grpc.is_empty() => {
                registry.register(registration);
                json(StatusCode::OK, &registry.view())
            }
            Ok(_) => error(StatusCode::BAD_REQUEST, "a registration needs broker_set and grpc"),
            Err(err) => error(StatusCode::BAD_REQUEST, format!("not a broker registration: {err}")),
        },
        (_, "/healthz" | "/v1/cluster" | "/v1/brokers") => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        (_, path) => error(StatusCode::NOT_FOUND, format!("no such endpoint {path}")),
    }
}

pub fn run(args: NamesrvArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(&crate::config::LogConfig { level: args.log_level.clone(), ..Default::default() })?;
    if args.broker_ttl_ms == 0 || args.connections_max == 0 {
        anyhow::bail!("--broker-ttl-ms and --connections-max must be positive");
    }
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
        let answer = move |request: Request<Incoming>| {
            let registry = registry.clone();
            async move { handle(request, &registry).await }
        };
        let server = tokio::spawn(crate::http_serve::serve(
            "namesrv",
            listener,
            args.connections_max,
            HEADER_TIMEOUT,
            stop_rx,
            answer,
        ));
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
