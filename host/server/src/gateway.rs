//! `ferrymq gateway --config FILE`: one zone gateway (the `ferrymq-gateway` crate), with the data
//! directory locked and logging set up as for a broker; `ferrymq gateway resend` puts kept ferry
//! batches in the outbox again.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use ferrymq_gateway::GatewayConfig;

use crate::data_dir::DataDirLock;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = false)]
pub struct GatewayArgs {
    /// The gateway's TOML configuration: `[gateway]` (data_dir, admin_listen), `[source]` and
    /// `[target]` (endpoints or ferry_dir), and one `[[forward]]` per topic (docs/gateway.md).
    #[arg(long, short, global = true, env = "FERRYMQ_GATEWAY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log filter such as `info` or `debug` (overrides `[log] level`; RUST_LOG wins over both).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Option<GatewayCommand>,
}

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Ferry export: put the kept copies of batches back in the outbox (`[target] ferry_dir`), for
    /// the numbers the importing gateway reports missing (its `ferry-gaps.json`). Safe while the
    /// gateway runs; a batch that arrives twice is imported once.
    Resend {
        /// Sequence numbers, comma-separated (e.g. 17,18).
        #[arg(long, value_delimiter = ',', required = true, value_name = "SEQ,…")]
        seq: Vec<u64>,
    },
}

pub fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let path = args.config.context("--config FILE is required: the gateway's configuration (docs/gateway.md)")?;
    let config = GatewayConfig::load(&path)?;
    let level = args.log_level.unwrap_or_else(|| config.log.level.clone());
    crate::logging::init(&crate::config::LogConfig { level, ..Default::default() })?;
    if let Some(GatewayCommand::Resend { seq }) = args.command {
        ferrymq_gateway::resend(&config, &seq)?;
        println!("placed {} batch(es) in the outbox", seq.len());
        return Ok(ExitCode::SUCCESS);
    }
    let _lock = DataDirLock::acquire(&config.gateway.data_dir)?;
    ferrymq_gateway::run(config)?;
    Ok(ExitCode::SUCCESS)
}
