//! The name server brokers register with (`ferrymq namesrv` runs it).
//!
//! A broker POSTs its registration to `/v1/brokers` every heartbeat and gets the cluster view back;
//! `GET /v1/cluster` answers the same view (for `ferrymq admin cluster`), `GET /healthz` says the
//! server lives. A registration not renewed within `--broker-ttl-ms` is dropped. Name servers share
//! nothing: brokers register with every one of them, so any one answers for the whole cluster.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrymq_http::response::{error, json};
use ferrymq_proto::sync::lock;
use ferrymq_proto::throttle::Throttle;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::view::{ClusterView, Member, Registration};

/// Largest registration body accepted (a broker with many topics).
const BODY_BYTES_MAX: usize = 8 << 20;
/// Time allowed for a client to send its request headers, and its body.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

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

    /// Records a heartbeat; a different broker claiming a taken (set, id) replaces it, and says so.
    pub fn register(&self, registration: Registration) {
        let key = (registration.broker_set.clone(), registration.broker_id);
        let mut brokers = lock(&self.brokers);
        match brokers.get(&key) {
            None => {
                tracing::info!(set = %key.0, id = key.1, grpc = %registration.grpc, role = ?registration.role, "broker registered")
            }
            Some((old, _)) if old.grpc != registration.grpc => {
                static TAKEN: Throttle = Throttle::per_second(5);
                if let Some(suppressed) = TAKEN.admit() {
                    tracing::warn!(set = %key.0, id = key.1, old = %old.grpc, new = %registration.grpc, suppressed, "another broker took this set and id");
                }
            }
            Some(_) => {}
        }
        brokers.insert(key, (registration, Instant::now()));
    }

    /// The live registrations; expired ones are dropped (and logged).
    pub fn view(&self) -> ClusterView {
        let mut brokers = lock(&self.brokers);
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

/// Answers one request.
pub async fn handle(request: Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let (parts, body) =
        match ferrymq_http::read_body(request, BODY_BYTES_MAX, "name server request bodies", BODY_TIMEOUT).await {
            Ok(read) => read,
            Err(answer) => return answer,
        };
    match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/healthz") => json(StatusCode::OK, serde_json::json!({ "status": "ok" })),
        (&Method::GET, "/v1/cluster") => json(StatusCode::OK, registry.view()),
        (&Method::POST, "/v1/brokers") => match serde_json::from_slice::<Registration>(&body) {
            Ok(registration) if !registration.broker_set.is_empty() && !registration.grpc.is_empty() => {
                registry.register(registration);
                json(StatusCode::OK, registry.view())
            }
            Ok(_) => error(StatusCode::BAD_REQUEST, "a registration needs broker_set and grpc"),
            Err(err) => error(StatusCode::BAD_REQUEST, format!("not a broker registration: {err}")),
        },
        (_, "/healthz" | "/v1/cluster" | "/v1/brokers") => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        (_, path) => error(StatusCode::NOT_FOUND, format!("no such endpoint {path}")),
    }
}

/// Serves the name server's API on `listener` until `shutdown` turns true.
///
/// # Cancel safety
/// Meant to run as its own task; dropping it stops accepting and abandons open connections.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    connections_max: usize,
    shutdown: watch::Receiver<bool>,
) {
    let answer = move |request: Request<Incoming>| {
        let registry = registry.clone();
        async move { handle(request, &registry).await }
    };
    let bounds = ferrymq_http::Bounds { connections_max, header_timeout: HEADER_TIMEOUT, light_paths: &["/healthz"] };
    ferrymq_http::serve("namesrv", listener, bounds, shutdown, answer).await;
}
