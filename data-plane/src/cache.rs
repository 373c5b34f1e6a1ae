//! The on-disk cache of the last snapshot a control plane had this data plane serve, so a data
//! plane that restarts while its control plane is down boots straight into its last good config
//! (Kong keeps the same in `config.cache.json.gz`).
//!
//! One file per node group, `snapshot-<group>.json`, holding the group, the control plane's
//! version, the content hash and the snapshot itself. Writes are atomic (temp file in the same
//! directory, fsync, rename, fsync of the directory), so a crash mid-write leaves the previous
//! cache, never a torn one. The file is created owner-only (0600 on Unix): snapshots carry
//! credentials.

use std::io::Write;
use std::path::{Path, PathBuf};

use portico_common::snapshot::Snapshot;
use serde::{Deserialize, Serialize};

/// Layout version of the cache file; a different one is ignored rather than misread.
pub const FORMAT: u32 = 1;

/// A snapshot read back from the cache.
#[derive(Debug, Clone, Deserialize)]
pub struct CachedSnapshot {
    pub format: u32,
    pub group: String,
    pub version: u64,
    pub hash: String,
    pub snapshot: Snapshot,
}

/// What is written; borrows, so storing a live runtime's snapshot copies nothing.
#[derive(Serialize)]
struct CacheFile<'a> {
    format: u32,
    group: &'a str,
    version: u64,
    hash: &'a str,
    snapshot: &'a Snapshot,
}

/// Why the cache could not be read or written. Each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot read the config cache {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the config cache {path} is not a readable Portico snapshot cache ({source}); it will be replaced by the next config from the control plane")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the config cache {path} has layout {found}, this build reads layout {FORMAT}; it will be replaced by the next config from the control plane")]
    Format { path: PathBuf, found: u32 },
    #[error("the config cache {path} is for group '{found}', not '{expected}'")]
    Group {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("the config cache {path} is corrupt: its content hashes to {computed}, the file says {stored}")]
    Hash {
        path: PathBuf,
        stored: String,
        computed: String,
    },
    #[error("cannot write the config cache in {dir}: {source}; the data plane keeps serving but cannot boot from this config if the control plane is down at its next start")]
    Write {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// The cache file of `group` under `dir`.
pub fn path(dir: &Path, group: &str) -> PathBuf {
    dir.join(format!("snapshot-{}.json", file_safe(group)))
}

/// Reads the cached snapshot of `group`, `Ok(None)` when there is none. The content hash is
/// checked, so a damaged file is refused rather than served.
pub fn load(dir: &Path, group: &str) -> Result<Option<CachedSnapshot>, CacheError> {
    let path = path(dir, group);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CacheError::Read { path, source }),
    };
    // Check the layout before the whole document, so an old layout says so instead of failing
    // on whichever field changed.
    #[derive(Deserialize)]
    struct Probe {
        format: u32,
    }
    let probe: Probe = serde_json::from_slice(&bytes).map_err(|source| CacheError::Parse {
        path: path.clone(),
        source,
    })?;
    if probe.format != FORMAT {
        return Err(CacheError::Format {
            path,
            found: probe.format,
        });
    }
    let cached: CachedSnapshot =
        serde_json::from_slice(&bytes).map_err(|source| CacheError::Parse {
            path: path.clone(),
            source,
        })?;
    if cached.group != group {
        return Err(CacheError::Group {
            path,
            found: cached.group,
            expected: group.to_owned(),
        });
    }
    let computed = cached.snapshot.compute_hash();
    if computed != cached.hash || computed != cached.snapshot.hash {
        return Err(CacheError::Hash {
            path,
            stored: cached.hash,
            computed,
        });
    }
    Ok(Some(cached))
}

/// Atomically replaces the cached snapshot of `group` with `snapshot` at `version`.
pub fn store(dir: &Path, group: &str, version: u64, snapshot: &Snapshot) -> Result<(), CacheError> {
    let write = |source| CacheError::Write {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(write)?;
    let file = CacheFile {
        format: FORMAT,
        group,
        version,
        hash: &snapshot.hash,
        snapshot,
    };
    let bytes = serde_json::to_vec(&file).map_err(|e| write(std::io::Error::other(e)))?;
    // The temp file lives in the target directory so the rename cannot cross file systems.
    let mut tmp = tempfile::Builder::new()
        .prefix(".snapshot-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(write)?;
    tmp.write_all(&bytes).map_err(write)?;
    tmp.as_file().sync_all().map_err(write)?;
    tmp.persist(path(dir, group)).map_err(|e| write(e.error))?;
    sync_dir(dir);
    Ok(())
}

/// Makes the rename itself durable. Best effort: not every platform can open a directory.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// A group name as a file name: kept as is when it is plainly safe, hex-encoded otherwise (a
/// group is any string the control plane accepts, including `/` or `..`).
fn file_safe(group: &str) -> String {
    let plain = !group.is_empty()
        && !group.starts_with('.')
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if plain {
        group.to_owned()
    } else {
        let hex: String = group.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x-{hex}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let yaml = "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:1\n    routes:\n      - paths: [\"/\"]\n";
        portico_common::load_str(yaml, &|_| None).unwrap().snapshot
    }

    #[test]
    fn round_trips_and_checks_group_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), "edge").unwrap().is_none());
        let snap = snapshot();
        store(dir.path(), "edge", 7, &snap).unwrap();
        let got = load(dir.path(), "edge").unwrap().unwrap();
        assert_eq!((got.version, got.hash.as_str()), (7, snap.hash.as_str()));
        assert_eq!(got.snapshot, snap);
        // Another group has its own file.
        assert!(load(dir.path(), "web").unwrap().is_none());

        // A tampered file is refused, not served.
        let p = path(dir.path(), "edge");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("127.0.0.1", "127.0.0.2")).unwrap();
        assert!(matches!(
            load(dir.path(), "edge"),
            Err(CacheError::Hash { .. })
        ));
        std::fs::write(&p, "{\"format\": 99}").unwrap();
        assert!(matches!(
            load(dir.path(), "edge"),
            Err(CacheError::Format { found: 99, .. })
        ));
        std::fs::write(&p, "not json").unwrap();
        assert!(matches!(
            load(dir.path(), "edge"),
            Err(CacheError::Parse { .. })
        ));
    }

    #[test]
    fn unsafe_group_names_stay_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        for g in ["../../etc/x", "a/b", ".hidden", ""] {
            let p = path(dir.path(), g);
            assert_eq!(p.parent(), Some(dir.path()), "{g}");
        }
        assert_eq!(
            path(dir.path(), "edge-1").file_name().unwrap(),
            "snapshot-edge-1.json"
        );
    }

    #[cfg(unix)]
    #[test]
    fn cache_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), "g", 1, &snapshot()).unwrap();
        let mode = std::fs::metadata(path(dir.path(), "g"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    }
}
