//! The `attune-worker` binary.

use std::process::ExitCode;

use attune_service::exit;
use clap::Parser;

fn main() -> ExitCode {
    let mut args = attune_worker::Args::parse();
    if let Err(e) = args.make_paths_absolute() {
        eprintln!("attune-worker: {e}");
        return ExitCode::from(e.exit_code());
    }
    args.service.init_logging();
    match attune_worker::work(args) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("attune-worker: {e}");
            ExitCode::from(exit::ENVIRONMENT)
        }
    }
}
