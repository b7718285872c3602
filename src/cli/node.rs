//! `switchyard node register|deregister|list`: write and read the Redis registry
//! (`control::registry::protocol`) from the command line.
//!
//! - `register` writes the hash field and publishes the pool name in one MULTI/EXEC, so a
//!   balancer never sees the message without the entry. `--ttl` stores
//!   `expires_at_ms = now + ttl`; `--heartbeat` (needs `--ttl`) keeps writing it every ttl/3
//!   until SIGINT or SIGTERM, then deregisters and exits 0: the sidecar mode. A failed
//!   heartbeat is retried at the next tick on a new connection (the process does not exit:
//!   the entry simply expires if Redis stays unreachable longer than the ttl).
//! - `deregister` is HDEL + PUBLISH in one MULTI/EXEC.
//! - `list` prints `POOL ADDR WEIGHT EXPIRES` per node (EXPIRES: `-` or the RFC 3339 UTC time
//!   the entry expires), or a JSON array with `--json`; without `--pool` it finds the pools
//!   with SCAN (never KEYS). Entries a balancer would skip (invalid or expired) are not
//!   listed; a note about each goes to stderr.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Subcommand};
use redis::aio::MultiplexedConnection;

use crate::config::validate::MAX_WEIGHT;
use crate::config::values::NodeAddrError;
use crate::config::Dur;
use crate::control::registry::protocol::{
    connection_config, open_client, parse_entry, pool_key, redact_url, validate_addr, EntryValue,
    COMMAND_TIMEOUT, CONNECT_TIMEOUT,
};
use crate::util::clock::unix_ms;

/// The `switchyard node` subcommands.
#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Add (or update) a node in a pool and tell every balancer, in one MULTI/EXEC.
    Register(RegisterArgs),
    /// Remove a node from a pool and tell every balancer, in one MULTI/EXEC.
    Deregister(DeregisterArgs),
    /// Print the nodes registered in Redis: `POOL ADDR WEIGHT EXPIRES` per line.
    List(ListArgs),
}

/// Where the registry is.
#[derive(Args, Debug, Clone)]
pub struct RedisArgs {
    /// Redis URL: redis://[:PASSWORD@]HOST:PORT/DB, or rediss://... for TLS.
    #[arg(long = "redis", value_name = "URL")]
    pub url: String,
    /// Key prefix: the pool's hash is PREFIX:pool:POOL (the config's redis.key_prefix).
    #[arg(long, value_name = "P", default_value = "switchyard")]
    pub key_prefix: String,
}

/// One entry of the registry: what `register` and `deregister` both name.
#[derive(Args, Debug, Clone)]
pub struct EntryArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Channel to publish the pool name on (the config's redis.channel).
    #[arg(long, value_name = "C", default_value = "switchyard:nodes")]
    pub channel: String,
    /// Pool name, as in the balancers' config.
    #[arg(long, value_name = "NAME", value_parser = parse_pool)]
    pub pool: String,
    /// The node's address, HOST:PORT ([IPv6]:PORT for IPv6).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_addr)]
    pub addr: String,
}

#[derive(Args, Debug, Clone)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub entry: EntryArgs,
    /// Weight, 1 to 1000.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_weight)]
    pub weight: u32,
    /// Expire the entry this long from now (`10s`, `500ms`, `1m`): balancers ignore it after.
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub ttl: Option<Dur>,
    /// Keep re-registering every ttl/3 until SIGINT/SIGTERM, then deregister (needs --ttl).
    #[arg(long, requires = "ttl")]
    pub heartbeat: bool,
}

#[derive(Args, Debug, Clone)]
pub struct DeregisterArgs {
    #[command(flatten)]
    pub entry: EntryArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Only this pool (default: every pool found under PREFIX:pool:*).
    #[arg(long, value_name = "NAME", value_parser = parse_pool)]
    pub pool: Option<String>,
    /// Print a JSON array of {pool, addr, weight, expires_at_ms, expires} instead.
    #[arg(long)]
    pub json: bool,
}

/// A command-line argument that is not what `switchyard node` expects.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum ArgError {
    #[error("the pool name must not be empty")]
    EmptyPool,
    #[error("`*` is not a pool name (in a message it means every pool)")]
    StarPool,
    #[error(transparent)]
    Addr(#[from] NodeAddrError),
    #[error("the weight must be an integer from 1 to {MAX_WEIGHT}")]
    Weight,
    #[error("the ttl must be at least 1ms")]
    TtlTooShort,
    #[error("expected a duration such as 10s, 500ms or 1m")]
    NotADuration,
}

fn parse_pool(s: &str) -> Result<String, ArgError> {
    match s {
        "" => Err(ArgError::EmptyPool),
        "*" => Err(ArgError::StarPool),
        _ => Ok(s.to_string()),
    }
}

fn parse_addr(s: &str) -> Result<String, ArgError> {
    validate_addr(s)?;
    Ok(s.to_string())
}

fn parse_weight(s: &str) -> Result<u32, ArgError> {
    match s.parse::<u32>() {
        Ok(w) if (1..=MAX_WEIGHT).contains(&w) => Ok(w),
        _ => Err(ArgError::Weight),
    }
}

fn parse_ttl(s: &str) -> Result<Dur, ArgError> {
    match Dur::parse(s) {
        Some(d) if d.0 >= Duration::from_millis(1) => Ok(d),
        Some(_) => Err(ArgError::TtlTooShort),
        None => Err(ArgError::NotADuration),
    }
}

/// Run one `switchyard node` command on its own small runtime.
pub fn run(cmd: NodeCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        match cmd {
            NodeCommand::Register(a) if a.heartbeat => heartbeat(&a).await,
            NodeCommand::Register(a) => register(&a).await,
            NodeCommand::Deregister(a) => deregister(&a).await,
            NodeCommand::List(a) => list(&a).await,
        }
    })
}

/// Connect with the registry's timeouts, with an error that says what to check.
pub async fn connect(url: &str) -> anyhow::Result<MultiplexedConnection> {
    let shown = redact_url(url);
    let client = open_client(url).map_err(|e| {
        anyhow!(
            "invalid Redis URL {shown}: {e}; expected redis://[:PASSWORD@]HOST:PORT/DB, or \
             rediss://... for TLS"
        )
    })?;
    let con = tokio::time::timeout(
        CONNECT_TIMEOUT + COMMAND_TIMEOUT,
        client.get_multiplexed_async_connection_with_config(&connection_config()),
    )
    .await;
    match con {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => bail!(
            "cannot connect to Redis at {shown}: {e}; is redis-server running there, and are \
             the URL and password right?"
        ),
        Err(_) => bail!(
            "cannot connect to Redis at {shown}: no answer within {:?}; is redis-server running \
             and reachable?",
            CONNECT_TIMEOUT + COMMAND_TIMEOUT
        ),
    }
}

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(COMMAND_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| anyhow!("{what} failed: {e}")),
        Err(_) => bail!("{what} failed: no answer from Redis within {COMMAND_TIMEOUT:?}"),
    }
}

/// HSET + PUBLISH in one MULTI/EXEC. Returns the value written.
async fn write_entry(
    con: &mut MultiplexedConnection,
    a: &RegisterArgs,
) -> anyhow::Result<EntryValue> {
    let value = EntryValue {
        weight: a.weight,
        expires_at_ms: a.ttl.map(|t| unix_ms() + t.0.as_millis() as u64),
    };
    let key = pool_key(&a.entry.redis.key_prefix, &a.entry.pool);
    let mut pipe = redis::pipe();
    pipe.atomic()
        .hset(&key, &a.entry.addr, value.to_json())
        .ignore()
        .publish(&a.entry.channel, &a.entry.pool)
        .ignore();
    timed(
        "registering (MULTI HSET PUBLISH EXEC)",
        pipe.query_async::<()>(con),
    )
    .await?;
    Ok(value)
}

/// HDEL + PUBLISH in one MULTI/EXEC; whether the entry existed.
async fn delete_entry(con: &mut MultiplexedConnection, e: &EntryArgs) -> anyhow::Result<bool> {
    let key = pool_key(&e.redis.key_prefix, &e.pool);
    let mut pipe = redis::pipe();
    pipe.atomic()
        .hdel(&key, &e.addr)
        .publish(&e.channel, &e.pool)
        .ignore();
    let (removed,): (u64,) = timed(
        "deregistering (MULTI HDEL PUBLISH EXEC)",
        pipe.query_async(con),
    )
    .await?;
    Ok(removed > 0)
}

fn describe(a: &RegisterArgs, v: &EntryValue) -> String {
    let expires = match v.expires_at_ms {
        Some(t) => format!(", expires {}", rfc3339(t)),
        None => String::new(),
    };
    format!(
        "registered {} in pool {} (weight {}{expires})",
        a.entry.addr, a.entry.pool, a.weight
    )
}

async fn register(a: &RegisterArgs) -> anyhow::Result<()> {
    let mut con = connect(&a.entry.redis.url).await?;
    let v = write_entry(&mut con, a).await?;
    out(&describe(a, &v))
}

async fn deregister(a: &DeregisterArgs) -> anyhow::Result<()> {
    let mut con = connect(&a.entry.redis.url).await?;
    if delete_entry(&mut con, &a.entry).await? {
        out(&format!(
            "deregistered {} from pool {}",
            a.entry.addr, a.entry.pool
        ))
    } else {
        out(&format!(
            "{} was not registered in pool {} (nothing to remove)",
            a.entry.addr, a.entry.pool
        ))
    }
}

/// The sidecar: register, re-register every ttl/3, deregister on SIGINT/SIGTERM.
async fn heartbeat(a: &RegisterArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let ttl = a.ttl.map(|t| t.0).context("--heartbeat needs --ttl")?;
    let every = (ttl / 3).max(Duration::from_millis(10));
    // Installed first, so a signal at any point after start-up deregisters.
    let mut term = signal(SignalKind::terminate()).context("cannot install a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install a SIGINT handler")?;

    let mut first = connect(&a.entry.redis.url).await?;
    let v = write_entry(&mut first, a).await?;
    let mut con = Some(first);
    out(&format!(
        "{}; heartbeat every {every:?} until SIGINT/SIGTERM",
        describe(a, &v)
    ))?;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tokio::time::sleep(every) => {}
        }
        // Bounded, so a hung Redis cannot hold the next heartbeat (or the signal) back long.
        let attempt = tokio::time::timeout(every.max(Duration::from_secs(1)), async {
            let c = match &mut con {
                Some(c) => c,
                None => con.insert(connect(&a.entry.redis.url).await?),
            };
            write_entry(c, a).await
        })
        .await
        .unwrap_or_else(|_| Err(anyhow!("no answer from Redis")));
        match attempt {
            Ok(_) if failing => {
                failing = false;
                tracing::info!(pool = %a.entry.pool, node = %a.entry.addr, "heartbeat written again");
            }
            Ok(_) => {}
            Err(e) => {
                con = None;
                failing = true;
                tracing::warn!(pool = %a.entry.pool, node = %a.entry.addr, error = %format!("{e:#}"), "heartbeat failed; retrying at the next tick (the entry expires if this lasts longer than the ttl)");
            }
        }
    }

    let removed = tokio::time::timeout(CONNECT_TIMEOUT + COMMAND_TIMEOUT, async {
        let mut c = match con.take() {
            Some(c) => c,
            None => connect(&a.entry.redis.url).await?,
        };
        delete_entry(&mut c, &a.entry).await
    })
    .await
    .unwrap_or_else(|_| Err(anyhow!("no answer from Redis")));
    match removed {
        Ok(_) => out(&format!(
            "deregistered {} from pool {}",
            a.entry.addr, a.entry.pool
        )),
        Err(e) => {
            // The entry still expires on its own: not a failure of the sidecar.
            tracing::warn!(pool = %a.entry.pool, node = %a.entry.addr, error = %format!("{e:#}"), "could not deregister; the entry expires by itself within the ttl");
            Ok(())
        }
    }
}

/// One listed node.
#[derive(Debug, Clone, serde::Serialize)]
struct Listed {
    pool: String,
    addr: String,
    weight: u32,
    expires_at_ms: Option<u64>,
    /// RFC 3339 UTC, or null.
    expires: Option<String>,
}

async fn list(a: &ListArgs) -> anyhow::Result<()> {
    let mut con = connect(&a.redis.url).await?;
    let prefix = format!("{}:pool:", a.redis.key_prefix);
    let pools: Vec<String> = match &a.pool {
        Some(p) => vec![p.clone()],
        None => scan_pools(&mut con, &prefix).await?,
    };
    let now = unix_ms();
    let mut listed = Vec::new();
    for pool in pools {
        let key = pool_key(&a.redis.key_prefix, &pool);
        let hash: Vec<(String, String)> = match tokio::time::timeout(
            COMMAND_TIMEOUT,
            redis::cmd("HGETALL")
                .arg(&key)
                .query_async::<std::collections::HashMap<Vec<u8>, Vec<u8>>>(&mut con),
        )
        .await
        {
            Err(_) => {
                bail!("HGETALL {key} failed: no answer from Redis within {COMMAND_TIMEOUT:?}")
            }
            Ok(Err(e)) if e.code() == Some("WRONGTYPE") => {
                eprintln!("note: {key} is not a hash; skipped");
                continue;
            }
            Ok(Err(e)) => bail!("HGETALL {key} failed: {e}"),
            Ok(Ok(h)) => {
                let mut v: Vec<(String, String)> = h
                    .into_iter()
                    .map(|(f, v)| {
                        (
                            String::from_utf8_lossy(&f).into_owned(),
                            String::from_utf8_lossy(&v).into_owned(),
                        )
                    })
                    .collect();
                v.sort();
                v
            }
        };
        for (field, value) in hash {
            let parsed = parse_entry(&field, &value);
            match parsed {
                Err(reason) => eprintln!(
                    "note: {key} {field}: invalid entry, ignored by the balancers: {reason} (value {value:?})"
                ),
                Ok(v) if v.expires_at_ms.is_some_and(|t| t <= now) => eprintln!(
                    "note: {key} {field}: expired at {}, ignored by the balancers",
                    rfc3339(v.expires_at_ms.unwrap_or(0))
                ),
                Ok(v) => listed.push(Listed {
                    pool: pool.clone(),
                    addr: field,
                    weight: v.weight,
                    expires_at_ms: v.expires_at_ms,
                    expires: v.expires_at_ms.map(rfc3339),
                }),
            }
        }
    }
    if a.json {
        let text = serde_json::to_string_pretty(&listed).context("cannot encode JSON")?;
        return out(&text);
    }
    let mut text = String::new();
    for l in &listed {
        text.push_str(&format!(
            "{} {} {} {}\n",
            l.pool,
            l.addr,
            l.weight,
            l.expires.as_deref().unwrap_or("-")
        ));
    }
    out(text.trim_end_matches('\n'))
}

/// Every pool with a hash under `prefix` (`PREFIX:pool:`), by SCAN MATCH.
async fn scan_pools(con: &mut MultiplexedConnection, prefix: &str) -> anyhow::Result<Vec<String>> {
    let pattern = format!("{}*", glob_escape(prefix));
    let mut pools = BTreeSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = timed(
            "SCAN",
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(con),
        )
        .await?;
        for k in keys {
            let k = String::from_utf8_lossy(&k);
            if let Some(pool) = k.strip_prefix(prefix) {
                if !pool.is_empty() {
                    pools.insert(pool.to_string());
                }
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok(pools.into_iter().collect())
}

/// Escape Redis glob metacharacters so a prefix matches only itself.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Print a line on stdout; a closed pipe (`| head`) is not an error.
fn out(text: &str) -> anyhow::Result<()> {
    if text.is_empty() {
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow!("cannot write to stdout: {e}"))
        }
        _ => Ok(()),
    }
}

/// Unix milliseconds as RFC 3339 UTC: `2024-11-22T21:52:25Z` (`.123Z` when the ms are not 0).
pub fn rfc3339(ms: u64) -> String {
    crate::util::timefmt::rfc3339(ms, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_732_312_345_000), "2024-11-22T21:52:25Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(4_102_444_799_000), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn argument_checks() {
        assert!(parse_weight("0").is_err());
        assert!(parse_weight("1001").is_err());
        assert_eq!(parse_weight("1000"), Ok(1000));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("ten").is_err());
        assert_eq!(
            parse_ttl("500ms").map(|d| d.0),
            Ok(Duration::from_millis(500))
        );
        assert!(parse_addr("10.0.0.1").is_err());
        assert!(parse_pool("*").is_err());
    }

    #[test]
    fn globs_are_escaped() {
        assert_eq!(glob_escape("a*b:pool:"), "a\\*b:pool:");
        assert_eq!(glob_escape("switchyard:pool:"), "switchyard:pool:");
    }
}
