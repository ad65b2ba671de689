//! Logging setup: `-v`, `-vv` and `-q` as a level for the one setup of
//! `attune-contract` ([`attune_contract::log::init`]); human lines without
//! the time, since they are read at a terminal.

use attune_contract::log::{self, LogFormat, LogLevel, Timestamps};

/// Installs the global subscriber.
pub fn init(format: LogFormat, verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => LogLevel::Error,
        (false, 0) => LogLevel::Info,
        (false, 1) => LogLevel::Debug,
        _ => LogLevel::Trace,
    };
    log::init(format, level, Timestamps::JsonOnly);
}
