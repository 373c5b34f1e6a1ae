//! The control plane's state: the store, one `watch` channel per group that discovery streams
//! subscribe to, and the fleet registry. Every admin path (gRPC, REST, seed) goes through
//! [`ControlPlane::apply`], so validation and publication happen in exactly one place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use portico_common::delta::Delta;
use portico_common::digest::Digests;
use portico_common::snapshot::Snapshot;
use portico_common::{ConfigErrors, ConfigIssue};
use tokio::sync::watch;

use crate::fleet::{Fleet, NodeView};
use crate::store::{
    valid_group, NewVersion, SnapshotJson, Store, StoreError, VersionMeta, VersionRecord,
};

/// The group a data plane joins when its Hello names none.
pub const DEFAULT_GROUP: &str = "default";

/// A group's live version, as streamed to data planes.
#[derive(Debug, Clone)]
pub struct Published {
    pub group: String,
    pub version: u64,
    pub hash: String,
    /// The whole snapshot, encoded once and shared by every stream.
    pub snapshot_json: Bytes,
    /// The typed snapshot and its per-entity digests, to compute the next version's delta.
    pub snapshot: Arc<Snapshot>,
    pub digests: Arc<Digests>,
    /// What changed since the version live before this one, for data planes that serve it.
    pub delta: Option<PublishedDelta>,
}

/// A delta from the previous live version to this one.
#[derive(Debug, Clone)]
pub struct PublishedDelta {
    pub base_version: u64,
    pub base_hash: String,
    /// JSON-encoded [`Delta`].
    pub json: Bytes,
    /// Entities upserted or removed.
    pub entities: usize,
}

/// A delta is sent only when it is smaller than this fraction of the snapshot's entities;
/// beyond that the whole snapshot costs the data plane about as much and is simpler.
const DELTA_MAX_SHARE: f64 = 0.5;

/// What a subscriber sees: `None` until the group has a config.
pub type LiveRx = watch::Receiver<Option<Arc<Published>>>;

/// A successful apply or rollback.
#[derive(Debug, Clone)]
pub struct Applied {
    pub record: Arc<VersionRecord>,
    /// The content equals the live version; nothing was stored or pushed.
    pub unchanged: bool,
    pub warnings: Vec<ConfigIssue>,
    /// Time spent parsing and validating the text.
    pub validate_time: std::time::Duration,
    /// Time spent encoding, diffing and durably storing the new version.
    pub store_time: std::time::Duration,
}

/// Why an apply, rollback or read failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The config is invalid; every problem is listed and nothing changed.
    #[error("declarative config is invalid:\n{0}")]
    Invalid(ConfigErrors),
    #[error("invalid group name '{0}': use 1-63 characters a-z, 0-9, '_' and '-', starting with a letter or digit")]
    InvalidGroup(String),
    #[error("group '{0}' has no config yet")]
    NoSuchGroup(String),
    #[error("group '{group}' has no version {version}")]
    NoSuchVersion { group: String, version: u64 },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The shared state; cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

struct Inner {
    store: Mutex<Store>,
    /// Serialises applies so two concurrent applies cannot interleave validation and commit
    /// (the second would otherwise compare against a stale live hash).
    apply_lock: tokio::sync::Mutex<()>,
    channels: Mutex<HashMap<String, watch::Sender<Option<Arc<Published>>>>>,
    /// The live publication of each group that has been published or subscribed since start.
    live: Mutex<HashMap<String, Arc<Published>>>,
    fleet: Fleet,
    metrics: crate::metrics::Metrics,
}

impl ControlPlane {
    /// Wraps an opened store.
    pub fn new(store: Store) -> Self {
        ControlPlane::with_fleet(store, Fleet::default())
    }

    /// Wraps an opened store with a fleet registry configured by the caller.
    pub fn with_fleet(store: Store, fleet: Fleet) -> Self {
        ControlPlane {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                apply_lock: tokio::sync::Mutex::new(()),
                channels: Mutex::new(HashMap::new()),
                live: Mutex::new(HashMap::new()),
                fleet,
                metrics: crate::metrics::Metrics::new(),
            }),
        }
    }

    /// The fleet registry.
    pub fn fleet(&self) -> &Fleet {
        &self.inner.fleet
    }

    /// The Prometheus metrics served on the admin listener's `/metrics`.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// Validates `text` with the same loader the data plane uses, stores it as the next version
    /// of `group` and pushes it to the group's data planes.
    pub async fn apply(&self, group: &str, text: String) -> Result<Applied, ApplyError> {
        self.apply_as(group, text, "apply".to_owned()).await
    }

    /// Re-applies the text of `version` of `group` as a new version.
    pub async fn rollback(&self, group: &str, version: u64) -> Result<Applied, ApplyError> {
        let record = self.get(group, version).await?;
        self.apply_as(group, record.config_text, format!("rollback to {version}"))
            .await
    }

    async fn apply_as(
        &self,
        group: &str,
        text: String,
        origin: String,
    ) -> Result<Applied, ApplyError> {
        if !valid_group(group) {
            return Err(ApplyError::InvalidGroup(group.to_owned()));
        }
        let _serial = self.inner.apply_lock.lock().await;
        let this = self.clone();
        let group = group.to_owned();
        // Validation is CPU work and the commit is fsync work: both stay off the async workers.
        let (applied, published) = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let previous = this.live(&group);
            let env = |name: &str| std::env::var(name).ok();
            // Entities unchanged since the live version keep their digests (no re-hashing).
            let loaded = match previous.as_ref().ok().and_then(Option::as_deref) {
                Some(p) => portico_common::load_str_after(&text, &env, (&p.snapshot, &p.digests)),
                None => portico_common::load_str(&text, &env),
            }
            .map_err(ApplyError::Invalid)?;
            let validate_time = started.elapsed();
            // A store that cannot give the live version is reported after the config's errors.
            let previous = previous?;
            if let Some(prev) = previous.as_ref().filter(|p| p.hash == loaded.snapshot.hash) {
                let record = this.current(&group).filter(|r| r.version == prev.version);
                if let Some(record) = record {
                    return Ok((
                        Applied {
                            record,
                            unchanged: true,
                            warnings: loaded.warnings,
                            validate_time,
                            store_time: std::time::Duration::ZERO,
                        },
                        None,
                    ));
                }
            }
            // The delta is computed on the second core while this one encodes, and the next
            // version number is made durable meanwhile (an fsync, mostly waiting); the wire
            // and the store share one encoding.
            let (encoded, delta, reserved) = std::thread::scope(|scope| {
                let delta = scope.spawn(|| {
                    previous
                        .as_deref()
                        .and_then(|prev| delta_from(prev, &loaded.snapshot, &loaded.digests))
                });
                let reserved = scope.spawn(|| this.store().reserve_version());
                let encoded = SnapshotJson::encode(&loaded.snapshot);
                (encoded, delta.join(), reserved.join())
            });
            let snapshot =
                encoded.map_err(|e| ApplyError::Internal(format!("snapshot encoding: {e}")))?;
            let delta = delta.map_err(|_| ApplyError::Internal("delta task panicked".into()))?;
            let version =
                reserved.map_err(|_| ApplyError::Internal("version task panicked".into()))??;
            let snapshot_json = snapshot.bytes();
            let new = NewVersion {
                hash: loaded.snapshot.hash.clone(),
                origin,
                summary: loaded.snapshot.summary(),
                config_text: text,
                snapshot,
            };
            let commit = this.store().commit_reserved(&group, version, new)?;
            let published = if commit.unchanged {
                None
            } else {
                Some(Published {
                    group: group.clone(),
                    version: commit.record.version,
                    hash: commit.record.hash.clone(),
                    snapshot_json,
                    snapshot: Arc::new(loaded.snapshot),
                    digests: Arc::new(loaded.digests),
                    delta,
                })
            };
            Ok::<_, ApplyError>((
                Applied {
                    record: commit.record,
                    unchanged: commit.unchanged,
                    warnings: loaded.warnings,
                    validate_time,
                    store_time: started.elapsed() - validate_time,
                },
                published,
            ))
        })
        .await
        .map_err(|e| ApplyError::Internal(format!("apply task failed: {e}")))??;
        if let Some(published) = published {
            self.publish(published);
        }
        let r = &applied.record;
        tracing::info!(
            group = %r.group,
            config_version = r.version,
            hash = %r.hash,
            unchanged = applied.unchanged,
            origin = %r.origin,
            summary = %r.summary,
            validate_ms = applied.validate_time.as_secs_f64() * 1e3,
            store_ms = applied.store_time.as_secs_f64() * 1e3,
            "config applied"
        );
        Ok(applied)
    }

    fn publish(&self, published: Published) {
        let published = Arc::new(published);
        let replaced = {
            let channels = self.channels();
            let old = self
                .live_map()
                .insert(published.group.clone(), Arc::clone(&published));
            if let Some(tx) = channels.get(&published.group) {
                tx.send_replace(Some(published));
            }
            old
        };
        // The replaced publication holds a whole snapshot (megabytes for 10,000 routes):
        // free it on the blocking pool, not on the async worker that streams the new one.
        if let Some(old) = replaced {
            tokio::task::spawn_blocking(move || drop(old));
        }
    }

    /// The live publication of `group`, built from the store on first use after a start.
    fn live(&self, group: &str) -> Result<Option<Arc<Published>>, ApplyError> {
        if let Some(p) = self.live_map().get(group) {
            return Ok(Some(Arc::clone(p)));
        }
        let Some(record) = self.current(group) else {
            return Ok(None);
        };
        let published = Arc::new(publication(&record)?);
        self.live_map()
            .entry(group.to_owned())
            .or_insert_with(|| Arc::clone(&published));
        Ok(Some(published))
    }

    /// Subscribes to the live version of `group` (created on first use).
    pub fn subscribe(&self, group: &str) -> Result<LiveRx, ApplyError> {
        let mut channels = self.channels();
        if let Some(tx) = channels.get(group) {
            return Ok(tx.subscribe());
        }
        // Read the store while holding the channel map: an apply that commits meanwhile
        // publishes after us and finds this channel, so no version is missed.
        let current = self.live(group)?;
        let (tx, rx) = watch::channel(current);
        channels.insert(group.to_owned(), tx);
        Ok(rx)
    }

    /// The live record of `group`.
    pub fn current(&self, group: &str) -> Option<Arc<VersionRecord>> {
        self.store().current(group)
    }

    /// The live record of every group.
    pub fn groups(&self) -> Vec<Arc<VersionRecord>> {
        self.store().groups()
    }

    /// Versions of `group`, newest first.
    pub fn history(&self, group: &str) -> Result<Vec<VersionMeta>, ApplyError> {
        self.store()
            .history(group)
            .ok_or_else(|| ApplyError::NoSuchGroup(group.to_owned()))
    }

    /// One version of `group` (`0` = live).
    pub async fn get(&self, group: &str, version: u64) -> Result<VersionRecord, ApplyError> {
        if version == 0 {
            return self
                .current(group)
                .map(|r| (*r).clone())
                .ok_or_else(|| ApplyError::NoSuchGroup(group.to_owned()));
        }
        let this = self.clone();
        let g = group.to_owned();
        let found = tokio::task::spawn_blocking(move || this.store().get(&g, version))
            .await
            .map_err(|e| ApplyError::Internal(format!("read task failed: {e}")))??;
        match found {
            Some(record) => Ok(record),
            None if self.current(group).is_none() => Err(ApplyError::NoSuchGroup(group.to_owned())),
            None => Err(ApplyError::NoSuchVersion {
                group: group.to_owned(),
                version,
            }),
        }
    }

    /// Every data plane (of `group`, when given) with its derived state.
    pub fn fleet_view(&self, group: Option<&str>) -> Vec<NodeView> {
        let live: HashMap<String, (u64, String)> = self
            .groups()
            .iter()
            .map(|r| (r.group.clone(), (r.version, r.hash.clone())))
            .collect();
        self.inner.fleet.view(group, |g| live.get(g).cloned())
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // Store methods leave memory consistent with disk at every return, even on error.
        self.inner.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn channels(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<Option<Arc<Published>>>>> {
        self.inner
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn live_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Published>>> {
        self.inner.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The publication of a stored record (after a restart: no delta, the first push is whole).
fn publication(record: &VersionRecord) -> Result<Published, ApplyError> {
    let json = record.snapshot.get();
    let snapshot: Snapshot = serde_json::from_str(json).map_err(|e| {
        ApplyError::Internal(format!(
            "version {} of group '{}' in the store does not decode as a snapshot: {e}",
            record.version, record.group
        ))
    })?;
    let digests = Digests::of(&snapshot);
    Ok(Published {
        group: record.group.clone(),
        version: record.version,
        hash: record.hash.clone(),
        snapshot_json: record.snapshot.bytes(),
        snapshot: Arc::new(snapshot),
        digests: Arc::new(digests),
        delta: None,
    })
}

/// The delta from `prev` to `next`, when it is small enough to be worth sending.
fn delta_from(prev: &Published, next: &Snapshot, next_digests: &Digests) -> Option<PublishedDelta> {
    let delta = Delta::between(&prev.snapshot, &prev.digests, next, next_digests);
    let total = next.services.len()
        + next.routes.len()
        + next.upstreams.len()
        + next.consumers.len()
        + next.plugins.len();
    if delta.len() as f64 > total.max(1) as f64 * DELTA_MAX_SHARE {
        return None;
    }
    let json = serde_json::to_vec(&delta).ok()?;
    Some(PublishedDelta {
        base_version: prev.version,
        base_hash: prev.hash.clone(),
        json: Bytes::from(json),
        entities: delta.len(),
    })
}
