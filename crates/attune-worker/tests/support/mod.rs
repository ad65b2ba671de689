//! What the worker's integration tests share: a stand-in API on 127.0.0.1
//! that hands out claims and collects the results, and the worker binary
//! pointed at it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::{Value, json};

/// A stand-in API: `POST /api/v1/executions/claim` hands out `claims` in
/// order (then 204 after a short wait); each `POST .../result` body is sent on
/// the channel as `(execution id, report)`. Returns its base URL.
pub fn fake_api(claims: Vec<Value>) -> (String, mpsc::Receiver<(i64, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let queue = Arc::new(Mutex::new(claims.into_iter()));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (queue, tx) = (queue.clone(), tx.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if request_line.is_empty() {
                        request_line = line.clone();
                    }
                    if line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let path = request_line.split_whitespace().nth(1).unwrap_or("/");
                let (status, answer) = if path == "/api/v1/executions/claim" {
                    let next = queue.lock().unwrap().next();
                    match next {
                        Some(claim) => ("200 OK", claim.to_string()),
                        None => {
                            std::thread::sleep(Duration::from_millis(200));
                            ("204 No Content", String::new())
                        }
                    }
                } else if let Some(id) = path
                    .strip_prefix("/api/v1/executions/")
                    .and_then(|rest| rest.strip_suffix("/result"))
                {
                    let report: Value = serde_json::from_slice(&body).unwrap();
                    let _ = tx.send((id.parse().unwrap(), report));
                    ("200 OK", "{}".to_string())
                } else {
                    ("404 Not Found", "{}".to_string())
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            });
        }
    });
    (url, rx)
}

/// A claim of action `demo.<name>` (entry point `entry_point`) of pack `demo` from `source`.
pub fn claim(id: i64, entry_point: &str, source: &str) -> Value {
    json!({
        "execution": {"id": id, "action_ref": "demo.a", "parameters": {}},
        "action": {"ref": "demo.a", "label": "A", "runner_type": "shell", "entry_point": entry_point},
        "pack_ref": "demo",
        "source": source,
    })
}

/// The worker binary for the API at `url`, with token `t` and one slot; the
/// packs and API settings of the test's own environment are removed.
pub fn worker(url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_attune-worker"));
    for var in [
        "ATTUNE_PACKS_DIR",
        "ATTUNE_PACKS_DEV_DIR",
        "ATTUNE_API_URL",
        "ATTUNE_API_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(["--api-url", url, "--token", "t", "--concurrency", "1"]);
    cmd
}
