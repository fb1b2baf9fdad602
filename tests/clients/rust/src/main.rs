//! Drives the official RocketMQ Rust client (crate `rocketmq` 5.0.0) for ferrymq's tests.
//!
//! See ../README.md for the command line and the JSON events printed on stdout; this mirrors
//! ../python/driver.py. The crate has no PushConsumer, so `push` reports a fatal error.
//!
//! Quirks of the crate that this driver works around:
//! * delivery timestamps are whole seconds on the wire (`Timestamp { seconds, nanos: 0 }`) both when
//!   sending and when reading a received message, so `--delay-ms` is rounded up to the next second
//!   and `delivery_ms` is that second times 1000;
//! * a receive's gRPC deadline is exactly the long-polling timeout, which is `--await-s` here;
//! * the client logs to stderr, never stdout;
//! * `send_transaction_message` does not mark the message as transactional itself: without the
//!   builder's `enable_transaction()` it goes out as a normal message. A transactional message may not
//!   carry a message group or a delivery time (the builder refuses, so `tx` reports an error event);
//! * the transaction checker is a plain closure `(transaction_id, MessageView) -> TransactionResolution`;
//!   whatever it returns, UNKNOWN included (`TRANSACTION_RESOLUTION_UNSPECIFIED` on the wire), the client
//!   answers the check with an EndTransaction from source SOURCE_SERVER_CHECK.

use std::collections::HashMap;
use std::process::exit;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::error::ClientError;
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::{MessageBuilder, MessageView};
use rocketmq::model::transaction::{Transaction, TransactionResolution};
use rocketmq::{Producer, SimpleConsumer};
use serde_json::{json, Map, Value};

const USAGE: &str = "usage:
  driver <endpoint host:port> produce --topic T [--count N] [--prefix P] [--tag T] [--keys K1,K2]
         [--message-group G] [--delay-ms D] [--property k=v]... [--body-bytes N]
  driver <endpoint> tx --topic T [--count N] [--prefix P] [--decide commit|rollback|even|none]
         [--checker commit|rollback|even|unknown] [--stay-s S] [--tag T] [--keys K1,K2]
         [--message-group G] [--delay-ms D] [--property k=v]... [--body-bytes N]
  driver <endpoint> simple|push --group G --topic T [--filter-type tag|sql] [--expr E] [--expect N]
         [--timeout-s S] [--invisible-s I] [--batch B] [--await-s A] [--no-ack] [--fail-times K]";

/// How long a client's shutdown (a NotifyClientTermination call) may take before we stop waiting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn emit(event: Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A closed stdout leaves nobody to tell; ignore write errors.
    let _ = writeln!(out, "{event}");
    let _ = out.flush();
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn describe_error(e: &ClientError) -> String {
    format!("ClientError: {e}")
}

/// Prints an argparse-style usage error and exits 2, as the Python driver does.
fn usage_error(message: &str) -> ! {
    eprintln!("{USAGE}\ndriver: error: {message}");
    exit(2)
}

#[derive(Debug)]
struct Args {
    endpoint: String,
    command: String,
    // produce
    topic: String,
    count: u64,
    prefix: String,
    tag: Option<String>,
    keys: Option<String>,
    message_group: Option<String>,
    delay_ms: Option<i64>,
    properties: Vec<String>,
    body_bytes: Option<usize>,
    // tx
    decide: String,
    checker: String,
    stay_s: f64,
    // simple / push
    group: String,
    filter_type: String,
    expr: String,
    expect: u64,
    timeout_s: f64,
    invisible_s: u64,
    batch: i32,
    await_s: u64,
    no_ack: bool,
    fail_times: u64,
}

fn number<T: std::str::FromStr>(option: &str, value: &str) -> T {
    value.parse().unwrap_or_else(|_| usage_error(&format!("argument {option}: invalid value: {value:?}")))
}

fn choice(option: &str, value: String, choices: &[&str]) -> String {
    if !choices.contains(&value.as_str()) {
        usage_error(&format!("argument {option}: invalid choice: {value:?} (choose from {})", choices.join(", ")));
    }
    value
}

fn parse_args(argv: Vec<String>) -> Args {
    let mut positional = Vec::new();
    let mut options: Vec<(String, Option<String>)> = Vec::new();
    let mut iter = argv.into_iter();
    while let Some(arg) = iter.next() {
        if arg == "-h" || arg == "--help" {
            println!("{USAGE}");
            exit(0);
        }
        if let Some(name) = arg.strip_prefix("--") {
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (name.to_string(), None),
            };
            if name == "no-ack" {
                if inline.is_some() {
                    usage_error("argument --no-ack: ignored explicit argument");
                }
                options.push((name, None));
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => {
                    iter.next().unwrap_or_else(|| usage_error(&format!("argument --{name}: expected one argument")))
                }
            };
            options.push((name, Some(value)));
        } else {
            positional.push(arg);
        }
    }
    if positional.len() != 2 {
        usage_error("expected <endpoint> and a command (produce, tx, simple or push)");
    }
    let command = positional[1].clone();
    let allowed: &[&str] = match command.as_str() {
        "produce" => {
            &["topic", "count", "prefix", "tag", "keys", "message-group", "delay-ms", "property", "body-bytes"]
        }
        "tx" => &[
            "topic",
            "count",
            "prefix",
            "decide",
            "checker",
            "stay-s",
            "tag",
            "keys",
            "message-group",
            "delay-ms",
            "property",
            "body-bytes",
        ],
        "simple" | "push" => &[
            "group",
            "topic",
            "filter-type",
            "expr",
            "expect",
            "timeout-s",
            "invisible-s",
            "batch",
            "await-s",
            "no-ack",
            "fail-times",
        ],
        other => usage_error(&format!("invalid command {other:?} (choose from produce, tx, simple, push)")),
    };
    let mut args = Args {
        endpoint: positional[0].clone(),
        command,
        topic: String::new(),
        count: 1,
        prefix: "m".to_string(),
        tag: None,
        keys: None,
        message_group: None,
        delay_ms: None,
        properties: Vec::new(),
        body_bytes: None,
        decide: "commit".to_string(),
        checker: "even".to_string(),
        stay_s: 0.0,
        group: String::new(),
        filter_type: "tag".to_string(),
        expr: "*".to_string(),
        expect: 1,
        timeout_s: 30.0,
        invisible_s: 15,
        batch: 16,
        await_s: 5,
        no_ack: false,
        fail_times: 0,
    };
    let (mut have_topic, mut have_group) = (false, false);
    for (name, value) in options {
        if !allowed.contains(&name.as_str()) {
            usage_error(&format!("unrecognized arguments: --{name}"));
        }
        let option = format!("--{name}");
        let value = value.unwrap_or_default();
        match name.as_str() {
            "topic" => {
                args.topic = value;
                have_topic = true;
            }
            "count" => args.count = number(&option, &value),
            "prefix" => args.prefix = value,
            "tag" => args.tag = Some(value),
            "keys" => args.keys = Some(value),
            "message-group" => args.message_group = Some(value),
            "delay-ms" => args.delay_ms = Some(number(&option, &value)),
            "property" => args.properties.push(value),
            "body-bytes" => args.body_bytes = Some(number(&option, &value)),
            "decide" => args.decide = choice(&option, value, &["commit", "rollback", "even", "none"]),
            "checker" => args.checker = choice(&option, value, &["commit", "rollback", "even", "unknown"]),
            "stay-s" => args.stay_s = number(&option, &value),
            "group" => {
                args.group = value;
                have_group = true;
            }
            "filter-type" => {
                if value != "tag" && value != "sql" {
                    usage_error(&format!("argument --filter-type: invalid choice: {value:?} (choose from tag, sql)"));
                }
                args.filter_type = value;
            }
            "expr" => args.expr = value,
            "expect" => args.expect = number(&option, &value),
            "timeout-s" => args.timeout_s = number(&option, &value),
            "invisible-s" => args.invisible_s = number(&option, &value),
            "batch" => args.batch = number(&option, &value),
            "await-s" => args.await_s = number(&option, &value),
            "no-ack" => args.no_ack = true,
            "fail-times" => args.fail_times = number(&option, &value),
            _ => unreachable!(),
        }
    }
    if !have_topic {
        usage_error("the following arguments are required: --topic");
    }
    if (args.command == "simple" || args.command == "push") && !have_group {
        usage_error("the following arguments are required: --group");
    }
    args
}

fn client_option(args: &Args) -> ClientOption {
    let mut option = ClientOption::default();
    option.set_access_url(args.endpoint.clone());
    option
}

fn body_of(args: &Args, index: u64) -> Vec<u8> {
    let mut body = format!("{}{}", args.prefix, index).into_bytes();
    if let Some(n) = args.body_bytes {
        if body.len() < n {
            body.resize(n, b'x');
        }
    }
    body
}

/// Message `i` as `produce` and `tx` send it: body, tag, keys, properties, message group, delivery time.
fn build(args: &Args, index: u64) -> MessageBuilder {
    let mut builder = MessageBuilder::builder().set_topic(args.topic.clone()).set_body(body_of(args, index));
    if let Some(tag) = args.tag.as_deref().filter(|t| !t.is_empty()) {
        builder = builder.set_tag(tag);
    }
    // Keys are a set in the Python client: drop repeats, keep the order given.
    let mut keys: Vec<String> = Vec::new();
    let given = args.keys.as_deref().filter(|k| !k.is_empty());
    for key in given.map(|k| k.split(',').collect::<Vec<_>>()).unwrap_or_default() {
        if !keys.iter().any(|k| k == key) {
            keys.push(key.to_string());
        }
    }
    if !keys.is_empty() {
        builder = builder.set_keys(keys);
    }
    let mut properties: HashMap<String, String> = HashMap::new();
    for prop in &args.properties {
        let (key, value) = prop.split_once('=').unwrap_or((prop.as_str(), ""));
        properties.insert(key.to_string(), value.to_string());
    }
    if !properties.is_empty() {
        builder = builder.set_properties(properties);
    }
    if let Some(group) = args.message_group.as_deref().filter(|g| !g.is_empty()) {
        builder = builder.set_message_group(group);
    }
    if let Some(delay_ms) = args.delay_ms {
        // The crate puts whole seconds on the wire; round up so delivery is never early.
        let at_ms = now_ms() + delay_ms;
        builder = builder.set_delivery_timestamp(at_ms.div_euclid(1000) + i64::from(at_ms.rem_euclid(1000) != 0));
    }
    builder
}

/// Sends `--count` messages one at a time; returns how many the broker accepted.
async fn produce(args: &Args) -> Result<u64, ClientError> {
    let mut option = ProducerOption::default();
    option.set_topics(vec![args.topic.clone()]);
    let mut producer = Producer::new(option, client_option(args))?;
    producer.start().await?;

    let mut sent = 0;
    for i in 0..args.count {
        let builder = build(args, i);
        let result = match builder.build() {
            Ok(message) => producer.send(message).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(receipt) => {
                emit(json!({"event": "sent", "index": i, "id": receipt.message_id()}));
                sent += 1;
            }
            Err(e) => emit(json!({"event": "error", "index": i, "error": describe_error(&e)})),
        }
    }
    shutdown(producer.shutdown()).await;
    Ok(sent)
}

/// Whether the message index at the end of a body `<prefix><i>` (padding `x` aside) is even; a body
/// without trailing digits counts as index -1, i.e. odd, as in the Python driver.
fn index_is_even(body: &str) -> bool {
    match body.trim_end_matches('x').chars().last() {
        Some(c @ '0'..='9') => (c as u8 - b'0') % 2 == 0,
        _ => false,
    }
}

/// commit | rollback | even (an even index commits, an odd one rolls back) | unknown | none.
fn decision<'a>(rule: &'a str, even: bool) -> &'a str {
    match rule {
        "even" if even => "commit",
        "even" => "rollback",
        other => other,
    }
}

/// Sends `--count` transactional messages, ending each per `--decide` and answering the broker's
/// checks per `--checker`; stays `--stay-s` seconds afterwards. Returns how many were sent.
async fn tx(args: &Args) -> Result<u64, ClientError> {
    let mut option = ProducerOption::default();
    option.set_topics(vec![args.topic.clone()]);
    let rule = args.checker.clone();
    let checker = Box::new(move |_transaction_id: String, message: MessageView| {
        let body = String::from_utf8_lossy(message.body()).into_owned();
        let answer = decision(&rule, index_is_even(&body));
        emit(json!({"event": "checked", "id": message.message_id(), "body": body, "resolution": answer}));
        match answer {
            "commit" => TransactionResolution::COMMIT,
            "rollback" => TransactionResolution::ROLLBACK,
            _ => TransactionResolution::UNKNOWN,
        }
    });
    let mut producer = Producer::new_transaction_producer(option, client_option(args), checker)?;
    producer.start().await?;

    let mut sent = 0;
    for i in 0..args.count {
        let result = match build(args, i).enable_transaction().build() {
            Ok(message) => producer.send_transaction_message(message).await,
            Err(e) => Err(e),
        };
        let transaction = match result {
            Ok(transaction) => transaction,
            Err(e) => {
                emit(json!({"event": "error", "index": i, "error": describe_error(&e)}));
                continue;
            }
        };
        let id = transaction.message_id().to_string();
        emit(json!({"event": "sent", "index": i, "id": id, "transaction_id": transaction.transaction_id()}));
        sent += 1;
        let (ended, event) = match decision(&args.decide, i % 2 == 0) {
            "commit" => (transaction.commit().await, "committed"),
            "rollback" => (transaction.rollback().await, "rolled_back"),
            _ => (Ok(()), "left"),
        };
        match ended {
            Ok(()) => emit(json!({"event": event, "index": i, "id": id})),
            Err(e) => emit(json!({"event": "error", "index": i, "error": describe_error(&e)})),
        }
    }
    // Checks arrive over the telemetry stream while we wait.
    tokio::time::sleep(Duration::from_secs_f64(args.stay_s.max(0.0))).await;
    shutdown(producer.shutdown()).await;
    Ok(sent)
}

async fn shutdown(fut: impl std::future::Future<Output = Result<(), ClientError>>) {
    match tokio::time::timeout(SHUTDOWN_GRACE, fut).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("driver: client shutdown failed: {e}"),
        Err(_) => eprintln!("driver: client shutdown did not finish within {SHUTDOWN_GRACE:?}"),
    }
}

fn describe(msg: &MessageView) -> Value {
    let mut keys: Vec<&str> = msg.keys().iter().map(String::as_str).collect();
    keys.sort_unstable();
    let mut props: Vec<(&String, &String)> = msg.properties().iter().collect();
    props.sort();
    let properties: Map<String, Value> = props.into_iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
    json!({
        "event": "received",
        "id": msg.message_id(),
        "topic": msg.topic(),
        "body": String::from_utf8_lossy(msg.body()),
        "tag": msg.tag(),
        "keys": keys,
        "properties": properties,
        "attempt": msg.delivery_attempt(),
        "message_group": msg.message_group(),
        // The crate keeps only the seconds of the delivery timestamp.
        "delivery_ms": msg.delivery_timestamp().map(|s| s * 1000),
        "received_ms": now_ms(),
    })
}

/// Receives until `--expect` messages arrived or `--timeout-s` passed; returns how many arrived.
async fn simple(args: &Args) -> Result<u64, ClientError> {
    let mut option = SimpleConsumerOption::default();
    option.set_consumer_group(args.group.clone());
    option.set_topics(vec![args.topic.clone()]);
    let mut client = client_option(args);
    client.set_long_polling_timeout(Duration::from_secs(args.await_s));
    let mut consumer = SimpleConsumer::new(option, client)?;
    consumer.start().await?;

    let kind = if args.filter_type == "sql" { FilterType::Sql } else { FilterType::Tag };
    let filter = FilterExpression::new(kind, args.expr.clone());
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout_s.max(0.0));
    let mut count = 0;
    let result = async {
        while count < args.expect && Instant::now() < deadline {
            let messages =
                consumer.receive_with(&args.topic, &filter, args.batch, Duration::from_secs(args.invisible_s)).await?;
            for msg in messages {
                emit(describe(&msg));
                count += 1;
                if !args.no_ack {
                    consumer.ack(&msg).await?;
                    emit(json!({"event": "acked", "id": msg.message_id()}));
                }
            }
        }
        Ok(())
    }
    .await;
    shutdown(consumer.shutdown()).await;
    result.map(|()| count)
}

#[tokio::main]
async fn main() {
    let args = parse_args(std::env::args().skip(1).collect());
    let result = match args.command.as_str() {
        "produce" => produce(&args).await,
        "simple" => simple(&args).await,
        "tx" => tx(&args).await,
        _ => {
            emit(json!({"event": "fatal", "error": "push consumer is not available in the Rust client"}));
            exit(2);
        }
    };
    match result {
        Ok(count) => {
            emit(json!({"event": "done", "count": count}));
            // The client's background tasks may linger; the run is over.
            exit(0);
        }
        Err(e) => {
            emit(json!({"event": "fatal", "error": describe_error(&e)}));
            exit(1);
        }
    }
}
