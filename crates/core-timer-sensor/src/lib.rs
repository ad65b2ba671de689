//! `attune-core-timer-sensor`: the static native sensor of the core pack.
//!
//! It speaks Attune's sensor contract: configuration from `ATTUNE_*` variables
//! (see [`config::KEYS`]; the names, exit codes and log settings are
//! `attune-contract`'s, a crate of no dependencies but `tracing`), events posted to `POST /api/v1/events`, rules
//! reconciled from `GET /api/v1/rules`. It serves `core.intervaltimer`,
//! `core.crontimer` and `core.datetimetimer` ([`timer`]). It has no C code in
//! its dependency tree, so it builds static for musl on any architecture; it
//! does not read packs (that is `attune-pack`) and does not run actions.
//!
//! Threads: the scheduler ([`scheduler`]) queues events; a sender delivers them
//! in order with backoff ([`queue`], [`backoff`]); a reconciler refreshes the
//! timers; a signal thread stops all within a second of SIGTERM or SIGINT.
//! Every stop after the queue exists (a signal, a refused token, a panic)
//! keeps the unsent events in the spool ([`spool`]).

pub mod api;
pub mod backoff;
pub mod config;
pub mod http;
pub mod queue;
pub mod scheduler;
pub mod spool;
pub mod timer;

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use attune_contract::env;
use attune_contract::exit;
use attune_contract::log::{self, Timestamps};
use config::Config;

/// After SIGTERM the process ends within this long (the flush gets most of it).
const STOP_BUDGET: Duration = Duration::from_millis(900);

/// Prints to stdout; a closed stdout (`--help | head`) is not an error. With
/// `panic = "abort"`, `println!` on a broken pipe would abort the process.
fn print_out(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn help() -> String {
    format!(
        "attune-core-timer-sensor {}: fires Attune timer events (core.intervaltimer,
core.crontimer, core.datetimetimer) and posts them to the Attune API.

Usage: attune-core-timer-sensor [--stdin-config]

Options:
  --stdin-config  read the settings as one JSON object on stdin instead of the environment
  -h, --help      print this help
  -V, --version   print the version

Environment (or keys of the stdin object):
  {}    base URL of the API, http://host:port (required)
  {}  bearer token (required)
  {}  this sensor's ref [default: core.timer_sensor]
  {}  JSON array of {{id, trigger_ref, config}}; trigger_ref is
      inferred from the config keys (interval, expression, fire_at) when absent
  {}  seconds between rule reconciliations, 0 to disable [default: 30]
  {}  events held while the API is unreachable [default: 1000]
  {}  file that keeps the events still unsent at any stop, in order,
      for the next start, which sends them first [default: none: they are lost]
  {}  error, warn, info, debug, trace [default: info]
  {}  human (also pretty) or json [default: human]

Logs go to stderr; events go only to the API. 408, 429, 5xx and unreachable
are retried; only a 400 or 422 drops an event, with a warning naming it. A
refused token (401/403) stops it with exit 3, so that the sensor manager
restarts it with a fresh one.

{}",
        env!("CARGO_PKG_VERSION"),
        env::API_URL,
        env::API_TOKEN,
        env::SENSOR_REF,
        env::SENSOR_TRIGGERS,
        env::SENSOR_RECONCILE_SECONDS,
        env::SENSOR_QUEUE_CAPACITY,
        env::SENSOR_SPOOL,
        env::LOG_LEVEL,
        env::LOG_FORMAT,
        exit::help(),
    )
}

/// Parses arguments and configuration, then runs until SIGTERM or SIGINT.
pub fn main_with_args(args: &[String]) -> ExitCode {
    let mut stdin_config = false;
    for a in args {
        match a.as_str() {
            "-h" | "--help" => {
                print_out(&help());
                return ExitCode::from(exit::OK);
            }
            "-V" | "--version" => {
                print_out(&format!(
                    "attune-core-timer-sensor {}",
                    env!("CARGO_PKG_VERSION")
                ));
                return ExitCode::from(exit::OK);
            }
            "--stdin-config" => stdin_config = true,
            other => {
                eprintln!("attune-core-timer-sensor: unknown argument `{other}`; see --help");
                return ExitCode::from(exit::USAGE);
            }
        }
    }
    let config = if stdin_config {
        let mut text = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut text) {
            eprintln!("attune-core-timer-sensor: stdin: cannot read: {e}");
            return ExitCode::from(exit::USAGE);
        }
        Config::from_json(&text)
    } else {
        Config::from_env()
    };
    match config {
        Ok(c) => {
            log::init(c.log_format, c.log_level, Timestamps::Always);
            run(c)
        }
        Err(e) => {
            eprintln!("attune-core-timer-sensor: {e}");
            ExitCode::from(exit::USAGE)
        }
    }
}

/// Runs the sensor with a valid configuration.
pub fn run(config: Config) -> ExitCode {
    let api = api::Api::new(&config);
    let queue = Arc::new(queue::Queue::new(config.queue_capacity));
    let sched = Arc::new(scheduler::Scheduler::new());
    let (stop_tx, stop_rx) = mpsc::channel::<()>();

    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .expect("signal handlers install");
    {
        let (queue, sched) = (queue.clone(), sched.clone());
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(signal = sig, "stopping");
                sched.stop();
                queue.stop();
                let _ = stop_tx.send(());
            }
        });
    }
    keep_events_on_panic(queue.clone(), config.spool.clone());
    if config.spool.is_none() {
        tracing::warn!(
            "{} is not set: events still unsent when the sensor stops are lost",
            env::SENSOR_SPOOL
        );
    }

    tracing::info!(api = %config.api_url, sensor = %config.sensor_ref, timers = config.triggers.len(), "starting; waiting for the API");
    let mut wait = Duration::from_millis(250);
    while !api.healthy() {
        tracing::info!(
            retry_in_ms = wait.as_millis() as u64,
            "API not healthy yet at {}/health",
            config.api_url
        );
        if stop_rx.recv_timeout(wait).is_ok() {
            return ExitCode::from(exit::OK);
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    tracing::info!("API is healthy; timers start");
    if let Some(spool) = &config.spool {
        spool::restore(spool, |events| queue.restore(events, spool.to_path_buf()));
    }

    let (done_tx, done_rx) = mpsc::channel::<()>();
    {
        let (queue, api, sched) = (queue.clone(), api.clone(), sched.clone());
        std::thread::spawn(move || {
            queue.run_sender(&api, STOP_BUDGET - Duration::from_millis(100));
            if queue.auth_failed().is_some() {
                sched.stop();
            }
            let _ = done_tx.send(());
        });
    }
    if let Some(period) = config.reconcile {
        let (sched, api) = (sched.clone(), api.clone());
        std::thread::spawn(move || reconcile_loop(&api, &sched, period));
    }
    sched.run(config.triggers.clone(), &config.sensor_ref, &queue);

    // Stopped: give the sender its last flush, within the budget, then keep
    // whatever is left, whatever the reason for the stop.
    let stopped = Instant::now();
    let _ = done_rx.recv_timeout(STOP_BUDGET.saturating_sub(stopped.elapsed()));
    spool::keep(config.spool.as_deref(), &queue.drain());
    if let Some(status) = queue.auth_failed() {
        tracing::error!(status, "stopped: the API refused the token");
        return ExitCode::from(exit::ENVIRONMENT);
    }
    tracing::info!("stopped");
    ExitCode::from(exit::OK)
}

/// A panic is the one stop no code path returns from (the shipped binary
/// aborts): the hook keeps the unsent events first, then aborts, in every
/// build profile alike.
fn keep_events_on_panic(queue: Arc<queue::Queue>, spool: Option<std::path::PathBuf>) {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        match queue.try_drain() {
            Some(events) => spool::keep(spool.as_deref(), &events),
            None => {
                tracing::error!("cannot reach the event queue from the panic; its events are lost")
            }
        }
        std::process::abort();
    }));
}

/// Every `period`, asks the API for the enabled rules of each timer trigger and
/// hands the set to the scheduler; when the API cannot answer, the timers stay.
fn reconcile_loop(api: &api::Api, sched: &scheduler::Scheduler, period: Duration) {
    loop {
        std::thread::sleep(period);
        let mut all = vec![];
        let mut failed = None;
        for trigger_ref in timer::TRIGGER_TYPES {
            match api.rules(trigger_ref) {
                Ok(rules) => all.extend(rules),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            Some(e) => tracing::warn!("cannot reconcile rules, keeping the current timers: {e}"),
            None => {
                tracing::debug!(rules = all.len(), "reconciled rules");
                sched.set_desired(all);
            }
        }
    }
}
