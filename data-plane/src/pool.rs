//! Upstream connections: one pool per endpoint (`host:port`), holding idle HTTP/1.1 keep-alive
//! connections in a lock-free queue, or, for gRPC services, one shared HTTP/2 connection that
//! every request multiplexes on.
//!
//! Pools live in [`Pools`], outside any runtime, keyed by endpoint, so a config swap that keeps an
//! endpoint keeps its warm connections. The map is consulted only when a runtime is compiled; the
//! request path holds an `Arc<EndpointPool>` directly and takes no lock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_io_timeout::TimeoutStream;

use crate::error::ProxyError;
use crate::h1;
use crate::upstream_body::UpstreamBody;

/// A sender on one upstream connection.
#[derive(Debug)]
pub enum Sender {
    /// HTTP/1.1: one request at a time; back to the pool after its response head.
    H1(http1::SendRequest<UpstreamBody>),
    /// HTTP/2 (gRPC services): a clone of the endpoint's shared connection.
    H2(http2::SendRequest<UpstreamBody>),
}

impl Sender {
    fn is_ready(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(s) => s.is_ready(),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// Sends `req`; a request the connection never wrote comes back in the error. hyper's own
    /// future, not one around it: that would hold the request a second time.
    pub fn send(
        &mut self,
        req: http::Request<UpstreamBody>,
    ) -> impl std::future::Future<
        Output = Result<
            http::Response<hyper::body::Incoming>,
            hyper::client::conn::TrySendError<http::Request<UpstreamBody>>,
        >,
    > {
        use futures_util::future::Either;
        match self {
            Sender::H1(s) => Either::Left(s.try_send_request(req)),
            Sender::H2(s) => Either::Right(s.try_send_request(req)),
        }
    }
}

/// Idle connections kept per endpoint; beyond this, finished connections are closed. Sized for
/// peak concurrency (PERF.md B.7: an undersized idle cache reopens connections constantly).
const MAX_IDLE_PER_ENDPOINT: usize = 1024;

/// Busy connections `checkout` skips before giving up on the pool.
const BUSY_SKIPS: usize = 8;

/// How often idle connections are swept ([`Pools::sweep_idle`]), and after how many sweeps an
/// idle connection is closed: after 40 to 60 seconds idle, Kong's
/// `upstream_keepalive_idle_timeout` (60 s).
pub const SWEEP_EVERY: Duration = Duration::from_secs(20);
const IDLE_SWEEPS: u8 = 3;

/// All endpoint pools of a data plane, surviving config swaps.
#[derive(Debug, Default)]
pub struct Pools {
    map: Mutex<PoolMap>,
}

#[derive(Debug, Default)]
struct PoolMap {
    /// By host, port and TLS settings ([`crate::tls::UpstreamTls::key`], empty for plain).
    pools: HashMap<(String, u16, String), Weak<EndpointPool>>,
    /// Entries after the last sweep of dead ones.
    swept_len: usize,
}

impl Pools {
    /// Closes idle connections the upstream has closed or that sat idle too long (every
    /// [`SWEEP_EVERY`], from the data plane's sweeper task). Without it, a connection the
    /// upstream closed would hold its socket until the next request to that endpoint.
    pub fn sweep_idle(&self) {
        let pools: Vec<Arc<EndpointPool>> = {
            let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.pools.values().filter_map(Weak::upgrade).collect()
        };
        for pool in pools {
            pool.sweep_native();
            pool.sweep_hyper();
        }
    }

    /// The pool for `host:port`, shared with every runtime that uses it. Called at compile time.
    pub fn endpoint(&self, host: &str, port: u16) -> Arc<EndpointPool> {
        self.endpoint_tls(host, port, None)
    }

    /// The pool for `host:port` spoken with `tls` (an `https` service's settings); pools of
    /// the same endpoint with other settings never share a connection.
    pub fn endpoint_tls(
        &self,
        host: &str,
        port: u16,
        tls: Option<&Arc<crate::tls::UpstreamTls>>,
    ) -> Arc<EndpointPool> {
        self.endpoint_for(host, port, tls, false)
    }

    /// The pool for `host:port` spoken with `tls` and, with `http2`, over one shared HTTP/2
    /// connection (gRPC services: h2c prior knowledge, or h2 over TLS).
    pub fn endpoint_for(
        &self,
        host: &str,
        port: u16,
        tls: Option<&Arc<crate::tls::UpstreamTls>>,
        http2: bool,
    ) -> Arc<EndpointPool> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Drop entries no runtime uses any more (their pools, and connections, are already
        // gone; this frees the entry). Only once the map has doubled since the last sweep: a
        // sweep per call would make compiling n services O(n^2).
        if map.pools.len() >= 2 * map.swept_len.max(32) {
            map.pools.retain(|_, w| w.strong_count() > 0);
            map.swept_len = map.pools.len();
        }
        let key = (
            host.to_ascii_lowercase(),
            port,
            format!(
                "{}{}",
                if http2 { "h2|" } else { "" },
                tls.map(|t| t.key.as_str()).unwrap_or_default()
            ),
        );
        if let Some(p) = map.pools.get(&key).and_then(Weak::upgrade) {
            return p;
        }
        let pool = Arc::new(EndpointPool::new(key.0.clone(), port, tls.cloned(), http2));
        map.pools.insert(key, Arc::downgrade(&pool));
        pool
    }
}

/// A hyper connection in the pool, and the sweeps it sat there through.
#[derive(Debug)]
struct Idle {
    sender: Sender,
    sweeps: u8,
}

/// Connections to one `host:port`.
#[derive(Debug)]
pub struct EndpointPool {
    host: Arc<str>,
    port: u16,
    /// `host:port`, for the access log.
    address: Arc<str>,
    idle: ArrayQueue<Idle>,
    /// Idle connections of the request task's own HTTP/1.1 client ([`crate::h1`]); made on
    /// first use, so pools that never carry such a request cost nothing for it.
    native: OnceLock<ArrayQueue<Box<h1::Conn>>>,
    opened: AtomicU64,
    /// TLS to the upstream (`https` and `grpcs` services).
    tls: Option<Arc<crate::tls::UpstreamTls>>,
    /// The shared HTTP/2 connection of a gRPC endpoint (replaced when it closes).
    h2: Option<ArcSwapOption<http2::SendRequest<UpstreamBody>>>,
}

impl EndpointPool {
    fn new(
        host: String,
        port: u16,
        tls: Option<Arc<crate::tls::UpstreamTls>>,
        http2: bool,
    ) -> Self {
        EndpointPool {
            address: Arc::from(format!("{host}:{port}")),
            host: Arc::from(host),
            port,
            idle: ArrayQueue::new(if http2 { 1 } else { MAX_IDLE_PER_ENDPOINT }),
            native: OnceLock::new(),
            opened: AtomicU64::new(0),
            tls,
            h2: http2.then(ArcSwapOption::empty),
        }
    }

    /// Requests go over HTTP/2 (gRPC): absolute URIs, no `Host` header.
    pub fn is_http2(&self) -> bool {
        self.h2.is_some()
    }

    /// The upstream is spoken to over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The endpoint's host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The endpoint's host, shared (a span attribute takes it without copying).
    pub fn host_shared(&self) -> &Arc<str> {
        &self.host
    }

    /// The endpoint's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`.
    pub fn address(&self) -> &Arc<str> {
        &self.address
    }

    /// How many connections this pool has opened (a "new upstream connections" counter).
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// An idle connection ready for a request, if any. Closed ones are discarded; one still
    /// finishing its previous exchange goes back to the end of the queue, and after
    /// [`BUSY_SKIPS`] of those the caller opens a new connection instead of waiting.
    pub fn checkout(&self) -> Option<Sender> {
        if let Some(h2) = &self.h2 {
            // One connection multiplexes every request; a closed one is replaced on connect.
            return h2
                .load()
                .as_ref()
                .filter(|s| !s.is_closed())
                .map(|s| Sender::H2(http2::SendRequest::clone(s)));
        }
        let mut busy = 0;
        while let Some(idle) = self.idle.pop() {
            if idle.sender.is_ready() {
                return Some(idle.sender);
            }
            if idle.sender.is_closed() {
                continue;
            }
            // Pushed back behind the others; a full queue drops it (the connection closes once
            // its exchange ends).
            let _ = self.idle.push(idle);
            busy += 1;
            if busy == BUSY_SKIPS {
                break;
            }
        }
        None
    }

    /// Returns `sender` to the pool right after its response head arrived. HTTP/1.1 allows one
    /// request at a time, so it becomes ready once the response body was read to the end (a
    /// body dropped half-way closes the connection, and `checkout` discards it); `checkout`
    /// skips it until then. Queuing it at once, rather than from a task that waits for it to
    /// be ready, costs the request path no task spawn.
    pub fn checkin(&self, sender: Sender) {
        if matches!(sender, Sender::H1(_)) && !sender.is_closed() {
            let _ = self.idle.push(Idle { sender, sweeps: 0 });
        }
    }

    /// Whether requests with a known body may use [`crate::h1`]: HTTP/1.1 in the clear.
    pub fn is_native(&self) -> bool {
        self.tls.is_none() && self.h2.is_none()
    }

    /// An idle [`crate::h1`] connection the upstream has not closed, if any.
    pub fn checkout_native(&self) -> Option<Box<h1::Conn>> {
        let idle = self.native.get()?;
        while let Some(mut conn) = idle.pop() {
            if conn.is_usable() {
                conn.idle_sweeps = 0;
                return Some(conn);
            }
        }
        None
    }

    /// Closes hyper's HTTP/1.1 connections idle through [`IDLE_SWEEPS`] sweeps (their tasks
    /// close those the upstream closed); the rest, and any still finishing an exchange, go
    /// back.
    fn sweep_hyper(&self) {
        for _ in 0..self.idle.len() {
            let Some(mut idle) = self.idle.pop() else {
                return;
            };
            if idle.sender.is_closed() {
                continue;
            }
            idle.sweeps = idle.sweeps.saturating_add(1);
            if idle.sweeps < IDLE_SWEEPS || !idle.sender.is_ready() {
                let _ = self.idle.push(idle);
            }
        }
    }

    /// Idle hyper connections (those still finishing an exchange included).
    pub fn idle_hyper(&self) -> usize {
        self.idle.len()
    }

    /// Closes [`crate::h1`] connections the upstream closed, and those idle through
    /// [`IDLE_SWEEPS`] sweeps; the rest go back. Unlike hyper's, these have no task that would
    /// see the upstream close them.
    fn sweep_native(&self) {
        let Some(idle) = self.native.get() else {
            return;
        };
        for _ in 0..idle.len() {
            let Some(mut conn) = idle.pop() else {
                return;
            };
            conn.idle_sweeps += 1;
            if conn.idle_sweeps < IDLE_SWEEPS && conn.is_usable() {
                let _ = idle.push(conn);
            }
        }
    }

    /// Idle [`crate::h1`] connections.
    pub fn idle_native(&self) -> usize {
        self.native.get().map_or(0, ArrayQueue::len)
    }

    /// Keeps a [`crate::h1`] connection whose exchange ended cleanly for the next request (or
    /// closes it when the pool is full).
    pub fn checkin_native(&self, conn: Box<h1::Conn>) {
        let _ = self
            .native
            .get_or_init(|| ArrayQueue::new(MAX_IDLE_PER_ENDPOINT))
            .push(conn);
    }

    /// Opens a new [`crate::h1`] connection within `connect_timeout`; writes that stall longer
    /// than `write_timeout` fail it.
    pub async fn connect_native(
        &self,
        connect_timeout: Duration,
        write_timeout: Duration,
    ) -> Result<Box<h1::Conn>, ProxyError> {
        let stream = self.connect_stream(connect_timeout, write_timeout).await?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(h1::Conn::new(stream))
    }

    /// A TCP connection within `connect_timeout`, with nodelay and `write_timeout` set.
    async fn connect_stream(
        &self,
        connect_timeout: Duration,
        write_timeout: Duration,
    ) -> Result<std::pin::Pin<Box<TimeoutStream<TcpStream>>>, ProxyError> {
        let stream = tokio::time::timeout(connect_timeout, self.connect_tcp())
            .await
            .map_err(|_| ProxyError::ConnectTimeout)??;
        let _ = stream.set_nodelay(true);
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(write_timeout));
        Ok(Box::pin(stream))
    }

    /// Opens a new connection within `connect_timeout` (for an `https` service, the TLS
    /// handshake included); writes that stall longer than `write_timeout` fail the connection.
    pub async fn connect(
        &self,
        connect_timeout: Duration,
        write_timeout: Duration,
    ) -> Result<Sender, ProxyError> {
        self.connect_with(connect_timeout, write_timeout, false)
            .await
    }

    /// [`EndpointPool::connect`]; with `upgrades`, the connection can be taken over by a
    /// `101 Switching Protocols` (a WebSocket tunnel) and must not go back to the pool.
    pub async fn connect_with(
        &self,
        connect_timeout: Duration,
        write_timeout: Duration,
        upgrades: bool,
    ) -> Result<Sender, ProxyError> {
        let deadline = tokio::time::Instant::now() + connect_timeout;
        let stream = self.connect_stream(connect_timeout, write_timeout).await?;
        let sender = match &self.tls {
            None => self.handshake(TokioIo::new(stream), upgrades).await?,
            Some(tls) => {
                let tls_stream = tokio::time::timeout_at(deadline, tls.connect(&self.host, stream))
                    .await
                    .map_err(|_| ProxyError::ConnectTimeout)?
                    .map_err(|e| {
                        tracing::warn!(upstream = %self.address, error = %e, "upstream TLS handshake failed");
                        ProxyError::Connect(e)
                    })?;
                self.handshake(TokioIo::new(tls_stream), upgrades).await?
            }
        };
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(sender)
    }

    /// HTTP/1.1 (or HTTP/2 for a gRPC endpoint) on a connected stream; the connection is
    /// driven by its own task.
    async fn handshake<I>(&self, io: I, upgrades: bool) -> Result<Sender, ProxyError>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        if let Some(shared) = &self.h2 {
            let (sender, conn) = http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .handshake(io)
                .await
                .map_err(|e| ProxyError::Upstream(e.into()))?;
            self.drive(conn);
            shared.store(Some(Arc::new(sender.clone())));
            return Ok(Sender::H2(sender));
        }
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| ProxyError::Upstream(e.into()))?;
        if upgrades {
            self.drive(conn.with_upgrades());
        } else {
            self.drive(conn);
        }
        Ok(Sender::H1(sender))
    }

    /// Runs a connection's task until it ends.
    fn drive<F>(&self, conn: F)
    where
        F: std::future::Future<Output = hyper::Result<()>> + Send + 'static,
    {
        let host = self.host.clone();
        let port = self.port;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(upstream = %host, port, error = %e, "upstream connection ended");
            }
        });
    }

    async fn connect_tcp(&self) -> Result<TcpStream, ProxyError> {
        if let Ok(ip) = self.host.parse::<std::net::IpAddr>() {
            return TcpStream::connect(SocketAddr::new(ip, self.port))
                .await
                .map_err(ProxyError::Connect);
        }
        let addrs = tokio::net::lookup_host((&*self.host, self.port))
            .await
            .map_err(|_| ProxyError::Resolve(self.host.to_string()))?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => ProxyError::Connect(e),
            None => ProxyError::Resolve(self.host.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener on a free port, and the pool of the endpoint it is.
    async fn endpoint_on_a_listener() -> (tokio::net::TcpListener, Pools, Arc<EndpointPool>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pools = Pools::default();
        let pool = pools.endpoint("127.0.0.1", listener.local_addr().unwrap().port());
        (listener, pools, pool)
    }

    /// The upstream's side of a connection sees the gateway close it.
    async fn assert_closed(upstream: &mut TcpStream) {
        use tokio::io::AsyncReadExt;
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), upstream.read(&mut byte))
            .await
            .expect("the upstream sees the close")
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn sweeps_close_what_the_upstream_closed_and_what_sat_idle_too_long() {
        let (listener, pools, pool) = endpoint_on_a_listener().await;
        let t = Duration::from_secs(5);
        let a = pool.connect_native(t, t).await.unwrap();
        let (upstream_a, _) = listener.accept().await.unwrap();
        let b = pool.connect_native(t, t).await.unwrap();
        let (mut upstream_b, _) = listener.accept().await.unwrap();
        pool.checkin_native(a);
        pool.checkin_native(b);
        assert_eq!(pool.idle_native(), 2);

        // Idle through IDLE_SWEEPS sweeps: closed. A checkout starts a connection's idle time
        // over (the queue is FIFO: `a` comes out).
        for _ in 1..IDLE_SWEEPS {
            pools.sweep_idle();
        }
        assert_eq!(pool.idle_native(), 2);
        let a = pool.checkout_native().expect("a is usable");
        assert_eq!(a.idle_sweeps, 0);
        pool.checkin_native(a);
        pools.sweep_idle();
        assert_eq!(pool.idle_native(), 1, "b was idle too long");
        assert_closed(&mut upstream_b).await;

        // The upstream closes `a`: it is closed here once the socket says so, young as it is.
        drop(upstream_a);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while pool.idle_native() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "a is still pooled");
            tokio::time::sleep(Duration::from_millis(1)).await;
            if let Some(a) = pool.checkout_native() {
                pool.checkin_native(a);
            }
            pools.sweep_idle();
        }
    }

    #[tokio::test]
    async fn sweeps_close_hyper_connections_idle_too_long() {
        let (listener, pools, pool) = endpoint_on_a_listener().await;
        let t = Duration::from_secs(5);
        let mut sender = pool.connect(t, t).await.unwrap();
        let (mut upstream, _) = listener.accept().await.unwrap();
        // Ready once its connection's task has run.
        let Sender::H1(h1) = &mut sender else {
            panic!("an HTTP/1.1 pool");
        };
        h1.ready().await.unwrap();
        pool.checkin(sender);
        assert_eq!(pool.idle_hyper(), 1);
        for _ in 1..IDLE_SWEEPS {
            pools.sweep_idle();
        }
        // A checkout starts its idle time over.
        let sender = pool.checkout().expect("ready");
        pool.checkin(sender);
        for _ in 1..IDLE_SWEEPS {
            pools.sweep_idle();
        }
        assert_eq!(
            pool.idle_hyper(),
            1,
            "idle for fewer than IDLE_SWEEPS sweeps"
        );
        pools.sweep_idle();
        assert_eq!(pool.idle_hyper(), 0);
        // Its task closes the connection once the pool lets go of it.
        assert_closed(&mut upstream).await;
    }
}
