//! Live node registration through Redis: the subscriber task and the supervisor's end of it.
//!
//! The protocol is DESIGN.md's "Redis registry protocol": hash `{key_prefix}:pool:{pool}`
//! (field `host:port`, value `{"weight": 2, "expires_at_ms": ...}`) is the truth; a message
//! on `channel` naming a pool (or `*`) only says "look again".
//!
//! ## Who does what
//! - One **registry task** per configured `redis` section owns the Redis connections: a
//!   dedicated pub/sub connection (SUBSCRIBE `channel`) and a command connection (HGETALL).
//!   It is the only reader, and it reads one batch at a time, so an older read of a pool can
//!   never overwrite a newer one. It keeps the raw hash of each configured pool, validates
//!   the entries and sends the supervisor the full, effective node set of every pool whose
//!   set changed ([`RegistryUpdate`]).
//! - The **supervisor** ([`crate::control::supervisor`]) is the only place that builds and swaps snapshots.
//!   Its end of the channel is a [`RegistryHandle`]: it drains every pending update before one rebuild
//!   (a burst of messages costs a few rebuilds, not one each), and it also starts, restarts
//!   and stops the task when a reload changes the `redis` section. Updates carry the
//!   generation of the task that sent them, so a stopped task's last words are ignored.
//!
//! ## When the task reads
//! - everything, after every (re)connect (after SUBSCRIBE is confirmed, so nothing written
//!   after the read can be missed), every `resync_interval`, and when a reload changes the
//!   set of configured pools;
//! - the pools named by the messages pending at that moment, all of them drained first
//!   (a thousand messages for one pool → one HGETALL; `*` → every pool); a message naming
//!   a pool that is not in the config is ignored;
//! - the pools with an entry whose `expires_at_ms` has come, at that moment (a timer), so an
//!   entry is dropped on time — and never while its owner is still heartbeating, even by a
//!   bare `HSET` without `PUBLISH`.
//!
//! ## Outage
//! Any Redis error or timeout ends the session: `switchyard_redis_connected` goes to 0, the
//! balancer keeps the last node set it knew — expiry included: nothing is dropped while the
//! registry cannot be read, since a node whose heartbeat cannot reach Redis either is not
//! dead — and the task reconnects with full-jitter exponential backoff (100 ms doubling to a
//! 5 s cap; the attempt count resets once a session has stayed up for 5 s). The full re-read
//! after reconnecting picks up whatever changed meanwhile.
//!
//! ## `switchyard_registry_updates_total{result}`
//! - `applied`: a pool's node set changed (re-read or expiry) and was handed to the supervisor;
//! - `unchanged`: a pool was re-read and its node set was the same;
//! - `invalid`: a bad entry (address, weight, JSON), counted once per distinct
//!   (pool, field, value), like its log line — a resync does not count it again;
//! - `expired`: an entry ignored because its `expires_at_ms` passed, also once per entry;
//! - `unknown_pool`: a message naming a pool that is not in the config;
//! - `error`: a session ended by a Redis error or timeout (a failed connection attempt too).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt as _, StreamExt as _};
use redis::AsyncConnectionConfig;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balance::build::{Registry, RegistryNode};
use crate::config::validate::MAX_WEIGHT;
use crate::config::{Config, RedisConfig};
use crate::metrics::Metrics;
use crate::util::clock::unix_ms;
use crate::util::random;

/// How long a TCP (and TLS) connection to Redis may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long any one command (or pipeline) may take to answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// First reconnect delay bound; doubles per failed attempt.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Largest reconnect delay bound.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// A session that lasted this long resets the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(5);
/// How long start-up waits for the first registry read before serving without it.
pub const INITIAL_SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// Updates queued between the task and the supervisor.
const UPDATE_QUEUE: usize = 64;
/// Distinct unknown pool names remembered for log-once (beyond that each is logged at debug).
const MAX_UNKNOWN_NOTED: usize = 1024;

/// The metric label values of `switchyard_registry_updates_total`.
pub mod result {
    pub const APPLIED: &str = "applied";
    pub const UNCHANGED: &str = "unchanged";
    pub const INVALID: &str = "invalid";
    pub const EXPIRED: &str = "expired";
    pub const UNKNOWN_POOL: &str = "unknown_pool";
    pub const ERROR: &str = "error";
}

/// The Redis hash that holds a pool's registered nodes.
pub fn pool_key(key_prefix: &str, pool: &str) -> String {
    format!("{key_prefix}:pool:{pool}")
}

/// Check a registry field: the same rule as a static node's `addr` in the config
/// ([`crate::config::validate::check_node_addr`]: `host:port` with a host name, an IPv4
/// address or a bracketed IPv6 address, and a port in 1..=65535), so a node is valid or
/// not whichever way it was added.
pub fn validate_addr(addr: &str) -> Result<(), String> {
    crate::config::validate::check_node_addr(addr)
}

/// A registry value, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryValue {
    pub weight: u32,
    /// Unix time in ms after which the entry is ignored.
    pub expires_at_ms: Option<u64>,
}

impl EntryValue {
    /// The JSON written to Redis: `{"weight":N}` or `{"weight":N,"expires_at_ms":T}`.
    pub fn to_json(&self) -> String {
        match self.expires_at_ms {
            Some(t) => format!("{{\"weight\":{},\"expires_at_ms\":{t}}}", self.weight),
            None => format!("{{\"weight\":{}}}", self.weight),
        }
    }
}

/// Parse a registry value: a JSON object with an optional `weight` (integer 1..=1000,
/// default 1) and an optional `expires_at_ms` (unix ms). Other keys are ignored, so other
/// programs may store more.
pub fn parse_value(value: &str) -> Result<EntryValue, String> {
    let v: serde_json::Value =
        serde_json::from_str(value).map_err(|e| format!("the value is not valid JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| "the value must be a JSON object such as {\"weight\":1}".to_string())?;
    let weight = match obj.get("weight") {
        None | Some(serde_json::Value::Null) => 1,
        Some(w) => match w.as_u64() {
            Some(n) if (1..=u64::from(MAX_WEIGHT)).contains(&n) => n as u32,
            _ => return Err(format!("weight {w} is not an integer in 1..={MAX_WEIGHT}")),
        },
    };
    let expires_at_ms = match obj.get("expires_at_ms") {
        None | Some(serde_json::Value::Null) => None,
        Some(e) => Some(
            e.as_u64()
                .or_else(|| {
                    e.as_f64()
                        .filter(|f| f.is_finite() && *f >= 0.0)
                        .map(|f| f as u64)
                })
                .ok_or_else(|| format!("expires_at_ms {e} is not a unix time in milliseconds"))?,
        ),
    };
    Ok(EntryValue {
        weight,
        expires_at_ms,
    })
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map(|(u, _)| u).unwrap_or(userinfo);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                // `redis://PASSWORD@host` is not a form the redis crate reads as a
                // password, but hide it anyway.
                format!("{scheme}://***@{host}{path}")
            }
        }
        None => url.to_string(),
    }
}

/// Make sure rustls has a process-wide crypto provider before a `rediss://` connection is
/// made (the redis crate uses the default one). Leaves an installed provider alone.
pub fn ensure_tls_provider(url: &str) {
    if url.starts_with("rediss://") && rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Open a client for `url` (parsing it, and preparing TLS for `rediss://`).
pub fn open_client(url: &str) -> redis::RedisResult<redis::Client> {
    ensure_tls_provider(url);
    redis::Client::open(url)
}

/// Connection settings with the timeouts above.
pub fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
}

/// A random delay in `[0, min(cap, start * 2^attempt)]`: full-jitter exponential backoff.
pub fn backoff(attempt: u32) -> Duration {
    let bound = BACKOFF_START
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_CAP);
    let nanos = bound.as_nanos() as u64;
    Duration::from_nanos(random::below(nanos + 1))
}

/// One batch from the registry task: the full effective node set of each pool listed.
#[derive(Debug, Clone)]
pub struct RegistryUpdate {
    /// Which task sent it (see [`RegistryHandle`]).
    pub generation: u64,
    pub pools: Vec<(String, Vec<RegistryNode>)>,
}

/// What an entry of a pool's hash turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A valid node, with its expiry if it has one.
    Node(RegistryNode, Option<u64>),
    /// Valid, but its `expires_at_ms` (kept here) is not after `now_ms`.
    Expired(u64),
    /// Skipped: why.
    Invalid(String),
}

/// Judge one entry (hash field, value) of a pool's hash at `now_ms`. Never fails: any
/// field and value, however malformed, gets a verdict.
pub fn judge(field: &str, value: &str, now_ms: u64) -> Verdict {
    if let Err(e) = validate_addr(field) {
        return Verdict::Invalid(e);
    }
    match parse_value(value) {
        Err(e) => Verdict::Invalid(e),
        Ok(v) => match v.expires_at_ms {
            Some(t) if t <= now_ms => Verdict::Expired(t),
            exp => Verdict::Node(
                RegistryNode {
                    addr: field.to_string(),
                    weight: v.weight,
                },
                exp,
            ),
        },
    }
}

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
        let task = Subscriber {
            generation: self.generation,
            config: config.clone(),
            pools: pools_rx,
            tx: self.tx.clone(),
            metrics: self.metrics.clone(),
            raw: HashMap::new(),
            expiry: HashMap::new(),
            sent: HashMap::new(),
            synced_once: false,
            noted: HashSet::new(),
            unknown_noted: HashSet::new(),
            not_a_hash: HashSet::new(),
            initial: Some(initial_tx),
            outage_logged: false,
        };
        self.tracker.spawn(task.run(stop.clone()));
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

/// Pools to re-read.
#[derive(Debug, Default)]
enum Dirty {
    #[default]
    None,
    Some(BTreeSet<String>),
    All,
}

impl Dirty {
    fn add(&mut self, pool: &str) {
        match self {
            Dirty::All => {}
            Dirty::None => *self = Dirty::Some(BTreeSet::from([pool.to_string()])),
            Dirty::Some(s) => {
                s.insert(pool.to_string());
            }
        }
    }
}

/// Why a session ended.
#[derive(Debug)]
enum SessionEnd {
    Redis(redis::RedisError),
    Timeout(&'static str),
    SubscriptionClosed,
    /// The supervisor is gone (shutdown).
    Closed,
}

impl fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionEnd::Redis(e) => write!(f, "{e}"),
            SessionEnd::Timeout(what) => write!(f, "{what} timed out"),
            SessionEnd::SubscriptionClosed => write!(f, "the subscription connection closed"),
            SessionEnd::Closed => write!(f, "stopped"),
        }
    }
}

impl From<redis::RedisError> for SessionEnd {
    fn from(e: redis::RedisError) -> Self {
        SessionEnd::Redis(e)
    }
}

async fn within<T>(
    d: Duration,
    what: &'static str,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, SessionEnd> {
    match tokio::time::timeout(d, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(SessionEnd::Timeout(what)),
    }
}

/// The registry task.
struct Subscriber {
    generation: u64,
    config: RedisConfig,
    pools: watch::Receiver<Arc<Vec<String>>>,
    tx: mpsc::Sender<RegistryUpdate>,
    metrics: Metrics,
    /// The last HGETALL of each configured pool.
    raw: HashMap<String, HashMap<String, String>>,
    /// The earliest future `expires_at_ms` in each pool's entries.
    expiry: HashMap<String, u64>,
    /// The node set last sent for each pool.
    sent: HashMap<String, Vec<RegistryNode>>,
    /// Whether the first full read was sent (it is sent whole, changed or not).
    synced_once: bool,
    /// (pool, field, value) of the entries already logged as invalid or expired.
    noted: HashSet<(String, String, String)>,
    unknown_noted: HashSet<String>,
    /// Pools whose key holds something other than a hash (logged once).
    not_a_hash: HashSet<String>,
    initial: Option<oneshot::Sender<()>>,
    outage_logged: bool,
}

impl Subscriber {
    async fn run(mut self, stop: CancellationToken) {
        let url = redact_url(&self.config.url);
        let client = match open_client(&self.config.url) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(url = %url, error = %e, "invalid Redis URL: the registry is off until the config is fixed and reloaded");
                self.initial.take();
                stop.cancelled().await;
                return;
            }
        };
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let end = tokio::select! {
                _ = stop.cancelled() => return,
                end = self.session(&client, &url) => end,
            };
            self.metrics.redis_connected.set(0);
            if let SessionEnd::Closed = end {
                return;
            }
            self.metrics
                .registry_updates_total
                .with_label_values(&[result::ERROR])
                .inc();
            // Start-up need not wait for a Redis that is down.
            self.initial.take();
            if started.elapsed() >= STABLE_SESSION {
                attempt = 0;
            }
            let delay = backoff(attempt);
            attempt = attempt.saturating_add(1);
            if !self.outage_logged {
                self.outage_logged = true;
                tracing::warn!(url = %url, error = %end, "Redis registry unreachable: serving the last known node set; reconnecting with backoff");
            } else {
                tracing::debug!(url = %url, error = %end, ?delay, "Redis registry still unreachable");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Connect, subscribe, read everything, then follow messages, resyncs and expiries
    /// until something fails.
    async fn session(&mut self, client: &redis::Client, url: &str) -> SessionEnd {
        match self.session_inner(client, url).await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn session_inner(
        &mut self,
        client: &redis::Client,
        url: &str,
    ) -> Result<std::convert::Infallible, SessionEnd> {
        let mut con = within(
            CONNECT_TIMEOUT + COMMAND_TIMEOUT,
            "connecting",
            client.get_multiplexed_async_connection_with_config(&connection_config()),
        )
        .await?;
        let pubsub = within(
            CONNECT_TIMEOUT + COMMAND_TIMEOUT,
            "connecting for pub/sub",
            client.get_async_pubsub(),
        )
        .await?;
        let (mut sink, mut stream) = pubsub.split();
        within(
            COMMAND_TIMEOUT,
            "SUBSCRIBE",
            sink.subscribe(&self.config.channel),
        )
        .await?;
        self.pools.mark_unchanged();
        self.read(&mut con, Dirty::All).await?;

        self.metrics.redis_connected.set(1);
        self.outage_logged = false;
        tracing::info!(url = %url, channel = %self.config.channel, "connected to the Redis registry");
        if let Some(tx) = self.initial.take() {
            let _ = tx.send(());
        }

        let period = self
            .config
            .resync_interval
            .0
            .max(Duration::from_millis(100));
        let mut resync = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_expiry = self.expiry.values().min().copied();
            let expiry_sleep = async {
                match next_expiry {
                    Some(t) => {
                        let wait = t.saturating_sub(unix_ms()) + 1;
                        tokio::time::sleep(Duration::from_millis(wait)).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        return Err(SessionEnd::SubscriptionClosed);
                    };
                    let mut dirty = Dirty::None;
                    self.note_message(msg.get_payload_bytes(), &mut dirty);
                    // Coalesce: everything already received is covered by one read.
                    while let Some(Some(msg)) = stream.next().now_or_never() {
                        self.note_message(msg.get_payload_bytes(), &mut dirty);
                    }
                    self.read(&mut con, dirty).await?;
                }
                changed = self.pools.changed() => {
                    if changed.is_err() {
                        return Err(SessionEnd::Closed);
                    }
                    self.read(&mut con, Dirty::All).await?;
                }
                _ = resync.tick() => {
                    // The subscription connection must be alive too, or messages are lost.
                    within(COMMAND_TIMEOUT, "PING on the subscription", sink.ping::<redis::Value>()).await?;
                    self.read(&mut con, Dirty::All).await?;
                }
                _ = expiry_sleep => {
                    // Re-read before dropping: the owner may have written a new expiry
                    // (a heartbeat) without publishing.
                    let now = unix_ms();
                    let mut dirty = Dirty::None;
                    for (pool, t) in &self.expiry {
                        if *t <= now {
                            dirty.add(pool);
                        }
                    }
                    self.read(&mut con, dirty).await?;
                }
            }
        }
    }

    fn note_message(&mut self, payload: &[u8], dirty: &mut Dirty) {
        let name = String::from_utf8_lossy(payload);
        if name == "*" {
            *dirty = Dirty::All;
            return;
        }
        if self.pools.borrow().iter().any(|p| *p == name) {
            dirty.add(&name);
            return;
        }
        self.metrics
            .registry_updates_total
            .with_label_values(&[result::UNKNOWN_POOL])
            .inc();
        if self.unknown_noted.len() < MAX_UNKNOWN_NOTED
            && self.unknown_noted.insert(name.to_string())
        {
            tracing::warn!(pool = %name, channel = %self.config.channel, "registry message names a pool that is not in the config; ignored");
        } else {
            tracing::debug!(pool = %name, "registry message for an unknown pool ignored");
        }
    }

    /// HGETALL the dirty pools in one pipeline, then send the pools whose node set changed.
    async fn read(
        &mut self,
        con: &mut redis::aio::MultiplexedConnection,
        dirty: Dirty,
    ) -> Result<(), SessionEnd> {
        let configured = Arc::clone(&self.pools.borrow());
        let pools: Vec<String> = match dirty {
            Dirty::None => return Ok(()),
            Dirty::All => configured.iter().cloned().collect(),
            Dirty::Some(s) => s.into_iter().filter(|p| configured.contains(p)).collect(),
        };
        // Forget pools that left the config.
        self.raw.retain(|p, _| configured.contains(p));
        self.expiry.retain(|p, _| configured.contains(p));
        self.sent.retain(|p, _| configured.contains(p));
        self.noted.retain(|(p, _, _)| configured.contains(p));
        self.not_a_hash.retain(|p| configured.contains(p));
        if pools.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        // Per-command results: a key that is not a hash spoils only its own pool.
        pipe.ignore_errors();
        for p in &pools {
            pipe.hgetall(pool_key(&self.config.key_prefix, p));
        }
        let hashes: Vec<redis::RedisResult<HashMap<Vec<u8>, Vec<u8>>>> =
            within(COMMAND_TIMEOUT, "HGETALL", pipe.query_async(con)).await?;
        for (pool, hash) in pools.iter().zip(hashes) {
            let hash = match hash {
                Ok(h) => h,
                Err(e) if e.code() == Some("WRONGTYPE") => {
                    // Someone stored something else under the key: keep the pool's last
                    // known entries rather than dropping them, and say so once.
                    let key = pool_key(&self.config.key_prefix, pool);
                    if self.not_a_hash.insert(pool.clone()) {
                        self.metrics
                            .registry_updates_total
                            .with_label_values(&[result::INVALID])
                            .inc();
                        tracing::warn!(pool = %pool, key = %key, "the registry key is not a hash; keeping the pool's last known registered nodes");
                    }
                    continue;
                }
                // LOADING, READONLY, ...: the server cannot answer now; retry as for an outage.
                Err(e) => return Err(SessionEnd::Redis(e)),
            };
            let hash = hash
                .into_iter()
                .map(|(f, v)| {
                    (
                        String::from_utf8_lossy(&f).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect();
            self.not_a_hash.remove(pool);
            self.raw.insert(pool.clone(), hash);
        }
        let all = !self.synced_once;
        let to_send: Vec<String> = if all {
            configured.iter().cloned().collect()
        } else {
            pools
        };
        self.evaluate_and_send(&to_send, all).await
    }

    /// Judge the entries of `pools` (as last read) now, and send the node sets that
    /// changed (every one of them when `all`).
    async fn evaluate_and_send(&mut self, pools: &[String], all: bool) -> Result<(), SessionEnd> {
        let now = unix_ms();
        let mut update = Vec::new();
        let mut unchanged = 0u64;
        for pool in pools {
            let nodes = self.evaluate(pool, now);
            let prev = self.sent.get(pool);
            if all || prev != Some(&nodes) {
                log_change(pool, prev.map(Vec::as_slice).unwrap_or(&[]), &nodes);
                self.sent.insert(pool.clone(), nodes.clone());
                update.push((pool.clone(), nodes));
            } else {
                unchanged += 1;
            }
        }
        self.synced_once = true;
        let counter = &self.metrics.registry_updates_total;
        counter
            .with_label_values(&[result::UNCHANGED])
            .inc_by(unchanged);
        if update.is_empty() {
            return Ok(());
        }
        counter
            .with_label_values(&[result::APPLIED])
            .inc_by(update.len() as u64);
        let update = RegistryUpdate {
            generation: self.generation,
            pools: update,
        };
        self.tx.send(update).await.map_err(|_| SessionEnd::Closed)
    }

    /// The valid, unexpired nodes of `pool`, sorted by address; logs and counts each bad or
    /// expired entry once, and records the pool's next expiry.
    fn evaluate(&mut self, pool: &str, now: u64) -> Vec<RegistryNode> {
        let empty = HashMap::new();
        let raw = self.raw.get(pool).unwrap_or(&empty);
        let mut nodes = Vec::with_capacity(raw.len());
        let mut next_expiry: Option<u64> = None;
        // Entries no longer in the hash may be logged again if they come back.
        self.noted
            .retain(|(p, f, v)| p != pool || raw.get(f) == Some(v));
        for (field, value) in raw {
            match judge(field, value, now) {
                Verdict::Node(node, exp) => {
                    if let Some(t) = exp {
                        next_expiry = Some(next_expiry.map_or(t, |n| n.min(t)));
                    }
                    nodes.push(node);
                }
                Verdict::Expired(t) => {
                    if self
                        .noted
                        .insert((pool.to_string(), field.clone(), value.clone()))
                    {
                        self.metrics
                            .registry_updates_total
                            .with_label_values(&[result::EXPIRED])
                            .inc();
                        tracing::info!(pool = %pool, node = %field, expires_at_ms = t, "registry entry expired; ignored");
                    }
                }
                Verdict::Invalid(reason) => {
                    if self
                        .noted
                        .insert((pool.to_string(), field.clone(), value.clone()))
                    {
                        self.metrics
                            .registry_updates_total
                            .with_label_values(&[result::INVALID])
                            .inc();
                        tracing::warn!(
                            pool = %pool,
                            key = %pool_key(&self.config.key_prefix, pool),
                            field = %field,
                            value = %value,
                            %reason,
                            "invalid registry entry skipped (the other entries still apply)"
                        );
                    }
                }
            }
        }
        match next_expiry {
            Some(t) => {
                self.expiry.insert(pool.to_string(), t);
            }
            None => {
                self.expiry.remove(pool);
            }
        }
        nodes.sort_by(|a, b| a.addr.cmp(&b.addr));
        nodes
    }
}

fn log_change(pool: &str, before: &[RegistryNode], after: &[RegistryNode]) {
    let added: Vec<String> = after
        .iter()
        .filter(|n| !before.contains(n))
        .map(|n| format!("{}*{}", n.addr, n.weight))
        .collect();
    let removed: Vec<&str> = before
        .iter()
        .filter(|n| !after.iter().any(|a| a.addr == n.addr))
        .map(|n| n.addr.as_str())
        .collect();
    if added.is_empty() && removed.is_empty() {
        return;
    }
    tracing::info!(
        pool = %pool,
        nodes = after.len(),
        added = %added.join(","),
        removed = %removed.join(","),
        "registry nodes changed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        for ok in [
            "10.0.0.7:8080",
            "backend.internal:443",
            "[::1]:80",
            "[2001:db8::1]:65535",
            "a:1",
            "my_host-1.example.com:9000",
        ] {
            assert_eq!(validate_addr(ok), Ok(()), "{ok}");
        }
        for bad in [
            "10.0.0.7",
            ":8080",
            "10.0.0.7:0",
            "10.0.0.7:65536",
            "10.0.0.7:-1",
            "10.0.0.7:",
            "10.0.0.7:80a",
            "::1:80",
            "[::1]80",
            // Regression (issue 7): these passed here but not as a static node in the
            // config; both now use the config's check.
            "10.0.0.7:+80",
            "256.1.1.1:80",
            "a..b:80",
            "[nothost]:80",
            "bad host:80",
            "http://x:80",
            "",
        ] {
            assert!(validate_addr(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn values() {
        assert_eq!(
            parse_value("{}"),
            Ok(EntryValue {
                weight: 1,
                expires_at_ms: None
            })
        );
        assert_eq!(
            parse_value(r#"{"weight":2,"expires_at_ms":1732312345000,"owner":"x"}"#),
            Ok(EntryValue {
                weight: 2,
                expires_at_ms: Some(1732312345000)
            })
        );
        assert_eq!(
            parse_value(r#"{"weight":1000}"#).map(|v| v.weight),
            Ok(1000)
        );
        for bad in [
            "",
            "{",
            "[]",
            "1",
            r#"{"weight":0}"#,
            r#"{"weight":1001}"#,
            r#"{"weight":-1}"#,
            r#"{"weight":"2"}"#,
            r#"{"weight":1.5}"#,
            r#"{"expires_at_ms":"soon"}"#,
        ] {
            assert!(parse_value(bad).is_err(), "{bad:?} should be rejected");
        }
        let v = EntryValue {
            weight: 3,
            expires_at_ms: Some(42),
        };
        assert_eq!(parse_value(&v.to_json()), Ok(v));
    }

    #[test]
    fn judging_entries() {
        assert!(matches!(
            judge("10.0.0.1:80", r#"{"expires_at_ms":100}"#, 100),
            Verdict::Expired(100)
        ));
        assert!(matches!(
            judge("10.0.0.1:80", r#"{"expires_at_ms":101}"#, 100),
            Verdict::Node(_, Some(101))
        ));
        assert!(matches!(judge("nope", "{}", 0), Verdict::Invalid(_)));
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://:s3cret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(
            redact_url("rediss://user:s3cret@host/0"),
            "rediss://user:***@host/0"
        );
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        assert_eq!(redact_url("redis://tok@host"), "redis://***@host");
    }

    #[test]
    fn backoff_is_capped_full_jitter() {
        for attempt in 0..40 {
            let d = backoff(attempt);
            let bound = (BACKOFF_START * 2u32.pow(attempt.min(16))).min(BACKOFF_CAP);
            assert!(d <= bound, "attempt {attempt}: {d:?} > {bound:?}");
        }
        assert!(backoff(0) <= Duration::from_millis(100));
        assert!(backoff(100) <= Duration::from_secs(5));
    }

    #[test]
    fn keys() {
        assert_eq!(pool_key("switchyard", "web"), "switchyard:pool:web");
    }
}
