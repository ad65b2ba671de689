//! The connection layer: accepting, limits and timeouts, so that idle, slow
//! or non-reading clients cannot exhaust the api's file descriptors or stop
//! `/health`.
//!
//! Invariants:
//! - At most [`Limits::max_connections`] connections are open. A connection
//!   accepted at the limit takes the place of the open one that has made no
//!   progress (read or written a byte) for longest among those not in a
//!   handler, which is closed (as nginx reuses idle keep-alive connections):
//!   idle connections, however many, cannot keep `/health` out. Only when
//!   every open connection is in a handler is the new one closed at once
//!   (logged, at most once a second).
//! - Handlers other than `/health` run for at most `max_connections` minus a
//!   reserve ([`reserved`]) connections at once; a request beyond that is
//!   answered `503` with `Retry-After: 1` at once. So requests that wait long
//!   (`execute`) leave connections that can be taken for `/health`.
//! - A connection must send a request's headers within
//!   [`Limits::header_timeout`]; hyper starts that clock whenever it waits
//!   for a request, so it is also the idle timeout of a keep-alive connection.
//! - A response the client takes nothing of for [`Limits::header_timeout`]
//!   closes the connection (the write timeout): a client that pipelines
//!   requests and never reads the answers is cut.
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

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use attune_service::shutdown::Drain;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};

/// The connection and request limits (see the module doc).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once; [`reserved`] of them are kept from
    /// handlers other than `/health`.
    pub max_connections: usize,
    /// Time to send a request's headers, the keep-alive idle timeout, and
    /// the longest a response waits for the client to take any of it.
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

/// Connections of `max_connections` that handlers other than `/health` never
/// take: an eighth, at least one (none when the limit is one).
pub fn reserved(max_connections: usize) -> usize {
    (max_connections / 8)
        .max(1)
        .min(max_connections.saturating_sub(1))
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

/// One open connection, as the accept loop sees it.
#[derive(Debug)]
struct Slot {
    /// The server's clock: [`Slot::progress`] counts from it.
    epoch: Instant,
    /// Milliseconds from `epoch` to the last byte read or written (or the accept).
    progress: AtomicU64,
    /// Its requests in a handler (one at most, on HTTP/1).
    busy: AtomicUsize,
    /// Wakes its task to close it, to make room for a new connection.
    evict: Notify,
}

impl Slot {
    fn new(epoch: Instant) -> Slot {
        let slot = Slot {
            epoch,
            progress: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            evict: Notify::new(),
        };
        slot.touch();
        slot
    }

    fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.progress.store(now, Ordering::Relaxed);
    }
}

/// Marks a connection as in a handler while it lives.
struct Busy(Arc<Slot>);

impl Busy {
    fn enter(slot: &Arc<Slot>) -> Busy {
        slot.busy.fetch_add(1, Ordering::SeqCst);
        Busy(slot.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// The open connections.
#[derive(Debug)]
struct Connections {
    open: Mutex<HashMap<u64, Arc<Slot>>>,
    /// How many are open, for the drain to wait on.
    count: watch::Sender<usize>,
    max: usize,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        // A panic elsewhere cannot leave the map half-changed: take it as is.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens the connection `id`, closing the one idle longest when at the
    /// limit; `false` when every open connection is in a handler.
    fn admit(&self, id: u64, slot: Arc<Slot>) -> bool {
        let mut open = self.lock();
        if open.len() >= self.max {
            let idlest = open
                .iter()
                .filter(|(_, s)| s.busy.load(Ordering::SeqCst) == 0)
                .min_by_key(|(_, s)| s.progress.load(Ordering::Relaxed))
                .map(|(id, _)| *id);
            let Some(idlest) = idlest else {
                return false;
            };
            if let Some(evicted) = open.remove(&idlest) {
                evicted.evict.notify_one();
            }
        }
        open.insert(id, slot);
        self.count.send_replace(open.len());
        true
    }

    fn close(&self, id: u64) {
        let mut open = self.lock();
        if open.remove(&id).is_some() {
            self.count.send_replace(open.len());
        }
    }
}

/// Takes a connection out of [`Connections`] when its task ends, however.
struct Registered(Arc<Connections>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.close(self.1);
    }
}

/// A connection's socket that records its progress in its [`Slot`] and
/// fails a write the client has taken nothing of for `write_timeout`.
struct Tracked {
    stream: TcpStream,
    slot: Arc<Slot>,
    write_timeout: Duration,
    /// Running while a write waits for the client to read.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Tracked {
    fn written(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Pending => {
                let timeout = self.write_timeout;
                let stall = self
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client took none of the response for {}s (the header timeout); closed",
                            timeout.as_secs_f64()
                        ),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            Poll::Ready(r) => {
                self.stall = None;
                if matches!(r, Ok(n) if n > 0) {
                    self.slot.touch();
                }
                Poll::Ready(r)
            }
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.slot.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.written(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.written(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Logs at most once a second (the state is when it last did).
fn warn_rarely(last: &Mutex<Option<Instant>>, warn: impl FnOnce()) {
    let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
        warn();
        *last = Some(Instant::now());
    }
}

/// The answer to a request beyond the handlers' share of the connections.
fn busy_response(handlers: usize) -> axum::response::Response {
    let body = serde_json::json!({
        "error": format!("the api is serving {handlers} requests at once, its limit; retry in a second"),
        "code": "SERVICE_UNAVAILABLE",
    });
    axum::response::Response::builder()
        .status(503)
        .header("content-type", "application/json")
        .header("retry-after", "1")
        .body(axum::body::Body::from(body.to_string()))
        .expect("a valid response")
}

/// Serves `app` on `listener` until `shutdown` resolves with the drain
/// timeout, then drains (see the module doc) and returns how that went.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = Duration>,
) -> std::io::Result<Drained> {
    let max = limits.max_connections.max(1);
    let (count, mut open_count) = watch::channel(0);
    let conns = Arc::new(Connections {
        open: Mutex::default(),
        count,
        max,
    });
    let handlers = max - reserved(max);
    let handler_permits = Arc::new(Semaphore::new(handlers));
    let busy_warning = Arc::new(Mutex::new(None));
    let epoch = Instant::now();
    let requests = Arc::new(AtomicUsize::new(0));
    let (stopping, stop) = watch::channel(false);
    let full_warning = Mutex::new(None);
    let mut next_id = 0u64;
    tracing::info!(addr = %listener.local_addr()?, max_connections = max, handlers, "accepting connections");
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
        let id = next_id;
        next_id += 1;
        let slot = Arc::new(Slot::new(epoch));
        if !conns.admit(id, slot.clone()) {
            warn_rarely(&full_warning, || {
                tracing::warn!(
                    %peer,
                    max_connections = max,
                    "every connection is in a handler; closing new connections"
                )
            });
            drop(stream);
            continue;
        }
        let registered = Registered(conns.clone(), id);
        let (app, requests, mut stop) = (app.clone(), requests.clone(), stop.clone());
        let (handler_permits, busy_warning) = (handler_permits.clone(), busy_warning.clone());
        tokio::spawn(async move {
            let in_slot = slot.clone();
            let service = hyper::service::service_fn(
                move |req: axum::extract::Request<hyper::body::Incoming>| {
                    let in_flight = InFlight::enter(&requests);
                    let busy = Busy::enter(&in_slot);
                    let permit = if req.uri().path() == "/health" {
                        Ok(None)
                    } else {
                        handler_permits.clone().try_acquire_owned().map(Some)
                    };
                    let mut app = app.clone();
                    let busy_warning = busy_warning.clone();
                    async move {
                        let response = match permit {
                            Ok(_permit) => tower_service::Service::call(&mut app, req).await,
                            Err(_) => {
                                warn_rarely(&busy_warning, || {
                                    tracing::warn!(
                                        handlers,
                                        "every handler is taken; answering 503"
                                    )
                                });
                                Ok(busy_response(handlers))
                            }
                        };
                        drop((busy, in_flight));
                        response
                    }
                },
            );
            let io = Tracked {
                stream,
                slot: slot.clone(),
                write_timeout: limits.header_timeout,
                stall: None,
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                () = slot.evict.notified() => {
                    tracing::debug!(%peer, "closed the connection idle longest, to make room for a new one");
                    Ok(())
                }
                // (The borrow of the value is dropped at once: it is not `Send`.)
                _ = async { stop.wait_for(|stopping| *stopping).await.map(drop) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(registered);
        });
    };
    drop(listener);
    let in_flight = requests.load(Ordering::SeqCst);
    let drain = Drain::begin("request", in_flight, drain_timeout);
    stopping.send_replace(true);
    let all_closed = open_count.wait_for(|n| *n == 0);
    let closed = tokio::time::timeout_at(drain.deadline().into(), all_closed).await;
    let cut = if closed.is_ok() {
        0
    } else {
        conns.lock().len()
    };
    drain.end(cut, "closed");
    Ok(Drained { in_flight, cut })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections(max: usize) -> Connections {
        Connections {
            open: Mutex::default(),
            count: watch::channel(0).0,
            max,
        }
    }

    fn slot(progress: u64, busy: usize) -> Arc<Slot> {
        let s = Arc::new(Slot::new(Instant::now()));
        s.progress.store(progress, Ordering::Relaxed);
        s.busy.store(busy, Ordering::Relaxed);
        s
    }

    /// A connection past the limit was closed at once, so idle ones kept
    /// `/health` out. It takes the place of the one idle longest among those
    /// not in a handler; only when all are in handlers is it refused.
    #[test]
    fn a_connection_at_the_limit_takes_the_place_of_the_idlest_not_in_a_handler() {
        let c = connections(3);
        let (oldest_busy, idlest, recent) = (slot(0, 1), slot(5, 0), slot(9, 0));
        assert!(c.admit(0, oldest_busy));
        assert!(c.admit(1, idlest.clone()));
        assert!(c.admit(2, recent));
        assert!(c.admit(3, slot(10, 0)));
        let open = c.lock();
        let mut ids: Vec<_> = open.keys().copied().collect();
        ids.sort();
        assert_eq!(ids, [0, 2, 3]);
        drop(open);
        // Its task is told to close it.
        let closed = idlest.evict.notified();
        futures_poll_ready(closed);
        let all_busy = connections(1);
        assert!(all_busy.admit(0, slot(0, 1)));
        assert!(!all_busy.admit(1, slot(1, 0)));
    }

    /// Whether `f` is ready at its first poll.
    fn futures_poll_ready(f: impl Future<Output = ()>) {
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(f.as_mut().poll(&mut cx).is_ready(), "not told to close");
    }

    #[test]
    fn the_reserve_for_health_is_an_eighth_and_at_least_one() {
        assert_eq!(reserved(1), 0);
        assert_eq!(reserved(2), 1);
        assert_eq!(reserved(8), 1);
        assert_eq!(reserved(512), 64);
    }
}
