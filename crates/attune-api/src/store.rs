//! The embedded store: events and executions in SQLite (`ATTUNE_DB`, or
//! `:memory:`). One connection behind a mutex: every operation is short, and a
//! claim is atomic because nothing else runs between its select and update.
//!
//! Invariants:
//! - A `running` execution always has a lease: the claim sets one in the same
//!   statement that marks it running, and opening the store gives an expired
//!   lease to any `running` row without one (written by an older version), so
//!   the next claim requeues it.
//! - Secret parameters are stored apart (`sealed_secrets`), never in
//!   `parameters`, which holds [`REDACTED`] in their place; they are sealed
//!   under the [`SecretsKey`] (AES-256-GCM, a random nonce each), handed open
//!   only to the worker that claims the execution, and erased when it ends.
//!   `secure_delete` is on, so an erased value leaves zeros, not bytes, in
//!   the file's free space. Opening the store seals any clear `secrets` an
//!   older version left, and refuses a key that is not the one the database's
//!   secrets were sealed with.
//! - No execution is claimed forever: one whose lease ran out after
//!   [`MAX_CLAIMS`] claims ends `failed`, with the reason, instead of being
//!   requested again; one whose secrets do not open ends `failed` at its claim.

use std::sync::Mutex;

use crate::secrets::SecretsKey;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Execution states.
pub mod status {
    /// Waiting for a worker.
    pub const REQUESTED: &str = "requested";
    /// A worker runs it.
    pub const RUNNING: &str = "running";
    /// Exit code 0.
    pub const SUCCEEDED: &str = "succeeded";
    /// Non-zero exit, or it could not start.
    pub const FAILED: &str = "failed";
    /// Killed at its timeout.
    pub const TIMEOUT: &str = "timeout";
    /// The final states.
    pub const FINAL: [&str; 3] = [SUCCEEDED, FAILED, TIMEOUT];
}

/// A stored event.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Id.
    pub id: i64,
    /// Trigger type.
    pub trigger_ref: String,
    /// Payload.
    pub payload: Value,
    /// `rule_<ref>` for timer instances.
    pub trigger_instance_id: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// A stored execution.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Execution {
    /// Id.
    pub id: i64,
    /// The action.
    pub action_ref: String,
    /// Parameters after defaults.
    pub parameters: Value,
    /// requested, running, succeeded, failed or timeout.
    pub status: String,
    /// The rule that created it, if any.
    pub rule_ref: Option<String>,
    /// The event that created it, if any.
    pub event_id: Option<i64>,
    /// The worker that ran it.
    pub worker: Option<String>,
    /// Exit code.
    pub exit_code: Option<i64>,
    /// Standard output (bounded by the worker).
    pub stdout: Option<String>,
    /// Standard error (bounded by the worker).
    pub stderr: Option<String>,
    /// Whether stdout was cut.
    pub stdout_truncated: bool,
    /// Whether stderr was cut.
    pub stderr_truncated: bool,
    /// stdout parsed as JSON when the action's `output_format` is `json`.
    pub result: Option<Value>,
    /// Why it failed to run, when it did not start.
    pub error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339.
    pub finished_at: Option<String>,
}

/// What a worker reports.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Report {
    /// succeeded, failed or timeout.
    pub status: String,
    /// Exit code.
    pub exit_code: Option<i64>,
    /// Standard output.
    #[serde(default)]
    pub stdout: String,
    /// Standard error.
    #[serde(default)]
    pub stderr: String,
    /// Whether stdout was cut.
    #[serde(default)]
    pub stdout_truncated: bool,
    /// Whether stderr was cut.
    #[serde(default)]
    pub stderr_truncated: bool,
    /// Why it did not start.
    #[serde(default)]
    pub error: Option<String>,
}

/// Store failures.
#[derive(Debug)]
pub enum StoreError {
    /// No such row.
    NotFound,
    /// The change conflicts with the current state.
    Conflict(String),
    /// SQLite failed.
    Db(rusqlite::Error),
    /// The secrets key does not fit the database, or sealing failed.
    Key(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NotFound => f.write_str("not found"),
            StoreError::Conflict(m) | StoreError::Key(m) => f.write_str(m),
            StoreError::Db(e) => write!(f, "SQLite: {e}"),
        }
    }
}

impl From<crate::secrets::KeyError> for StoreError {
    fn from(e: crate::secrets::KeyError) -> Self {
        StoreError::Key(e.0)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e)
    }
}

/// The store.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    key: SecretsKey,
}

/// What a claim did: the execution it hands out, if any, and how many
/// executions it ended instead (their lease ran out [`MAX_CLAIMS`] times, or
/// their secrets did not open).
#[derive(Debug)]
pub struct Claim {
    /// The execution, with its secret parameters open.
    pub execution: Option<Execution>,
    /// Executions ended `failed` along the way.
    pub ended: usize,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA secure_delete = ON;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, trigger_ref TEXT NOT NULL, payload TEXT NOT NULL,
    trigger_instance_id TEXT, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS executions (
    id INTEGER PRIMARY KEY, action_ref TEXT NOT NULL, parameters TEXT NOT NULL,
    status TEXT NOT NULL, rule_ref TEXT, event_id INTEGER, worker TEXT, exit_code INTEGER,
    stdout TEXT, stderr TEXT, stdout_truncated INTEGER NOT NULL DEFAULT 0,
    stderr_truncated INTEGER NOT NULL DEFAULT 0, result TEXT, error TEXT,
    created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT);
CREATE INDEX IF NOT EXISTS executions_by_status ON executions(status, id);
CREATE TABLE IF NOT EXISTS rule_ids (id INTEGER PRIMARY KEY, rule_ref TEXT NOT NULL UNIQUE);
";

/// Added after the first schema; `ALTER TABLE` fails harmlessly when present.
/// (`secrets`, clear JSON, was written by older versions; it is sealed into
/// `sealed_secrets` at open and stays empty.)
const MIGRATIONS: &[&str] = &[
    "ALTER TABLE executions ADD COLUMN lease_until INTEGER",
    "ALTER TABLE executions ADD COLUMN secrets TEXT",
    "ALTER TABLE executions ADD COLUMN sealed_secrets BLOB",
    "ALTER TABLE executions ADD COLUMN claims INTEGER NOT NULL DEFAULT 0",
];

/// How many times one execution is claimed at most. When the lease of its
/// last claim runs out too (each worker died, was killed by the action, or
/// lost the api while running it), it ends `failed` with that reason instead
/// of being requested again: an execution that kills its worker cannot loop
/// forever. Three claims ride out a worker restart or two (executions run at
/// least once) without running a hostile one more than that.
pub const MAX_CLAIMS: i64 = 3;

/// The plain text of the `meta` row that tells whether a key is the
/// database's own: sealed under the key the first time the store opens.
const KEY_CHECK: &[u8] = b"attune-api secrets key check";

/// What a claim leases an execution for until [`Store::lease`] sets the
/// action's own time: set in the claim's own update, so a crash between the
/// two never leaves a running execution without a lease.
pub const CLAIM_LEASE_SECONDS: i64 = 660;

/// What secret parameters read as in every answer and in storage.
pub const REDACTED: &str = "********";

fn epoch_now() -> i64 {
    chrono::Utc::now().timestamp()
}

const EXECUTION_COLUMNS: &str = "id, action_ref, parameters, status, rule_ref, event_id, worker, exit_code, stdout, stderr, stdout_truncated, stderr_truncated, result, error, created_at, started_at, finished_at";

fn json_col(row: &Row, i: usize) -> rusqlite::Result<Option<Value>> {
    let text: Option<String> = row.get(i)?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

fn execution(row: &Row) -> rusqlite::Result<Execution> {
    Ok(Execution {
        id: row.get(0)?,
        action_ref: row.get(1)?,
        parameters: json_col(row, 2)?.unwrap_or(Value::Null),
        status: row.get(3)?,
        rule_ref: row.get(4)?,
        event_id: row.get(5)?,
        worker: row.get(6)?,
        exit_code: row.get(7)?,
        stdout: row.get(8)?,
        stderr: row.get(9)?,
        stdout_truncated: row.get(10)?,
        stderr_truncated: row.get(11)?,
        result: json_col(row, 12)?,
        error: row.get(13)?,
        created_at: row.get(14)?,
        started_at: row.get(15)?,
        finished_at: row.get(16)?,
    })
}

fn event_row(r: &Row) -> rusqlite::Result<Event> {
    Ok(Event {
        id: r.get(0)?,
        trigger_ref: r.get(1)?,
        payload: json_col(r, 2)?.unwrap_or(Value::Null),
        trigger_instance_id: r.get(3)?,
        created_at: r.get(4)?,
    })
}

/// One execution, on a connection already locked.
fn execution_by_id(conn: &Connection, id: i64) -> Result<Execution, StoreError> {
    conn.query_row(
        &format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ?1"),
        [id],
        execution,
    )
    .optional()?
    .ok_or(StoreError::NotFound)
}

/// Now, RFC 3339 UTC with milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Marks an unfinished execution `failed` with `reason`, erasing its
/// secrets, on a connection already locked; whether it was unfinished.
fn fail_on(conn: &Connection, id: i64, reason: &str) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE executions SET status = ?1, error = ?2, finished_at = ?3, lease_until = NULL,
         sealed_secrets = NULL, secrets = NULL WHERE id = ?4 AND status IN (?5, ?6)",
        params![
            status::FAILED,
            reason,
            now(),
            id,
            status::REQUESTED,
            status::RUNNING
        ],
    )?;
    Ok(n > 0)
}

/// Checks `key` against the database's key-check row (writing one the
/// first time), so a wrong key is refused at open, not at a claim. A key
/// that does not fit is refused while any execution holds secrets sealed
/// under the old one; with none pending nothing is lost, and the database
/// takes the new key.
fn check_key(conn: &Connection, key: &SecretsKey) -> Result<(), StoreError> {
    let check: Option<Vec<u8>> = conn
        .query_row(
            "SELECT value FROM meta WHERE name = 'secrets_key_check'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if check.is_some_and(|sealed| key.open(&sealed).is_ok_and(|plain| plain == KEY_CHECK)) {
        return Ok(());
    }
    let pending: i64 = conn.query_row(
        "SELECT COUNT(*) FROM executions WHERE sealed_secrets IS NOT NULL",
        [],
        |r| r.get(0),
    )?;
    if pending > 0 {
        return Err(StoreError::Key(format!(
            "{pending} {} secrets sealed under another key than {}; start the api with the key they were sealed with (its key file, or {}); if that key is lost, so are their secrets: move the database aside to start over",
            if pending == 1 {
                "execution holds"
            } else {
                "executions hold"
            },
            key.source(),
            attune_service::env::SECRETS_KEY
        )));
    }
    conn.execute(
        "INSERT OR REPLACE INTO meta (name, value) VALUES ('secrets_key_check', ?1)",
        [key.seal(KEY_CHECK)?],
    )?;
    Ok(())
}

/// Seals the clear `secrets` an older version left; then truncates the WAL,
/// whose old frames held them.
fn seal_legacy_secrets(conn: &Connection, key: &SecretsKey) -> Result<(), StoreError> {
    let clear: Vec<(i64, String)> = conn
        .prepare("SELECT id, secrets FROM executions WHERE secrets IS NOT NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    if clear.is_empty() {
        return Ok(());
    }
    for (id, text) in &clear {
        conn.execute(
            "UPDATE executions SET sealed_secrets = ?1, secrets = NULL WHERE id = ?2",
            params![key.seal(text.as_bytes())?, id],
        )?;
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    tracing::info!(
        executions = clear.len(),
        "sealed the secret parameters an older version stored in clear"
    );
    Ok(())
}

impl Store {
    /// Opens (creating) the database at `path`, its secrets sealed under
    /// `key`; `:memory:` keeps it in memory. Refuses a key other than the
    /// one the database's secrets were sealed with.
    pub fn open(path: &str, key: SecretsKey) -> Result<Store, StoreError> {
        let conn = if path == ":memory:" {
            Connection::open_in_memory()?
        } else {
            Connection::open(path)?
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        for m in MIGRATIONS {
            if let Err(e) = conn.execute(m, [])
                && !e.to_string().contains("duplicate column")
            {
                return Err(e.into());
            }
        }
        check_key(&conn, &key)?;
        seal_legacy_secrets(&conn, &key)?;
        // Running without a lease (an api killed between claim and lease, before
        // claims set one): expire it now, so the next claim requeues it.
        let orphans = conn.execute(
            "UPDATE executions SET lease_until = 0 WHERE status = ?1 AND lease_until IS NULL",
            [status::RUNNING],
        )?;
        if orphans > 0 {
            tracing::warn!(
                orphans,
                "running executions without a lease will be requested again"
            );
        }
        Ok(Store {
            conn: Mutex::new(conn),
            key,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores an event.
    pub fn insert_event(
        &self,
        trigger_ref: &str,
        payload: &Value,
        instance: Option<&str>,
    ) -> Result<Event, StoreError> {
        let created_at = now();
        let conn = self.conn();
        conn.execute(
            "INSERT INTO events (trigger_ref, payload, trigger_instance_id, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![trigger_ref, payload.to_string(), instance, created_at],
        )?;
        Ok(Event {
            id: conn.last_insert_rowid(),
            trigger_ref: trigger_ref.to_string(),
            payload: payload.clone(),
            trigger_instance_id: instance.map(str::to_string),
            created_at,
        })
    }

    /// The integer id of each rule ref, assigning new ones as needed: a rule
    /// keeps its id for as long as the database lives.
    pub fn rule_ids<'a>(
        &self,
        refs: impl IntoIterator<Item = &'a str>,
    ) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
        let conn = self.conn();
        let mut out = std::collections::BTreeMap::new();
        for r in refs {
            conn.execute("INSERT OR IGNORE INTO rule_ids (rule_ref) VALUES (?1)", [r])?;
            let id: i64 =
                conn.query_row("SELECT id FROM rule_ids WHERE rule_ref = ?1", [r], |row| {
                    row.get(0)
                })?;
            out.insert(r.to_string(), id);
        }
        Ok(out)
    }

    /// One event.
    pub fn event(&self, id: i64) -> Result<Event, StoreError> {
        self.conn()
            .query_row(
                "SELECT id, trigger_ref, payload, trigger_instance_id, created_at FROM events WHERE id = ?1",
                [id],
                event_row,
            )
            .optional()?
            .ok_or(StoreError::NotFound)
    }

    /// Events, newest first: (page, total).
    pub fn events(&self, offset: i64, limit: i64) -> Result<(Vec<Event>, i64), StoreError> {
        let conn = self.conn();
        let total: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
        let mut stmt = conn.prepare(
            "SELECT id, trigger_ref, payload, trigger_instance_id, created_at FROM events ORDER BY id DESC LIMIT ?1 OFFSET ?2",
        )?;
        let rows = stmt
            .query_map(params![limit, offset], event_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, total))
    }

    /// Creates a requested execution; `secrets` (an object of the secret
    /// parameters) is sealed and kept apart from `parameters`, which must
    /// hold them redacted.
    pub fn create_execution(
        &self,
        action_ref: &str,
        parameters: &Value,
        secrets: Option<&Value>,
        rule_ref: Option<&str>,
        event_id: Option<i64>,
    ) -> Result<Execution, StoreError> {
        let sealed = secrets
            .map(|s| self.key.seal(s.to_string().as_bytes()))
            .transpose()?;
        let id = {
            let conn = self.conn();
            conn.execute(
                "INSERT INTO executions (action_ref, parameters, sealed_secrets, status, rule_ref, event_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![action_ref, parameters.to_string(), sealed, status::REQUESTED, rule_ref, event_id, now()],
            )?;
            conn.last_insert_rowid()
        };
        self.execution(id)
    }

    /// One execution.
    pub fn execution(&self, id: i64) -> Result<Execution, StoreError> {
        execution_by_id(&self.conn(), id)
    }

    /// Executions, newest first, optionally by status and action: (page, total).
    pub fn executions(
        &self,
        status: Option<&str>,
        action_ref: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<Execution>, i64), StoreError> {
        let conn = self.conn();
        let filter = "(?1 IS NULL OR status = ?1) AND (?2 IS NULL OR action_ref = ?2)";
        let total: i64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM executions WHERE {filter}"),
            params![status, action_ref],
            |r| r.get(0),
        )?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE {filter} ORDER BY id DESC LIMIT ?3 OFFSET ?4"
        ))?;
        let rows = stmt
            .query_map(params![status, action_ref, limit, offset], execution)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, total))
    }

    /// Atomically moves the oldest requested execution to running for `worker`,
    /// with its secret parameters open, after putting back those whose lease
    /// expired (their worker died or lost contact): execution is at least
    /// once, never lost. One whose lease expired [`MAX_CLAIMS`] times, or
    /// whose secrets do not open, ends `failed` instead.
    pub fn claim(&self, worker: &str) -> Result<Claim, StoreError> {
        self.claim_where(worker, |_| true)
    }

    /// [`Store::claim`], of the oldest requested execution whose action ref
    /// `can_run` accepts (the worker has its runtime); the others wait for
    /// a worker that can run them.
    pub fn claim_where(
        &self,
        worker: &str,
        can_run: impl Fn(&str) -> bool,
    ) -> Result<Claim, StoreError> {
        let conn = self.conn();
        let mut ended = 0;
        let expired: Vec<(i64, i64)> = conn
            .prepare(
                "SELECT id, claims FROM executions
                 WHERE status = ?1 AND lease_until IS NOT NULL AND lease_until < ?2",
            )?
            .query_map(params![status::RUNNING, epoch_now()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        for (id, claims) in expired {
            if claims >= MAX_CLAIMS {
                let reason = format!(
                    "claimed {claims} times, and each time the lease ran out before its worker reported (the worker died, was killed, or lost the api while running it); not run again (at most {MAX_CLAIMS} claims)"
                );
                tracing::error!(execution = id, "{reason}");
                ended += usize::from(fail_on(&conn, id, &reason)?);
            } else {
                tracing::warn!(
                    execution = id,
                    claims,
                    "its worker did not report before its lease ran out; it is requested again"
                );
                conn.execute(
                    "UPDATE executions SET status = ?1, worker = NULL, started_at = NULL, lease_until = NULL WHERE id = ?2",
                    params![status::REQUESTED, id],
                )?;
            }
        }
        loop {
            // The oldest of each action, then the oldest this worker can run.
            let id: Option<i64> = conn
                .prepare(
                    "SELECT MIN(id), action_ref FROM executions WHERE status = ?1 GROUP BY action_ref ORDER BY 1",
                )?
                .query_map([status::REQUESTED], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .find(|(_, action)| can_run(action))
                .map(|(id, _)| id);
            let Some(id) = id else {
                return Ok(Claim {
                    execution: None,
                    ended,
                });
            };
            conn.execute(
                "UPDATE executions SET status = ?1, worker = ?2, started_at = ?3, lease_until = ?4, claims = claims + 1 WHERE id = ?5",
                params![status::RUNNING, worker, now(), epoch_now() + CLAIM_LEASE_SECONDS, id],
            )?;
            let mut x = execution_by_id(&conn, id)?;
            let sealed: Option<Vec<u8>> = conn.query_row(
                "SELECT sealed_secrets FROM executions WHERE id = ?1",
                [id],
                |r| r.get(0),
            )?;
            let Some(sealed) = sealed else {
                return Ok(Claim {
                    execution: Some(x),
                    ended,
                });
            };
            // Only the claiming worker sees the secret values.
            let opened = self.key.open(&sealed).map_err(|e| e.0).and_then(|plain| {
                serde_json::from_slice::<Value>(&plain).map_err(|e| e.to_string())
            });
            match (opened, &mut x.parameters) {
                (Ok(Value::Object(secrets)), Value::Object(p)) => {
                    p.extend(secrets);
                    return Ok(Claim {
                        execution: Some(x),
                        ended,
                    });
                }
                (why, _) => {
                    let why = why.err().unwrap_or_else(|| "not an object".into());
                    let reason = format!("its secret parameters cannot be read: {why}; not run");
                    tracing::error!(execution = id, "{reason}");
                    ended += usize::from(fail_on(&conn, id, &reason)?);
                }
            }
        }
    }

    /// Ends an unfinished execution `failed` with `reason`, its secrets
    /// erased; whether it was unfinished.
    pub fn fail(&self, id: i64, reason: &str) -> Result<bool, StoreError> {
        fail_on(&self.conn(), id, reason)
    }

    /// Gives a running execution's worker until `seconds` from now to report.
    /// Saturates: an action's `timeout` may be any `u64`.
    pub fn lease(&self, id: i64, seconds: u64) -> Result<(), StoreError> {
        let until = epoch_now().saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX));
        self.conn().execute(
            "UPDATE executions SET lease_until = ?1 WHERE id = ?2 AND status = ?3",
            params![until, id, status::RUNNING],
        )?;
        Ok(())
    }

    /// Records a worker's report; repeating the same final report is accepted (retries).
    pub fn finish(
        &self,
        id: i64,
        report: &Report,
        result: Option<&Value>,
    ) -> Result<Execution, StoreError> {
        if !status::FINAL.contains(&report.status.as_str()) {
            return Err(StoreError::Conflict(format!(
                "status `{}` is not one of {}",
                report.status,
                status::FINAL.join(", ")
            )));
        }
        let current = self.execution(id)?;
        if status::FINAL.contains(&current.status.as_str()) {
            return if current.status == report.status {
                Ok(current)
            } else {
                Err(StoreError::Conflict(format!(
                    "execution {id} already ended as {}",
                    current.status
                )))
            };
        }
        self.conn().execute(
            "UPDATE executions SET status = ?1, exit_code = ?2, stdout = ?3, stderr = ?4, stdout_truncated = ?5,
             stderr_truncated = ?6, result = ?7, error = ?8, finished_at = ?9, lease_until = NULL,
             sealed_secrets = NULL, secrets = NULL WHERE id = ?10",
            params![
                report.status,
                report.exit_code,
                report.stdout,
                report.stderr,
                report.stdout_truncated,
                report.stderr_truncated,
                result.map(Value::to_string),
                report.error,
                now(),
                id
            ],
        )?;
        self.execution(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mem() -> Store {
        Store::open(":memory:", SecretsKey::ephemeral().unwrap()).unwrap()
    }

    /// The store of the database file `db`, its key in `<db>.key`.
    fn file(db: &str) -> Store {
        Store::open(db, SecretsKey::for_db(db, None, None).unwrap()).unwrap()
    }

    #[test]
    fn claim_takes_each_execution_once_in_order() {
        let s = mem();
        let a = s
            .create_execution("core.noop", &json!({}), None, None, None)
            .unwrap();
        let b = s
            .create_execution("core.noop", &json!({}), None, None, None)
            .unwrap();
        assert_eq!(s.claim("w1").unwrap().execution.unwrap().id, a.id);
        assert_eq!(s.claim("w2").unwrap().execution.unwrap().id, b.id);
        assert!(s.claim("w1").unwrap().execution.is_none());
    }

    #[test]
    fn a_worker_is_handed_only_executions_it_can_run_and_the_rest_wait() {
        let s = mem();
        let py = s
            .create_execution("core.http_request", &json!({}), None, None, None)
            .unwrap();
        let sh = s
            .create_execution("core.echo", &json!({}), None, None, None)
            .unwrap();
        let shell_only = |a: &str| a != "core.http_request";
        assert_eq!(
            s.claim_where("shell", shell_only)
                .unwrap()
                .execution
                .unwrap()
                .id,
            sh.id
        );
        assert!(
            s.claim_where("shell", shell_only)
                .unwrap()
                .execution
                .is_none()
        );
        assert_eq!(s.execution(py.id).unwrap().status, status::REQUESTED);
        assert_eq!(s.claim("python").unwrap().execution.unwrap().id, py.id);
    }

    #[test]
    fn an_expired_lease_puts_the_execution_back() {
        let s = mem();
        let e = s
            .create_execution("core.sleep", &json!({}), None, None, None)
            .unwrap();
        assert_eq!(s.claim("dies").unwrap().execution.unwrap().id, e.id);
        s.lease(e.id, 3600).unwrap();
        assert!(
            s.claim("other").unwrap().execution.is_none(),
            "a live lease was taken away"
        );
        s.conn()
            .execute(
                "UPDATE executions SET lease_until = 0 WHERE id = ?1",
                [e.id],
            )
            .unwrap();
        let again = s.claim("other").unwrap().execution.unwrap();
        assert_eq!((again.id, again.worker.as_deref()), (e.id, Some("other")));
    }

    /// An api killed between claim and lease left an execution `running` with
    /// no lease, never requeued. The claim now leases in its own update, and
    /// opening the store expires lease-less running rows of older versions.
    #[test]
    fn a_claimed_execution_always_has_a_lease() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("a.db");
        let db = db.to_str().unwrap();
        let s = file(db);
        let e = s
            .create_execution("core.noop", &json!({}), None, None, None)
            .unwrap();
        s.claim("w").unwrap().execution.unwrap();
        let lease: Option<i64> = s
            .conn()
            .query_row(
                "SELECT lease_until FROM executions WHERE id = ?1",
                [e.id],
                |r| r.get(0),
            )
            .unwrap();
        assert!(lease.is_some_and(|l| l > epoch_now()), "{lease:?}");
        // A row as an older api left it after a crash:
        s.conn()
            .execute(
                "UPDATE executions SET lease_until = NULL WHERE id = ?1",
                [e.id],
            )
            .unwrap();
        drop(s);
        let s = file(db);
        let again = s
            .claim("w2")
            .unwrap()
            .execution
            .expect("requeued and claimed again");
        assert_eq!(again.id, e.id);
    }

    /// Secret parameters were stored in clear and returned by GET /executions.
    #[test]
    fn secrets_are_stored_apart_handed_to_the_claim_and_erased_at_the_end() {
        let s = mem();
        let e = s
            .create_execution(
                "core.http_request",
                &json!({"url": "http://x", "auth_token": REDACTED}),
                Some(&json!({"auth_token": "s3cr3t"})),
                None,
                None,
            )
            .unwrap();
        assert_eq!(e.parameters["auth_token"], REDACTED);
        let c = s.claim("w").unwrap().execution.unwrap();
        assert_eq!(c.parameters["auth_token"], "s3cr3t");
        assert_eq!(
            s.execution(e.id).unwrap().parameters["auth_token"],
            REDACTED
        );
        let ok = Report {
            status: "succeeded".into(),
            exit_code: Some(0),
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            error: None,
        };
        let done = s.finish(e.id, &ok, None).unwrap();
        assert_eq!(done.parameters["auth_token"], REDACTED);
        assert_eq!(sealed(&s, e.id), None);
    }

    /// The sealed secrets of execution `id`.
    fn sealed(s: &Store, id: i64) -> Option<Vec<u8>> {
        s.conn()
            .query_row(
                "SELECT sealed_secrets FROM executions WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap()
    }

    /// A requested execution with a secret parameter.
    fn with_secret(s: &Store) -> Execution {
        s.create_execution(
            "core.noop",
            &json!({}),
            Some(&json!({"t": "x"})),
            None,
            None,
        )
        .unwrap()
    }

    fn expire(s: &Store, id: i64) {
        s.conn()
            .execute("UPDATE executions SET lease_until = 0 WHERE id = ?1", [id])
            .unwrap();
    }

    /// An execution that kills its worker (or a claim no worker reads) was
    /// requested again at every lease expiry, forever. After MAX_CLAIMS
    /// claims it ends failed, with the reason.
    #[test]
    fn an_execution_whose_lease_runs_out_max_claims_times_ends_failed() {
        let s = mem();
        let e = with_secret(&s);
        for n in 1..=MAX_CLAIMS {
            let c = s.claim(&format!("w{n}")).unwrap();
            assert_eq!(c.execution.unwrap().id, e.id, "claim {n}");
            expire(&s, e.id);
        }
        let c = s.claim("w").unwrap();
        assert!(c.execution.is_none(), "claimed a fourth time");
        assert_eq!(c.ended, 1);
        let done = s.execution(e.id).unwrap();
        assert_eq!(done.status, status::FAILED);
        let why = done.error.unwrap();
        assert!(
            why.contains("claimed 3 times") && why.contains("not run again"),
            "{why}"
        );
        assert!(done.finished_at.is_some());
        assert_eq!(sealed(&s, e.id), None, "its secrets are erased");
        assert!(s.claim("w").unwrap().execution.is_none());
    }

    /// The database refuses a key other than the one its secrets were sealed
    /// with, by an error that names the key's source, never a panic.
    #[test]
    fn a_wrong_secrets_key_is_refused_at_open_naming_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("a.db");
        let db = db.to_str().unwrap();
        let s = file(db);
        with_secret(&s);
        drop(s);
        let other = SecretsKey::from_hex(&"ab".repeat(32), "ATTUNE_SECRETS_KEY").unwrap();
        let e = Store::open(db, other).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, StoreError::Key(_)), "{e:?}");
        assert!(
            text.contains(
                "1 execution holds secrets sealed under another key than ATTUNE_SECRETS_KEY"
            ),
            "{text}"
        );
        // The right key still opens it.
        let s = file(db);
        let x = s.claim("w").unwrap().execution.unwrap();
        assert_eq!(x.parameters["t"], "x");
        // With no secret pending, nothing is lost: another key is taken.
        s.fail(x.id, "done").unwrap();
        drop(s);
        let other = SecretsKey::from_hex(&"ab".repeat(32), "ATTUNE_SECRETS_KEY").unwrap();
        let s = Store::open(db, other).unwrap();
        with_secret(&s);
        assert_eq!(
            s.claim("w").unwrap().execution.unwrap().parameters["t"],
            "x"
        );
    }

    /// One sealed value that does not open (altered in the file) ended the
    /// claim in a 500 at every try; it now fails that execution only.
    #[test]
    fn a_secret_that_does_not_open_fails_its_execution_at_the_claim() {
        let s = mem();
        let bad = with_secret(&s);
        let good = s
            .create_execution("core.noop", &json!({}), None, None, None)
            .unwrap();
        s.conn()
            .execute("UPDATE executions SET sealed_secrets = x'00112233445566778899aabbccddeeff00' WHERE id = ?1", [bad.id])
            .unwrap();
        let c = s.claim("w").unwrap();
        assert_eq!((c.execution.unwrap().id, c.ended), (good.id, 1));
        let failed = s.execution(bad.id).unwrap();
        assert_eq!(failed.status, status::FAILED);
        assert!(failed.error.unwrap().contains("cannot be read"));
    }

    /// Upstream's sensor contract gives each rule an integer id; it must not
    /// change when the packs reload or the api restarts.
    #[test]
    fn rule_ids_are_integers_that_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("a.db");
        let s = file(db.to_str().unwrap());
        let first = s.rule_ids(["p.a", "p.b"]).unwrap();
        assert_ne!(first["p.a"], first["p.b"]);
        drop(s);
        let s = file(db.to_str().unwrap());
        let again = s.rule_ids(["p.c", "p.b", "p.a"]).unwrap();
        assert_eq!((again["p.a"], again["p.b"]), (first["p.a"], first["p.b"]));
        assert!(again["p.c"] > first["p.b"]);
    }

    #[test]
    fn finish_is_idempotent_but_not_rewritable() {
        let s = mem();
        let e = s
            .create_execution("core.echo", &json!({"message": "hi"}), None, None, None)
            .unwrap();
        s.claim("w").unwrap();
        let report = Report {
            status: "succeeded".into(),
            exit_code: Some(0),
            stdout: "hi\n".into(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            error: None,
        };
        let done = s.finish(e.id, &report, None).unwrap();
        assert_eq!(done.stdout.as_deref(), Some("hi\n"));
        assert!(s.finish(e.id, &report, None).is_ok());
        let failed = Report {
            status: "failed".into(),
            ..report
        };
        assert!(matches!(
            s.finish(e.id, &failed, None),
            Err(StoreError::Conflict(_))
        ));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T');
    }
}
