//! JSON responses: every ferrymq endpoint answers JSON, and every error as `{"error": "…"}`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;

/// A response of `status` whose body is `value` as JSON.
pub fn json(status: StatusCode, value: impl Serialize) -> Response<Full<Bytes>> {
    // Serializing the crate's own response types cannot fail (no maps with non-string keys).
    let body = serde_json::to_vec(&value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A response of `status` whose body is `{"error": message}`.
pub fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": message.to_string() }))
}

/// A response of `status` whose body is `{"error": …}` with `err` and every error beneath it, as
/// `what failed: why: why that`.
pub fn error_chain(status: StatusCode, err: &(dyn std::error::Error + 'static)) -> Response<Full<Bytes>> {
    let mut message = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    error(status, message)
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    fn body(response: Response<Full<Bytes>>) -> serde_json::Value {
        let bytes = futures_body(response);
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
    }

    fn futures_body(response: Response<Full<Bytes>>) -> Bytes {
        let runtime = tokio::runtime::Builder::new_current_thread().build();
        let Ok(runtime) = runtime else { return Bytes::new() };
        runtime.block_on(response.into_body().collect()).map(|c| c.to_bytes()).unwrap_or_default()
    }

    #[test]
    fn errors_are_json_objects_with_the_status_given() {
        let response = error(StatusCode::NOT_FOUND, "no such topic t");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers().get(CONTENT_TYPE).map(|v| v.as_bytes()), Some(&b"application/json"[..]));
        assert_eq!(body(response), serde_json::json!({ "error": "no such topic t" }));
    }

    #[test]
    fn an_error_chain_reads_from_what_failed_to_why() {
        #[derive(Debug, thiserror::Error)]
        #[error("the component is refused")]
        struct Refused(#[source] std::io::Error);
        let err = Refused(std::io::Error::other("not a component"));
        let response = error_chain(StatusCode::BAD_REQUEST, &err);
        assert_eq!(body(response), serde_json::json!({ "error": "the component is refused: not a component" }));
    }
}
