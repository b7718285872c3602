//! Watching files: one mechanism (notify, on directories) for the config file and for the
//! certificate and key files of TLS listeners.
//!
//! Directories are watched, not files: editors that save by writing a new file and renaming
//! it over the old one, certificate renewal tools, and Kubernetes ConfigMap and Secret
//! volumes (which swap a `..data` symlink) replace the inode, and a watch on the old inode
//! would go silent. For each file, its own directory is watched and, when it is a symlink,
//! the directory of the file it points to (followed again after every change, since the
//! link may move). Any event in a watched directory starts a short debounce
//! ([`DEBOUNCE`]); after it the files are read and compared with what is loaded, so events
//! about unrelated files or about content already loaded change nothing. Where the
//! operating system's file events cannot be set up, notify's polling watcher takes over
//! (once a second, comparing contents).
//!
//! - **The config file** ([`ConfigWatch`]): a reload is asked for only when its bytes differ
//!   from the last content the supervisor loaded (or tried to load) — shared through
//!   [`LoadedHash`] — so a burst of events from one save is one reload, and a SIGHUP reload
//!   is not repeated by the watch. It compares once right away, so an edit made between the
//!   first load and the watch is not missed.
//! - **Certificates** ([`watch_certificates`]): when a listener's files changed and then
//!   stayed unchanged for [`STABLE_AFTER`] (so a certificate written just before its key is
//!   not tried half-way), they are loaded through `tls::certs` and installed in the
//!   listener's terminator; new handshakes use them, open connections keep theirs. A list
//!   that does not load is rejected with an error naming the file, the certificates in use
//!   keep serving, and the same content is not tried again until it changes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use notify::{PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::content_hash;
use crate::tls::certs;
use crate::tls::server::TlsTerminator;

/// Quiet time after the last event before the files are read: editors and renewal tools
/// write, rename and touch metadata in several steps within a few milliseconds.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// How long changed certificate files must stay unchanged before they are loaded.
pub const STABLE_AFTER: Duration = Duration::from_secs(1);

/// How often notify's polling watcher looks, where file events are not available.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The content hash of the config the supervisor last loaded or tried to load.
pub type LoadedHash = Arc<AtomicU64>;

/// Watches on the directories of some files, with the wake-ups they send.
pub struct DirWatch {
    events: mpsc::Receiver<()>,
    /// Kept alive for as long as the watch runs; dropping it stops the watch.
    watcher: Box<dyn Watcher + Send>,
    dirs: HashSet<PathBuf>,
}

impl DirWatch {
    /// Watch the directories of `files` (see the module docs). An error means no watch
    /// could be set up at all.
    pub fn start(files: &[PathBuf]) -> notify::Result<DirWatch> {
        let (tx, events) = mpsc::channel::<()>(1);
        // notify calls back on its own thread: forward a wake-up and never block there.
        let handler = move |res: notify::Result<notify::Event>| {
            if res.is_ok() {
                let _ = tx.try_send(());
            }
        };
        let dirs = directories(files);
        let watcher: Box<dyn Watcher + Send> = match recommended(handler.clone(), &dirs) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "file events are not available; watching files by polling once a second");
                let config = notify::Config::default()
                    .with_poll_interval(POLL_INTERVAL)
                    .with_compare_contents(true);
                let mut w = PollWatcher::new(handler, config)?;
                for d in &dirs {
                    w.watch(d, RecursiveMode::NonRecursive)?;
                }
                Box::new(w)
            }
        };
        Ok(DirWatch {
            events,
            watcher,
            dirs: dirs.into_iter().collect(),
        })
    }

    /// Watch the directories of `files` that are not watched yet: a symlink may point
    /// elsewhere after a change. A directory that cannot be watched is skipped (the others
    /// still are).
    pub fn follow(&mut self, files: &[PathBuf]) {
        for d in directories(files) {
            if !self.dirs.contains(&d)
                && self.watcher.watch(&d, RecursiveMode::NonRecursive).is_ok()
            {
                self.dirs.insert(d);
            }
        }
    }

    /// Wait for a change: an event, then [`DEBOUNCE`] without one. `false` when `stop` is
    /// cancelled or the watch ended.
    pub async fn changed(&mut self, stop: &CancellationToken) -> bool {
        tokio::select! {
            _ = stop.cancelled() => return false,
            ev = self.events.recv() => if ev.is_none() { return false },
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return false,
                ev = tokio::time::timeout(DEBOUNCE, self.events.recv()) => match ev {
                    Ok(Some(())) => continue,
                    Ok(None) => return false,
                    Err(_) => return true,
                },
            }
        }
    }
}

fn recommended<F: notify::EventHandler>(
    handler: F,
    dirs: &[PathBuf],
) -> notify::Result<Box<dyn Watcher + Send>> {
    let mut w = RecommendedWatcher::new(handler, notify::Config::default())?;
    for d in dirs {
        w.watch(d, RecursiveMode::NonRecursive)?;
    }
    Ok(Box::new(w))
}

/// The directories to watch for `files`: each one's own, and the one it resolves to.
fn directories(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for f in files {
        let resolved = std::fs::canonicalize(f).ok();
        for path in std::iter::once(f.as_path()).chain(resolved.as_deref()) {
            let dir = parent_dir(path);
            if !out.contains(&dir) {
                out.push(dir);
            }
        }
    }
    out
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

// ---- the config file ------------------------------------------------------------------------

/// A watch on the config file, set up and ready to run.
pub struct ConfigWatch {
    path: PathBuf,
    dirs: DirWatch,
}

impl ConfigWatch {
    /// Start watching the config file at `path`. An error means the watch cannot be set up
    /// (the caller logs it; SIGHUP and the admin API still reload).
    pub fn start(path: PathBuf) -> notify::Result<ConfigWatch> {
        let dirs = DirWatch::start(std::slice::from_ref(&path))?;
        Ok(ConfigWatch { path, dirs })
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
        if !check_config(&self.path, &loaded, &reload).await {
            return;
        }
        while self.dirs.changed(&shutdown).await {
            self.dirs.follow(std::slice::from_ref(&self.path));
            if !check_config(&self.path, &loaded, &reload).await {
                return;
            }
        }
    }
}

/// Ask for a reload if the file at `path` changed; false when the supervisor is gone.
async fn check_config(path: &Path, loaded: &LoadedHash, reload: &mpsc::Sender<()>) -> bool {
    // Unreadable (mid-rename, deleted): wait for the next event.
    let Ok(bytes) = tokio::fs::read(path).await else {
        return true;
    };
    if content_hash(&bytes) == loaded.load(Ordering::Relaxed) {
        return true;
    }
    tracing::info!(path = %path.display(), "config file changed: reloading");
    reload.send(()).await.is_ok()
}

// ---- certificates ----------------------------------------------------------------------------

/// Follow the certificate and key files `terminator` serves until `stop`, installing them
/// when they changed (see the module docs). Without a watch (none could be set up) the
/// problem is logged and the certificates change only with the config.
pub fn watch_certificates(
    terminator: Arc<TlsTerminator>,
    stop: CancellationToken,
    tracker: &TaskTracker,
) {
    let files: Vec<PathBuf> = terminator
        .loaded()
        .0
        .iter()
        .flat_map(|s| [s.cert.clone(), s.key.clone()])
        .collect();
    let mut dirs = match DirWatch::start(&files) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(listener = %terminator.listener(), error = %e, "cannot watch the certificate files; new certificates apply with a config change or a restart");
            return;
        }
    };
    tracker.spawn(async move {
        let mut state = CertState::default();
        loop {
            let recheck = state.recheck_at;
            tokio::select! {
                changed = dirs.changed(&stop) => if !changed { return },
                _ = sleep_until(recheck) => {}
            }
            let t = Arc::clone(&terminator);
            let s = std::mem::take(&mut state);
            // Blocking file reads: off the async workers.
            match tokio::task::spawn_blocking(move || certificate_round(&t, s)).await {
                Ok(s) => state = s,
                Err(e) => {
                    tracing::error!(listener = %terminator.listener(), error = %e, "certificate watch round failed")
                }
            }
            dirs.follow(&files);
        }
    });
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the certificate watch remembers between rounds.
#[derive(Debug, Default)]
struct CertState {
    /// Fingerprint of changed contents not loaded yet, and when they were first seen.
    pending: Option<(u64, Instant)>,
    /// When to look again without an event: when pending contents will have been stable
    /// for [`STABLE_AFTER`].
    recheck_at: Option<Instant>,
    /// Fingerprint of contents that failed to load (not retried until they change).
    failed: Option<u64>,
    /// The last read error logged.
    read_error: Option<String>,
}

/// One look at a listener's files (blocking reads).
fn certificate_round(t: &TlsTerminator, mut w: CertState) -> CertState {
    w.recheck_at = None;
    let (sources, in_use) = t.loaded();
    let files = match certs::read_files(sources) {
        Ok(f) => f,
        Err(e) => {
            // Often transient (a file being replaced); say it once per distinct error.
            let msg = e.to_string();
            if w.read_error.as_deref() != Some(msg.as_str()) {
                tracing::warn!(listener = %t.listener(), error = %msg, "cannot read a certificate file; the certificates in use keep serving");
                w.read_error = Some(msg);
            }
            w.pending = None;
            return w;
        }
    };
    w.read_error = None;
    let fingerprint = files.fingerprint();
    if fingerprint == in_use {
        w.pending = None;
        return w;
    }
    let now = Instant::now();
    let since = match w.pending {
        Some((f, since)) if f == fingerprint => since,
        _ => {
            // Changed since the last look: give the writer time to finish.
            w.pending = Some((fingerprint, now));
            w.recheck_at = Some(now + STABLE_AFTER);
            return w;
        }
    };
    if now < since + STABLE_AFTER {
        w.recheck_at = Some(since + STABLE_AFTER);
        return w;
    }
    if w.failed == Some(fingerprint) {
        return w; // this content was already tried and rejected
    }
    match files
        .load()
        .and_then(|c| t.install(&c, "TLS certificates reloaded from disk"))
    {
        Ok(()) => {
            w.pending = None;
            w.failed = None;
        }
        Err(e) => {
            tracing::error!(listener = %t.listener(), error = %e, "changed certificate files rejected; the certificates in use keep serving");
            w.failed = Some(fingerprint);
        }
    }
    w
}
