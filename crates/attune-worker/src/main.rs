//! The `attune-worker` binary.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = attune_worker::Args::parse();
    attune_service::init_logging(args.log_format, &args.log_level);
    match attune_worker::work(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("attune-worker: {e}");
            ExitCode::from(3)
        }
    }
}
