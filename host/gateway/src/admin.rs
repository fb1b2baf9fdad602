//! The gateway's admin endpoint: `/healthz`, `/metrics`, `GET /v1/gateway` (its forwards with
//! counters, lag and state) and `PUT /v1/gateway/forwards/<topic>/policy` (a new policy component,
//! `application/wasm`, in force for every message judged after it). Without tokens (they come with
//! the security settings) it follows the broker's rules for an open admin API: loopback unless told
//! otherwise, no cross-site or rebound requests, changes only with their own content type.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use ferrymq_http::exposure::{Headers, refusal};
use ferrymq_http::response::{error, json};
use ferrymq_http::{Bounds, read_body};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ferry::import::ImportStats;
use crate::forward::{Route, RouteView};

/// Time a client has to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint serves.
pub struct Gateway {
    pub name: String,
    pub source: String,
    pub target: String,
    pub routes: Vec<Arc<Route>>,
    /// The importer's counters, in ferry import mode.
    pub import: Option<Arc<ImportStats>>,
    pub started: std::time::Instant,
}

#[derive(Serialize)]
struct View<'a> {
    name: &'a str,
    source: &'a str,
    target: &'a str,
    uptime_seconds: u64,
    forwards: Vec<RouteView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ferry_import: Option<serde_json::Value>,
}

/// Serves the endpoint on `listener` until `stop` turns true.
pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener, connections_max: usize, stop: watch::Receiver<bool>) {
    let bounds = Bounds { connections_max, header_timeout: HEADER_TIMEOUT, light_paths: &["/healthz", "/metrics"] };
    let handle = move |request: Request<Incoming>| {
        let gateway = gateway.clone();
        async move { answer(&gateway, request).await }
    };
    ferrymq_http::serve("gateway admin", listener, bounds, stop, handle).await;
}

async fn answer(gateway: &Gateway, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |name: hyper::header::HeaderName| request.headers().get(name).and_then(|v| v.to_str().ok());
    let headers = Headers {
        host: header(hyper::header::HOST),
        origin: header(hyper::header::ORIGIN),
        content_type: header(hyper::header::CONTENT_TYPE),
    };
    let changes = request.method() != Method::GET && request.method() != Method::HEAD;
    if let Some(reason) = refusal(&headers, changes) {
        return error(StatusCode::FORBIDDEN, reason);
    }
    let path = request.uri().path().to_owned();
    match (request.method().clone(), path.as_str()) {
        (Method::GET, "/healthz") => json(StatusCode::OK, serde_json::json!({ "status": "ok" })),
        (Method::GET, "/metrics") => {
            let mut response = Response::new(Full::new(Bytes::from(metrics(gateway))));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        (Method::GET, "/v1/gateway") => json(
            StatusCode::OK,
            View {
                name: &gateway.name,
                source: &gateway.source,
                target: &gateway.target,
                uptime_seconds: gateway.started.elapsed().as_secs(),
                forwards: gateway.routes.iter().map(|r| r.view()).collect(),
                ferry_import: gateway.import.as_ref().map(|s| import_view(s)),
            },
        ),
        (method, path) => match path.strip_prefix("/v1/gateway/forwards/").and_then(|p| p.strip_suffix("/policy")) {
            Some(topic) if method == Method::PUT => replace_policy(gateway, topic, request).await,
            Some(_) => {
                error(StatusCode::METHOD_NOT_ALLOWED, "PUT a component (application/wasm) to replace the policy")
            }
            None => error(StatusCode::NOT_FOUND, format!("no such path: {path}")),
        },
    }
}

async fn replace_policy(gateway: &Gateway, topic: &str, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(route) = gateway.routes.iter().find(|r| r.topic == topic) else {
        return error(StatusCode::NOT_FOUND, format!("no forward of topic {topic:?}"));
    };
    let Some(policy) = route.policy.clone() else {
        return error(
            StatusCode::CONFLICT,
            format!("the forward of {topic:?} has no policy; add [forward.policy] to the configuration"),
        );
    };
    let body =
        match read_body(request, ferrymq_plugin::UPLOAD_BYTES_DEFAULT, "plugin uploads to a gateway", BODY_TIMEOUT)
            .await
        {
            Ok((_, body)) => body,
            Err(answer) => return answer,
        };
    // Compiling runs in a child process and loading blocks: off the runtime's threads.
    match tokio::task::spawn_blocking(move || policy.replace(&body)).await {
        Ok(Ok(digest)) => {
            tracing::info!(%topic, %digest, "policy replaced");
            json(StatusCode::OK, serde_json::json!({ "topic": topic, "digest": digest }))
        }
        Ok(Err(err)) => {
            tracing::warn!(%topic, err = %format!("{err:#}"), "policy not replaced");
            error(StatusCode::BAD_REQUEST, format!("{err:#}"))
        }
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("the policy swap failed: {err}")),
    }
}

fn import_view(stats: &ImportStats) -> serde_json::Value {
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let quarantined: Vec<serde_json::Value> = ferrymq_proto::sync::lock(&stats.quarantined)
        .iter()
        .map(|(file, reason)| serde_json::json!({ "file": file, "reason": reason }))
        .collect();
    serde_json::json!({
        "next_seq": get(&stats.next_seq),
        "missing": *ferrymq_proto::sync::lock(&stats.gaps),
        "files_imported": get(&stats.files_imported),
        "files_duplicate": get(&stats.files_duplicate),
        "files_quarantined": get(&stats.files_quarantined),
        "messages_imported": get(&stats.messages_imported),
        "quarantined": quarantined,
    })
}

/// One metric of every forward: name, help, value.
type Series = (&'static str, &'static str, fn(&Route) -> f64);

/// Prometheus text of every forward's counters.
fn metrics(gateway: &Gateway) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP ferrymq_gateway_uptime_seconds Seconds since the gateway started.\n# TYPE ferrymq_gateway_uptime_seconds gauge\nferrymq_gateway_uptime_seconds {}",
        gateway.started.elapsed().as_secs()
    );
    let counters: [Series; 13] = [
        ("messages_received_total", "Messages received from the source.", |r| get(&r.stats.received)),
        ("messages_forwarded_total", "Messages the target acknowledged.", |r| get(&r.stats.forwarded)),
        ("messages_rejected_total", "Messages the policy rejected.", |r| get(&r.stats.rejected)),
        ("messages_dropped_total", "Messages the policy dropped.", |r| get(&r.stats.dropped)),
        ("messages_redacted_total", "Messages the policy changed before they crossed.", |r| get(&r.stats.redacted)),
        ("messages_set_aside_total", "Messages recorded in the decision log instead of crossing.", |r| {
            get(&r.stats.set_aside)
        }),
        ("send_retries_total", "Messages sent to the target again.", |r| get(&r.stats.retried)),
        ("policy_waits_total", "Judgements tried again because the policy failed.", |r| get(&r.stats.policy_waits)),
        ("renewals_total", "Invisible times of held messages renewed on the source.", |r| get(&r.stats.renewed)),
        ("renewal_failures_total", "Renewals of held messages' invisible times that failed.", |r| {
            get(&r.stats.renew_failed)
        }),
        ("in_flight", "Messages received and not yet settled on the source.", |r| get(&r.stats.in_flight)),
        ("lag_messages", "Messages of the topic the gateway's group has not consumed on the source.", |r| {
            get(&r.stats.lag_messages)
        }),
        ("lag_seconds", "Age of the oldest message being forwarded (0 when idle).", |r| {
            r.stats.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0
        }),
    ];
    for (name, help, value) in counters {
        let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
        let _ = writeln!(out, "# HELP ferrymq_gateway_{name} {help}\n# TYPE ferrymq_gateway_{name} {kind}");
        for route in &gateway.routes {
            let _ = writeln!(out, "ferrymq_gateway_{name}{{topic=\"{}\"}} {}", route.topic, value(route));
        }
    }
    if let Some(stats) = &gateway.import {
        let files: [(&str, &str, &std::sync::atomic::AtomicU64); 4] = [
            ("ferry_files_imported_total", "Batch files imported.", &stats.files_imported),
            ("ferry_files_duplicate_total", "Batch files that came again and were removed.", &stats.files_duplicate),
            ("ferry_files_quarantined_total", "Batch files that failed their checks.", &stats.files_quarantined),
            ("ferry_messages_imported_total", "Messages read from imported batch files.", &stats.messages_imported),
        ];
        for (name, help, counter) in files {
            let _ = writeln!(
                out,
                "# HELP ferrymq_gateway_{name} {help}\n# TYPE ferrymq_gateway_{name} counter\nferrymq_gateway_{name} {}",
                get(counter)
            );
        }
        let gaps = ferrymq_proto::sync::lock(&stats.gaps).len();
        let _ = writeln!(
            out,
            "# HELP ferrymq_gateway_ferry_missing_batches Batch files missing before the ones that wait.\n# TYPE ferrymq_gateway_ferry_missing_batches gauge\nferrymq_gateway_ferry_missing_batches {gaps}"
        );
    }
    out
}

fn get(counter: &std::sync::atomic::AtomicU64) -> f64 {
    counter.load(Ordering::Relaxed) as f64
}
