//! The three timer types fire on time with the contract's payloads and headers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::util::{FakeApi, Sensor, wait_for};

fn at(v: &serde_json::Value, key: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v[key].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn interval_timer_fires_on_schedule_with_payload_and_headers() {
    let api = FakeApi::start();
    let s = Sensor::spawn(Sensor::command(
        &api,
        json!([{"id": 1, "trigger_ref": "core.intervaltimer", "config": {"interval": 1, "unit": "seconds"}}]),
    ));
    assert!(wait_for(Duration::from_secs(6), || api.delivered().len() >= 3));
    let (_, code, stdout, _) = s.terminate();
    assert_eq!(code, Some(0));
    assert!(
        stdout.is_empty(),
        "events must never go to stdout: {stdout}"
    );
    let events = api.delivered();
    assert!(events.len() >= 3);
    for (i, e) in events.iter().take(3).enumerate() {
        assert_eq!(e["trigger_ref"], "core.intervaltimer");
        assert_eq!(e["trigger_instance_id"], "rule_1");
        let p = &e["payload"];
        assert_eq!(p["type"], "interval");
        assert_eq!(p["interval_seconds"], 1);
        assert_eq!(p["execution_count"], i as u64 + 1);
        assert_eq!(p["sensor_ref"], "core.timer_sensor");
    }
    // Absolute deadlines: tick 3 is two seconds after tick 1, give or take scheduling
    // on a loaded machine; drift would add up tick after tick. Precision is measured
    // by bench/timer-sensor, not asserted here.
    let gap = at(&events[2]["payload"], "fired_at") - at(&events[0]["payload"], "fired_at");
    assert!(
        (1950..2250).contains(&gap.num_milliseconds()),
        "ticks drift: {gap}"
    );
    let req = &api.event_attempts()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.headers["authorization"], "Bearer s3cret");
    assert_eq!(req.headers["content-type"], "application/json");
}

#[test]
fn cron_timer_fires_each_matching_second() {
    let api = FakeApi::start();
    let s = Sensor::spawn(Sensor::command(
        &api,
        json!([{"id": "c", "config": {"expression": "* * * * * *"}}]),
    ));
    assert!(wait_for(Duration::from_secs(6), || api.delivered().len() >= 3));
    s.terminate();
    let events = api.delivered();
    for pair in events.windows(2).take(2) {
        let (a, b) = (&pair[0]["payload"], &pair[1]["payload"]);
        assert_eq!(a["type"], "cron");
        assert_eq!(
            at(b, "scheduled_at") - at(a, "scheduled_at"),
            chrono::Duration::seconds(1)
        );
        assert_eq!(a["next_fire_at"], b["scheduled_at"]);
        assert_eq!(at(a, "scheduled_at").timestamp_subsec_millis(), 0);
        assert!(at(a, "fired_at") >= at(a, "scheduled_at"));
        assert_eq!(
            b["execution_count"].as_u64().unwrap(),
            a["execution_count"].as_u64().unwrap() + 1
        );
    }
    assert_eq!(events[0]["trigger_ref"], "core.crontimer");
}

#[test]
fn datetime_timer_fires_once() {
    let api = FakeApi::start();
    let fire_at = Utc::now() + chrono::Duration::milliseconds(1200);
    let s = Sensor::spawn(Sensor::command(
        &api,
        json!([{"id": 3, "trigger_ref": "core.datetimetimer", "config": {"fire_at": fire_at.to_rfc3339()}}]),
    ));
    assert!(wait_for(Duration::from_secs(5), || !api
        .delivered()
        .is_empty()));
    std::thread::sleep(Duration::from_millis(1500));
    s.terminate();
    let events = api.delivered();
    assert_eq!(events.len(), 1, "a one-shot fired {} times", events.len());
    let p = &events[0]["payload"];
    assert_eq!(p["type"], "one_shot");
    assert!(p["delay_ms"].as_i64().unwrap() < 250, "{p}");
    assert!(at(p, "fired_at") >= fire_at - chrono::Duration::milliseconds(1));
}

#[test]
fn a_timer_in_the_past_fails_alone() {
    let api = FakeApi::start();
    let s = Sensor::spawn(Sensor::command(
        &api,
        json!([
            {"id": 8, "trigger_ref": "core.datetimetimer", "config": {"fire_at": "2001-01-01T00:00:00Z"}},
            {"id": 9, "trigger_ref": "core.intervaltimer", "config": {"interval": 1}}
        ]),
    ));
    assert!(wait_for(Duration::from_secs(4), || !api
        .delivered()
        .is_empty()));
    let (_, code, _, err) = s.terminate();
    assert_eq!(code, Some(0));
    assert!(
        err.contains("timer for rule 8 is invalid") && err.contains("in the past"),
        "{err}"
    );
    assert!(
        api.delivered()
            .iter()
            .all(|e| e["trigger_instance_id"] == "rule_9")
    );
}

#[test]
fn sigterm_stops_within_one_second() {
    let api = FakeApi::start();
    let s = Sensor::spawn(Sensor::command(
        &api,
        json!([{"id": 1, "config": {"interval": 3600}}]),
    ));
    assert!(wait_for(Duration::from_secs(3), || api
        .requests
        .lock()
        .unwrap()
        .iter()
        .any(|r| r.path == "/health")));
    std::thread::sleep(Duration::from_millis(300));
    let (took, code, _, err) = s.terminate();
    assert_eq!(code, Some(0), "{err}");
    assert!(took < Duration::from_secs(1), "took {took:?} to stop");
}

#[test]
fn waits_for_the_api_to_be_healthy() {
    let api = FakeApi::start();
    api.set(|b| b.health = 503);
    let s = Sensor::spawn(Sensor::command(
        &api,
        json!([{"id": 1, "config": {"interval": 1}}]),
    ));
    std::thread::sleep(Duration::from_millis(1800));
    assert!(
        api.delivered().is_empty(),
        "events before the API was healthy"
    );
    api.set(|b| b.health = 200);
    assert!(wait_for(Duration::from_secs(8), || !api
        .delivered()
        .is_empty()));
    let (_, _, _, err) = s.terminate();
    assert!(err.contains("API not healthy yet"), "{err}");
}

/// One rule with an absurd interval (`10000000000000` seconds) panicked the
/// sensor (`DateTime + TimeDelta overflowed`), and every other timer stopped
/// with it. A cron that can never fire was accepted silently.
#[test]
fn an_absurd_timer_is_refused_and_the_others_keep_firing() {
    let api = FakeApi::start();
    let s = Sensor::spawn(Sensor::command(
        &api,
        json!([
            {"id": 1, "trigger_ref": "core.intervaltimer", "config": {"interval": 10_000_000_000_000u64, "unit": "seconds"}},
            {"id": 2, "trigger_ref": "core.intervaltimer", "config": {"interval": 4_000_000_000u64, "unit": "days"}},
            {"id": 3, "trigger_ref": "core.crontimer", "config": {"expression": "0 0 0 31 2 *"}},
            {"id": 4, "trigger_ref": "core.intervaltimer", "config": {"interval": 1}},
        ]),
    ));
    assert!(wait_for(Duration::from_secs(6), || api.delivered().len() >= 2));
    let (_, code, _, stderr) = s.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        api.delivered()
            .iter()
            .all(|e| e["trigger_instance_id"] == "rule_4")
    );
    assert!(stderr.contains("is too large"), "{stderr}");
    assert!(stderr.contains("never fires"), "{stderr}");
}

/// The upstream trigger's `output` schema (flat style: `name: {type, const,
/// required}`): every required field present, every field of its type.
fn assert_matches_upstream_output(
    triggers: &std::path::Path,
    trigger: &str,
    payload: &serde_json::Value,
) {
    let file = triggers.join(format!("{trigger}.yaml"));
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: cannot read: {e}", file.display()));
    let yaml: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let output = yaml["output"].as_object().expect("an output schema");
    for (name, spec) in output {
        let value = &payload[name];
        if spec["required"] == true {
            assert!(
                !value.is_null(),
                "{trigger}: `{name}` is required: {payload}"
            );
        }
        if value.is_null() {
            continue;
        }
        let ok = match spec["type"].as_str() {
            Some("string") => value.is_string(),
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("number") => value.is_number(),
            Some("boolean") => value.is_boolean(),
            _ => true,
        };
        assert!(
            ok,
            "{trigger}: `{name}` must be {}: {payload}",
            spec["type"]
        );
        if let Some(c) = spec.get("const") {
            assert_eq!(value, c, "{trigger}: `{name}`");
        }
        if spec["format"] == "date-time" {
            assert!(
                DateTime::parse_from_rfc3339(value.as_str().unwrap()).is_ok(),
                "{name}: {value}"
            );
        }
    }
}

/// Started as upstream's sensor manager starts it (`[{id: <int>, ref, config}]`,
/// no trigger_ref), it posts `rule_<id>` and payloads that satisfy the output
/// schemas of upstream's trigger YAMLs (in `shared/attune-upstream` beside the
/// repository: without it the test fails under CI, and skips elsewhere).
#[test]
fn upstream_shaped_triggers_and_payloads() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let Some(upstream) =
        attune_pack::shared_input::shared_input(&repo, "attune-upstream/packs/core/triggers")
    else {
        return;
    };
    let api = FakeApi::start();
    let fire_at = Utc::now() + chrono::Duration::milliseconds(1200);
    let s = Sensor::spawn(Sensor::command(
        &api,
        json!([
            {"id": 11, "ref": "demo.every", "config": {"unit": "seconds", "interval": 1}},
            {"id": 12, "ref": "demo.cron", "config": {"expression": "* * * * * *", "timezone": "UTC"}},
            {"id": 13, "ref": "demo.once", "config": {"fire_at": fire_at.to_rfc3339()}},
        ]),
    ));
    assert!(wait_for(Duration::from_secs(8), || {
        let d = api.delivered();
        ["rule_11", "rule_12", "rule_13"]
            .iter()
            .all(|id| d.iter().any(|e| e["trigger_instance_id"] == *id))
    }));
    s.terminate();
    for e in api.delivered() {
        let trigger = match e["trigger_instance_id"].as_str().unwrap() {
            "rule_11" => "intervaltimer",
            "rule_12" => "crontimer",
            "rule_13" => "datetimetimer",
            other => panic!("unexpected instance {other}"),
        };
        assert_eq!(e["trigger_ref"], format!("core.{trigger}"));
        assert_matches_upstream_output(&upstream, trigger, &e["payload"]);
    }
}
