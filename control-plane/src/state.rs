//! The control plane's state: the store, one `watch` channel per group that discovery streams
//! subscribe to, and the fleet registry. Every admin path (gRPC, REST, seed) goes through
//! [`ControlPlane::apply`], so validation and publication happen in exactly one place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use portico_common::{ConfigErrors, ConfigIssue};
use tokio::sync::watch;

use crate::fleet::{Fleet, NodeView};
use crate::store::{valid_group, NewVersion, Store, StoreError, VersionMeta, VersionRecord};

/// The group a data plane joins when its Hello names none.
pub const DEFAULT_GROUP: &str = "default";

/// A group's live version, as streamed to data planes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub group: String,
    pub version: u64,
    pub hash: String,
    pub snapshot_json: Bytes,
}

/// What a subscriber sees: `None` until the group has a config.
pub type LiveRx = watch::Receiver<Option<Arc<Published>>>;

/// A successful apply or rollback.
#[derive(Debug, Clone)]
pub struct Applied {
    pub record: Arc<VersionRecord>,
    /// The content equals the live version; nothing was stored or pushed.
    pub unchanged: bool,
    pub warnings: Vec<ConfigIssue>,
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
    fleet: Fleet,
}

impl ControlPlane {
    /// Wraps an opened store.
    pub fn new(store: Store) -> Self {
        ControlPlane {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                apply_lock: tokio::sync::Mutex::new(()),
                channels: Mutex::new(HashMap::new()),
                fleet: Fleet::default(),
            }),
        }
    }

    /// The fleet registry.
    pub fn fleet(&self) -> &Fleet {
        &self.inner.fleet
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
            let loaded = portico_common::load_str(&text, &|name| std::env::var(name).ok())
                .map_err(ApplyError::Invalid)?;
            let snapshot = serde_json::to_value(&loaded.snapshot)
                .map_err(|e| ApplyError::Internal(format!("snapshot encoding: {e}")))?;
            let new = NewVersion {
                hash: loaded.snapshot.hash.clone(),
                origin,
                summary: loaded.snapshot.summary(),
                config_text: text,
                snapshot,
            };
            let commit = this.store().commit(&group, new)?;
            let published = if commit.unchanged {
                None
            } else {
                Some(publication(&commit.record)?)
            };
            Ok::<_, ApplyError>((
                Applied {
                    record: commit.record,
                    unchanged: commit.unchanged,
                    warnings: loaded.warnings,
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
            "config applied"
        );
        Ok(applied)
    }

    fn publish(&self, published: Published) {
        let channels = self.channels();
        if let Some(tx) = channels.get(&published.group) {
            tx.send_replace(Some(Arc::new(published)));
        }
    }

    /// Subscribes to the live version of `group` (created on first use).
    pub fn subscribe(&self, group: &str) -> Result<LiveRx, ApplyError> {
        let mut channels = self.channels();
        if let Some(tx) = channels.get(group) {
            return Ok(tx.subscribe());
        }
        // Read the store while holding the channel map: an apply that commits meanwhile
        // publishes after us and finds this channel, so no version is missed.
        let current = match self.store().current(group) {
            Some(record) => Some(Arc::new(publication(&record)?)),
            None => None,
        };
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
}

fn publication(record: &VersionRecord) -> Result<Published, ApplyError> {
    let json = serde_json::to_vec(&record.snapshot)
        .map_err(|e| ApplyError::Internal(format!("snapshot encoding: {e}")))?;
    Ok(Published {
        group: record.group.clone(),
        version: record.version,
        hash: record.hash.clone(),
        snapshot_json: Bytes::from(json),
    })
}
