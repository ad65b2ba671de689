//! The command-line flags (and their environment variables) that the worker
//! and the sensor service share, and the drain flag all three services take.

use std::path::PathBuf;
use std::time::Duration;

use crate::env;
use crate::paths::{self, PathError};
use crate::{LogFormat, LogLevel};

/// API, packs and logging settings of a service that talks to the API.
#[derive(Clone, Debug, clap::Args)]
pub struct ServiceArgs {
    /// API base URL.
    #[arg(long, env = env::API_URL, default_value = "http://127.0.0.1:8080")]
    pub api_url: String,
    /// Bearer token for the API.
    #[arg(long, env = env::API_TOKEN, hide_env_values = true)]
    pub token: String,
    /// The packs volume (read-only).
    #[arg(long, env = env::PACKS_DIR, default_value = env::DEFAULT_PACKS_DIR)]
    pub packs_dir: PathBuf,
    /// Developer packs; a pack here overrides the volume's pack of the same ref.
    #[arg(long, env = env::PACKS_DEV_DIR, default_value = env::DEFAULT_PACKS_DEV_DIR)]
    pub packs_dev_dir: PathBuf,
    /// Log format.
    #[arg(long, env = env::LOG_FORMAT, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Log level.
    #[arg(long, env = env::LOG_LEVEL, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
    /// Stopping.
    #[command(flatten)]
    pub drain: DrainArgs,
}

/// How long a stopping service waits for its work in flight ([`crate::shutdown`]).
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct DrainArgs {
    /// Seconds the work in flight at SIGTERM or SIGINT (the api's requests,
    /// the worker's actions, the sensor service's sensors) has to finish;
    /// then it is cut (an action cut is reported failed), and the service
    /// exits 0 with a warning that says what was cut.
    #[arg(
        long,
        env = env::DRAIN_TIMEOUT,
        value_name = "SECONDS",
        default_value = env::DEFAULT_DRAIN_TIMEOUT,
        value_parser = crate::shutdown::parse_seconds
    )]
    pub drain_timeout: Duration,
}

impl ServiceArgs {
    /// Makes the packs directories absolute against the current directory
    /// ([`crate::paths`]); called once, at startup, before they are used.
    pub fn make_paths_absolute(&mut self) -> Result<(), PathError> {
        paths::make_packs_dirs_absolute(&mut self.packs_dir, &mut self.packs_dev_dir)
    }

    /// Installs logging as configured.
    pub fn init_logging(&self) {
        crate::init_logging(self.log_format, self.log_level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::Path;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        service: ServiceArgs,
    }

    /// An unknown level was taken silently as `info` (the timer sensor
    /// refused it): a typo in ATTUNE_LOG_LEVEL hid the debug logs asked for.
    #[test]
    fn a_misspelt_log_level_is_refused_naming_the_spellings() {
        let e = Cli::try_parse_from(["x", "--token", "t", "--log-level", "verbose"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        assert!(
            e.to_string()
                .contains("`verbose` is not one of error, warn, warning, info, debug, trace"),
            "{e}"
        );
        let cli = Cli::try_parse_from([
            "x",
            "--token",
            "t",
            "--log-level",
            "DEBUG",
            "--log-format",
            "pretty",
        ])
        .unwrap();
        assert_eq!(cli.service.log_level, LogLevel::Debug);
        assert_eq!(cli.service.log_format, LogFormat::Human);
    }

    #[test]
    fn relative_packs_dirs_are_made_absolute() {
        let cwd = std::env::current_dir().unwrap();
        let mut cli = Cli::try_parse_from([
            "x",
            "--token",
            "t",
            "--packs-dir",
            "vol",
            "--packs-dev-dir",
            "./dev/",
        ])
        .unwrap();
        cli.service.make_paths_absolute().unwrap();
        assert_eq!(cli.service.packs_dir, cwd.join("vol"));
        assert_eq!(cli.service.packs_dev_dir, cwd.join("dev"));
        // The defaults are absolute already, and stay as they are.
        let mut cli = Cli::try_parse_from(["x", "--token", "t"]).unwrap();
        cli.service.make_paths_absolute().unwrap();
        assert_eq!(cli.service.drain.drain_timeout, Duration::from_secs(10));
        assert_eq!(cli.service.packs_dir, Path::new(env::DEFAULT_PACKS_DIR));
        assert_eq!(
            cli.service.packs_dev_dir,
            Path::new(env::DEFAULT_PACKS_DEV_DIR)
        );
    }
}
