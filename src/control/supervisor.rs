//! The supervisor: starts everything, owns every background task, reloads, shuts down.
//!
//! Start-up, in named steps ([`Supervisor::start`]): the Redis registry task first (so the
//! first snapshot has the registered nodes), the first snapshot, the access log and the
//! request handler, then every socket is bound (a taken port fails start-up before anything
//! is served), the config file is watched and the signals are caught, and only then do the
//! listeners, the admin API and the health probes start and the process reports ready. All
//! tasks share one cancellation token and one task tracker; shutdown is: not ready → stop
//! accepting → let in-flight requests finish, bounded by `shutdown_timeout` → exit.
//!
//! Reloads (SIGHUP, the config-file watch, the admin API) all go through
//! [`Supervisor::reload`]: the new file is parsed and validated fully (its certificates and
//! CA files loaded), and the listeners' changes planned, before anything changes; if
//! anything is wrong the old config keeps serving. The snapshot changes in one place,
//! `Supervisor::swap_in` — build, store, bring the probes in line — for config reloads
//! and registry updates alike; this loop is the only caller, so builds never race.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balance::build::{build, Resolve};
use crate::balance::snapshot::SnapshotCell;
use crate::config::{self, Config, LoadedConfig};
use crate::control::admin::{self, AdminState};
use crate::control::files::{ConfigWatch, LoadedHash};
use crate::control::health::HealthSupervisor;
use crate::control::listeners::{self, Launch, Listeners};
use crate::control::registry::{self, RegistryHandle};
use crate::control::reload::{ReloadError, ReloadRequest};
use crate::metrics::{Metrics, ReloadResult};
use crate::proxy::accesslog::AccessLog;
use crate::proxy::handler::Proxy;

/// How long admin connections get to finish once everything else has stopped.
const ADMIN_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Admin reload requests queued while a reload runs.
const RELOAD_QUEUE: usize = 8;

/// Addresses actually bound (port 0 in the config becomes a real port).
#[derive(Debug, Clone, Default)]
pub struct Bound {
    pub listeners: Vec<(String, SocketAddr)>,
    pub admin: Option<SocketAddr>,
}

/// A running balancer.
pub struct Supervisor {
    config_path: Option<PathBuf>,
    /// The config in use: what the current snapshot was built from, and what registry
    /// updates rebuild it on.
    config: Arc<LoadedConfig>,
    snapshot: Arc<SnapshotCell>,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// The admin API outlives the listeners during a drain (so `/readyz` can answer 503
    /// and `/healthz` 200 while in-flight requests finish): its own token and tracker,
    /// stopped only after everything else has drained.
    admin_shutdown: CancellationToken,
    admin_tracker: TaskTracker,
    reload_rx: mpsc::Receiver<ReloadRequest>,
    /// Wake-ups from the config file watch.
    file_changed: mpsc::Receiver<()>,
    /// Content hash of the config last loaded or tried, shared with the file watch so it
    /// neither misses a change nor repeats a reload that already happened.
    loaded_hash: LoadedHash,
    signals: Signals,
    /// The listeners serving now, for reconciliation on reload.
    listeners: Listeners,
    /// The request handler, for listeners added by a reload.
    proxy: Arc<Proxy>,
    health: Arc<HealthSupervisor>,
    /// Live registration: the Redis registry task's updates and current entries.
    registry: RegistryHandle,
    pub bound: Bound,
}

impl Supervisor {
    /// Build the first snapshot, bind every socket and start serving.
    /// `config_path` is `None` for a config that did not come from a file (the demo):
    /// such a process cannot be reloaded.
    pub async fn start(
        loaded: LoadedConfig,
        config_path: Option<PathBuf>,
    ) -> anyhow::Result<Supervisor> {
        let metrics = Metrics::new();
        let config = Arc::new(loaded);
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let registry = start_registry(&config.config, &metrics, &shutdown, &tracker).await;
        let first = build(&config, registry.registry(), None, &metrics, Resolve::All).await;
        let snapshot = Arc::new(ArcSwap::from_pointee(first));
        let proxy = start_proxy(&config.config, &snapshot, &metrics, &shutdown, &tracker)?;

        // Bind everything before serving anything.
        let bound_listeners = listeners::bind_all(&config, &metrics).await?;
        let admin = bind_admin(&config.config).await?;
        let loaded_hash: LoadedHash = Arc::new(AtomicU64::new(config.source_hash));
        let file_changed =
            watch_config_file(config_path.as_deref(), &loaded_hash, &shutdown, &tracker);
        // Signal handlers exist before "ready": a signal sent the moment the process says
        // it is ready is handled (reload or drain), never the default action (death).
        let signals = Signals::install()?;

        let (reload_tx, reload_rx) = mpsc::channel(RELOAD_QUEUE);
        let mut sup = Supervisor {
            config_path,
            snapshot,
            metrics: metrics.clone(),
            ready: Arc::new(AtomicBool::new(false)),
            health: HealthSupervisor::new(metrics, shutdown.clone(), tracker.clone()),
            shutdown,
            tracker,
            admin_shutdown: CancellationToken::new(),
            admin_tracker: TaskTracker::new(),
            reload_rx,
            file_changed,
            loaded_hash,
            signals,
            listeners: Listeners::default(),
            proxy,
            registry,
            bound: Bound::default(),
            config,
        };
        let with = Launch {
            proxy: &sup.proxy,
            limits: &sup.config.config.limits,
            shutdown: &sup.shutdown,
            tracker: &sup.tracker,
        };
        sup.bound.listeners = sup.listeners.launch(bound_listeners, &with);
        if let Some(admin) = admin {
            sup.serve_admin(admin, reload_tx);
        }
        sup.start_health_checks();
        sup.ready.store(true, Ordering::Relaxed);
        tracing::info!(
            pools = sup.snapshot.load().pools.len(),
            routes = sup.config.config.routes.len(),
            "switchyard ready"
        );
        Ok(sup)
    }

    /// Serve the admin API on its bound socket until everything else has drained.
    fn serve_admin(
        &mut self,
        (tcp, addr): (TcpListener, SocketAddr),
        reload: mpsc::Sender<ReloadRequest>,
    ) {
        tracing::info!(addr = %addr, "admin listening");
        self.bound.admin = Some(addr);
        let token_env = self
            .config
            .config
            .admin
            .as_ref()
            .and_then(|a| a.token_env.clone());
        let token = token_env
            .as_deref()
            .and_then(|v| std::env::var(v).ok())
            .filter(|t| !t.is_empty());
        if token.is_none() {
            tracing::info!("admin API mutations are disabled: no token (set admin.token_env and that environment variable)");
        }
        let state = Arc::new(AdminState {
            snapshot: Arc::clone(&self.snapshot),
            metrics: self.metrics.clone(),
            ready: Arc::clone(&self.ready),
            token,
            token_env,
            reload,
        });
        self.admin_tracker.spawn(admin::serve(
            tcp,
            state,
            self.admin_shutdown.clone(),
            self.admin_tracker.clone(),
        ));
    }

    /// Probes for the first snapshot's nodes, and the sweep that logs ejections ending.
    fn start_health_checks(&self) {
        self.health.reconcile(&self.snapshot.load());
        self.tracker
            .spawn(Arc::clone(&self.health).sweep_ejections(Arc::clone(&self.snapshot)));
    }

    /// Serve until SIGTERM or SIGINT; reload on SIGHUP and admin requests. Returns after a
    /// graceful shutdown.
    pub async fn run(mut self) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = self.signals.term.recv() => { tracing::info!("SIGTERM: draining"); break; }
                _ = self.signals.int.recv() => { tracing::info!("SIGINT: draining"); break; }
                _ = self.signals.hup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    let _ = self.reload().await;
                }
                Some(()) = self.file_changed.recv() => {
                    let _ = self.reload().await;
                }
                Some(req) = self.reload_rx.recv() => {
                    let res = self.reload().await;
                    let _ = req.respond.send(res);
                }
                () = self.registry.changed() => self.apply_registry().await,
            }
        }
        self.shutdown().await;
        Ok(())
    }

    /// Re-read the config file and swap in a new snapshot, or keep the old one and return
    /// every error. Counted in `switchyard_config_reloads_total` and logged either way.
    pub async fn reload(&mut self) -> Result<(), ReloadError> {
        let Some(path) = self.config_path.clone() else {
            return Err(ReloadError::NoConfigFile);
        };
        let result = self.try_reload(&path).await;
        match &result {
            Ok(()) => {
                self.metrics.config_reload(ReloadResult::Success);
                tracing::info!(path = %path.display(), "config reloaded");
            }
            Err(e) => {
                self.metrics.config_reload(ReloadResult::Failure);
                for line in e.lines() {
                    tracing::error!(error = %line, "config reload rejected; the old config keeps serving");
                }
            }
        }
        result
    }

    async fn try_reload(&mut self, path: &Path) -> Result<(), ReloadError> {
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| ReloadError::Config(config::unreadable(path, &e)))?;
        // Remember what was tried, good or bad, so the watch does not try it again.
        self.loaded_hash
            .store(config::content_hash(text.as_bytes()), Ordering::Relaxed);
        let loaded = config::load_text(path, &text).map_err(ReloadError::Config)?;
        let plan = listeners::plan(&self.listeners, &loaded, &self.metrics).await?;
        let with = Launch {
            proxy: &self.proxy,
            limits: &loaded.config.limits,
            shutdown: &self.shutdown,
            tracker: &self.tracker,
        };
        self.listeners.apply(plan, &with);
        // Start, restart or stop the registry task if the redis section changed.
        self.registry.configure(&loaded.config);
        self.swap_in(Arc::new(loaded), Resolve::All).await;
        Ok(())
    }

    /// Registry entries changed (every pending update already taken in): rebuild on the
    /// config in use.
    async fn apply_registry(&mut self) {
        self.swap_in(Arc::clone(&self.config), Resolve::NewOnly)
            .await;
    }

    /// Build a snapshot of `config` with the current registry entries, carrying state over
    /// from the one in use, swap it in and bring the health probes in line with it: the one
    /// way the snapshot changes after start-up.
    async fn swap_in(&mut self, config: Arc<LoadedConfig>, names: Resolve) {
        let prev = self.snapshot.load_full();
        let next = build(
            &config,
            self.registry.registry(),
            Some(&prev),
            &self.metrics,
            names,
        )
        .await;
        let next = Arc::new(next);
        self.snapshot.store(Arc::clone(&next));
        self.health.reconcile(&next);
        self.config = config;
    }

    /// Not ready → stop accepting → wait for connections, bounded by `shutdown_timeout`
    /// → stop the admin API.
    pub async fn shutdown(self) {
        self.ready.store(false, Ordering::Relaxed);
        let timeout = self.config.config.shutdown_timeout.0;
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.tracker.len(),
                "shutdown_timeout reached with connections still open; closing them"
            );
        }
        self.admin_shutdown.cancel();
        self.admin_tracker.close();
        // Admin requests are short; do not let a stuck admin client hold the exit.
        let _ = tokio::time::timeout(ADMIN_STOP_TIMEOUT, self.admin_tracker.wait()).await;
        tracing::info!("stopped");
    }
}

/// The Redis registry task, started first so that the first snapshot has the registered
/// nodes (waiting at most `INITIAL_SYNC_TIMEOUT` for them).
async fn start_registry(
    config: &Config,
    metrics: &Metrics,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> RegistryHandle {
    let mut registry = RegistryHandle::new(metrics.clone(), shutdown.clone(), tracker.clone());
    registry.configure(config);
    registry.initial_sync(registry::INITIAL_SYNC_TIMEOUT).await;
    registry
}

/// The access log and the request handler every listener serves with.
fn start_proxy(
    config: &Config,
    snapshot: &Arc<SnapshotCell>,
    metrics: &Metrics,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<Arc<Proxy>> {
    let access_log = AccessLog::start(
        &config.access_log,
        metrics.access_log_dropped_total.clone(),
        shutdown.clone(),
        tracker,
    )
    .with_context(|| {
        format!(
            "cannot open the access log {}: check the path and its permissions",
            config.access_log.path
        )
    })?;
    Ok(Arc::new(Proxy::new(
        Arc::clone(snapshot),
        metrics.clone(),
        tracker.clone(),
        access_log,
    )))
}

async fn bind_admin(config: &Config) -> anyhow::Result<Option<(TcpListener, SocketAddr)>> {
    let Some(a) = &config.admin else {
        return Ok(None);
    };
    let bound = admin::bind(&a.bind).await.with_context(|| {
        format!(
            "cannot bind the admin API to {}: is another process using the port?",
            a.bind
        )
    })?;
    Ok(Some(bound))
}

/// Watch the config file (set up before reporting ready, so no edit after "ready" can be
/// missed); its wake-ups arrive on the returned channel. Without a file (the demo) or a
/// watch, nothing ever arrives.
fn watch_config_file(
    path: Option<&Path>,
    loaded_hash: &LoadedHash,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    if let Some(path) = path {
        match ConfigWatch::start(path.to_path_buf()) {
            Ok(watch) => {
                tracker.spawn(watch.run(Arc::clone(loaded_hash), tx, shutdown.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or the admin API instead");
            }
        }
    }
    rx
}

/// The signals the supervisor acts on.
struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        let signal =
            |kind| tokio::signal::unix::signal(kind).context("cannot install a signal handler");
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}
