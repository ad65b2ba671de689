//! `attune-api`: the pack registry (from the packs volume and packs.dev, via
//! `attune-pack`), events matched to rules, and executions claimed by workers,
//! over HTTP with a bearer token; stored in SQLite.
//!
//! It does not run actions (`attune-worker` does) or sensors (`attune-sensor`).

pub mod matching;
pub mod output;
pub mod params;
pub mod registry;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use attune_service::{LogFormat, LogLevel, PathError, env, paths};
use clap::Parser;

/// Serves the Attune API: packs, events, rules and executions.
///
/// Every /api/v1 route needs `Authorization: Bearer <ATTUNE_API_TOKEN>`; /health is open.
#[derive(Debug, Parser)]
#[command(name = "attune-api", version, after_help = attune_service::exit::help())]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = env::LISTEN, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// The bearer token clients must send.
    #[arg(long, env = env::API_TOKEN, hide_env_values = true)]
    pub token: String,
    /// SQLite database file, or `:memory:`.
    #[arg(long, env = env::DB, default_value = env::DEFAULT_DB)]
    pub db: String,
    /// File of the key that seals secret parameters in the database (64 hex
    /// digits, mode 0600), generated when missing [default: `<db>.key`].
    #[arg(long, env = env::SECRETS_KEY_FILE)]
    pub secrets_key_file: Option<PathBuf>,
    /// The secrets key itself, 64 hex digits, instead of a key file; prefer the
    /// environment variable (a flag shows in the process list).
    #[arg(long, env = env::SECRETS_KEY, hide_env_values = true, conflicts_with = "secrets_key_file")]
    pub secrets_key: Option<secrets::KeyText>,
    /// The packs volume (read-only).
    #[arg(long, env = env::PACKS_DIR, default_value = env::DEFAULT_PACKS_DIR)]
    pub packs_dir: PathBuf,
    /// Developer packs; a pack here overrides the volume's pack of the same ref.
    #[arg(long, env = env::PACKS_DEV_DIR, default_value = env::DEFAULT_PACKS_DEV_DIR)]
    pub packs_dev_dir: PathBuf,
    /// Seconds between checks of the volume's generation (reload when it changes).
    #[arg(long, env = env::PACKS_WATCH_SECONDS, default_value_t = 1.0)]
    pub watch_seconds: f64,
    /// Log format.
    #[arg(long, env = env::LOG_FORMAT, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Log level.
    #[arg(long, env = env::LOG_LEVEL, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
    /// Connections open at once; at the limit a new one takes the place of the idlest not in a handler (refused only when all are in one), and an eighth is kept for `/health` (others get 503).
    #[arg(long, env = env::API_MAX_CONNECTIONS, default_value_t = 512)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers; also how long an idle
    /// keep-alive connection stays open, and how long a write may wait for a
    /// client that reads nothing.
    #[arg(long, env = env::API_HEADER_TIMEOUT, default_value_t = 10)]
    pub header_timeout: u64,
    /// Seconds a client has to send a whole request body (then 408).
    #[arg(long, env = env::API_BODY_TIMEOUT, default_value_t = 30)]
    pub body_timeout: u64,
    /// Largest request body in bytes (then 413).
    #[arg(long, env = env::API_BODY_LIMIT, default_value_t = 4 << 20)]
    pub body_limit: usize,
    /// Check `GET /health` of the server at --listen and exit 0 (healthy) or 1:
    /// the container healthcheck, for images that hold no curl.
    #[arg(long)]
    pub healthcheck: bool,
    /// Stopping.
    #[command(flatten)]
    pub drain: attune_service::DrainArgs,
}

impl Args {
    /// Makes every path given to the API (the database unless `:memory:`, the
    /// packs directories) absolute against the current directory; called once,
    /// at startup.
    pub fn make_paths_absolute(&mut self) -> Result<(), PathError> {
        if self.db != ":memory:" {
            paths::make_absolute_str(&paths::flag_name("db", env::DB), &mut self.db)?;
        }
        if let Some(file) = &mut self.secrets_key_file {
            let name = paths::flag_name("secrets-key-file", env::SECRETS_KEY_FILE);
            paths::make_absolute(&name, file)?;
        }
        paths::make_packs_dirs_absolute(&mut self.packs_dir, &mut self.packs_dev_dir)
    }
}

/// `GET /health` on the port of `listen` over loopback; whether it answered 200.
pub fn healthcheck(listen: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], listen.port()));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut answer = String::new();
    s.write_all(request.as_bytes()).is_ok()
        && s.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}

/// Refuses paths that cannot work, before anything is created: a database
/// whose directory is missing (a typo would otherwise silently start an empty
/// database elsewhere) and a packs volume that does not exist.
pub fn check_paths(args: &Args) -> Result<(), String> {
    if args.db != ":memory:" {
        let parent = std::path::Path::new(&args.db)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !parent.is_dir() {
            return Err(format!(
                "--db {}: the directory {} does not exist; create it (or mount the data volume there), or pass --db :memory:",
                args.db,
                parent.display()
            ));
        }
    }
    if !args.packs_dir.is_dir() {
        return Err(format!(
            "--packs-dir {} does not exist or is not a directory; assemble the volume first (`packs-assemble assemble --out {}`; in Docker, the packs-init service)",
            args.packs_dir.display(),
            args.packs_dir.display()
        ));
    }
    Ok(())
}

/// Runs the server until SIGTERM or SIGINT, then drains it ([`server`]).
pub async fn serve(args: Args) -> Result<(), String> {
    if args.token.trim().is_empty() {
        return Err(format!("{} is empty; set a token", env::API_TOKEN));
    }
    let key = secrets::SecretsKey::for_db(
        &args.db,
        args.secrets_key_file.as_deref(),
        args.secrets_key.as_ref(),
    )
    .map_err(|e| e.to_string())?;
    let store = store::Store::open(&args.db, key)
        .map_err(|e| format!("failed to open database {}: {e}", args.db))?;
    let state = Arc::new(routes::AppState {
        registry: RwLock::new(Arc::new(registry::Registry::default())),
        store,
        token: args.token.clone(),
        packs_dir: args.packs_dir.clone(),
        dev_dir: args.packs_dev_dir.clone(),
        requested: Default::default(),
        finished: Default::default(),
    });
    state.reload();
    // Reload when the volume publishes a new generation.
    let watcher = state.clone();
    let period = Duration::from_secs_f64(args.watch_seconds.max(0.1));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let now = attune_pack::volume_generation(&watcher.packs_dir);
            if now != watcher.registry().generation {
                tracing::info!(generation = ?now, "the packs volume changed; reloading");
                let w = watcher.clone();
                let _ = tokio::task::spawn_blocking(move || w.reload()).await;
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("failed to listen on {}: {e}", args.listen))?;
    tracing::info!(listen = %args.listen, packs = %args.packs_dir.display(), dev = %args.packs_dev_dir.display(), "attune-api ready");
    let limits = server::Limits {
        max_connections: args.max_connections.max(1),
        header_timeout: Duration::from_secs(args.header_timeout.max(1)),
        body_timeout: Duration::from_secs(args.body_timeout.max(1)),
        body_limit: args.body_limit,
    };
    let stop =
        server::stop_signal().map_err(|e| format!("cannot handle SIGTERM and SIGINT: {e}"))?;
    let drain_timeout = args.drain.drain_timeout;
    let stopped = async move {
        stop.await;
        drain_timeout
    };
    server::serve(listener, routes::router(state, limits), limits, stopped)
        .await
        .map(drop)
        .map_err(|e| format!("server failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--db` in a missing directory created it silently; a missing
    /// `--packs-dir` was only a warning.
    #[test]
    fn missing_db_directory_and_packs_dir_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let args = |db: &str, packs: &std::path::Path| {
            Args::parse_from([
                "attune-api",
                "--token",
                "t",
                "--db",
                db,
                "--packs-dir",
                packs.to_str().unwrap(),
            ])
        };
        let typo = tmp.path().join("dtaa/attune.db");
        let e = check_paths(&args(typo.to_str().unwrap(), tmp.path())).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        assert!(!tmp.path().join("dtaa").exists(), "nothing created");
        let e = check_paths(&args(":memory:", &tmp.path().join("novol"))).unwrap_err();
        assert!(e.contains("--packs-dir") && e.contains("novol"), "{e}");
        let db = tmp.path().join("attune.db");
        check_paths(&args(db.to_str().unwrap(), tmp.path())).unwrap();
    }

    #[test]
    fn relative_db_and_packs_dirs_are_made_absolute() {
        let cwd = std::env::current_dir().unwrap();
        let parse = |extra: &[&str]| {
            let mut a = Args::try_parse_from(
                ["attune-api", "--token", "t", "--packs-dir", "./vol"]
                    .iter()
                    .chain(extra),
            )
            .unwrap();
            a.make_paths_absolute().map(|()| a)
        };
        let a = parse(&["--db", "data/attune.db", "--packs-dev-dir", "dev"]).unwrap();
        assert_eq!(std::path::Path::new(&a.db), cwd.join("data/attune.db"));
        assert_eq!(a.packs_dir, cwd.join("vol"));
        assert_eq!(a.packs_dev_dir, cwd.join("dev"));
        // `:memory:` is not a path.
        assert_eq!(parse(&["--db", ":memory:"]).unwrap().db, ":memory:");
        // An empty --db opened a temporary database SQLite deletes on close.
        let e = parse(&["--db", ""]).unwrap_err();
        assert!(e.to_string().contains("--db (ATTUNE_DB) is empty"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
}
