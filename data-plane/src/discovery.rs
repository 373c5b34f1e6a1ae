//! The discovery client: the data plane's half of the `portico.v1.Discovery` stream.
//!
//! At start the last snapshot cached for the group is served, so a data plane whose control
//! plane is down still boots into its last good config. Then one stream is kept open: `Hello`
//! (saying what is served, so a resuming control plane can skip a re-push), every `Update`
//! decoded, hash-checked, compiled off the workers, swapped, cached and answered with `Ack` or
//! `Nack`, and `Status` every 10 s and after each apply. Any error drops the stream and
//! reconnects with capped, fully jittered exponential backoff; serving never stops for it.

mod apply;
mod backoff;
mod connect;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use portico_proto::v1::control_plane_message::Kind as CpKind;
use portico_proto::v1::data_plane_message::Kind as DpKind;
use portico_proto::v1::discovery_client::DiscoveryClient;
use portico_proto::v1::{
    Ack, ConfigError, ControlPlaneMessage, DataPlaneMessage, Hello, Nack, Status as StatusMsg,
    Update,
};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use portico_common::snapshot::Snapshot;

use crate::runtime::Runtime;
use crate::state::Shared;

pub use connect::SetupError;

use apply::{Outcome, ServedDigests};
use backoff::Backoff;
use connect::Target;

/// Status is reported this often, besides right after each apply.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Connecting and opening the stream must finish within this; a server that accepts TCP but
/// never answers (a black hole, the wrong service) would otherwise stall until h2 keep-alive.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Snapshots of large configs exceed tonic's 4 MiB default message limit.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// How a control-plane-fed data plane runs.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// Cluster (gRPC) URL: `http://127.0.0.1:8005` or `https://cp.example:8005`.
    pub control_plane: String,
    /// Node group whose snapshots this data plane serves, e.g. `default`.
    pub group: String,
    /// Stable id of this data plane in the control plane's fleet view.
    pub node_id: String,
    /// Where the last good snapshot is cached.
    pub cache_dir: PathBuf,
    /// Mutual TLS to the control plane; required for `https://` URLs.
    pub tls: Option<ClientTls>,
    /// Addresses whose X-Forwarded-* headers are trusted.
    pub trusted_ips: Vec<String>,
    /// The plugins this data plane runs (Kong's `plugins`: `bundled`, `off`, names).
    pub plugins: Vec<String>,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub drain_timeout: Duration,
    /// Access log and tracing.
    pub telemetry: crate::telemetry::TelemetryOptions,
    /// Connection, head-size and head-time bounds of the proxy listener, and its path policy.
    pub limits: crate::server::Limits,
}

/// PEM files for mutual TLS with the control plane.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// This data plane's certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that signed the control plane's certificate.
    pub ca: PathBuf,
    /// Name to verify the control plane's certificate against, when not the URL's host.
    pub server_name: Option<String>,
}

/// The state of the link to the control plane, for `/status`. Touched by the discovery task
/// and the status listener only, never by the request path.
#[derive(Debug)]
pub struct Link {
    url: String,
    group: String,
    node_id: String,
    state: Mutex<LinkState>,
}

#[derive(Debug, Default)]
struct LinkState {
    connected_since: Option<SystemTime>,
    last_error: Option<String>,
}

impl Link {
    fn new(opts: &ControlPlaneOptions) -> Self {
        Link {
            url: opts.control_plane.clone(),
            group: opts.group.clone(),
            node_id: opts.node_id.clone(),
            state: Mutex::new(LinkState::default()),
        }
    }

    /// Whether a stream to the control plane is open now.
    pub fn connected(&self) -> bool {
        self.state
            .lock()
            .map(|s| s.connected_since.is_some())
            .unwrap_or(false)
    }

    fn set_connected(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.connected_since = Some(SystemTime::now());
        }
    }

    fn set_disconnected(&self, error: String) {
        if let Ok(mut s) = self.state.lock() {
            s.connected_since = None;
            s.last_error = Some(error);
        }
    }

    /// The `control_plane` object of `/status`; `rt` is the runtime being served.
    pub fn to_json(&self, rt: Option<&Runtime>) -> serde_json::Value {
        let (since, last_error) = self
            .state
            .lock()
            .map(|s| (s.connected_since, s.last_error.clone()))
            .unwrap_or_default();
        json!({
            "url": self.url,
            "connected": since.is_some(),
            "group": self.group,
            "node_id": self.node_id,
            "serving_version": rt.map(|r| r.version),
            "serving_hash": rt.map(|r| r.snapshot.hash.clone()),
            "last_error": last_error,
            "connected_since": since.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        })
    }
}

/// Why a stream ended; the message is what the operator reads.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Explained(String),
    #[error("control plane {0} closed the stream")]
    Closed(String),
}

/// An open stream: the sender for what follows Hello, the inbound messages, the version
/// announced in Hello.
type Opened = (
    mpsc::Sender<DataPlaneMessage>,
    tonic::Streaming<ControlPlaneMessage>,
    u64,
);

/// The cache is written once updates have paused this long...
const CACHE_QUIET: Duration = Duration::from_millis(250);
/// ...or this long after the first unwritten update, whichever comes first.
const CACHE_MAX_DELAY: Duration = Duration::from_secs(2);

/// The last applied snapshot, waiting to be written to the cache.
type ToCache = Option<(u64, Arc<Snapshot>)>;

/// The discovery client of one data plane.
#[derive(Debug, Clone)]
pub struct Client {
    opts: Arc<ControlPlaneOptions>,
    target: Target,
    shared: Arc<Shared>,
    served: Arc<ServedDigests>,
    /// Applied snapshots go to the cache writer through this; a burst of updates is written
    /// once, the newest.
    to_cache: Arc<watch::Sender<ToCache>>,
}

impl Client {
    /// Checks `opts` (URL, TLS files) and attaches the link state to `shared` for `/status`.
    pub fn new(opts: ControlPlaneOptions, shared: Arc<Shared>) -> Result<Client, SetupError> {
        let target = connect::target(&opts)?;
        let _ = shared.control_plane.set(Link::new(&opts));
        Ok(Client {
            opts: Arc::new(opts),
            target,
            shared,
            served: Arc::default(),
            to_cache: Arc::new(watch::channel(None).0),
        })
    }

    fn link(&self) -> Option<&Link> {
        self.shared.control_plane.get()
    }

    /// Serves the snapshot cached for this group, if any. Returns whether one is now live.
    pub async fn serve_cache(&self) -> bool {
        let (opts, shared) = (Arc::clone(&self.opts), Arc::clone(&self.shared));
        let group = opts.group.clone();
        let node_id = opts.node_id.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let cached = crate::cache::load(&opts.cache_dir, &opts.group)?;
            Ok::<_, crate::cache::CacheError>(cached.map(|c| {
                let (version, hash) = (c.version, c.hash);
                let rt = Runtime::compile_for(c.snapshot, &shared, None).map(|mut rt| {
                    rt.version = version;
                    rt
                });
                (version, hash, rt)
            }))
        })
        .await;
        match loaded {
            Ok(Ok(Some((version, hash, Ok(rt))))) => {
                let summary = rt.snapshot.summary();
                self.shared.swap(rt);
                tracing::info!(group, node_id, config_version = version, config_hash = %hash, %summary, "serving cached config");
                true
            }
            Ok(Ok(Some((version, hash, Err(issues))))) => {
                let errors: Vec<String> = issues.iter().map(ToString::to_string).collect();
                for e in &errors {
                    tracing::warn!(group, node_id, config_version = version, config_hash = %hash, error = %e, "cached config refused by this build; waiting for the control plane");
                }
                self.shared.record_failure(errors);
                false
            }
            Ok(Ok(None)) => {
                tracing::info!(
                    group,
                    node_id,
                    "no cached config; not ready until the control plane sends one"
                );
                false
            }
            Ok(Err(e)) => {
                tracing::warn!(group, node_id, error = %e, "cannot use the config cache; waiting for the control plane");
                false
            }
            Err(e) => {
                tracing::error!(group, node_id, error = %e, "loading the config cache failed");
                false
            }
        }
    }

    /// Keeps a stream to the control plane open until `shutdown`, reconnecting with backoff.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        tokio::spawn(write_cache(
            Arc::clone(&self.opts),
            self.to_cache.subscribe(),
        ));
        let stop = crate::server::shutdown_signal(shutdown);
        tokio::pin!(stop);
        let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
        let (group, node_id) = (self.opts.group.as_str(), self.opts.node_id.as_str());
        loop {
            let err = tokio::select! {
                _ = &mut stop => break,
                e = self.session(&mut backoff) => e,
            };
            let message = err.to_string();
            let was_connected = self.link().is_some_and(Link::connected);
            if let Some(l) = self.link() {
                l.set_disconnected(message.clone());
            }
            let delay = backoff.next_delay();
            if was_connected {
                tracing::warn!(group, node_id, addr = %self.target.authority, error = %message, retry_in_ms = delay.as_millis() as u64, "lost the control plane; still serving the current config");
            } else {
                tracing::warn!(group, node_id, addr = %self.target.authority, error = %message, attempt = backoff.attempts(), retry_in_ms = delay.as_millis() as u64, "cannot connect to the control plane; still serving the current config");
            }
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        tracing::info!(group, node_id, "discovery client stopped");
    }

    /// One stream, from connect to the error that ends it.
    async fn session(&self, backoff: &mut Backoff) -> LinkError {
        let explain = |e: &(dyn std::error::Error + 'static)| {
            LinkError::Explained(connect::explain(&self.target, e))
        };
        let opened = tokio::time::timeout(OPEN_TIMEOUT, self.open()).await;
        let (tx, mut inbound, serving_version) = match opened {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return e,
            Err(_) => {
                return LinkError::Explained(format!(
                    "control plane {addr}: {addr} accepted the connection but did not open the \
                     discovery stream within {}s; is this the control plane's cluster (gRPC) \
                     port?",
                    OPEN_TIMEOUT.as_secs(),
                    addr = self.target.authority
                ))
            }
        };
        if let Some(l) = self.link() {
            l.set_connected();
        }
        tracing::info!(
            group = %self.opts.group,
            node_id = %self.opts.node_id,
            addr = %self.target.authority,
            tls = self.target.tls,
            config_version = serving_version,
            "connected to the control plane"
        );

        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + STATUS_INTERVAL,
            STATUS_INTERVAL,
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_apply_micros = 0;
        loop {
            tokio::select! {
                msg = inbound.message() => match msg {
                    // The backoff restarts only once the stream has proved useful (a message, or
                    // a status period without error), so a control plane that accepts and then
                    // drops every stream is not hammered at the base delay.
                    Ok(Some(m)) => match m.kind {
                        Some(CpKind::Update(u)) => {
                            backoff.reset();
                            if let Err(e) = self.handle_update(u, &tx, &mut last_apply_micros).await {
                                return e;
                            }
                        }
                        // A newer control plane may send kinds this build does not know.
                        None => tracing::debug!("ignoring an unknown control plane message"),
                    },
                    Ok(None) => return self.closed(),
                    Err(status) => return explain(&status),
                },
                _ = ticker.tick() => {
                    backoff.reset();
                    if tx.send(self.status(last_apply_micros)).await.is_err() {
                        return self.closed();
                    }
                }
            }
        }
    }

    /// Connects, says Hello and opens the stream. Returns the sender for what follows Hello,
    /// the inbound stream and the version announced.
    async fn open(&self) -> Result<Opened, LinkError> {
        let explain = |e: &(dyn std::error::Error + 'static)| {
            LinkError::Explained(connect::explain(&self.target, e))
        };
        let channel = match self.target.endpoint.connect().await {
            Ok(c) => c,
            Err(e) => return Err(explain(&e)),
        };
        let mut client = DiscoveryClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (tx, rx) = mpsc::channel::<DataPlaneMessage>(16);
        let (serving_version, serving_hash) = self.serving();
        let hello = Hello {
            node_id: self.opts.node_id.clone(),
            group: self.opts.group.clone(),
            build_version: env!("CARGO_PKG_VERSION").to_owned(),
            serving_version,
            serving_hash,
        };
        // Queued before the call, so it is the first message on the stream.
        if tx.send(message(DpKind::Hello(hello))).await.is_err() {
            return Err(self.closed());
        }
        match client.stream(ReceiverStream::new(rx)).await {
            Ok(r) => Ok((tx, r.into_inner(), serving_version)),
            Err(status) => Err(explain(&status)),
        }
    }

    /// Applies one update off the workers and answers it.
    async fn handle_update(
        &self,
        update: Update,
        tx: &mpsc::Sender<DataPlaneMessage>,
        last_apply_micros: &mut u64,
    ) -> Result<(), LinkError> {
        let (opts, shared) = (Arc::clone(&self.opts), Arc::clone(&self.shared));
        let served = Arc::clone(&self.served);
        let (nonce, version, hash) = (update.nonce.clone(), update.version, update.hash.clone());
        let delta = !update.delta_json.is_empty();
        let outcome = tokio::task::spawn_blocking(move || {
            apply::apply(&update, &shared, &opts.group, &served)
        })
        .await
        .unwrap_or_else(|e| Outcome::Refused {
            errors: vec![portico_common::ConfigIssue::new(
                "",
                format!("internal error while applying: {e}"),
            )],
            micros: 0,
        });
        let (group, node_id) = (self.opts.group.as_str(), self.opts.node_id.as_str());
        let mut reply = vec![];
        match outcome {
            Outcome::Applied { micros, snapshot } => {
                *last_apply_micros = micros;
                self.shared.metrics.set_last_apply(micros);
                tracing::info!(group, node_id, config_version = version, config_hash = %hash, delta, apply_micros = micros, "applied config from the control plane");
                reply.push(message(DpKind::Ack(Ack {
                    nonce,
                    version,
                    apply_micros: micros,
                })));
                reply.push(self.status(micros));
                // Cached after the answer is queued: the cache is the cold-start fallback, and
                // writing megabytes with an fsync must not delay the fleet's convergence.
                self.to_cache.send_replace(Some((version, snapshot)));
            }
            Outcome::Resync { reason, micros } => {
                tracing::info!(group, node_id, config_version = version, reason = %reason, "cannot apply the delta to the served config; asking for the whole snapshot");
                reply.push(message(DpKind::Nack(Nack {
                    nonce,
                    version,
                    errors: vec![ConfigError {
                        path: reason.path,
                        message: reason.message,
                    }],
                    apply_micros: micros,
                    resync: true,
                })));
            }
            Outcome::Unchanged => {
                tracing::debug!(group, node_id, config_version = version, config_hash = %hash, "already serving this config");
                reply.push(message(DpKind::Ack(Ack {
                    nonce,
                    version,
                    apply_micros: 0,
                })));
            }
            Outcome::Refused { errors, micros } => {
                for e in &errors {
                    tracing::error!(group, node_id, config_version = version, config_hash = %hash, error = %e, "config from the control plane refused; still serving the previous config");
                }
                self.shared
                    .record_failure(errors.iter().map(ToString::to_string).collect());
                reply.push(message(DpKind::Nack(Nack {
                    nonce,
                    version,
                    errors: errors
                        .into_iter()
                        .map(|e| ConfigError {
                            path: e.path,
                            message: e.message,
                        })
                        .collect(),
                    apply_micros: micros,
                    resync: false,
                })));
            }
        }
        for m in reply {
            if tx.send(m).await.is_err() {
                return Err(self.closed());
            }
        }
        Ok(())
    }

    /// Version and hash of the runtime being served (0 and "" for none).
    fn serving(&self) -> (u64, String) {
        self.shared
            .runtime
            .load()
            .as_ref()
            .map(|rt| (rt.version, rt.snapshot.hash.clone()))
            .unwrap_or_default()
    }

    fn status(&self, apply_latency_micros: u64) -> DataPlaneMessage {
        let (serving_version, serving_hash) = self.serving();
        message(DpKind::Status(StatusMsg {
            serving_version,
            serving_hash,
            apply_latency_micros,
            active_connections: self.shared.stats.connections_active.load(Ordering::Relaxed),
        }))
    }

    fn closed(&self) -> LinkError {
        LinkError::Closed(self.target.authority.clone())
    }
}

fn message(kind: DpKind) -> DataPlaneMessage {
    DataPlaneMessage { kind: Some(kind) }
}

/// Writes applied snapshots to the cache, newest only: a write starts once no newer snapshot
/// arrived for [`CACHE_QUIET`] (at most [`CACHE_MAX_DELAY`] after the first unwritten one), so a
/// burst of updates costs one write, and the write never competes with applying the next one.
async fn write_cache(opts: Arc<ControlPlaneOptions>, mut rx: watch::Receiver<ToCache>) {
    while rx.changed().await.is_ok() {
        let first = tokio::time::Instant::now();
        loop {
            let quiet = tokio::time::sleep(CACHE_QUIET);
            let deadline = tokio::time::sleep_until(first + CACHE_MAX_DELAY);
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { break },
                _ = quiet => break,
                _ = deadline => break,
            }
        }
        let Some((version, snapshot)) = rx.borrow_and_update().clone() else {
            continue;
        };
        let o = Arc::clone(&opts);
        let written = tokio::task::spawn_blocking(move || {
            crate::cache::store(&o.cache_dir, &o.group, version, &snapshot)
                .map(|()| snapshot.hash.clone())
        })
        .await;
        let (group, node_id) = (opts.group.as_str(), opts.node_id.as_str());
        match written {
            Ok(Ok(hash)) => {
                tracing::info!(group, node_id, config_version = version, config_hash = %hash, "config cached")
            }
            // A cache that cannot be written costs only the cold-start fallback: a warning.
            Ok(Err(e)) => {
                tracing::warn!(group, node_id, config_version = version, error = %e, "cannot cache the applied config")
            }
            Err(e) => {
                tracing::warn!(group, node_id, config_version = version, error = %e, "cache write task failed")
            }
        }
    }
}
