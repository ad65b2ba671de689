//! Running one action: the entry point from the packs volume (or packs.dev),
//! parameters on stdin or in a file, non-secret ones also as `ATTUNE_<NAME>`,
//! bounded output capture, and a timeout that kills the whole process group.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use attune_pack::{Action, ParameterDelivery, ParameterFormat, RunnerType};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What the API hands a worker with a claimed execution.
#[derive(Clone, Debug, Deserialize)]
pub struct Claimed {
    /// The execution (`id`, `action_ref`, `parameters`, ...).
    pub execution: ClaimedExecution,
    /// The action definition.
    pub action: Action,
    /// The pack.
    pub pack_ref: String,
    /// `volume` or `dev`.
    pub source: String,
}

/// The execution fields a worker uses.
#[derive(Clone, Debug, Deserialize)]
pub struct ClaimedExecution {
    /// Id.
    pub id: i64,
    /// The action.
    pub action_ref: String,
    /// Parameters, defaults applied.
    pub parameters: Value,
}

/// The result sent back to the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// succeeded, failed or timeout.
    pub status: String,
    /// Exit code, when it exited.
    pub exit_code: Option<i64>,
    /// Captured standard output.
    pub stdout: String,
    /// Captured standard error.
    pub stderr: String,
    /// Whether stdout was cut at the limit.
    pub stdout_truncated: bool,
    /// Whether stderr was cut at the limit.
    pub stderr_truncated: bool,
    /// Why it could not start.
    pub error: Option<String>,
}

impl Report {
    fn not_started(error: String) -> Report {
        Report {
            status: "failed".into(),
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            error: Some(error),
        }
    }
}

/// Where actions are and how to run them.
#[derive(Clone, Debug)]
pub struct Runner {
    /// The packs volume.
    pub packs_dir: PathBuf,
    /// packs.dev.
    pub dev_dir: PathBuf,
    /// API URL given to actions as `ATTUNE_API_URL`.
    pub api_url: String,
    /// Bytes kept of each output stream.
    pub max_output: usize,
    /// Timeout when the action declares none.
    pub default_timeout: Duration,
}

/// Encodes parameters in an action's format.
pub fn encode(params: &Map<String, Value>, format: ParameterFormat) -> String {
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match format {
        ParameterFormat::Json => Value::Object(params.clone()).to_string(),
        // One `key: value` line per parameter, each value as JSON (which is YAML).
        ParameterFormat::Yaml => params.iter().map(|(k, v)| format!("{k}: {v}\n")).collect(),
        ParameterFormat::Dotenv => params
            .iter()
            .map(|(k, v)| {
                let text = scalar(v)
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                format!("{k}=\"{text}\"\n")
            })
            .collect(),
    }
}

/// Reads a stream keeping at most `max` bytes (the rest is drained), lossily decoded.
fn capture(mut r: impl Read, max: usize) -> (String, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut truncated = false;
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        let room = max.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
        truncated |= n > room;
    }
    (String::from_utf8_lossy(&kept).into_owned(), truncated)
}

impl Runner {
    /// The entry point's path, which must stay inside the pack's `actions/`.
    pub fn entry_point(&self, c: &Claimed) -> Result<PathBuf, String> {
        let root = if c.source == "dev" {
            &self.dev_dir
        } else {
            &self.packs_dir
        };
        let actions = root.join(&c.pack_ref).join("actions");
        let path = actions.join(&c.action.entry_point);
        let real = path.canonicalize().map_err(|e| {
            format!(
                "entry point {} of {}: {e}",
                path.display(),
                c.action.action_ref
            )
        })?;
        let base = actions
            .canonicalize()
            .map_err(|e| format!("{}: {e}", actions.display()))?;
        if !real.starts_with(&base) {
            return Err(format!(
                "entry point {} leaves the pack's actions directory",
                path.display()
            ));
        }
        Ok(real)
    }

    fn command(&self, c: &Claimed, path: &Path) -> Command {
        match c.action.runner_type {
            RunnerType::Native => Command::new(path),
            RunnerType::Python => {
                let mut cmd = Command::new("python3");
                cmd.arg(path);
                cmd
            }
            RunnerType::Shell => {
                let head = std::fs::read(path).unwrap_or_default();
                let bash = attune_pack::shebang(&head).is_some_and(|i| {
                    i.ends_with("bash") || head.starts_with(b"#!/usr/bin/env bash")
                });
                let mut cmd = Command::new(if bash { "/bin/bash" } else { "/bin/sh" });
                cmd.arg(path);
                cmd
            }
        }
    }

    /// Runs a claimed execution to its end and reports what happened.
    pub fn run(&self, c: &Claimed) -> Report {
        let path = match self.entry_point(c) {
            Ok(p) => p,
            Err(e) => return Report::not_started(e),
        };
        let params = c
            .execution
            .parameters
            .as_object()
            .cloned()
            .unwrap_or_default();
        let encoded = encode(&params, c.action.parameter_format);
        let mut cmd = self.command(c, &path);
        cmd.current_dir(path.parent().unwrap_or(Path::new("/")))
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", std::env::temp_dir())
            .env("ATTUNE_EXEC_ID", c.execution.id.to_string())
            .env("ATTUNE_ACTION", &c.execution.action_ref)
            .env("ATTUNE_PACK_REF", &c.pack_ref)
            .env("ATTUNE_API_URL", &self.api_url)
            .env(
                "ATTUNE_PARAMETER_FORMAT",
                format_name(c.action.parameter_format),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for (name, value) in &params {
            if c.action.parameters.get(name).is_some_and(|p| p.secret) {
                continue;
            }
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            cmd.env(format!("ATTUNE_{}", name.to_ascii_uppercase()), text);
        }
        let _param_file = match c.action.parameter_delivery {
            ParameterDelivery::Stdin => {
                cmd.env("ATTUNE_PARAMETER_DELIVERY", "stdin")
                    .stdin(Stdio::piped());
                None
            }
            ParameterDelivery::File => {
                let file = match tempfile::NamedTempFile::new()
                    .and_then(|mut f| f.write_all(encoded.as_bytes()).map(|_| f))
                {
                    Ok(f) => f,
                    Err(e) => {
                        return Report::not_started(format!(
                            "cannot write the parameter file: {e}"
                        ));
                    }
                };
                cmd.env("ATTUNE_PARAMETER_DELIVERY", "file")
                    .env("ATTUNE_PARAMETER_FILE", file.path())
                    .stdin(Stdio::null());
                Some(file)
            }
        };
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Report::not_started(format!("cannot start {}: {e}", path.display())),
        };
        let pgid = rustix::process::Pid::from_child(&child);
        if let Some(mut stdin) = child.stdin.take() {
            // A closed pipe only means the action does not read its parameters.
            let _ = stdin.write_all(encoded.as_bytes());
        }
        let max = self.max_output;
        let out = child
            .stdout
            .take()
            .map(|s| std::thread::spawn(move || capture(s, max)));
        let err = child
            .stderr
            .take()
            .map(|s| std::thread::spawn(move || capture(s, max)));
        let timeout = c
            .action
            .timeout
            .map_or(self.default_timeout, Duration::from_secs);
        let started = Instant::now();
        let (code, timed_out) = loop {
            match child.try_wait() {
                Ok(Some(status)) => break (status.code().map(i64::from), false),
                Ok(None) if started.elapsed() >= timeout => {
                    let _ =
                        rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
                    let status = child.wait().ok();
                    break (status.and_then(|s| s.code()).map(i64::from), true);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Report::not_started(format!("lost the process: {e}")),
            }
        };
        // Whatever the action left running in its group ends with it.
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        let join = |h: Option<std::thread::JoinHandle<(String, bool)>>| {
            h.and_then(|h| h.join().ok()).unwrap_or_default()
        };
        let (stdout, stdout_truncated) = join(out);
        let (stderr, stderr_truncated) = join(err);
        let status = match (timed_out, code) {
            (true, _) => "timeout",
            (false, Some(0)) => "succeeded",
            _ => "failed",
        };
        Report {
            status: status.into(),
            exit_code: code,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            error: timed_out.then(|| format!("killed after its timeout of {}s", timeout.as_secs())),
        }
    }
}

fn format_name(f: ParameterFormat) -> &'static str {
    match f {
        ParameterFormat::Json => "json",
        ParameterFormat::Dotenv => "dotenv",
        ParameterFormat::Yaml => "yaml",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn setup(script: &str, extra_yaml: &str) -> (tempfile::TempDir, Runner, Claimed) {
        let tmp = tempfile::tempdir().unwrap();
        let actions = tmp.path().join("vol/demo/actions");
        std::fs::create_dir_all(&actions).unwrap();
        std::fs::create_dir_all(tmp.path().join("dev")).unwrap();
        std::fs::write(actions.join("a.sh"), script).unwrap();
        let action: Action = serde_saphyr::from_str(&format!(
            "ref: demo.a\nlabel: A\nrunner_type: shell\nentry_point: a.sh\nparameters:\n  message: {{type: string}}\n  token: {{type: string, secret: true}}\n{extra_yaml}"
        ))
        .unwrap();
        let runner = Runner {
            packs_dir: tmp.path().join("vol"),
            dev_dir: tmp.path().join("dev"),
            api_url: "http://api".into(),
            max_output: 64,
            default_timeout: Duration::from_secs(10),
        };
        let claimed = Claimed {
            execution: ClaimedExecution {
                id: 7,
                action_ref: "demo.a".into(),
                parameters: json!({"message": "hello", "token": "s3"}),
            },
            action,
            pack_ref: "demo".into(),
            source: "volume".into(),
        };
        (tmp, runner, claimed)
    }

    #[test]
    fn parameters_on_stdin_and_in_the_environment_but_not_secrets() {
        let (_t, r, c) = setup(
            "#!/bin/sh\necho \"Message: $ATTUNE_MESSAGE\"\necho \"token=${ATTUNE_TOKEN-unset}\"\ncat\necho \"exec $ATTUNE_EXEC_ID\" >&2\n",
            "",
        );
        let rep = r.run(&c);
        assert_eq!(rep.status, "succeeded", "{rep:?}");
        assert!(
            rep.stdout.starts_with("Message: hello\ntoken=unset\n{\""),
            "{}",
            rep.stdout
        );
        assert_eq!(rep.stderr, "exec 7\n");
    }

    #[test]
    fn file_delivery_in_dotenv() {
        let (_t, r, c) = setup(
            "#!/bin/sh\ncat \"$ATTUNE_PARAMETER_FILE\"\n",
            "parameter_delivery: file\nparameter_format: dotenv\n",
        );
        let rep = r.run(&c);
        assert_eq!(rep.stdout, "message=\"hello\"\ntoken=\"s3\"\n");
    }

    #[test]
    fn output_is_bounded_and_flagged() {
        let (_t, r, c) = setup("#!/bin/sh\nyes | head -c 100000\n", "");
        let rep = r.run(&c);
        assert_eq!(rep.stdout.len(), 64);
        assert!(rep.stdout_truncated && !rep.stderr_truncated);
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let (t, r, c) = setup(
            "#!/bin/sh\n(sleep 30; echo leaked > \"$0.leak\") &\nsleep 30\n",
            "timeout: 1\n",
        );
        let started = Instant::now();
        let rep = r.run(&c);
        assert_eq!(rep.status, "timeout");
        assert!(started.elapsed() < Duration::from_secs(5));
        let out = Command::new("pgrep")
            .args(["-f", "sleep 30"])
            .output()
            .unwrap();
        let leaked = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(leaked, 0, "processes of the action survived its timeout");
        drop(t);
    }

    #[test]
    fn failing_and_missing_entry_points() {
        let (_t, r, c) = setup("#!/bin/sh\nexit 3\n", "");
        let rep = r.run(&c);
        assert_eq!((rep.status.as_str(), rep.exit_code), ("failed", Some(3)));
        let mut missing = c.clone();
        missing.action.entry_point = "../../../../etc/passwd".into();
        let rep = r.run(&missing);
        assert!(rep.error.unwrap().contains("leaves") || rep.status == "failed");
    }
}
