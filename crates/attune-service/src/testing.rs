//! For the services' integration tests only (feature `testing`, enabled by
//! their dev-dependencies): a service binary run as a child process, with its
//! JSON log lines, a SIGTERM and an exit awaited under a hang guard.
//!
//! Every wait here is a hang guard ([`HANG`]), never a timed assertion.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long anything may take before a test calls it a hang.
pub const HANG: Duration = Duration::from_secs(60);

/// A service process; killed when dropped, if it still runs.
#[derive(Debug)]
pub struct Service {
    child: Child,
    logs: mpsc::Receiver<Value>,
}

impl Service {
    /// Spawns `cmd` (which should log JSON lines, `--log-format json`) with
    /// stdin and stdout null, reading its stderr: each line as JSON, or as a
    /// string when it is not JSON.
    pub fn spawn(cmd: &mut Command) -> Service {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the service starts");
        let (tx, logs) = mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().expect("piped"));
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(serde_json::from_str(&line).unwrap_or(Value::String(line)));
            }
        });
        Service { child, logs }
    }

    /// The next log line whose message starts with `prefix` (earlier lines
    /// are passed over).
    pub fn log(&self, prefix: &str) -> Value {
        let deadline = Instant::now() + HANG;
        while let Ok(v) = self
            .logs
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if v["message"].as_str().is_some_and(|m| m.starts_with(prefix)) {
                return v;
            }
        }
        panic!("the service never logged `{prefix}...`");
    }

    /// Sends it SIGTERM.
    pub fn sigterm(&self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM sent");
    }

    /// Waits for it to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(started.elapsed() < HANG, "the service did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `path` to exist (a sign from a script under test).
pub fn wait_for(path: &Path) {
    let started = Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed() < HANG,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` (one the test knows, e.g. written by its script) is
/// alive: a zombie is not.
pub fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        !state.is_some_and(|s| s.starts_with('Z') || s.starts_with('X'))
    })
}
