//! The `attune-worker` binary stopped by SIGTERM while it runs an action,
//! against a stand-in API: the action finishes within `ATTUNE_DRAIN_TIMEOUT`
//! and is reported; past the deadline its process group is killed and the
//! execution is reported failed, "worker stopped". Either way the worker
//! exits 0 and every claimed execution has a result.
//!
//! Before, the worker waited for a running action however long it took (up to
//! its timeout, 600 s by default), well past any container stop grace, after
//! which the SIGKILL lost the result.

mod support;

use std::path::PathBuf;
use std::sync::mpsc;

use attune_service::testing::{HANG, Service, alive, wait_for};
use serde_json::{Value, json};
use support::{claim, fake_api};

/// A worker running execution 1, action `a.sh` = `script` (declared timeout
/// 600 s), with `ATTUNE_DRAIN_TIMEOUT` at `drain` (set in the environment:
/// the flag is new), SIGTERMed once the script has touched `$0.started`.
struct Stopping {
    worker: Service,
    results: mpsc::Receiver<(i64, Value)>,
    /// The script's path; its signs are files next to it.
    script: PathBuf,
    _dir: tempfile::TempDir,
}

impl Stopping {
    /// The report of execution 1.
    fn report(&self) -> Value {
        let (id, report) = self.results.recv_timeout(HANG).expect("a result");
        assert_eq!(id, 1);
        report
    }
}

fn sigterm_while_running(script: &str, drain: &str) -> Stopping {
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol");
    let path = vol.join("demo/actions/a.sh");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, script).unwrap();
    let mut c = claim(1, "a.sh", "volume");
    c["action"]["timeout"] = json!(600);
    let (url, results) = fake_api(vec![c]);
    let worker = Service::spawn(
        support::worker(&url)
            .arg("--packs-dir")
            .arg(&vol)
            .env("ATTUNE_DRAIN_TIMEOUT", drain)
            .env("ATTUNE_LOG_FORMAT", "json"),
    );
    wait_for(&path.with_extension("sh.started"));
    worker.sigterm();
    Stopping {
        worker,
        results,
        script: path,
        _dir: dir,
    }
}

/// The action is released only once the worker has logged that it is
/// stopping, so the SIGTERM certainly came while it ran.
#[test]
fn sigterm_lets_the_running_action_finish() {
    let mut s = sigterm_while_running(
        "#!/bin/sh\ntouch \"$0.started\"\nwhile [ ! -e \"$0.go\" ]; do sleep 0.05; done\necho finished\n",
        "30",
    );
    let stopping = s.worker.log("stopping");
    std::fs::write(s.script.with_extension("sh.go"), "").unwrap();
    let report = s.report();
    assert_eq!(report["status"], "succeeded", "{report}");
    assert_eq!(report["stdout"], "finished\n", "{report}");
    assert!(s.worker.wait_exit().success());
    assert_eq!(stopping["in_flight"], 1, "{stopping}");
    assert_eq!(s.worker.log("stopped")["cut"], 0);
}

#[test]
fn sigterm_past_the_deadline_fails_the_execution() {
    let mut s = sigterm_while_running(
        "#!/bin/sh\nsleep 300 &\necho $$ $! > \"$0.pids\"\necho partial\ntouch \"$0.started\"\nwait\n",
        "0.5",
    );
    // At the drain deadline, not at the action's timeout.
    let report = s.report();
    assert_eq!(report["status"], "failed", "{report}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("worker stopped") && error.contains("--drain-timeout"),
        "{report}"
    );
    // What the action wrote before is kept.
    assert_eq!(report["stdout"], "partial\n", "{report}");
    assert!(s.worker.wait_exit().success());
    let pids = std::fs::read_to_string(s.script.with_extension("sh.pids")).unwrap();
    for pid in pids.split_whitespace() {
        assert!(!alive(pid), "process {pid} of the action survived");
    }
    let stopped = s.worker.log("stopped");
    assert_eq!(stopped["cut"], 1, "{stopped}");
}
