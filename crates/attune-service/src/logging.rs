//! The services' logging: the one setup of `attune-contract` ([`attune_contract::log`]),
//! with the time on every line, since their logs are kept and collected.

use attune_contract::log::{self, LogFormat, LogLevel, Timestamps};

/// Installs the global subscriber: stderr, `level` and above, in `format`.
pub fn init_logging(format: LogFormat, level: LogLevel) {
    log::init(format, level, Timestamps::Always);
}
