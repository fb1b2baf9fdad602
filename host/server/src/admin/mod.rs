//! The admin HTTP endpoint: health, metrics, and the JSON API (`/v1/…`) behind `ferrymq admin`.
//!
//! [`respond`] is a plain function from a request (method, path, query, body) to a response, tested
//! without sockets; [`serve`] puts it on a listener with bounds on connections, header time and body
//! size.

mod api;
mod cluster_api;
pub use cluster_api::cluster_rows;
pub mod audit;
pub mod auth;
mod plugins_api;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, ORIGIN, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;

use ferrymq_broker::Broker;
pub use ferrymq_http::response::{error, json};

use crate::config::AdminConfig;
use crate::metrics::{self, Snapshot};
use audit::AuditLog;
use auth::{AuthError, Tokens};
use ferrymq_grpc::GrpcState;
use ferrymq_policy::PluginHost;
use ferrymq_policy::registry::Registry;
use ferrymq_policy::signatures::Signatures;

/// Largest request body the admin API reads.
pub const BODY_BYTES_MAX: usize = 1 << 20;

/// What the admin endpoint reads and changes.
#[derive(Debug)]
pub struct AdminState {
    pub broker: Arc<Broker>,
    pub grpc: Arc<GrpcState>,
    pub plugins: Arc<PluginHost>,
    pub registry: Arc<Registry>,
    pub audit: Arc<AuditLog>,
    pub cluster: Arc<ferrymq_cluster::Cluster>,
    pub tokens: Tokens,
    pub signatures: Signatures,
    /// Largest component an upload may carry.
    pub upload_bytes_max: usize,
    pub started: Instant,
}

impl AdminState {
    fn snapshot(&self) -> Snapshot {
        let store = self.broker.store();
        let delivery = self.broker.delivery();
        Snapshot {
            store: store.stats(),
            recovery: store.recovery(),
            uptime: self.started.elapsed(),
            clients: self.grpc.client_count(),
            in_flight: delivery.in_flight(),
            timer_pending: self.broker.timer().pending(),
            filter_errors: delivery.filter_errors(),
            topics: self.broker.metadata().topics().len(),
            groups: self.broker.metadata().groups().len(),
            rpcs: self.grpc.rpcs.snapshot(),
            transactions: self.broker.transactions().stats(),
            dropped_by_policy: self.broker.dropped_by_policy(),
            plugins: self.plugins.bindings().into_iter().map(|(b, stats)| (b.name, b.kind.name(), stats)).collect(),
            replication: self.cluster.stats(store.log_end()),
            messages_lost: self.broker.messages_lost(),
            dedup: self.broker.dedup_stats(),
        }
    }
}

/// One request as the router sees it.
#[derive(Debug)]
pub struct Call<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub body: &'a [u8],
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The `x-ferrymq-signature` header (plugin uploads).
    pub signature: Option<&'a str>,
    /// The `Host`, `Origin` and `Content-Type` headers: an API without tokens checks them
    /// (`ferrymq_http::exposure`).
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub content_type: Option<&'a str>,
}

fn method_not_allowed(path: &str, allowed: &'static str) -> Response<Full<Bytes>> {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, format!("{path} answers {allowed}"));
    response.headers_mut().insert(ALLOW, HeaderValue::from_static(allowed));
    response
}

/// Answers one request.
pub fn respond(call: &Call<'_>, state: &AdminState) -> Response<Full<Bytes>> {
    let get = call.method == Method::GET || call.method == Method::HEAD;
    match call.path {
        "/healthz" if get => {
            let snapshot = state.snapshot();
            let store = &snapshot.store;
            match &store.fatal {
                None => json(StatusCode::OK, health(store)),
                Some(reason) => {
                    json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "status": "failed", "reason": reason }))
                }
            }
        }
        "/metrics" if get => {
            let mut response = Response::new(Full::new(Bytes::from(metrics::render(&state.snapshot()))));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            response
        }
        "/healthz" | "/metrics" => method_not_allowed(call.path, "GET, HEAD"),
        path if path.starts_with("/v1/") => v1(call, state),
        path => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

/// The body of a healthy `/healthz`: still 200 while the disk is full (the broker serves reads and
/// recovers by itself when space returns), but saying so, why, and where usage stands.
fn health(store: &ferrymq_store::StoreStats) -> serde_json::Value {
    let mut warnings = Vec::new();
    if store.disk_full {
        let reason = store.disk_full_reason.as_deref().unwrap_or("no reason recorded");
        warnings.push(format!("disk full, sends are refused: {reason}"));
    }
    serde_json::json!({
        "status": "ok",
        "disk_full": store.disk_full,
        "disk_own_bytes": store.own_bytes,
        "disk_budget_bytes": store.budget_bytes,
        "warnings": warnings,
    })
}

/// Authenticates, authorises, answers, and audits every request that changes something.
fn v1(call: &Call<'_>, state: &AdminState) -> Response<Full<Bytes>> {
    let changes = !(call.method == Method::GET || call.method == Method::HEAD);
    let action = format!("{} {}", call.method, call.path);
    let target = call.path.trim_start_matches("/v1/");
    if !state.tokens.enabled()
        && let Some(reason) = ferrymq_http::exposure::refusal(
            &ferrymq_http::exposure::Headers { host: call.host, origin: call.origin, content_type: call.content_type },
            changes,
        )
    {
        tracing::warn!(reason, "admin request refused");
        return error(StatusCode::FORBIDDEN, reason);
    }
    let principal = match state.tokens.authenticate(call.authorization) {
        Ok(principal) => principal,
        Err(err) => {
            let message = match err {
                AuthError::Missing => "this endpoint needs an `Authorization: Bearer <token>` header",
                AuthError::Unknown => "the bearer token is not known to this broker",
            };
            let mut response = error(StatusCode::UNAUTHORIZED, message);
            response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            if changes {
                state.audit.record_refusal(&action, target, &status_line(response.status()));
            }
            return response;
        }
    };
    if changes && !state.audit.writable() {
        // Nothing changes that the audit log could not record (the disk is full, or the store
        // stopped); refused reads and this refusal are not recorded either, for the same reason.
        return error(
            StatusCode::INSUFFICIENT_STORAGE,
            "the change could not be audited: the store takes no writes now",
        );
    }
    let digest = (call.method == Method::POST && call.path.ends_with("/versions"))
        .then(|| ferrymq_proto::hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(call.body)));
    let response = match plugins_api::route(call, state, &principal) {
        Some(response) => response,
        None if changes && !principal.is_admin() => {
            error(StatusCode::FORBIDDEN, format!("{} may not {action}: it needs the admin role", principal.name))
        }
        None => api::route(call, state),
    };
    if changes {
        state.audit.record(&principal.name, &action, target, digest, &status_line(response.status()));
    }
    response
}

fn status_line(status: StatusCode) -> String {
    format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""))
}

/// Serves the admin endpoint on `listener` until `shutdown` turns true.
///
/// # Cancel safety
/// Meant to run as its own task; dropping it stops accepting and abandons open connections.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    config: AdminConfig,
    shutdown: watch::Receiver<bool>,
) {
    let bounds = ferrymq_http::Bounds {
        connections_max: config.connections_max,
        header_timeout: Duration::from_millis(config.header_timeout_ms),
        light_paths: &["/healthz", "/metrics"],
    };
    let body_timeout = Duration::from_millis(config.body_timeout_ms);
    let answer = move |request: Request<Incoming>| {
        let state = state.clone();
        async move { handle(request, &state, body_timeout).await }
    };
    ferrymq_http::serve("admin", listener, bounds, shutdown, answer).await;
}

async fn handle(request: Request<Incoming>, state: &AdminState, body_timeout: Duration) -> Response<Full<Bytes>> {
    // Plugin uploads carry a component; everything else is small JSON.
    let upload = request.method() == Method::POST && request.uri().path().ends_with("/versions");
    let (limit, limit_name) = if upload {
        (state.upload_bytes_max, "[plugins] upload_bytes_max")
    } else {
        (BODY_BYTES_MAX, "admin request bodies other than plugin uploads")
    };
    // An upload from a caller the tokens do not know is refused whatever it carries: answer without
    // reading (let alone buffering) up to a component's worth of its bytes.
    let unknown_uploader = upload
        && state.tokens.enabled()
        && state.tokens.authenticate(request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok())).is_err();
    let (parts, body) = if unknown_uploader {
        (request.into_parts().0, Bytes::new())
    } else {
        match ferrymq_http::read_body(request, limit, limit_name, body_timeout).await {
            Ok(read) => read,
            Err(answer) => return answer,
        }
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let call = Call {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        body: &body,
        authorization: header(AUTHORIZATION.as_str()),
        signature: header("x-ferrymq-signature"),
        host: header(HOST.as_str()),
        origin: header(ORIGIN.as_str()),
        content_type: header(CONTENT_TYPE.as_str()),
    };
    // One span per request, so that every log line it causes names it (the principal is known
    // only once the token is checked; the audit log records it).
    let span = tracing::info_span!("admin", method = %parts.method, path = parts.uri.path());
    // Some API calls wait for the store (offset search); keep them off the async workers' critical path.
    tokio::task::block_in_place(|| span.in_scope(|| respond(&call, state)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrymq_broker::BrokerConfig;
    use ferrymq_store::clock::SystemClock;
    use ferrymq_store::{Store, StoreOptions};

    use ferrymq_grpc::{Arrivals, GrpcConfig};

    fn state() -> (tempfile::TempDir, AdminState) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = StoreOptions::new(dir.path());
        options.config.segment_bytes = 8 << 20;
        options.config.index_entries_max = 1024;
        options.config.index_slots = 64;
        let store = Arc::new(Store::open(options).expect("store"));
        let broker =
            Arc::new(Broker::open(store, dir.path(), BrokerConfig::default(), Arc::new(SystemClock)).expect("broker"));
        let cluster = Arc::new(ferrymq_cluster::Cluster::new(Default::default(), "ferrymq".into()));
        let grpc = Arc::new(GrpcState::new(
            broker.clone(),
            Arc::new(Arrivals::default()),
            GrpcConfig::default(),
            std::net::SocketAddr::from(([127, 0, 0, 1], 8081)),
            cluster.clone(),
        ));
        let plugins = Arc::new(
            ferrymq_policy::PluginHost::start(&ferrymq_policy::PluginsConfig::default(), dir.path())
                .expect("no plugins"),
        );
        let registry = Arc::new(
            Registry::open(broker.clone(), plugins.clone(), dir.path(), ferrymq_policy::compile::Compiler::InProcess)
                .expect("registry"),
        );
        let audit = Arc::new(AuditLog::open(broker.store().clone()));
        let state = AdminState {
            broker,
            grpc,
            plugins,
            registry,
            audit,
            cluster,
            tokens: Tokens::default(),
            signatures: Signatures::default(),
            upload_bytes_max: 1 << 20,
            started: Instant::now(),
        };
        (dir, state)
    }

    /// A request as `ferrymq admin` sends it.
    fn tool() -> Call<'static> {
        Call {
            method: &Method::GET,
            path: "/",
            query: None,
            body: b"",
            authorization: None,
            signature: None,
            host: Some("127.0.0.1:8082"),
            origin: None,
            content_type: Some("application/json"),
        }
    }

    fn get(path: &str) -> Call<'_> {
        Call { method: &Method::GET, path, query: None, body: b"", ..tool() }
    }

    fn call(state: &AdminState, method: Method, path: &str, body: &str) -> (StatusCode, serde_json::Value) {
        let (path, query) = path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q)));
        let response = respond(&Call { method: &method, path, query, body: body.as_bytes(), ..tool() }, state);
        let status = response.status();
        let bytes = futures_body(response);
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    fn futures_body(response: Response<Full<Bytes>>) -> Bytes {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let body = http_body_util::BodyExt::collect(response.into_body());
        runtime.block_on(async { body.await.map(|c| c.to_bytes()).unwrap_or_default() })
    }

    #[test]
    fn healthz_and_metrics_answer_get_only() {
        let (_dir, state) = state();
        let health = respond(&get("/healthz"), &state);
        assert_eq!(health.status(), StatusCode::OK);
        let metrics = respond(&get("/metrics"), &state);
        assert_eq!(metrics.headers()[CONTENT_TYPE], "text/plain; version=0.0.4");
        let post = respond(&Call { method: &Method::POST, ..get("/metrics") }, &state);
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");
        assert_eq!(call(&state, Method::GET, "/nope", "").0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn healthz_stays_200_and_says_why_the_disk_is_full() {
        let mut stats = state().1.broker.store().stats();
        assert_eq!(health(&stats)["warnings"], serde_json::json!([]));
        stats.disk_full = true;
        stats.disk_full_reason = Some("the store's own files take 10 bytes, at or over its budget of 8 bytes".into());
        let body = health(&stats);
        assert_eq!(body["disk_full"], true);
        assert!(body["warnings"][0].as_str().unwrap_or_default().contains("budget of 8 bytes"), "{body}");
        assert_eq!(body["disk_budget_bytes"], stats.budget_bytes);
    }

    #[test]
    fn audit_pages_take_whole_numbers_only() {
        let (_dir, state) = state();
        assert_eq!(call(&state, Method::GET, "/v1/audit?from=0&limit=5", "").0, StatusCode::OK);
        let (status, err) = call(&state, Method::GET, "/v1/audit?from=-1", "");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert_eq!(call(&state, Method::GET, "/v1/audit?limit=lots", "").0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_browser_page_cannot_use_an_api_without_tokens() {
        let (_dir, state) = state();
        let body = br#"{"name":"evil","type":"normal","queues":1}"#;
        let csrf = Call {
            method: &Method::POST,
            path: "/v1/topics",
            body,
            host: Some("evil.example"),
            origin: Some("http://evil.example"),
            content_type: Some("text/plain"),
            ..tool()
        };
        assert_eq!(respond(&csrf, &state).status(), StatusCode::FORBIDDEN);
        let plain =
            Call { method: &Method::POST, path: "/v1/topics", body, content_type: Some("text/plain"), ..tool() };
        assert_eq!(respond(&plain, &state).status(), StatusCode::FORBIDDEN);
        assert!(state.broker.metadata().topics().iter().all(|t| t.name != "evil"), "nothing was created");
        let tool_call = Call { method: &Method::POST, path: "/v1/topics", body, ..tool() };
        assert_eq!(respond(&tool_call, &state).status(), StatusCode::CREATED);
    }

    #[test]
    fn topics_are_created_listed_refused_and_deleted() {
        let (_dir, state) = state();
        let (status, topic) = call(&state, Method::POST, "/v1/topics", r#"{"name":"orders","type":"fifo","queues":8}"#);
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(topic["queues"], 8);
        let (_, list) = call(&state, Method::GET, "/v1/topics", "");
        assert_eq!(list[0]["type"], "fifo");
        let (status, err) = call(&state, Method::POST, "/v1/topics", r#"{"name":"orders","type":"normal","queues":8}"#);
        assert_eq!(status, StatusCode::CONFLICT, "{err}");
        let (status, err) = call(&state, Method::POST, "/v1/topics", r#"{"name":"x","type":"weird","queues":1}"#);
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(err["error"].as_str().unwrap_or_default().contains("weird"), "{err}");
        assert_eq!(call(&state, Method::DELETE, "/v1/topics/orders", "").0, StatusCode::OK);
        assert_eq!(call(&state, Method::DELETE, "/v1/topics/orders", "").0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn groups_are_saved_with_defaults_and_unknown_groups_have_no_lag() {
        let (_dir, state) = state();
        let (status, group) =
            call(&state, Method::POST, "/v1/groups", r#"{"name":"billing","fifo":true,"max_attempts":5}"#);
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!((group["fifo"].as_bool(), group["max_attempts"].as_u64()), (Some(true), Some(5)));
        assert_eq!(call(&state, Method::GET, "/v1/groups/billing/lag", "").0, StatusCode::OK);
        assert_eq!(call(&state, Method::GET, "/v1/groups/nobody/lag", "").0, StatusCode::NOT_FOUND);
        assert_eq!(call(&state, Method::GET, "/v1/messages", "").0, StatusCode::BAD_REQUEST);
        assert_eq!(call(&state, Method::GET, "/v1/messages?id=none", "").1, serde_json::json!([]));
    }

    /// Every endpoint × every role: 401 without a token, 403 where the role does not reach, and
    /// otherwise an answer from the endpoint itself; every change lands in the audit chain.
    #[test]
    fn each_role_reaches_exactly_its_endpoints() {
        let (_dir, mut state) = state();
        let token = |principal: &str, role: &str| auth::TokenConfig {
            principal: principal.into(),
            token: Some(format!("{principal}-token-0123456789")),
            token_sha256: None,
            roles: vec![role.into()],
        };
        state.tokens =
            Tokens::from_config(&[token("ops", "admin"), token("tax", "department:tax"), token("auditor", "viewer")])
                .expect("tokens");
        let tax_binding = r#"{"kind":"route","topic":"tax-in","plugin":"tax/p","version":1}"#;
        let other_binding = r#"{"kind":"route","topic":"customs-in","plugin":"customs/p","version":1}"#;
        let foreign_plugin = r#"{"kind":"route","topic":"tax-in","plugin":"customs/p","version":1}"#;
        // (method, path, body, admin, department:tax, viewer): whether each role gets through.
        let cases: &[(Method, &str, &str, bool, bool, bool)] = &[
            (Method::GET, "/v1/topics", "", true, true, true),
            (Method::POST, "/v1/topics", r#"{"name":"t","type":"normal","queues":1}"#, true, false, false),
            (Method::DELETE, "/v1/topics/t", "", true, false, false),
            (Method::GET, "/v1/groups", "", true, true, true),
            (Method::POST, "/v1/groups", r#"{"name":"g"}"#, true, false, false),
            (Method::POST, "/v1/groups/g/offsets/reset", r#"{"topic":"t","time_ms":0}"#, true, false, false),
            (Method::GET, "/v1/groups/g/lag", "", true, true, true),
            (Method::GET, "/v1/transactions", "", true, true, true),
            (Method::GET, "/v1/messages?id=x", "", true, true, true),
            (Method::GET, "/v1/plugins", "", true, true, true),
            (Method::GET, "/v1/plugins/tax/p", "", true, true, true),
            (Method::POST, "/v1/plugins/tax/p/versions", "not wasm", true, true, false),
            (Method::POST, "/v1/plugins/customs/p/versions", "not wasm", true, false, false),
            (Method::DELETE, "/v1/plugins/tax/p/versions/1", "", true, true, false),
            (Method::DELETE, "/v1/plugins/customs/p/versions/1", "", true, false, false),
            (Method::POST, "/v1/plugins/tax/p/versions/1/dry-run", r#"{"topic":"tax-in"}"#, true, true, false),
            (Method::POST, "/v1/plugins/tax/p/versions/1/dry-run", r#"{"topic":"customs-in"}"#, true, false, false),
            (Method::GET, "/v1/bindings", "", true, true, true),
            (Method::PUT, "/v1/bindings/b1", tax_binding, true, true, false),
            (Method::PUT, "/v1/bindings/b2", other_binding, true, false, false),
            (Method::PUT, "/v1/bindings/b3", foreign_plugin, true, false, false),
            (Method::GET, "/v1/audit", "", true, true, true),
            (Method::GET, "/v1/audit/verify", "", true, true, true),
        ];
        let ask = |method: &Method, path: &str, body: &str, token: Option<&str>| {
            let (path, query) = path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q)));
            let header = token.map(|t| format!("Bearer {t}-token-0123456789"));
            let call = Call { method, path, query, body: body.as_bytes(), authorization: header.as_deref(), ..tool() };
            respond(&call, &state).status()
        };
        for (method, path, body, admin, department, viewer) in cases {
            assert_eq!(ask(method, path, body, None), StatusCode::UNAUTHORIZED, "{method} {path} without a token");
            assert_eq!(ask(method, path, body, Some("stranger")), StatusCode::UNAUTHORIZED, "{method} {path}");
            for (who, allowed) in [("ops", admin), ("tax", department), ("auditor", viewer)] {
                let status = ask(method, path, body, Some(who));
                assert!(status != StatusCode::UNAUTHORIZED, "{method} {path} as {who}: {status}");
                assert_eq!(status == StatusCode::FORBIDDEN, !allowed, "{method} {path} as {who}: {status}");
            }
        }
        // Binding changes on an existing binding follow its topic and plugin.
        let entries = state.audit.read(0, 10_000);
        assert!(entries.iter().any(|e| e.principal == "unauthenticated"), "refused calls are audited");
        assert!(entries.iter().any(|e| e.principal == "tax" && e.result.starts_with("403")));
        assert!(audit::verify(&entries).ok);
    }
}
