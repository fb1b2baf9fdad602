//! Transaction check: asks the application's own service whether a transaction committed:
//! `GET <base>/tx/<transaction id>` answering `commit` or `rollback` (anything else, or no answer,
//! means "ask again later"). `base` is a binding parameter such as `http://10.0.0.5:8080`; the broker
//! lets the request through only to hosts on the binding's allowlist.

use ferrymq_plugin_sdk::{Level, Resolution, log};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingRequest, Scheme};

/// Largest answer read from the service.
const ANSWER_BYTES_MAX: u64 = 1024;

fn get(base: &str, path: &str) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = match base.split_once("://") {
        Some(("https", rest)) => (Scheme::Https, rest),
        Some((_, rest)) => (Scheme::Http, rest),
        None => (Scheme::Http, base),
    };
    let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&Method::Get).map_err(|()| "method")?;
    request.set_scheme(Some(&scheme)).map_err(|()| "scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "authority")?;
    let full_path = format!("/{}{path}", prefix.trim_matches('/')).replace("//", "/");
    request.set_path_with_query(Some(&full_path)).map_err(|()| "path")?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("request refused: {e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken twice")?
        .map_err(|e| format!("request failed: {e:?}"))?;
    let status = response.status();
    let body = response.consume().map_err(|()| "body taken twice")?;
    let stream = body.stream().map_err(|()| "body stream taken twice")?;
    let mut answer = Vec::new();
    while (answer.len() as u64) < ANSWER_BYTES_MAX {
        match stream.blocking_read(ANSWER_BYTES_MAX - answer.len() as u64) {
            Ok(chunk) => answer.extend_from_slice(&chunk),
            Err(_) => break,
        }
    }
    Ok((status, answer))
}

ferrymq_plugin_sdk::tx_check_plugin!(|transaction_id, _message, config| {
    let Some(base) = config.value("base") else {
        log(Level::Error, "tx-check-http needs a `base` parameter");
        return Resolution::Unknown;
    };
    match get(base, &format!("/tx/{transaction_id}")) {
        Ok((200, answer)) => match String::from_utf8_lossy(&answer).trim() {
            "commit" => Resolution::Commit,
            "rollback" => Resolution::Rollback,
            _ => Resolution::Unknown,
        },
        Ok((status, _)) => {
            log(Level::Warn, &format!("transaction service answered HTTP {status}"));
            Resolution::Unknown
        }
        Err(err) => {
            log(Level::Warn, &format!("transaction service unreachable: {err}"));
            Resolution::Unknown
        }
    }
});
