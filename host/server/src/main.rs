//! `ferrymq`: see `ferrymq --help`.

use std::process::ExitCode;

use clap::Parser;

// Messages are allocated on the gRPC threads and freed on the store's writer: glibc's per-thread
// arenas pay for every such cross-thread free, mimalloc's free lists do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = ferrymq_server::cli::Cli::parse();
    match ferrymq_server::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("ferrymq: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
