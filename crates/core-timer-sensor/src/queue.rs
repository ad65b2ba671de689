//! The event queue: bounded, in order, each event retried with jittered
//! exponential backoff ([`crate::backoff`]) until the API takes it. An outage
//! shorter than the queue loses nothing; a full queue drops the oldest event
//! and says how many were dropped. Only a 400 or 422 drops one event (it can
//! never succeed), naming it. Delivery is at least once: an event in flight when
//! the sensor stops is kept, and may arrive twice.
//!
//! When the sensor stops (a signal, a refused token), [`Queue::drain`] hands
//! what is left to the spool ([`crate::spool`]). Events restored from the spool
//! go first; the spool file stays until none of them is queued any more.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::api::{Api, Event, Outcome, TIMEOUT};
use crate::backoff::Backoff;

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
    /// The spool this run started from, and the sequence number of its last
    /// event: the file is removed once no event up to that one is queued.
    restored: Option<(u64, PathBuf)>,
}

impl State {
    /// Removes the restored spool once none of its events is queued.
    fn settle_restored(&mut self) {
        let Some((through, _)) = &self.restored else {
            return;
        };
        if self.events.front().is_some_and(|(seq, _)| seq <= through) {
            return;
        }
        if let Some((_, path)) = self.restored.take() {
            crate::spool::remove_delivered(&path);
        }
    }

    fn drain(&mut self) -> Vec<Event> {
        self.stopping = true;
        self.restored = None; // the caller rewrites the spool
        self.events.drain(..).map(|(_, e)| e).collect()
    }
}

/// At most one "queue full" warning per this period, with the count since the last.
const DROP_WARNING_PERIOD: Duration = Duration::from_secs(10);

/// Below this much time left, the last flush does not start another request.
const FLUSH_MIN_LEFT: Duration = Duration::from_millis(20);

/// Events waiting for the API.
#[derive(Debug)]
pub struct Queue {
    state: Mutex<State>,
    changed: Condvar,
    capacity: usize,
}

/// What the sender does after one attempt.
enum Step {
    /// The event is done with (delivered, or dropped as invalid): next one.
    Next,
    /// Not delivered: wait this long, then try the same event again.
    Wait(Duration, String),
    /// The token is refused: stop sending.
    Stop,
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

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("queue lock")
    }

    /// Adds an event, dropping the oldest when full.
    pub fn push(&self, event: Event) {
        let mut st = self.lock();
        if st.events.len() >= self.capacity {
            if let Some((_, oldest)) = st.events.pop_front() {
                tracing::debug!("queue full: dropped event {oldest}");
            }
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
            st.settle_restored();
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.events.push_back((seq, event));
        self.changed.notify_all();
    }

    /// Queues the events of the spool at `path` (oldest first) ahead of any
    /// new one, taking each from `events` only once the one before is queued
    /// (so a spool is never held whole: beyond the capacity the oldest are
    /// dropped, as at any push); `path` is removed once none of them is queued
    /// any more. Returns how many were taken.
    pub fn restore(&self, events: impl IntoIterator<Item = Event>, path: PathBuf) -> usize {
        let mut taken = 0;
        for e in events {
            self.push(e);
            taken += 1;
        }
        if taken > 0 {
            let mut st = self.lock();
            st.restored = st.next_seq.checked_sub(1).map(|last| (last, path));
            st.settle_restored();
        }
        taken
    }

    /// The HTTP status with which the API refused the token, if it did.
    pub fn auth_failed(&self) -> Option<u16> {
        self.lock().auth_failed
    }

    /// Every event still waiting, oldest first.
    pub fn pending(&self) -> Vec<Event> {
        self.lock().events.iter().map(|(_, e)| e.clone()).collect()
    }

    /// Stops the sender and takes every event still waiting, oldest first, for
    /// the spool. An event in flight is among them: if the API takes it after
    /// all, the next start sends it again (at least once, never lost).
    pub fn drain(&self) -> Vec<Event> {
        let events = self.lock().drain();
        self.changed.notify_all();
        events
    }

    /// [`Queue::drain`] from a panic hook: `None` when the lock is held (by the
    /// panicking thread itself, perhaps), rather than waiting for ever.
    pub fn try_drain(&self) -> Option<Vec<Event>> {
        let mut st = match self.state.try_lock() {
            Ok(st) => st,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(st.drain())
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks the sender to flush once and stop.
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.changed.notify_all();
    }

    fn front(&self) -> Option<(u64, Event)> {
        let mut st = self.lock();
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
        let mut st = self.lock();
        if st.events.front().is_some_and(|(s, _)| *s == seq) {
            st.events.pop_front();
            st.settle_restored();
        }
    }

    /// Sleeps `d` unless stopped first; returns whether it was stopped.
    fn pause(&self, d: Duration) -> bool {
        let st = self.lock();
        let (st, _) = self
            .changed
            .wait_timeout_while(st, d, |s| !s.stopping)
            .expect("queue lock");
        st.stopping
    }

    /// One attempt at the event `seq`.
    fn attempt(
        &self,
        api: &Api,
        (seq, event): &(u64, Event),
        timeout: Duration,
        backoff: &mut Backoff,
    ) -> Step {
        match api.post_event(event, timeout) {
            Outcome::Ok(_) => {
                self.remove(*seq);
                backoff.reset();
                tracing::debug!(trigger_ref = %event.trigger_ref, instance = %event.trigger_instance_id, "event delivered");
                Step::Next
            }
            Outcome::Unauthorized(status) => {
                // Upstream's contract: exit non-zero, so the sensor manager
                // restarts the sensor with a fresh token. The event stays queued.
                let mut st = self.lock();
                tracing::error!(
                    status,
                    queued = st.events.len(),
                    "the API refused the token (HTTP {status}); stopping so the sensor manager restarts this sensor with a fresh token"
                );
                st.auth_failed = Some(status);
                st.stopping = true;
                self.changed.notify_all();
                Step::Stop
            }
            Outcome::Invalid(status, body) => {
                self.remove(*seq);
                tracing::warn!(
                    status,
                    body,
                    trigger_ref = %event.trigger_ref,
                    instance = %event.trigger_instance_id,
                    "the API refused event {event} as invalid (HTTP {status}); dropped it, since sending it again cannot succeed"
                );
                Step::Next
            }
            Outcome::Retry { why, after } => Step::Wait(backoff.next(after), why),
        }
    }

    /// Delivers events in order until stopped, then tries once more to flush
    /// what is left within `flush_budget`. Returns early, without the flush,
    /// when the API refuses the token.
    pub fn run_sender(&self, api: &Api, flush_budget: Duration) {
        let mut backoff = Backoff::new();
        while let Some(front) = self.front() {
            match self.attempt(api, &front, TIMEOUT, &mut backoff) {
                Step::Next => {}
                Step::Stop => return,
                Step::Wait(wait, why) => {
                    tracing::warn!(
                        retry_in_ms = wait.as_millis() as u64,
                        queued = self.len(),
                        "cannot deliver event {}: {why}",
                        front.1
                    );
                    if self.pause(wait) {
                        break;
                    }
                }
            }
        }
        self.flush(api, Instant::now() + flush_budget);
    }

    /// After the stop: sends what it can before `deadline`, stopping at the
    /// first event the API does not take; the rest is for the spool.
    fn flush(&self, api: &Api, deadline: Instant) {
        let mut backoff = Backoff::new();
        loop {
            let Some(front) = self.lock().events.front().cloned() else {
                return;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left < FLUSH_MIN_LEFT {
                return;
            }
            match self.attempt(api, &front, left, &mut backoff) {
                Step::Next => {}
                Step::Stop => return,
                Step::Wait(_, why) => {
                    tracing::warn!("last flush stopped at event {}: {why}", front.1);
                    return;
                }
            }
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

    /// The spool was removed as soon as it was read: a crash before its
    /// events were sent lost them.
    #[test]
    fn the_restored_spool_stays_until_its_events_are_delivered() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.jsonl");
        std::fs::write(&path, "kept").unwrap();
        let q = Queue::new(10);
        q.restore(vec![event(0), event(1)], path.clone());
        q.push(event(2));
        let (seq, _) = q.front().unwrap();
        q.remove(seq);
        assert!(
            path.exists(),
            "removed with one restored event still queued"
        );
        let (seq, _) = q.front().unwrap();
        q.remove(seq);
        assert!(!path.exists(), "kept after its events were delivered");
        assert_eq!(q.pending(), [event(2)]);
    }

    #[test]
    fn drain_takes_everything_in_order_and_stops_the_sender() {
        let q = Queue::new(10);
        for n in 0..3 {
            q.push(event(n));
        }
        assert_eq!(q.drain(), [event(0), event(1), event(2)]);
        assert!(q.is_empty());
        assert!(q.front().is_none(), "the sender goes on after the drain");
    }

    /// The panic hook must not wait for a lock the panicking thread holds.
    #[test]
    fn try_drain_gives_up_on_a_held_lock_and_takes_a_poisoned_one() {
        let q = std::sync::Arc::new(Queue::new(10));
        q.push(event(0));
        {
            let _held = q.lock();
            assert!(q.try_drain().is_none());
        }
        let q2 = q.clone();
        let _ = std::thread::spawn(move || {
            let _held = q2.lock();
            panic!("poisons the lock");
        })
        .join();
        assert_eq!(q.try_drain(), Some(vec![event(0)]));
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
