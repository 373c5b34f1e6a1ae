//! Listeners: an accept loop serving HTTP/1.1 and h2c (prior knowledge) on an already-bound
//! socket, with graceful drain on shutdown. Servers take a bound listener and a shutdown signal,
//! so tests bind port 0 and never guess ports.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::ConnInfo;
use crate::response::ProxyBody;
use crate::state::Shared;

/// What the proxy listener takes from clients (`portico dp` flags): how much one client can
/// hold, and how strict request parsing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections a listener keeps at once; past it, new connections are closed at once
    /// (`--max-connections`).
    pub max_connections: usize,
    /// Time a client gets to send a request head, counted from the end of the previous
    /// response: the slowloris bound, and the idle timeout of an HTTP/1.1 keep-alive connection
    /// and of an HTTP/2 connection with no open stream (`--header-read-timeout`).
    pub header_read_timeout: Duration,
    /// Bytes a request head may take: HTTP/1.1 request line and headers (431 past it), and an
    /// HTTP/2 header list (`--max-header-size`). At least [`MIN_HEADER_BYTES`].
    pub max_header_bytes: usize,
    /// Keep a raw `;` in request paths (Kong's behaviour) instead of answering 400
    /// (`--allow-path-semicolons`); see `portico_common::path::Options::allow_semicolons`.
    pub allow_path_semicolons: bool,
}

/// The smallest head limit: hyper's HTTP/1.1 read buffer cannot be smaller.
pub const MIN_HEADER_BYTES: usize = 8192;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 16_384,
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            allow_path_semicolons: false,
        }
    }
}

/// Resolves when `shutdown` turns true (or its sender is gone).
pub async fn shutdown_signal(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Serves `listener` with `handler` until `shutdown`, then stops accepting and lets in-flight
/// requests finish for at most `drain`. When `count` is given, connections are counted in it
/// and its [`Limits`] apply (the defaults otherwise).
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
    count: Option<Arc<Shared>>,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    serve_with(listener, None, handler, shutdown, drain, count).await;
}

/// [`serve`] for a TLS listener: each connection's handshake (bounded by the header-read
/// timeout) comes first, then HTTP/1.1 or HTTP/2 as ALPN and the client's preface say.
pub async fn serve_tls<H, F>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    handler: H,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
    count: Option<Arc<Shared>>,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    serve_with(listener, Some(acceptor), handler, shutdown, drain, count).await;
}

async fn serve_with<H, F>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: H,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
    count: Option<Arc<Shared>>,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let limits = count.as_ref().map(|s| s.limits).unwrap_or_default();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The head deadline is `idle_timeout`'s (no request open since the connection began or
        // its last response ended): hyper's own would box and arm a timer for every request.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut refused: u64 = 0;
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "listener has no local address");
            return;
        }
    };
    let stop = shutdown_signal(shutdown);
    tokio::pin!(stop);

    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, addr = %local, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // At the limit, the newcomer is closed at once: the open connections keep being served
        // and the kernel's backlog does not fill with clients that would time out anyway.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(addr = %local, max_connections = limits.max_connections, refused, "connection limit reached; closing new connections (--max-connections)");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo::new(peer, stream.local_addr().unwrap_or(local));
        let handler = handler.clone();
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let count = count.clone();
        let tls = tls.clone();
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            if let Some(c) = &count {
                c.stats.connections_active.fetch_add(1, Ordering::Relaxed);
                c.stats.connections_total.fetch_add(1, Ordering::Relaxed);
            }
            let activity = Arc::new(Activity::new());
            let requests = Arc::clone(&activity);
            let service = |conn: ConnInfo| {
                service_fn(move |req| {
                    let open = Open::enter(&requests);
                    let handler = handler.clone();
                    let conn = conn.clone();
                    // hyper keeps one box per connection for the request's future and writes
                    // each request's future into it. Kept small here, it stays a few hundred
                    // bytes: the handler's future (several KB) is boxed on the first poll, and
                    // that box, freed and reallocated request after request, is warm in the
                    // cache, where a 5 KB region per connection is not once hundreds of
                    // connections are open.
                    async move {
                        let resp = Box::pin(handler(req, conn)).await;
                        Ok::<_, Infallible>(resp.map(|body| Counted { body, _open: open }))
                    }
                })
            };
            let idle = idle_timeout(activity, handshake_timeout);
            let result = match tls {
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service(conn));
                    tokio::select! {
                        r = watcher.watch(conn.into_owned()) => r,
                        () = idle => Ok(()),
                    }
                }
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let conn = ConnInfo {
                                tls: true,
                                sni: stream.get_ref().1.server_name().map(Arc::from),
                                ..conn
                            };
                            let conn = builder.serve_connection_with_upgrades(
                                TokioIo::new(stream),
                                service(conn),
                            );
                            tokio::select! {
                                r = watcher.watch(conn.into_owned()) => r,
                                () = idle => Ok(()),
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, peer = %peer, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, peer = %peer, "connection ended with an error");
            }
            if let Some(c) = &count {
                c.stats.connections_active.fetch_sub(1, Ordering::Relaxed);
            }
            drop(slot);
        });
    }

    drop(listener);
    tracing::info!(addr = %local, connections = graceful.count(), "listener closed, draining");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!(addr = %local, "drained"),
        _ = tokio::time::sleep(drain) => tracing::warn!(addr = %local, "drain timeout reached, closing remaining connections"),
    }
}

/// Requests open on one connection, and when the last one ended.
#[derive(Debug)]
struct Activity {
    open: AtomicUsize,
    /// Milliseconds from `start` to the end of the last request.
    last: AtomicU64,
    start: tokio::time::Instant,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            open: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            start: tokio::time::Instant::now(),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

/// One open request: counted from its head until its response body ends or is dropped.
#[derive(Debug)]
struct Open(Arc<Activity>);

impl Open {
    fn enter(activity: &Arc<Activity>) -> Open {
        activity.open.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        Open(Arc::clone(activity))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves once the connection has had no open request for `idle`: the bound on an idle
/// HTTP/2 connection, and on an HTTP/1.1 one the deadline for the next request head (the
/// slowloris bound, counted from the connection's start or its last response's end). The
/// connection is then dropped; a request or stream in progress, however quiet, keeps it.
async fn idle_timeout(activity: Arc<Activity>, idle: Duration) {
    loop {
        let open = activity.open.load(Ordering::Relaxed);
        let last = activity.start + Duration::from_millis(activity.last.load(Ordering::Relaxed));
        let deadline = if open > 0 {
            tokio::time::Instant::now() + idle
        } else {
            last + idle
        };
        if open == 0 && tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// A response body that keeps its request counted as open until it ends.
struct Counted<B> {
    body: B,
    _open: Open,
}

impl<B: http_body::Body + Unpin> http_body::Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
