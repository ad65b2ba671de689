//! Delivery: outages lose nothing and keep order; 401 is reported, not retried;
//! rule reconciliation adds, changes and removes timers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::util::{FakeApi, Sensor, wait_for};

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
    let mut c = Sensor::command(
        &api,
        json!([{"id": 1, "ref": "demo.r", "config": {"interval": 1}}]),
    );
    c.env("ATTUNE_SENSOR_SPOOL", &spool);
    let mut s = Sensor::spawn(c);
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the sensor did not exit on 401"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(4));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut s.child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("refused the token (HTTP 401)"), "{err}");
    let kept = std::fs::read_to_string(&spool).unwrap();
    let first: serde_json::Value = serde_json::from_str(kept.lines().next().unwrap()).unwrap();
    assert_eq!(first["payload"]["execution_count"], 1, "{kept}");
    assert_eq!(first["trigger_instance_id"], "rule_1");

    // A fresh token: the kept event goes first.
    api.set(|b| b.events = 200);
    let mut c = Sensor::command(
        &api,
        json!([{"id": 1, "ref": "demo.r", "config": {"interval": 1}}]),
    );
    c.env("ATTUNE_SENSOR_SPOOL", &spool);
    let s = Sensor::spawn(c);
    assert!(wait_for(Duration::from_secs(6), || api.delivered().len() >= 2));
    let (_, code, _, _) = s.terminate();
    assert_eq!(code, Some(0));
    let counts: Vec<u64> = api
        .delivered()
        .iter()
        .map(|e| e["payload"]["execution_count"].as_u64().unwrap())
        .collect();
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
