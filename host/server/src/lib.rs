//! The `ferrymq` binary's library: command line, configuration, admin HTTP and the standalone node.
//!
//! This crate is the edge: it owns the async runtime, sockets, signals and process exit codes, and
//! wires the store (and later the broker and plugin crates) together. Errors here are `anyhow` with
//! context; the crates below keep typed errors.

pub mod admin;
pub mod admin_cli;
pub mod bench_cli;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod data_dir;
pub mod grpc;
pub mod hex;
pub mod http_serve;
pub mod logging;
pub mod metrics;
pub mod namesrv;
pub mod plugins;
pub mod registry;
pub mod standalone;
pub mod system_topic;

use std::process::ExitCode;

use cli::{Cli, Command, ConfigCommand};
use config::ServerConfig;

/// Runs one command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Standalone(args) => standalone::run(args),
        Command::Broker(args) => standalone::run_broker(args),
        Command::Namesrv(args) => namesrv::run(args),
        Command::Admin(args) => admin_cli::run(args),
        Command::Plugin(args) => admin_cli::plugin::run(args),
        Command::Bench(args) => bench_cli::run(args),
        Command::Config(ConfigCommand::Default) => {
            print!("{}", ServerConfig::default_toml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let config = ServerConfig::load(Some(&file))?;
            print!("{}", toml::to_string_pretty(&config)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
