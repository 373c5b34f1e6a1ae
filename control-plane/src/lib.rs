//! Portico's control plane: the on-disk store of versioned configs per node group, the
//! discovery server that streams snapshots to data planes (one update in flight, coalescing,
//! NACKed versions parked), the fleet registry, and the admin APIs (gRPC for the CLI, REST in
//! Kong's style) on one admin listener.
//!
//! Validation is `portico_common::load_str`, the same code the data plane runs. This crate
//! depends on `common` and `proto` only, never on the data plane.
//!
//! [`run`] is the entry point `portico cp` and `portico up` call with already-bound listeners.

pub mod admin;
mod cluster;
pub mod discovery;
pub mod fleet;
pub mod metrics;
pub mod state;
pub mod store;

use std::path::PathBuf;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use state::{ApplyError, ControlPlane, DEFAULT_GROUP};
pub use store::StoreError;

/// How to run a control plane.
#[derive(Debug, Clone, Default)]
pub struct CpOptions {
    /// Where the store lives (the CLI defaults it to `./portico-data`).
    pub data_dir: PathBuf,
    /// Bearer token required on every REST and gRPC admin call.
    pub admin_token: Option<String>,
    /// Mutual TLS on the cluster listener; `None` = plaintext.
    pub cluster_tls: Option<ClusterTls>,
    /// Allow a plaintext cluster listener or a token-less admin listener on a non-loopback address.
    pub insecure: bool,
    /// Config text applied to group "default" at start when that group has no config yet.
    pub seed: Option<String>,
    /// Versions kept per group (the live one included); older ones are deleted at each
    /// commit. `None` keeps every version.
    pub history_limit: Option<std::num::NonZeroUsize>,
    /// How long a disconnected data plane stays in the fleet view; `None` = 14 days (Kong's
    /// `cluster_data_plane_purge_delay`).
    pub data_plane_purge_delay: Option<std::time::Duration>,
}

/// PEM files for the cluster listener's mutual TLS.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    /// The server certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that must have signed every data plane's client certificate.
    pub client_ca: PathBuf,
}

/// The two listeners, already bound (tests bind port 0).
#[derive(Debug)]
pub struct CpListeners {
    /// Admin REST + admin gRPC.
    pub admin: TcpListener,
    /// Discovery (data planes).
    pub cluster: TcpListener,
}

/// Why the control plane did not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum CpError {
    #[error("the admin listener {addr} is reachable from other hosts but no admin token is set: set --admin-token or PORTICO_ADMIN_TOKEN (or bind the admin listener to 127.0.0.1, or pass --insecure to allow unauthenticated admin access)")]
    AdminWithoutToken { addr: std::net::SocketAddr },
    #[error("the admin token is empty: set a non-empty --admin-token / PORTICO_ADMIN_TOKEN")]
    EmptyAdminToken,
    #[error("the cluster listener {addr} is reachable from other hosts but has no TLS: set --cluster-cert, --cluster-key and --cluster-ca (`portico certs init` creates them), or bind it to 127.0.0.1, or pass --insecure to allow plaintext")]
    ClusterWithoutTls { addr: std::net::SocketAddr },
    #[error("cluster TLS: {0}")]
    ClusterTls(String),
    #[error("cannot open the store in {dir}: {source}")]
    Store {
        dir: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("the seed config for group 'default' was refused: {0}")]
    Seed(#[source] ApplyError),
    #[error("{listener} listener: {message}")]
    Serve {
        listener: &'static str,
        message: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs the control plane until `shutdown` turns true.
pub async fn run(
    opts: CpOptions,
    listeners: CpListeners,
    shutdown: watch::Receiver<bool>,
) -> Result<(), CpError> {
    let admin_addr = listeners.admin.local_addr()?;
    let cluster_addr = listeners.cluster.local_addr()?;
    if opts.admin_token.as_deref() == Some("") {
        return Err(CpError::EmptyAdminToken);
    }
    if !admin_addr.ip().is_loopback() && opts.admin_token.is_none() {
        if !opts.insecure {
            return Err(CpError::AdminWithoutToken { addr: admin_addr });
        }
        tracing::warn!(addr = %admin_addr, "admin API reachable from other hosts without a token (--insecure)");
    }
    let acceptor = match &opts.cluster_tls {
        Some(tls) => Some(cluster::acceptor(tls)?),
        None if !cluster_addr.ip().is_loopback() => {
            if !opts.insecure {
                return Err(CpError::ClusterWithoutTls { addr: cluster_addr });
            }
            tracing::warn!(addr = %cluster_addr, "cluster listener reachable from other hosts without TLS (--insecure)");
            None
        }
        None => None,
    };

    let dir = opts.data_dir.clone();
    let limit = opts.history_limit;
    let store = tokio::task::spawn_blocking(move || {
        store::Store::open(&dir).map(|s| s.with_history_limit(limit))
    })
    .await
    .map_err(|e| CpError::Io(std::io::Error::other(e)))?
    .map_err(|source| CpError::Store {
        dir: opts.data_dir.clone(),
        source,
    })?;
    let purge = opts
        .data_plane_purge_delay
        .unwrap_or(fleet::DEFAULT_PURGE_DELAY);
    let cp = ControlPlane::with_fleet(store, fleet::Fleet::new(purge));
    if let Some(seed) = opts.seed {
        if cp.current(DEFAULT_GROUP).is_none() {
            cp.apply(DEFAULT_GROUP, seed).await.map_err(CpError::Seed)?;
        }
    }

    tracing::info!(addr = %admin_addr, "admin listening");
    tracing::info!(addr = %cluster_addr, "cluster listening");
    if acceptor.is_none() {
        tracing::info!("cluster listener is plaintext (no --cluster-cert)");
    }
    let router = admin::AdminRouter::new(cp.clone(), opts.admin_token);
    let admin = tokio::spawn(admin::serve(listeners.admin, router, shutdown.clone()));
    let svc = discovery::DiscoveryService::new(cp, shutdown.clone());
    let cluster = cluster::serve(listeners.cluster, acceptor, svc, shutdown).await;
    if cluster.is_err() {
        // The cluster server died on its own: do not wait for a shutdown signal that may
        // never come; stop the admin listener too and report.
        admin.abort();
    }
    // Otherwise the admin task ends on the same signal; wait so `run` returns after both drained.
    if let Err(e) = admin.await {
        if !e.is_cancelled() {
            tracing::error!(error = %e, "admin listener task failed");
        }
    }
    cluster
}
