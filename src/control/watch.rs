//! Reload on a change of the config file.
//!
//! The watcher watches the file's *directory*, not the file: editors that save by writing
//! a new file and renaming it over the old one, and Kubernetes ConfigMap volumes (which
//! swap a `..data` symlink), replace the inode, and a watch on the old inode would go
//! silent. Any event in the directory starts a short debounce; after it the file is read,
//! and a reload is asked for only if its bytes differ from the last content the
//! supervisor loaded (or tried to load) — shared through [`LoadedHash`] — so a burst of
//! events from one save is one reload, and a SIGHUP reload is not repeated by the watcher.
//!
//! The watch is set up by [`ConfigWatch::start`] before the process reports ready, and
//! [`ConfigWatch::run`] compares once right away, so an edit made between the first load
//! and the watch is not missed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::content_hash;

/// Quiet time after the last event before the file is read: editors write, rename and
/// touch metadata in several steps within a few milliseconds.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// The content hash of the config the supervisor last loaded or tried to load.
pub type LoadedHash = Arc<AtomicU64>;

/// A directory watch, set up and ready to run.
pub struct ConfigWatch {
    path: PathBuf,
    events: mpsc::Receiver<()>,
    /// Kept alive for as long as the watch runs; dropping it stops the watch.
    _watcher: RecommendedWatcher,
}

impl ConfigWatch {
    /// Start watching the directory of `path`. An error means the watch cannot be set up
    /// (the caller logs it; SIGHUP and the admin API still reload).
    pub fn start(path: PathBuf) -> notify::Result<ConfigWatch> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let (tx, events) = mpsc::channel::<()>(1);
        // notify calls back on its own thread: forward a wake-up and never block there.
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if res.is_ok() {
                    let _ = tx.try_send(());
                }
            })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(ConfigWatch {
            path,
            events,
            _watcher: watcher,
        })
    }

    /// Until `shutdown`: send `()` on `reload` whenever the file's bytes differ from
    /// `loaded`.
    pub async fn run(
        mut self,
        loaded: LoadedHash,
        reload: mpsc::Sender<()>,
        shutdown: CancellationToken,
    ) {
        // An edit may have landed between the first load and the watch.
        if !self.check(&loaded, &reload).await {
            return;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = self.events.recv() => if ev.is_none() { return },
            }
            // Debounce: wait until the directory has been quiet for DEBOUNCE.
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    ev = tokio::time::timeout(DEBOUNCE, self.events.recv()) => match ev {
                        Ok(Some(())) => continue,
                        Ok(None) | Err(_) => break,
                    },
                }
            }
            if !self.check(&loaded, &reload).await {
                return;
            }
        }
    }

    /// Ask for a reload if the file changed; false when the supervisor is gone.
    async fn check(&self, loaded: &LoadedHash, reload: &mpsc::Sender<()>) -> bool {
        // Unreadable (mid-rename, deleted): wait for the next event.
        let Ok(bytes) = tokio::fs::read(&self.path).await else {
            return true;
        };
        if content_hash(&bytes) == loaded.load(Ordering::Relaxed) {
            return true;
        }
        tracing::info!(path = %self.path.display(), "config file changed: reloading");
        reload.send(()).await.is_ok()
    }
}
