//! The connection layer: accepting, limits and timeouts, so that idle or slow
//! clients cannot exhaust the api's file descriptors or stop `/health`.
//!
//! Invariants:
//! - At most [`Limits::max_connections`] connections are open; one beyond that
//!   is closed at once (and logged, at most once a second), so the process
//!   keeps descriptors for its database and logs.
//! - A connection must send a request's headers within
//!   [`Limits::header_timeout`]; hyper starts that clock whenever it waits
//!   for a request, so it is also the idle timeout of a keep-alive connection.
//! - A request body must arrive whole within [`Limits::body_timeout`] and be
//!   at most [`Limits::body_limit`] bytes (`408` and `413`, as JSON, from
//!   [`crate::routes::Body`]).
//!
//! Handlers may take long (`execute` waits for the action): no timeout cuts a
//! response being computed.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The connection and request limits (see the module doc).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time to send a request's headers, and the keep-alive idle timeout.
    pub header_timeout: Duration,
    /// Time to send a whole request body.
    pub body_timeout: Duration,
    /// Largest request body, in bytes.
    pub body_limit: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            body_limit: 4 << 20,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes; connections in
/// flight then finish their current request.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut last_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: wait for descriptors to free up.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                tracing::warn!(
                    %peer,
                    max_connections = limits.max_connections,
                    "connection limit reached; closing new connections"
                );
                last_warning = Some(Instant::now());
            }
            drop(stream);
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let mut app = app.clone();
                tower_service::Service::call(&mut app, req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(permit);
        });
    }
}
