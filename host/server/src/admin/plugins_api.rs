//! The admin API for plugins, bindings and the audit log (`/v1/plugins…`, `/v1/bindings…`,
//! `/v1/audit…`), with each route's permission check.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Principal;
use super::{AdminState, Call, error, json};
use ferrymq_http::response::error_chain;
use ferrymq_policy::Source;
use ferrymq_policy::dry_run::DryRunRequest;
use ferrymq_policy::registry::{BindingSpec, ErrorClass, RegistryError, VersionInfo, check_plugin_name};
use ferrymq_policy::signatures::SignatureError;

/// Most audit entries one request returns.
pub const AUDIT_PAGE_MAX: usize = 1000;

type Answer = Response<Full<Bytes>>;

fn registry_error(err: &RegistryError) -> Answer {
    let status = match err.class() {
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::Conflict => StatusCode::CONFLICT,
        ErrorClass::Invalid => StatusCode::BAD_REQUEST,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    };
    error_chain(status, err)
}

fn forbidden(principal: &Principal, what: impl std::fmt::Display) -> Answer {
    error(StatusCode::FORBIDDEN, format!("{} may not {what}", principal.name))
}

fn version_json(v: &VersionInfo) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Activate {
    version: u32,
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Box<Answer>> {
    serde_json::from_slice(body)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"))))
}

/// The binding `PUT /v1/bindings/{name}` asks for: a [`BindingSpec`] whose name comes from the path.
fn binding_spec(name: &str, body: &[u8]) -> Result<BindingSpec, Box<Answer>> {
    let mut fields: serde_json::Map<String, Value> = parse(body)?;
    if fields.contains_key("name") {
        return Err(Box::new(error(StatusCode::BAD_REQUEST, "the binding's name comes from the path, not the body")));
    }
    fields.insert("name".into(), Value::String(name.to_owned()));
    serde_json::from_value(Value::Object(fields))
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, format!("invalid binding: {e}"))))
}

fn bindings_json(state: &AdminState) -> Vec<Value> {
    state
        .plugins
        .bindings()
        .into_iter()
        .map(|(b, s)| {
            let spec = state.registry.binding(&b.name).map(|r| r.spec);
            json!({ "name": b.name, "kind": b.kind.name(), "topic": b.topic, "group": b.group,
                    "policy": b.policy, "source": b.source, "component": b.component,
                    "plugin": b.plugin, "version": b.version, "digest": b.digest, "position": b.position,
                    "history": b.history.iter().map(|(v, p)| json!({ "version": v, "position": p })).collect::<Vec<_>>(),
                    "params": spec.as_ref().map(|s| &s.rules.params), "limits": spec.as_ref().map(|s| &s.rules.limits),
                    "http_allowlist": spec.as_ref().map(|s| &s.rules.http_allowlist),
                    "quarantined": s.quarantined, "calls": s.calls, "failures": s.failures,
                    "call_seconds_total": s.call_ns_total as f64 / 1e9, "log_lines_dropped": s.log_lines_dropped,
                    "worker_calls": s.worker_calls, "on_workers": s.on_workers })
        })
        .collect()
}

/// The query parameter `name` as a whole number: `Ok(None)` when absent, an answer when it is not one.
fn query_u64(query: Option<&str>, name: &str) -> Result<Option<u64>, Box<Answer>> {
    let Some(value) =
        query.and_then(|q| q.split('&').find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name)))
    else {
        return Ok(None);
    };
    value.1.parse().map(Some).map_err(|_| {
        Box::new(error(StatusCode::BAD_REQUEST, format!("{name} must be a whole number, not {:?}", value.1)))
    })
}

/// Answers a `/v1/plugins…`, `/v1/bindings…` or `/v1/audit…` request; `None` if the path is not one.
pub fn route(call: &Call<'_>, state: &AdminState, who: &Principal) -> Option<Answer> {
    let segments: Vec<&str> = call.path.trim_start_matches("/v1/").split('/').collect();
    let registry = &state.registry;
    let answer = match (call.method, segments.as_slice()) {
        (&Method::GET, ["plugins"]) => {
            let rows = registry.plugins().into_iter().map(|(name, versions)| {
                json!({ "name": name, "versions": versions.iter().map(version_json).collect::<Vec<_>>() })
            });
            json(StatusCode::OK, Value::Array(rows.collect()))
        }
        (&Method::GET, ["plugins", department, plugin]) => {
            let name = format!("{department}/{plugin}");
            match registry.plugins().remove(&name) {
                Some(versions) => json(
                    StatusCode::OK,
                    json!({ "name": name, "versions": versions.iter().map(version_json).collect::<Vec<_>>() }),
                ),
                None => error(StatusCode::NOT_FOUND, format!("no plugin named {name}")),
            }
        }
        (&Method::GET, ["plugins", department, plugin, "versions", version]) => {
            let name = format!("{department}/{plugin}");
            match version.parse().ok().and_then(|v| registry.version(&name, v)) {
                Some(v) => json(StatusCode::OK, version_json(&v)),
                None => error(StatusCode::NOT_FOUND, format!("plugin {name} has no version {version}")),
            }
        }
        (&Method::POST, ["plugins", department, plugin, "versions"]) => {
            let name = format!("{department}/{plugin}");
            if let Err(reason) = check_plugin_name(&name) {
                return Some(error(StatusCode::BAD_REQUEST, reason));
            }
            if !who.owns_plugin(&name) {
                return Some(forbidden(who, format_args!("upload plugins named {name}")));
            }
            if call.body.len() > state.upload_bytes_max {
                return Some(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "a component of {} bytes is over upload_bytes_max = {}",
                        call.body.len(),
                        state.upload_bytes_max
                    ),
                ));
            }
            let signed_by = match state.signatures.check(&name, call.body, call.signature) {
                Ok(signed_by) => signed_by,
                Err(err @ SignatureError::Malformed) => return Some(error(StatusCode::BAD_REQUEST, err)),
                Err(err @ (SignatureError::Required { .. } | SignatureError::Untrusted { .. })) => {
                    return Some(error(StatusCode::FORBIDDEN, err));
                }
            };
            match registry.push(&name, call.body, &who.name, signed_by) {
                Ok((v, true)) => json(StatusCode::CREATED, version_json(&v)),
                Ok((v, false)) => json(StatusCode::OK, version_json(&v)),
                Err(err) => registry_error(&err),
            }
        }
        (&Method::DELETE, ["plugins", department, plugin, "versions", version]) => {
            let name = format!("{department}/{plugin}");
            if !who.owns_plugin(&name) {
                return Some(forbidden(who, format_args!("delete versions of {name}")));
            }
            let Ok(version) = version.parse() else {
                return Some(error(StatusCode::BAD_REQUEST, format!("{version:?} is not a version number")));
            };
            match registry.delete_version(&name, version) {
                Ok(v) => json(StatusCode::OK, json!({ "deleted": version_json(&v) })),
                Err(err) => registry_error(&err),
            }
        }
        (&Method::POST, ["plugins", department, plugin, "versions", version, "dry-run"]) => {
            let name = format!("{department}/{plugin}");
            if !who.owns_plugin(&name) {
                return Some(forbidden(who, format_args!("dry-run {name}")));
            }
            let request: DryRunRequest = match parse(call.body) {
                Ok(request) => request,
                Err(answer) => return Some(*answer),
            };
            if !who.owns_topic(&request.topic) {
                return Some(forbidden(who, format_args!("dry-run on topic {}", request.topic)));
            }
            // A binding's parameters are for those who may change it: its topic's department.
            if let Some(binding) = request.binding.as_deref()
                && let Some(bound) = state.plugins.binding(binding)
                && !who.owns_topic(&bound.topic)
            {
                return Some(forbidden(who, format_args!("dry-run with the parameters of binding {binding}")));
            }
            let Ok(version) = version.parse() else {
                return Some(error(StatusCode::NOT_FOUND, format!("plugin {name} has no version {version}")));
            };
            match registry.dry_run(&name, version, request) {
                Ok(run) => json(StatusCode::OK, run),
                Err(err) => registry_error(&err),
            }
        }
        (&Method::GET, ["bindings"]) => json(StatusCode::OK, Value::Array(bindings_json(state))),
        (&Method::GET, ["bindings", name]) => match bindings_json(state).into_iter().find(|b| b["name"] == *name) {
            Some(b) => json(StatusCode::OK, b),
            None => error(StatusCode::NOT_FOUND, format!("no binding named {name}")),
        },
        (&Method::PUT, ["bindings", name]) => {
            let new = match binding_spec(name, call.body) {
                Ok(new) => new,
                Err(answer) => return Some(*answer),
            };
            if !who.owns_plugin(&new.plugin) || !who.owns_topic(&new.rules.topic) {
                return Some(forbidden(who, format_args!("bind {} on topic {}", new.plugin, new.rules.topic)));
            }
            if let Some(existing) = registry.binding(name)
                && (!who.owns_plugin(&existing.spec.plugin) || !who.owns_topic(&existing.spec.rules.topic))
            {
                return Some(forbidden(who, format_args!("replace binding {name}")));
            }
            let existed = registry.binding(name).is_some();
            match registry.bind(new) {
                Ok(info) => json(
                    if existed { StatusCode::OK } else { StatusCode::CREATED },
                    json!({ "name": info.name, "version": info.version, "digest": info.digest, "position": info.position }),
                ),
                Err(err) => registry_error(&err),
            }
        }
        (&Method::DELETE | &Method::POST, ["bindings", name, ..]) => {
            let Some(existing) = registry.binding(name) else {
                let message = match state.plugins.binding(name) {
                    Some(b) if b.source == Source::Config => {
                        format!("binding {name} comes from the configuration file and changes only with it")
                    }
                    _ => format!("no binding named {name}"),
                };
                let status = if message.starts_with("no") { StatusCode::NOT_FOUND } else { StatusCode::CONFLICT };
                return Some(error(status, message));
            };
            if !who.owns_plugin(&existing.spec.plugin) || !who.owns_topic(&existing.spec.rules.topic) {
                return Some(forbidden(who, format_args!("change binding {name}")));
            }
            let result = match (call.method, &segments[2..]) {
                (&Method::DELETE, []) => registry.unbind(name).map(|_| json!({ "unbound": name })),
                (&Method::POST, ["activate"]) => {
                    let activate: Activate = match parse(call.body) {
                        Ok(a) => a,
                        Err(answer) => return Some(*answer),
                    };
                    registry.activate(name, activate.version).map(
                        |i| json!({ "name": i.name, "version": i.version, "digest": i.digest, "position": i.position }),
                    )
                }
                (&Method::POST, ["rollback"]) => registry.rollback(name).map(
                    |i| json!({ "name": i.name, "version": i.version, "digest": i.digest, "position": i.position }),
                ),
                _ => {
                    return Some(error(
                        StatusCode::NOT_FOUND,
                        format!("no such endpoint: {} {}", call.method, call.path),
                    ));
                }
            };
            match result {
                Ok(body) => json(StatusCode::OK, body),
                Err(err) => registry_error(&err),
            }
        }
        (&Method::GET, ["audit"]) => {
            let (from, limit) = match (query_u64(call.query, "from"), query_u64(call.query, "limit")) {
                (Ok(from), Ok(limit)) => {
                    (from.unwrap_or(0), limit.map_or(AUDIT_PAGE_MAX, |l| l.min(AUDIT_PAGE_MAX as u64) as usize))
                }
                (Err(answer), _) | (_, Err(answer)) => return Some(*answer),
            };
            json(StatusCode::OK, serde_json::to_value(state.audit.read(from, limit)).unwrap_or_default())
        }
        (&Method::GET, ["audit", "verify"]) => {
            let mut verifier = super::audit::Verifier::default();
            let mut from = 0;
            loop {
                let page = state.audit.read(from, AUDIT_PAGE_MAX);
                let Some(last) = page.last() else { break };
                from = last.seq + 1;
                if !page.iter().all(|e| verifier.push(e)) {
                    break;
                }
            }
            json(StatusCode::OK, serde_json::to_value(verifier.finish()).unwrap_or_default())
        }
        (_, ["plugins" | "bindings" | "audit", ..]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, format!("{} does not answer {}", call.path, call.method))
        }
        _ => return None,
    };
    Some(answer)
}
