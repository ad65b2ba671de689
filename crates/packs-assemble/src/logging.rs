//! Logging setup: `tracing` to stderr, human-readable or JSON lines.

use tracing::level_filters::LevelFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber.
pub fn init(format: LogFormat, verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => LevelFilter::ERROR,
        (false, 0) => LevelFilter::INFO,
        (false, 1) => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only on a terminal: logs written to files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(level)
        .with_target(false);
    let _ = match format {
        LogFormat::Human => builder.without_time().try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
