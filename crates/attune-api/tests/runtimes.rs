//! Executions go to a worker that has their runtime: a worker sends the runner
//! types its container runs with each claim, and is handed only those; the
//! others wait for a worker that has them. A worker that sends none (older
//! workers) is handed anything, as before.

mod common;

use std::net::SocketAddr;

use attune_api::server::Limits;
use common::{memory_store, post, repo_packs, start_with};
use serde_json::Value;

/// Requests an execution of `action_ref` with `parameters` (JSON); its answer.
fn request(addr: SocketAddr, action_ref: &str, parameters: &str) -> Value {
    let body = format!(r#"{{"action_ref": "{action_ref}", "parameters": {parameters}}}"#);
    let (code, v) = post(addr, "/api/v1/executions", &body);
    assert_eq!(code, 201, "{v}");
    v
}

const HTTP: &str = r#"{"url": "http://127.0.0.1:9/"}"#;

#[test]
fn a_python_execution_waits_for_a_worker_with_python_and_a_shell_one_is_not_held_up() {
    let (addr, _state) = start_with(memory_store(), &repo_packs(), Limits::default());
    let py = request(addr, "core.http_request", HTTP);
    request(addr, "core.echo", r#"{"message": "hi"}"#);
    let shell = r#"{"worker": "worker-shell/0", "runtimes": ["shell", "native"]}"#;
    // The older python execution is passed over, not handed to the shell worker.
    let (code, claim) = post(addr, "/api/v1/executions/claim", shell);
    assert_eq!(code, 200, "{claim}");
    assert_eq!(claim["execution"]["action_ref"], "core.echo");
    let (code, _) = post(addr, "/api/v1/executions/claim", shell);
    assert_eq!(code, 204, "nothing more a shell worker can run");
    let python = r#"{"worker": "worker-python/0", "runtimes": ["python", "native"]}"#;
    let (code, claim) = post(addr, "/api/v1/executions/claim", python);
    assert_eq!(code, 200, "{claim}");
    assert_eq!(claim["execution"]["id"], py["data"]["id"]);
    assert_eq!(claim["execution"]["worker"], "worker-python/0");
}

#[test]
fn a_worker_that_names_no_runtimes_is_handed_anything() {
    let (addr, _state) = start_with(memory_store(), &repo_packs(), Limits::default());
    let py = request(addr, "core.http_request", HTTP);
    let (code, claim) = post(addr, "/api/v1/executions/claim", r#"{"worker": "old"}"#);
    assert_eq!(code, 200, "{claim}");
    assert_eq!(claim["execution"]["id"], py["data"]["id"]);
}
