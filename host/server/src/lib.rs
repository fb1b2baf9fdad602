//! The `ferrymq` binary's library: command line, configuration, start-up wiring and the admin API.
//!
//! This crate is the edge: it owns the async runtime, signals and process exit codes, and wires the
//! crates below together (store, broker, policy, cluster, gRPC front end). Errors here are `anyhow`
//! with context; the crates below keep typed errors.

pub mod admin;
pub mod admin_cli;
#[cfg(test)]
mod admin_fuzz;
pub mod broker;
pub mod cli;
pub mod config;
pub mod data_dir;
pub mod gateway;
pub mod logging;
pub mod metrics;
pub mod namesrv;
pub mod node;
pub mod open_files;
pub mod plugin_kit;
pub mod standalone;

use std::process::ExitCode;

use cli::{Cli, Command, ConfigCommand};
use config::ServerConfig;

/// Runs one command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Standalone(args) => standalone::run(args),
        Command::Broker(args) => broker::run(args),
        Command::Namesrv(args) => namesrv::run(args),
        Command::Gateway(args) => gateway::run(args),
        Command::Admin(args) => admin_cli::run(args),
        Command::Plugin(args) => admin_cli::plugin::run(args),
        Command::Bench(args) => ferrymq_bench::cli::run(args),
        Command::Config(ConfigCommand::Default) => {
            print!("{}", ServerConfig::default_toml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let mut config = ServerConfig::load(Some(&file))?;
            config.check_exposure()?;
            // What it prints may land in a ticket or a terminal recording: tokens only as digests.
            config.admin.tokens = config.admin.tokens.iter().map(|t| t.hidden()).collect();
            print!("{}", toml::to_string_pretty(&config)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
