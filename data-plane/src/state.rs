//! State shared by every connection of a data plane and surviving config swaps: the current
//! runtime (one `ArcSwap`), connection pools, counters, reload status.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use http::HeaderValue;

use crate::headers::{RequestIds, TrustedIps};
use crate::pool::Pools;
use crate::runtime::Runtime;

/// Process-wide counters shown on `/status`.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections_active: AtomicU64,
    pub connections_total: AtomicU64,
    pub requests_total: AtomicU64,
    pub requests_active: AtomicU64,
}

/// Outcome of config loads, for `/status` and for tests that wait on a reload.
#[derive(Debug, Default)]
pub struct ReloadStatus {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    /// Errors of the last failed load (cleared by a successful one). Touched only by the reload
    /// task and `/status`, never by the request path.
    pub last_errors: Mutex<Vec<String>>,
}

/// Everything a data plane's listeners share.
#[derive(Debug)]
pub struct Shared {
    pub runtime: ArcSwapOption<Runtime>,
    pub pools: Pools,
    /// The plugins this data plane runs (`--plugins`).
    pub plugins: crate::plugins::Enabled,
    pub trusted: TrustedIps,
    pub ids: RequestIds,
    pub stats: Stats,
    pub reloads: ReloadStatus,
    pub draining: AtomicBool,
    pub started: Instant,
    /// `Via` value, e.g. `1.1 portico/0.1.0`.
    pub via: HeaderValue,
    /// `Server` value for responses Portico generates itself.
    pub server: HeaderValue,
    /// The control-plane link, when this data plane is fed by one (shown on `/status`).
    pub control_plane: OnceLock<crate::discovery::Link>,
    /// Prometheus metrics, served on the status listener's `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// The access log and the node's trace pipeline (`--access-log`, `--otlp-endpoint`).
    pub telemetry: crate::telemetry::Telemetry,
    /// Connection, head-size and head-time bounds of the proxy listener, and its path policy.
    pub limits: crate::server::Limits,
}

impl Shared {
    /// A data plane with no config yet, running every plugin of this build.
    pub fn new(trusted: TrustedIps) -> Arc<Self> {
        Shared::with_plugins(trusted, crate::plugins::Enabled::default())
    }

    /// A data plane with no config yet that runs only the `plugins` given.
    pub fn with_plugins(trusted: TrustedIps, plugins: crate::plugins::Enabled) -> Arc<Self> {
        Shared::with_telemetry(trusted, plugins, crate::telemetry::Telemetry::default())
    }

    /// A data plane with no config yet, its plugins and its access log and tracing.
    pub fn with_telemetry(
        trusted: TrustedIps,
        plugins: crate::plugins::Enabled,
        telemetry: crate::telemetry::Telemetry,
    ) -> Arc<Self> {
        Shared::with_limits(trusted, plugins, telemetry, Default::default())
    }

    /// [`Shared::with_telemetry`] with the proxy listener's [`crate::server::Limits`].
    pub fn with_limits(
        trusted: TrustedIps,
        plugins: crate::plugins::Enabled,
        telemetry: crate::telemetry::Telemetry,
        limits: crate::server::Limits,
    ) -> Arc<Self> {
        let version = env!("CARGO_PKG_VERSION");
        Arc::new(Shared {
            runtime: ArcSwapOption::empty(),
            pools: Pools::default(),
            plugins,
            trusted,
            ids: RequestIds::default(),
            stats: Stats::default(),
            reloads: ReloadStatus::default(),
            draining: AtomicBool::new(false),
            started: Instant::now(),
            via: HeaderValue::from_str(&format!("1.1 portico/{version}"))
                .unwrap_or(HeaderValue::from_static("1.1 portico")),
            server: HeaderValue::from_str(&format!("portico/{version}"))
                .unwrap_or(HeaderValue::from_static("portico")),
            control_plane: OnceLock::new(),
            metrics: crate::metrics::Metrics::new(),
            telemetry,
            limits,
        })
    }

    /// Publishes a compiled runtime; requests already running keep the one they loaded.
    pub fn swap(&self, runtime: Runtime) {
        let hash = runtime.snapshot.hash.clone();
        let version = runtime.version;
        // Before the store, so the new runtime's first requests find their route slots.
        self.metrics.prepare(&runtime);
        let old = self.runtime.swap(Some(Arc::new(runtime)));
        // Freeing a large runtime (10,000 routes) takes milliseconds: do it on the blocking
        // pool rather than in whoever swapped (and would then answer the control plane later).
        // A request still holding the old runtime frees it when it finishes.
        if let (Some(old), Ok(handle)) = (old, tokio::runtime::Handle::try_current()) {
            handle.spawn_blocking(move || drop(old));
        }
        self.reloads.succeeded.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.reloads.last_errors.lock() {
            e.clear();
        }
        tracing::info!(config_hash = %hash, config_version = version, "config applied");
    }

    /// Records a refused config; the current runtime keeps serving.
    pub fn record_failure(&self, errors: Vec<String>) {
        self.reloads.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.reloads.last_errors.lock() {
            *e = errors;
        }
    }
}
