//! The api under hostile clients: idle and slow connections, oversized and
//! malformed requests, huge pages. Each test is named after what it guards;
//! the server runs in-process on 127.0.0.1 with an ephemeral port.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use attune_api::params::{MAX_DEPTH, MAX_PARAMETERS_BYTES};
use attune_api::server::Limits;
use attune_api::store::status;
use common::{TOKEN, exchange, get, memory_store, nested, post, repo_packs, start, start_with};
use serde_json::json;

fn small_limits() -> Limits {
    Limits {
        max_connections: 8,
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        body_limit: 1024,
    }
}

/// Unauthenticated idle connections exhausted the api's descriptors and
/// `/health` stopped answering. Idle connections are now closed after the
/// header timeout, and the number open at once is bounded.
#[test]
fn idle_connections_cannot_stop_health() {
    let addr = start(small_limits());
    let idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let started = Instant::now();
    let answer = loop {
        let a = get(addr, "/health");
        if a.starts_with("HTTP/1.1 200") || started.elapsed() > Duration::from_secs(8) {
            break a;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The idle ones were closed by the server.
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    }
}

/// A body sent at one byte a second held a connection indefinitely.
#[test]
fn a_slow_body_is_cut_off_with_408() {
    let addr = start(small_limits());
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        format!("POST /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{")
            .as_bytes(),
    )
    .unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// An oversized body was answered 400; it is 413, as JSON.
#[test]
fn an_oversized_body_is_413() {
    let addr = start(small_limits());
    let body = format!(
        "{{\"trigger_ref\": \"x\", \"payload\": \"{}\"}}",
        "a".repeat(4096)
    );
    let answer = exchange(
        addr,
        format!(
            "POST /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");
}

/// Query and path errors were plain text, not the documented JSON.
#[test]
fn query_and_path_errors_are_json() {
    let addr = start(Limits::default());
    for path in [
        "/api/v1/executions?page=abc",
        "/api/v1/executions/notanumber",
    ] {
        let answer = get(addr, path);
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(
            answer.contains("content-type: application/json"),
            "{path}: {answer}"
        );
        assert!(answer.contains("\"error\""), "{path}: {answer}");
    }
}

/// Huge `page` values overflowed: wrong rows and a wrong `has_next`.
#[test]
fn huge_pages_are_past_the_end() {
    let addr = start(Limits::default());
    for path in [
        "/api/v1/executions?page=9223372036854775807&page_size=1000",
        "/api/v1/events?page=9223372036854775807&page_size=1000",
        "/api/v1/actions?page=9223372036854775807&page_size=1000",
    ] {
        let answer = get(addr, path);
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["items"], serde_json::json!([]), "{path}");
        assert_eq!(v["pagination"]["has_next"], false, "{path}");
    }
}

/// The OpenAPI document is served at upstream's path, without a token, and
/// names every route.
#[test]
fn the_openapi_document_is_served_and_complete() {
    let addr = start(Limits::default());
    let answer = exchange(
        addr,
        b"GET /api-spec/openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    let spec: serde_json::Value = serde_json::from_str(body).unwrap();
    for path in [
        "/health",
        "/api/v1/packs",
        "/api/v1/packs/reload",
        "/api/v1/packs/{pack_ref}",
        "/api/v1/actions",
        "/api/v1/triggers",
        "/api/v1/triggers/{trigger_ref}/rules",
        "/api/v1/sensors",
        "/api/v1/rules",
        "/api/v1/events",
        "/api/v1/events/{id}",
        "/api/v1/executions",
        "/api/v1/executions/execute",
        "/api/v1/executions/claim",
        "/api/v1/executions/{id}",
        "/api/v1/executions/{id}/result",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "{path} is not in the document"
        );
    }
}

/// Upstream's envelopes: lists in {items, pagination}, objects in {data},
/// errors {error, code}.
#[test]
fn envelopes_are_upstreams() {
    let addr = start(Limits::default());
    let list = get(addr, "/api/v1/executions?page=2&page_size=5");
    let v: serde_json::Value =
        serde_json::from_str(list.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(v["items"], serde_json::json!([]));
    assert_eq!(
        v["pagination"],
        serde_json::json!({"page": 2, "page_size": 5, "total_items": 0, "total_pages": 0, "has_previous": true, "has_next": false})
    );
    let missing = get(addr, "/api/v1/executions/99");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let v: serde_json::Value =
        serde_json::from_str(missing.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(v["code"], "NOT_FOUND");
    assert!(v["error"].as_str().unwrap().contains("99"));
}

/// The api accepted parameters nested 125 levels deep (all serde_json lets
/// through in a body); the worker could not read the claim that wraps them.
/// Parameters and event payloads past the nesting or size limit are a 422
/// that names the parameter and the limit.
#[test]
fn parameters_past_the_nesting_or_size_limit_are_refused_with_422_naming_it() {
    let (addr, state) = start_with(memory_store(), &repo_packs(), Limits::default());
    let request = |params: String| {
        post(
            addr,
            "/api/v1/executions",
            &format!(
                r#"{{"action_ref": "core.http_request", "parameters": {{"url": "http://x", {params}}}}}"#
            ),
        )
    };
    let (code, v) = request(format!(r#""json_body": {}"#, nested(125, "1")));
    assert_eq!(code, 422, "{v}");
    assert_eq!(
        (v["code"].as_str(), v["field"].as_str()),
        (Some("VALIDATION_ERROR"), Some("json_body"))
    );
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("nests 125 levels deep") && e.contains(&format!("limit is {MAX_DEPTH} levels")),
        "{e}"
    );
    let (code, v) = request(format!(r#""body": "{}""#, "b".repeat(MAX_PARAMETERS_BYTES)));
    assert_eq!(code, 422, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains(&format!("limit is {MAX_PARAMETERS_BYTES} bytes")),
        "{v}"
    );
    let (code, v) = post(
        addr,
        "/api/v1/events",
        &format!(
            r#"{{"trigger_ref": "core.intervaltimer", "payload": {}}}"#,
            nested(40, "1")
        ),
    );
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["field"], "payload");
    // Within the limits: accepted.
    let (code, v) = request(format!(r#""json_body": {}"#, nested(MAX_DEPTH, "1")));
    assert_eq!(code, 201, "{v}");
    assert_eq!(state.store.executions(None, None, 0, 10).unwrap().1, 1);
}

/// A row whose parameters a worker cannot read (stored before the limits)
/// was handed out at every claim and stayed `running` for good. It is failed
/// at its claim, with the reason, and never handed out.
#[test]
fn an_execution_no_worker_can_read_is_failed_at_its_claim_never_handed_out() {
    let store = memory_store();
    let deep: serde_json::Value = serde_json::from_str(&nested(126, "1")).unwrap();
    let x = store
        .create_execution(
            "core.http_request",
            &json!({"url": "http://x", "json_body": deep}),
            None,
            None,
            None,
        )
        .unwrap();
    let (addr, state) = start_with(store, &repo_packs(), Limits::default());
    for _ in 0..2 {
        let (code, v) = post(addr, "/api/v1/executions/claim", r#"{"worker": "w"}"#);
        assert_eq!(code, 204, "{v}");
    }
    let done = state.store.execution(x.id).unwrap();
    assert_eq!(done.status, status::FAILED);
    let why = done.error.unwrap();
    assert!(
        why.contains("`json_body` nests 126 levels deep") && why.contains("not run"),
        "{why}"
    );
}

/// The limits the OpenAPI document states are the ones the api enforces.
#[test]
fn the_documented_limits_are_the_enforced_ones() {
    let doc = attune_api::routes::OPENAPI;
    assert!(
        doc.contains(&format!("nests at most {MAX_DEPTH} levels")),
        "depth"
    );
    assert_eq!(MAX_PARAMETERS_BYTES, 1 << 20);
    assert!(doc.contains("at most 1 MiB as JSON"), "size");
    assert_eq!(attune_api::routes::MAX_CLAIM_BYTES, 8 << 20);
    assert!(doc.contains("pass 8 MiB"), "claim size");
    assert!(
        doc.contains(&format!("after {} claims", attune_api::store::MAX_CLAIMS)),
        "claims"
    );
}

/// `timeout: 18446744073709551615` passes the pack checks; the claim's lease
/// (`timeout + 60`) overflowed: a panic after the claim was stored (the
/// worker saw its connection drop, and the execution was claimed again at
/// every lease), or in release a lease already expired.
#[test]
fn an_action_timeout_of_u64_max_is_leased_and_awaited_without_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    let actions = tmp.path().join("big/actions");
    std::fs::create_dir_all(&actions).unwrap();
    std::fs::write(
        tmp.path().join("big/pack.yaml"),
        "ref: big\nlabel: Big\nversion: 1.0.0\nenabled: true\n",
    )
    .unwrap();
    std::fs::write(actions.join("a.sh"), "#!/bin/sh\n").unwrap();
    std::fs::write(
        actions.join("a.yaml"),
        format!(
            "ref: big.a\nlabel: A\nrunner_type: shell\nentry_point: a.sh\ntimeout: {}\n",
            u64::MAX
        ),
    )
    .unwrap();
    let (addr, state) = start_with(memory_store(), tmp.path(), Limits::default());
    let (code, v) = post(addr, "/api/v1/executions", r#"{"action_ref": "big.a"}"#);
    assert_eq!(code, 201, "{v}");
    let (code, v) = post(addr, "/api/v1/executions/claim", r#"{"worker": "w"}"#);
    assert_eq!(code, 200, "{v}");
    let id = v["execution"]["id"].as_i64().unwrap();
    // Leased far ahead: another claim does not take it.
    let (code, _) = post(addr, "/api/v1/executions/claim", r#"{"worker": "w2"}"#);
    assert_eq!(code, 204);
    assert_eq!(state.store.execution(id).unwrap().status, status::RUNNING);
}
