//! One update from the control plane: decode, verify the content hash, compile, swap, cache.
//! Runs on the blocking pool (a 10,000-route snapshot is milliseconds of CPU), and never leaves
//! the data plane without a runtime: anything refused keeps the previous one serving.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use portico_common::snapshot::Snapshot;
use portico_common::ConfigIssue;
use portico_proto::v1::Update;

use crate::runtime::Runtime;
use crate::state::Shared;

/// What became of an update.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Swapped in (and cached when possible).
    Applied { micros: u64 },
    /// Already serving this version and content: nothing to do, but still acknowledged so the
    /// control plane does not wait for an answer.
    Unchanged,
    /// Refused; the previous runtime keeps serving.
    Refused {
        errors: Vec<ConfigIssue>,
        micros: u64,
    },
}

/// Who this data plane is, for checks and the cache.
#[derive(Debug)]
pub(crate) struct Context<'a> {
    pub group: &'a str,
    pub node_id: &'a str,
    pub cache_dir: &'a Path,
}

/// Applies `update` to `shared`. Blocking: call from `spawn_blocking`.
pub(crate) fn apply(update: &Update, shared: &Shared, ctx: &Context<'_>) -> Outcome {
    let started = Instant::now();
    let micros = || u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    if let Some(cur) = shared.runtime.load().as_ref() {
        if cur.version == update.version && cur.snapshot.hash == update.hash {
            return Outcome::Unchanged;
        }
    }
    let runtime = match verify(update, ctx.group)
        .and_then(|snapshot| Runtime::compile(snapshot, &shared.pools))
    {
        Ok(rt) => rt,
        Err(errors) => {
            return Outcome::Refused {
                errors,
                micros: micros(),
            }
        }
    };
    let mut runtime = runtime;
    runtime.version = update.version;
    let snapshot = Arc::clone(&runtime.snapshot);
    shared.swap(runtime);
    let micros = micros();
    // The cache is written after the swap: traffic follows the new config at once, and a cache
    // that cannot be written costs only the cold-start fallback, so it is a warning, not a NACK.
    if let Err(e) = crate::cache::store(ctx.cache_dir, ctx.group, update.version, &snapshot) {
        tracing::warn!(
            group = ctx.group,
            node_id = ctx.node_id,
            config_version = update.version,
            config_hash = %snapshot.hash,
            error = %e,
            "cannot cache the applied config"
        );
    }
    Outcome::Applied { micros }
}

/// Decodes the snapshot and checks it is the content the control plane hashed, for this group.
fn verify(update: &Update, group: &str) -> Result<Snapshot, Vec<ConfigIssue>> {
    if !update.group.is_empty() && update.group != group {
        return Err(vec![ConfigIssue::new(
            "group",
            format!(
                "the update is for group '{}', this data plane serves group '{group}'",
                update.group
            ),
        )]);
    }
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
    let computed = snapshot.compute_hash();
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
    Ok(snapshot)
}
