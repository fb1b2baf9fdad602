//! `ferrymq plugin …`: push, bind, activate, roll back and dry-run plugins on a running broker, and
//! make and use signing keys.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};

use ferrymq_http as http;

use super::{escape, print_answer, table};

#[derive(Debug, Args)]
#[command(
    after_help = "The subcommands that talk to a broker (push, list, bindings, bind, unbind, activate, rollback, \
dry-run, delete) take --admin-addr (or FERRYMQ_ADMIN), --token (or FERRYMQ_TOKEN) and --json."
)]
pub struct PluginArgs {
    #[command(flatten)]
    pub before: Before,
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// `--admin-addr`, `--token` and `--json` given before the subcommand (`ferrymq plugin --admin-addr
/// X push …`): still taken, for the command lines written that way, but not shown, since the
/// subcommands that work without a broker do not use them. The subcommand's own win.
#[derive(Debug, Args)]
pub struct Before {
    #[arg(long, hide = true, value_name = "HOST:PORT")]
    pub admin_addr: Option<String>,
    #[arg(long, hide = true, value_name = "TOKEN")]
    pub token: Option<String>,
    #[arg(long, hide = true)]
    pub json: bool,
}

/// Which broker a subcommand talks to, as whom, and how it prints the answer.
#[derive(Debug, Default, Args)]
pub struct Remote {
    /// The broker's admin endpoint [env: FERRYMQ_ADMIN] [default: 127.0.0.1:8082].
    #[arg(long, value_name = "HOST:PORT")]
    pub admin_addr: Option<String>,
    /// Bearer token for the admin API, when the broker has `[[admin.tokens]]` [env: FERRYMQ_TOKEN].
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The admin endpoint when neither the command line nor `FERRYMQ_ADMIN` names one.
const ADMIN_ADDR_DEFAULT: &str = "127.0.0.1:8082";

/// An environment variable's value, if set and not empty.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Where and how to reach the broker: the subcommand's options, else those before it, else the
/// environment, else the default.
struct Endpoint {
    addr: String,
    token: Option<String>,
    json: bool,
}

impl Endpoint {
    fn of(before: &Before, remote: &Remote) -> Self {
        Self {
            addr: (remote.admin_addr.clone().or_else(|| before.admin_addr.clone()))
                .or_else(|| env("FERRYMQ_ADMIN"))
                .unwrap_or_else(|| ADMIN_ADDR_DEFAULT.to_owned()),
            token: (remote.token.clone().or_else(|| before.token.clone())).or_else(|| env("FERRYMQ_TOKEN")),
            json: remote.json || before.json,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KindArg {
    Filter,
    Route,
    TxCheck,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PolicyArg {
    FailOpen,
    FailClosed,
    DeadLetter,
}

fn kebab<T: std::fmt::Debug>(v: T) -> String {
    let name = format!("{v:?}");
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// `name=value` arguments (`--param`), by name; a later one replaces an earlier of the same name.
pub(crate) fn pairs(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("{p:?} is not name=value"))
        })
        .collect()
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a plugin project that builds as it is: policy, build file, README, sample messages.
    New(crate::plugin_kit::new::NewArgs),
    /// Build a plugin project into <name>.wasm with its language's toolchain.
    Build(crate::plugin_kit::build::BuildArgs),
    /// Run a component on sample messages in the broker's sandbox and limits, without a broker,
    /// and print each message's decision (non-zero exit if it fails to load or a call fails).
    Test(crate::plugin_kit::sandbox::TestArgs),
    /// Upload a component as the next version of a plugin (validated and compiled by the broker).
    Push {
        /// The component (`.wasm`, built for wasm32-wasip2).
        file: PathBuf,
        /// `<department>/<plugin>`.
        #[arg(long)]
        name: String,
        /// Sign it with this key (from `ferrymq plugin keygen`).
        #[arg(long, value_name = "KEY_FILE")]
        sign_key: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Plugins and their versions.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Bindings, their active versions and counters (calls and failures add up over the versions a
    /// binding ran since it was bound; `bind` again starts them afresh).
    Bindings {
        #[command(flatten)]
        remote: Remote,
    },
    /// Bind a plugin version to a topic (route, tx-check) or a topic and group (filter); binding
    /// again under the same name replaces it.
    Bind {
        /// The binding's name.
        binding: String,
        #[arg(long, value_enum)]
        kind: KindArg,
        #[arg(long)]
        topic: String,
        /// The consumer group (filters).
        #[arg(long)]
        group: Option<String>,
        /// `<department>/<plugin>`.
        #[arg(long)]
        plugin: String,
        /// The plugin version to run.
        #[arg(long = "plugin-version", id = "plugin_version", value_name = "N")]
        version: u32,
        /// What a failed call means (default fail-closed).
        #[arg(long, value_enum)]
        policy: Option<PolicyArg>,
        /// A parameter the plugin reads, name=value (repeatable).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// A host a tx-check may call over HTTP (repeatable).
        #[arg(long = "allow-host", value_name = "HOST[:PORT]")]
        allow_hosts: Vec<String>,
        /// Per-call memory limit in bytes.
        #[arg(long)]
        memory_bytes_max: Option<u64>,
        /// Per-call time limit in milliseconds.
        #[arg(long)]
        call_ms_max: Option<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove a binding.
    Unbind {
        binding: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Make a version the active one on a binding (atomically between batches).
    Activate {
        binding: String,
        #[arg(id = "number", value_name = "VERSION")]
        version: u32,
        #[command(flatten)]
        remote: Remote,
    },
    /// Go back to the version that was active before the current one.
    Rollback {
        binding: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Run a version against a topic's latest messages and show what it would decide: the messages
    /// per decision, and a few examples of each (id, keys, properties).
    DryRun {
        /// `<department>/<plugin>`.
        plugin: String,
        #[arg(id = "number", value_name = "VERSION")]
        version: u32,
        #[arg(long)]
        topic: String,
        /// How many of the latest messages.
        #[arg(long, default_value_t = 100)]
        last: usize,
        /// Run with the parameters and limits of this existing binding (of the same kind).
        #[arg(long, value_name = "NAME")]
        binding: Option<String>,
        /// A parameter the plugin reads, name=value (repeatable; replaces the binding's of that name).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a version no binding runs.
    Delete {
        plugin: String,
        #[arg(id = "number", value_name = "VERSION")]
        version: u32,
        #[command(flatten)]
        remote: Remote,
    },
    /// Make an ed25519 signing key: writes the secret to FILE (mode 0600), prints the public key for
    /// `[[admin.signatures.keys]]`.
    Keygen {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print the signature of a component (hex) made with a key from `keygen`.
    Sign {
        file: PathBuf,
        #[arg(long, value_name = "KEY_FILE")]
        key: PathBuf,
    },
    /// Compile a component read on stdin into a cache directory under limits (the broker runs this
    /// to validate uploads).
    #[command(hide = true)]
    CompileCheck {
        #[arg(long)]
        cache_dir: PathBuf,
        #[arg(long)]
        instances_max: u32,
        #[arg(long)]
        memory_bytes_max: u64,
        #[arg(long)]
        cpu_s_max: u64,
    },
}

use ferrymq_policy::signatures::read_signing_key as read_key;

fn random_bytes() -> anyhow::Result<[u8; 32]> {
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").context("open /dev/urandom")?, &mut bytes)?;
    Ok(bytes)
}

impl PluginCommand {
    /// The broker options of a subcommand that talks to a broker.
    fn remote(&self) -> Option<&Remote> {
        match self {
            Self::Push { remote, .. }
            | Self::List { remote }
            | Self::Bindings { remote }
            | Self::Bind { remote, .. }
            | Self::Unbind { remote, .. }
            | Self::Activate { remote, .. }
            | Self::Rollback { remote, .. }
            | Self::DryRun { remote, .. }
            | Self::Delete { remote, .. } => Some(remote),
            Self::New(_)
            | Self::Build(_)
            | Self::Test(_)
            | Self::Keygen { .. }
            | Self::Sign { .. }
            | Self::CompileCheck { .. } => None,
        }
    }
}

pub fn run(args: PluginArgs) -> anyhow::Result<ExitCode> {
    let PluginArgs { before, command } = args;
    // Working on a project, on keys or on a component needs no broker.
    let command = match command {
        PluginCommand::New(new) => return crate::plugin_kit::new::run(new),
        PluginCommand::Build(build) => return crate::plugin_kit::build::run(build),
        PluginCommand::Test(mut test) => {
            // `ferrymq plugin --json test` as well as `ferrymq plugin test --json`.
            test.json |= before.json;
            return crate::plugin_kit::sandbox::run(test);
        }
        PluginCommand::CompileCheck { cache_dir, instances_max, memory_bytes_max, cpu_s_max } => {
            ferrymq_policy::compile::compile_check(cache_dir, instances_max, memory_bytes_max, cpu_s_max)?;
            return Ok(ExitCode::SUCCESS);
        }
        PluginCommand::Keygen { out } => return keygen(&out),
        PluginCommand::Sign { file, key } => {
            let bytes = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            println!("{}", ferrymq_proto::hex::encode(&read_key(&key)?.sign(&bytes).to_bytes()));
            return Ok(ExitCode::SUCCESS);
        }
        command => command,
    };
    let endpoint = Endpoint::of(&before, command.remote().unwrap_or(&Remote::default()));
    let token = endpoint.token.as_deref();
    let addr = endpoint.addr.as_str();
    let version_columns: &[&str] = &["plugin", "version", "world", "digest", "size", "uploader", "signed_by"];
    let binding_columns: &[&str] = &["name", "version", "digest", "position"];
    let (status, response, columns) = match &command {
        PluginCommand::New(_)
        | PluginCommand::Build(_)
        | PluginCommand::Test(_)
        | PluginCommand::CompileCheck { .. }
        | PluginCommand::Keygen { .. }
        | PluginCommand::Sign { .. } => return Ok(ExitCode::SUCCESS),
        PluginCommand::Push { file, name, sign_key, .. } => {
            let bytes = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
            let Some((department, plugin)) = name.split_once('/') else {
                bail!("--name must be <department>/<plugin>");
            };
            let mut headers = Vec::new();
            if let Some(key) = sign_key {
                headers
                    .push(("x-ferrymq-signature", ferrymq_proto::hex::encode(&read_key(key)?.sign(&bytes).to_bytes())));
            }
            let path = format!("/v1/plugins/{}/{}/versions", escape(department), escape(plugin));
            let upload = http::Request {
                body: &bytes,
                content_type: "application/wasm",
                token,
                headers: &headers,
                // Compiling an uploaded plugin may take a while; everything else answers at once.
                read_timeout: http::client::TIMEOUT_DEFAULT * 10,
                ..http::Request::new("POST", &path)
            };
            let (status, response) = upload.send(addr)?;
            (status, response, version_columns)
        }
        PluginCommand::List { .. } => {
            let (status, response) = http::request(addr, "GET", "/v1/plugins", None, token)?;
            let rows: Vec<Value> = response
                .as_array()
                .map(|plugins| {
                    plugins.iter().flat_map(|p| p["versions"].as_array().cloned().unwrap_or_default()).collect()
                })
                .unwrap_or_default();
            let response = if (200..300).contains(&status) && !endpoint.json { Value::Array(rows) } else { response };
            (status, response, version_columns)
        }
        PluginCommand::Bindings { .. } => {
            let (status, response) = http::request(addr, "GET", "/v1/bindings", None, token)?;
            (
                status,
                response,
                &["name", "kind", "topic", "group", "plugin", "version", "policy", "quarantined", "calls", "failures"]
                    [..],
            )
        }
        PluginCommand::Bind {
            binding,
            kind,
            topic,
            group,
            plugin,
            version,
            policy,
            params,
            allow_hosts,
            memory_bytes_max,
            call_ms_max,
            ..
        } => {
            let mut limits = json!({});
            if let Some(m) = memory_bytes_max {
                limits["memory_bytes_max"] = json!(m);
            }
            if let Some(c) = call_ms_max {
                limits["call_ms_max"] = json!(c);
            }
            let mut body = json!({ "kind": kebab(kind), "topic": topic, "plugin": plugin, "version": version,
                                   "params": pairs(params)?, "http_allowlist": allow_hosts, "limits": limits });
            if let Some(group) = group {
                body["group"] = json!(group);
            }
            if let Some(policy) = policy {
                body["policy"] = json!(kebab(policy));
            }
            let (status, response) =
                http::request(addr, "PUT", &format!("/v1/bindings/{}", escape(binding)), Some(&body), token)?;
            (status, response, binding_columns)
        }
        PluginCommand::Unbind { binding, .. } => {
            let (status, response) =
                http::request(addr, "DELETE", &format!("/v1/bindings/{}", escape(binding)), None, token)?;
            (status, response, &["unbound"][..])
        }
        PluginCommand::Activate { binding, version, .. } => {
            let path = format!("/v1/bindings/{}/activate", escape(binding));
            let (status, response) = http::request(addr, "POST", &path, Some(&json!({ "version": version })), token)?;
            (status, response, binding_columns)
        }
        PluginCommand::Rollback { binding, .. } => {
            let path = format!("/v1/bindings/{}/rollback", escape(binding));
            let (status, response) = http::request(addr, "POST", &path, None, token)?;
            (status, response, binding_columns)
        }
        PluginCommand::DryRun { plugin, version, topic, last, binding, params, .. } => {
            let Some((department, name)) = plugin.split_once('/') else { bail!("the plugin is <department>/<plugin>") };
            let path = format!("/v1/plugins/{}/{}/versions/{version}/dry-run", escape(department), escape(name));
            let mut body = json!({ "topic": topic, "last": last, "params": pairs(params)? });
            if let Some(binding) = binding {
                body["binding"] = json!(binding);
            } else if params.is_empty() {
                eprintln!(
                    "ferrymq plugin: warning: the plugin sees no parameters (use --binding NAME for a binding's, or --param NAME=VALUE)"
                );
            }
            let (status, response) = http::request(addr, "POST", &path, Some(&body), token)?;
            if (200..300).contains(&status) && !endpoint.json {
                print_dry_run(&response);
                return Ok(ExitCode::SUCCESS);
            }
            (status, response, &[][..])
        }
        PluginCommand::Delete { plugin, version, .. } => {
            let Some((department, name)) = plugin.split_once('/') else { bail!("the plugin is <department>/<plugin>") };
            let path = format!("/v1/plugins/{}/{}/versions/{version}", escape(department), escape(name));
            let (status, response) = http::request(addr, "DELETE", &path, None, token)?;
            (status, response, &["deleted"][..])
        }
    };
    if !(200..300).contains(&status) {
        let reason = response["error"].as_str().map_or_else(|| response.to_string(), str::to_owned);
        eprintln!("ferrymq plugin: {reason} (HTTP {status})");
        return Ok(ExitCode::FAILURE);
    }
    print_answer(&response, endpoint.json, columns)
}

/// `ferrymq plugin keygen`: writes a new secret key to `out` (which must not exist yet) and prints
/// its public key.
fn keygen(out: &std::path::Path) -> anyhow::Result<ExitCode> {
    use std::os::unix::fs::OpenOptionsExt;
    let key = SigningKey::from_bytes(&random_bytes()?);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("create {} (it must not exist yet)", out.display()))?;
    std::io::Write::write_all(&mut file, ferrymq_proto::hex::encode(&key.to_bytes()).as_bytes())?;
    println!("{}", ferrymq_proto::hex::encode(key.verifying_key().as_bytes()));
    Ok(ExitCode::SUCCESS)
}

/// The rows of a dry run's answer as tables: what was judged; the messages per decision; and the
/// examples of each decision with their id, keys and properties.
fn dry_run_tables(run: &Value) -> [Vec<Value>; 3] {
    let text = |v: &Value| match v {
        Value::String(s) if s.is_empty() => Value::Null,
        other => other.clone(),
    };
    let decisions = run["decisions"]
        .as_object()
        .map(|d| d.iter().map(|(decision, n)| json!({ "decision": decision, "messages": n })).collect())
        .unwrap_or_default();
    let mut examples = Vec::new();
    for (decision, list) in run["examples"].as_object().into_iter().flatten() {
        for example in list.as_array().into_iter().flatten() {
            let properties: Vec<String> = example["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, value)| format!("{name}={}", value.as_str().unwrap_or_default()))
                .collect();
            examples.push(json!({
                "decision": decision,
                "message_id": text(&example["message_id"]),
                "keys": text(&example["keys"]),
                "properties": if properties.is_empty() { Value::Null } else { json!(properties.join(" ")) },
                "detail": text(&example["detail"]),
            }));
        }
    }
    [vec![run.clone()], decisions, examples]
}

fn print_dry_run(run: &Value) {
    let [summary, decisions, examples] = dry_run_tables(run);
    table(&summary, &["plugin", "version", "kind", "topic", "messages"]);
    if !decisions.is_empty() {
        println!();
        table(&decisions, &["decision", "messages"]);
    }
    if !examples.is_empty() {
        println!();
        table(&examples, &["decision", "message_id", "keys", "properties", "detail"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_prints_one_row_per_decision_and_per_example() {
        let run = json!({
            "plugin": "tax/inbox", "version": 1, "kind": "filter", "topic": "tax-inbox", "messages": 3,
            "decisions": { "deliver": 1, "withhold": 2 },
            "examples": {
                "deliver": [{ "log_offset": 10, "message_id": "ID1", "keys": "k1 k2",
                              "properties": { "enterpriseId": "E1", "region": "north" }, "detail": null }],
                "withhold": [
                    { "log_offset": 20, "message_id": "ID2", "keys": "", "properties": {}, "detail": null },
                    { "log_offset": 30, "message_id": "ID3", "keys": "k3", "properties": { "enterpriseId": "E2" },
                      "detail": null },
                ],
            },
        });
        let [summary, decisions, examples] = dry_run_tables(&run);
        assert_eq!(summary[0]["messages"], 3);
        assert_eq!(
            decisions,
            [json!({ "decision": "deliver", "messages": 1 }), json!({ "decision": "withhold", "messages": 2 })]
        );
        assert_eq!(examples.len(), 3);
        assert_eq!(
            examples[0],
            json!({ "decision": "deliver", "message_id": "ID1", "keys": "k1 k2",
                    "properties": "enterpriseId=E1 region=north", "detail": null })
        );
        assert_eq!((&examples[1]["keys"], &examples[1]["properties"]), (&Value::Null, &Value::Null), "shown as -");
    }
}
