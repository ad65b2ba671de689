//! Running one action: the entry point from the packs volume (or packs.dev),
//! parameters on stdin or in a file, non-secret ones also as `ATTUNE_<NAME>`,
//! bounded output capture, and a timeout that kills the whole process group.
//!
//! Invariants (a slot is never wedged, whatever the action does):
//! - One deadline, started before anything is written to the action, covers
//!   writing stdin, reading stdout and stderr, and waiting for the exit. The
//!   three streams are served concurrently, so a large parameter on stdin
//!   cannot block reading the output (and vice versa).
//! - The run ends when the process has exited **and** its output pipes are
//!   closed, or at the deadline, whichever is first. At the deadline the whole
//!   process group is killed and the execution is a `timeout`, also when the
//!   main process exited but a background process kept stdout open.
//! - After the kill, output is collected for at most [`DRAIN_GRACE`]: a
//!   process that left the group and still holds a pipe cannot hold the slot.
//! - Each stream keeps at most `max_output` bytes, and the whole report is cut
//!   to [`MAX_REPORT_BYTES`] as JSON, below the API's body limit, so a result
//!   is never refused for its size.
//!
//! And every claim ends in a report, so none is claimed again and again: a
//! claim this worker cannot read ([`ClaimAnswer`]) is reported failed with
//! the reason, and any `timeout` an action declares, even `u64::MAX`, works.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use attune_pack::{Action, ParameterDelivery, ParameterFormat};
use attune_service::env;
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

/// A claim answer as the API sent it, kept raw: one this worker cannot read
/// as a [`Claimed`] (nested past serde_json's 128 levels, an action
/// definition of another version) still names its execution, which is then
/// reported failed with the reason. Unreported, it stayed `running` and was
/// claimed again at every lease expiry, forever.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct ClaimAnswer(Box<serde_json::value::RawValue>);

/// Its size only: the answer holds the secret parameters in clear.
impl std::fmt::Debug for ClaimAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClaimAnswer({} bytes)", self.0.get().len())
    }
}

/// Only the id of a claim's execution: read without depth limit, since
/// serde_json skips the fields it does not need without recursing.
#[derive(Deserialize)]
struct IdOnly {
    execution: IdField,
}

#[derive(Deserialize)]
struct IdField {
    id: i64,
}

impl ClaimAnswer {
    /// The claim; or, when it cannot be read, its execution id (if even
    /// that cannot be read, `None`) and why.
    pub fn read(&self) -> Result<Claimed, (Option<i64>, String)> {
        serde_json::from_str(self.0.get()).map_err(|e| {
            let id = serde_json::from_str::<IdOnly>(self.0.get())
                .ok()
                .map(|x| x.execution.id);
            (id, e.to_string())
        })
    }
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
    /// The rule that requested it, if any (`ATTUNE_RULE`).
    #[serde(default)]
    pub rule_ref: Option<String>,
    /// The trigger of the event that requested it, if any (`ATTUNE_TRIGGER`).
    #[serde(default)]
    pub trigger_ref: Option<String>,
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
    /// The short report sent when the API refused `full`: its status, no output.
    pub fn refused(full: &Report, why: &str) -> Report {
        let mut short = Report::not_started(format!(
            "the API refused this execution's result ({why}); its output is lost"
        ));
        short.exit_code = full.exit_code;
        short.stdout_truncated = !full.stdout.is_empty();
        short.stderr_truncated = !full.stderr.is_empty();
        short
    }

    pub(crate) fn not_started(error: String) -> Report {
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
    /// The packs volume (absolute: actions run elsewhere).
    pub packs_dir: PathBuf,
    /// packs.dev (absolute).
    pub dev_dir: PathBuf,
    /// API URL given to actions as `ATTUNE_API_URL`.
    pub api_url: String,
    /// Where parameter files go; also `HOME` of actions (absolute).
    pub temp_dir: PathBuf,
    /// Bytes kept of each output stream.
    pub max_output: usize,
    /// Timeout when the action declares none.
    pub default_timeout: Duration,
    /// The interpreters this container has (detected at startup).
    pub runtimes: attune_service::Runtimes,
}

/// `a.b` keys for nested objects, as upstream flattens dotenv parameters:
/// arrays as JSON, null as empty, an empty object as nothing.
fn flatten(prefix: &str, params: &Map<String, Value>, out: &mut Vec<(String, String)>) {
    for (k, v) in params {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Object(m) => flatten(&key, m, out),
            Value::String(s) => out.push((key, s.clone())),
            Value::Null => out.push((key, String::new())),
            other => out.push((key, other.to_string())),
        }
    }
}

/// Encodes parameters in an action's format, byte for byte as upstream's
/// worker does (`crates/worker/src/runtime/parameter_passing.rs`): JSON on
/// one line; dotenv `key='value'` lines, nested keys flattened to `a.b`,
/// `'` written `'\''`, sorted, joined by newlines; YAML one `key: value`
/// line per parameter. Stdin delivery adds one newline, as upstream's does.
pub fn encode(params: &Map<String, Value>, format: ParameterFormat) -> String {
    match format {
        ParameterFormat::Json => Value::Object(params.clone()).to_string(),
        // One `key: value` line per parameter, each value as JSON (which is YAML).
        ParameterFormat::Yaml => params.iter().map(|(k, v)| format!("{k}: {v}\n")).collect(),
        ParameterFormat::Dotenv => {
            let mut flat = vec![];
            flatten("", params, &mut flat);
            let mut lines: Vec<String> = flat
                .into_iter()
                .map(|(k, v)| format!("{k}='{}'", v.replace('\'', "'\\''")))
                .collect();
            lines.sort();
            lines.join("\n")
        }
    }
}

/// The largest `NAME=value` a parameter is exported as: Linux refuses to start
/// a program with one variable of 128 KiB or more (`MAX_ARG_STRLEN`), so a
/// larger parameter is only on stdin or in the file.
pub const MAX_ENV_VAR_BYTES: usize = (128 << 10) - 1;

/// How long output is still collected after the process group was killed.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// The largest report sent to the API, as JSON (the API takes 4 MiB).
pub const MAX_REPORT_BYTES: usize = 3 << 20;

/// A stream read on its own thread into a shared buffer, keeping at most
/// `max` bytes (the rest is drained), so what was read is there even if the
/// thread is still blocked when the run ends.
struct Capture {
    buf: std::sync::Arc<std::sync::Mutex<(Vec<u8>, bool)>>,
}

impl Capture {
    fn start(r: Option<impl Read + Send + 'static>, max: usize, done: mpsc::Sender<()>) -> Capture {
        let buf = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), false)));
        let shared = buf.clone();
        std::thread::spawn(move || {
            if let Some(mut r) = r {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = r.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    let mut b = shared.lock().expect("capture lock");
                    let room = max.saturating_sub(b.0.len());
                    b.0.extend_from_slice(&chunk[..n.min(room)]);
                    b.1 |= n > room;
                }
            }
            let _ = done.send(());
        });
        Capture { buf }
    }

    fn take(&self) -> (String, bool) {
        let b = self.buf.lock().expect("capture lock");
        (String::from_utf8_lossy(&b.0).into_owned(), b.1)
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

impl Report {
    /// Shrinks stdout and stderr until the report's JSON fits in `limit` bytes
    /// (escaping can make it up to six times the output's size).
    pub fn fit(&mut self, limit: usize) {
        loop {
            let size = serde_json::to_vec(self).map_or(0, |v| v.len());
            if size <= limit {
                return;
            }
            let over = size - limit;
            let (text, flag) = if self.stdout.len() >= self.stderr.len() {
                (&mut self.stdout, &mut self.stdout_truncated)
            } else {
                (&mut self.stderr, &mut self.stderr_truncated)
            };
            if text.is_empty() {
                return;
            }
            *flag = true;
            // At least one byte of the text per escaped byte over the limit.
            let keep = text.len().saturating_sub(over.div_ceil(6).max(1));
            cut(text, keep);
        }
    }
}

impl Runner {
    /// The packs directory an execution's pack is in (the volume, or packs.dev).
    fn root(&self, c: &Claimed) -> &Path {
        if c.source == "dev" {
            &self.dev_dir
        } else {
            &self.packs_dir
        }
    }

    /// The entry point's path, as the pack names it: below the pack's
    /// `actions/` (no `..`, not absolute), whose canonical path lies inside the
    /// canonical packs directory. In a published volume the file is really
    /// elsewhere in the volume (never outside it): the pack is a link,
    /// `<pack> -> ..data/<pack>`, through the generation into the store, a real
    /// tree at `..store/<obj>/<pack>` (older volumes linked the directories
    /// inside a pack into the store instead). The path given to the action is
    /// the one through the pack, as upstream's; it is absolute because the
    /// packs directories are (made so at startup).
    pub fn entry_point(&self, c: &Claimed) -> Result<PathBuf, String> {
        let root = self.root(c);
        let actions = root.join(&c.pack_ref).join("actions");
        let ep = Path::new(&c.action.entry_point);
        let below = ep
            .components()
            .all(|p| matches!(p, Component::Normal(_) | Component::CurDir));
        if !below || ep.as_os_str().is_empty() {
            return Err(format!(
                "entry point {} of {} leaves the pack's actions directory",
                ep.display(),
                c.action.action_ref
            ));
        }
        let path = actions.join(ep);
        let real = path.canonicalize().map_err(|e| {
            format!(
                "entry point {} of {}: {e}",
                path.display(),
                c.action.action_ref
            )
        })?;
        let base = root
            .canonicalize()
            .map_err(|e| format!("{}: {e}", root.display()))?;
        if !real.starts_with(&base) {
            return Err(format!(
                "entry point {} resolves to {}, outside {}",
                path.display(),
                real.display(),
                root.display()
            ));
        }
        Ok(path)
    }

    /// The command that runs the entry point, with the interpreter this
    /// container has; or why none here can run it (the runtime it needs,
    /// what this image lacks, which worker has it).
    fn command(&self, c: &Claimed, path: &Path) -> Result<Command, String> {
        let runner = c.action.runner_type;
        if let Some(why) = self
            .runtimes
            .missing(&format!("action {}", c.action.action_ref), runner)
        {
            return Err(why);
        }
        let (program, args) = runner
            .command_line(path)
            .ok_or_else(|| format!("action {} cannot be run", c.action.action_ref))?;
        let mut cmd = Command::new(program);
        cmd.args(args);
        Ok(cmd)
    }

    /// Runs the execution of a claim answer: its id and how it ended, also
    /// when the claim cannot be read (then it is failed, not run); `None`
    /// when the answer does not even name an execution.
    pub fn run_answer(
        &self,
        answer: &ClaimAnswer,
        run: impl FnOnce(&Claimed) -> Report,
    ) -> Option<(i64, Report)> {
        match answer.read() {
            Ok(c) => {
                tracing::info!(execution = c.execution.id, action = %c.execution.action_ref, "running");
                let report = run(&c);
                tracing::info!(execution = c.execution.id, status = %report.status, exit_code = ?report.exit_code, "finished");
                Some((c.execution.id, report))
            }
            Err((Some(id), why)) => {
                tracing::error!(execution = id, "cannot read the claim: {why}");
                let report = Report::not_started(format!(
                    "the worker cannot read this execution's claim ({why}); not run"
                ));
                Some((id, report))
            }
            Err((None, why)) => {
                tracing::error!("cannot read a claim, nor which execution it is: {why}");
                None
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
        let mut cmd = match self.command(c, &path) {
            Ok(cmd) => cmd,
            Err(e) => return Report::not_started(e),
        };
        // The pack directory, as upstream: entry points find their siblings by
        // relative path. PWD names it through the pack link, so shells do too.
        let pack_dir = self.root(c).join(&c.pack_ref);
        cmd.current_dir(&pack_dir)
            .env_clear()
            .env("PWD", &pack_dir)
            .env("PATH", attune_service::runtimes::RUN_PATH)
            .env("LANG", "C.UTF-8")
            .env("HOME", &self.temp_dir)
            .env(env::EXEC_ID, c.execution.id.to_string())
            .env(env::ACTION, &c.execution.action_ref)
            .env(env::PACK_REF, &c.pack_ref)
            .env(env::API_URL, &self.api_url)
            .env(
                env::PARAMETER_FORMAT,
                format_name(c.action.parameter_format),
            )
            .envs(c.execution.rule_ref.as_ref().map(|r| (env::RULE, r)))
            .envs(c.execution.trigger_ref.as_ref().map(|t| (env::TRIGGER, t)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if c.action.runner_type == attune_pack::RunnerType::Python {
            // The pack's lib and the dependencies built for this Python.
            cmd.envs(self.runtimes.python_env(&pack_dir));
        }
        // Warnings about this execution, put before its stderr in the report.
        let mut notes = String::new();
        for (name, value) in &params {
            if c.action.parameters.get(name).is_some_and(|p| p.secret) {
                continue;
            }
            let var = format!("{}{}", env::PARAMETER_PREFIX, name.to_ascii_uppercase());
            let valid = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let why_not = if !valid || env::ACTION_RUNTIME.contains(&var.as_str()) {
                // A parameter never changes the runtime's own environment.
                Some("the name is the runtime's or not a valid variable name".to_string())
            } else if var.len() + 1 + text.len() > MAX_ENV_VAR_BYTES {
                Some(format!(
                    "{} bytes, more than one variable may hold",
                    text.len()
                ))
            } else {
                None
            };
            if let Some(why) = why_not {
                let note = format!(
                    "parameter `{name}` not exported as {var}: {why} (it is still on stdin or in the file)"
                );
                tracing::warn!(execution = c.execution.id, "{note}");
                notes.push_str(&format!("[attune-worker] warning: {note}\n"));
                continue;
            }
            if text.contains('\0') {
                continue;
            }
            cmd.env(var, text);
        }
        let _param_file = match c.action.parameter_delivery {
            ParameterDelivery::Stdin => {
                cmd.env(env::PARAMETER_DELIVERY, "stdin")
                    .stdin(Stdio::piped());
                None
            }
            ParameterDelivery::File => {
                // Owner read-only (0400), as upstream's.
                let file = match tempfile::NamedTempFile::new_in(&self.temp_dir)
                    .and_then(|mut f| f.write_all(encoded.as_bytes()).map(|_| f))
                    .and_then(|f| {
                        std::fs::set_permissions(
                            f.path(),
                            std::os::unix::fs::PermissionsExt::from_mode(0o400),
                        )
                        .map(|_| f)
                    }) {
                    Ok(f) => f,
                    Err(e) => {
                        return Report::not_started(format!(
                            "cannot write the parameter file: {e}"
                        ));
                    }
                };
                cmd.env(env::PARAMETER_DELIVERY, "file")
                    .env(env::PARAMETER_FILE, file.path())
                    .stdin(Stdio::null());
                Some(file)
            }
        };
        let timeout = c
            .action
            .timeout
            .map_or(self.default_timeout, Duration::from_secs);
        // The one deadline starts before anything is written to the action;
        // a timeout past what an Instant holds is a year (never, in practice).
        let start = Instant::now();
        let deadline = start
            .checked_add(timeout)
            .unwrap_or(start + Duration::from_secs(365 * 86_400));
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                // The program that is missing may be the interpreter, not the script.
                let program = cmd.get_program().to_string_lossy().into_owned();
                let what = if Path::new(&program) == path {
                    path.display().to_string()
                } else {
                    format!("{} with {program}", path.display())
                };
                return Report::not_started(format!("cannot start {what}: {e}"));
            }
        };
        let pgid = rustix::process::Pid::from_child(&child);
        if let Some(mut stdin) = child.stdin.take() {
            // Its own thread: a full pipe must not stop the output being read.
            // A closed pipe only means the action does not read its parameters.
            std::thread::spawn(move || {
                // One line and a newline: `read -r PARAMS` under `set -e` needs it.
                let _ = stdin.write_all(format!("{encoded}\n").as_bytes());
            });
        }
        let (done, finished) = mpsc::channel();
        let out = Capture::start(child.stdout.take(), self.max_output, done.clone());
        let err = Capture::start(child.stderr.take(), self.max_output, done);
        let kill = || {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        };
        let mut timed_out = false;
        let code = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status.code().map(i64::from),
                Ok(None) if Instant::now() >= deadline => {
                    timed_out = true;
                    kill();
                    break child.wait().ok().and_then(|s| s.code()).map(i64::from);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    kill();
                    return Report::not_started(format!("lost the process: {e}"));
                }
            }
        };
        // The process is gone; its output ends when every holder of the pipes
        // has closed them, which a background process may never do.
        let mut open = 2;
        while open > 0 {
            let now = Instant::now();
            let wait = if timed_out || now >= deadline {
                if !timed_out {
                    timed_out = true;
                    tracing::warn!(
                        execution = c.execution.id,
                        "the action exited but left processes holding its output open past its timeout"
                    );
                    kill();
                }
                DRAIN_GRACE
            } else {
                deadline - now
            };
            match finished.recv_timeout(wait) {
                Ok(()) => open -= 1,
                Err(_) if timed_out => break,
                Err(_) => {}
            }
        }
        // Whatever the action left running in its group ends with it.
        kill();
        let (stdout, stdout_truncated) = out.take();
        let (stderr, stderr_truncated) = err.take();
        let stderr = notes + &stderr;
        let status = match (timed_out, code) {
            (true, _) => "timeout",
            (false, Some(0)) => "succeeded",
            _ => "failed",
        };
        let mut report = Report {
            status: status.into(),
            exit_code: code,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            error: timed_out.then(|| format!("killed after its timeout of {}s", timeout.as_secs())),
        };
        report.fit(MAX_REPORT_BYTES);
        report
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
            temp_dir: std::env::temp_dir(),
            max_output: 64,
            default_timeout: Duration::from_secs(10),
            runtimes: attune_service::Runtimes::detect(),
        };
        let claimed = Claimed {
            execution: ClaimedExecution {
                id: 7,
                action_ref: "demo.a".into(),
                parameters: json!({"message": "hello", "token": "s3"}),
                rule_ref: None,
                trigger_ref: None,
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
    fn a_python_action_on_a_worker_without_python_names_the_runtime_and_the_worker_that_has_it() {
        let (_t, mut r, mut c) = setup("print('hi')\n", "");
        c.action.runner_type = attune_pack::RunnerType::Python;
        r.runtimes = attune_service::Runtimes {
            shell: Some("/bin/sh".into()),
            python: None,
            node: None,
        };
        let rep = r.run(&c);
        assert_eq!(rep.status, "failed");
        let why = rep.error.unwrap();
        assert!(
            why.contains("action demo.a needs the python runtime"),
            "{why}"
        );
        assert!(why.contains("no python3"), "{why}");
        assert!(why.contains("worker-python"), "{why}");
    }

    #[test]
    fn python_actions_import_the_packs_lib_then_its_dependencies_for_this_python() {
        let (t, mut r, mut c) = setup(
            "import helper, dep, sys\nprint(helper.X, dep.Y, sys.dont_write_bytecode)\n",
            "",
        );
        c.action.runner_type = attune_pack::RunnerType::Python;
        r.max_output = 4096;
        let version = r
            .runtimes
            .python
            .clone()
            .expect("this test needs python3 on /usr/local/bin:/usr/bin:/bin")
            .1;
        let lib = t.path().join("vol/demo/lib");
        let site = lib.join(format!("python{version}/site-packages"));
        std::fs::create_dir_all(&site).unwrap();
        std::fs::write(lib.join("helper.py"), "X = 'helper'\n").unwrap();
        std::fs::write(site.join("dep.py"), "Y = 'dep'\n").unwrap();
        // Another Python's dependencies are not on the path.
        let other = lib.join("python2.7/site-packages");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("dep.py"), "raise ImportError('wrong python')\n").unwrap();
        let rep = r.run(&c);
        assert_eq!(rep.status, "succeeded", "{rep:?}");
        assert_eq!(rep.stdout, "helper dep True\n");
    }

    /// Upstream's actions have an `api_url` parameter; exported as
    /// `ATTUNE_API_URL` it pointed the action at a URL of the caller's choosing.
    #[test]
    fn a_parameter_never_overrides_the_runtime_environment() {
        let (_t, r, mut c) = setup(
            "#!/bin/sh\necho \"$ATTUNE_API_URL $ATTUNE_EXEC_ID $ATTUNE_MESSAGE\"\n",
            "",
        );
        c.execution.parameters =
            json!({"api_url": "http://evil", "exec_id": "0", "message": "hi", "a=b": "x"});
        let rep = r.run(&c);
        assert_eq!(rep.status, "succeeded", "{rep:?}");
        assert_eq!(rep.stdout, "http://api 7 hi\n");
        // Said in the execution's own log.
        assert!(
            rep.stderr
                .contains("parameter `api_url` not exported as ATTUNE_API_URL"),
            "{}",
            rep.stderr
        );
    }

    /// Upstream's dotenv, byte for byte, in a 0400 file; on stdin, one more newline.
    #[test]
    fn dotenv_is_upstreams_format_byte_for_byte() {
        let (_t, mut r, mut c) = setup(
            "#!/bin/sh\nstat -c %a \"$ATTUNE_PARAMETER_FILE\"\ncat \"$ATTUNE_PARAMETER_FILE\"\n",
            "parameter_delivery: file\nparameter_format: dotenv\n",
        );
        r.max_output = 4096;
        c.execution.parameters = json!({
            "url": "https://example.com",
            "message": "It's a test",
            "headers": {"Content-Type": "application/json", "Authorization": "Bearer token"},
            "empty": {},
            "list": [1, "a"],
            "none": null,
            "n": 42,
        });
        let rep = r.run(&c);
        assert_eq!(
            rep.stdout,
            "400\nheaders.Authorization='Bearer token'\nheaders.Content-Type='application/json'\nlist='[1,\"a\"]'\nmessage='It'\\''s a test'\nn='42'\nnone=''\nurl='https://example.com'"
        );
        let (_t, r, c) = setup("#!/bin/sh\ncat\n", "parameter_format: dotenv\n");
        assert_eq!(r.run(&c).stdout, "message='hello'\ntoken='s3'\n");
    }

    /// JSON on stdin had no trailing newline, so upstream's documented
    /// `read -r PARAMS_JSON` under `set -e` exited 1.
    #[test]
    fn read_r_under_set_e_reads_the_json_line() {
        let (_t, r, c) = setup(
            "#!/bin/bash\nset -e\nread -r PARAMS_JSON\necho \"got $PARAMS_JSON\"\n",
            "",
        );
        let rep = r.run(&c);
        assert_eq!(rep.status, "succeeded", "{rep:?}");
        assert_eq!(rep.stdout, "got {\"message\":\"hello\",\"token\":\"s3\"}\n");
    }

    /// Upstream runs an action in its pack's directory, with the rule and trigger named.
    #[test]
    fn cwd_is_the_pack_directory_and_rule_and_trigger_are_set() {
        let (_t, r, mut c) = setup(
            "#!/bin/sh\nbasename \"$PWD\"\necho \"$ATTUNE_RULE $ATTUNE_TRIGGER\"\n",
            "",
        );
        c.execution.rule_ref = Some("demo.every".into());
        c.execution.trigger_ref = Some("core.intervaltimer".into());
        let rep = r.run(&c);
        assert_eq!(rep.stdout, "demo\ndemo.every core.intervaltimer\n");
    }

    /// A published volume: the pack and its directories are links into the
    /// store. The action still runs in the pack directory, under its path
    /// through the pack, also from a nested directory; a link out of the
    /// volume and `..` are refused.
    #[test]
    fn entry_points_resolve_through_the_volume_store() {
        use std::os::unix::fs::symlink;
        let (t, r, mut c) = setup("", "");
        let vol = t.path().join("vol");
        std::fs::remove_dir_all(vol.join("demo")).unwrap();
        let store = vol.join("..store");
        for d in ["P", "A", "L"] {
            std::fs::create_dir_all(store.join(d)).unwrap();
        }
        symlink("../A", store.join("P/actions")).unwrap();
        symlink("../L", store.join("A/lib")).unwrap();
        std::fs::write(store.join("P/data.txt"), "pack data\n").unwrap();
        std::fs::write(
            store.join("L/b.sh"),
            "#!/bin/sh\nbasename \"$PWD\"\necho \"$0\"\ncat data.txt\n",
        )
        .unwrap();
        symlink("..store/P", vol.join("demo")).unwrap();
        c.action.entry_point = "lib/b.sh".into();
        let rep = r.run(&c);
        let logical = vol.join("demo/actions/lib/b.sh");
        assert_eq!(
            rep.stdout,
            format!("demo\n{}\npack data\n", logical.display()),
            "{rep:?}"
        );
        // Out of the volume through a link, or by `..`: refused, never run.
        std::fs::write(t.path().join("outside.sh"), "#!/bin/sh\necho escaped\n").unwrap();
        symlink(t.path().join("outside.sh"), store.join("A/out.sh")).unwrap();
        for ep in ["out.sh", "../data.txt", "/etc/passwd"] {
            c.action.entry_point = ep.into();
            let err = r.entry_point(&c).unwrap_err();
            assert!(
                err.contains("outside") || err.contains("leaves"),
                "{ep}: {err}"
            );
        }
    }

    /// Today's volume: `demo -> ..data/demo`, `..data -> ..g1`,
    /// `..g1/demo -> ../..store/o1/demo`, and a real tree below the pack root.
    /// A nested entry point runs in the pack directory, under its path through
    /// the pack link; a link out of the volume, from inside a pack or as the
    /// pack itself, is refused.
    #[test]
    fn entry_points_resolve_through_the_generation_and_pack_links() {
        use std::os::unix::fs::symlink;
        let (t, mut r, mut c) = setup("", "");
        r.max_output = 4096;
        let vol = t.path().join("vol");
        std::fs::remove_dir_all(vol.join("demo")).unwrap();
        let real = vol.join("..store/o1/demo");
        std::fs::create_dir_all(real.join("actions/lib")).unwrap();
        std::fs::write(real.join("data.txt"), "pack data\n").unwrap();
        std::fs::write(
            real.join("actions/lib/x.sh"),
            "#!/bin/sh\necho \"$PWD\"\npwd -P\necho \"$0\"\ncat data.txt\n",
        )
        .unwrap();
        std::fs::create_dir(vol.join("..g1")).unwrap();
        symlink("../..store/o1/demo", vol.join("..g1/demo")).unwrap();
        symlink("..g1", vol.join("..data")).unwrap();
        symlink("..data/demo", vol.join("demo")).unwrap();
        c.action.entry_point = "lib/x.sh".into();
        let rep = r.run(&c);
        assert_eq!(rep.status, "succeeded", "{rep:?}");
        assert_eq!(
            rep.stdout,
            format!(
                "{}\n{}\n{}\npack data\n",
                vol.join("demo").display(),
                real.canonicalize().unwrap().display(),
                vol.join("demo/actions/lib/x.sh").display()
            ),
            "{rep:?}"
        );
        // A link inside the pack out of the volume: refused, never run.
        std::fs::write(t.path().join("outside.sh"), "#!/bin/sh\necho escaped\n").unwrap();
        symlink(t.path().join("outside.sh"), real.join("actions/out.sh")).unwrap();
        c.action.entry_point = "out.sh".into();
        let err = r.entry_point(&c).unwrap_err();
        assert!(err.contains("outside"), "{err}");
        // A pack whose link leads out of the volume: refused too.
        let elsewhere = t.path().join("elsewhere/evil");
        std::fs::create_dir_all(elsewhere.join("actions")).unwrap();
        std::fs::write(elsewhere.join("actions/a.sh"), "#!/bin/sh\necho escaped\n").unwrap();
        symlink(&elsewhere, vol.join("..g1/evil")).unwrap();
        symlink("..data/evil", vol.join("evil")).unwrap();
        c.pack_ref = "evil".into();
        c.action.entry_point = "a.sh".into();
        let rep = r.run(&c);
        assert!(
            rep.error.as_deref().is_some_and(|e| e.contains("outside")) && rep.stdout.is_empty(),
            "{rep:?}"
        );
    }

    #[test]
    fn output_is_bounded_and_flagged() {
        let (_t, r, c) = setup("#!/bin/sh\nyes | head -c 100000\n", "");
        let rep = r.run(&c);
        assert_eq!(rep.stdout.len(), 64);
        assert!(rep.stdout_truncated && !rep.stderr_truncated);
    }

    /// Whether `pid` is a live (not zombie) process.
    fn alive(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !state.is_some_and(|s| s.starts_with('Z') || s.starts_with('X'))
        })
    }

    /// The action's own pids, written by the script: no look across the machine
    /// (an unrelated `sleep 30` elsewhere once failed this test).
    fn pids_of(t: &tempfile::TempDir) -> Vec<String> {
        let text = std::fs::read_to_string(t.path().join("vol/demo/actions/a.sh.pids")).unwrap();
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let (t, r, c) = setup(
            "#!/bin/sh\n(sleep 30; echo leaked > \"$0.leak\") &\necho $$ $! > \"$0.pids\"\nsleep 30\n",
            "timeout: 1\n",
        );
        let started = Instant::now();
        let rep = r.run(&c);
        assert_eq!(rep.status, "timeout");
        assert!(started.elapsed() < Duration::from_secs(5));
        let pids = pids_of(&t);
        assert_eq!(pids.len(), 2);
        std::thread::sleep(Duration::from_millis(100));
        for pid in pids {
            assert!(
                !alive(&pid),
                "process {pid} of the action survived its timeout"
            );
        }
    }

    /// A 100 KB parameter to an action that writes before it reads wedged the
    /// slot: stdin was written to completion before stdout was read, and before
    /// the timeout clock started.
    #[test]
    fn a_large_parameter_never_wedges_the_slot() {
        let (_t, r, mut c) = setup(
            "#!/bin/sh\nhead -c 200000 /dev/zero | tr '\\0' x\ncat > /dev/null\necho done >&2\n",
            "timeout: 20\n",
        );
        c.execution.parameters = json!({"message": "m".repeat(100_000)});
        let started = Instant::now();
        let rep = r.run(&c);
        assert_eq!(rep.status, "succeeded", "{rep:?}");
        assert_eq!(rep.stderr, "done\n");
        assert!(rep.stdout_truncated);
        assert!(started.elapsed() < Duration::from_secs(15));
        // And one that never reads stdin at all ends at its timeout.
        let (_t, r, mut c) = setup("#!/bin/sh\nsleep 30\n", "timeout: 1\n");
        c.execution.parameters = json!({"message": "m".repeat(100_000)});
        let started = Instant::now();
        let rep = r.run(&c);
        assert_eq!(rep.status, "timeout");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// A background process keeping stdout open held the slot past the timeout,
    /// and the execution was reported `succeeded`.
    #[test]
    fn a_background_process_holding_stdout_ends_at_the_timeout() {
        let (t, r, c) = setup(
            "#!/bin/sh\nsleep 30 &\necho $! > \"$0.pids\"\necho started\n",
            "timeout: 1\n",
        );
        let started = Instant::now();
        let rep = r.run(&c);
        assert_eq!(rep.status, "timeout", "{rep:?}");
        assert_eq!(rep.stdout, "started\n");
        assert!(started.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(100));
        for pid in pids_of(&t) {
            assert!(!alive(&pid), "background process {pid} survived");
        }
    }

    /// Output over the API's body limit made the report fail, and the execution
    /// ran again at every lease expiry. Reports are cut to fit as JSON.
    #[test]
    fn a_report_always_fits_under_the_limit() {
        let mut rep = Report::not_started(String::new());
        rep.stdout = "\u{1}".repeat(1 << 20);
        rep.stderr = "é".repeat(1 << 19);
        rep.fit(MAX_REPORT_BYTES);
        let size = serde_json::to_vec(&rep).unwrap().len();
        assert!(size <= MAX_REPORT_BYTES, "{size}");
        assert!(rep.stdout_truncated && !rep.stdout.is_empty());
        let short = Report::refused(&rep, "HTTP 413");
        assert_eq!(short.status, "failed");
        assert!(short.stdout.is_empty() && short.error.unwrap().contains("413"));
    }

    /// The api handed out parameters nested 125 levels; the claim was 128
    /// deep, past serde_json's limit, the worker could not read it and never
    /// reported: the execution was claimed again at every lease, forever.
    #[test]
    fn a_claim_nested_past_serde_jsons_limit_is_reported_failed_by_id() {
        let (_t, r, c) = setup("#!/bin/sh\necho ran\n", "");
        let deep = format!("{}1{}", "[".repeat(130), "]".repeat(130));
        let text = format!(
            r#"{{"execution": {{"id": 42, "action_ref": "demo.a", "parameters": {{"message": {deep}}}}}, "action": {}, "pack_ref": "demo", "source": "volume"}}"#,
            serde_json::to_string(&json!({"ref": "demo.a", "entry_point": "a.sh"})).unwrap()
        );
        assert!(
            serde_json::from_str::<Value>(&text).is_err(),
            "not deep enough"
        );
        let answer: ClaimAnswer = serde_json::from_str(&text).unwrap();
        let (id, rep) = r.run_answer(&answer, |c| r.run(c)).unwrap();
        assert_eq!((id, rep.status.as_str()), (42, "failed"));
        let why = rep.error.unwrap();
        assert!(
            why.contains("cannot read this execution's claim") && why.contains("recursion limit"),
            "{why}"
        );
        assert!(rep.stdout.is_empty(), "it must not run");
        // A readable one runs; one without an execution id names none.
        let ok = json!({"execution": {"id": c.execution.id, "action_ref": "demo.a", "parameters": {}}, "action": {"ref": "demo.a", "entry_point": "a.sh"}, "pack_ref": "demo", "source": "volume"});
        let answer: ClaimAnswer = serde_json::from_str(&ok.to_string()).unwrap();
        let (id, rep) = r.run_answer(&answer, |c| r.run(c)).unwrap();
        assert_eq!((id, rep.stdout.as_str()), (7, "ran\n"), "{rep:?}");
        let answer: ClaimAnswer = serde_json::from_str(r#"{"execution": {}}"#).unwrap();
        assert!(r.run_answer(&answer, |c| r.run(c)).is_none());
    }

    /// `timeout: 18446744073709551615` (accepted by the pack checks) made
    /// `Instant + timeout` overflow: the worker's slot panicked, the
    /// execution stayed running, and the next slot took it after the lease.
    #[test]
    fn a_timeout_past_what_an_instant_holds_still_runs_the_action() {
        let (_t, r, c) = setup("#!/bin/sh\necho ok\n", &format!("timeout: {}\n", u64::MAX));
        assert_eq!(c.action.timeout, Some(u64::MAX));
        let rep = r.run(&c);
        assert_eq!(
            (rep.status.as_str(), rep.stdout.as_str()),
            ("succeeded", "ok\n"),
            "{rep:?}"
        );
    }

    /// A 200 KB parameter (the api takes 1 MiB) was exported as a variable
    /// too, and Linux refused to start the action (E2BIG).
    #[test]
    fn a_parameter_too_large_for_a_variable_is_still_on_stdin() {
        let (_t, mut r, mut c) = setup(
            "#!/bin/sh\necho \"env=${ATTUNE_MESSAGE-unset}\"\nwc -c\n",
            "",
        );
        r.max_output = 4096;
        c.execution.parameters = json!({"message": "m".repeat(200_000)});
        let rep = r.run(&c);
        assert_eq!(rep.status, "succeeded", "{rep:?}");
        assert_eq!(rep.stdout, "env=unset\n200015\n");
        assert!(
            rep.stderr
                .contains("parameter `message` not exported as ATTUNE_MESSAGE: 200000 bytes"),
            "{}",
            rep.stderr
        );
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
