//! The supervisor's end of the registry: the subscriber task's handle, its updates, and the
//! registry entries the snapshots are built with.
//!
//! The supervisor is the only place that builds and swaps snapshots. Its [`RegistryHandle`]
//! drains every pending update before one rebuild (a burst of messages costs a few
//! rebuilds, not one each), and it starts, restarts and stops the subscriber when a reload
//! changes the `redis` section. Updates carry the generation of the subscriber that sent
//! them, so a stopped subscriber's last words are ignored.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balance::build::Registry;
use crate::config::{Config, RedisConfig};
use crate::control::registry::subscriber::{RegistryUpdate, Subscriber};
use crate::metrics::Metrics;

/// How long start-up waits for the first registry read before serving without it.
pub const INITIAL_SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// Updates queued between the subscriber and the supervisor.
const UPDATE_QUEUE: usize = 64;

/// The supervisor's end: owns the channel, the running task's handle and the current
/// registry entries.
pub struct RegistryHandle {
    metrics: Metrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    tx: mpsc::Sender<RegistryUpdate>,
    rx: mpsc::Receiver<RegistryUpdate>,
    generation: u64,
    running: Option<RunningSubscriber>,
    registry: Registry,
}

struct RunningSubscriber {
    config: RedisConfig,
    stop: CancellationToken,
    pools: watch::Sender<Arc<Vec<String>>>,
    initial: Option<oneshot::Receiver<()>>,
}

fn same_redis(a: &RedisConfig, b: &RedisConfig) -> bool {
    a.url == b.url
        && a.key_prefix == b.key_prefix
        && a.channel == b.channel
        && a.resync_interval == b.resync_interval
}

impl RegistryHandle {
    pub fn new(
        metrics: Metrics,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> RegistryHandle {
        let (tx, rx) = mpsc::channel(UPDATE_QUEUE);
        RegistryHandle {
            metrics,
            shutdown,
            tracker,
            tx,
            rx,
            generation: 0,
            running: None,
            registry: Registry::new(),
        }
    }

    /// The registry entries to build snapshots with.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Bring the registry task in line with `config`: start it, tell it the pools changed,
    /// restart it for another Redis / prefix / channel / interval, or stop it (and forget
    /// every registry entry) when the `redis` section is gone.
    pub fn configure(&mut self, config: &Config) {
        let pools: Vec<String> = config.pools.keys().cloned().collect();
        self.registry
            .retain(|pool, _| config.pools.contains_key(pool));
        match (&config.redis, &self.running) {
            (Some(want), Some(run)) if same_redis(want, &run.config) => {
                run.pools.send_if_modified(|cur| {
                    let changed = **cur != pools;
                    if changed {
                        *cur = Arc::new(pools.clone());
                    }
                    changed
                });
            }
            (want, _) => {
                if let Some(run) = self.running.take() {
                    run.stop.cancel();
                    self.metrics.redis_connected.set(0);
                    tracing::info!("Redis registry subscriber stopped (the redis section changed)");
                }
                match want {
                    Some(want) => self.spawn(want.clone(), pools),
                    None => self.registry.clear(),
                }
            }
        }
    }

    fn spawn(&mut self, config: RedisConfig, pools: Vec<String>) {
        self.generation += 1;
        let stop = self.shutdown.child_token();
        let (pools_tx, pools_rx) = watch::channel(Arc::new(pools));
        let (initial_tx, initial_rx) = oneshot::channel();
        let subscriber = Subscriber::new(
            self.generation,
            config.clone(),
            pools_rx,
            self.tx.clone(),
            self.metrics.clone(),
            initial_tx,
        );
        self.tracker.spawn(subscriber.run(stop.clone()));
        self.running = Some(RunningSubscriber {
            config,
            stop,
            pools: pools_tx,
            initial: Some(initial_rx),
        });
    }

    /// After [`RegistryHandle::configure`] started a task: wait, at most `timeout`, for its first
    /// attempt (a full read, or a failure to connect), then take in what it sent. Returns
    /// whether the registry changed.
    pub async fn initial_sync(&mut self, timeout: Duration) -> bool {
        let Some(initial) = self.running.as_mut().and_then(|r| r.initial.take()) else {
            return false;
        };
        if tokio::time::timeout(timeout, initial).await.is_err() {
            tracing::warn!(
                ?timeout,
                "no answer from Redis yet; serving the static nodes, registered nodes follow once it answers"
            );
        }
        self.drain()
    }

    /// Wait for the next registry update, take in everything pending, and return once the
    /// registry changed. Cancel-safe (for `select!`); never returns without a task.
    pub async fn changed(&mut self) {
        loop {
            let Some(first) = self.rx.recv().await else {
                // Unreachable: `self` holds a sender.
                std::future::pending::<()>().await;
                return;
            };
            let mut changed = self.apply(first);
            changed |= self.drain();
            if changed {
                return;
            }
        }
    }

    /// Take in every pending update; returns whether any was current.
    fn drain(&mut self) -> bool {
        let mut changed = false;
        while let Ok(u) = self.rx.try_recv() {
            changed |= self.apply(u);
        }
        changed
    }

    fn apply(&mut self, update: RegistryUpdate) -> bool {
        if update.generation != self.generation || self.running.is_none() {
            return false;
        }
        for (pool, nodes) in update.pools {
            self.registry.insert(pool, nodes);
        }
        true
    }
}

impl Drop for RegistryHandle {
    /// The task stops with its link (also when start-up fails after starting it).
    fn drop(&mut self) {
        if let Some(run) = &self.running {
            run.stop.cancel();
        }
    }
}
