//! Bad configuration exits 2 naming the key; --help and --version teach.

use assert_cmd::Command;

fn sensor() -> Command {
    let mut c = Command::cargo_bin("attune-core-timer-sensor").unwrap();
    for (k, _) in std::env::vars() {
        if k.starts_with("ATTUNE_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn missing_api_url_exits_2_naming_it() {
    let out = sensor().env("ATTUNE_API_TOKEN", "t").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ATTUNE_API_URL: is not set"));
}

#[test]
fn malformed_triggers_exit_2_naming_the_key() {
    let out = sensor()
        .env("ATTUNE_API_URL", "http://127.0.0.1:9")
        .env("ATTUNE_API_TOKEN", "t")
        .env("ATTUNE_SENSOR_TRIGGERS", "[{\"id\": 1, \"config\": 5}]")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ATTUNE_SENSOR_TRIGGERS: entry 0: `config` must be an object"),
        "{err}"
    );
}

#[test]
fn https_without_tls_is_explained() {
    let out = sensor()
        .env("ATTUNE_API_URL", "https://api")
        .env("ATTUNE_API_TOKEN", "t")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no TLS stack"));
}

#[test]
fn stdin_config_names_an_unknown_key() {
    let out = sensor()
        .arg("--stdin-config")
        .write_stdin(r#"{"ATTUNE_API_URL": "http://x", "ATTUNE_TOKEN": "t"}"#)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ATTUNE_TOKEN: is not a setting"));
}

#[test]
fn help_and_version() {
    let out = sensor().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for key in [
        "ATTUNE_API_URL",
        "ATTUNE_SENSOR_TRIGGERS",
        "ATTUNE_SENSOR_RECONCILE_SECONDS",
        "--stdin-config",
    ] {
        assert!(text.contains(key), "--help does not mention {key}");
    }
    let out = sensor().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("attune-core-timer-sensor "));
    assert_eq!(
        sensor().arg("--bogus").output().unwrap().status.code(),
        Some(2)
    );
}

/// `--help | head` aborted with SIGABRT: `println!` panics on a broken pipe,
/// and the binary is built with `panic = "abort"`.
#[test]
fn help_into_a_closed_pipe_is_not_a_crash() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("attune-core-timer-sensor"))
        .arg("--help")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before the help is written
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
