//! Logging setup for the services: `tracing` to stderr, human or JSON lines.

use tracing::Level;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines.
    #[value(alias = "pretty")]
    Human,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber; `level` is `error` ... `trace` (unknown: info).
pub fn init_logging(format: LogFormat, level: &str) {
    let level = match level.to_ascii_lowercase().as_str() {
        "error" => Level::ERROR,
        "warn" | "warning" => Level::WARN,
        "debug" => Level::DEBUG,
        "trace" => Level::TRACE,
        _ => Level::INFO,
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only on a terminal: logs written to files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(level)
        .with_target(false);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
