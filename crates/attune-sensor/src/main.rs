//! The `attune-sensor` binary.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = attune_sensor::Args::parse();
    attune_service::init_logging(args.log_format, &args.log_level);
    match attune_sensor::supervise(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("attune-sensor: {e}");
            ExitCode::from(3)
        }
    }
}
