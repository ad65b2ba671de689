//! Secret parameters at rest: the api's database files (`db`, `-wal`,
//! `-shm`) never hold a secret's bytes, while its execution waits, runs, or
//! after it ended; erased rows leave nothing in free space; and the api
//! refuses a wrong key or a key file others can read, with exit 3 and a
//! message that says what to do.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use attune_api::secrets::SecretsKey;
use attune_api::server::Limits;
use attune_api::store::Store;
use common::{post, repo_packs, start_with};

/// The files of database `db` (itself, `-wal`, `-shm`) that hold `needle`.
fn files_holding(db: &Path, needle: &[u8]) -> Vec<String> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| format!("{}{suffix}", db.display()))
        .filter(|f| {
            std::fs::read(f).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

/// The sealed secrets of execution `id`, read by a connection of our own.
fn sealed_of(db: &Path, id: i64) -> Option<Vec<u8>> {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT sealed_secrets FROM executions WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
}

/// A secret parameter was in the SQLite file in clear until its execution
/// ended, and in the file's free pages after. It is sealed now: no file of
/// the database holds it while the execution is requested, claimed and
/// running, or after it ended; and the erased sealed value is zeros, not
/// bytes, once the WAL is checkpointed (`secure_delete`).
#[test]
fn the_database_files_never_hold_a_secret_during_or_after_its_execution() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("attune.db");
    let db_text = db.to_str().unwrap();
    let key = SecretsKey::for_db(db_text, None, None).unwrap();
    assert!(
        tmp.path().join("attune.db.key").is_file(),
        "key beside the db"
    );
    let (addr, _state) = start_with(
        Store::open(db_text, key).unwrap(),
        &repo_packs(),
        Limits::default(),
    );
    let secret = format!("s3cr3t-{}-{:?}", std::process::id(), Instant::now());
    let (code, created) = post(
        addr,
        "/api/v1/executions",
        &format!(
            r#"{{"action_ref": "core.http_request", "parameters": {{"url": "http://127.0.0.1:9/", "auth_token": "{secret}"}}}}"#
        ),
    );
    assert_eq!(code, 201, "{created}");
    let id = created["data"]["id"].as_i64().unwrap();
    assert_eq!(created["data"]["parameters"]["auth_token"], "********");
    // A row after it in the same page: the secret's row, rewritten larger
    // at its claim and its end, moves and leaves its old cell as free space.
    let (code, _) = post(
        addr,
        "/api/v1/executions",
        r#"{"action_ref": "core.http_request", "parameters": {"url": "http://127.0.0.1:9/"}}"#,
    );
    assert_eq!(code, 201);
    assert_eq!(
        files_holding(&db, secret.as_bytes()),
        Vec::<String>::new(),
        "requested"
    );
    // The worker's claim, over the authenticated api, has it in clear.
    let (code, claim) = post(addr, "/api/v1/executions/claim", r#"{"worker": "w"}"#);
    assert_eq!(code, 200, "{claim}");
    assert_eq!(
        claim["execution"]["parameters"]["auth_token"],
        secret.as_str()
    );
    assert_eq!(
        files_holding(&db, secret.as_bytes()),
        Vec::<String>::new(),
        "running"
    );
    let sealed = sealed_of(&db, id).expect("sealed while it runs");
    assert!(!files_holding(&db, &sealed).is_empty());
    let report = serde_json::json!({"status": "succeeded", "exit_code": 0, "stdout": "o".repeat(600), "stderr": ""});
    let (code, done) = post(
        addr,
        &format!("/api/v1/executions/{id}/result"),
        &report.to_string(),
    );
    assert_eq!(code, 200, "{done}");
    assert_eq!(sealed_of(&db, id), None, "erased at the end");
    assert_eq!(
        files_holding(&db, secret.as_bytes()),
        Vec::<String>::new(),
        "ended"
    );
    // The erased sealed value: once the WAL is folded into the database and
    // emptied, no file holds its bytes (free space is zeroed).
    rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    assert_eq!(
        files_holding(&db, &sealed),
        Vec::<String>::new(),
        "free space"
    );
}

/// An older version kept secrets in clear in `secrets`; opening the store
/// seals them, and no file of the database holds them after.
#[test]
fn secrets_an_older_version_stored_in_clear_are_sealed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("a.db");
    {
        let old = rusqlite::Connection::open(&db).unwrap();
        old.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE executions (
                id INTEGER PRIMARY KEY, action_ref TEXT NOT NULL, parameters TEXT NOT NULL,
                status TEXT NOT NULL, rule_ref TEXT, event_id INTEGER, worker TEXT, exit_code INTEGER,
                stdout TEXT, stderr TEXT, stdout_truncated INTEGER NOT NULL DEFAULT 0,
                stderr_truncated INTEGER NOT NULL DEFAULT 0, result TEXT, error TEXT,
                created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT,
                lease_until INTEGER, secrets TEXT);
             INSERT INTO executions (action_ref, parameters, secrets, status, created_at)
             VALUES ('core.noop', '{}', '{\"t\":\"legacy-s3cr3t\"}', 'requested', 'now');",
        )
        .unwrap();
    }
    assert!(!files_holding(&db, b"legacy-s3cr3t").is_empty());
    let db_text = db.to_str().unwrap();
    let s = Store::open(db_text, SecretsKey::for_db(db_text, None, None).unwrap()).unwrap();
    assert_eq!(files_holding(&db, b"legacy-s3cr3t"), Vec::<String>::new());
    let c = s.claim("w").unwrap().execution.unwrap();
    assert_eq!(c.parameters["t"], "legacy-s3cr3t");
}

/// Runs the api binary with `args` until it exits (a hang guard kills it
/// after 30 s, which fails the caller's assertions); its exit code and stderr.
fn run_api(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_attune-api"))
        .args(["--listen", "127.0.0.1:0", "--token", "t", "--packs-dir"])
        .arg(dir)
        .args(["--packs-dev-dir"])
        .arg(dir)
        .args(args)
        .env_remove("ATTUNE_SECRETS_KEY")
        .env_remove("ATTUNE_SECRETS_KEY_FILE")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code(), stderr)
}

/// Arguments, environment, the exit code and what stderr says.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32, &'a str);

/// A key other than the database's own opened it and the sealed secrets
/// were lost at the claim; a key file anyone could read was used as it was.
/// The api now refuses both at startup, exit 3, naming the file and what to
/// do.
#[test]
fn a_wrong_key_or_a_key_file_others_can_read_stops_the_api_with_exit_3() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("attune.db");
    let db_text = db.to_str().unwrap();
    // A database with a secret sealed under the key in <db>.key.
    let store = Store::open(db_text, SecretsKey::for_db(db_text, None, None).unwrap()).unwrap();
    let secret = serde_json::json!({"auth_token": "x"});
    store
        .create_execution(
            "core.http_request",
            &serde_json::json!({}),
            Some(&secret),
            None,
            None,
        )
        .unwrap();
    drop(store);
    let other = tmp.path().join("other.key");
    std::fs::write(&other, format!("{}\n", "cd".repeat(32))).unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    let other_file = [
        "--db",
        db_text,
        "--secrets-key-file",
        other.to_str().unwrap(),
    ];
    let hex = "ab".repeat(32);
    let own = tmp.path().join("attune.db.key");
    let chmod = format!("run `chmod 600 {}`", own.display());
    let cases: [Case; 4] = [
        (
            &other_file,
            &[],
            3,
            "1 execution holds secrets sealed under another key than the secrets key file",
        ),
        (
            &["--db", db_text],
            &[("ATTUNE_SECRETS_KEY", &hex)],
            3,
            "another key than ATTUNE_SECRETS_KEY",
        ),
        // Its own key file, made readable by others below: refused, naming the chmod.
        (&["--db", db_text], &[], 3, &chmod),
        // Both a key and a key file: a usage error.
        (
            &other_file,
            &[("ATTUNE_SECRETS_KEY", &hex)],
            2,
            "cannot be used with",
        ),
    ];
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o644)).unwrap();
    for (args, env, code, says) in cases {
        let (got, stderr) = run_api(tmp.path(), args, env);
        assert_eq!(got, Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
