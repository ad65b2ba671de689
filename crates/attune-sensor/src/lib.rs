//! `attune-sensor`: runs every enabled sensor found in the packs volume and
//! packs.dev ([`desired`]) in its own process group with Attune's sensor
//! environment, keeps each one's output in `<logs>/sensors/<ref>.log`, restarts
//! it with backoff (1 s to 60 s) when it exits, and restarts all of them when
//! the volume publishes a new generation or a sensor's rules change.
//!
//! Stopping ([`attune_service::shutdown`]): on SIGTERM or SIGINT it starts no
//! sensor more, sends SIGTERM to every sensor's process group at once (the
//! timer sensor spools its unsent events then), waits up to `--drain-timeout`
//! for all of them to exit, SIGKILLs the groups of those left, and exits 0.
//! A sensor stopped because it or its rules changed gets the same timeout.
//!
//! It does not fire events itself (the sensors do) or run actions (the worker).

pub mod desired;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attune_service::shutdown::{Drain, StopSignal, wait_until};
use attune_service::{Client, PathError, ServiceArgs, Setting, env, paths};
use clap::Parser;
use rustix::process::{Pid, Signal, kill_process_group};

use desired::SensorSpec;

/// Shortest and longest wait before restarting a sensor that exited.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// Runs the sensors of the Attune packs.
#[derive(Debug, Parser)]
#[command(name = "attune-sensor", version, after_help = attune_service::exit::help())]
pub struct Args {
    /// API, packs and logging (API and logging settings are passed on to sensors).
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Where `sensors/<ref>.log` files go.
    #[arg(long, env = env::LOGS_DIR, default_value = env::DEFAULT_LOGS_DIR)]
    pub logs_dir: PathBuf,
    /// Seconds between checks of packs, rules and the volume generation.
    #[arg(long, env = env::SENSOR_POLL_SECONDS, default_value_t = 2.0)]
    pub poll_seconds: f64,
}

impl Args {
    /// Makes every path given to the service (packs directories, logs
    /// directory) absolute against the current directory; called once, at
    /// startup, so what sensors are told (their spool file) names the same file
    /// wherever they run.
    pub fn make_paths_absolute(&mut self) -> Result<(), PathError> {
        self.service.make_paths_absolute()?;
        paths::make_absolute(
            &paths::flag_name("logs-dir", env::LOGS_DIR),
            &mut self.logs_dir,
        )
    }
}

/// One supervised sensor.
#[derive(Debug)]
struct Managed {
    spec: SensorSpec,
    triggers: String,
    child: Option<Child>,
    started: Instant,
    backoff: Duration,
    restart_at: Instant,
}

struct Supervisor {
    args: Args,
    api: Client,
    runtimes: attune_service::Runtimes,
    sensors: BTreeMap<String, Managed>,
}

/// Why a sensor did not start, with the fix: the runtime its container
/// lacks, or what is wrong with a native binary (a dynamic one fails with a
/// bare ENOENT, its loader being what is missing); else the OS error.
fn why_not_started(
    spec: &SensorSpec,
    err: &std::io::Error,
    runtimes: &attune_service::Runtimes,
) -> String {
    if let Some(why) = runtimes.missing(&format!("sensor {}", spec.sensor_ref), spec.runner) {
        return why;
    }
    match native_problem(spec) {
        Some(why) => format!("{err}: the binary {why}"),
        None => err.to_string(),
    }
}

/// What `packs-assemble` would refuse in a native sensor's binary, with the
/// fix; `None` for other runners, or a binary that is fine.
fn native_problem(spec: &SensorSpec) -> Option<String> {
    if spec.runner != attune_pack::RunnerType::Native {
        return None;
    }
    let arch = attune_pack::Arch::host()?;
    let problems = attune_pack::check_native_file(&spec.path, arch).ok()?;
    let p = problems.first()?;
    Some(format!("{}; {}", p.cause(), p.fix(arch)))
}

/// Copies `from` line by line into `log` and, each line after `prefix`, to
/// this process's stdout, on a thread of its own until `from` closes. A line
/// is cut into pieces of at most 64 KiB, so one without an end holds no
/// more memory than that.
fn tee_lines(
    from: impl std::io::Read + Send + 'static,
    log: std::sync::Arc<std::sync::Mutex<std::fs::File>>,
    prefix: String,
) {
    use std::io::{BufRead, Read, Write};
    std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut r).take(64 << 10).read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if !line.ends_with(b"\n") {
                line.push(b'\n');
            }
            if let Ok(mut f) = log.lock() {
                let _ = f.write_all(&line);
            }
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(prefix.as_bytes());
            let _ = out.write_all(&line);
        }
    });
}

impl Supervisor {
    fn start(&self, m: &mut Managed) {
        let log_path = self
            .args
            .logs_dir
            .join("sensors")
            .join(format!("{}.log", m.spec.sensor_ref));
        let log = std::fs::create_dir_all(log_path.parent().expect("has a parent"))
            .and_then(|_| OpenOptions::new().create(true).append(true).open(&log_path));
        let log = match log {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(sensor = %m.spec.sensor_ref, "cannot open {}: {e}", log_path.display());
                return;
            }
        };
        let Some((program, args)) = m.spec.runner.command_line(&m.spec.path) else {
            tracing::error!(sensor = %m.spec.sensor_ref, "its runner type is not one this service runs; not started");
            return;
        };
        let mut cmd = Command::new(program);
        cmd.args(args);
        cmd.env_clear()
            .env("PATH", attune_service::runtimes::RUN_PATH)
            .env(env::API_URL, &self.args.service.api_url)
            .env(env::API_TOKEN, &self.args.service.token)
            .env(env::SENSOR_REF, &m.spec.sensor_ref)
            .env(env::SENSOR_TRIGGERS, &m.triggers)
            // Where a sensor that must restart for a fresh token keeps unsent events.
            .env(env::SENSOR_SPOOL, log_path.with_extension("spool.jsonl"))
            .env(env::LOG_LEVEL, self.args.service.log_level.name())
            .env(env::LOG_FORMAT, self.args.service.log_format.name())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if m.spec.runner == attune_pack::RunnerType::Python {
            cmd.envs(self.runtimes.python_env(&m.spec.pack_dir));
        }
        match cmd.spawn() {
            Ok(mut child) => {
                // Each line to the sensor's log file and, prefixed with its
                // ref, to this service's stdout (`docker compose logs sensor`).
                let log = std::sync::Arc::new(std::sync::Mutex::new(log));
                let prefix = format!("[{}] ", m.spec.sensor_ref);
                if let Some(out) = child.stdout.take() {
                    tee_lines(out, log.clone(), prefix.clone());
                }
                if let Some(err) = child.stderr.take() {
                    tee_lines(err, log, prefix);
                }
                tracing::info!(sensor = %m.spec.sensor_ref, pid = child.id(), log = %log_path.display(), "sensor started");
                m.child = Some(child);
                m.started = Instant::now();
            }
            Err(e) => {
                let why = why_not_started(&m.spec, &e, &self.runtimes);
                tracing::error!(sensor = %m.spec.sensor_ref, path = %m.spec.path.display(), "cannot start sensor: {why}; retrying in {:?}", m.backoff);
                m.restart_at = Instant::now() + m.backoff;
                m.backoff = (m.backoff * 2).min(BACKOFF.1);
            }
        }
    }

    /// Stops `sensors` together: SIGTERM to each one's process group at
    /// once, then until `deadline` for all of them to exit, then SIGKILL to
    /// every group (what a sensor left running ends with it). Returns how
    /// many had not exited by the deadline.
    fn stop<'a>(sensors: impl IntoIterator<Item = &'a mut Managed>, deadline: Instant) -> usize {
        let mut children: Vec<(String, Child)> = sensors
            .into_iter()
            .filter_map(|m| Some((m.spec.sensor_ref.clone(), m.child.take()?)))
            .collect();
        for (_, child) in &children {
            let _ = kill_process_group(Pid::from_child(child), Signal::TERM);
        }
        let exited = |child: &mut Child| matches!(child.try_wait(), Ok(Some(_)));
        wait_until(deadline, || {
            children
                .iter_mut()
                .map(|(_, c)| usize::from(!exited(c)))
                .sum()
        });
        let mut killed = 0;
        for (sensor, child) in &mut children {
            if !exited(child) {
                tracing::warn!(%sensor, "sensor still running at the deadline after SIGTERM; killing it");
                killed += 1;
            }
            let _ = kill_process_group(Pid::from_child(child), Signal::KILL);
            let _ = child.wait();
        }
        killed
    }

    /// The deadline of a stop that begins now.
    fn stop_deadline(&self) -> Instant {
        Instant::now() + self.args.service.drain.drain_timeout
    }

    /// Brings the running set in line with the packs and rules.
    fn reconcile(&mut self, restart_all: bool) {
        let wanted = desired::sensors(
            &self.args.service.packs_dir,
            &self.args.service.packs_dev_dir,
        );
        let gone: Vec<String> = self
            .sensors
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(mut m) = self.sensors.remove(&k) {
                tracing::info!(sensor = %k, "sensor no longer enabled; stopping it");
                Self::stop([&mut m], self.stop_deadline());
            }
        }
        for (k, spec) in wanted {
            let triggers = match desired::triggers(&self.api, &spec) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(sensor = %k, "cannot read its rules, keeping it as it is: {e}");
                    continue;
                }
            };
            let deadline = self.stop_deadline();
            match self.sensors.get_mut(&k) {
                Some(m) if m.spec == spec && m.triggers == triggers && !restart_all => {}
                Some(m) => {
                    tracing::info!(sensor = %k, "sensor or its rules changed; restarting it");
                    Self::stop([&mut *m], deadline);
                    m.spec = spec;
                    m.triggers = triggers;
                    m.backoff = BACKOFF.0;
                    m.restart_at = Instant::now();
                }
                None => {
                    let now = Instant::now();
                    self.sensors.insert(
                        k,
                        Managed {
                            spec,
                            triggers,
                            child: None,
                            started: now,
                            backoff: BACKOFF.0,
                            restart_at: now,
                        },
                    );
                }
            }
        }
    }

    /// Notices exits and starts what is due.
    fn tend(&mut self) {
        let mut to_start = vec![];
        for (k, m) in self.sensors.iter_mut() {
            if let Some(child) = m.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let pgid = Pid::from_child(child);
                let _ = kill_process_group(pgid, Signal::KILL);
                m.child = None;
                if m.started.elapsed() >= BACKOFF.1 {
                    m.backoff = BACKOFF.0;
                }
                // A binary that cannot work here (dynamic, for another machine)
                // may still start in an image with a libc: say why it exits.
                match native_problem(&m.spec) {
                    Some(why) => {
                        tracing::error!(sensor = %k, %status, restart_in_s = m.backoff.as_secs(), path = %m.spec.path.display(), "sensor exited: the binary {why}")
                    }
                    None => {
                        tracing::warn!(sensor = %k, %status, restart_in_s = m.backoff.as_secs(), "sensor exited; see its log")
                    }
                }
                m.restart_at = Instant::now() + m.backoff;
                m.backoff = (m.backoff * 2).min(BACKOFF.1);
            }
            if m.child.is_none() && Instant::now() >= m.restart_at {
                to_start.push(k.clone());
            }
        }
        for k in to_start {
            let mut m = self.sensors.remove(&k).expect("present");
            self.start(&mut m);
            self.sensors.insert(k, m);
        }
    }
}

/// Supervises sensors until SIGTERM or SIGINT, then stops them all.
pub fn supervise(args: Args) -> Result<(), String> {
    let stop =
        StopSignal::install().map_err(|e| format!("cannot handle SIGTERM and SIGINT: {e}"))?;
    let api = Client::with_timeout(
        &args.service.api_url,
        &args.service.token,
        Duration::from_secs(5),
    );
    let poll = Duration::from_secs_f64(args.poll_seconds.max(0.2));
    tracing::info!(packs = %args.service.packs_dir.display(), dev = %args.service.packs_dev_dir.display(), "attune-sensor ready");
    let runtimes = attune_service::Runtimes::detect();
    tracing::info!(runtimes = %runtimes.names().join(","), "runtimes of this container");
    let mut sup = Supervisor {
        args,
        api,
        runtimes,
        sensors: BTreeMap::new(),
    };
    let mut generation = None;
    let mut next_poll = Instant::now();
    while !stop.requested() {
        if Instant::now() >= next_poll {
            let now = attune_pack::volume_generation(&sup.args.service.packs_dir);
            let changed = generation.is_some() && now != generation;
            if changed {
                tracing::info!(generation = ?now, "the packs volume changed; restarting sensors");
            }
            generation = now;
            sup.reconcile(changed);
            next_poll = Instant::now() + poll;
        }
        sup.tend();
        std::thread::sleep(Duration::from_millis(100));
    }
    let running = sup.sensors.values().filter(|m| m.child.is_some()).count();
    let drain = Drain::begin("sensor", running, sup.args.service.drain.drain_timeout);
    let killed = Supervisor::stop(sup.sensors.values_mut(), drain.deadline());
    drain.end(killed, "killed (SIGKILL)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_packs_and_logs_dirs_are_made_absolute() {
        let cwd = std::env::current_dir().unwrap();
        let mut args = Args::try_parse_from([
            "attune-sensor",
            "--token",
            "t",
            "--packs-dir",
            "vol",
            "--packs-dev-dir",
            "../dev",
            "--logs-dir",
            "./logs",
        ])
        .unwrap();
        args.make_paths_absolute().unwrap();
        assert_eq!(args.service.packs_dir, cwd.join("vol"));
        assert_eq!(
            args.service.packs_dev_dir,
            cwd.parent().unwrap().join("dev")
        );
        assert_eq!(args.logs_dir, cwd.join("logs"));
    }

    fn spec(dir: &std::path::Path, runner: attune_pack::RunnerType) -> SensorSpec {
        SensorSpec {
            sensor_ref: "dyn.s".into(),
            path: dir.join("s"),
            pack_dir: dir.to_path_buf(),
            runner,
            trigger_types: vec![],
        }
    }

    /// A dynamic binary in a container without its loader fails with a bare
    /// ENOENT, retried every second: the log names the cause and the fix.
    #[test]
    fn a_sensor_that_cannot_start_is_logged_with_the_cause_and_the_fix() {
        use attune_pack::fixtures::{ElfSpec, elf_bytes};
        let tmp = tempfile::tempdir().unwrap();
        let arch = attune_pack::Arch::host().unwrap();
        std::fs::write(tmp.path().join("s"), elf_bytes(ElfSpec::dynamic(arch))).unwrap();
        let enoent = std::io::Error::from(std::io::ErrorKind::NotFound);
        let all = attune_service::Runtimes::detect();
        let why = why_not_started(
            &spec(tmp.path(), attune_pack::RunnerType::Native),
            &enoent,
            &all,
        );
        assert!(why.contains("the binary is"), "{why}");
        assert!(why.contains("interpreter"), "{why}");
        assert!(why.contains("scripts/build-pack-binaries"), "{why}");
        // A Python sensor where there is no python3 names the runtime.
        let no_python = attune_service::Runtimes {
            python: None,
            ..all
        };
        let why = why_not_started(
            &spec(tmp.path(), attune_pack::RunnerType::Python),
            &enoent,
            &no_python,
        );
        assert!(
            why.contains("sensor dyn.s needs the python runtime"),
            "{why}"
        );
    }
}
