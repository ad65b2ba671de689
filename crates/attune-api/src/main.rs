//! The `attune-api` binary.

use std::process::ExitCode;

use attune_service::exit;
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = attune_api::Args::parse();
    if args.healthcheck {
        return if attune_api::healthcheck(args.listen) {
            ExitCode::from(exit::OK)
        } else {
            ExitCode::from(exit::UNHEALTHY)
        };
    }
    if let Err(e) = args.make_paths_absolute() {
        eprintln!("attune-api: {e}");
        return ExitCode::from(e.exit_code());
    }
    attune_service::init_logging(args.log_format, args.log_level);
    if let Err(e) = attune_api::check_paths(&args) {
        eprintln!("attune-api: {e}");
        return ExitCode::from(exit::USAGE);
    }
    match attune_api::serve(args).await {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("attune-api: {e}");
            ExitCode::from(exit::ENVIRONMENT)
        }
    }
}
