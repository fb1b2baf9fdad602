//! `ferrymq`: see `ferrymq --help`.

use std::process::ExitCode;

use clap::Parser;

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
