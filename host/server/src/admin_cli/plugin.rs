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

use super::{escape, print_answer};

#[derive(Debug, Args)]
pub struct PluginArgs {
    #[command(flatten)]
    pub endpoint: super::Endpoint,
    #[command(subcommand)]
    pub command: PluginCommand,
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

fn pairs(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
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
    },
    /// Plugins and their versions.
    List,
    /// Bindings, their active versions and counters.
    Bindings,
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
    },
    /// Remove a binding.
    Unbind { binding: String },
    /// Make a version the active one on a binding (atomically between batches).
    Activate {
        binding: String,
        #[arg(id = "number", value_name = "VERSION")]
        version: u32,
    },
    /// Go back to the version that was active before the current one.
    Rollback { binding: String },
    /// Run a version against a topic's latest messages and show what it would decide.
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
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
    /// Delete a version no binding runs.
    Delete {
        plugin: String,
        #[arg(id = "number", value_name = "VERSION")]
        version: u32,
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

pub fn run(args: PluginArgs) -> anyhow::Result<ExitCode> {
    // Working on a project needs no broker.
    let args = match args.command {
        PluginCommand::New(new) => return crate::plugin_kit::new::run(new),
        PluginCommand::Build(build) => return crate::plugin_kit::build::run(build),
        PluginCommand::Test(test) => return crate::plugin_kit::sandbox::run(test),
        command => PluginArgs { command, ..args },
    };
    let token = args.endpoint.token.as_deref();
    let addr = args.endpoint.admin_addr.as_str();
    let version_columns: &[&str] = &["plugin", "version", "world", "digest", "size", "uploader", "signed_by"];
    let binding_columns: &[&str] = &["name", "version", "digest", "position"];
    let (status, response, columns) = match &args.command {
        PluginCommand::New(_) | PluginCommand::Build(_) | PluginCommand::Test(_) => return Ok(ExitCode::SUCCESS),
        PluginCommand::CompileCheck { cache_dir, instances_max, memory_bytes_max, cpu_s_max } => {
            ferrymq_policy::compile::compile_check(cache_dir.clone(), *instances_max, *memory_bytes_max, *cpu_s_max)?;
            return Ok(ExitCode::SUCCESS);
        }
        PluginCommand::Keygen { out } => {
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
            return Ok(ExitCode::SUCCESS);
        }
        PluginCommand::Sign { file, key } => {
            let bytes = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
            println!("{}", ferrymq_proto::hex::encode(&read_key(key)?.sign(&bytes).to_bytes()));
            return Ok(ExitCode::SUCCESS);
        }
        PluginCommand::Push { file, name, sign_key } => {
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
        PluginCommand::List => {
            let (status, response) = http::request(addr, "GET", "/v1/plugins", None, token)?;
            let rows: Vec<Value> = response
                .as_array()
                .map(|plugins| {
                    plugins.iter().flat_map(|p| p["versions"].as_array().cloned().unwrap_or_default()).collect()
                })
                .unwrap_or_default();
            let response =
                if (200..300).contains(&status) && !args.endpoint.json { Value::Array(rows) } else { response };
            (status, response, version_columns)
        }
        PluginCommand::Bindings => {
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
        PluginCommand::Unbind { binding } => {
            let (status, response) =
                http::request(addr, "DELETE", &format!("/v1/bindings/{}", escape(binding)), None, token)?;
            (status, response, &["unbound"][..])
        }
        PluginCommand::Activate { binding, version } => {
            let path = format!("/v1/bindings/{}/activate", escape(binding));
            let (status, response) = http::request(addr, "POST", &path, Some(&json!({ "version": version })), token)?;
            (status, response, binding_columns)
        }
        PluginCommand::Rollback { binding } => {
            let path = format!("/v1/bindings/{}/rollback", escape(binding));
            let (status, response) = http::request(addr, "POST", &path, None, token)?;
            (status, response, binding_columns)
        }
        PluginCommand::DryRun { plugin, version, topic, last, params } => {
            let Some((department, name)) = plugin.split_once('/') else { bail!("the plugin is <department>/<plugin>") };
            let path = format!("/v1/plugins/{}/{}/versions/{version}/dry-run", escape(department), escape(name));
            let body = json!({ "topic": topic, "last": last, "params": pairs(params)? });
            let (status, response) = http::request(addr, "POST", &path, Some(&body), token)?;
            (status, response, &["plugin", "version", "kind", "messages", "decisions"][..])
        }
        PluginCommand::Delete { plugin, version } => {
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
    print_answer(&response, args.endpoint.json, columns)
}
