//! The listeners the supervisor runs, and what a reload does to them.
//!
//! A listener is identified across reloads by its bind (and, for an ephemeral `:0` bind, its
//! name). A reload is planned first ([`plan`]): new binds are bound and changed TLS settings
//! get their terminator, from the certificates validation loaded — everything that can
//! fail, before anything changes, so a reload that fails leaves every listener as it was.
//! Then the plan is carried out ([`Listeners::apply`]): binds that stay keep their socket and
//! their connections (their `proxy_protocol` switch and TLS terminator are swapped in
//! place), new ones start, removed ones stop accepting and close their connections politely.
//! Each TLS listener's certificate files are watched ([`crate::control::files`]) for as long
//! as its terminator serves.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{LimitsConfig, ListenerConfig, ListenerTlsConfig, LoadedConfig};
use crate::control::files::watch_certificates;
use crate::control::reload::ListenerError;
use crate::downstream::listener::{self, Listener, ProxyProtocolSlot, ServeContext, TlsSlot};
use crate::metrics::Metrics;
use crate::proxy::handler::Proxy;
use crate::tls::certs::{Certificates, TlsError};
use crate::tls::server::TlsTerminator;

/// What every listener is started with.
pub struct Launch<'a> {
    pub proxy: &'a Arc<Proxy>,
    pub limits: &'a LimitsConfig,
    pub shutdown: &'a CancellationToken,
    pub tracker: &'a TaskTracker,
}

/// The listeners serving now.
#[derive(Default)]
pub struct Listeners {
    running: Vec<RunningListener>,
}

/// A listener that is serving.
struct RunningListener {
    name: String,
    /// The configured bind, the identity of a listener across reloads.
    bind: String,
    tls_cfg: Option<ListenerTlsConfig>,
    tls: TlsSlot,
    /// `proxy_protocol`, read by each new connection; a reload may switch it.
    proxy_protocol: ProxyProtocolSlot,
    /// Stops the certificate-file watch of the current TLS terminator.
    tls_watch: Option<CancellationToken>,
    /// Stops this listener alone (a child of the process's shutdown token).
    stop: CancellationToken,
}

/// What a reload does to the listeners; built by [`plan`].
#[derive(Default)]
pub struct ListenerPlan {
    /// Indices of running listeners that stay.
    keep: Vec<usize>,
    /// Running listeners whose TLS settings change.
    retls: Vec<Retls>,
    /// New listeners, bound and ready to serve.
    add: Vec<(Listener, ListenerConfig)>,
    /// Running listeners that stay, with their new `proxy_protocol` setting.
    proxy_protocol: Vec<(usize, bool)>,
}

/// A listener that stays on its bind with other TLS settings (added, changed or removed).
struct Retls {
    index: usize,
    tls_cfg: Option<ListenerTlsConfig>,
    terminator: Option<Arc<TlsTerminator>>,
}

/// Bind every listener of `loaded` and build their terminators: start-up, before anything
/// is served.
pub async fn bind_all(
    loaded: &LoadedConfig,
    metrics: &Metrics,
) -> Result<Vec<(Listener, ListenerConfig)>, ListenerError> {
    let mut out = Vec::with_capacity(loaded.config.listeners.len());
    for (i, l) in loaded.config.listeners.iter().enumerate() {
        out.push((
            prepare(l, certificates(loaded, i), metrics).await?,
            l.clone(),
        ));
    }
    Ok(out)
}

/// Work out what `loaded` means for the running listeners, doing everything that can fail
/// (binding new addresses, building terminators) before anything changes: on error the
/// whole reload is rejected and nothing is touched.
pub async fn plan(
    running: &Listeners,
    loaded: &LoadedConfig,
    metrics: &Metrics,
) -> Result<ListenerPlan, ListenerError> {
    let running = &running.running;
    let mut plan = ListenerPlan::default();
    let mut taken = vec![false; running.len()];
    for (index, l) in loaded.config.listeners.iter().enumerate() {
        // A listener is identified by its bind; with an ephemeral port (`:0`, tests)
        // the bind alone says nothing, so the name must match too.
        let same =
            |r: &RunningListener| r.bind == l.bind && (r.name == l.name || !l.bind.ends_with(":0"));
        let found = (0..running.len()).find(|&i| !taken[i] && same(&running[i]));
        if let Some(i) = found {
            taken[i] = true;
            plan.proxy_protocol.push((i, l.proxy_protocol));
        }
        let certs = certificates(loaded, index);
        match found {
            Some(i) if running[i].tls_cfg == l.tls => plan.keep.push(i),
            Some(i) => {
                plan.keep.push(i);
                plan.retls.push(Retls {
                    index: i,
                    tls_cfg: l.tls.clone(),
                    terminator: terminator(l, certs, metrics)?,
                });
            }
            None => plan
                .add
                .push((prepare(l, certs, metrics).await?, l.clone())),
        }
    }
    Ok(plan)
}

/// The certificates validation loaded for listener `index`.
fn certificates(loaded: &LoadedConfig, index: usize) -> Option<&Arc<Certificates>> {
    loaded.tls.listeners.get(index).and_then(Option::as_ref)
}

/// The terminator of a listener with a `tls` section, from the certificates validation
/// loaded for it.
fn terminator(
    l: &ListenerConfig,
    certs: Option<&Arc<Certificates>>,
    metrics: &Metrics,
) -> Result<Option<Arc<TlsTerminator>>, ListenerError> {
    if l.tls.is_none() {
        return Ok(None);
    }
    let make = || match certs {
        Some(c) => TlsTerminator::new(&l.name, c, metrics),
        // Not reached: validation loads every listener's certificates or fails.
        None => Err(TlsError::NoCertificates),
    };
    make()
        .map(Some)
        .map_err(|source| ListenerError::Certificates {
            listener: l.name.clone(),
            source,
        })
}

/// Bind a listener and build its terminator: everything that can fail, before serving.
async fn prepare(
    l: &ListenerConfig,
    certs: Option<&Arc<Certificates>>,
    metrics: &Metrics,
) -> Result<Listener, ListenerError> {
    let bound = Listener::bind(&l.name, &l.bind)
        .await
        .map_err(|source| ListenerError::Bind {
            listener: l.name.clone(),
            bind: l.bind.clone(),
            source,
        })?;
    let tls = terminator(l, certs, metrics)?;
    Ok(bound.with_tls(tls).with_proxy_protocol(l.proxy_protocol))
}

impl Listeners {
    /// Start serving bound listeners; returns their names and addresses.
    pub fn launch(
        &mut self,
        bound: Vec<(Listener, ListenerConfig)>,
        with: &Launch<'_>,
    ) -> Vec<(String, SocketAddr)> {
        let mut addrs = Vec::with_capacity(bound.len());
        for (l, cfg) in bound {
            addrs.push((l.name.clone(), l.local_addr));
            self.running.push(launch(l, &cfg, with));
        }
        addrs
    }

    /// Carry out a plan: swap TLS settings, start added listeners, stop removed ones
    /// (they stop accepting and close their connections politely; requests in flight
    /// finish). Binds that stay are not touched, and neither are their connections.
    pub fn apply(&mut self, plan: ListenerPlan, with: &Launch<'_>) {
        for (i, on) in plan.proxy_protocol {
            let r = &self.running[i];
            if r.proxy_protocol.swap(on, Ordering::Relaxed) != on {
                tracing::info!(listener = %r.name, proxy_protocol = on, "listener PROXY protocol setting changed");
            }
        }
        for Retls {
            index,
            tls_cfg,
            terminator,
        } in plan.retls
        {
            let r = &mut self.running[index];
            if let Some(old) = r.tls_watch.take() {
                old.cancel();
            }
            r.tls_watch = terminator.as_ref().map(|t| watch(t, &r.stop, with.tracker));
            r.tls.store(terminator);
            r.tls_cfg = tls_cfg;
            tracing::info!(listener = %r.name, tls = r.tls_cfg.is_some(), "listener TLS settings changed");
        }
        let mut kept = vec![false; self.running.len()];
        for i in plan.keep {
            kept[i] = true;
        }
        let mut i = 0;
        self.running.retain(|r| {
            let keep = kept[i];
            i += 1;
            if !keep {
                tracing::info!(listener = %r.name, bind = %r.bind, "listener removed: no longer accepting");
                r.stop.cancel();
            }
            keep
        });
        for (l, cfg) in plan.add {
            self.running.push(launch(l, &cfg, with));
        }
    }
}

/// Start serving a bound listener.
fn launch(l: Listener, cfg: &ListenerConfig, with: &Launch<'_>) -> RunningListener {
    tracing::info!(listener = %l.name, addr = %l.local_addr, "listening");
    let stop = with.shutdown.child_token();
    let tls = l.tls_slot();
    let proxy_protocol = l.proxy_protocol_slot();
    let tls_watch = tls.load_full().map(|t| watch(&t, &stop, with.tracker));
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
        proxy: Arc::clone(with.proxy),
        limits: with.limits.clone(),
        shutdown: stop,
        tracker: with.tracker.clone(),
    });
    with.tracker.spawn(listener::serve(l, ctx));
    running
}

/// Watch the certificate files of `terminator` until the listener stops or the terminator
/// is replaced; the returned token stops the watch.
fn watch(
    terminator: &Arc<TlsTerminator>,
    listener_stop: &CancellationToken,
    tracker: &TaskTracker,
) -> CancellationToken {
    let stop = listener_stop.child_token();
    watch_certificates(Arc::clone(terminator), stop.clone(), tracker);
    stop
}
