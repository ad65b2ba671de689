//! `packs-assemble`: the command line over `attune-volume` (publish, verify,
//! inspect, history, rollback of a packs volume) and `attune-image` (the
//! image writers and checker: export, export-rootfs, check-image).
//!
//! This crate owns the arguments ([`cli`]), what is printed (`output`), the
//! logging setup and the mapping of errors to exit codes; the volume contract
//! and its crash-safety argument are `attune_volume`'s crate doc, the images'
//! guarantees `attune_image`'s.
//!
//! `main` only parses the command line and calls [`run`].

pub mod cli;
mod commands;
mod image_commands;
mod logging;
mod output;

use std::process::ExitCode;

pub use attune_volume::{Error, SOURCE_DATE_EPOCH, exit, source_date_epoch};

/// Runs a parsed command line; errors are printed here, with their whole chain.
pub fn run(cli: cli::Cli) -> ExitCode {
    logging::init(cli.log_format, cli.verbose, cli.quiet);
    let out = output::Output {
        json: cli.json,
        log_format: cli.log_format,
        quiet: cli.quiet,
        // One per run, for its whole life.
        show_path_as: cli.show_path_as.clone().map(|a| &*Box::leak(Box::new(a))),
    };
    let progress = attune_volume::Progress::new(cli.quiet || cli.json);
    let result = match &cli.command {
        cli::Command::Assemble(a) => commands::assemble(a, out, &progress),
        cli::Command::Check(a) => commands::check(a, out),
        cli::Command::Verify(a) => commands::verify(a, out),
        cli::Command::Inspect(a) => commands::inspect(a, out),
        cli::Command::History(a) => commands::history(a, out),
        cli::Command::Rollback(a) => commands::rollback(a, out),
        cli::Command::Export(a) => image_commands::export(a, out),
        cli::Command::ExportRootfs(a) => image_commands::export_rootfs(a, out),
        cli::Command::CheckImage(a) => image_commands::check_image(a, out),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            match cli.log_format {
                cli::LogFormat::Human => eprintln!("packs-assemble: {e}"),
                cli::LogFormat::Json => tracing::error!(exit_code = ?e.exit_code(), "{e}"),
            }
            e.exit_code()
        }
    }
}
