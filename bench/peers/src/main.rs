//! `ferrymq-peer-bench`: the `ferrymq bench` workloads, run against a peer broker through its own
//! protocol, so that ferrymq and its peers are measured by the same loop and the same histograms.

mod nats;
mod rabbitmq;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use ferrymq_bench::{self as bench, Mode, Report, Workload};

// The same allocator as the `ferrymq` binary, so that the client side of every run costs the same.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "ferrymq-peer-bench", version)]
struct Cli {
    #[command(subcommand)]
    peer: Peer,
}

#[derive(Debug, Subcommand)]
enum Peer {
    /// NATS JetStream: a file-storage stream with one replica; producers await each publish ack,
    /// consumers pull in batches and ack every message.
    Nats {
        #[arg(value_enum)]
        mode: Mode,
        #[arg(long, default_value = "127.0.0.1:4222")]
        url: String,
        /// Stream (and its one subject) to create if missing.
        #[arg(long, default_value = "bench")]
        stream: String,
        #[command(flatten)]
        workload: Workload,
        #[command(flatten)]
        output: Output,
    },
    /// RabbitMQ: a durable quorum queue, persistent messages with publisher confirms, consumers with
    /// manual acknowledgements.
    Rabbitmq {
        #[arg(value_enum)]
        mode: Mode,
        #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
        url: String,
        /// Queue to declare if missing.
        #[arg(long, default_value = "bench")]
        queue: String,
        #[command(flatten)]
        workload: Workload,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, clap::Args)]
struct Output {
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
}

fn print(report: &Report, output: &Output) -> anyhow::Result<ExitCode> {
    if output.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{report}");
    }
    Ok(if report.errors == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn go(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.peer {
        Peer::Nats { mode, url, stream, workload, output } => {
            let target = Arc::new(nats::Nats::connect(&url, &stream).await?);
            let report = bench::run(target, mode, &workload, !output.quiet).await?;
            print(&report, &output)
        }
        Peer::Rabbitmq { mode, url, queue, workload, output } => {
            let target = Arc::new(rabbitmq::Rabbitmq { url, queue });
            let report = bench::run(target, mode, &workload, !output.quiet).await?;
            print(&report, &output)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match go(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferrymq-peer-bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
