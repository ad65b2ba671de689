//! The connection layer under clients that hold connections without using
//! them: idle ones past the connection limit, ones that pipeline requests and
//! never read the answers, and requests that wait long in their handlers.
//! `/health` must keep answering through all of them. The server runs
//! in-process on 127.0.0.1 with a port the kernel picks; the only time bounds
//! are generous ones that prove "does not hang".

mod common;

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use attune_api::server::Limits;
use common::{TOKEN, exchange, get, memory_store, repo_packs, split, start, start_with};

fn limits(header_timeout: Duration) -> Limits {
    Limits {
        max_connections: 8,
        header_timeout,
        body_timeout: Duration::from_secs(1),
        body_limit: 1024,
    }
}

fn health(addr: SocketAddr) -> String {
    exchange(
        addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
}

/// 1,000 idle connections made `/health` reset: each held a slot for its
/// life, and a connection past the limit was closed at once. A new
/// connection at the limit now takes the slot of the one idle longest, so
/// `/health` answers at once, however many sit idle (the header timeout is
/// long here, so it is not what frees the slots).
#[test]
fn idle_connections_past_the_limit_do_not_reset_health() {
    let addr = start(limits(Duration::from_secs(60)));
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    for _ in 0..5 {
        let answer = health(addr);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    }
    drop(idle);
}

/// Clients that pipeline requests and never read the answers held their
/// connections (and so the api) forever: nothing timed out a response that
/// could not be written. A response the client takes nothing of for the
/// header timeout now closes the connection; meanwhile `/health` answers.
#[test]
fn clients_that_pipeline_and_never_read_are_cut_and_health_answers() {
    let addr = start(limits(Duration::from_secs(1)));
    // Large answers, so the socket buffers fill after a few hundred.
    let request = b"GET /api-spec/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(64);
    let hogs: Vec<_> = (0..8)
        .map(|_| {
            let request = request.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_write_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(30) {
                    match s.write(&request) {
                        Ok(_) => {}
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        // Reset or broken pipe: the server closed it.
                        Err(_) => return true,
                    }
                }
                false
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let answer = health(addr);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    for hog in hogs {
        assert!(
            hog.join().unwrap(),
            "a client that never reads was never cut"
        );
    }
    let answer = health(addr);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

/// Requests that wait in their handlers (`execute` waits for its action)
/// could take every connection, and `/health` reset. Handlers other than
/// `/health` run at most `max_connections` minus a reserve at once; one more
/// is answered 503 with `Retry-After`, and `/health` answers meanwhile.
#[test]
fn requests_waiting_in_handlers_leave_room_for_health() {
    let (addr, _state) = start_with(
        memory_store(),
        &repo_packs(),
        limits(Duration::from_secs(60)),
    );
    let body = r#"{"action_ref": "core.noop"}"#;
    let execute = format!(
        "POST /api/v1/executions/execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // No worker runs the action: each waits in its handler.
    let mut waiting = vec![];
    for _ in 0..7 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(execute.as_bytes()).unwrap();
        waiting.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    // Until all 7 are in their handlers, an 8th may still get in: wait for its 503.
    let started = Instant::now();
    let (status, v) = loop {
        let (status, v) = split(&exchange(addr, execute.as_bytes()));
        if status == 503 || started.elapsed() > Duration::from_secs(20) {
            break (status, v);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("retry"), "{v}");
    let answer = health(addr);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    // Authenticated reads that do not wait are refused the same way, not hung.
    let answer = get(addr, "/api/v1/packs");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer:?}"
    );
    drop(waiting);
}
