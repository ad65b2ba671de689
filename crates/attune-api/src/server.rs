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
//! response being computed, until the server stops.
//!
//! Stopping ([`attune_service::shutdown`]): when the `shutdown` future given
//! to [`serve`] resolves (on SIGTERM or SIGINT, see [`stop_signal`]) with the
//! drain timeout:
//! - the listener is closed at once, so a new connection is refused;
//! - every connection finishes the request it is serving and is then closed
//!   (after the response, whole); a request whose headers are arriving may
//!   still complete (within [`Limits::header_timeout`]); a connection that
//!   has sent nothing yet, or an idle keep-alive one, is closed at once;
//! - at the drain deadline the connections still open are closed, and
//!   [`serve`] returns how many requests were in flight and how many were cut.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use attune_service::shutdown::Drain;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

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

/// How a stop went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drained {
    /// Requests being served when the stop began.
    pub in_flight: usize,
    /// Connections still serving a request at the drain deadline, closed.
    pub cut: usize,
}

/// A future that resolves on the first SIGTERM or SIGINT; the handlers are
/// installed before it returns.
pub fn stop_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}

/// Counts a request as in flight while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::SeqCst);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves `app` on `listener` until `shutdown` resolves with the drain
/// timeout, then drains (see the module doc) and returns how that went.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = Duration>,
) -> std::io::Result<Drained> {
    // Every connection holds a permit, so all permits back means none is open.
    let max = limits.max_connections.clamp(1, u32::MAX as usize);
    let permits = Arc::new(Semaphore::new(max));
    let requests = Arc::new(AtomicUsize::new(0));
    let (stopping, stop) = watch::channel(false);
    let mut last_warning: Option<Instant> = None;
    tracing::info!(addr = %listener.local_addr()?, "accepting connections");
    tokio::pin!(shutdown);
    let drain_timeout = loop {
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
            timeout = &mut shutdown => break timeout,
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
        let (app, requests, mut stop) = (app.clone(), requests.clone(), stop.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let in_flight = InFlight::enter(&requests);
                let mut app = app.clone();
                let response = tower_service::Service::call(&mut app, req);
                async move {
                    let r = response.await;
                    drop(in_flight);
                    r
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                // (The borrow of the value is dropped at once: it is not `Send`.)
                _ = async { stop.wait_for(|stopping| *stopping).await.map(drop) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(permit);
        });
    };
    drop(listener);
    let in_flight = requests.load(Ordering::SeqCst);
    let drain = Drain::begin("request", in_flight, drain_timeout);
    stopping.send_replace(true);
    let all_closed = permits.acquire_many(max as u32);
    let cut = match tokio::time::timeout_at(drain.deadline().into(), all_closed).await {
        Ok(_) => 0,
        Err(_) => max - permits.available_permits(),
    };
    drain.end(cut, "closed");
    Ok(Drained { in_flight, cut })
}
