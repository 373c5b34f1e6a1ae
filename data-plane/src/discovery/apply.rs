//! One update from the control plane: decode (a whole snapshot, or a delta against the one
//! served), verify the content hash, compile, swap. Runs on the blocking pool, and never leaves
//! the data plane without a runtime: anything refused keeps the previous one serving. Caching
//! the result on disk is the caller's job, after the answer is sent.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use portico_common::delta::Delta;
use portico_common::digest::Digests;
use portico_common::snapshot::Snapshot;
use portico_common::ConfigIssue;
use portico_proto::v1::Update;

use crate::runtime::Runtime;
use crate::state::Shared;

/// What became of an update.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Swapped in; `snapshot` is what now serves, for the cache.
    Applied {
        micros: u64,
        snapshot: Arc<Snapshot>,
    },
    /// Already serving this version and content: nothing to do, but still acknowledged so the
    /// control plane does not wait for an answer.
    Unchanged,
    /// Refused; the previous runtime keeps serving.
    Refused {
        errors: Vec<ConfigIssue>,
        micros: u64,
    },
    /// A delta this data plane cannot apply to what it serves (another base, or a result that
    /// does not hash as announced): not a verdict on the config; the whole snapshot is asked
    /// for instead.
    Resync { reason: ConfigIssue, micros: u64 },
}

/// The per-entity digests of the snapshot being served, keyed by its hash, so a delta is
/// checked by hashing only the entities it touches.
#[derive(Debug, Default)]
pub(crate) struct ServedDigests(Mutex<Option<(String, Arc<Digests>)>>);

impl ServedDigests {
    fn get(&self, snapshot: &Snapshot) -> Arc<Digests> {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some((hash, d)) if *hash == snapshot.hash => Arc::clone(d),
            // Served from the cache, or the first delta since a start: hash it once.
            _ => {
                drop(guard);
                Arc::new(Digests::of(snapshot))
            }
        }
    }

    fn set(&self, hash: String, digests: Arc<Digests>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((hash, digests));
    }
}

/// Applies `update` to `shared`. Blocking: call from `spawn_blocking`.
pub(crate) fn apply(
    update: &Update,
    shared: &Shared,
    group: &str,
    served: &ServedDigests,
) -> Outcome {
    let started = Instant::now();
    let micros = || u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let current = shared.runtime.load_full();
    if let Some(cur) = current.as_deref() {
        if cur.version == update.version && cur.snapshot.hash == update.hash {
            return Outcome::Unchanged;
        }
    }
    if let Err(issue) = check_group(update, group) {
        return Outcome::Refused {
            errors: vec![issue],
            micros: micros(),
        };
    }
    let decoded = if update.delta_json.is_empty() {
        whole(update)
    } else {
        match delta(update, current.as_deref(), served) {
            Ok(d) => Ok(d),
            Err(reason) => {
                return Outcome::Resync {
                    reason,
                    micros: micros(),
                }
            }
        }
    };
    let compiled = decoded.and_then(|(snapshot, digests)| {
        let rt = Runtime::compile_for(snapshot, shared, current.as_deref());
        rt.map(|rt| (rt, digests))
    });
    let (mut runtime, digests) = match compiled {
        Ok(c) => c,
        Err(errors) => {
            return Outcome::Refused {
                errors,
                micros: micros(),
            }
        }
    };
    runtime.version = update.version;
    // The swap frees the old runtime off this thread only if nothing here still holds it.
    drop(current);
    let snapshot = Arc::clone(&runtime.snapshot);
    served.set(snapshot.hash.clone(), Arc::new(digests));
    shared.swap(runtime);
    Outcome::Applied {
        micros: micros(),
        snapshot,
    }
}

fn check_group(update: &Update, group: &str) -> Result<(), ConfigIssue> {
    if !update.group.is_empty() && update.group != group {
        return Err(ConfigIssue::new(
            "group",
            format!(
                "the update is for group '{}', this data plane serves group '{group}'",
                update.group
            ),
        ));
    }
    Ok(())
}

/// Decodes a whole snapshot and checks it is the content the control plane hashed.
fn whole(update: &Update) -> Result<(Snapshot, Digests), Vec<ConfigIssue>> {
    let snapshot: Snapshot = serde_json::from_slice(&update.snapshot_json).map_err(|e| {
        vec![ConfigIssue::new(
            "snapshot_json",
            format!(
                "cannot decode the snapshot: {e} (is the control plane a newer Portico than \
                 this data plane, {}?)",
                env!("CARGO_PKG_VERSION")
            ),
        )]
    })?;
    // A snapshot whose content does not hash to what was sent is not what the control plane
    // validated (corruption, or a field this build does not know and dropped while decoding).
    let digests = Digests::of(&snapshot);
    let computed = digests.root(&snapshot.source_format_version);
    if computed != update.hash || computed != snapshot.hash {
        return Err(vec![ConfigIssue::new(
            "hash",
            format!(
                "content hash mismatch: the update says {}, the snapshot says {}, its content \
                 hashes to {computed}; refusing a snapshot that is not what the control plane \
                 validated",
                update.hash, snapshot.hash
            ),
        )]);
    }
    Ok((snapshot, digests))
}

/// Applies a delta to the snapshot being served; any failure asks for the whole snapshot.
fn delta(
    update: &Update,
    current: Option<&Runtime>,
    served: &ServedDigests,
) -> Result<(Snapshot, Digests), ConfigIssue> {
    let Some(cur) =
        current.filter(|c| c.version == update.base_version && c.snapshot.hash == update.base_hash)
    else {
        return Err(ConfigIssue::new(
            "base_version",
            format!(
                "a delta against version {} ({}), but this data plane serves {}",
                update.base_version,
                update.base_hash,
                current.map_or("nothing".to_owned(), |c| format!(
                    "version {} ({})",
                    c.version, c.snapshot.hash
                ))
            ),
        ));
    };
    let delta: Delta = serde_json::from_slice(&update.delta_json)
        .map_err(|e| ConfigIssue::new("delta_json", format!("cannot decode the delta: {e}")))?;
    let base = served.get(&cur.snapshot);
    let (snapshot, digests) = delta.apply(&cur.snapshot, &base)?;
    if snapshot.hash != update.hash {
        return Err(ConfigIssue::new(
            "hash",
            format!(
                "the delta applied to version {} hashes to {}, not {} as announced",
                update.base_version, snapshot.hash, update.hash
            ),
        ));
    }
    Ok((snapshot, digests))
}
