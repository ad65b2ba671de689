//! The error type of every subcommand, and the exit code each kind maps to.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit codes: every binary's, defined once in `attune-contract`.
pub use attune_contract::exit;

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is wrong; the diagnostics were already reported.
    #[error("{count} error(s) in the input; {consequence}")]
    Invalid {
        /// How many errors.
        count: usize,
        /// What that means, for example "nothing was published".
        consequence: &'static str,
    },
    /// The command line is wrong.
    #[error("{0}")]
    Usage(String),
    /// An I/O operation on a named path failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// What was being done, readable after "failed to".
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Another environment failure (lock timeout, source changed while copying).
    #[error("{0}")]
    Environment(String),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Error::Invalid { .. } => exit::INPUT,
            Error::Usage(_) => exit::USAGE,
            Error::Io { .. } | Error::Environment(_) => exit::ENVIRONMENT,
        })
    }
}

/// Attaches what was being done and to which path to an I/O result.
pub trait IoContext<T> {
    /// Wraps the error as [`Error::Io`].
    fn ctx(self, action: &'static str, path: &Path) -> Result<T, Error>;
    /// The same, with the path computed only on error (for hot loops).
    fn ctx_with(self, action: &'static str, path: impl FnOnce() -> PathBuf) -> Result<T, Error>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, action: &'static str, path: &Path) -> Result<T, Error> {
        self.map_err(|source| Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        })
    }
    fn ctx_with(self, action: &'static str, path: impl FnOnce() -> PathBuf) -> Result<T, Error> {
        self.map_err(|source| Error::Io {
            action,
            path: path(),
            source,
        })
    }
}
