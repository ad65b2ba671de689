//! The core pack's `http_request` action against servers on 127.0.0.1: its
//! credentials never follow a redirect to another origin.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

/// A server answering each connection with `answer(path)`, reporting each
/// request's head on the channel; returns its port.
fn server(answer: impl Fn(&str) -> String + Send + 'static) -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { return };
            let mut head = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let _ = tx.send(head);
            let _ = stream.write_all(answer(&path).as_bytes());
        }
    });
    (port, rx)
}

fn run_action(params: &serde_json::Value) -> serde_json::Value {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packs/core/actions/http_request.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .spawn()
        .expect("python3 runs core.http_request");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{params}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `auth_token` was sent to whatever host a redirect pointed at.
#[test]
fn the_auth_token_does_not_follow_a_redirect_to_another_origin() {
    let ok =
        |_: &str| "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_string();
    let (other, other_heads) = server(ok);
    let (origin, origin_heads) = server(move |path: &str| {
        let to = if path == "/away" {
            format!("http://127.0.0.1:{other}/landed")
        } else if path == "/home" {
            "/landed".to_string()
        } else {
            return ok(path);
        };
        format!(
            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    });

    let r = run_action(
        &serde_json::json!({"url": format!("http://127.0.0.1:{origin}/away"), "auth_token": "s3cr3t"}),
    );
    assert_eq!(r["status_code"], 200, "{r}");
    let first = origin_heads.recv().unwrap();
    assert!(first.contains("Authorization: Bearer s3cr3t"), "{first}");
    let landed = other_heads.recv().unwrap();
    assert!(landed.starts_with("GET /landed"), "{landed}");
    assert!(
        !landed.to_ascii_lowercase().contains("authorization"),
        "{landed}"
    );

    // A redirect within the same origin keeps it.
    let r = run_action(
        &serde_json::json!({"url": format!("http://127.0.0.1:{origin}/home"), "auth_token": "s3cr3t"}),
    );
    assert_eq!(r["status_code"], 200, "{r}");
    let _ = origin_heads.recv().unwrap();
    let again = origin_heads.recv().unwrap();
    assert!(again.contains("Authorization: Bearer s3cr3t"), "{again}");
}

/// Upstream's parameters: query_params, basic auth, follow_redirects; and its
/// output fields `success` and the final `url`.
#[test]
fn upstreams_parameters_and_output_fields() {
    let (port, heads) = server(|path: &str| {
        if path.starts_with("/away") {
            "HTTP/1.1 302 Found\r\nLocation: /landed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
        } else {
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".to_string()
        }
    });
    let r = run_action(&serde_json::json!({
        "url": format!("http://127.0.0.1:{port}/q"),
        "query_params": {"a": "1", "b": "x y"},
        "auth_type": "basic", "auth_username": "u", "auth_password": "p",
    }));
    let head = heads.recv().unwrap();
    assert!(head.starts_with("GET /q?a=1&b=x+y "), "{head}");
    assert!(head.contains("Authorization: Basic dTpw"), "{head}");
    assert_eq!(
        (r["status_code"].clone(), r["success"].clone()),
        (200.into(), true.into()),
        "{r}"
    );
    assert!(r["elapsed_ms"].is_u64(), "{r}");

    let r = run_action(&serde_json::json!({
        "url": format!("http://127.0.0.1:{port}/away"), "follow_redirects": false,
    }));
    assert_eq!(
        (r["status_code"].clone(), r["success"].clone()),
        (302.into(), false.into()),
        "{r}"
    );
    let _ = heads.recv().unwrap();
    let r = run_action(&serde_json::json!({"url": format!("http://127.0.0.1:{port}/away")}));
    assert!(r["url"].as_str().unwrap().ends_with("/landed"), "{r}");
}
