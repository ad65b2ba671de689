//! What the Attune services (api, worker, sensor) share: the names of their
//! environment variables, logging setup, how they stop ([`shutdown`]), and a
//! small blocking client for the API. The pack format is `attune-pack`'s; the HTTP server is `attune-api`'s.
//!
//! ```no_run
//! use attune_service::{Client, LogFormat, init_logging};
//! init_logging(LogFormat::Human, "info");
//! let api = Client::new("http://127.0.0.1:8080", "token");
//! let health: serde_json::Value = api.get("/health").unwrap();
//! ```

mod args;
mod client;
pub mod env;
mod logging;
pub mod paths;
pub mod shutdown;
#[cfg(feature = "testing")]
pub mod testing;

pub use args::{DrainArgs, ServiceArgs};
pub use client::{ApiError, Client};
pub use logging::{LogFormat, init_logging};
pub use paths::PathError;
