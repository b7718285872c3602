//! The typed configuration schema: every key of the file, its type and its default.
//!
//! Every struct rejects unknown keys so that a typo is an error, never silently ignored.
//! The defaults for omitted keys are the ones the README's configuration reference lists. Semantic checks
//! (routes to missing pools, duplicate binds, weights out of range, ...) live in
//! `validate.rs`; this file only says what shape the YAML must have.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use strategies::Kind;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub pools: BTreeMap<String, PoolConfig>,
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    #[serde(default)]
    pub access_log: AccessLogConfig,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// How long a drain waits for in-flight requests; `0s` means exit without waiting.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: Dur,
    /// Tokio worker threads; 0 = one per CPU core.
    #[serde(default)]
    pub workers: usize,
}

fn default_shutdown_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    /// `host:port`; validated into a socket address by `validate.rs`.
    pub bind: String,
    #[serde(default)]
    pub proxy_protocol: bool,
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    pub certificates: Vec<CertificateConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM chain; relative paths resolve against the config file's directory.
    pub cert: PathBuf,
    /// PEM key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_bind")]
    pub bind: String,
    /// Name of the environment variable holding the bearer token for mutating calls.
    #[serde(default)]
    pub token_env: Option<String>,
}

fn default_admin_bind() -> String {
    "127.0.0.1:9090".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Exact host or `*.suffix`; case-insensitive, port ignored.
    #[serde(default)]
    pub host: Option<String>,
    /// Matches on a path-segment boundary.
    #[serde(default)]
    pub path_prefix: Option<String>,
    pub pool: String,
}

/// `strategy:`, read by the strategies crate's own names ([`Kind::NAMES`], [`Kind::parse`]),
/// so that each name is spelled in one place. An unknown name is an error listing them all,
/// as for every other enum of the schema.
fn strategy_name<'de, D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
    struct Name;
    impl<'de> Visitor<'de> for Name {
        type Value = Kind;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a strategy name")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
            Kind::parse(v).ok_or_else(|| E::unknown_variant(v, &Kind::NAMES))
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Kind, E> {
            match std::str::from_utf8(v) {
                Ok(s) => self.visit_str(s),
                Err(_) => Err(E::invalid_value(de::Unexpected::Bytes(v), &self)),
            }
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Kind, E> {
            usize::try_from(v)
                .ok()
                .and_then(|i| Kind::ALL.get(i).copied())
                .ok_or_else(|| {
                    E::invalid_value(de::Unexpected::Unsigned(v), &"variant index 0 <= i < 6")
                })
        }
    }
    impl<'de> de::DeserializeSeed<'de> for Name {
        type Value = Kind;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
            d.deserialize_identifier(self)
        }
    }
    struct Unit;
    impl<'de> Visitor<'de> for Unit {
        type Value = Kind;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a strategy name")
        }
        fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Kind, A::Error> {
            let (kind, variant) = data.variant_seed(Name)?;
            de::VariantAccess::unit_variant(variant)?;
            Ok(kind)
        }
    }
    d.deserialize_enum("StrategyName", &Kind::NAMES, Unit)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    H2,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    #[serde(default = "default_strategy", deserialize_with = "strategy_name")]
    pub strategy: Kind,
    /// `consistent_hash` only: `client_ip | header:NAME | cookie:NAME | path`; omitted means
    /// `client_ip` (the common case: sticky per client). `validate.rs` rejects it on any
    /// other strategy, where it would silently do nothing.
    #[serde(default)]
    pub hash_key: Option<HashKey>,
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierConfig>,
    #[serde(default)]
    pub retries: RetriesConfig,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// In-flight requests per node at most; omitted = unlimited.
    #[serde(default)]
    pub max_connections_per_node: Option<u32>,
    #[serde(default)]
    pub slow_start: Option<Dur>,
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    #[serde(default)]
    pub upstream_protocol: UpstreamProtocol,
}

fn default_strategy() -> Kind {
    Kind::RoundRobin
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Header(String),
    Cookie(String),
    Path,
}

impl<'de> Deserialize<'de> for HashKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HashKey::parse(&s).ok_or_else(|| {
            de::Error::custom(format!(
                "invalid hash_key `{s}`: expected one of client_ip, header:NAME, cookie:NAME, path"
            ))
        })
    }
}

impl HashKey {
    pub fn parse(s: &str) -> Option<HashKey> {
        match s {
            "client_ip" => Some(HashKey::ClientIp),
            "path" => Some(HashKey::Path),
            _ => {
                if let Some(name) = s.strip_prefix("header:") {
                    (!name.is_empty()).then(|| HashKey::Header(name.to_ascii_lowercase()))
                } else if let Some(name) = s.strip_prefix("cookie:") {
                    (!name.is_empty()).then(|| HashKey::Cookie(name.to_string()))
                } else {
                    None
                }
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// `host:port`; host names are resolved at snapshot build.
    pub addr: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `http`: `GET path`, up when the status is in `expect_status`; `grpc`: the gRPC
    /// health-checking protocol (`grpc.health.v1.Health/Check` for `grpc_service`), up when
    /// the answer is SERVING.
    #[serde(default)]
    pub protocol: HealthProtocol,
    /// The service a `grpc` check asks about; `""` (the default) is the whole server.
    #[serde(default)]
    pub grpc_service: Option<String>,
    #[serde(default = "default_hc_path")]
    pub path: String,
    #[serde(default = "default_hc_interval")]
    pub interval: Dur,
    #[serde(default = "default_hc_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    #[serde(default)]
    pub expect_status: StatusRange,
}

/// How a health probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthProtocol {
    #[default]
    Http,
    Grpc,
}

fn default_hc_path() -> String {
    "/healthz".to_string()
}
fn default_hc_interval() -> Dur {
    Dur(Duration::from_secs(2))
}
fn default_hc_timeout() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}

/// An inclusive status range such as `200-399`, or a single code such as `200`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub lo: u16,
    pub hi: u16,
}

impl Default for StatusRange {
    fn default() -> Self {
        StatusRange { lo: 200, hi: 399 }
    }
}

impl StatusRange {
    pub fn contains(&self, status: u16) -> bool {
        (self.lo..=self.hi).contains(&status)
    }

    pub fn parse(s: &str) -> Option<StatusRange> {
        let s = s.trim();
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let v = s.parse().ok()?;
                (v, v)
            }
        };
        ((100..=599).contains(&lo) && (100..=599).contains(&hi) && lo <= hi)
            .then_some(StatusRange { lo, hi })
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StatusRange;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a status code or range such as 200 or 200-399")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusRange, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusRange, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusRange, E> {
                StatusRange::parse(v).ok_or_else(|| {
                    E::custom(format!(
                        "invalid status range `{v}`: expected a code or range within 100-599 such as 200-399"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    #[serde(default = "default_base_ejection")]
    pub base_ejection_time: Dur,
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
}

fn default_consecutive_failures() -> u32 {
    5
}
fn default_base_ejection() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_max_ejection_percent() -> u32 {
    50
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetriesConfig {
    /// Extra tries on a different node.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
    #[serde(default = "default_budget_percent")]
    pub budget_percent: u32,
}

impl Default for RetriesConfig {
    fn default() -> Self {
        RetriesConfig {
            attempts: default_attempts(),
            on: default_retry_on(),
            budget_percent: default_budget_percent(),
        }
    }
}

fn default_attempts() -> u32 {
    1
}
fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectFailure]
}
fn default_budget_percent() -> u32 {
    20
}

/// A condition under which a failed attempt is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    ConnectFailure,
    Timeout,
    /// An upstream answer with this status (500..=599).
    Status(u16),
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RetryOn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("connect_failure, timeout, or a 5xx status code such as 503")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RetryOn, E> {
                if (500..=599).contains(&v) {
                    Ok(RetryOn::Status(v as u16))
                } else {
                    Err(E::custom(format!(
                        "invalid retry condition `{v}`: expected connect_failure, timeout, or a status code 500-599"
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RetryOn, E> {
                self.visit_u64(u64::try_from(v).unwrap_or(0))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RetryOn, E> {
                match v {
                    "connect_failure" => Ok(RetryOn::ConnectFailure),
                    "timeout" => Ok(RetryOn::Timeout),
                    other => match other.parse::<u64>() {
                        Ok(n) => self.visit_u64(n),
                        Err(_) => Err(E::custom(format!(
                            "invalid retry condition `{other}`: expected connect_failure, timeout, or a status code 500-599"
                        ))),
                    },
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    #[serde(default = "default_connect_timeout")]
    pub connect: Dur,
    /// Time allowed from sending the request to the upstream's response headers.
    #[serde(default = "default_request_timeout")]
    pub request: Dur,
    /// Once the response head has arrived, a body (either direction) is cut after this long
    /// with nothing received or sent; also the idle bound of an upgraded (WebSocket) tunnel.
    #[serde(default = "default_body_idle_timeout")]
    pub idle: Dur,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            connect: default_connect_timeout(),
            request: default_request_timeout(),
            idle: default_body_idle_timeout(),
        }
    }
}

fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(2))
}
fn default_request_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_body_idle_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://` or `rediss://`, with an optional password.
    pub url: String,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    #[serde(default = "default_channel")]
    pub channel: String,
    #[serde(default = "default_resync")]
    pub resync_interval: Dur,
}

fn default_key_prefix() -> String {
    "switchyard".to_string()
}
fn default_channel() -> String {
    "switchyard:nodes".to_string()
}
fn default_resync() -> Dur {
    Dur(Duration::from_secs(30))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: Size,
    /// Omitted = no body limit.
    #[serde(default)]
    pub max_body_bytes: Option<Size>,
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Dur,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_header_bytes: default_max_header_bytes(),
            max_body_bytes: None,
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

fn default_max_header_bytes() -> Size {
    Size(64 * 1024)
}
fn default_header_read_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_idle_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_max_connections() -> u32 {
    10_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    Json,
    Logfmt,
    /// No access log: the default when the `access_log` section is omitted.
    #[default]
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    #[serde(default = "default_access_log_format")]
    pub format: AccessLogFormat,
    /// `stderr`, `stdout`, or a file path.
    #[serde(default = "default_access_log_path")]
    pub path: String,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            format: AccessLogFormat::Off,
            path: default_access_log_path(),
        }
    }
}

fn default_access_log_format() -> AccessLogFormat {
    AccessLogFormat::Json
}
fn default_access_log_path() -> String {
    "stderr".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub requests_per_second: f64,
    pub burst: u32,
}

/// A duration written as a string such as `250ms`, `2s`, `1m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// Parse `<number><unit>` with unit `ms`, `s`, `m` or `h` (decimals allowed: `1.5s`).
    pub fn parse(s: &str) -> Option<Dur> {
        let s = s.trim();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (num, unit) = s.split_at(split);
        let n: f64 = num.parse().ok()?;
        let secs = match unit {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return None,
        };
        (secs.is_finite() && (0.0..=365.0 * 86400.0).contains(&secs))
            .then(|| Dur(Duration::from_secs_f64(secs)))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 250ms, 2s, 1m")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "invalid duration `{v}`: a unit is required, e.g. {v}s or {v}ms"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "invalid duration `{v}`: must not be negative; write e.g. 2s or 250ms"
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "invalid duration `{v}`: a unit is required, e.g. {v}s"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                Dur::parse(v).ok_or_else(|| {
                    E::custom(format!(
                        "invalid duration `{v}`: expected a number and a unit (ms, s, m, h) such as 250ms, 2s, 1m"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes, written as a number or with a unit: `64KiB`, `10MiB`, `1GiB`, `500KB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    pub fn parse(s: &str) -> Option<Size> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().ok()?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return None,
        };
        n.checked_mul(mult).map(Size)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 65536, 64KiB or 10MiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("invalid size `{v}`: must not be negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                Size::parse(v).ok_or_else(|| {
                    E::custom(format!(
                        "invalid size `{v}`: expected bytes or a number with KiB, MiB, GiB (e.g. 64KiB, 10MiB)"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `::1/128`), or a bare address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (
                a.parse::<std::net::IpAddr>().ok()?,
                Some(p.parse::<u8>().ok()?),
            ),
            None => (s.parse::<std::net::IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Cidr::parse(&s).ok_or_else(|| {
            de::Error::custom(format!(
                "invalid network `{s}`: expected an address or CIDR such as 10.0.0.0/8"
            ))
        })
    }
}

/// A short explanation of what a required key holds, for "missing required key" messages.
pub(crate) fn required_key_hint(key: &str) -> Option<&'static str> {
    Some(match key {
        "name" => "a unique name for this listener, such as http",
        "bind" => "the address to listen on, IP:PORT such as 0.0.0.0:8080",
        "pool" => "the name of a pool defined under `pools`",
        "addr" => "the node's HOST:PORT, such as 127.0.0.1:9001",
        "certificates" => "a list of `- {cert: FILE, key: FILE}` entries",
        "cert" => "the path of a PEM certificate chain",
        "key" => "the path of a PEM private key",
        "url" => "the Redis URL, such as redis://127.0.0.1:6379/0",
        "requests_per_second" => "the sustained rate allowed per client IP, such as 100",
        "burst" => "the bucket size per client IP, such as 200",
        _ => return None,
    })
}
