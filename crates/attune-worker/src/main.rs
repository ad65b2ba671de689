//! The `attune-worker` binary.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = attune_worker::Args::parse();
    args.service.init_logging();
    match attune_worker::work(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("attune-worker: {e}");
            ExitCode::from(3)
        }
    }
}
