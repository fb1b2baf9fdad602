//! `ferrymq admin …`: manage a running broker through its admin HTTP API.

pub mod plugin;
mod time;

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use ferrymq_http::client as http;
use serde_json::{Value, json};

/// Which broker `ferrymq admin` talks to, as whom, and how it prints the answers (before or after
/// the subcommand: every `admin` subcommand talks to a broker).
#[derive(Debug, Args)]
pub struct Endpoint {
    /// The broker's admin endpoint.
    #[arg(long, global = true, env = "FERRYMQ_ADMIN", default_value = "127.0.0.1:8082", value_name = "HOST:PORT")]
    pub admin_addr: String,
    /// Bearer token for the admin API (when the broker has `[[admin.tokens]]`).
    #[arg(long, global = true, env = "FERRYMQ_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create, list and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Create and list consumer groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Move a consumer group's position.
    #[command(subcommand)]
    Offset(OffsetCommand),
    /// Inspect consumer progress.
    #[command(subcommand)]
    Consumer(ConsumerCommand),
    /// Look messages up.
    #[command(subcommand)]
    Message(MessageCommand),
    /// Transactions awaiting an outcome, and those discarded after too many checks.
    #[command(subcommand)]
    Tx(TxCommand),
    /// The hash-chained log of admin actions and plugin quarantines (`audit` alone lists entries).
    Audit(AuditArgs),
    /// Broker sets, their masters and slaves, and each slave's replication lag in bytes and seconds
    /// (from the broker at --admin-addr, or from a name server with --namesrv).
    Cluster {
        /// Ask this name server (host:port) instead of a broker.
        #[arg(long, value_name = "HOST:PORT")]
        namesrv: Option<String>,
    },
}

/// `ferrymq admin audit [list|verify]`: without a subcommand, `list`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    #[command(flatten)]
    pub list: AuditList,
}

/// Which audit entries to list.
#[derive(Debug, Args)]
pub struct AuditList {
    /// First entry (sequence number).
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Most entries to list.
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Audit entries, oldest first (the default).
    List(AuditList),
    /// Check the chain: every entry's hash and link to the one before. Reads the broker's log, or a
    /// saved JSON array of entries (`ferrymq admin audit list --json`) with --file.
    Verify {
        #[arg(long, value_name = "FILE")]
        file: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TxCommand {
    /// Transactions whose half message awaits commit or rollback.
    Pending,
    /// The latest messages discarded after their transaction went unanswered (at most 64).
    Discarded,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TopicKind {
    Normal,
    Fifo,
    Delay,
    Transaction,
    Mixed,
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic (again with the same type to add queues).
    Create {
        name: String,
        /// Which messages the topic takes.
        #[arg(long = "type", value_enum, default_value = "normal")]
        kind: TopicKind,
        /// Number of queues.
        #[arg(long, default_value_t = 8)]
        queues: u32,
    },
    /// List topics.
    List,
    /// Delete a topic (its stored messages age out with retention).
    Delete { name: String },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ConsumeFromArg {
    Earliest,
    Latest,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create or update a consumer group.
    Create {
        name: String,
        /// Deliver each message group in order, one message of a group in flight at a time.
        #[arg(long)]
        fifo: bool,
        /// Deliveries before a message goes to %DLQ%<group> (default 17).
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Every consumer of the group gets every message.
        #[arg(long)]
        broadcast: bool,
        /// Where a new group starts reading.
        #[arg(long, value_enum)]
        consume_from: Option<ConsumeFromArg>,
        /// Delays before each redelivery that consumers apply after a failure, in milliseconds,
        /// e.g. 1000,5000,10000 (default: RocketMQ's 1s 5s 10s 30s 1m … 2h).
        #[arg(long, value_delimiter = ',', value_name = "MS,MS,…")]
        retry_backoff_ms: Option<Vec<u64>>,
    },
    /// List consumer groups.
    List,
}

#[derive(Debug, Subcommand)]
pub enum OffsetCommand {
    /// Move a group's position in every queue of a topic to the first message stored at or after a time.
    Reset {
        #[arg(long)]
        group: String,
        #[arg(long)]
        topic: String,
        /// Milliseconds since the epoch, `now`, `-2h` (ago), or RFC 3339 like 2026-11-25T08:00:00Z.
        #[arg(long, allow_hyphen_values = true)]
        to_time: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConsumerCommand {
    /// Committed offset, end and lag per queue of a group.
    Lag {
        #[arg(long)]
        group: String,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MessageCommand {
    /// Find messages by id, or by topic and business key.
    Get {
        #[arg(long, conflicts_with_all = ["key", "topic"])]
        id: Option<String>,
        #[arg(long, requires = "key")]
        topic: Option<String>,
        #[arg(long, requires = "topic")]
        key: Option<String>,
    },
}

/// Percent-escapes a query value.
pub(crate) fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Prints rows as aligned columns.
pub(crate) fn table(rows: &[Value], columns: &[&str]) {
    let cell = |row: &Value, c: &str| match &row[c] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let widths: Vec<usize> =
        columns.iter().map(|c| rows.iter().map(|r| cell(r, c).len()).max().unwrap_or(0).max(c.len())).collect();
    let line = |cells: Vec<String>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_owned()
    };
    println!("{}", line(columns.iter().map(|c| c.to_uppercase()).collect()));
    for row in rows {
        println!("{}", line(columns.iter().map(|c| cell(row, c)).collect()));
    }
}

pub fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    // Piped into `head`, a command-line tool should stop quietly when the pipe closes, as Unix tools do
    // (Rust ignores SIGPIPE by default, which makes printing panic instead).
    // SAFETY: restoring the default disposition of a signal has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let (method, path, body, columns): (&str, String, Option<Value>, &[&str]) = match &args.command {
        AdminCommand::Audit(AuditArgs { command: Some(AuditCommand::Verify { file }), .. }) => {
            return audit_verify(&args, file.as_deref());
        }
        AdminCommand::Audit(AuditArgs { command: Some(AuditCommand::List(list)), .. } | AuditArgs { list, .. }) => (
            "GET",
            format!("/v1/audit?from={}&limit={}", list.from, list.limit),
            None,
            &["seq", "time_ms", "principal", "action", "result"],
        ),
        AdminCommand::Topic(TopicCommand::Create { name, kind, queues }) => {
            let kind = format!("{kind:?}").to_lowercase();
            (
                "POST",
                "/v1/topics".into(),
                Some(json!({ "name": name, "type": kind, "queues": queues })),
                &["name", "type", "queues"],
            )
        }
        AdminCommand::Topic(TopicCommand::List) => ("GET", "/v1/topics".into(), None, &["name", "type", "queues"]),
        AdminCommand::Topic(TopicCommand::Delete { name }) => {
            ("DELETE", format!("/v1/topics/{}", escape(name)), None, &["deleted"])
        }
        AdminCommand::Group(GroupCommand::Create {
            name,
            fifo,
            max_attempts,
            broadcast,
            consume_from,
            retry_backoff_ms,
        }) => {
            let mut body = json!({ "name": name, "fifo": fifo, "broadcast": broadcast });
            if let Some(n) = max_attempts {
                body["max_attempts"] = json!(n);
            }
            if let Some(from) = consume_from {
                body["consume_from"] = json!(format!("{from:?}").to_lowercase());
            }
            if let Some(backoff) = retry_backoff_ms {
                body["retry_backoff_ms"] = json!(backoff);
            }
            ("POST", "/v1/groups".into(), Some(body), &["name", "fifo", "max_attempts", "broadcast", "consume_from"])
        }
        AdminCommand::Group(GroupCommand::List) => {
            ("GET", "/v1/groups".into(), None, &["name", "fifo", "max_attempts", "broadcast", "consume_from"])
        }
        AdminCommand::Offset(OffsetCommand::Reset { group, topic, to_time }) => {
            let time_ms = time::parse_time(to_time, now_ms())?;
            let body = json!({ "topic": topic, "time_ms": time_ms });
            ("POST", format!("/v1/groups/{}/offsets/reset", escape(group)), Some(body), &["queue_id", "offset"])
        }
        AdminCommand::Consumer(ConsumerCommand::Lag { group, topic }) => {
            let query = topic.as_deref().map(|t| format!("?topic={}", escape(t))).unwrap_or_default();
            (
                "GET",
                format!("/v1/groups/{}/lag{query}", escape(group)),
                None,
                &["subscriber", "topic", "queue_id", "committed", "max", "lag", "in_flight"],
            )
        }
        AdminCommand::Cluster { namesrv } => return cluster(&args, namesrv.as_deref()),
        AdminCommand::Tx(TxCommand::Pending) => {
            ("GET", "/v1/transactions".into(), None, &["transaction_id", "topic", "checks"])
        }
        AdminCommand::Tx(TxCommand::Discarded) => (
            "GET",
            "/v1/transactions/discarded".into(),
            None,
            &["topic", "queue_offset", "store_time_ms", "body_bytes", "body"],
        ),
        AdminCommand::Message(MessageCommand::Get { id, topic, key }) => {
            let query = match (id, topic, key) {
                (Some(id), _, _) => format!("id={}", escape(id)),
                (None, Some(topic), Some(key)) => format!("topic={}&key={}", escape(topic), escape(key)),
                _ => bail!("give --id, or --topic and --key"),
            };
            (
                "GET",
                format!("/v1/messages?{query}"),
                None,
                &["topic", "queue_id", "queue_offset", "store_time_ms", "body_bytes", "body"],
            )
        }
    };
    let (status, response) =
        http::request(&args.endpoint.admin_addr, method, &path, body.as_ref(), args.endpoint.token.as_deref())?;
    if !(200..300).contains(&status) {
        let reason = response["error"].as_str().map_or_else(|| response.to_string(), str::to_owned);
        eprintln!("ferrymq admin: {reason} (HTTP {status})");
        return Ok(ExitCode::FAILURE);
    }
    print_answer(&response, args.endpoint.json, columns)
}

const CLUSTER_COLUMNS: &[&str] =
    &["set", "id", "role", "grpc", "replication", "log_end", "lag_bytes", "lag_seconds", "master_reachable", "slaves"];

/// `ferrymq admin cluster`: one row per broker, from a broker's view or a name server's.
fn cluster(args: &AdminArgs, namesrv: Option<&str>) -> anyhow::Result<ExitCode> {
    let (address, what) = match namesrv {
        Some(namesrv) => (namesrv, "name server"),
        None => (args.endpoint.admin_addr.as_str(), "broker"),
    };
    let token = if namesrv.is_some() { None } else { args.endpoint.token.as_deref() };
    let (status, response) = http::request(address, "GET", "/v1/cluster", None, token)?;
    if !(200..300).contains(&status) {
        let reason = response["error"].as_str().map_or_else(|| response.to_string(), str::to_owned);
        eprintln!("ferrymq admin: the {what} at {address} answered {reason} (HTTP {status})");
        return Ok(ExitCode::FAILURE);
    }
    if args.endpoint.json {
        println!("{}", serde_json::to_string_pretty(&response)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Value> = match namesrv {
        // A name server answers registrations; a broker answers rows already.
        Some(_) => {
            let view: ferrymq_cluster::ClusterView =
                serde_json::from_value(response).context("decode the name server's cluster view")?;
            crate::admin::cluster_rows(&view)
        }
        None => response["brokers"].as_array().cloned().unwrap_or_default(),
    };
    table(&rows, CLUSTER_COLUMNS);
    Ok(ExitCode::SUCCESS)
}

/// Prints an API answer as JSON or as a table of `columns`.
pub fn print_answer(response: &Value, as_json: bool, columns: &[&str]) -> anyhow::Result<ExitCode> {
    let response = response.clone();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&response)?);
    } else {
        let rows = match response {
            Value::Array(rows) => rows,
            other => vec![other],
        };
        table(&rows, columns);
    }
    Ok(ExitCode::SUCCESS)
}

/// Entries per page when verifying: small, because a response is read whole and an entry may be
/// up to four fields of `FIELD_BYTES_MAX` plus a digest.
const AUDIT_VERIFY_PAGE: usize = 100;

/// Verifies the audit chain here, from the broker's entries or a saved file: the check does not take
/// the broker's word for it.
fn audit_verify(args: &AdminArgs, file: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    use crate::admin::audit::{AuditEntry, Verifier};
    let mut verifier = Verifier::default();
    match file {
        Some(file) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
            let entries: Vec<AuditEntry> = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a JSON array of audit entries", file.display()))?;
            let _ = entries.iter().all(|e| verifier.push(e));
        }
        None => {
            let (addr, token) = (&args.endpoint.admin_addr, args.endpoint.token.as_deref());
            let mut from = 0;
            loop {
                let path = format!("/v1/audit?from={from}&limit={AUDIT_VERIFY_PAGE}");
                let (status, page) = http::request(addr, "GET", &path, None, token)?;
                if status != 200 {
                    bail!("reading the audit log failed: {} (HTTP {status})", page["error"]);
                }
                let page: Vec<AuditEntry> = serde_json::from_value(page).context("parse audit entries")?;
                let Some(last) = page.last() else { break };
                from = last.seq + 1;
                if !page.iter().all(|e| verifier.push(e)) {
                    break;
                }
            }
        }
    }
    let verdict = verifier.finish();
    if args.endpoint.json {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
    } else if verdict.ok {
        println!(
            "audit chain intact: {} entries ({}..={})",
            verdict.entries,
            verdict.first_seq.map(|s| s.to_string()).unwrap_or_default(),
            verdict.last_seq.map(|s| s.to_string()).unwrap_or_default()
        );
    } else if verdict.broken_at.is_none() && verdict.truncated {
        println!("audit chain TRUNCATED: {}", verdict.reason.as_deref().unwrap_or("it does not start at entry 0"));
    } else {
        println!("audit chain BROKEN: {}", verdict.reason.as_deref().unwrap_or("unknown"));
    }
    Ok(if verdict.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_escaped() {
        assert_eq!(escape("%DLQ%g 1"), "%25DLQ%25g%201");
        assert_eq!(escape("plain-id_1.2~"), "plain-id_1.2~");
    }
}
