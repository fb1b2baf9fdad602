//! `ferrymq standalone`: one process running the whole broker on one data directory, every default
//! embedded.

use std::process::ExitCode;

use ferrymq_store::FlushMode;

use crate::cli::{FlushArg, StandaloneArgs};
use crate::config::ServerConfig;
use crate::node::run_node;

/// The configuration after the command line's overrides.
pub fn effective_config(args: &StandaloneArgs) -> anyhow::Result<ServerConfig> {
    let mut config = ServerConfig::load(args.config.as_deref())?;
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(listen) = args.admin_listen {
        config.admin.listen = listen;
    }
    if let Some(listen) = args.grpc_listen {
        config.grpc.listen = listen;
    }
    if let Some(flush) = args.flush {
        config.store.flush = match flush {
            FlushArg::Async => FlushMode::Async,
            FlushArg::Sync => FlushMode::Sync,
        };
    }
    if let Some(level) = &args.log_level {
        config.log.level = level.clone();
    }
    if args.insecure_admin {
        config.admin.insecure_open = true;
    }
    config.validate()?;
    config.check_exposure()?;
    Ok(config)
}

pub fn run(args: StandaloneArgs) -> anyhow::Result<ExitCode> {
    let mut config = effective_config(&args)?;
    // A standalone node is its own cluster of one.
    config.cluster = ferrymq_cluster::ClusterConfig::default();
    run_node(config, false)
}
