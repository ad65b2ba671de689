//! A fake Attune API on 127.0.0.1 that records requests and answers as told,
//! a wrapper that runs the real sensor binary against it, and the one place
//! that decides whether a test may skip (never under CI).

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
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
    /// When it arrived.
    pub at: Instant,
}

/// How the fake API answers.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// Status for `GET /health`.
    pub health: u16,
    /// Status for `POST /api/v1/events`; 0 drops the connection (API unreachable).
    pub events: u16,
    /// Statuses for the next event posts, one each, before `events` applies.
    pub events_script: VecDeque<u16>,
    /// `Retry-After` seconds sent with 429 and 503 answers.
    pub retry_after: Option<u64>,
    /// Rules by trigger ref for `GET /api/v1/rules`; `None` answers 503.
    pub rules: Option<BTreeMap<String, Vec<Value>>>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            health: 200,
            events: 200,
            events_script: VecDeque::new(),
            retry_after: None,
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
    let at = Instant::now();
    let (b, scripted) = {
        let mut b = behaviour.lock().unwrap();
        let scripted = if (method.as_str(), path) == ("POST", "/api/v1/events") {
            b.events_script.pop_front()
        } else {
            None
        };
        (b.clone(), scripted)
    };
    let (status, answer) = match (method.as_str(), path) {
        ("GET", "/health") => (b.health, json!({"status": "ok"})),
        ("POST", "/api/v1/events") => (scripted.unwrap_or(b.events), json!({"id": 1})),
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
        at,
    });
    if status == 0 {
        return; // dropped: the client sees the connection close without an answer
    }
    let text = answer.to_string();
    let retry_after = match b.retry_after {
        Some(s) if matches!(status, 429 | 503) => format!("Retry-After: {s}\r\n"),
        _ => String::new(),
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{retry_after}Connection: close\r\n\r\n{text}",
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
    pub fn terminate(self) -> (Duration, Option<i32>, String, String) {
        self.signal("TERM")
    }

    /// Sends `SIG<name>` and returns what [`Sensor::terminate`] returns.
    pub fn signal(self, name: &str) -> (Duration, Option<i32>, String, String) {
        let sent = Instant::now();
        Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        self.finish(sent)
    }

    /// Waits (at most `limit`, a hang guard) for the sensor to exit on its own.
    pub fn exit_within(mut self, limit: Duration) -> (Option<i32>, String) {
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("the sensor did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (_, code, _, err) = self.finish(started);
        (code, err)
    }

    fn finish(mut self, since: Instant) -> (Duration, Option<i32>, String, String) {
        let status = self.child.wait().unwrap();
        let took = since.elapsed();
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

/// Reads a spool file: one event a line, oldest first.
pub fn spooled(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no spool at {}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Reads a spool file, checking that the sensor's log `err` said how many
/// events it kept there, and where.
pub fn spooled_as_logged(path: &Path, err: &str) -> Vec<Value> {
    let kept = spooled(path);
    let line = format!(
        "kept {} in {}",
        core_timer_sensor::spool::unsent(kept.len()),
        path.display()
    );
    assert!(err.contains(&line), "the log does not say `{line}`: {err}");
    kept
}

/// The `execution_count` of each event.
pub fn counts(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["payload"]["execution_count"].as_u64().unwrap())
        .collect()
}
