//! What the Attune services (api, worker, sensor) share: their flags, logging
//! setup, how they stop ([`shutdown`]), and a small blocking client for the
//! API. The names of their environment variables ([`env`]), the exit codes
//! ([`exit`]) and the log settings are `attune-contract`'s, re-exported here.
//! The pack format is `attune-pack`'s; the HTTP server is `attune-api`'s.
//!
//! ```no_run
//! use attune_service::{Client, LogFormat, LogLevel, init_logging};
//! init_logging(LogFormat::Human, LogLevel::Info);
//! let api = Client::new("http://127.0.0.1:8080", "token");
//! let health: serde_json::Value = api.get("/health").unwrap();
//! ```

pub mod agent;
mod args;
mod client;
mod logging;
pub mod paths;
pub mod runtimes;
pub mod shutdown;
#[cfg(feature = "testing")]
pub mod testing;

pub use args::{DrainArgs, ServiceArgs};
pub use attune_contract::{LogFormat, LogLevel, Setting, env, exit};
pub use client::{ApiError, Client};
pub use logging::init_logging;
pub use paths::PathError;
pub use runtimes::Runtimes;
