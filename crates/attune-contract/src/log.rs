//! The log settings every binary accepts (`ATTUNE_LOG_FORMAT`,
//! `ATTUNE_LOG_LEVEL`, `--log-format`, `--log-level`), parsed by one parser
//! whatever reads them (clap with the `clap` feature, the timer sensor by
//! hand), and, with the `logging` feature, the one logging setup: `tracing`
//! to stderr, human or JSON lines.

use std::fmt;
use std::str::FromStr;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Readable lines (colour only on a terminal).
    Human,
    /// One JSON object per line.
    Json,
}

/// Maximum log level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// What happens, in a line per step (the default).
    Info,
    /// Details for a developer.
    Debug,
    /// Everything.
    Trace,
}

/// A setting with a fixed set of spellings, matched without regard to case.
pub trait Setting: Copy + PartialEq + Send + Sync + 'static {
    /// Every accepted spelling and its value; the first spelling of a value is
    /// its name.
    const VALUES: &'static [(&'static str, Self)];

    /// The value's name (its first spelling).
    fn name(self) -> &'static str {
        Self::VALUES
            .iter()
            .find(|(_, v)| *v == self)
            .map(|(n, _)| *n)
            .expect("every value has a spelling")
    }
}

impl Setting for LogFormat {
    const VALUES: &'static [(&'static str, Self)] = &[
        ("human", LogFormat::Human),
        ("pretty", LogFormat::Human),
        ("json", LogFormat::Json),
    ];
}

impl Setting for LogLevel {
    const VALUES: &'static [(&'static str, Self)] = &[
        ("error", LogLevel::Error),
        ("warn", LogLevel::Warn),
        ("warning", LogLevel::Warn),
        ("info", LogLevel::Info),
        ("debug", LogLevel::Debug),
        ("trace", LogLevel::Trace),
    ];
}

/// A value that is not one of a setting's spellings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueError {
    /// The value as given.
    pub value: String,
    /// The accepted spellings.
    pub expected: Vec<&'static str>,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not one of {}",
            self.value,
            self.expected.join(", ")
        )
    }
}

impl std::error::Error for ValueError {}

/// The one parser of every setting: a spelling of [`Setting::VALUES`], in any
/// case, surrounding spaces ignored.
pub fn parse<T: Setting>(text: &str) -> Result<T, ValueError> {
    let wanted = text.trim();
    T::VALUES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(wanted))
        .map(|(_, v)| *v)
        .ok_or_else(|| ValueError {
            value: text.to_string(),
            expected: T::VALUES.iter().map(|(n, _)| *n).collect(),
        })
}

impl FromStr for LogFormat {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        parse(s)
    }
}

impl FromStr for LogLevel {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        parse(s)
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(feature = "clap")]
mod clap_parser {
    use std::marker::PhantomData;

    use clap::builder::{PossibleValue, TypedValueParser, ValueParserFactory};

    use super::{LogFormat, LogLevel, Setting};

    /// clap's parser of a [`Setting`]: [`super::parse`], and its spellings
    /// for `--help`.
    #[derive(Clone, Copy, Debug)]
    pub struct SettingParser<T>(PhantomData<T>);

    impl<T: Setting> TypedValueParser for SettingParser<T> {
        type Value = T;

        fn parse_ref(
            &self,
            cmd: &clap::Command,
            arg: Option<&clap::Arg>,
            value: &std::ffi::OsStr,
        ) -> Result<T, clap::Error> {
            let text = value.to_string_lossy();
            super::parse(&text).map_err(|e| {
                let arg = arg.map_or_else(|| "the value".to_string(), |a| format!("'{a}'"));
                clap::Error::raw(
                    clap::error::ErrorKind::InvalidValue,
                    format!("invalid value for {arg}: {e}\n"),
                )
                .with_cmd(cmd)
            })
        }

        fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
            Some(Box::new(
                T::VALUES.iter().map(|(n, _)| PossibleValue::new(*n)),
            ))
        }
    }

    impl ValueParserFactory for LogFormat {
        type Parser = SettingParser<LogFormat>;
        fn value_parser() -> Self::Parser {
            SettingParser(PhantomData)
        }
    }

    impl ValueParserFactory for LogLevel {
        type Parser = SettingParser<LogLevel>;
        fn value_parser() -> Self::Parser {
            SettingParser(PhantomData)
        }
    }
}

#[cfg(feature = "clap")]
pub use clap_parser::SettingParser;

/// Whether human lines start with the time (JSON lines always carry it).
#[cfg(feature = "logging")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timestamps {
    /// Logs kept in files and collected from containers: the services, sensors.
    Always,
    /// A command run at a terminal (packs-assemble): its human lines are short.
    JsonOnly,
}

#[cfg(feature = "logging")]
impl From<LogLevel> for tracing::Level {
    fn from(level: LogLevel) -> tracing::Level {
        match level {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

/// Installs the global `tracing` subscriber: stderr, `level` and above, in
/// `format`; a second call changes nothing.
#[cfg(feature = "logging")]
pub fn init(format: LogFormat, level: LogLevel, timestamps: Timestamps) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only on a terminal: logs written to files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(tracing::Level::from(level))
        .with_target(false);
    let _ = match (format, timestamps) {
        (LogFormat::Human, Timestamps::Always) => builder.try_init(),
        (LogFormat::Human, Timestamps::JsonOnly) => builder.without_time().try_init(),
        (LogFormat::Json, _) => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses_in_any_case_and_names_round_trip() {
        assert_eq!("pretty".parse(), Ok(LogFormat::Human));
        assert_eq!(" JSON ".parse(), Ok(LogFormat::Json));
        assert_eq!("Warning".parse(), Ok(LogLevel::Warn));
        for (n, v) in LogFormat::VALUES {
            assert_eq!(parse::<LogFormat>(n), Ok(*v));
            assert_eq!(parse::<LogFormat>(&v.to_string()), Ok(*v));
        }
        for (n, v) in LogLevel::VALUES {
            assert_eq!(parse::<LogLevel>(n), Ok(*v));
            assert_eq!(parse::<LogLevel>(&v.to_string()), Ok(*v));
        }
        assert_eq!(LogFormat::Human.to_string(), "human");
        assert_eq!(LogLevel::Warn.to_string(), "warn");
    }

    #[test]
    fn a_wrong_value_names_itself_and_every_spelling() {
        let e = "yaml".parse::<LogFormat>().unwrap_err();
        assert_eq!(e.to_string(), "`yaml` is not one of human, pretty, json");
        let e = "verbose".parse::<LogLevel>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`verbose` is not one of error, warn, warning, info, debug, trace"
        );
    }

    #[cfg(feature = "clap")]
    #[test]
    fn clap_parses_with_the_same_parser_and_lists_the_spellings() {
        use clap::{CommandFactory, Parser};
        #[derive(Debug, Parser)]
        struct Cli {
            #[arg(long, default_value_t = LogFormat::Human)]
            log_format: LogFormat,
            #[arg(long, default_value_t = LogLevel::Info)]
            log_level: LogLevel,
        }
        let cli =
            Cli::try_parse_from(["x", "--log-format", "Pretty", "--log-level", "TRACE"]).unwrap();
        assert_eq!(
            (cli.log_format, cli.log_level),
            (LogFormat::Human, LogLevel::Trace)
        );
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(
            (cli.log_format, cli.log_level),
            (LogFormat::Human, LogLevel::Info)
        );
        let e = Cli::try_parse_from(["x", "--log-format", "yaml"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        let text = e.to_string();
        assert!(
            text.contains("--log-format")
                && text.contains("`yaml` is not one of human, pretty, json"),
            "{text}"
        );
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("human") && help.contains("pretty") && help.contains("json"),
            "{help}"
        );
    }
}
