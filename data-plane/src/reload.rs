//! DB-less config from a file: load + compile off the request path, swap on success, keep the
//! old runtime (and log every error) on failure. Reloads on file change (watched through its
//! directory, so editors that replace the file and Kubernetes ConfigMap symlink swaps are seen)
//! and on SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::runtime::Runtime;
use crate::state::Shared;

/// Events closer together than this are one change (editors write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Loads and compiles the config at `path`. Errors are one line each, naming entity and field.
pub fn load(path: &Path, shared: &Shared) -> Result<Runtime, Vec<String>> {
    let loaded = portico_common::load_file(path)
        .map_err(|e| e.errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    for w in &loaded.warnings {
        tracing::warn!(path = %w.path, warning = %w.message, "config warning");
    }
    // Reuse what the running config already compiled (regexes, unchanged routes, balancers).
    let compiled = match shared.runtime.load_full() {
        Some(current) => Runtime::compile_for(loaded.snapshot, shared, Some(&current)),
        None => Runtime::compile_for(loaded.snapshot, shared, None),
    };
    compiled.map_err(|issues| issues.iter().map(ToString::to_string).collect())
}

/// Loads `path` and swaps it in, or records why not. Returns whether it was applied.
pub fn reload(path: &Path, shared: &Shared) -> bool {
    let started = std::time::Instant::now();
    match load(path, shared) {
        Ok(rt) => {
            let unchanged = shared
                .runtime
                .load()
                .as_ref()
                .is_some_and(|cur| cur.snapshot.hash == rt.snapshot.hash);
            shared.swap(rt);
            tracing::info!(file = %path.display(), unchanged, took_ms = started.elapsed().as_millis() as u64, "config reloaded");
            true
        }
        Err(errors) => {
            for e in &errors {
                tracing::error!(file = %path.display(), error = %e, "config rejected; still serving the previous config");
            }
            shared.record_failure(errors);
            false
        }
    }
}

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// A file-system event in the config's directory.
    Changed,
    /// SIGHUP: reload even if the content looks unchanged.
    Signal,
}

/// Reloads `path` on SIGHUP, and on change when `watch` is set, until `shutdown`.
///
/// The SIGHUP handler and the watcher are installed before this returns (the returned future
/// only waits for triggers), so a SIGHUP sent as soon as the listeners answer reloads instead
/// of killing the process, SIGHUP's default action.
pub fn watch_file(
    path: PathBuf,
    shared: Arc<Shared>,
    watch: bool,
    shutdown: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (tx, rx) = mpsc::unbounded_channel::<Trigger>();
    let watcher = if watch {
        watch_dir(&path, tx.clone())
    } else {
        None
    };
    spawn_sighup(tx);
    let last = std::fs::read(&path).ok().map(|b| content_digest(&b));
    reload_on_triggers(path, shared, rx, last, watcher, shutdown)
}

async fn reload_on_triggers(
    path: PathBuf,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Trigger>,
    mut last: Option<(u64, usize)>,
    _watcher: Option<notify::RecommendedWatcher>,
    shutdown: watch::Receiver<bool>,
) {
    let stop = crate::server::shutdown_signal(shutdown);
    tokio::pin!(stop);
    loop {
        let mut trigger = tokio::select! {
            _ = &mut stop => return,
            ev = rx.recv() => match ev { Some(t) => t, None => return },
        };
        // Coalesce a burst of events into one reload.
        loop {
            tokio::select! {
                _ = tokio::time::sleep(DEBOUNCE) => break,
                ev = rx.recv() => match ev {
                    Some(Trigger::Signal) => trigger = Trigger::Signal,
                    Some(Trigger::Changed) => {}
                    None => return,
                },
            }
        }
        // A writer that truncates then writes (most tools do) can be caught half-way: only load
        // content that reads the same twice, DEBOUNCE apart.
        let mut current = std::fs::read(&path).ok().map(|b| content_digest(&b));
        for _ in 0..20 {
            tokio::time::sleep(DEBOUNCE).await;
            let again = std::fs::read(&path).ok().map(|b| content_digest(&b));
            if again == current {
                break;
            }
            current = again;
        }
        if trigger == Trigger::Changed && current.is_some() && current == last {
            continue;
        }
        last = current;
        let p = path.clone();
        let s = Arc::clone(&shared);
        // Parsing and compiling 10k routes is CPU work: keep it off the proxy's worker threads.
        let _ = tokio::task::spawn_blocking(move || reload(&p, &s)).await;
    }
}

/// Watches the directory of `path` (editors replace files; Kubernetes swaps ConfigMap symlinks).
fn watch_dir(
    path: &Path,
    tx: mpsc::UnboundedSender<Trigger>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = tx.send(Trigger::Changed);
        }
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the config directory; reload with SIGHUP");
            None
        }
    }
}

#[cfg(unix)]
fn spawn_sighup(tx: mpsc::UnboundedSender<Trigger>) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading config");
                    if tx.send(Trigger::Signal).is_err() {
                        return;
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot install the SIGHUP handler"),
    }
}

#[cfg(not(unix))]
fn spawn_sighup(_tx: mpsc::UnboundedSender<Trigger>) {}

/// A cheap fingerprint to notice "the file did not really change" (editors touch files, and a
/// watched directory reports events for its other files too).
fn content_digest(bytes: &[u8]) -> (u64, usize) {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    (h.finish(), bytes.len())
}
