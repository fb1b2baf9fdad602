//! `ferrymq plugin test`: runs a component on sample messages in the sandbox the broker uses (the
//! same engine, limits and grants), without a broker, and prints each message's decision.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use ferrymq_plugin::{
    FilterPlugin, Grant, Loaded, PluginEngine, PluginError, PluginLimits, RouteOutcome, RoutePlugin, TxCheckPlugin,
    TxOutcome, World,
};

use super::samples::{self, Sample};
use super::{MESSAGES, Manifest};

/// Messages per filter call unless `--batch` says otherwise: what the broker passes on receive.
const BATCH_DEFAULT: usize = 32;
const BATCH_MAX: usize = 1024;
/// Time limit of a tx-check call unless `--call-ms-max`: as a broker binding's default.
const TX_CHECK_CALL_MS: u64 = ferrymq_policy::config::TX_CHECK_CALL_MS_DEFAULT;

#[derive(Debug, Args)]
pub struct TestArgs {
    /// A plugin project (default: the current directory; its `<name>.wasm` from `plugin build`) or a
    /// component file.
    pub path: Option<PathBuf>,
    /// Sample messages, one JSON object per line (default: the project's messages.jsonl), e.g.
    /// {"topic":"t","tag":"A","keys":["k1"],"properties":{"enterpriseId":"E1"},"body":"text"}
    #[arg(long, value_name = "FILE.jsonl")]
    pub messages: Option<PathBuf>,
    /// A parameter the plugin reads, as a binding would give it, name=value (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// A host a tx-check may call over HTTP (repeatable), as a binding's http_allowlist.
    #[arg(long = "allow-host", value_name = "HOST[:PORT]")]
    pub allow_hosts: Vec<String>,
    /// Messages per filter call.
    #[arg(long, default_value_t = BATCH_DEFAULT, value_name = "N")]
    pub batch: usize,
    /// Per-call memory limit in bytes (a binding's default unless given).
    #[arg(long, value_name = "BYTES")]
    pub memory_bytes_max: Option<u64>,
    /// Per-call time limit in milliseconds (a binding's default unless given).
    #[arg(long, value_name = "MS")]
    pub call_ms_max: Option<u64>,
    /// Print one JSON object per message instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also measure: a new instance's first call, and the cost per message of calls on a warm
    /// instance (filters in batches of 32 and 256 of the samples, repeated), as medians of rounds
    /// of about a second in all. Plugin log lines are silenced while measuring.
    #[arg(long)]
    pub bench: bool,
}

/// One message's outcome.
struct Decision {
    decision: &'static str,
    detail: String,
    failed: bool,
}

impl Decision {
    fn ok(decision: &'static str, detail: String) -> Self {
        Self { decision, detail, failed: false }
    }
    fn failed(err: &PluginError) -> Self {
        Self { decision: "failed", detail: err.to_string(), failed: true }
    }
}

pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    if !(1..=BATCH_MAX).contains(&args.batch) {
        bail!("--batch must be 1 to {BATCH_MAX}");
    }
    let (component, project) = locate(args.path.as_deref())?;
    let messages_path = match (&args.messages, &project) {
        (Some(path), _) => path.clone(),
        (None, Some((dir, _))) => dir.join(MESSAGES),
        (None, None) => bail!("give the sample messages with --messages FILE.jsonl"),
    };
    let samples = samples::read(&messages_path)?;
    // What the plugin logs (and why a call failed, at debug with RUST_LOG) goes to stderr.
    crate::logging::init(&crate::config::LogConfig { level: "info".into(), ..Default::default() })?;
    let bytes = std::fs::read(&component).with_context(|| format!("read {}", component.display()))?;

    let engine = PluginEngine::with_workers(cache_dir(), 8, 1, 0).context("start the plugin engine")?;
    let started = Instant::now();
    let loaded = engine.load(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", component.display()))?;
    eprintln!(
        "{}: {} component, {} bytes, loaded in {} ms",
        component.display(),
        loaded.world.name(),
        loaded.size,
        started.elapsed().as_millis()
    );

    let mut limits = PluginLimits::default();
    if loaded.world == World::TxCheck {
        limits.call_ms_max = TX_CHECK_CALL_MS;
    }
    limits.memory_bytes_max = args.memory_bytes_max.unwrap_or(limits.memory_bytes_max);
    limits.call_ms_max = args.call_ms_max.unwrap_or(limits.call_ms_max);
    // Every message gets its own verdict: no quarantine part way through the file.
    limits.failures_max = u32::MAX;
    limits.validate().map_err(|reason| anyhow::anyhow!("limits: {reason}"))?;
    let declared = project.map(|(_, manifest)| manifest.params).unwrap_or_default();
    let grant = Grant {
        config: params(&declared, &args.params)?,
        http_allowlist: args.allow_hosts.clone(),
        // A language runtime's traceback is the quickest way to the bug.
        inherit_stderr: true,
    };

    let decisions = match loaded.world {
        World::Filter => filter(&engine, &loaded, limits.clone(), grant.clone(), &samples, args.batch)?,
        World::Route => route(&engine, &loaded, limits.clone(), grant.clone(), &samples)?,
        World::TxCheck => tx_check(&engine, &loaded, limits.clone(), grant.clone(), &samples)?,
    };
    print(&samples, &decisions, args.json)?;
    let failed = decisions.iter().filter(|d| d.failed).count();
    if args.bench && failed == 0 {
        super::bench::run(&engine, &loaded, &limits, &grant, &samples)?;
    }
    if failed > 0 {
        eprintln!("{failed} of {} calls failed", decisions.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The component to run, and the project it belongs to (if a directory was given).
fn locate(path: Option<&Path>) -> anyhow::Result<(PathBuf, Option<(PathBuf, Manifest)>)> {
    let path = path.map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    if path.is_file() {
        return Ok((path, None));
    }
    let manifest = Manifest::read(&path)?;
    let component = manifest.component(&path);
    if !component.is_file() {
        bail!("{} is not built yet: run `ferrymq plugin build {}`", component.display(), path.display());
    }
    Ok((component, Some((path, manifest))))
}

/// Where compiled components are kept between runs: `$XDG_CACHE_HOME/ferrymq/plugins` or
/// `~/.cache/ferrymq/plugins` (a Python component takes seconds to compile).
fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("ferrymq").join("plugins"))
}

/// The project's declared parameters, overridden and extended by `--param`.
fn params(declared: &BTreeMap<String, String>, given: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut params = declared.clone();
    params.extend(crate::admin_cli::plugin::pairs(given)?);
    Ok(params.into_iter().collect())
}

fn filter(
    engine: &PluginEngine,
    loaded: &Loaded,
    limits: PluginLimits,
    grant: Grant,
    samples: &[Sample],
    batch: usize,
) -> anyhow::Result<Vec<Decision>> {
    let plugin = FilterPlugin::new(engine, "test", loaded, limits, grant)?;
    let mut out = Vec::with_capacity(samples.len());
    for chunk in samples.chunks(batch) {
        // As on receive: bodies stay out of the batch and come when the filter asks.
        let messages: Vec<_> = chunk.iter().map(|s| s.as_plugin_message(false, 1)).collect();
        let bodies: Vec<Vec<u8>> = chunk.iter().map(|s| s.body.clone()).collect();
        let source = Box::new(move |i: u32| bodies.get(i as usize).cloned());
        match plugin.filter(&messages, source) {
            Ok(keep) => out
                .extend(keep.into_iter().map(|k| Decision::ok(if k { "deliver" } else { "withhold" }, String::new()))),
            Err(err) => out.extend(chunk.iter().map(|_| Decision::failed(&err))),
        }
    }
    Ok(out)
}

fn route(
    engine: &PluginEngine,
    loaded: &Loaded,
    limits: PluginLimits,
    grant: Grant,
    samples: &[Sample],
) -> anyhow::Result<Vec<Decision>> {
    let plugin = RoutePlugin::new(engine, "test", loaded, limits, grant)?;
    Ok(samples
        .iter()
        .map(|s| match plugin.route(&s.as_plugin_message(true, 0)) {
            Ok(outcome) => describe_route(outcome),
            Err(err) => Decision::failed(&err),
        })
        .collect())
}

fn describe_route(outcome: RouteOutcome) -> Decision {
    match outcome {
        RouteOutcome::Accept { tag, set_properties, remove_properties, body } => {
            let mut changes = Vec::new();
            if let Some(tag) = tag {
                changes.push(format!("tag={tag}"));
            }
            changes.extend(set_properties.iter().map(|(k, v)| format!("{k}={v}")));
            changes.extend(remove_properties.iter().map(|k| format!("-{k}")));
            if let Some(body) = body {
                changes.push(format!("body={}", String::from_utf8_lossy(&body)));
            }
            if changes.is_empty() {
                Decision::ok("accept", String::new())
            } else {
                Decision::ok("accept-changed", changes.join(" "))
            }
        }
        RouteOutcome::Redirect(topics) => Decision::ok("redirect", topics.join(",")),
        RouteOutcome::Reject(reason) => Decision::ok("reject", reason),
        RouteOutcome::Drop(reason) => Decision::ok("drop", reason),
    }
}

fn tx_check(
    engine: &PluginEngine,
    loaded: &Loaded,
    limits: PluginLimits,
    grant: Grant,
    samples: &[Sample],
) -> anyhow::Result<Vec<Decision>> {
    let plugin = TxCheckPlugin::new(engine, "test", loaded, limits, grant)?;
    Ok(samples
        .iter()
        .map(|s| {
            let id = s.transaction_id.clone().unwrap_or_else(|| format!("tx-line-{}", s.line));
            match plugin.check(&id, &s.as_plugin_message(true, 0)) {
                Ok(TxOutcome::Commit) => Decision::ok("commit", id),
                Ok(TxOutcome::Rollback) => Decision::ok("rollback", id),
                Ok(TxOutcome::Unknown) => Decision::ok("unknown", id),
                Err(err) => Decision::failed(&err),
            }
        })
        .collect())
}

fn print(samples: &[Sample], decisions: &[Decision], as_json: bool) -> anyhow::Result<()> {
    let rows: Vec<Value> = samples
        .iter()
        .zip(decisions)
        .map(|(s, d)| {
            let properties: Vec<String> = ferrymq_proto::properties::decode(&s.properties)
                .map_while(Result::ok)
                .map(|p| format!("{}={}", p.name, p.value))
                .collect();
            json!({
                "line": s.line,
                "topic": s.topic,
                "tag": (!s.tag.is_empty()).then_some(&s.tag),
                "keys": (!s.keys.is_empty()).then_some(&s.keys),
                "properties": properties.join(" "),
                "decision": d.decision,
                "detail": d.detail,
            })
        })
        .collect();
    if as_json {
        for row in &rows {
            println!("{}", serde_json::to_string(row)?);
        }
    } else {
        crate::admin_cli::table(&rows, &["line", "topic", "tag", "keys", "properties", "decision", "detail"]);
    }
    Ok(())
}
