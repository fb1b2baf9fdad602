//! `ferrymq bench produce|consume|e2e`: drive a broker's gRPC endpoint with a measured workload.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::ferrymq::Ferrymq;
use crate::{Mode, Workload, parse_duration};
use anyhow::Context as _;
use clap::{Args, ValueEnum};
use ferrymq_client::Kind;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  ferrymq admin topic create bench --type normal --queues 8 && ferrymq admin group create bench
  ferrymq bench produce --producers 16 --batch 32 --duration 20s
  ferrymq bench consume --consumers 4 --count 1000000
  ferrymq bench e2e --rate 50000 --duration 30s --json

Latency is measured per message; with --rate, a request held back by a slow acknowledgement is
timed from its planned start, so a broker that falls behind is charged for the wait. Every body starts with its send time; e2e latency needs producer and
consumer on one clock, so run bench on one machine.")]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    pub mode: Mode,
    /// The broker's gRPC endpoint (RocketMQ 5 protocol).
    #[arg(long, env = "FERRYMQ_GRPC", default_value = "127.0.0.1:8081", value_name = "HOST:PORT")]
    pub addr: String,
    /// Consume from this endpoint instead of --addr: e.g. the broker in the other zone of a
    /// `ferrymq gateway`, to measure forwarding end to end.
    #[arg(long, value_name = "HOST:PORT")]
    pub consume_addr: Option<String>,
    /// Topic to produce to and consume from; it must exist.
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Consumer group.
    #[arg(long, default_value = "bench")]
    pub group: String,
    /// Message type; the topic must accept it.
    #[arg(long = "type", value_enum, default_value_t = TypeArg::Normal)]
    pub kind: TypeArg,
    /// Delay messages are due this long after they are sent.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "TIME")]
    pub delay: Duration,
    /// How long a receive may wait when no message is ready (RocketMQ's own proxy refuses less than 5s).
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "TIME")]
    pub long_polling: Duration,
    #[command(flatten)]
    pub workload: Workload,
    /// Name of the target in the report (e.g. a peer broker's name).
    #[arg(long, default_value = "ferrymq")]
    pub label: String,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TypeArg {
    Normal,
    Fifo,
    Delay,
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let kind = match args.kind {
        TypeArg::Normal => Kind::Normal,
        TypeArg::Fifo => Kind::Fifo,
        TypeArg::Delay => Kind::Delay,
    };
    let target = Arc::new(Ferrymq {
        name: args.label,
        consume_address: args.consume_addr.unwrap_or_else(|| args.addr.clone()),
        address: args.addr,
        topic: args.topic,
        group: args.group,
        kind,
        delay: args.delay,
        long_polling: args.long_polling,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let report = runtime.block_on(crate::run(target, args.mode, &args.workload, !args.quiet))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(if report.errors == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
