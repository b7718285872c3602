//! Semantic checks: everything a well-typed config can still get wrong.
//!
//! Why this is separate from the schema: serde can say "this is not a duration", but not
//! "this route points at a pool that does not exist" or "two listeners bind the same port".
//! These checks run on the typed [`Config`] and collect *every* problem (never stopping at
//! the first), each with the key path it is about; `mod.rs` turns paths into line:column
//! through `Positions`. Messages say what is wrong and what to write instead.
//!
//! Decisions where the design leaves room (documented in the README):
//! - listener `bind` must be a literal `IP:PORT` (no host names: binding must not depend on
//!   DNS); port 0 is accepted (the OS picks a port, handy in tests) and never clashes;
//! - a pool without static nodes is fine only when a `redis` registry can add nodes;
//! - `consistent_hash` without `hash_key` hashes the client IP; `hash_key` on another
//!   strategy is an error because it would silently do nothing;
//! - a health-check `timeout` longer than its `interval` is an error (probes would overlap);
//! - `retries.attempts` is capped at 10, `workers` at 1024;
//! - `max_header_bytes` must lie in 8KiB..=16MiB: hyper's HTTP/1 parser refuses a buffer
//!   below 8192 bytes (`MINIMUM_MAX_BUFFER_SIZE`, it panics), and more than 16MiB of headers
//!   is an attack rather than a request;
//! - `shutdown_timeout: 0s` is allowed and means "exit without waiting for in-flight requests";
//! - a config without routes is allowed (every request gets 404), as is a pool no route uses
//!   (Redis registrations and the admin API can still see it);
//! - certificate, key and CA files must be regular files, and are loaded and checked here
//!   through `crate::tls::certs` (PEM, keys matching their certificates, usable CA
//!   certificates); what loaded is returned with the config ([`TlsMaterial`]) and is what
//!   the listeners and pools then use — the files are not read a second time.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use strategies::Kind;

use super::model::{
    Config, HashKey, HealthCheckConfig, HealthProtocol, ListenerConfig, OutlierConfig, PoolConfig,
    UpstreamProtocol, UpstreamTlsConfig,
};
use super::tree::{index_path, key_path, Positions, Target};
use super::values::{check_host_pattern, check_node_addr, check_path_prefix, parse_bind};
use crate::tls::certs::{self, CaFile, CertSource, Certificates};

/// Highest node weight (the strategies' tables are sized for it).
pub const MAX_WEIGHT: u32 = 1000;
/// Smallest `max_header_bytes`: hyper's HTTP/1 minimum read buffer.
pub const MIN_HEADER_BYTES: u64 = 8 * 1024;
/// Largest `max_header_bytes`.
pub const MAX_HEADER_BYTES: u64 = 16 * 1024 * 1024;
/// Most extra attempts per request.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;
/// Most tokio worker threads.
pub const MAX_WORKERS: usize = 1024;

/// One semantic problem, by key path.
#[derive(Debug, Clone)]
pub(crate) struct Issue {
    /// Key path of the offending key or value, e.g. `routes[2].pool`.
    pub path: String,
    pub target: Target,
    pub message: String,
    /// Paths this problem depends on. When an earlier type error dropped or invented content
    /// at or around one of them, the problem may be a consequence of that error and is not
    /// reported. Always contains `path`.
    pub scope: Vec<String>,
}

impl Issue {
    fn depends_on(&mut self, path: impl Into<String>) -> &mut Issue {
        self.scope.push(path.into());
        self
    }
}

/// Resolve a path from the config against the config file's directory.
pub(crate) fn resolve_path(base_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// The certificates and CA files a config names, loaded and checked by validation: what
/// the listeners and pools are built from (nothing reads those files a second time).
#[derive(Debug, Clone, Default)]
pub struct TlsMaterial {
    /// Per listener, in config order: its certificate list (`None` for a plain listener).
    pub listeners: Vec<Option<Arc<Certificates>>>,
    /// Per pool with a `tls.ca_file`: the CA file.
    pub ca_files: BTreeMap<String, Arc<CaFile>>,
}

/// Check `cfg`; `base_dir` is where relative file paths resolve. Returns every problem, and
/// the TLS files the config names as they were loaded for the checks.
pub(crate) fn validate(
    cfg: &Config,
    pos: &Positions,
    base_dir: &Path,
) -> (Vec<Issue>, TlsMaterial) {
    let mut v = Checker {
        pos,
        base_dir,
        issues: Vec::new(),
        binds: Vec::new(),
        tls: TlsMaterial::default(),
    };
    v.listeners(cfg);
    v.admin(cfg);
    v.routes(cfg);
    for (name, pool) in &cfg.pools {
        v.pool(cfg, name, pool);
    }
    v.redis(cfg);
    v.limits(cfg);
    v.rest(cfg);
    (v.issues, v.tls)
}

struct Checker<'a> {
    pos: &'a Positions,
    base_dir: &'a Path,
    issues: Vec<Issue>,
    /// Addresses bound so far: (address, who, key path of the bind).
    binds: Vec<(SocketAddr, String, String)>,
    /// The TLS files loaded so far.
    tls: TlsMaterial,
}

fn dur(d: Duration) -> String {
    format!("{d:?}")
}

fn size(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    if n >= MIB && n % MIB == 0 {
        format!("{}MiB", n / MIB)
    } else if n >= KIB && n % KIB == 0 {
        format!("{}KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

impl Checker<'_> {
    fn report(&mut self, path: &str, target: Target, message: String) -> &mut Issue {
        self.issues.push(Issue {
            path: path.to_string(),
            target,
            message,
            scope: vec![path.to_string()],
        });
        let last = self.issues.len() - 1;
        &mut self.issues[last]
    }

    fn value(&mut self, path: &str, message: impl Into<String>) -> &mut Issue {
        self.report(path, Target::Value, message.into())
    }

    fn key(&mut self, path: &str, message: impl Into<String>) -> &mut Issue {
        self.report(path, Target::Key, message.into())
    }

    /// "listeners[0] (line 3)", for pointing at an earlier definition.
    fn earlier(&self, path: &str) -> String {
        format!("{} (line {})", self.pos.display(path), self.pos.line(path))
    }

    /// A duration that must be positive.
    fn positive(&mut self, path: &str, d: Duration, what: &str) {
        if d.is_zero() {
            self.value(
                path,
                format!("{what} must be greater than 0s, e.g. 1s or 500ms"),
            );
        }
    }

    fn at_least_one(&mut self, path: &str, n: u32, why: &str) {
        if n == 0 {
            self.value(path, format!("must be at least 1 ({why})"));
        }
    }

    fn percent(&mut self, path: &str, n: u32) {
        if n > 100 {
            self.value(path, format!("{n} is not a percentage: expected 0..=100"));
        }
    }

    /// A file the process will read at start: it must exist and be readable. Returns the
    /// resolved path when it is.
    fn readable_file(&mut self, path: &str, file: &Path, what: &str) -> Option<PathBuf> {
        if file.as_os_str().is_empty() {
            self.value(path, format!("the {what} path must not be empty"));
            return None;
        }
        let resolved = resolve_path(self.base_dir, file);
        let hint = if file.is_relative() {
            " (relative paths resolve against the config file's directory)"
        } else {
            ""
        };
        // A FIFO would block the open (and `switchyard check`) until a writer came; a device
        // such as /dev/zero would be read without end: certs::check_file refuses both.
        if let Err(problem) = certs::check_file(&resolved) {
            self.value(
                path,
                format!(
                    "cannot read {what} `{}`: {problem}{hint}",
                    resolved.display()
                ),
            );
            return None;
        }
        Some(resolved)
    }

    /// Parse a bind address and check it against every earlier one.
    fn bind(&mut self, path: &str, text: &str, owner: String) {
        let addr = match parse_bind(text) {
            Ok(a) => a,
            Err(e) => {
                self.value(path, e.to_string());
                return;
            }
        };
        if addr.port() != 0 {
            let clash = self.binds.iter().find(|(other, _, _)| {
                other.port() == addr.port()
                    && (*other == addr
                        || (other.is_ipv4() == addr.is_ipv4()
                            && (other.ip().is_unspecified() || addr.ip().is_unspecified())))
            });
            if let Some((other, other_owner, other_path)) = clash.cloned() {
                let msg = if other == addr {
                    format!(
                        "{addr} is already bound by {other_owner} at {}; every listener and \
                         the admin server need their own address",
                        self.earlier(&other_path)
                    )
                } else {
                    format!(
                        "{addr} overlaps {other} bound by {other_owner} at {}: a wildcard \
                         address takes the port on every interface; use another port",
                        self.earlier(&other_path)
                    )
                };
                self.value(path, msg).depends_on(other_path);
            }
        }
        self.binds.push((addr, owner, path.to_string()));
    }

    fn listeners(&mut self, cfg: &Config) {
        if cfg.listeners.is_empty() {
            self.value(
                "listeners",
                "no listeners are configured, so nothing would accept traffic; add one, e.g. \
                 `listeners: [{name: http, bind: 0.0.0.0:8080}]`",
            );
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, l) in cfg.listeners.iter().enumerate() {
            self.listener(i, l, &mut names);
        }
    }

    fn listener<'c>(
        &mut self,
        i: usize,
        l: &'c ListenerConfig,
        names: &mut HashMap<&'c str, usize>,
    ) {
        let p = index_path("listeners", i);
        let name_p = key_path(&p, "name");
        if l.name.trim().is_empty() {
            self.value(
                &name_p,
                "listener name must not be empty; it labels this listener's metrics and logs",
            );
        } else if let Some(&j) = names.get(l.name.as_str()) {
            let first = index_path("listeners", j);
            let msg = format!(
                "listener name `{}` is already used by {}; names must be unique",
                l.name,
                self.earlier(&first)
            );
            self.value(&name_p, msg).depends_on(first);
        } else {
            names.insert(&l.name, i);
        }
        self.bind(
            &key_path(&p, "bind"),
            &l.bind,
            format!("listener `{}`", l.name),
        );
        if let Some(tls) = &l.tls {
            let tp = key_path(&p, "tls");
            let cp = key_path(&tp, "certificates");
            if tls.certificates.is_empty() {
                self.value(
                    &cp,
                    "a TLS listener needs at least one certificate: add \
                     `certificates: [{cert: FILE, key: FILE}]`, or remove `tls` for plain HTTP",
                );
            }
            let mut pairs = Vec::with_capacity(tls.certificates.len());
            for (k, c) in tls.certificates.iter().enumerate() {
                let ip = index_path(&cp, k);
                let cert = self.readable_file(&key_path(&ip, "cert"), &c.cert, "certificate file");
                let key = self.readable_file(&key_path(&ip, "key"), &c.key, "private key file");
                // Both readable: load them, so `check` catches a broken or mismatched pair,
                // and the listener serves what was checked.
                if let (Some(cert), Some(key)) = (cert, key) {
                    match certs::load_pair(&CertSource { cert, key }) {
                        Ok(pair) => pairs.push(pair),
                        Err(e) => {
                            self.value(&key_path(&ip, "cert"), e.to_string());
                        }
                    }
                }
            }
            let loaded = (pairs.len() == tls.certificates.len())
                .then(|| Certificates::from_pairs(pairs).ok())
                .flatten();
            self.tls.listeners.push(loaded.map(Arc::new));
        } else {
            self.tls.listeners.push(None);
        }
    }

    fn admin(&mut self, cfg: &Config) {
        let Some(admin) = &cfg.admin else { return };
        self.bind("admin.bind", &admin.bind, "the admin server".to_string());
        if let Some(var) = &admin.token_env {
            if var.is_empty() || var.contains(['=', '\0']) {
                self.value(
                    "admin.token_env",
                    "token_env must be the name of an environment variable, such as \
                     SWITCHYARD_ADMIN_TOKEN; omit it to refuse all mutating admin calls",
                );
            }
        }
    }

    fn routes(&mut self, cfg: &Config) {
        for (i, r) in cfg.routes.iter().enumerate() {
            let p = index_path("routes", i);
            if let Some(host) = &r.host {
                if let Err(e) = check_host_pattern(host) {
                    self.value(&key_path(&p, "host"), e.to_string());
                }
            }
            if let Some(prefix) = &r.path_prefix {
                if let Err(e) = check_path_prefix(prefix) {
                    self.value(&key_path(&p, "path_prefix"), e.to_string());
                }
            }
            if !cfg.pools.contains_key(&r.pool) {
                let msg = if cfg.pools.is_empty() {
                    format!(
                        "route points at unknown pool `{}`; no pools are defined: add one \
                         under `pools:`",
                        r.pool
                    )
                } else {
                    let names: Vec<&str> = cfg.pools.keys().map(String::as_str).collect();
                    format!(
                        "route points at unknown pool `{}`; defined pools: {}",
                        r.pool,
                        names.join(", ")
                    )
                };
                self.value(&key_path(&p, "pool"), msg)
                    .depends_on(key_path("pools", &r.pool));
            }
        }
    }

    /// One pool: its name, nodes, hash key, health check, outlier detection, retries,
    /// timeouts, limits and TLS, each checked in its own step.
    fn pool(&mut self, cfg: &Config, name: &str, pool: &PoolConfig) {
        let p = key_path("pools", name);
        self.pool_name(&p, name);
        self.pool_nodes(cfg, &p, name, pool);
        if let Some(key) = &pool.hash_key {
            self.hash_key(&p, key, pool.strategy);
        }
        if let Some(hc) = &pool.health_check {
            self.health_check(&key_path(&p, "health_check"), hc, pool.upstream_protocol);
        }
        if let Some(od) = &pool.outlier_detection {
            self.outlier_detection(&key_path(&p, "outlier_detection"), od);
        }
        self.pool_limits(&p, pool);
        if let Some(tls) = &pool.tls {
            self.upstream_tls(&key_path(&p, "tls"), name, tls);
        }
    }

    fn pool_name(&mut self, p: &str, name: &str) {
        if name.is_empty() {
            self.key(p, "pool name must not be empty");
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            self.key(
                p,
                format!(
                    "pool name `{name}` may only contain letters, digits, `-`, `_` and `.`: it \
                     appears in admin URLs, Redis keys and metric labels"
                ),
            );
        }
    }

    /// The static nodes: addresses, no duplicates, weights; none at all only with a registry.
    fn pool_nodes(&mut self, cfg: &Config, p: &str, name: &str, pool: &PoolConfig) {
        let nodes_p = key_path(p, "nodes");
        if pool.nodes.is_empty() && cfg.redis.is_none() {
            self.key(
                p,
                format!(
                    "pool {name} has no nodes and no redis registry is configured; add nodes \
                     or a redis section"
                ),
            )
            .scope = vec![nodes_p.clone(), "redis".to_string()];
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (j, node) in pool.nodes.iter().enumerate() {
            let np = index_path(&nodes_p, j);
            let addr_p = key_path(&np, "addr");
            match check_node_addr(&node.addr) {
                Err(e) => {
                    self.value(&addr_p, e.to_string());
                }
                Ok(()) => {
                    if let Some(&first) = seen.get(&node.addr.to_ascii_lowercase()) {
                        let first = index_path(&nodes_p, first);
                        let msg = format!(
                            "node {} is listed twice in pool {name} (first as {}); remove one",
                            node.addr,
                            self.earlier(&first)
                        );
                        self.value(&addr_p, msg).depends_on(first);
                    } else {
                        seen.insert(node.addr.to_ascii_lowercase(), j);
                    }
                }
            }
            if !(1..=MAX_WEIGHT).contains(&node.weight) {
                let why = if node.weight == 0 {
                    "; a node with weight 0 would never get traffic: remove it, or drain it \
                     through the admin API"
                } else {
                    ""
                };
                self.value(
                    &key_path(&np, "weight"),
                    format!(
                        "weight {} is out of range: expected 1..={MAX_WEIGHT}{why}",
                        node.weight
                    ),
                );
            }
        }
    }

    /// `hash_key`: only with `consistent_hash`, and a valid header or cookie name.
    fn hash_key(&mut self, p: &str, key: &HashKey, strategy: Kind) {
        let hp = key_path(p, "hash_key");
        if strategy != Kind::ConsistentHash {
            let strategy = strategy.as_str();
            self.value(
                &hp,
                format!(
                    "hash_key only applies to strategy consistent_hash (this pool uses \
                     {strategy}); remove it or set `strategy: consistent_hash`"
                ),
            )
            .depends_on(key_path(p, "strategy"));
        }
        match key {
            HashKey::Header(h) if !is_token(h) => {
                self.value(&hp, format!("`{h}` is not a valid HTTP header name"));
            }
            HashKey::Cookie(c) if !is_token(c) => {
                self.value(&hp, format!("`{c}` is not a valid cookie name"));
            }
            _ => {}
        }
    }

    /// `health_check` (at key path `hp`): the fields of its protocol, a path, a timeout no
    /// longer than the interval, thresholds of at least 1.
    fn health_check(&mut self, hp: &str, hc: &HealthCheckConfig, upstream: UpstreamProtocol) {
        match hc.protocol {
            HealthProtocol::Grpc => {
                for key in ["path", "expect_status"] {
                    let kp = key_path(hp, key);
                    if self.pos.has(&kp) {
                        self.value(
                            &kp,
                            format!(
                                "`{key}` applies to `protocol: http` checks; a `grpc` check \
                                 asks grpc.health.v1.Health/Check for `grpc_service` instead"
                            ),
                        );
                    }
                }
                if upstream != UpstreamProtocol::H2 {
                    self.value(
                        &key_path(hp, "protocol"),
                        "gRPC health checks need HTTP/2 to the nodes: set the pool's \
                         `upstream_protocol: h2`",
                    );
                }
            }
            HealthProtocol::Http => {
                let kp = key_path(hp, "grpc_service");
                if hc.grpc_service.is_some() {
                    self.value(
                        &kp,
                        "`grpc_service` applies to `protocol: grpc` checks; add \
                         `protocol: grpc` or remove it",
                    );
                }
            }
        }
        if !hc.path.starts_with('/') {
            self.value(
                &key_path(hp, "path"),
                format!(
                    "health check path `{}` must start with `/`, e.g. /healthz",
                    hc.path
                ),
            );
        }
        let interval_p = key_path(hp, "interval");
        let timeout_p = key_path(hp, "timeout");
        self.positive(&interval_p, hc.interval.0, "interval");
        self.positive(&timeout_p, hc.timeout.0, "timeout");
        if !hc.interval.0.is_zero() && hc.timeout.0 > hc.interval.0 {
            let default = |p: &str| {
                if self.pos.has(p) {
                    ""
                } else {
                    " (the default)"
                }
            };
            let message = format!(
                "health check timeout {}{} is longer than its interval {}{}: a probe would \
                 still be running when the next one starts; make timeout <= interval",
                dur(hc.timeout.0),
                default(&timeout_p),
                dur(hc.interval.0),
                default(&interval_p),
            );
            let at = if self.pos.has(&timeout_p) {
                timeout_p.clone()
            } else {
                interval_p.clone()
            };
            self.value(&at, message)
                .depends_on(interval_p)
                .depends_on(timeout_p);
        }
        self.at_least_one(
            &key_path(hp, "healthy_threshold"),
            hc.healthy_threshold,
            "consecutive successes before a node is marked up",
        );
        self.at_least_one(
            &key_path(hp, "unhealthy_threshold"),
            hc.unhealthy_threshold,
            "consecutive failures before a node is marked down",
        );
    }

    /// `outlier_detection` (at key path `op`).
    fn outlier_detection(&mut self, op: &str, od: &OutlierConfig) {
        self.at_least_one(
            &key_path(op, "consecutive_failures"),
            od.consecutive_failures,
            "failures in a row before a node is ejected",
        );
        self.positive(
            &key_path(op, "base_ejection_time"),
            od.base_ejection_time.0,
            "base_ejection_time",
        );
        self.percent(
            &key_path(op, "max_ejection_percent"),
            od.max_ejection_percent,
        );
    }

    /// `retries`, `timeouts`, `max_connections_per_node` and `slow_start`.
    fn pool_limits(&mut self, p: &str, pool: &PoolConfig) {
        let rp = key_path(p, "retries");
        if pool.retries.attempts > MAX_RETRY_ATTEMPTS {
            self.value(
                &key_path(&rp, "attempts"),
                format!(
                    "{} retry attempts is too many: at most {MAX_RETRY_ATTEMPTS}; each extra \
                     attempt adds load to a pool that is already failing (a retry storm)",
                    pool.retries.attempts
                ),
            );
        }
        self.percent(
            &key_path(&rp, "budget_percent"),
            pool.retries.budget_percent,
        );

        let tp = key_path(p, "timeouts");
        self.positive(
            &key_path(&tp, "connect"),
            pool.timeouts.connect.0,
            "connect timeout",
        );
        self.positive(
            &key_path(&tp, "request"),
            pool.timeouts.request.0,
            "request timeout",
        );
        self.positive(&key_path(&tp, "idle"), pool.timeouts.idle.0, "idle timeout");

        if pool.max_connections_per_node == Some(0) {
            self.value(
                &key_path(p, "max_connections_per_node"),
                "must be at least 1 (0 would refuse every request); omit it for no limit",
            );
        }
        if let Some(ss) = pool.slow_start {
            if ss.0.is_zero() {
                self.value(
                    &key_path(p, "slow_start"),
                    "slow_start must be greater than 0s, e.g. 30s; omit it to disable slow start",
                );
            }
        }
    }

    /// The pool's `tls` (at key path `tp`): a server name, and its CA file loaded.
    fn upstream_tls(&mut self, tp: &str, name: &str, tls: &UpstreamTlsConfig) {
        if tls.server_name.as_deref() == Some("") {
            self.value(
                &key_path(tp, "server_name"),
                "server_name must not be empty; omit it to use each node's host name",
            );
        }
        if let Some(ca) = &tls.ca_file {
            if let Some(resolved) = self.readable_file(&key_path(tp, "ca_file"), ca, "CA file") {
                match CaFile::load(&resolved) {
                    Ok(ca) => {
                        self.tls.ca_files.insert(name.to_string(), Arc::new(ca));
                    }
                    Err(e) => {
                        self.value(&key_path(tp, "ca_file"), e.to_string());
                    }
                }
            }
        }
    }

    fn redis(&mut self, cfg: &Config) {
        let Some(r) = &cfg.redis else { return };
        let ok = ["redis://", "rediss://", "unix://", "redis+unix://"]
            .iter()
            .any(|s| r.url.len() > s.len() && r.url.starts_with(s));
        if !ok {
            // The URL may hold a password: do not echo it.
            self.value(
                "redis.url",
                "invalid Redis URL: expected redis://HOST:PORT/DB, rediss://HOST:PORT/DB for \
                 TLS, or unix:///path/to/redis.sock",
            );
        }
        if r.key_prefix.is_empty() {
            self.value(
                "redis.key_prefix",
                "key_prefix must not be empty; the default is switchyard",
            );
        }
        if r.channel.is_empty() {
            self.value(
                "redis.channel",
                "channel must not be empty; the default is switchyard:nodes",
            );
        }
        self.positive(
            "redis.resync_interval",
            r.resync_interval.0,
            "resync_interval",
        );
    }

    fn limits(&mut self, cfg: &Config) {
        let l = &cfg.limits;
        let hb = l.max_header_bytes.0;
        if hb < MIN_HEADER_BYTES {
            self.value(
                "limits.max_header_bytes",
                format!(
                    "max_header_bytes {} is too small: the HTTP/1 parser needs at least 8KiB \
                     (8192 bytes)",
                    size(hb)
                ),
            );
        } else if hb > MAX_HEADER_BYTES {
            self.value(
                "limits.max_header_bytes",
                format!(
                    "max_header_bytes {} is too large: at most 16MiB (the default is 64KiB)",
                    size(hb)
                ),
            );
        }
        if l.max_body_bytes.is_some_and(|b| b.0 == 0) {
            self.value(
                "limits.max_body_bytes",
                "max_body_bytes 0 would refuse every request body; omit it for no limit",
            );
        }
        self.positive(
            "limits.header_read_timeout",
            l.header_read_timeout.0,
            "header_read_timeout",
        );
        self.positive("limits.idle_timeout", l.idle_timeout.0, "idle_timeout");
        self.at_least_one(
            "limits.max_connections",
            l.max_connections,
            "0 would refuse every connection",
        );
    }

    fn rest(&mut self, cfg: &Config) {
        if let Some(rl) = &cfg.rate_limit {
            let rps = rl.requests_per_second;
            if !(rps.is_finite() && rps > 0.0) {
                self.value(
                    "rate_limit.requests_per_second",
                    format!("requests_per_second must be a positive number, not {rps}; omit rate_limit for no limit"),
                );
            }
            self.at_least_one(
                "rate_limit.burst",
                rl.burst,
                "the bucket's capacity; 0 would refuse every request",
            );
        }
        if cfg.access_log.path.is_empty() {
            self.value(
                "access_log.path",
                "access_log.path must not be empty: use stderr, stdout or a file path",
            );
        }
        if cfg.workers > MAX_WORKERS {
            self.value(
                "workers",
                format!(
                    "{} worker threads is too many: at most {MAX_WORKERS}; use 0 for one per CPU core",
                    cfg.workers
                ),
            );
        }
    }
}

/// HTTP token characters (RFC 9110), for header and cookie names.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Only directories were once refused, so a device or a FIFO passed
    // as a certificate or CA file (a FIFO hangs `switchyard check` in the open).
    #[test]
    fn tls_files_must_be_regular_files() {
        let dir = std::env::temp_dir();
        for (path, want) in [
            ("/dev/null", "not a regular file"),
            (dir.to_str().unwrap_or("/"), "is a directory"),
        ] {
            let yaml = format!(
                "listeners:\n  - name: https\n    bind: 127.0.0.1:0\n    tls:\n      \
                 certificates: [{{cert: '{path}', key: '{path}'}}]\n\
                 pools:\n  web:\n    nodes: [{{addr: '127.0.0.1:1'}}]\n    \
                 tls: {{ca_file: '{path}'}}\nroutes: [{{pool: web}}]\n"
            );
            let errs = crate::config::parse_str(&yaml, "t.yaml").unwrap_err().0;
            let msgs: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
            for key in ["certificates[0].cert", "certificates[0].key", "tls.ca_file"] {
                assert!(
                    msgs.iter().any(|m| m.contains(key) && m.contains(want)),
                    "{path}: no `{want}` for {key} in {msgs:#?}"
                );
            }
        }
    }

    #[test]
    fn sizes_and_durations_print_readably() {
        assert_eq!(size(64 * 1024), "64KiB");
        assert_eq!(size(16 * 1024 * 1024), "16MiB");
        assert_eq!(size(100), "100 bytes");
        assert_eq!(dur(Duration::from_millis(250)), "250ms");
        assert_eq!(dur(Duration::from_secs(2)), "2s");
    }
}
