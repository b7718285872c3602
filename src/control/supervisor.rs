//! The supervisor: starts everything, owns every background task, reloads, shuts down.
//!
//! Start-up order: build the first snapshot, bind every listener and the admin API (a taken
//! port fails start-up before anything is served), then serve and report ready. All tasks
//! share one cancellation token and one task tracker; shutdown is: not ready → stop
//! accepting → let in-flight requests finish, bounded by `shutdown_timeout` → exit.
//!
//! Reloads (SIGHUP, the admin API) all go through [`Supervisor::reload`]: the new file is
//! parsed and validated fully first; if anything is wrong the old config keeps serving.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::signal::unix::{Signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balance::build::{build, Resolve};
use crate::balance::snapshot::SnapshotCell;
use crate::config::{self, LoadedConfig};
use crate::control::admin::{self, AdminState, ReloadRequest};
use crate::control::health::HealthSupervisor;
use crate::control::registry;
use crate::control::watch::{ConfigWatch, LoadedHash};
use crate::downstream::listener::{self, Listener, ProxyProtocolSlot, ServeContext, TlsSlot};
use crate::metrics::Metrics;
use crate::proxy::accesslog::AccessLog;
use crate::proxy::handler::Proxy;
use crate::tls::TlsTerminator;

/// Addresses actually bound (port 0 in the config becomes a real port).
#[derive(Debug, Clone)]
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
    /// Wake-ups from the config file watcher.
    file_changed: mpsc::Receiver<()>,
    /// Content hash of the config last loaded or tried, shared with the file watcher so it
    /// neither misses a change nor repeats a reload that already happened.
    loaded_hash: LoadedHash,
    signals: Signals,
    /// The listeners serving now, for reconciliation on reload.
    listeners: Vec<RunningListener>,
    /// The request handler, for listeners added by a reload.
    proxy: Arc<Proxy>,
    health: Arc<HealthSupervisor>,
    /// Live registration (issue 4): the Redis registry task's updates and current entries.
    registry: registry::Link,
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
        let loaded = Arc::new(loaded);
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        // Live registration (issue 4): start the Redis registry task first, so that the first
        // snapshot has the registered nodes (waiting at most INITIAL_SYNC_TIMEOUT).
        let mut registry = registry::Link::new(metrics.clone(), shutdown.clone(), tracker.clone());
        registry.configure(&loaded.config);
        registry.initial_sync(registry::INITIAL_SYNC_TIMEOUT).await;
        let snap = build(&loaded, registry.registry(), None, &metrics, Resolve::All).await;
        let snapshot = Arc::new(ArcSwap::from_pointee(snap));
        let access_log = AccessLog::start(
            &loaded.config.access_log,
            metrics.access_log_dropped_total.clone(),
            shutdown.clone(),
            &tracker,
        )
        .with_context(|| {
            format!(
                "cannot open the access log {}: check the path and its permissions",
                loaded.config.access_log.path
            )
        })?;
        let proxy = Arc::new(Proxy::new(
            Arc::clone(&snapshot),
            metrics.clone(),
            tracker.clone(),
            access_log,
        ));
        let ready = Arc::new(AtomicBool::new(false));
        let cfg = &loaded.config;

        // Bind everything before serving anything.
        let mut listeners = Vec::with_capacity(cfg.listeners.len());
        for l in &cfg.listeners {
            listeners.push(prepare_listener(l, &loaded.base_dir, &metrics).await?);
        }
        let admin = match &cfg.admin {
            Some(a) => Some(admin::bind(&a.bind).await.with_context(|| {
                format!(
                    "cannot bind the admin API to {}: is another process using the port?",
                    a.bind
                )
            })?),
            None => None,
        };

        let (reload_tx, reload_rx) = mpsc::channel(8);
        let (file_tx, file_changed) = mpsc::channel(1);
        let loaded_hash: LoadedHash = Arc::new(AtomicU64::new(loaded.source_hash));
        if let Some(path) = &config_path {
            // Set up before reporting ready, so no edit after "ready" can be missed.
            match ConfigWatch::start(path.clone()) {
                Ok(watch) => {
                    tracker.spawn(watch.run(Arc::clone(&loaded_hash), file_tx, shutdown.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or the admin API instead");
                }
            }
        }
        // Signal handlers exist before "ready": a signal sent the moment the process says
        // it is ready is handled (reload or drain), never the default action (death).
        let signals = Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        };
        let admin_shutdown = CancellationToken::new();
        let admin_tracker = TaskTracker::new();
        let mut bound = Bound {
            listeners: Vec::new(),
            admin: None,
        };
        let mut running = Vec::with_capacity(listeners.len());
        for (l, cfg_l) in listeners.into_iter().zip(&cfg.listeners) {
            bound.listeners.push((l.name.clone(), l.local_addr));
            running.push(launch_listener(
                l,
                cfg_l,
                &proxy,
                &cfg.limits,
                &shutdown,
                &tracker,
            ));
        }
        if let Some((tcp, addr)) = admin {
            tracing::info!(addr = %addr, "admin listening");
            bound.admin = Some(addr);
            let token_env = cfg.admin.as_ref().and_then(|a| a.token_env.clone());
            let token = token_env
                .as_deref()
                .and_then(|v| std::env::var(v).ok())
                .filter(|t| !t.is_empty());
            if token.is_none() {
                tracing::info!("admin API mutations are disabled: no token (set admin.token_env and that environment variable)");
            }
            let state = Arc::new(AdminState {
                snapshot: Arc::clone(&snapshot),
                metrics: metrics.clone(),
                ready: Arc::clone(&ready),
                token,
                token_env,
                reload: reload_tx,
            });
            admin_tracker.spawn(admin::serve(
                tcp,
                state,
                admin_shutdown.clone(),
                admin_tracker.clone(),
            ));
        }
        let health = HealthSupervisor::new(metrics.clone(), shutdown.clone(), tracker.clone());
        health.reconcile(&snapshot.load());
        tracker.spawn(Arc::clone(&health).sweep_ejections(Arc::clone(&snapshot)));

        ready.store(true, Ordering::Relaxed);
        tracing::info!(
            pools = snapshot.load().pools.len(),
            routes = cfg.routes.len(),
            "switchyard ready"
        );
        Ok(Supervisor {
            config_path,
            config: loaded,
            snapshot,
            metrics,
            ready,
            shutdown,
            tracker,
            admin_shutdown,
            admin_tracker,
            reload_rx,
            file_changed,
            loaded_hash,
            signals,
            listeners: running,
            proxy,
            health,
            registry,
            bound,
        })
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
    /// every error.
    pub async fn reload(&mut self) -> Result<(), String> {
        let Some(path) = self.config_path.clone() else {
            return Err("this process was not started from a config file".to_string());
        };
        let path = path.as_path();
        let text = match tokio::fs::read_to_string(path).await {
            Ok(t) => t,
            Err(e) => {
                let errors = config::unreadable(path, &e);
                self.metrics
                    .config_reloads_total
                    .with_label_values(&["failure"])
                    .inc();
                tracing::error!(error = %errors, "config reload rejected; the old config keeps serving");
                return Err(errors.to_string());
            }
        };
        // Remember what was tried, good or bad, so the watcher does not try it again.
        self.loaded_hash
            .store(config::content_hash(text.as_bytes()), Ordering::Relaxed);
        let loaded = config::load_text(path, &text).map_err(|e| e.to_string());
        let plan = match &loaded {
            Ok(l) => self.plan_listeners(l).await,
            Err(_) => Ok(ListenerPlan::default()),
        };
        let loaded = match (loaded, plan) {
            (Ok(l), Ok(plan)) => Ok((l, plan)),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        match loaded {
            Ok((loaded, plan)) => {
                self.apply_listeners(plan, &loaded.config.limits);
                // Start, restart or stop the registry task if the redis section changed.
                self.registry.configure(&loaded.config);
                self.swap_in(Arc::new(loaded), Resolve::All).await;
                self.metrics
                    .config_reloads_total
                    .with_label_values(&["success"])
                    .inc();
                tracing::info!(path = %path.display(), "config reloaded");
                Ok(())
            }
            Err(errors) => {
                self.metrics
                    .config_reloads_total
                    .with_label_values(&["failure"])
                    .inc();
                for e in errors.lines() {
                    tracing::error!(error = %e, "config reload rejected; the old config keeps serving");
                }
                Err(errors)
            }
        }
    }

    /// Registry entries changed (every pending update already taken in): rebuild on the
    /// current config and swap. Only this loop builds snapshots, so rebuilds are serialized.
    async fn apply_registry(&mut self) {
        self.swap_in(Arc::clone(&self.config), Resolve::NewOnly)
            .await;
    }

    /// Build a snapshot of `config` with the current registry entries, carrying state over
    /// from the one in use, swap it in and bring the health probes in line with it: the one
    /// way the snapshot changes after start-up (config reloads and registry updates).
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

/// How long admin connections get to finish once everything else has stopped.
const ADMIN_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Supervisor {
    /// Work out what a new config means for the listeners, doing everything that can fail
    /// (binding new addresses, loading certificates) before anything changes: on error the
    /// whole reload is rejected and nothing is touched.
    async fn plan_listeners(&self, loaded: &LoadedConfig) -> Result<ListenerPlan, String> {
        let mut plan = ListenerPlan::default();
        let mut taken = vec![false; self.listeners.len()];
        for l in &loaded.config.listeners {
            // A listener is identified by its bind; with an ephemeral port (`:0`, tests)
            // the bind alone says nothing, so the name must match too.
            let same = |r: &RunningListener| {
                r.bind == l.bind && (r.name == l.name || !l.bind.ends_with(":0"))
            };
            let found = (0..self.listeners.len()).find(|&i| !taken[i] && same(&self.listeners[i]));
            if let Some(i) = found {
                taken[i] = true;
                plan.proxy_protocol.push((i, l.proxy_protocol));
            }
            match found {
                Some(i) if self.listeners[i].tls_cfg == l.tls => plan.keep.push(i),
                Some(i) => {
                    // Same bind, new TLS settings (added, changed or removed).
                    let tls = match &l.tls {
                        Some(t) => Some(
                            TlsTerminator::new(&l.name, t, &loaded.base_dir, &self.metrics)
                                .map_err(|e| format!("listener `{}`: {e}", l.name))?,
                        ),
                        None => None,
                    };
                    plan.keep.push(i);
                    plan.retls.push((i, l.tls.clone(), tls));
                }
                None => {
                    let prepared = prepare_listener(l, &loaded.base_dir, &self.metrics)
                        .await
                        .map_err(|e| format!("{e:#}"))?;
                    plan.add.push((prepared, l.clone()));
                }
            }
        }
        Ok(plan)
    }

    /// Carry out a plan: swap TLS settings, start added listeners, stop removed ones
    /// (they stop accepting and close their connections politely; requests in flight
    /// finish). Binds that stay are not touched, and neither are their connections.
    fn apply_listeners(&mut self, plan: ListenerPlan, limits: &crate::config::LimitsConfig) {
        for (i, on) in plan.proxy_protocol {
            let r = &self.listeners[i];
            if r.proxy_protocol
                .swap(on, std::sync::atomic::Ordering::Relaxed)
                != on
            {
                tracing::info!(listener = %r.name, proxy_protocol = on, "listener PROXY protocol setting changed");
            }
        }
        for (i, tls_cfg, tls) in plan.retls {
            let r = &mut self.listeners[i];
            if let Some(old) = r.tls_watch.take() {
                old.cancel();
            }
            if let Some(t) = &tls {
                let stop = r.stop.child_token();
                t.watch(stop.clone(), &self.tracker);
                r.tls_watch = Some(stop);
            }
            r.tls.store(tls);
            r.tls_cfg = tls_cfg;
            tracing::info!(listener = %r.name, tls = r.tls_cfg.is_some(), "listener TLS settings changed");
        }
        let mut kept = vec![false; self.listeners.len()];
        for i in plan.keep {
            kept[i] = true;
        }
        let mut i = 0;
        self.listeners.retain(|r| {
            let keep = kept[i];
            i += 1;
            if !keep {
                tracing::info!(listener = %r.name, bind = %r.bind, "listener removed: no longer accepting");
                r.stop.cancel();
            }
            keep
        });
        for (l, cfg_l) in plan.add {
            let r = launch_listener(
                l,
                &cfg_l,
                &self.proxy,
                limits,
                &self.shutdown,
                &self.tracker,
            );
            self.listeners.push(r);
        }
    }
}

/// A listener that is serving.
struct RunningListener {
    name: String,
    /// The configured bind, the identity of a listener across reloads.
    bind: String,
    tls_cfg: Option<crate::config::ListenerTlsConfig>,
    tls: TlsSlot,
    /// `proxy_protocol`, read by each new connection; a reload may switch it.
    proxy_protocol: ProxyProtocolSlot,
    /// Stops the certificate-file watch of the current TLS settings.
    tls_watch: Option<CancellationToken>,
    /// Stops this listener alone (a child of the process's shutdown token).
    stop: CancellationToken,
}

/// What a reload does to the listeners; built by `plan_listeners`.
#[derive(Default)]
struct ListenerPlan {
    /// Indices of running listeners that stay.
    keep: Vec<usize>,
    /// Running listeners whose TLS settings change: (index, new settings, terminator).
    retls: Vec<(
        usize,
        Option<crate::config::ListenerTlsConfig>,
        Option<Arc<TlsTerminator>>,
    )>,
    /// New listeners, bound and ready to serve.
    add: Vec<(Listener, crate::config::ListenerConfig)>,
    /// Running listeners that stay, with their new `proxy_protocol` setting.
    proxy_protocol: Vec<(usize, bool)>,
}

/// Bind a listener and load its certificates: everything that can fail, before serving.
async fn prepare_listener(
    l: &crate::config::ListenerConfig,
    base_dir: &std::path::Path,
    metrics: &Metrics,
) -> anyhow::Result<Listener> {
    let bound = Listener::bind(&l.name, &l.bind).await.with_context(|| {
        format!(
            "cannot bind listener `{}` to {}: is another process using the port?",
            l.name, l.bind
        )
    })?;
    let tls = match &l.tls {
        Some(t) => Some(
            TlsTerminator::new(&l.name, t, base_dir, metrics).with_context(|| {
                format!("listener `{}`: cannot load its TLS certificates", l.name)
            })?,
        ),
        None => None,
    };
    Ok(bound.with_tls(tls).with_proxy_protocol(l.proxy_protocol))
}

/// Start serving a bound listener.
fn launch_listener(
    l: Listener,
    cfg: &crate::config::ListenerConfig,
    proxy: &Arc<Proxy>,
    limits: &crate::config::LimitsConfig,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> RunningListener {
    tracing::info!(listener = %l.name, addr = %l.local_addr, "listening");
    let stop = shutdown.child_token();
    let tls = l.tls_slot();
    let proxy_protocol = l.proxy_protocol_slot();
    let tls_watch = tls.load_full().map(|t| {
        let token = stop.child_token();
        t.watch(token.clone(), tracker);
        token
    });
    let running = RunningListener {
        name: l.name.clone(),
        bind: cfg.bind.clone(),
        tls_cfg: cfg.tls.clone(),
        tls,
        proxy_protocol,
        tls_watch,
        stop: stop.clone(),
    };
    let ctx = Arc::new(ServeContext {
        proxy: Arc::clone(proxy),
        limits: limits.clone(),
        shutdown: stop,
        tracker: tracker.clone(),
    });
    tracker.spawn(listener::serve(l, ctx));
    running
}

/// The signals the supervisor acts on.
struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

fn signal(kind: SignalKind) -> anyhow::Result<Signal> {
    tokio::signal::unix::signal(kind).context("cannot install a signal handler")
}
