//! The admin HTTP endpoint: `GET /healthz` and `GET /metrics`.
//!
//! Routing is a plain function from request to response ([`respond`]), tested without sockets; [`serve`]
//! puts it on a listener with a bound on connections and on the time to send request headers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use ferrymq_store::Store;

use crate::config::AdminConfig;
use crate::metrics::{self, Snapshot};

/// What the admin endpoint reads.
#[derive(Debug)]
pub struct AdminState {
    pub store: Arc<Store>,
    pub started: Instant,
}

impl AdminState {
    fn snapshot(&self) -> Snapshot {
        Snapshot { store: self.store.stats(), recovery: self.store.recovery(), uptime: self.started.elapsed() }
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}

/// Answers one request.
pub fn respond<B>(request: &Request<B>, state: &AdminState) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if !matches!(path, "/healthz" | "/metrics") {
        return json(StatusCode::NOT_FOUND, serde_json::json!({ "error": format!("no such endpoint: {path}") }));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response =
            json(StatusCode::METHOD_NOT_ALLOWED, serde_json::json!({ "error": format!("{path} only answers GET") }));
        response.headers_mut().insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let snapshot = state.snapshot();
    match path {
        "/healthz" => match &snapshot.store.fatal {
            None => json(StatusCode::OK, serde_json::json!({ "status": "ok", "disk_full": snapshot.store.disk_full })),
            Some(reason) => {
                json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "status": "failed", "reason": reason }))
            }
        },
        _ => {
            let mut response = Response::new(Full::new(Bytes::from(metrics::render(&snapshot))));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"));
            response
        }
    }
}

/// Serves the admin endpoint on `listener` until `shutdown` turns true.
///
/// # Cancel safety
/// Meant to run as its own task; dropping it stops accepting and abandons open connections.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    config: AdminConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(config.connections_max));
    let header_timeout = Duration::from_millis(config.header_timeout_ms);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "admin HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(&request, &state);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                tracing::debug!(%peer, %err, "admin HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrymq_store::StoreOptions;

    fn state() -> (tempfile::TempDir, AdminState) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = StoreOptions::new(dir.path());
        options.config.segment_bytes = 8 << 20;
        options.config.index_entries_max = 1024;
        options.config.index_slots = 64;
        let store = Arc::new(Store::open(options).expect("store"));
        (dir, AdminState { store, started: Instant::now() })
    }

    fn get(path: &str) -> Request<()> {
        Request::builder().uri(path).body(()).expect("request")
    }

    #[test]
    fn healthz_is_ok_while_the_store_runs() {
        let (_dir, state) = state();
        let response = respond(&get("/healthz"), &state);
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let (_dir, state) = state();
        let response = respond(&get("/metrics"), &state);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/plain; version=0.0.4");
    }

    #[test]
    fn unknown_paths_and_methods_get_json_errors() {
        let (_dir, state) = state();
        assert_eq!(respond(&get("/nope"), &state).status(), StatusCode::NOT_FOUND);
        let post = Request::builder().method(Method::POST).uri("/metrics").body(()).expect("request");
        let response = respond(&post, &state);
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
    }
}
