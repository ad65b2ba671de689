//! What the api's integration tests share: a server in-process on
//! 127.0.0.1 with an ephemeral port, and raw HTTP exchanges with it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use attune_api::routes::{AppState, router};
use attune_api::secrets::SecretsKey;
use attune_api::server::{Limits, serve};
use attune_api::store::Store;
use serde_json::Value;

pub const TOKEN: &str = "t0ken";

/// This repository's packs (`core.http_request` has secret and object parameters).
pub fn repo_packs() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packs")
}

/// An in-memory store.
pub fn memory_store() -> Store {
    Store::open(":memory:", SecretsKey::ephemeral().unwrap()).unwrap()
}

/// Starts a server with `limits`, an in-memory store and no packs; returns
/// its address. It runs until the test ends.
pub fn start(limits: Limits) -> SocketAddr {
    start_with(memory_store(), Path::new("/nonexistent"), limits).0
}

/// Starts a server on `store` with the packs of `dev_dir` as developer
/// packs; returns its address and its state.
pub fn start_with(store: Store, dev_dir: &Path, limits: Limits) -> (SocketAddr, Arc<AppState>) {
    let state = Arc::new(AppState {
        registry: Default::default(),
        store,
        token: TOKEN.into(),
        packs_dir: "/nonexistent".into(),
        dev_dir: dev_dir.to_path_buf(),
        requested: Default::default(),
        finished: Default::default(),
    });
    state.reload();
    let shared = state.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            serve(
                listener,
                router(state, limits),
                limits,
                std::future::pending(),
            )
            .await
            .unwrap();
        });
    });
    (rx.recv().unwrap(), shared)
}

/// Sends `raw` and returns the whole answer (the request asks to close).
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// `value` nested `levels` deep in objects: `{"a": {"a": ... value}}`.
pub fn nested(levels: usize, value: &str) -> String {
    format!("{}{value}{}", "{\"a\":".repeat(levels), "}".repeat(levels))
}

pub fn get(addr: SocketAddr, path: &str) -> String {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
}

/// `POST path` with `body`: the status and the answer's JSON (`Null` when
/// there is none, or it does not parse).
pub fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let answer = exchange(
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    split(&answer)
}

/// The status and JSON body of a raw answer.
pub fn split(answer: &str) -> (u16, Value) {
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}
