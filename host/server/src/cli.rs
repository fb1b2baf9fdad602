//! The command line: `ferrymq <command> [options]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// ferrymq — a message broker that speaks RocketMQ.
#[derive(Debug, Parser)]
#[command(name = "ferrymq", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a single-node broker. With no options: RocketMQ 5 gRPC clients on 0.0.0.0:8081, admin HTTP
    /// (/healthz, /metrics, /v1/…) on 127.0.0.1:8082, data in ./data, async flush. Stops cleanly on
    /// SIGTERM or Ctrl-C.
    Standalone(StandaloneArgs),
    /// Run a broker of a cluster: the master (--broker-id 0) or a slave (1 and up) of a broker set,
    /// registered with name servers (--namesrv). A master streams its log to its slaves; with
    /// --replication sync a send is acknowledged only once a slave holds it.
    Broker(BrokerArgs),
    /// Run a name server: brokers register with it, clients' routes and `ferrymq admin cluster`
    /// come from it (HTTP on 0.0.0.0:9876).
    Namesrv(crate::namesrv::NamesrvArgs),
    /// Run a zone gateway: forward topics from one zone's brokers to another's, each message once,
    /// under an optional policy plugin per topic (--config FILE; docs/gateway.md). Admin endpoint
    /// (/healthz, /metrics, /v1/gateway) on 127.0.0.1:8083 by default.
    Gateway(crate::gateway::GatewayArgs),
    /// Manage a running broker: topics, groups, offsets, consumer lag, message lookup
    /// (through its admin endpoint, 127.0.0.1:8082 unless --admin-addr or FERRYMQ_ADMIN says otherwise).
    Admin(crate::admin_cli::AdminArgs),
    /// Hot-load WebAssembly plugins on a running broker: push versions, bind them to topics and
    /// groups, activate, roll back, dry-run; make signing keys.
    Plugin(crate::admin_cli::plugin::PluginArgs),
    /// Measure a broker end to end over gRPC: produce, consume, or both at once (e2e), with
    /// throughput and latency percentiles.
    Bench(ferrymq_bench::cli::BenchArgs),
    /// Print or check configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Args)]
pub struct StandaloneArgs {
    /// TOML configuration file; every field is optional (see `ferrymq config default`).
    #[arg(long, short, env = "FERRYMQ_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides `data_dir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// RocketMQ gRPC listen address, e.g. 0.0.0.0:8081; port 0 picks a free port (overrides `grpc.listen`).
    #[arg(long, value_name = "ADDR")]
    pub grpc_listen: Option<SocketAddr>,
    /// Admin HTTP listen address, e.g. 0.0.0.0:8082; port 0 picks a free port (overrides `admin.listen`).
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// When a send is acknowledged: after the page cache (async) or after fdatasync (sync)
    /// (overrides `store.flush`).
    #[arg(long, value_enum)]
    pub flush: Option<FlushArg>,
    /// Log filter such as `info` or `debug,hyper=info` (overrides `log.level`; RUST_LOG wins over both).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Serve the admin API without tokens on an address beyond loopback: anyone who reaches it is
    /// admin (sets `admin.insecure_open`). Configure `[[admin.tokens]]` instead where you can.
    #[arg(long)]
    pub insecure_admin: bool,
}

/// `ferrymq broker`: a node's options plus its place in the cluster.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    #[command(flatten)]
    pub node: StandaloneArgs,
    /// Broker-set name: a master and its slaves share it (overrides `grpc.broker_name`).
    #[arg(long, value_name = "NAME")]
    pub broker_set: Option<String>,
    /// 0 for the set's master, 1 and up for its slaves (overrides `cluster.broker_id`).
    #[arg(long, value_name = "ID")]
    pub broker_id: Option<u64>,
    /// Name servers to register with, comma separated host:port (overrides `cluster.namesrv`).
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT")]
    pub namesrv: Vec<String>,
    /// A master's acknowledgement: after local durability (async) or once a slave holds the bytes
    /// (sync) (overrides `cluster.replication`).
    #[arg(long, value_enum)]
    pub replication: Option<ferrymq_cluster::ReplicationMode>,
    /// Where a master listens for its slaves (overrides `cluster.ha_listen`).
    #[arg(long, value_name = "ADDR")]
    pub ha_listen: Option<SocketAddr>,
    /// The host (name or IP) other brokers and clients reach this one at; sets the advertised gRPC,
    /// HA and admin addresses not given in the configuration.
    #[arg(long, value_name = "HOST")]
    pub advertise: Option<String>,
    /// A slave's master HA address, host:port (overrides `cluster.master_ha`; else found through
    /// the name servers).
    #[arg(long, value_name = "HOST:PORT")]
    pub master_ha: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FlushArg {
    Async,
    Sync,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the default configuration as TOML: a starting point for your own file.
    Default,
    /// Check a configuration file and print it with every default filled in.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn standalone_takes_overrides() {
        let cli =
            Cli::try_parse_from(["ferrymq", "standalone", "--data-dir", "/tmp/x", "--flush", "sync"]).expect("parses");
        let Command::Standalone(args) = cli.command else { panic!("standalone") };
        assert_eq!(args.data_dir, Some(PathBuf::from("/tmp/x")));
        assert!(matches!(args.flush, Some(FlushArg::Sync)));
    }

    /// The long help of `ferrymq <path…>`.
    fn help(path: &[&str]) -> String {
        let mut command = Cli::command();
        command.build();
        let mut sub = &mut command;
        for name in path {
            sub = sub.find_subcommand_mut(name).unwrap_or_else(|| panic!("no subcommand {name}"));
        }
        sub.render_long_help().to_string()
    }

    #[test]
    fn only_the_plugin_subcommands_that_talk_to_a_broker_take_and_show_its_options() {
        use crate::admin_cli::plugin::PluginCommand;
        let plugin = |args: &[&str]| Cli::try_parse_from([&["ferrymq", "plugin"][..], args].concat());
        // Before the subcommand, as scripts and tests have written it: still taken.
        let cli = plugin(&["--admin-addr", "h:1", "--token", "t", "--json", "rollback", "b"]).expect("parses");
        let Command::Plugin(args) = cli.command else { panic!("plugin") };
        assert_eq!((args.before.admin_addr.as_deref(), args.before.token.as_deref()), (Some("h:1"), Some("t")));
        assert!(args.before.json);
        // After it.
        let cli = plugin(&["bindings", "--admin-addr", "h:2", "--token", "u", "--json"]).expect("parses");
        let Command::Plugin(args) = cli.command else { panic!("plugin") };
        let PluginCommand::Bindings { remote } = args.command else { panic!("bindings") };
        assert_eq!(
            (remote.admin_addr.as_deref(), remote.token.as_deref(), remote.json),
            (Some("h:2"), Some("u"), true)
        );
        assert!(plugin(&["keygen", "--out", "k", "--admin-addr", "h:1"]).is_err(), "keygen talks to no broker");
        assert!(plugin(&["sign", "x.wasm", "--key", "k", "--token", "t"]).is_err(), "neither does sign");
        assert!(plugin(&["test", "x.wasm", "--json"]).is_ok(), "plugin test has a --json of its own");

        for local in ["keygen", "sign", "new", "build", "test"] {
            let help = help(&["plugin", local]);
            assert!(!help.contains("--admin-addr") && !help.contains("--token"), "plugin {local}: {help}");
        }
        assert!(!help(&["plugin", "keygen"]).contains("--json"));
        for remote in ["push", "list", "bindings", "bind", "unbind", "activate", "rollback", "dry-run", "delete"] {
            let help = help(&["plugin", remote]);
            for option in ["--admin-addr", "FERRYMQ_ADMIN", "--token", "FERRYMQ_TOKEN", "--json"] {
                assert!(help.contains(option), "plugin {remote} shows {option}: {help}");
            }
        }
        assert!(!help(&["plugin"]).contains("--admin-addr <"), "the options belong to the subcommands");
        // `admin` still takes them anywhere: every one of its subcommands talks to a broker.
        assert!(Cli::try_parse_from(["ferrymq", "admin", "topic", "list", "--admin-addr", "h:1", "--json"]).is_ok());
    }

    #[test]
    fn admin_audit_alone_lists_entries() {
        use crate::admin_cli::{AdminCommand, AuditArgs, AuditCommand};
        let audit = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["ferrymq", "admin", "audit"][..], args].concat()).expect("parses");
            let Command::Admin(admin) = cli.command else { panic!("admin") };
            let AdminCommand::Audit(audit) = admin.command else { panic!("audit") };
            audit
        };
        let AuditArgs { command: None, list } = audit(&[]) else { panic!("no subcommand") };
        assert_eq!((list.from, list.limit), (0, 100));
        let AuditArgs { command: None, list } = audit(&["--from", "5"]) else { panic!("no subcommand") };
        assert_eq!(list.from, 5);
        let AuditArgs { command: Some(AuditCommand::List(list)), .. } = audit(&["list", "--limit", "7"]) else {
            panic!("list")
        };
        assert_eq!(list.limit, 7);
        assert!(matches!(audit(&["verify"]).command, Some(AuditCommand::Verify { file: None })));
    }
}
