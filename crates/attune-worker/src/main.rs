//! The `attune-worker` binary.

use std::process::ExitCode;

use attune_service::exit;
use clap::Parser;

fn main() -> ExitCode {
    // The Docker stack's agent-init: no token, no API, just the copy.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "install-agent") {
        return ExitCode::from(attune_service::agent::main(&argv[2..]));
    }
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
