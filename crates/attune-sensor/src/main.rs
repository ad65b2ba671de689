//! The `attune-sensor` binary.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = attune_sensor::Args::parse();
    args.service.init_logging();
    match attune_sensor::supervise(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("attune-sensor: {e}");
            ExitCode::from(3)
        }
    }
}
