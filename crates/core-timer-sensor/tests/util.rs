//! A fake Attune API on 127.0.0.1 that records requests and answers as told,
//! and a wrapper that runs the real sensor binary against it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// One recorded request.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    /// What was answered (0: the connection was dropped).
    pub status: u16,
}

/// How the fake API answers.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// Status for `GET /health`.
    pub health: u16,
    /// Status for `POST /api/v1/events`; 0 drops the connection (API unreachable).
    pub events: u16,
    /// Rules by trigger ref for `GET /api/v1/rules`; `None` answers 503.
    pub rules: Option<BTreeMap<String, Vec<Value>>>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            health: 200,
            events: 200,
            rules: Some(BTreeMap::new()),
        }
    }
}

pub struct FakeApi {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Request>>>,
    pub behaviour: Arc<Mutex<Behaviour>>,
}

impl FakeApi {
    pub fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(vec![]));
        let behaviour = Arc::new(Mutex::new(Behaviour::default()));
        let (r, b) = (requests.clone(), behaviour.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, b) = (r.clone(), b.clone());
                std::thread::spawn(move || serve(stream, &r, &b));
            }
        });
        FakeApi {
            url,
            requests,
            behaviour,
        }
    }

    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.behaviour.lock().unwrap());
    }

    /// Events answered with 2xx, in arrival order.
    pub fn delivered(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == "/api/v1/events" && r.status == 200)
            .map(|r| r.body.clone())
            .collect()
    }

    pub fn event_attempts(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == "/api/v1/events")
            .cloned()
            .collect()
    }
}

fn serve(stream: TcpStream, requests: &Mutex<Vec<Request>>, behaviour: &Mutex<Behaviour>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query: BTreeMap<&str, &str> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let b = behaviour.lock().unwrap().clone();
    let (status, answer) = match (method.as_str(), path) {
        ("GET", "/health") => (b.health, json!({"status": "ok"})),
        ("POST", "/api/v1/events") => (b.events, json!({"id": 1})),
        ("GET", "/api/v1/rules") => match &b.rules {
            None => (503, json!({"error": "unavailable"})),
            Some(rules) => {
                let all = rules
                    .get(query.get("trigger_ref").copied().unwrap_or_default())
                    .cloned()
                    .unwrap_or_default();
                let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                // Pages of one rule, so that pagination is always exercised.
                let data: Vec<Value> = all.iter().skip(page - 1).take(1).cloned().collect();
                (
                    200,
                    json!({"items": data, "pagination": {"page": page, "page_size": 1, "has_next": page < all.len()}}),
                )
            }
        },
        _ => (404, json!({"error": "not found"})),
    };
    requests.lock().unwrap().push(Request {
        method,
        path: path.to_string(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        status,
    });
    if status == 0 {
        return; // dropped: the client sees the connection close without an answer
    }
    let text = answer.to_string();
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

/// The sensor running against a fake API.
pub struct Sensor {
    pub child: Child,
}

impl Sensor {
    pub fn command(api: &FakeApi, triggers: Value) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("attune-core-timer-sensor"));
        for (k, _) in std::env::vars() {
            if k.starts_with("ATTUNE_") {
                c.env_remove(k);
            }
        }
        c.env("ATTUNE_API_URL", &api.url)
            .env("ATTUNE_API_TOKEN", "s3cret")
            .env("ATTUNE_SENSOR_REF", "core.timer_sensor")
            .env("ATTUNE_SENSOR_TRIGGERS", triggers.to_string())
            .env("ATTUNE_SENSOR_RECONCILE_SECONDS", "0")
            .env("ATTUNE_LOG_LEVEL", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    pub fn spawn(mut c: Command) -> Sensor {
        Sensor {
            child: c.spawn().unwrap(),
        }
    }

    /// Sends SIGTERM and returns (how long it took to exit, exit code, stdout, stderr).
    pub fn terminate(mut self) -> (Duration, Option<i32>, String, String) {
        let sent = Instant::now();
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        let took = sent.elapsed();
        let mut out = String::new();
        let mut err = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (took, status.code(), out, err)
    }
}

/// Waits until `f` holds or `limit` passes; returns whether it held.
pub fn wait_for(limit: Duration, f: impl Fn() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}
