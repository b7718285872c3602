//! The registry subscriber: the task that owns the Redis connections of one `redis`
//! section, reads the pools' hashes and sends the supervisor every node set that changed.
//!
//! It keeps a dedicated pub/sub connection (SUBSCRIBE `channel`) and a command connection
//! (HGETALL). It is the only reader, and it reads one batch at a time, so an older read of
//! a pool can never overwrite a newer one. It keeps the raw hash of each configured pool,
//! judges the entries ([`crate::control::registry::protocol::judge`]) and sends the full,
//! effective node set of every pool whose set changed ([`RegistryUpdate`]). When it reads,
//! how it rides out an outage and what it counts: see the folder's `mod.rs`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt as _, StreamExt as _};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::balance::build::RegistryNode;
use crate::config::RedisConfig;
use crate::control::registry::protocol::{
    connection_config, judge, open_client, pool_key, redact_url, Verdict, COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
};
use crate::metrics::{Metrics, RegistryResult};
use crate::util::clock::unix_ms;
use crate::util::random;

/// First reconnect delay bound; doubles per failed attempt.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Largest reconnect delay bound.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// A session that lasted this long resets the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(5);
/// Distinct unknown pool names remembered for log-once (beyond that each is logged at debug).
const MAX_UNKNOWN_NOTED: usize = 1024;

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
    /// Which subscriber sent it (see [`crate::control::registry::RegistryHandle`]).
    pub generation: u64,
    pub pools: Vec<(String, Vec<RegistryNode>)>,
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

/// The registry subscriber task.
pub(super) struct Subscriber {
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
    /// A subscriber for `config` reading `pools`, sending on `tx` (tagged `generation`) and
    /// saying on `initial` when its first attempt is over.
    pub(super) fn new(
        generation: u64,
        config: RedisConfig,
        pools: watch::Receiver<Arc<Vec<String>>>,
        tx: mpsc::Sender<RegistryUpdate>,
        metrics: Metrics,
        initial: oneshot::Sender<()>,
    ) -> Subscriber {
        Subscriber {
            generation,
            config,
            pools,
            tx,
            metrics,
            raw: HashMap::new(),
            expiry: HashMap::new(),
            sent: HashMap::new(),
            synced_once: false,
            noted: HashSet::new(),
            unknown_noted: HashSet::new(),
            not_a_hash: HashSet::new(),
            initial: Some(initial),
            outage_logged: false,
        }
    }

    pub(super) async fn run(mut self, stop: CancellationToken) {
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
            self.metrics.registry_updates(RegistryResult::Error, 1);
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
            .registry_updates(RegistryResult::UnknownPool, 1);
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
                        self.metrics.registry_updates(RegistryResult::Invalid, 1);
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
        self.metrics
            .registry_updates(RegistryResult::Unchanged, unchanged);
        if update.is_empty() {
            return Ok(());
        }
        self.metrics
            .registry_updates(RegistryResult::Applied, update.len() as u64);
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
                        self.metrics.registry_updates(RegistryResult::Expired, 1);
                        tracing::info!(pool = %pool, node = %field, expires_at_ms = t, "registry entry expired; ignored");
                    }
                }
                Verdict::Invalid(reason) => {
                    if self
                        .noted
                        .insert((pool.to_string(), field.clone(), value.clone()))
                    {
                        self.metrics.registry_updates(RegistryResult::Invalid, 1);
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
    fn backoff_is_capped_full_jitter() {
        for attempt in 0..40 {
            let d = backoff(attempt);
            let bound = (BACKOFF_START * 2u32.pow(attempt.min(16))).min(BACKOFF_CAP);
            assert!(d <= bound, "attempt {attempt}: {d:?} > {bound:?}");
        }
        assert!(backoff(0) <= Duration::from_millis(100));
        assert!(backoff(100) <= Duration::from_secs(5));
    }
}
