//! Portico's data plane: compiles a validated [`portico_common::snapshot::Snapshot`] into a
//! runtime (router, upstream pools, balancers), swaps it in atomically, and proxies HTTP traffic
//! by it.
//!
//! It depends on `portico-common` for the meaning of config and must never depend on the control
//! plane: a data plane runs from a file alone, or from whatever a control plane streams to it.

pub mod balancer;
pub mod cache;
pub mod consumers;
pub mod discovery;
pub mod error;
pub mod h1;
pub mod headers;
pub mod metrics;
pub mod plugins;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod response;
pub mod router;
pub mod runtime;
pub mod server;
pub mod state;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod upstream_body;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use discovery::{ClientTls, ControlPlaneOptions};
pub use state::Shared;

/// How a file-fed data plane runs.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// The Kong declarative file.
    pub config: PathBuf,
    /// Addresses whose X-Forwarded-* headers are trusted.
    pub trusted_ips: Vec<String>,
    /// The plugins this data plane runs (Kong's `plugins`: `bundled`, `off`, names).
    pub plugins: Vec<String>,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub drain_timeout: Duration,
    /// Reload when the file changes (SIGHUP always reloads).
    pub watch: bool,
    /// Access log and tracing.
    pub telemetry: telemetry::TelemetryOptions,
    /// Connection, head-size and head-time bounds of the proxy listener, and its path policy.
    pub limits: crate::server::Limits,
}

/// Why a data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("config {file} is invalid:\n  {}", errors.join("\n  "))]
    InvalidConfig { file: String, errors: Vec<String> },
    #[error("--trusted-ips: {0}")]
    TrustedIps(String),
    #[error("--plugins: {0}")]
    Plugins(String),
    #[error("{0}")]
    Telemetry(String),
    #[error(transparent)]
    ControlPlane(#[from] discovery::SetupError),
}

/// Listeners a data plane serves on, already bound.
#[derive(Debug)]
pub struct Listeners {
    pub proxy: TcpListener,
    pub status: TcpListener,
    /// The proxy's TLS listener (`--proxy-listen-tls`), when on.
    pub proxy_tls: Option<TlsListener>,
}

/// A bound TLS listener and the certificate it serves names no SNI takes.
#[derive(Debug)]
pub struct TlsListener {
    pub listener: TcpListener,
    pub default: tls::DefaultCertificate,
}

impl Listeners {
    /// Binds both listeners, naming the address that failed.
    pub async fn bind(proxy: SocketAddr, status: SocketAddr) -> std::io::Result<Listeners> {
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on {addr} ({what}): {e}; is another process using it? Pick another address with --{what}-listen"),
                )
            })
        };
        Ok(Listeners {
            proxy: bind(proxy, "proxy").await?,
            status: bind(status, "status").await?,
            proxy_tls: None,
        })
    }

    /// Adds the proxy's TLS listener on `addr`, serving `default` to names no SNI takes.
    pub async fn with_tls(
        mut self,
        addr: SocketAddr,
        default: tls::DefaultCertificate,
    ) -> std::io::Result<Listeners> {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {addr} (proxy TLS): {e}; is another process using it? Pick another address with --proxy-listen-tls, or turn it off with --proxy-listen-tls off"),
            )
        })?;
        self.proxy_tls = Some(TlsListener { listener, default });
        Ok(self)
    }
}

/// Loads the config file (refusing to start on an invalid one), then serves until `shutdown`.
pub async fn run_from_file(
    opts: FileOptions,
    listeners: Listeners,
    shutdown: watch::Receiver<bool>,
) -> Result<(), StartError> {
    let trusted = headers::TrustedIps::parse(&opts.trusted_ips).map_err(StartError::TrustedIps)?;
    let plugins = plugins::Enabled::parse(&opts.plugins).map_err(StartError::Plugins)?;
    let telemetry = telemetry::Telemetry::start(&opts.telemetry).map_err(StartError::Telemetry)?;
    let shared = Shared::with_limits(trusted, plugins, telemetry, opts.limits);
    let runtime =
        reload::load(&opts.config, &shared).map_err(|errors| StartError::InvalidConfig {
            file: opts.config.display().to_string(),
            errors,
        })?;
    tracing::info!(
        file = %opts.config.display(),
        summary = %runtime.snapshot.summary(),
        config_hash = %runtime.snapshot.hash,
        "config loaded"
    );
    shared.swap(runtime);
    tokio::spawn(reload::watch_file(
        opts.config.clone(),
        Arc::clone(&shared),
        opts.watch,
        shutdown.clone(),
    ));
    serve(shared, listeners, shutdown, opts.drain_timeout).await;
    Ok(())
}

/// Serves the snapshot cached for the group (if any) at once, then keeps a discovery stream to
/// the control plane in the background while serving until `shutdown`. Only bad options (URL,
/// TLS files, trusted IPs) stop it from starting; an unreachable control plane never does.
pub async fn run_from_control_plane(
    opts: ControlPlaneOptions,
    listeners: Listeners,
    shutdown: watch::Receiver<bool>,
) -> Result<(), StartError> {
    let trusted = headers::TrustedIps::parse(&opts.trusted_ips).map_err(StartError::TrustedIps)?;
    let drain = opts.drain_timeout;
    let plugins = plugins::Enabled::parse(&opts.plugins).map_err(StartError::Plugins)?;
    let mut telemetry_opts = opts.telemetry.clone();
    if telemetry_opts.node_id.is_empty() {
        telemetry_opts.node_id = opts.node_id.clone();
    }
    let telemetry = telemetry::Telemetry::start(&telemetry_opts).map_err(StartError::Telemetry)?;
    let shared = Shared::with_limits(trusted, plugins, telemetry, opts.limits);
    let client = discovery::Client::new(opts, Arc::clone(&shared))?;
    client.serve_cache().await;
    let discovery = tokio::spawn(client.run(shutdown.clone()));
    serve(shared, listeners, shutdown, drain).await;
    // The client watches the same shutdown signal; this only waits for its last log line.
    let _ = discovery.await;
    Ok(())
}

/// Serves the proxy and status listeners of `shared` until `shutdown`, then drains.
pub async fn serve(
    shared: Arc<Shared>,
    listeners: Listeners,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let addr = |l: &TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(addr = %addr(&listeners.proxy), "proxy listening");
    tracing::info!(addr = %addr(&listeners.status), "status listening");
    let shared_end = Arc::clone(&shared);

    let s = Arc::clone(&shared);
    let status_handler = move |req: http::Request<hyper::body::Incoming>,
                               _conn: proxy::ConnInfo| {
        let s = Arc::clone(&s);
        async move { status::handle(&req, &s) }
    };
    let s = Arc::clone(&shared);
    // handle's own future, not one wrapped in a block: the wrapper would hold the request a
    // second time.
    let proxy_handler = move |req, conn| proxy::handle(req, conn, Arc::clone(&s));

    // Readiness turns 503 as soon as shutdown begins, so balancers stop sending new traffic
    // while in-flight requests drain.
    let flag = Arc::clone(&shared);
    let mut sd = shutdown.clone();
    tokio::spawn(async move {
        server::shutdown_signal(sd.clone()).await;
        flag.draining.store(true, Ordering::Relaxed);
        let _ = sd.changed().await;
    });

    // Idle upstream connections the upstream closed, or idle too long, are closed.
    let pools = Arc::downgrade(&shared);
    let sweeper = tokio::spawn(async move {
        let mut every = tokio::time::interval(pool::SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(shared) = pools.upgrade() else {
                return;
            };
            shared.pools.sweep_idle();
        }
    });

    // The status listener outlives the proxy's drain, so probes read "draining" instead of a
    // refused connection while requests finish.
    let tls = match listeners.proxy_tls {
        Some(t) => match tls::server_config(Arc::clone(&shared), t.default) {
            Ok(config) => {
                tracing::info!(addr = %addr(&t.listener), "proxy TLS listening");
                Some(tokio::spawn(server::serve_tls(
                    t.listener,
                    Arc::new(config),
                    proxy_handler.clone(),
                    shutdown.clone(),
                    drain,
                    Some(Arc::clone(&shared)),
                )))
            }
            Err(e) => {
                tracing::error!(error = %e, "the proxy TLS listener cannot start");
                None
            }
        },
        None => None,
    };
    let (status_stop, status_shutdown) = watch::channel(false);
    let status = tokio::spawn(server::serve(
        listeners.status,
        status_handler,
        status_shutdown,
        Duration::from_secs(1),
        None,
    ));
    server::serve(
        listeners.proxy,
        proxy_handler,
        shutdown,
        drain,
        Some(shared),
    )
    .await;
    if let Some(t) = tls {
        let _ = t.await;
    }
    sweeper.abort();
    let _ = status_stop.send(true);
    let _ = status.await;
    // The last requests' access-log lines reach the disk, and their spans the collector, before
    // the process exits.
    shared_end.telemetry.flush().await;
}
