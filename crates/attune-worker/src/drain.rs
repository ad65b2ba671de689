//! What a stopping worker does with the actions it runs
//! ([`attune_service::shutdown`]): it claims nothing more, lets them finish
//! within the drain timeout and reports them; past the deadline it kills
//! their process groups and reports each of those executions `failed`, with
//! the reason "worker stopped". Nothing is lost: every claimed execution gets
//! a result.
//!
//! Why failed, not handed back: the action may have done part of its work, so
//! running it again could do that twice. Upstream Attune's worker does not
//! hand back either: it waits for its tasks up to its `shutdown_timeout`, and
//! an execution it leaves `running` is later marked `abandoned` by the
//! executor's timeout monitor. Here the result is immediate.
//!
//! The drain waits for the slots that are busy: running an action, or in a
//! claim (one may still hand out an execution). Then [`Actions::end`] ends
//! it, at the deadline or earlier when nothing is busy.
//!
//! Invariant: once [`Actions::end`] has run, no action of this worker runs
//! unkilled. A slot counts itself running before it looks at the ended flag,
//! and the drain sets the flag before it counts the slots running (both
//! sequentially consistent), so either the slot sees the flag and does not
//! start the action (it reports it failed, never run), or the drain sees the
//! slot and kills until the action is over.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};

use crate::run::{Claimed, Report, Runner};

/// The slots of this worker that are busy, and whether the drain has ended.
#[derive(Debug)]
pub struct Actions {
    running: AtomicUsize,
    claiming: AtomicUsize,
    ended: AtomicBool,
    /// The drain timeout, for the reason given to the API.
    timeout: Duration,
}

/// Counts one slot in a counter while it lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn enter(count: &'a AtomicUsize) -> Counted<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Counted(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Actions {
    /// Nothing busy yet; `timeout` is the drain timeout.
    pub fn new(timeout: Duration) -> Actions {
        Actions {
            running: AtomicUsize::new(0),
            claiming: AtomicUsize::new(0),
            ended: AtomicBool::new(false),
            timeout,
        }
    }

    /// How many actions are running.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// How many slots are busy: running an action or claiming one.
    pub fn busy(&self) -> usize {
        self.running() + self.claiming.load(Ordering::SeqCst)
    }

    /// Runs `claim` counted as claiming.
    pub fn claiming<T>(&self, claim: impl FnOnce() -> T) -> T {
        let _claiming = Counted::enter(&self.claiming);
        claim()
    }

    /// Runs `c` with `runner`, unless the drain has ended; an action killed
    /// when it ended is reported `failed`, "worker stopped".
    pub fn run(&self, runner: &Runner, c: &Claimed) -> Report {
        let _running = Counted::enter(&self.running);
        if self.ended.load(Ordering::SeqCst) {
            return Report::not_started(
                "worker stopped: the execution was claimed as the worker stopped, and not run"
                    .into(),
            );
        }
        let report = runner.run(c);
        // Killed by a signal (no exit code) with no reason of its own: ours.
        if self.ended.load(Ordering::SeqCst) && report.exit_code.is_none() && report.error.is_none()
        {
            return Report {
                status: "failed".into(),
                error: Some(format!(
                    "worker stopped: the action was killed when the worker's drain timeout of {:?} (--drain-timeout) passed",
                    self.timeout
                )),
                ..report
            };
        }
        report
    }

    /// Ends the drain: kills the actions' process groups until none runs;
    /// returns how many were running (0 when the drain ends with nothing
    /// busy).
    pub fn end(&self) -> usize {
        self.ended.store(true, Ordering::SeqCst);
        let cut = self.running();
        while self.running() > 0 {
            for group in action_groups() {
                let _ = kill_process_group(group, Signal::KILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        cut
    }
}

/// The process groups of this worker's actions: its child processes that
/// lead their own group (the runner starts each action so).
fn action_groups() -> Vec<Pid> {
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        tracing::error!("cannot read /proc, so the actions cannot be found to be killed");
        return vec![];
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| leads_a_group_under(*pid, me))
        .filter_map(|pid| Pid::from_raw(pid.try_into().ok()?))
        .collect()
}

/// Whether process `pid` is a child of `parent` and leads its own process
/// group, from `/proc/<pid>/stat`: state, parent and group follow the `)`
/// that ends the command's name.
fn leads_a_group_under(pid: u32, parent: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().take(3).collect();
    matches!(fields.as_slice(), [_state, ppid, pgrp]
        if ppid.parse() == Ok(parent) && pgrp.parse() == Ok(pid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    /// Only children that lead their own group are found: the worker's other
    /// children (none today) and unrelated processes are left alone.
    #[test]
    fn action_groups_are_this_processs_group_leading_children() {
        let mut own = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let mut shared = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let groups = action_groups();
        let has = |c: &std::process::Child| groups.contains(&Pid::from_child(c));
        let (found_own, found_shared) = (has(&own), has(&shared));
        for c in [&mut own, &mut shared] {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        assert!(found_own, "{groups:?}");
        assert!(!found_shared, "{groups:?}");
    }

    /// A claim that comes back after the drain ended is not started (the
    /// kill sweep is over): it is reported failed at once.
    #[test]
    fn a_claim_after_the_drain_is_reported_without_running() {
        let tmp = tempfile::tempdir().unwrap();
        let actions_dir = tmp.path().join("demo/actions");
        std::fs::create_dir_all(&actions_dir).unwrap();
        std::fs::write(actions_dir.join("a.sh"), "#!/bin/sh\ntouch \"$0.ran\"\n").unwrap();
        let runner = Runner {
            packs_dir: tmp.path().into(),
            dev_dir: tmp.path().join("dev"),
            api_url: "http://api".into(),
            temp_dir: std::env::temp_dir(),
            max_output: 64,
            default_timeout: Duration::from_secs(10),
            runtimes: attune_service::Runtimes::detect(),
        };
        let claimed: Claimed = serde_json::from_value(serde_json::json!({
            "execution": {"id": 1, "action_ref": "demo.a", "parameters": {}},
            "action": {"ref": "demo.a", "label": "A", "runner_type": "shell", "entry_point": "a.sh"},
            "pack_ref": "demo",
            "source": "volume",
        }))
        .unwrap();
        // Before the cut it runs.
        let actions = Actions::new(Duration::from_secs(3));
        assert_eq!(actions.run(&runner, &claimed).status, "succeeded");
        std::fs::remove_file(actions_dir.join("a.sh.ran")).unwrap();
        assert_eq!(actions.end(), 0);
        let report = actions.run(&runner, &claimed);
        assert_eq!(report.status, "failed");
        let error = report.error.unwrap();
        assert!(
            error.starts_with("worker stopped") && error.contains("not run"),
            "{error}"
        );
        assert!(!actions_dir.join("a.sh.ran").exists(), "the action ran");
        assert_eq!(actions.running(), 0);
    }
}
