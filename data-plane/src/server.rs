//! Listeners: an accept loop serving HTTP/1.1 and h2c (prior knowledge) on an already-bound
//! socket, with graceful drain on shutdown. Servers take a bound listener and a shutdown signal,
//! so tests bind port 0 and never guess ports.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering;
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

/// A slow client gets this long to send its request head (slowloris bound).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves when `shutdown` turns true (or its sender is gone).
pub async fn shutdown_signal(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Serves `listener` with `handler` until `shutdown`, then stops accepting and lets in-flight
/// requests finish for at most `drain`. When `count` is given, connections are counted in it.
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
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
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo {
            peer,
            local: stream.local_addr().unwrap_or(local),
            tls: false,
        };
        let handler = handler.clone();
        let svc = service_fn(move |req| {
            let fut = handler(req, conn);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let count = count.clone();
        tokio::spawn(async move {
            if let Some(c) = &count {
                c.stats.connections_active.fetch_add(1, Ordering::Relaxed);
                c.stats.connections_total.fetch_add(1, Ordering::Relaxed);
            }
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(error = %e, peer = %peer, "connection ended with an error");
            }
            if let Some(c) = &count {
                c.stats.connections_active.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }

    drop(listener);
    tracing::info!(addr = %local, connections = graceful.count(), "listener closed, draining");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!(addr = %local, "drained"),
        _ = tokio::time::sleep(drain) => tracing::warn!(addr = %local, "drain timeout reached, closing remaining connections"),
    }
}
