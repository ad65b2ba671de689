//! `attune-worker`: claims executions from the API (several workers never run
//! the same one: the API hands each out once), runs the action from the packs
//! volume or packs.dev ([`run`]), and reports the result, retrying while the API
//! is briefly down so no result is lost. On SIGTERM or SIGINT it claims
//! nothing more and drains ([`drain`]): the running actions finish within
//! `--drain-timeout`, or are killed and reported failed.
//!
//! It does not load packs (the API's registry says what to run) or run sensors.

pub mod drain;
pub mod run;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use attune_service::shutdown::{Drain, StopSignal};
use attune_service::{ApiError, Client, PathError, ServiceArgs, env, paths};
use clap::Parser;
use serde_json::json;

/// Runs Attune actions claimed from the API.
#[derive(Debug, Parser)]
#[command(name = "attune-worker", version, after_help = after_help())]
pub struct Args {
    /// API, packs and logging.
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Name reported to the API [default: worker-<pid>].
    #[arg(long, env = env::WORKER_NAME)]
    pub name: Option<String>,
    /// Executions run at once.
    #[arg(long, env = env::WORKER_CONCURRENCY, default_value_t = 2)]
    pub concurrency: usize,
    /// Bytes of stdout and of stderr kept per execution.
    #[arg(long, env = env::WORKER_MAX_OUTPUT, default_value_t = 1 << 20)]
    pub max_output: usize,
}

impl Args {
    /// Makes every path given to the worker absolute against the current
    /// directory; called once, at startup: actions run in their pack's
    /// directory, where a relative path names nothing.
    pub fn make_paths_absolute(&mut self) -> Result<(), PathError> {
        self.service.make_paths_absolute()
    }
}

/// `--help`'s last paragraphs: `install-agent`, then the exit codes.
fn after_help() -> String {
    format!(
        "Also: {}\n\n{}",
        attune_service::agent::USAGE.replacen("usage: ", "", 1),
        attune_service::exit::help()
    )
}

/// Retries `f` while the API is unreachable, with backoff, until it answers or
/// `give_up` is set; returns the last result.
fn with_retry<T>(
    what: &str,
    give_up: &AtomicBool,
    mut f: impl FnMut() -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let mut wait = Duration::from_millis(200);
    loop {
        match f() {
            Err(e) if e.is_transient() && !give_up.load(Ordering::Relaxed) => {
                tracing::warn!(retry_in_ms = wait.as_millis() as u64, "{what}: {e}");
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// Runs until SIGTERM or SIGINT, then drains: running executions finish (or
/// are killed at the deadline) and are reported first.
pub fn work(args: Args) -> Result<(), String> {
    let stop =
        StopSignal::install().map_err(|e| format!("cannot handle SIGTERM and SIGINT: {e}"))?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    // Actions' HOME and parameter files: absolute like the other paths, since
    // actions run in their pack's directory.
    let temp_dir = paths::absolute("TMPDIR", &std::env::temp_dir()).map_err(|e| e.to_string())?;
    let api = Client::new(&args.service.api_url, &args.service.token);
    let runner = run::Runner {
        packs_dir: args.service.packs_dir.clone(),
        dev_dir: args.service.packs_dev_dir.clone(),
        api_url: args.service.api_url.clone(),
        temp_dir,
        max_output: args.max_output,
        default_timeout: Duration::from_secs(600),
        runtimes: attune_service::Runtimes::detect(),
    };
    // Sent with every claim: the API hands this worker only what it can run.
    let runtimes = runner.runtimes.names();
    let actions = drain::Actions::new(args.service.drain.drain_timeout);
    tracing::info!(worker = %name, api = %args.service.api_url, concurrency = args.concurrency, runtimes = %runtimes.join(","), python = ?runner.runtimes.python.as_ref().map(|p| &p.1), "attune-worker ready");
    let (drain, cut) = std::thread::scope(|s| {
        for slot in 0..args.concurrency.max(1) {
            let (api, runner, stop, actions) = (&api, &runner, &stop, &actions);
            let name = format!("{name}/{slot}");
            let claim = json!({"worker": name, "wait_ms": 1000, "runtimes": runtimes});
            s.spawn(move || worker_loop(api, runner, stop, actions, &claim));
        }
        while !stop.requested() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let drain = Drain::begin(
            "action",
            actions.running(),
            args.service.drain.drain_timeout,
        );
        drain.wait(|| actions.busy());
        let cut = actions.end();
        // The slots still report what ran before the scope ends.
        (drain, cut)
    });
    drain.end(cut, "killed and reported failed");
    Ok(())
}

fn worker_loop(
    api: &Client,
    runner: &run::Runner,
    stop: &StopSignal,
    actions: &drain::Actions,
    claim: &serde_json::Value,
) {
    // Never give up on a result: a lost report would leave the execution running forever.
    let never = AtomicBool::new(false);
    while !stop.requested() {
        let claimed = actions.claiming(|| {
            with_retry("claim", stop.flag(), || {
                api.post::<_, run::ClaimAnswer>("/api/v1/executions/claim", claim)
            })
        });
        let answer = match claimed {
            Ok(Some(answer)) => answer,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!("claim failed: {e}");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        // A claim it cannot read is reported failed too: never claimed again.
        let Some((id, report)) = runner.run_answer(&answer, |c| actions.run(runner, c)) else {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        };
        let path = format!("/api/v1/executions/{id}/result");
        let sent = with_retry("report", &never, || {
            api.post::<_, serde_json::Value>(&path, &report)
        });
        if let Err(e) = sent {
            // A refused result must still end the execution, or its lease would
            // expire and it would run again, forever: report the refusal itself.
            tracing::error!(execution = id, "the API refused the result: {e}");
            let fallback = run::Report::refused(&report, &e.to_string());
            if let Err(e) = with_retry("report", &never, || {
                api.post::<_, serde_json::Value>(&path, &fallback)
            }) {
                tracing::error!(execution = id, "the API refused the short result too: {e}");
            }
        }
    }
}
