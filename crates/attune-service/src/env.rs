//! Environment variable names of the services, in one place.

/// API base URL, for example `http://api:8080`.
pub const API_URL: &str = "ATTUNE_API_URL";
/// The shared bearer token.
pub const API_TOKEN: &str = "ATTUNE_API_TOKEN";
/// The packs volume, read-only (default `/opt/attune/packs`).
pub const PACKS_DIR: &str = "ATTUNE_PACKS_DIR";
/// Developer packs, read-write (default `/opt/attune/packs.dev`).
pub const PACKS_DEV_DIR: &str = "ATTUNE_PACKS_DEV_DIR";
/// The SQLite database of the API (default `/opt/attune/data/attune.db`).
pub const DB: &str = "ATTUNE_DB";
/// Where the sensor service keeps sensor logs (default `/opt/attune/logs`).
pub const LOGS_DIR: &str = "ATTUNE_LOGS_DIR";
/// Address the API listens on (default `0.0.0.0:8080`).
pub const LISTEN: &str = "ATTUNE_API_LISTEN";
/// `error`, `warn`, `info`, `debug`, `trace`.
pub const LOG_LEVEL: &str = "ATTUNE_LOG_LEVEL";
/// `human` (or `pretty`) or `json`.
pub const LOG_FORMAT: &str = "ATTUNE_LOG_FORMAT";
/// Seconds a stopping service (SIGTERM, SIGINT) gives the work in flight to
/// finish: the api's requests, the worker's actions, the sensor service's
/// sensors (default [`DEFAULT_DRAIN_TIMEOUT`]; see [`crate::shutdown`]).
pub const DRAIN_TIMEOUT: &str = "ATTUNE_DRAIN_TIMEOUT";
/// The file holding the API's secrets key, 64 hex digits, mode 0600
/// (default `<ATTUNE_DB>.key`, generated on first start).
pub const SECRETS_KEY_FILE: &str = "ATTUNE_SECRETS_KEY_FILE";
/// The API's secrets key itself, 64 hex digits, instead of a key file.
pub const SECRETS_KEY: &str = "ATTUNE_SECRETS_KEY";

/// Default of [`PACKS_DIR`].
pub const DEFAULT_PACKS_DIR: &str = "/opt/attune/packs";
/// Default of [`PACKS_DEV_DIR`].
pub const DEFAULT_PACKS_DEV_DIR: &str = "/opt/attune/packs.dev";
/// Default of [`DB`].
pub const DEFAULT_DB: &str = "/opt/attune/data/attune.db";
/// Default of [`LOGS_DIR`].
pub const DEFAULT_LOGS_DIR: &str = "/opt/attune/logs";
/// Default of [`DRAIN_TIMEOUT`], in seconds: Docker's grace before SIGKILL
/// is 10 s too. Give a container a stop grace a few seconds longer than the
/// drain, so that what follows the deadline (the worker reporting an action it
/// killed) still happens.
pub const DEFAULT_DRAIN_TIMEOUT: &str = "10";
