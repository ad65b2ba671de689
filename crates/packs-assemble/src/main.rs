//! The `packs-assemble` binary: parse the command line, run, exit.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    packs_assemble::run(packs_assemble::cli::Cli::parse())
}
