//! The `attune-api` binary stopped by SIGTERM: it refuses new connections at
//! once, finishes the requests in flight within `ATTUNE_DRAIN_TIMEOUT`, closes
//! what is left at the deadline, and exits 0.
//!
//! It cut requests in flight at SIGTERM: its accept loop returned, and the
//! runtime dropped the connections with it.
//!
//! A request is known to be in flight when the server answers its
//! `Expect: 100-continue`: hyper sends `100 Continue` when the handler starts
//! reading the body, so the test sends the body only after the SIGTERM.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use attune_service::testing::{HANG, Service};
use serde_json::Value;

const TOKEN: &str = "drain-token";

/// An `attune-api` process with an empty packs volume.
struct Api {
    service: Service,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Api {
    /// Starts the api on a free loopback port with `ATTUNE_DRAIN_TIMEOUT` at
    /// `drain` (set in the environment: the flag is new) and waits until it
    /// answers.
    fn start(drain: &str) -> Api {
        let dir = tempfile::tempdir().unwrap();
        for d in ["packs", "dev"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        // A port the kernel just handed out, free again once this is dropped.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let service = Service::spawn(
            Command::new(env!("CARGO_BIN_EXE_attune-api"))
                .env_clear()
                .env("ATTUNE_DRAIN_TIMEOUT", drain)
                .args(["--listen", &addr.to_string(), "--token", TOKEN])
                .args(["--db", ":memory:", "--log-format", "json"])
                .arg("--packs-dir")
                .arg(dir.path().join("packs"))
                .arg("--packs-dev-dir")
                .arg(dir.path().join("dev")),
        );
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(started.elapsed() < HANG, "the api never listened on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Api {
            service,
            addr,
            _dir: dir,
        }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(HANG)).unwrap();
        s
    }
}

/// Reads an answer's head, up to and with its blank line.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Reads one whole answer: its head, and as many body bytes as its
/// `content-length` says.
fn read_answer(s: &mut TcpStream) -> (String, Vec<u8>) {
    let head = read_head(s);
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.trim().parse().unwrap());
    let mut body = vec![0; length];
    s.read_exact(&mut body).unwrap();
    (head, body)
}

const EVENT: &str = r#"{"trigger_ref":"drain.test","payload":{"n":1}}"#;

/// Sends the head of `POST /api/v1/events` with `Expect: 100-continue` and
/// waits for the `100 Continue`: the handler is then running.
fn start_event_request(api: &Api) -> TcpStream {
    let mut s = api.connect();
    write!(
        s,
        "POST /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        EVENT.len()
    )
    .unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 100"), "{head}");
    s
}

#[test]
fn sigterm_finishes_a_request_in_flight() {
    let mut api = Api::start("30");
    let mut s = start_event_request(&api);
    api.service.sigterm();
    let stopping = api.service.log("stopping");
    // The listener is closed: a new connection is refused, not queued.
    let refused = TcpStream::connect(api.addr).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    // The request in flight is still served, whole.
    s.write_all(EVENT.as_bytes()).unwrap();
    let (head, body) = read_answer(&mut s);
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert!(event["data"]["id"].is_i64(), "{event}");
    // And the connection is closed after it.
    assert_eq!(s.read(&mut [0u8; 1]).unwrap(), 0);
    assert!(api.service.wait_exit().success());
    assert_eq!(stopping["in_flight"], 1, "{stopping}");
    let stopped = api.service.log("stopped");
    assert_eq!(stopped["cut"], 0, "{stopped}");
}

/// A request that does not finish within the drain timeout is cut, and the
/// api still exits 0, saying so.
#[test]
fn sigterm_past_the_deadline_closes_the_request_and_exits() {
    let mut api = Api::start("0.5");
    let mut s = start_event_request(&api);
    api.service.sigterm();
    assert_eq!(api.service.log("stopping")["in_flight"], 1);
    // The body never comes; the deadline closes the connection, unanswered.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(api.service.wait_exit().success());
    let stopped = api.service.log("stopped");
    assert_eq!(stopped["cut"], 1, "{stopped}");
    assert_eq!(stopped["level"], "WARN", "{stopped}");
}

/// An idle keep-alive connection is closed at once: only requests hold the
/// drain, so the api exits long before its 60 s deadline.
#[test]
fn an_idle_keep_alive_connection_does_not_hold_the_drain() {
    let mut api = Api::start("60");
    let mut s = api.connect();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (head, _) = read_answer(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    api.service.sigterm();
    assert_eq!(api.service.log("stopping")["in_flight"], 0);
    assert_eq!(
        s.read(&mut [0u8; 1]).unwrap(),
        0,
        "the idle connection is closed"
    );
    assert!(api.service.wait_exit().success());
    assert_eq!(api.service.log("stopped")["cut"], 0);
}
