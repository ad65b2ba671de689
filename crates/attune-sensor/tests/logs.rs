//! A sensor's output reaches the sensor service's own stdout, each line
//! prefixed with the sensor's ref (`docker compose logs sensor` shows the
//! timer sensor's lines), and its log file under `--logs-dir`, as before.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{no_rules_api, sensors};

#[test]
fn a_sensors_lines_reach_the_service_stdout_with_its_ref_and_its_log_file() {
    let tmp = tempfile::tempdir().unwrap();
    sensors(
        tmp.path(),
        &["a"],
        "#!/bin/sh\necho \"hello from $ATTUNE_SENSOR_REF\"\necho oops >&2\nexec sleep 300\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_attune-sensor"))
        .env_clear()
        .args([
            "--api-url",
            &no_rules_api(),
            "--token",
            "t",
            "--poll-seconds",
            "0.2",
        ])
        .arg("--packs-dir")
        .arg(tmp.path().join("vol"))
        .arg("--packs-dev-dir")
        .arg(tmp.path().join("dev"))
        .arg("--logs-dir")
        .arg(tmp.path().join("logs"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = vec![];
    while !(seen.iter().any(|l| l == "[p.a] hello from p.a")
        && seen.iter().any(|l| l == "[p.a] oops"))
    {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the sensor's lines never reached stdout: {seen:?}"),
        }
    }
    // SIGTERM: the service stops its sensors too (SIGKILL would leave the sleep).
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let log = std::fs::read_to_string(tmp.path().join("logs/sensors/p.a.log")).unwrap();
    assert!(
        log.contains("hello from p.a\n") && log.contains("oops\n"),
        "{log}"
    );
}
