//! The scheduler: runs the timers against their deadlines, turns each tick into
//! a queued event, and applies rule changes without disturbing unchanged timers.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use chrono::Utc;
use serde_json::Value;

use crate::api::Event;
use crate::config::TriggerInstance;
use crate::queue::Queue;
use crate::timer::{Running, Timer, infer_trigger_ref};

#[derive(Debug, Default)]
struct State {
    desired: Option<Vec<TriggerInstance>>,
    stopping: bool,
}

/// Runs timers until stopped.
#[derive(Debug, Default)]
pub struct Scheduler {
    state: Mutex<State>,
    changed: Condvar,
}

impl Scheduler {
    /// A scheduler with no timers.
    pub fn new() -> Scheduler {
        Scheduler::default()
    }

    /// Replaces the set of trigger instances (from rule reconciliation).
    pub fn set_desired(&self, instances: Vec<TriggerInstance>) {
        self.state.lock().expect("scheduler lock").desired = Some(instances);
        self.changed.notify_all();
    }

    /// Stops `run`.
    pub fn stop(&self) {
        self.state.lock().expect("scheduler lock").stopping = true;
        self.changed.notify_all();
    }

    /// Runs `initial` timers (and later sets) until stopped, queueing events.
    pub fn run(&self, initial: Vec<TriggerInstance>, sensor_ref: &str, queue: &Queue) {
        let mut timers = Timers::default();
        timers.apply(initial);
        loop {
            let next = timers
                .running
                .values()
                .filter_map(|r| r.due.map(|d| d.0))
                .min();
            let desired = {
                let mut st = self.state.lock().expect("scheduler lock");
                while !st.stopping && st.desired.is_none() {
                    match next {
                        None => st = self.changed.wait(st).expect("scheduler lock"),
                        Some(at) => {
                            let now = Instant::now();
                            if at <= now {
                                break;
                            }
                            st = self
                                .changed
                                .wait_timeout(st, at - now)
                                .expect("scheduler lock")
                                .0;
                        }
                    }
                }
                if st.stopping {
                    return;
                }
                st.desired.take()
            };
            if let Some(d) = desired {
                timers.apply(d);
            }
            let now = Instant::now();
            for r in timers.running.values_mut() {
                let deadline = r.due.map(|d| d.0);
                if let Some(payload) = r.fire(now, sensor_ref) {
                    let lateness_us =
                        deadline.map_or(0, |d| now.saturating_duration_since(d).as_micros() as u64);
                    tracing::debug!(id = %r.timer.id, trigger_ref = %r.timer.trigger_ref, count = r.count, lateness_us, "timer fired");
                    queue.push(Event {
                        trigger_ref: r.timer.trigger_ref.clone(),
                        payload,
                        trigger_instance_id: format!("rule_{}", r.timer.id),
                    });
                }
            }
            timers.retire_finished();
        }
    }
}

/// The running timers, and the one-shots and invalid ones not to start again.
#[derive(Debug, Default)]
struct Timers {
    running: BTreeMap<String, Running>,
    done: BTreeMap<String, Value>,
}

impl Timers {
    fn apply(&mut self, desired: Vec<TriggerInstance>) {
        let now = Utc::now();
        let wanted: BTreeMap<&str, &TriggerInstance> =
            desired.iter().map(|i| (i.id.as_str(), i)).collect();
        self.running.retain(|id, _| {
            let keep = wanted.contains_key(id.as_str());
            if !keep {
                tracing::info!(id = %id, "timer removed (its rule is gone or disabled)");
            }
            keep
        });
        self.done.retain(|id, _| wanted.contains_key(id.as_str()));
        for inst in desired.iter() {
            let trigger_ref = inst
                .trigger_ref
                .as_deref()
                .or_else(|| infer_trigger_ref(&inst.config));
            if let Some(r) = self.running.get(&inst.id)
                && Some(r.timer.trigger_ref.as_str()) == trigger_ref
                && r.timer.config == inst.config
            {
                continue; // unchanged: keeps its schedule
            }
            if self.done.get(&inst.id) == Some(&inst.config) {
                continue;
            }
            let verb = if self.running.contains_key(&inst.id) {
                "changed"
            } else {
                "added"
            };
            match Timer::new(inst, now) {
                Ok(t) => {
                    tracing::info!(id = %inst.id, trigger_ref = %t.trigger_ref, config = %inst.config, "timer {verb}");
                    self.running.insert(inst.id.clone(), Running::start(t));
                }
                Err(e) => {
                    tracing::error!(id = %inst.id, config = %inst.config, "timer for rule {} is invalid: {e}; it is skipped, the other timers run", inst.id);
                    self.running.remove(&inst.id);
                    self.done.insert(inst.id.clone(), inst.config.clone());
                }
            }
        }
    }

    /// Moves fired one-shots out of the running set.
    fn retire_finished(&mut self) {
        let finished: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| r.due.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in finished {
            if let Some(r) = self.running.remove(&id) {
                self.done.insert(id, r.timer.config);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inst(id: &str, config: Value) -> TriggerInstance {
        TriggerInstance {
            id: id.into(),
            trigger_ref: None,
            config,
        }
    }

    #[test]
    fn unchanged_timers_keep_their_schedule() {
        let mut t = Timers::default();
        t.apply(vec![
            inst("1", json!({"interval": 60})),
            inst("2", json!({"interval": 60})),
        ]);
        let due1 = t.running["1"].due;
        t.apply(vec![
            inst("1", json!({"interval": 60})),
            inst("3", json!({"interval": 5})),
        ]);
        assert_eq!(t.running["1"].due, due1, "unchanged timer was restarted");
        assert!(!t.running.contains_key("2"));
        assert!(t.running.contains_key("3"));
        t.apply(vec![inst("1", json!({"interval": 30}))]);
        assert_ne!(
            t.running["1"].due, due1,
            "changed timer keeps the old schedule"
        );
    }

    #[test]
    fn an_invalid_timer_is_skipped_and_not_retried_each_reconcile() {
        let mut t = Timers::default();
        let past = inst("9", json!({"fire_at": "2001-01-01T00:00:00Z"}));
        t.apply(vec![past.clone(), inst("1", json!({"interval": 1}))]);
        assert!(t.running.contains_key("1") && !t.running.contains_key("9"));
        assert!(t.done.contains_key("9"));
        t.apply(vec![past, inst("1", json!({"interval": 1}))]);
        assert!(!t.running.contains_key("9"));
    }
}
