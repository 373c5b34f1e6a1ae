//! The embedded on-disk store: per group, every applied version (source text, snapshot,
//! hash, when and why) and a pointer to the live one; plus one global version counter.
//!
//! Layout under the data directory:
//!
//! ```text
//! lock                                    held (flock) by the one control plane using the dir
//! counter                                 the last version number handed out (any group)
//! groups/<group>/versions/<version>.json.lz4
//!                                         one VersionRecord per applied version (20-digit
//!                                         name): its JSON in an LZ4 frame (`lz4 -dc` reads it)
//! groups/<group>/current                  the live version number of the group
//! ```
//!
//! Every file is replaced atomically (temp file, fsync, rename, fsync directory), and a commit
//! writes in an order that makes a crash at any point harmless: the counter first (so a number
//! is never handed out twice, even if the commit then dies), then the version record, then the
//! `current` pointer, which is the commit point. On open, temp files and version records newer
//! than `current` (written, never committed) are removed.
//!
//! Records are compressed because a 10,000-route record is 5 MB of JSON (the snapshot with
//! every default spelled out, and the config text): LZ4 makes it 0.7 MB in about 4 ms, and
//! writing and fsyncing a new 5 MB file took 7-14 ms of every apply. Records an earlier build
//! wrote as plain `<version>.json` are still read, and pruned like the others.

mod fsio;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use fsio::{read_number, write_atomic};

/// One applied version of a group's config, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub group: String,
    pub version: u64,
    /// The snapshot's content hash.
    pub hash: String,
    /// RFC 3339.
    pub applied_at: String,
    /// `"apply"` or `"rollback to N"`.
    pub origin: String,
    /// The snapshot's one-line summary.
    pub summary: String,
    /// The config as the user wrote it.
    pub config_text: String,
    /// The validated snapshot (kept as JSON so an old record still opens after the snapshot
    /// type grows a field).
    pub snapshot: SnapshotJson,
}

/// A validated snapshot as JSON text: stored, served and streamed verbatim, never re-encoded
/// (a 10,000-route snapshot is megabytes; re-encoding it per use cost more than validating it).
/// The text stays in the buffer serde_json wrote it to (`Arc<Box<_>>`: `Arc<RawValue>` would
/// copy the megabytes once more).
#[derive(Clone)]
pub struct SnapshotJson(Arc<Box<RawValue>>);

impl SnapshotJson {
    /// Wraps JSON text; fails when it is not one JSON value.
    pub fn from_json(json: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(json).map(|raw| SnapshotJson(Arc::new(raw)))
    }

    /// Encodes `value`; no second pass to check the text, since serde_json wrote it.
    pub fn encode<T: Serialize>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(|raw| SnapshotJson(Arc::new(raw)))
    }

    /// The JSON text as `Bytes` sharing this buffer (no copy), for the wire.
    pub fn bytes(&self) -> bytes::Bytes {
        bytes::Bytes::from_owner(self.clone())
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The snapshot as a generic JSON value (for redacting and listing).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.get()).unwrap_or(serde_json::Value::Null)
    }
}

impl AsRef<[u8]> for SnapshotJson {
    fn as_ref(&self) -> &[u8] {
        self.get().as_bytes()
    }
}

impl PartialEq for SnapshotJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl std::fmt::Debug for SnapshotJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SnapshotJson({} bytes)", self.get().len())
    }
}

impl Serialize for SnapshotJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for SnapshotJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(|raw| SnapshotJson(Arc::new(raw)))
    }
}

/// A history line: a version without its (possibly large) text and snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionMeta {
    pub version: u64,
    pub hash: String,
    pub applied_at: String,
    pub origin: String,
    pub summary: String,
}

impl VersionRecord {
    fn meta(&self) -> VersionMeta {
        VersionMeta {
            version: self.version,
            hash: self.hash.clone(),
            applied_at: self.applied_at.clone(),
            origin: self.origin.clone(),
            summary: self.summary.clone(),
        }
    }
}

/// What to store as a new version (the store assigns the number and the time).
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub hash: String,
    pub origin: String,
    pub summary: String,
    pub config_text: String,
    pub snapshot: SnapshotJson,
}

/// The result of a commit.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The live record after the commit (the existing one when `unchanged`).
    pub record: Arc<VersionRecord>,
    /// The content equals the live version's; no version was made.
    pub unchanged: bool,
}

/// Store failures; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt store file: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("invalid group name '{0}': use 1-63 characters a-z, 0-9, '_' and '-', starting with a letter or digit")]
    InvalidGroup(String),
    #[error("{0}: another control plane is using this data directory; stop it, or give this one its own --data-dir")]
    Locked(PathBuf),
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Whether `name` is a valid group name: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn valid_group(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

#[derive(Debug)]
struct GroupData {
    current: Arc<VersionRecord>,
    /// Oldest first.
    history: Vec<VersionMeta>,
}

/// The store. Methods do blocking file I/O: call them off the async workers.
#[derive(Debug)]
pub struct Store {
    /// Held (exclusive advisory lock on `<root>/lock`) for the store's lifetime: two control
    /// planes committing into one directory would hand out the same version numbers.
    _lock: std::fs::File,
    root: PathBuf,
    /// Versions kept per group; `None` keeps all.
    history_limit: Option<NonZeroUsize>,
    counter: u64,
    groups: BTreeMap<String, GroupData>,
}

impl Store {
    /// Opens (creating if needed) the store under `root`, dropping what a crash left behind.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let groups_dir = root.join("groups");
        std::fs::create_dir_all(&groups_dir).map_err(|e| StoreError::io(&groups_dir, e))?;
        let lock_path = root.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(lock_path)),
            Err(std::fs::TryLockError::Error(e)) => return Err(StoreError::io(&lock_path, e)),
        }
        fsio::remove_temp_files(root)?;
        let mut counter = read_number(&root.join("counter"))?.unwrap_or(0);
        let mut groups = BTreeMap::new();
        let entries = std::fs::read_dir(&groups_dir).map_err(|e| StoreError::io(&groups_dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&groups_dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !valid_group(&name) || !entry.path().is_dir() {
                continue;
            }
            let (data, max_seen) = load_group(&entry.path(), &name)?;
            // Defensive: the counter is written before any record, so this only matters if
            // someone copied records in by hand; never hand out a number a file already has.
            counter = counter.max(max_seen);
            if let Some(data) = data {
                groups.insert(name, data);
            }
        }
        Ok(Store {
            _lock: lock,
            root: root.to_owned(),
            history_limit: None,
            counter,
            groups,
        })
    }

    /// Keeps at most `limit` versions per group (the live one included) from the next commit
    /// on; `None` keeps every version.
    pub fn with_history_limit(mut self, limit: Option<NonZeroUsize>) -> Store {
        self.history_limit = limit;
        self
    }

    /// The live record of `group`.
    pub fn current(&self, group: &str) -> Option<Arc<VersionRecord>> {
        self.groups.get(group).map(|g| g.current.clone())
    }

    /// The live record of every group that has one, by group name.
    pub fn groups(&self) -> Vec<Arc<VersionRecord>> {
        self.groups.values().map(|g| g.current.clone()).collect()
    }

    /// The versions of `group`, newest first; `None` when the group has none.
    pub fn history(&self, group: &str) -> Option<Vec<VersionMeta>> {
        self.groups
            .get(group)
            .map(|g| g.history.iter().rev().cloned().collect())
    }

    /// One committed version of `group`, read from disk.
    pub fn get(&self, group: &str, version: u64) -> Result<Option<VersionRecord>, StoreError> {
        let Some(data) = self.groups.get(group) else {
            return Ok(None);
        };
        if data.current.version == version {
            return Ok(Some((*data.current).clone()));
        }
        if !data.history.iter().any(|m| m.version == version) {
            return Ok(None);
        }
        read_record(&self.group_dir(group), version).map(Some)
    }

    /// Stores `new` as the next version of `group`, unless its hash equals the live one.
    pub fn commit(&mut self, group: &str, new: NewVersion) -> Result<Commit, StoreError> {
        if let Some(unchanged) = self.unchanged(group, &new)? {
            return Ok(unchanged);
        }
        let version = self.reserve_version()?;
        self.commit_reserved(group, version, new)
    }

    /// [`Store::commit`] under a number taken beforehand with [`Store::reserve_version`] (so
    /// the counter's write can overlap the caller's encoding). When `new` turns out to equal
    /// the live version, nothing is stored and the number stays unused, as after a crash.
    pub fn commit_reserved(
        &mut self,
        group: &str,
        version: u64,
        new: NewVersion,
    ) -> Result<Commit, StoreError> {
        if let Some(unchanged) = self.unchanged(group, &new)? {
            return Ok(unchanged);
        }
        // Only a number this store handed out and no version has used yet.
        let newest = self.groups.values().map(|g| g.current.version).max();
        if version > self.counter || newest.is_some_and(|n| version <= n) {
            return Err(StoreError::Corrupt {
                path: self.root.join("counter"),
                message: format!(
                    "version {version} was not reserved (counter {})",
                    self.counter
                ),
            });
        }
        let record = VersionRecord {
            group: group.to_owned(),
            version,
            hash: new.hash,
            applied_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            origin: new.origin,
            summary: new.summary,
            config_text: new.config_text,
            snapshot: new.snapshot,
        };
        self.write_version(&record)?;
        self.write_current(group, version)?;
        let record = Arc::new(record);
        let meta = record.meta();
        match self.groups.get_mut(group) {
            Some(data) => {
                data.current = record.clone();
                data.history.push(meta);
            }
            None => {
                self.groups.insert(
                    group.to_owned(),
                    GroupData {
                        current: record.clone(),
                        history: vec![meta],
                    },
                );
            }
        }
        self.prune(group);
        Ok(Commit {
            record,
            unchanged: false,
        })
    }

    /// Step 4, after the commit point: deletes the versions beyond the history limit, oldest
    /// first. A failure only leaves a file behind (logged); the commit stands either way.
    fn prune(&mut self, group: &str) {
        let (Some(limit), Some(data)) = (self.history_limit, self.groups.get_mut(group)) else {
            return;
        };
        let excess = data.history.len().saturating_sub(limit.get());
        let current = data.current.version;
        let mut dropped = 0;
        for meta in data.history.iter().take(excess) {
            if meta.version == current {
                break;
            }
            let dir = self.root.join("groups").join(group);
            if let Err((path, e)) = remove_record(&dir, meta.version) {
                tracing::warn!(group, config_version = meta.version, path = %path.display(), error = %e, "cannot delete an old version beyond the history limit");
                break;
            }
            dropped += 1;
        }
        data.history.drain(..dropped);
    }

    /// The live record when `new` has its content (no version is made), after checking the
    /// group name.
    fn unchanged(&self, group: &str, new: &NewVersion) -> Result<Option<Commit>, StoreError> {
        if !valid_group(group) {
            return Err(StoreError::InvalidGroup(group.to_owned()));
        }
        Ok(self
            .groups
            .get(group)
            .filter(|data| data.current.hash == new.hash)
            .map(|data| Commit {
                record: data.current.clone(),
                unchanged: true,
            }))
    }

    /// Step 1 of a commit: persist the next number before anything uses it. Public so a caller
    /// can take the number (one fsync) while it still encodes the version, then pass it to
    /// [`Store::commit_reserved`]; a number reserved and never committed is skipped for good.
    pub fn reserve_version(&mut self) -> Result<u64, StoreError> {
        let next = self.counter + 1;
        write_atomic(&self.root.join("counter"), format!("{next}\n").as_bytes())?;
        self.counter = next;
        Ok(next)
    }

    /// Step 2: the version record (invisible until `current` points at or past it).
    fn write_version(&self, record: &VersionRecord) -> Result<(), StoreError> {
        let dir = self.group_dir(&record.group).join("versions");
        fsio::create_dir_durable(&dir)?;
        let path = self.version_path(&record.group, record.version);
        // JSON streamed into the compressor: no buffer of the whole JSON. Sized up front for
        // about a sixth of it, what these records compress to.
        let json_size = record.snapshot.get().len() + record.config_text.len() * 9 / 8;
        let corrupt = |message: String| StoreError::Corrupt {
            path: path.clone(),
            message,
        };
        let mut lz4 = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(json_size / 6 + 4096));
        serde_json::to_writer(&mut lz4, record).map_err(|e| corrupt(e.to_string()))?;
        let bytes = lz4.finish().map_err(|e| corrupt(e.to_string()))?;
        write_atomic(&path, &bytes)
    }

    /// Step 3, the commit point: the group's `current` pointer.
    fn write_current(&self, group: &str, version: u64) -> Result<(), StoreError> {
        write_atomic(
            &self.group_dir(group).join("current"),
            format!("{version}\n").as_bytes(),
        )
    }

    fn group_dir(&self, group: &str) -> PathBuf {
        self.root.join("groups").join(group)
    }

    fn version_path(&self, group: &str, version: u64) -> PathBuf {
        version_path(&self.group_dir(group), version)
    }
}

/// Where version `version` of a group is written.
fn version_path(group_dir: &Path, version: u64) -> PathBuf {
    group_dir
        .join("versions")
        .join(format!("{version:020}{RECORD_SUFFIX}"))
}

/// New records: JSON in an LZ4 frame.
const RECORD_SUFFIX: &str = ".json.lz4";
/// Records of earlier builds: plain JSON.
const LEGACY_SUFFIX: &str = ".json";

fn legacy_path(group_dir: &Path, version: u64) -> PathBuf {
    group_dir
        .join("versions")
        .join(format!("{version:020}{LEGACY_SUFFIX}"))
}

/// The version number a record file is named for, in either form.
fn record_number(file: &str) -> Option<u64> {
    file.strip_suffix(RECORD_SUFFIX)
        .or_else(|| file.strip_suffix(LEGACY_SUFFIX))
        .and_then(|s| s.parse().ok())
}

/// Reads version `version` of the group in `group_dir`, compressed or (written by an earlier
/// build) plain.
fn read_record(group_dir: &Path, version: u64) -> Result<VersionRecord, StoreError> {
    let path = version_path(group_dir, version);
    let corrupt = |path: &Path, message: String| StoreError::Corrupt {
        path: path.to_owned(),
        message,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let mut json = Vec::with_capacity(bytes.len() * 8);
            std::io::copy(
                &mut lz4_flex::frame::FrameDecoder::new(&bytes[..]),
                &mut json,
            )
            .map_err(|e| corrupt(&path, format!("not an LZ4 frame: {e}")))?;
            serde_json::from_slice(&json).map_err(|e| corrupt(&path, e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let legacy = legacy_path(group_dir, version);
            let bytes = std::fs::read(&legacy).map_err(|e| StoreError::io(&legacy, e))?;
            serde_json::from_slice(&bytes).map_err(|e| corrupt(&legacy, e.to_string()))
        }
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

/// Deletes version `version`'s record, in whichever form it is; a missing one is no error.
fn remove_record(group_dir: &Path, version: u64) -> Result<(), (PathBuf, std::io::Error)> {
    for path in [
        version_path(group_dir, version),
        legacy_path(group_dir, version),
    ] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err((path, e)),
        }
    }
    Ok(())
}

/// Loads one group directory: its committed versions, removing uncommitted ones. Returns the
/// group (if it has a committed version) and the highest version number seen on disk.
fn load_group(dir: &Path, name: &str) -> Result<(Option<GroupData>, u64), StoreError> {
    let current = read_number(&dir.join("current"))?;
    let versions_dir = dir.join("versions");
    let mut numbers = Vec::new();
    if versions_dir.is_dir() {
        let entries =
            std::fs::read_dir(&versions_dir).map_err(|e| StoreError::io(&versions_dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&versions_dir, e))?;
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(n) = record_number(&file) {
                numbers.push(n);
            }
        }
    }
    numbers.sort_unstable();
    numbers.dedup();
    let max_seen = numbers.last().copied().unwrap_or(0);
    let committed = current.unwrap_or(0);
    for &n in numbers.iter().filter(|&&n| n > committed) {
        // Written by a commit that died before its `current` update: never live, drop it.
        tracing::warn!(
            group = name,
            config_version = n,
            "removing an uncommitted version left by an interrupted apply"
        );
        remove_record(dir, n).map_err(|(path, e)| StoreError::io(&path, e))?;
    }
    let Some(current) = current else {
        return Ok((None, max_seen));
    };
    let mut history = Vec::new();
    let mut live = None;
    for &n in numbers.iter().filter(|&&n| n <= current) {
        let record = read_record(dir, n)?;
        if record.version != n || record.group != name {
            return Err(StoreError::Corrupt {
                path: version_path(dir, n),
                message: format!(
                    "holds version {} of group '{}'",
                    record.version, record.group
                ),
            });
        }
        history.push(record.meta());
        if n == current {
            live = Some(Arc::new(record));
        }
    }
    let Some(current) = live else {
        return Err(StoreError::Corrupt {
            path: dir.join("current"),
            message: format!("points at version {current}, which has no record"),
        });
    };
    Ok((Some(GroupData { current, history }), max_seen))
}
