//! `packs-assemble`: pack sources + fresh static binaries -> a packs volume.
//!
//! The volume follows the Kubernetes AtomicWriter layout: complete generations
//! `..<id>`, a `..data` link swapped by rename(2), and one link per pack; the
//! generations share a content-addressed store of directories ([`store`], which
//! also gives the crash argument). This crate scans untrusted inputs ([`scan`]),
//! hashes them ([`hash`]), plans the generation and its manifest ([`plan`],
//! [`manifest`]), publishes it ([`publish`], [`write`], [`remove`]) and checks
//! published volumes ([`verify`]). The pack format itself (YAML model,
//! validation, ELF rules) belongs to `attune-pack`.
//!
//! `main` only parses the command line and calls [`run`].

pub mod cli;
mod commands;
pub mod crashpoint;
pub mod error;
pub mod hash;
pub mod inspect;
mod logging;
pub mod manifest;
mod output;
pub mod parallel;
pub mod plan;
pub mod progress;
pub mod publish;
pub mod remove;
pub mod scan;
pub mod store;
pub mod verify;
pub mod volume;
pub mod write;

use std::process::ExitCode;

pub use commands::{SOURCE_DATE_EPOCH, source_date_epoch};
pub use error::{Error, exit};

/// Runs a parsed command line; errors are printed here, with their whole chain.
pub fn run(cli: cli::Cli) -> ExitCode {
    logging::init(cli.log_format, cli.verbose, cli.quiet);
    let json = match &cli.command {
        cli::Command::Assemble(a) => a.json,
        cli::Command::Check(a) => a.json,
        cli::Command::Verify(a) => a.json,
        cli::Command::Inspect(a) => a.json,
    };
    let out = output::Output {
        json,
        log_format: cli.log_format,
        quiet: cli.quiet,
    };
    let progress = progress::Progress::new(cli.quiet || json);
    let result = match &cli.command {
        cli::Command::Assemble(a) => commands::assemble(a, out, &progress),
        cli::Command::Check(a) => commands::check(a, out),
        cli::Command::Verify(a) => commands::verify(a, out),
        cli::Command::Inspect(a) => commands::inspect(a, out),
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
