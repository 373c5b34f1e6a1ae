//! Durable file primitives: atomic replace (temp file, fsync, rename, fsync directory), a
//! durable `mkdir -p`, and cleanup of temp files a crash left behind.

use std::io::Write;
use std::path::Path;

use super::StoreError;

/// Temp files end with this; `open` deletes any it finds.
const TEMP_SUFFIX: &str = ".tmp";

/// Replaces `path` with `bytes` so a reader (or a restart after a crash) sees either the old
/// content or the new, never a mix.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .ok_or_else(|| StoreError::io(path, std::io::Error::other("no parent directory")))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}{TEMP_SUFFIX}"));
    let mut file = std::fs::File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| StoreError::io(&tmp, e))?;
    file.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))?;
    sync_dir(dir)
}

/// `mkdir -p` whose new entries survive a power loss (each parent is fsynced).
pub(super) fn create_dir_durable(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_durable(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(StoreError::io(dir, e)),
    }
    match dir.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Makes a rename or create inside `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let handle = std::fs::File::open(dir).map_err(|e| StoreError::io(dir, e))?;
    handle.sync_all().map_err(|e| StoreError::io(dir, e))
}

/// Reads a file holding one decimal number; `None` when it does not exist.
pub(super) fn read_number(path: &Path) -> Result<Option<u64>, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: path.to_owned(),
                message: format!("expected a number: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// Deletes every `*.tmp` file under `root` (half-written files of an interrupted write).
pub(super) fn remove_temp_files(root: &Path) -> Result<(), StoreError> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(root, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(root, e))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(|e| StoreError::io(&path, e))?;
        if file_type.is_dir() {
            remove_temp_files(&path)?;
        } else if entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
            std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
        }
    }
    Ok(())
}
