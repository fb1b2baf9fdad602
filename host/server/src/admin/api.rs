//! The admin JSON API (`/v1/…`): topics, groups, consumer progress, offset resets, message lookup.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use ferrymq_broker::metadata::{ConsumeFrom, GroupConfig, MetadataError, TopicConfig, TopicType};
use ferrymq_broker::search::offset_at_time;
use ferrymq_broker::transaction::DISCARD_TOPIC;
use ferrymq_proto::properties;
use ferrymq_store::StoredRecord;

use super::{AdminState, Call, error, json};

/// Most messages one lookup returns.
pub const LOOKUP_RESULTS_MAX: usize = 64;

fn metadata_error(err: &MetadataError) -> Response<Full<Bytes>> {
    let status = match err {
        MetadataError::TopicNotFound(_) | MetadataError::GroupNotFound(_) => StatusCode::NOT_FOUND,
        MetadataError::TopicConflict(_) | MetadataError::TooManyGroups { .. } => StatusCode::CONFLICT,
        MetadataError::GroupCreationThrottled { .. } => StatusCode::TOO_MANY_REQUESTS,
        MetadataError::Persist(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, err)
}

/// The request body as `T`, or the 400 response to send instead.
fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Box<Response<Full<Bytes>>>> {
    serde_json::from_slice(body)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"))))
}

fn topic_json(t: &TopicConfig) -> Value {
    json!({ "name": t.name, "type": t.message_type, "queues": t.queues })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTopic {
    name: String,
    #[serde(rename = "type")]
    message_type: TopicType,
    queues: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGroup {
    name: String,
    #[serde(default)]
    fifo: bool,
    max_attempts: Option<u32>,
    #[serde(default)]
    broadcast: bool,
    consume_from: Option<ConsumeFrom>,
    retry_backoff_ms: Option<Vec<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reset {
    topic: String,
    /// Milliseconds since the Unix epoch.
    time_ms: i64,
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
}

/// Undoes `%XX` escapes (ids and keys are ASCII in practice; anything malformed is kept verbatim).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn message_json(stored: &StoredRecord) -> Option<Value> {
    let rec = stored.decode().ok()?;
    let props: serde_json::Map<String, Value> = properties::decode(rec.properties)
        .map_while(Result::ok)
        .map(|p| (p.name.to_owned(), Value::String(p.value.to_owned())))
        .collect();
    Some(json!({
        "topic": rec.topic,
        "queue_id": rec.meta.queue_id,
        "queue_offset": rec.meta.queue_offset,
        "log_offset": stored.offset(),
        "store_time_ms": rec.meta.store_timestamp_ms,
        "born_time_ms": rec.meta.born_timestamp_ms,
        "reconsume_times": rec.meta.reconsume_times,
        "properties": props,
        "body_bytes": rec.body.len(),
        "body": String::from_utf8_lossy(rec.body),
    }))
}

pub fn route(call: &Call<'_>, state: &AdminState) -> Response<Full<Bytes>> {
    let meta = state.broker.metadata();
    let segments: Vec<&str> = call.path.trim_start_matches("/v1/").split('/').collect();
    let metadata_change = call.method != Method::GET && matches!(segments.first(), Some(&"topics" | &"groups"));
    if metadata_change && !state.cluster.is_master() {
        return error(
            StatusCode::CONFLICT,
            "this broker is a slave: it copies topics, groups and offsets from its master; change them there",
        );
    }
    match (call.method, segments.as_slice()) {
        (&Method::GET, ["cluster"]) => json(StatusCode::OK, super::cluster_api::cluster_json(state)),
        (&Method::GET, ["topics"]) => {
            json(StatusCode::OK, Value::Array(meta.topics().iter().map(topic_json).collect()))
        }
        (&Method::POST, ["topics"]) => {
            let new: NewTopic = match parse(call.body) {
                Ok(new) => new,
                Err(response) => return *response,
            };
            match meta.create_topic(TopicConfig { name: new.name, message_type: new.message_type, queues: new.queues })
            {
                Ok(topic) => {
                    tracing::info!(topic = %topic.name, kind = topic.message_type.name(), queues = topic.queues, "topic created");
                    json(StatusCode::CREATED, topic_json(&topic))
                }
                Err(err) => metadata_error(&err),
            }
        }
        (&Method::DELETE, ["topics", name]) => match meta.delete_topic(name) {
            Ok(()) => {
                tracing::info!(topic = %name, "topic deleted");
                json(StatusCode::OK, json!({ "deleted": name }))
            }
            Err(err) => metadata_error(&err),
        },
        (&Method::GET, ["groups"]) => json(StatusCode::OK, serde_json::to_value(meta.groups()).unwrap_or_default()),
        (&Method::POST, ["groups"]) => {
            let new: NewGroup = match parse(call.body) {
                Ok(new) => new,
                Err(response) => return *response,
            };
            let defaults = GroupConfig::default();
            let group = GroupConfig {
                name: new.name,
                fifo: new.fifo,
                max_attempts: new.max_attempts.unwrap_or(defaults.max_attempts),
                retry_backoff_ms: new.retry_backoff_ms.unwrap_or(defaults.retry_backoff_ms),
                broadcast: new.broadcast,
                consume_from: new.consume_from.unwrap_or_default(),
            };
            match meta.put_group(group) {
                Ok(group) => {
                    tracing::info!(group = %group.name, fifo = group.fifo, max_attempts = group.max_attempts, "group saved");
                    json(StatusCode::CREATED, serde_json::to_value(group).unwrap_or_default())
                }
                Err(err) => metadata_error(&err),
            }
        }
        (&Method::GET, ["groups", group, "lag"]) => {
            if meta.group(group).is_none() {
                return error(StatusCode::NOT_FOUND, format!("group {group:?} does not exist"));
            }
            let topic = query_param(call.query, "topic").map(unescape);
            let rows: Vec<Value> = state
                .broker
                .delivery()
                .progress(group)
                .into_iter()
                .filter(|p| topic.as_deref().is_none_or(|t| p.topic == t))
                .map(|p| {
                    json!({ "subscriber": p.subscriber, "topic": p.topic, "queue_id": p.queue_id, "committed": p.committed,
                            "max": p.max, "lag": p.max.saturating_sub(p.committed), "in_flight": p.in_flight })
                })
                .collect();
            json(StatusCode::OK, Value::Array(rows))
        }
        (&Method::POST, ["groups", group, "offsets", "reset"]) => {
            let reset: Reset = match parse(call.body) {
                Ok(reset) => reset,
                Err(response) => return *response,
            };
            if meta.group(group).is_none() {
                return error(StatusCode::NOT_FOUND, format!("group {group:?} does not exist"));
            }
            let store = state.broker.store();
            let result = state
                .broker
                .delivery()
                .reset(group, &reset.topic, |q| offset_at_time(store, &reset.topic, q, reset.time_ms));
            match result {
                Ok(offsets) => {
                    tracing::info!(%group, topic = %reset.topic, time_ms = reset.time_ms, "consumer offsets reset");
                    let rows: Vec<Value> = offsets.iter().map(|(q, o)| json!({ "queue_id": q, "offset": o })).collect();
                    json(StatusCode::OK, Value::Array(rows))
                }
                Err(err) => error(StatusCode::NOT_FOUND, err),
            }
        }
        (&Method::GET, ["transactions"]) => {
            let rows: Vec<Value> = state
                .broker
                .transactions()
                .pending()
                .into_iter()
                .map(|(id, topic, checks)| json!({ "transaction_id": id, "topic": topic, "checks": checks }))
                .collect();
            json(StatusCode::OK, Value::Array(rows))
        }
        (&Method::GET, ["transactions", "discarded"]) => {
            let store = state.broker.store();
            let (min, max) = store.queue_bounds(DISCARD_TOPIC, 0).unwrap_or((0, 0));
            let count = usize::try_from(max - min).unwrap_or(usize::MAX).min(LOOKUP_RESULTS_MAX);
            let from = max.saturating_sub(count as u64);
            let rows: Vec<Value> = store
                .read_queue(DISCARD_TOPIC, 0, from, count)
                .iter()
                .filter_map(|e| store.record(e.offset, e.len).ok())
                .filter_map(|r| message_json(&r))
                .collect();
            json(StatusCode::OK, Value::Array(rows))
        }
        (&Method::GET, ["messages"]) => {
            let store = state.broker.store();
            let found =
                match (query_param(call.query, "id"), query_param(call.query, "topic"), query_param(call.query, "key"))
                {
                    (Some(id), _, _) => store.lookup_message_id(&unescape(id), LOOKUP_RESULTS_MAX),
                    (None, Some(topic), Some(key)) => {
                        store.lookup_key(&unescape(topic), &unescape(key), LOOKUP_RESULTS_MAX)
                    }
                    _ => return error(StatusCode::BAD_REQUEST, "give ?id=<message id> or ?topic=<topic>&key=<key>"),
                };
            json(StatusCode::OK, Value::Array(found.iter().filter_map(message_json).collect()))
        }
        (_, ["topics"] | ["groups"]) => super::method_not_allowed(call.path, "GET, POST"),
        _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {} {}", call.method, call.path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_found_and_unescaped() {
        assert_eq!(query_param(Some("a=1&topic=t%25x&b=2"), "topic"), Some("t%25x"));
        assert_eq!(unescape("t%25x+y%2"), "t%x y%2");
        assert_eq!(unescape("%+1%-f%4g"), "% 1%-f%4g", "a sign or a non-hex digit after % is no escape");
        assert_eq!(query_param(None, "topic"), None);
    }
}
