//! The event queue: bounded, in order, retried with capped exponential backoff.
//! An outage shorter than the queue loses nothing; a full queue drops the
//! oldest event and says how many were dropped.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::api::{Api, Event, Outcome, TIMEOUT};

/// First retry delay.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct State {
    events: VecDeque<(u64, Event)>,
    next_seq: u64,
    dropped: u64,
    /// Dropped since the last warning, and when that was.
    dropped_unreported: u64,
    last_drop_warning: Option<Instant>,
    stopping: bool,
    /// The API refused the token: the sensor exits for its manager to
    /// restart it with a fresh one, keeping its events.
    auth_failed: Option<u16>,
}

/// At most one "queue full" warning per this period, with the count since the last.
const DROP_WARNING_PERIOD: Duration = Duration::from_secs(10);

/// Events waiting for the API.
#[derive(Debug)]
pub struct Queue {
    state: Mutex<State>,
    changed: Condvar,
    capacity: usize,
}

impl Queue {
    /// An empty queue holding at most `capacity` events.
    pub fn new(capacity: usize) -> Queue {
        Queue {
            state: Mutex::default(),
            changed: Condvar::new(),
            capacity,
        }
    }

    /// Adds an event, dropping the oldest when full.
    pub fn push(&self, event: Event) {
        let mut st = self.state.lock().expect("queue lock");
        if st.events.len() >= self.capacity {
            st.events.pop_front();
            st.dropped += 1;
            st.dropped_unreported += 1;
            // Rate-limited: at a high event rate one line per drop would flood the log.
            if st
                .last_drop_warning
                .is_none_or(|t| t.elapsed() >= DROP_WARNING_PERIOD)
            {
                tracing::warn!(
                    dropped = st.dropped_unreported,
                    dropped_total = st.dropped,
                    capacity = self.capacity,
                    "event queue full: dropped the oldest events (the API is unreachable, or slower than the timers fire)"
                );
                st.dropped_unreported = 0;
                st.last_drop_warning = Some(Instant::now());
            }
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.events.push_back((seq, event));
        self.changed.notify_all();
    }

    /// The HTTP status with which the API refused the token, if it did.
    pub fn auth_failed(&self) -> Option<u16> {
        self.state.lock().expect("queue lock").auth_failed
    }

    /// Every event still waiting, oldest first.
    pub fn pending(&self) -> Vec<Event> {
        let st = self.state.lock().expect("queue lock");
        st.events.iter().map(|(_, e)| e.clone()).collect()
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.state.lock().expect("queue lock").events.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks the sender to flush once and stop.
    pub fn stop(&self) {
        self.state.lock().expect("queue lock").stopping = true;
        self.changed.notify_all();
    }

    fn front(&self) -> Option<(u64, Event)> {
        let mut st = self.state.lock().expect("queue lock");
        loop {
            if st.stopping {
                return None;
            }
            if let Some(front) = st.events.front() {
                return Some(front.clone());
            }
            st = self.changed.wait(st).expect("queue lock");
        }
    }

    fn remove(&self, seq: u64) {
        let mut st = self.state.lock().expect("queue lock");
        if st.events.front().is_some_and(|(s, _)| *s == seq) {
            st.events.pop_front();
        }
    }

    /// Sleeps `d` unless stopped first; returns whether it was stopped.
    fn pause(&self, d: Duration) -> bool {
        let st = self.state.lock().expect("queue lock");
        let (st, _) = self
            .changed
            .wait_timeout_while(st, d, |s| !s.stopping)
            .expect("queue lock");
        st.stopping
    }

    /// Delivers events in order until stopped, then tries once more to flush
    /// what is left before `flush_deadline` after the stop.
    pub fn run_sender(&self, api: &Api, flush_budget: Duration) {
        let mut backoff = BACKOFF_START;
        while let Some((seq, event)) = self.front() {
            match api.post_event(&event, TIMEOUT) {
                Outcome::Ok(_) => {
                    self.remove(seq);
                    backoff = BACKOFF_START;
                    tracing::debug!(trigger_ref = %event.trigger_ref, instance = %event.trigger_instance_id, "event delivered");
                }
                Outcome::Rejected(status @ (401 | 403), _) => {
                    // Upstream's contract: exit non-zero, so the sensor manager
                    // restarts the sensor with a fresh token. The event stays queued.
                    tracing::error!(
                        status,
                        queued = self.len(),
                        "the API refused the token (HTTP {status}); stopping so the sensor manager restarts this sensor with a fresh token"
                    );
                    let mut st = self.state.lock().expect("queue lock");
                    st.auth_failed = Some(status);
                    st.stopping = true;
                    self.changed.notify_all();
                    return;
                }
                Outcome::Rejected(status, body) => {
                    self.remove(seq);
                    tracing::error!(status, body, trigger_ref = %event.trigger_ref, "the API rejected an event; dropped");
                }
                Outcome::Retry(why) => {
                    tracing::warn!(
                        retry_in_ms = backoff.as_millis() as u64,
                        queued = self.len(),
                        "cannot deliver event: {why}"
                    );
                    if self.pause(backoff) {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        self.flush(api, Instant::now() + flush_budget);
    }

    fn flush(&self, api: &Api, deadline: Instant) {
        loop {
            let front = self
                .state
                .lock()
                .expect("queue lock")
                .events
                .front()
                .cloned();
            let Some((seq, event)) = front else { return };
            let left = deadline.saturating_duration_since(Instant::now());
            if left < Duration::from_millis(20) {
                break;
            }
            match api.post_event(&event, left) {
                Outcome::Ok(_) | Outcome::Rejected(..) => self.remove(seq),
                Outcome::Retry(why) => {
                    tracing::warn!("last flush failed: {why}");
                    break;
                }
            }
        }
        let lost = self.len();
        if lost > 0 {
            tracing::warn!(lost, "stopping with undelivered events");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(n: u64) -> Event {
        Event {
            trigger_ref: "core.intervaltimer".into(),
            payload: json!({"n": n}),
            trigger_instance_id: "rule_1".into(),
        }
    }

    #[test]
    fn full_queue_drops_the_oldest() {
        let q = Queue::new(2);
        for n in 0..3 {
            q.push(event(n));
        }
        let st = q.state.lock().unwrap();
        let kept: Vec<u64> = st
            .events
            .iter()
            .map(|(_, e)| e.payload["n"].as_u64().unwrap())
            .collect();
        assert_eq!(kept, [1, 2]);
        assert_eq!(st.dropped, 1);
    }

    /// At high rates it logged one warning per dropped event.
    #[test]
    fn drop_warnings_are_rate_limited_and_counted() {
        let q = Queue::new(1);
        for n in 0..1000 {
            q.push(event(n));
        }
        let st = q.state.lock().unwrap();
        assert_eq!(st.dropped, 999);
        // One warning (the first drop); the other 998 wait for the next period.
        assert_eq!(st.dropped_unreported, 998);
    }

    #[test]
    fn remove_only_takes_the_event_that_was_sent() {
        let q = Queue::new(1);
        q.push(event(0));
        let (seq, _) = q.front().unwrap();
        q.push(event(1)); // overflow drops event 0 while it was being sent
        q.remove(seq);
        assert_eq!(q.len(), 1);
    }
}
