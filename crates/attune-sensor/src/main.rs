//! The `attune-sensor` binary.

use std::process::ExitCode;

use attune_service::exit;
use clap::Parser;

fn main() -> ExitCode {
    let mut args = attune_sensor::Args::parse();
    if let Err(e) = args.make_paths_absolute() {
        eprintln!("attune-sensor: {e}");
        return ExitCode::from(e.exit_code());
    }
    args.service.init_logging();
    match attune_sensor::supervise(args) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("attune-sensor: {e}");
            ExitCode::from(exit::ENVIRONMENT)
        }
    }
}
