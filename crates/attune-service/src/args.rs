//! The command-line flags (and their environment variables) that the worker
//! and the sensor service share.

use std::path::PathBuf;

use crate::env;
use crate::logging::LogFormat;

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
    #[arg(long, env = env::LOG_FORMAT, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, env = env::LOG_LEVEL, default_value = "info")]
    pub log_level: String,
}

impl ServiceArgs {
    /// Installs logging as configured.
    pub fn init_logging(&self) {
        crate::init_logging(self.log_format, &self.log_level);
    }
}
