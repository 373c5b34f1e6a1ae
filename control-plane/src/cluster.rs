//! The cluster listener: serves the discovery service to data planes, over mutual TLS when
//! configured. TCP accept and the TLS handshake happen here rather than in tonic, because
//! tonic drops handshake failures silently and an operator needs to see "this data plane at
//! this address was refused, and why" (Kong's opaque "failed to receive the first 2 bytes" is
//! the counterexample).

mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portico_proto::v1::discovery_server::DiscoveryServer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;

pub(crate) use tls::acceptor;

use crate::discovery::{wait_true, DiscoveryService};
use crate::CpError;

/// Bound on a TLS handshake, so a silent peer cannot hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the cluster listener until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    svc: DiscoveryService,
    shutdown: watch::Receiver<bool>,
) -> Result<(), CpError> {
    let server = Server::builder()
        .tcp_nodelay(true)
        // Detects data planes that vanished without closing (half-open TCP), so the fleet
        // shows them disconnected instead of connected forever.
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(DiscoveryServer::new(svc));
    let mut signal_rx = shutdown.clone();
    let signal = async move { wait_true(&mut signal_rx).await };
    let result = match acceptor {
        None => {
            let (tx, rx) = mpsc::channel(64);
            tokio::spawn(accept_loop(
                listener,
                tx,
                shutdown,
                |stream, _peer| async move {
                    let _ = stream.set_nodelay(true);
                    Some(stream)
                },
            ));
            server
                .serve_with_incoming_shutdown(ReceiverStream::new(rx), signal)
                .await
        }
        Some(acceptor) => {
            let acceptor = Arc::new(acceptor);
            let (tx, rx) = mpsc::channel(64);
            tokio::spawn(accept_loop(listener, tx, shutdown, move |stream, peer| {
                let acceptor = acceptor.clone();
                async move { handshake(&acceptor, stream, peer).await }
            }));
            server
                .serve_with_incoming_shutdown(ReceiverStream::new(rx), signal)
                .await
        }
    };
    result.map_err(|e| CpError::Serve {
        listener: "cluster",
        message: e.to_string(),
    })
}

/// Accepts TCP until shutdown, runs `prepare` (the TLS handshake, or nothing) for each
/// connection on its own task, so a slow peer does not stall the others, and hands the ready
/// streams to tonic. Accept errors back off here: tonic retries a failing incoming stream in a
/// tight loop (EMFILE would spin a core).
async fn accept_loop<IO, F, Fut>(
    listener: TcpListener,
    tx: mpsc::Sender<Result<IO, std::io::Error>>,
    mut shutdown: watch::Receiver<bool>,
    prepare: F,
) where
    IO: Send + 'static,
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = Option<IO>> + Send + 'static,
{
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let ready = prepare(stream, peer);
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        if let Some(io) = ready.await {
                            let _ = tx.send(Ok(io)).await;
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cluster accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = wait_true(&mut shutdown) => break,
        }
    }
}

/// The TLS handshake, logging why a peer was refused.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(0)) => {
            // A port probe (load-balancer health check): nothing to report.
            tracing::debug!(peer = %peer, "cluster connection closed before any data");
            return None;
        }
        // 0x16 opens every TLS handshake record.
        Ok(Ok(_)) if first[0] != 0x16 => {
            tracing::warn!(
                peer = %peer,
                reason = "the client did not start a TLS handshake (plaintext data plane on a TLS cluster listener? use https:// and cluster certificates)",
                "data plane refused"
            );
            return None;
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer, error = %e, "cluster connection failed before the handshake");
            return None;
        }
        Err(_) => {
            tracing::warn!(peer = %peer, reason = "no TLS handshake within 10s", "data plane refused");
            return None;
        }
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::warn!(peer = %peer, reason = %tls::explain(&e), "data plane refused: TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::warn!(peer = %peer, reason = "TLS handshake did not finish within 10s", "data plane refused");
            None
        }
    }
}
