//! The contracts every Attune binary shares, each written once: the names of
//! the environment variables ([`env`]), the exit codes and their `--help`
//! text ([`exit`]), and the log settings with the one parser of their values
//! ([`log`]). It has no dependencies by default, so the static timer sensor
//! takes it as well as the services and packs-assemble; the `clap` feature
//! makes the log settings clap arguments, the `logging` feature adds the one
//! logging setup ([`log::init`]).
//!
//! It is not the pack format (`attune-pack`) nor what only the services share
//! (`attune-service`: API client, flags, shutdown), which re-exports it.
//!
//! ```
//! use attune_contract::{LogFormat, env, exit};
//! assert_eq!(env::LOG_FORMAT, "ATTUNE_LOG_FORMAT");
//! assert_eq!("pretty".parse(), Ok(LogFormat::Human));
//! assert!(exit::help().contains("\n  3  The environment failed"));
//! ```

#![deny(missing_docs)]

pub mod env;
pub mod exit;
pub mod log;

pub use log::{LogFormat, LogLevel, Setting, ValueError};
