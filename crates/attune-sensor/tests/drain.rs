//! The `attune-sensor` binary stopped by SIGTERM: it forwards SIGTERM to every
//! sensor at once, waits for them up to `ATTUNE_DRAIN_TIMEOUT`, SIGKILLs the
//! stragglers' process groups and exits 0.
//!
//! It stopped sensors one after the other, each with a fixed 2 s grace: a
//! sensor that needed longer to spool its events (the timer sensor writes them
//! on SIGTERM) was killed mid-write, and the last sensor got its SIGTERM only
//! after every other one had had its grace.

mod common;

use std::path::Path;
use std::process::Command;

use attune_service::testing::{Service, alive, wait_for};
use common::{no_rules_api, sensors};

/// The service on `dir`'s packs with `ATTUNE_DRAIN_TIMEOUT` at `drain` (set in
/// the environment: the flag is new).
fn start(dir: &Path, drain: &str) -> Service {
    Service::spawn(
        Command::new(env!("CARGO_BIN_EXE_attune-sensor"))
            .env_clear()
            .env("ATTUNE_DRAIN_TIMEOUT", drain)
            .args(["--api-url", &no_rules_api(), "--token", "t"])
            .args(["--log-format", "json", "--poll-seconds", "0.2"])
            .arg("--packs-dir")
            .arg(dir.join("vol"))
            .arg("--packs-dev-dir")
            .arg(dir.join("dev"))
            .arg("--logs-dir")
            .arg(dir.join("logs")),
    )
}

/// SIGTERM to the service, and its exit, which must be 0.
fn stop(service: &mut Service) {
    service.sigterm();
    let status = service.wait_exit();
    assert!(status.success(), "{status}");
}

/// Each sensor, on SIGTERM, waits until the other has had its SIGTERM too,
/// then writes its spool and exits: stopping them one after the other, a
/// sensor waits for the other forever and is killed without its spool.
#[test]
fn sensor_service_forwards_sigterm_to_its_sensors() {
    let tmp = tempfile::tempdir().unwrap();
    let script = r#"#!/bin/sh
spool="$ATTUNE_SENSOR_SPOOL"
dir=$(dirname "$spool")
on_term() {
    touch "$spool.term"
    while [ ! -e "$dir/p.a.spool.jsonl.term" ] || [ ! -e "$dir/p.b.spool.jsonl.term" ]; do
        sleep 0.05
    done
    echo spooled > "$spool"
    exit 0
}
trap on_term TERM
touch "$spool.ready"
while :; do sleep 1 & wait $!; done
"#;
    sensors(tmp.path(), &["a", "b"], script);
    let mut service = start(tmp.path(), "30");
    let dir = tmp.path().join("logs/sensors");
    for s in ["p.a", "p.b"] {
        wait_for(&dir.join(format!("{s}.spool.jsonl.ready")));
    }
    stop(&mut service);
    for s in ["p.a", "p.b"] {
        let spool = std::fs::read_to_string(dir.join(format!("{s}.spool.jsonl")));
        assert_eq!(spool.ok().as_deref(), Some("spooled\n"), "{s}");
    }
    assert_eq!(service.log("stopping")["in_flight"], 2);
    assert_eq!(service.log("stopped")["cut"], 0);
}

/// A sensor that ignores SIGTERM, and what it started, are killed at the
/// deadline; the service still exits 0, saying so.
#[test]
fn sensor_service_kills_sensors_past_the_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let script =
        "#!/bin/sh\ntrap '' TERM\nsleep 300 &\necho $$ $! > \"$ATTUNE_SENSOR_SPOOL.pids\"\nwait\n";
    sensors(tmp.path(), &["a"], script);
    let mut service = start(tmp.path(), "0.5");
    let pids = tmp.path().join("logs/sensors/p.a.spool.jsonl.pids");
    wait_for(&pids);
    stop(&mut service);
    let pids = std::fs::read_to_string(pids).unwrap();
    assert_eq!(pids.split_whitespace().count(), 2, "{pids}");
    for pid in pids.split_whitespace() {
        assert!(!alive(pid), "process {pid} of the sensor survived");
    }
    let stopped = service.log("stopped");
    assert_eq!(stopped["cut"], 1, "{stopped}");
    assert_eq!(stopped["level"], "WARN", "{stopped}");
}
