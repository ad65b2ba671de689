//! The flows a user of the stack relies on, each on its own stack.

use std::time::Duration;

use attune_service::ApiError;
use serde_json::{Value, json};

use attune_stack_tests::{Stack, wait_for, write};

/// Rules as upstream Attune writes them: a bare ref, `unit` and `interval`,
/// `{{ event.payload.* }}`, and conditions (one that holds, one that never does).
const TICK_PACK: &[(&str, &str)] = &[
    ("tick/pack.yaml", "ref: tick\nlabel: Tick\nversion: 1.0.0\n"),
    (
        "tick/rules/every_second.yaml",
        "ref: every_second\nlabel: Every second\ntrigger_ref: core.intervaltimer\ntrigger_params:\n  unit: seconds\n  interval: 1\nconditions:\n  - {field: type, operator: equals, value: interval}\naction_ref: core.echo\naction_params:\n  message: \"tick {{ event.payload.execution_count }}\"\n",
    ),
    (
        "tick/rules/never.yaml",
        "ref: never\nlabel: Never\ntrigger_ref: core.intervaltimer\ntrigger_params:\n  unit: seconds\n  interval: 1\nconditions:\n  - {field: type, operator: equals, value: cron}\naction_ref: core.noop\n",
    ),
];

#[test]
fn timer_rule_in_a_dev_pack_runs_executions_from_the_volume() {
    let s = Stack::start(TICK_PACK);
    let ok = wait_for(Duration::from_secs(10), || {
        s.executions("core.echo")
            .iter()
            .filter(|e| e["status"] == "succeeded" && e["rule_ref"] == "tick.every_second")
            .count()
            >= 3
    });
    assert!(
        ok,
        "fewer than 3 succeeded executions within 10 s\n{}",
        s.logs()
    );
    let outputs: Vec<String> = s
        .executions("core.echo")
        .iter()
        .filter(|e| e["status"] == "succeeded")
        .map(|e| e["stdout"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        outputs.iter().all(|o| o.starts_with("tick ")),
        "{outputs:?}"
    );
    assert!(
        outputs.iter().any(|o| o == "tick 1\n"),
        "the payload's execution_count was not rendered: {outputs:?}"
    );
    // The rule whose condition never holds fired nothing.
    assert!(
        s.executions("core.noop").is_empty(),
        "a false condition fired"
    );
    // The sensor kept its output in its log file.
    let log = std::fs::read_to_string(s.path("logs/sensors/core.timer_sensor.log")).unwrap();
    assert!(
        log.contains("timer added") || log.contains("API is healthy"),
        "{log}"
    );
    // Logs written to files are plain text: colour codes made them unreadable.
    for name in ["attune-api", "attune-worker", "attune-sensor"] {
        let text = std::fs::read_to_string(s.path(&format!("logs/{name}.log"))).unwrap();
        assert!(
            !text.contains('\x1b'),
            "{name}.log carries ANSI codes:\n{text}"
        );
    }
    assert!(!log.contains('\x1b'), "the sensor's log carries ANSI codes");
}

#[test]
fn dev_pack_action_after_reload_like_the_quick_reference() {
    let s = Stack::start(&[]);
    let dev = s.path("dev/mypack");
    write(
        &dev.join("pack.yaml"),
        "ref: mypack\nlabel: My pack\nversion: 0.1.0\n",
    );
    write(
        &dev.join("actions/echo.yaml"),
        "ref: mypack.echo\nlabel: Echo\nrunner_type: shell\nentry_point: echo.sh\nparameters:\n  message:\n    type: string\n    required: true\n",
    );
    write(
        &dev.join("actions/echo.sh"),
        "#!/bin/sh\necho \"Message: $ATTUNE_MESSAGE\"\n",
    );
    // Unknown until reloaded.
    let before = s.api.post::<_, Value>(
        "/api/v1/executions",
        &json!({"action_ref": "mypack.echo", "parameters": {"message": "hello"}}),
    );
    assert!(
        matches!(before, Err(ApiError::Status(404, _))),
        "{before:?}"
    );
    let reloaded: Value = s
        .api
        .post("/api/v1/packs/reload", &json!({}))
        .unwrap()
        .unwrap();
    assert!(
        reloaded["data"]["packs"]
            .as_array()
            .unwrap()
            .contains(&json!("mypack")),
        "{reloaded}"
    );
    let x: Value = s
        .api
        .post(
            "/api/v1/executions",
            &json!({"action_ref": "mypack.echo", "parameters": {"message": "hello"}}),
        )
        .unwrap()
        .unwrap();
    let done = s.finished(x["data"]["id"].as_i64().unwrap());
    assert_eq!(done["status"], "succeeded", "{done}\n{}", s.logs());
    assert_eq!(done["stdout"], "Message: hello\n");
    // The synchronous variant answers with the finished execution.
    let sync: Value = s
        .api
        .post(
            "/api/v1/executions/execute",
            &json!({"action_ref": "core.echo", "parameters": {"message": "hi"}}),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            sync["data"]["status"].as_str(),
            sync["data"]["stdout"].as_str()
        ),
        (Some("succeeded"), Some("hi\n")),
        "{sync}"
    );
}

#[test]
fn reassembled_volume_is_picked_up_without_restarting_the_api() {
    let s = Stack::start(&[]);
    let src = s.path("src");
    write(
        &src.join("core/actions/echo.sh"),
        "#!/bin/sh\nprintf 'v2: %s\\n' \"$ATTUNE_MESSAGE\"\n",
    );
    let yaml = std::fs::read_to_string(src.join("core/actions/echo.yaml")).unwrap();
    write(
        &src.join("core/actions/echo.yaml"),
        &yaml.replace(
            "Print a message to standard output.",
            "Print a message, version 2.",
        ),
    );
    std::fs::remove_file(src.join("core/actions/noop.yaml")).unwrap();
    Stack::assemble(s.tmp.path(), &src);
    let picked_up = wait_for(Duration::from_secs(10), || {
        let v: Value = s.api.get("/api/v1/actions?pack_ref=core").unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["description"] == "Print a message, version 2.")
    });
    assert!(
        picked_up,
        "the api did not see the new generation\n{}",
        s.logs()
    );
    let v: Value = s.api.get("/api/v1/actions?pack_ref=core").unwrap();
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["ref"] != "core.noop"),
        "a deleted action is still registered"
    );
    let done: Value = s
        .api
        .post(
            "/api/v1/executions/execute",
            &json!({"action_ref": "core.echo", "parameters": {"message": "new"}}),
        )
        .unwrap()
        .unwrap();
    assert_eq!(done["data"]["stdout"], "v2: new\n", "{done}");
}

#[test]
fn refusals_and_timeouts() {
    // The action's own pids, written by it: nothing looks across the machine.
    let pid_file =
        std::env::temp_dir().join(format!("attune-e2e-timeout-{}.pids", std::process::id()));
    let s = Stack::start(&[
        ("slow/pack.yaml", "ref: slow\nlabel: Slow\nversion: 1.0.0\n"),
        (
            "slow/actions/hang.yaml",
            "ref: slow.hang\nlabel: Hang\nrunner_type: shell\nentry_point: hang.sh\ntimeout: 1\n",
        ),
        (
            "slow/actions/hang.sh",
            &format!(
                "#!/bin/bash\nsleep 60 &\necho $$ $! > {}\nexec sleep 60\n",
                pid_file.display()
            ),
        ),
    ]);
    // 401 without a token and with a wrong one; /health stays open.
    let anon = attune_service::Client::new(&s.url, "");
    assert!(matches!(
        anon.get::<Value>("/api/v1/packs"),
        Err(ApiError::Status(401, _))
    ));
    let wrong = attune_service::Client::new(&s.url, "not-the-token");
    assert!(matches!(
        wrong.get::<Value>("/api/v1/actions"),
        Err(ApiError::Status(401, _))
    ));
    assert!(anon.get::<Value>("/health").is_ok());
    // 404 names the action; 422 names the field.
    match s
        .api
        .post::<_, Value>("/api/v1/executions", &json!({"action_ref": "core.nope"}))
    {
        Err(ApiError::Status(404, body)) => assert!(body.contains("core.nope"), "{body}"),
        other => panic!("{other:?}"),
    }
    match s.api.post::<_, Value>(
        "/api/v1/executions",
        &json!({"action_ref": "core.sleep", "parameters": {"seconds": "soon"}}),
    ) {
        Err(ApiError::Status(422, body)) => {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["field"], "seconds", "{body}");
        }
        other => panic!("{other:?}"),
    }
    match s.api.get::<Value>("/api/v1/packs/nopack") {
        Err(ApiError::Status(404, body)) => {
            assert!(body.contains("nopack") && body.contains("/vol"), "{body}")
        }
        other => panic!("{other:?}"),
    }
    // A timeout ends as `timeout` and leaves no process behind.
    let x: Value = s
        .api
        .post("/api/v1/executions", &json!({"action_ref": "slow.hang"}))
        .unwrap()
        .unwrap();
    let done = s.finished(x["data"]["id"].as_i64().unwrap());
    assert_eq!(done["status"], "timeout", "{done}");
    let pids = std::fs::read_to_string(&pid_file).unwrap();
    let _ = std::fs::remove_file(&pid_file);
    assert_eq!(pids.split_whitespace().count(), 2, "{pids}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    for pid in pids.split_whitespace() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest.trim_start());
        assert!(
            stat.is_empty() || state.starts_with('Z'),
            "process {pid} survived the timeout: {stat}"
        );
    }
}
