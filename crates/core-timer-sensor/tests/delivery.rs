//! Delivery: outages lose nothing and keep order; 408, 429 and 5xx are
//! retried, only 400/422 drop an event; every stop keeps the unsent events in
//! the spool, which the next start sends first; 401 stops with exit 3; rule
//! reconciliation adds, changes and removes timers.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{FakeApi, Sensor, counts, spooled, spooled_as_logged, wait_for};

/// One interval timer (rule 1, every second), keeping unsent events in `spool`.
fn every_second(api: &FakeApi, spool: &Path) -> std::process::Command {
    let mut c = Sensor::command(
        api,
        json!([{"id": 1, "ref": "demo.r", "config": {"interval": 1}}]),
    );
    c.env("ATTUNE_SENSOR_SPOOL", spool);
    c
}

#[test]
fn api_outage_loses_no_event_and_keeps_order() {
    let api = FakeApi::start();
    let s = Sensor::spawn(Sensor::command(
        &api,
        json!([{"id": 1, "config": {"interval": 1}}]),
    ));
    assert!(wait_for(Duration::from_secs(4), || !api
        .delivered()
        .is_empty()));
    // Outage: first errors, then connections dropped.
    api.set(|b| b.events = 500);
    std::thread::sleep(Duration::from_millis(1500));
    api.set(|b| b.events = 0);
    std::thread::sleep(Duration::from_millis(1500));
    let failed = api
        .event_attempts()
        .iter()
        .filter(|r| r.status != 200)
        .count();
    assert!(
        failed >= 2,
        "the outage was not exercised ({failed} failed attempts)"
    );
    api.set(|b| b.events = 200);
    assert!(wait_for(Duration::from_secs(8), || api.delivered().len() >= 6));
    s.terminate();
    let counts: Vec<u64> = api
        .delivered()
        .iter()
        .map(|e| e["payload"]["execution_count"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=counts.len() as u64).collect();
    assert_eq!(counts, expected, "events were lost or reordered");
}

/// Upstream's contract: on 401/403 the sensor exits non-zero so its manager
/// restarts it with a fresh token (tokens expire); it kept running and
/// dropped events. Unsent events are kept in order in the spool, and the next
/// start sends them first.
#[test]
fn unauthorized_exits_non_zero_and_keeps_its_events_for_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("timer.spool.jsonl");
    let api = FakeApi::start();
    api.set(|b| b.events = 401);
    let (code, err) =
        Sensor::spawn(every_second(&api, &spool)).exit_within(Duration::from_secs(10));
    assert_eq!(code, Some(3), "401 is an environment error: {err}");
    assert!(err.contains("refused the token (HTTP 401)"), "{err}");
    let kept = spooled_as_logged(&spool, &err);
    assert_eq!(kept[0]["payload"]["execution_count"], 1, "{kept:?}");
    assert_eq!(kept[0]["trigger_instance_id"], "rule_1");

    // A fresh token: the kept event goes first.
    api.set(|b| b.events = 200);
    let s = Sensor::spawn(every_second(&api, &spool));
    assert!(wait_for(Duration::from_secs(6), || api.delivered().len() >= 2));
    let (_, code, _, _) = s.terminate();
    assert_eq!(code, Some(0));
    let counts = counts(&api.delivered());
    assert_eq!(
        counts[..2],
        [1, 1],
        "the kept event (count 1 of the first run) came first: {counts:?}"
    );
    assert!(!spool.exists());
}

#[test]
fn reconciliation_adds_changes_and_removes_timers() {
    let api = FakeApi::start();
    let rule = |id: u32, interval: u32| json!({"id": id, "ref": format!("demo.r{id}"), "trigger_ref": "core.intervaltimer", "trigger_params": {"interval": interval}, "enabled": true});
    api.set(|b| {
        b.rules = Some(BTreeMap::from([(
            "core.intervaltimer".to_string(),
            vec![rule(5, 1), rule(6, 1)],
        )]));
    });
    let mut cmd = Sensor::command(&api, json!([]));
    cmd.env("ATTUNE_SENSOR_RECONCILE_SECONDS", "1");
    let s = Sensor::spawn(cmd);
    let seen = |id: &str| {
        api.delivered()
            .iter()
            .any(|e| e["trigger_instance_id"] == id)
    };
    assert!(
        wait_for(Duration::from_secs(6), || seen("rule_5") && seen("rule_6")),
        "rules from both pages were not added"
    );
    // Rule 6 goes away and rule 7 appears.
    api.set(|b| {
        b.rules = Some(BTreeMap::from([(
            "core.intervaltimer".to_string(),
            vec![rule(5, 1), rule(7, 1)],
        )]));
    });
    assert!(wait_for(Duration::from_secs(6), || seen("rule_7")));
    std::thread::sleep(Duration::from_millis(1500));
    let cut = api.delivered().len();
    std::thread::sleep(Duration::from_millis(2200));
    // While the rules endpoint is down, the current timers keep running.
    api.set(|b| b.rules = None);
    std::thread::sleep(Duration::from_millis(2200));
    let (_, _, _, err) = s.terminate();
    let later = &api.delivered()[cut..];
    assert!(
        later.iter().all(|e| e["trigger_instance_id"] != "rule_6"),
        "removed rule still fires"
    );
    assert!(later.iter().any(|e| e["trigger_instance_id"] == "rule_5"));
    assert!(
        err.contains("timer removed") && err.contains("keeping the current timers"),
        "{err}"
    );
    let rule_reqs: Vec<String> = api
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/api/v1/rules")
        .map(|r| r.headers["authorization"].clone())
        .collect();
    assert!(rule_reqs.iter().all(|h| h == "Bearer s3cret"));
}

/// On main: SIGTERM while the API answered 401 lost every queued event (the
/// last flush took 401 as final), exited 0 and wrote no spool.
#[test]
fn sigterm_while_api_answers_401_spools_every_event() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("timer.spool.jsonl");
    let api = FakeApi::start();
    api.set(|b| b.events = 503);
    let s = Sensor::spawn(every_second(&api, &spool));
    assert!(wait_for(Duration::from_secs(6), || !api
        .event_attempts()
        .is_empty()));
    // Let a few more events queue behind the first (one a second).
    std::thread::sleep(Duration::from_secs(3));
    api.set(|b| b.events = 401);
    let (_, code, _, err) = s.terminate();
    assert_eq!(code, Some(3), "{err}");
    assert!(api.delivered().is_empty());
    let kept = spooled_as_logged(&spool, &err);
    let n = kept.len() as u64;
    assert!(n >= 2, "only {n} events were queued: {err}");
    assert_eq!(
        counts(&kept),
        (1..=n).collect::<Vec<_>>(),
        "lost or reordered"
    );
}

/// On main: a 408 (the API's own body timeout) was final and the event dropped.
#[test]
fn answer_408_is_retried_not_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let api = FakeApi::start();
    api.set(|b| b.events_script = VecDeque::from([408]));
    let s = Sensor::spawn(every_second(&api, &tmp.path().join("spool")));
    assert!(wait_for(Duration::from_secs(8), || api.delivered().len() >= 2));
    let (_, _, _, err) = s.terminate();
    let first = &api.event_attempts()[0];
    assert_eq!(
        (
            first.status,
            first.body["payload"]["execution_count"].as_u64()
        ),
        (408, Some(1))
    );
    assert_eq!(counts(&api.delivered())[..2], [1, 2], "{err}");
}

/// 429 and 503 are retried, and not before the `Retry-After` they carry
/// (on main the second attempt came after the 100 ms backoff).
#[test]
fn answer_429_and_503_are_retried_honouring_retry_after() {
    let tmp = tempfile::tempdir().unwrap();
    let api = FakeApi::start();
    api.set(|b| {
        b.events_script = VecDeque::from([429, 503]);
        b.retry_after = Some(1);
    });
    let s = Sensor::spawn(every_second(&api, &tmp.path().join("spool")));
    assert!(wait_for(Duration::from_secs(10), || !api
        .delivered()
        .is_empty()));
    let (_, _, _, err) = s.terminate();
    let attempts = api.event_attempts();
    let seen: Vec<(u16, u64)> = attempts
        .iter()
        .take(3)
        .map(|r| {
            (
                r.status,
                r.body["payload"]["execution_count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [(429, 1), (503, 1), (200, 1)], "{err}");
    for pair in attempts[..3].windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(990),
            "retried after {gap:?}, before Retry-After: 1"
        );
    }
}

/// Only 400 and 422 drop an event; on main the log did not say which event.
#[test]
fn answer_400_or_422_drops_with_a_warning_naming_the_event() {
    let tmp = tempfile::tempdir().unwrap();
    let api = FakeApi::start();
    api.set(|b| b.events_script = VecDeque::from([400, 422]));
    let s = Sensor::spawn(every_second(&api, &tmp.path().join("spool")));
    assert!(wait_for(Duration::from_secs(8), || !api
        .delivered()
        .is_empty()));
    let (_, _, _, err) = s.terminate();
    assert_eq!(
        counts(&api.delivered())[0],
        3,
        "events 1 and 2 were refused"
    );
    for (n, status) in [(1, 400), (2, 422)] {
        let line = err
            .lines()
            .find(|l| {
                l.contains(&format!(
                    "refused event core.intervaltimer rule_1 #{n} fired at "
                ))
            })
            .unwrap_or_else(|| panic!("no warning names event #{n}: {err}"));
        assert!(
            line.contains("WARN") && line.contains(&format!("HTTP {status}")),
            "{line}"
        );
    }
}

/// On main a stop by signal kept nothing, however full the queue was. The
/// queue holds 3: the spool gets the newest 3, in order (SIGINT as SIGTERM).
#[test]
fn full_queue_at_shutdown_is_spooled_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("timer.spool.jsonl");
    let api = FakeApi::start();
    api.set(|b| b.events = 0); // unreachable: connections dropped
    let mut c = every_second(&api, &spool);
    c.env("ATTUNE_SENSOR_QUEUE_CAPACITY", "3");
    let s = Sensor::spawn(c);
    // The head of the queue moves past event 1 only when the full queue drops it.
    assert!(wait_for(Duration::from_secs(20), || api
        .event_attempts()
        .iter()
        .any(
            |r| r.body["payload"]["execution_count"].as_u64() >= Some(2)
        )));
    let (_, code, _, err) = s.signal("INT");
    assert_eq!(code, Some(0), "{err}");
    let kept = counts(&spooled_as_logged(&spool, &err));
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(
        kept[0] >= 2 && kept.windows(2).all(|w| w[1] == w[0] + 1),
        "{kept:?}"
    );
    assert!(err.contains("event queue full"), "{err}");
}

/// The spool goes first after a restart, and is not lost when the restarted
/// sensor stops again before sending it (on main it was deleted on reading).
#[test]
fn restart_resends_the_spool_first() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("timer.spool.jsonl");
    let old = |n: u64| json!({"trigger_ref": "core.intervaltimer", "payload": {"execution_count": n}, "trigger_instance_id": "rule_9"});
    std::fs::write(&spool, format!("{}\n{}\n", old(101), old(102))).unwrap();

    // Restarted into an outage, and stopped again: the old events stay first.
    let api = FakeApi::start();
    api.set(|b| b.events = 503);
    let s = Sensor::spawn(every_second(&api, &spool));
    assert!(wait_for(Duration::from_secs(6), || api
        .event_attempts()
        .len()
        >= 2));
    let (_, code, _, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        api.event_attempts()[0].body,
        old(101),
        "the spool was not sent first"
    );
    let kept = spooled(&spool);
    assert_eq!(kept[..2], [old(101), old(102)], "{err}");
    assert!(
        kept[2..]
            .iter()
            .all(|e| e["trigger_instance_id"] == "rule_1")
    );

    // Restarted with the API up: the kept events go first, in order, and the
    // spool is removed once they are delivered.
    api.set(|b| b.events = 200);
    let s = Sensor::spawn(every_second(&api, &spool));
    assert!(wait_for(Duration::from_secs(8), || !spool.exists()
        && api.delivered().len() >= 3));
    s.terminate();
    let delivered: Vec<Value> = api.delivered();
    assert_eq!(delivered[..2], [old(101), old(102)]);
    assert!(!spool.exists(), "a spool was written with nothing unsent");
}
