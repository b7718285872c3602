//! End-to-end tests of the config loader: text in, typed config or `FILE:LINE:COLUMN` errors
//! out. Each YAML snippet is small so that the expected line and column can be checked by eye.

use std::path::Path;
use std::time::Duration;

use strategies::Kind;

use super::*;

/// Parse `yaml`; on failure return every error as `LINE:COLUMN: message`.
fn errors(yaml: &str) -> Vec<String> {
    match parse_str(yaml, "t.yaml") {
        Ok(_) => Vec::new(),
        Err(e) => {
            e.0.iter()
                .map(|e| {
                    assert_eq!(e.file, "t.yaml");
                    format!("{}:{}: {}", e.line, e.column, e.message)
                })
                .collect()
        }
    }
}

/// The single error of `yaml`, as `LINE:COLUMN: message`.
fn one_error(yaml: &str) -> String {
    let errs = errors(yaml);
    assert_eq!(errs.len(), 1, "expected exactly one error, got {errs:#?}");
    errs.into_iter().next().unwrap_or_default()
}

fn ok(yaml: &str) -> Config {
    match parse_str(yaml, "t.yaml") {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// A minimal valid config; tests append to it or edit it.
const BASE: &str = "\
listeners:
  - name: http
    bind: 127.0.0.1:8080
routes:
  - pool: web
pools:
  web:
    nodes:
      - addr: 127.0.0.1:9001
";

#[test]
fn example_config_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    let loaded = match load(&path) {
        Ok(l) => l,
        Err(e) => panic!("config.example.yaml must validate:\n{e}"),
    };
    let c = &loaded.config;
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.listeners[0].bind, "127.0.0.1:8080");
    assert!(c.listeners[0].tls.is_none());
    assert_eq!(
        c.admin.as_ref().map(|a| a.bind.as_str()),
        Some("127.0.0.1:9090")
    );
    assert_eq!(c.routes.len(), 2);
    assert_eq!(c.routes[0].path_prefix.as_deref(), Some("/api"));
    assert!(c.routes[1].host.is_none() && c.routes[1].path_prefix.is_none());
    assert_eq!(c.pools["web"].strategy, Kind::RoundRobin);
    assert_eq!(c.pools["web"].nodes.len(), 3);
    assert!(c.pools["web"].health_check.is_some());
    assert!(c.pools["web"].outlier_detection.is_some());
    assert_eq!(c.pools["api"].strategy, Kind::P2cEwma);
    assert_eq!(c.pools["api"].nodes.len(), 2);
    assert!(c.redis.is_none());
    assert_eq!(c.access_log.format, AccessLogFormat::Json);
    assert_eq!(c.workers, 0);
    let (good, text) = check_report(&path);
    assert!(good);
    assert_eq!(
        text,
        "config OK: 1 listener, 2 routes, 2 pools, 5 static nodes"
    );
}

#[test]
fn defaults_apply_to_omitted_keys() {
    let c = ok(BASE);
    let web = &c.pools["web"];
    assert_eq!(web.strategy, Kind::RoundRobin);
    assert_eq!(web.nodes[0].weight, 1);
    assert!(web.health_check.is_none());
    assert!(web.outlier_detection.is_none());
    assert_eq!(web.retries.attempts, 1);
    assert_eq!(web.retries.on, vec![RetryOn::ConnectFailure]);
    assert_eq!(web.timeouts.connect.0, Duration::from_secs(2));
    assert_eq!(web.timeouts.request.0, Duration::from_secs(60));
    assert_eq!(
        web.hash_key, None,
        "consistent_hash without it hashes the client IP"
    );
    assert!(web.max_connections_per_node.is_none());
    assert!(web.slow_start.is_none());
    assert_eq!(web.upstream_protocol, UpstreamProtocol::Http1);
    assert!(c.limits.max_body_bytes.is_none());
    assert_eq!(c.limits.max_header_bytes.0, 64 * 1024);
    assert_eq!(c.limits.header_read_timeout.0, Duration::from_secs(10));
    assert_eq!(c.limits.idle_timeout.0, Duration::from_secs(60));
    assert_eq!(c.limits.max_connections, 10_000);
    assert_eq!(c.shutdown_timeout.0, Duration::from_secs(30));
    assert_eq!(c.workers, 0);
    assert!(c.admin.is_none());
    assert!(c.redis.is_none());
    assert!(c.rate_limit.is_none());
    assert!(c.trusted_proxies.is_empty());
    assert_eq!(c.access_log.format, AccessLogFormat::Off);
    assert!(!c.listeners[0].proxy_protocol);

    let c = ok(&format!(
        "{BASE}redis:\n  url: redis://127.0.0.1:6379\nadmin: {{}}\naccess_log: {{}}\n\
         rate_limit: {{requests_per_second: 2.5, burst: 5}}\n"
    ));
    let redis = c.redis.as_ref().unwrap();
    assert_eq!(redis.resync_interval.0, Duration::from_secs(30));
    assert_eq!(redis.key_prefix, "switchyard");
    assert_eq!(redis.channel, "switchyard:nodes");
    assert_eq!(c.admin.as_ref().unwrap().bind, "127.0.0.1:9090");
    // An access_log section without a format logs JSON; no section at all logs nothing.
    assert_eq!(c.access_log.format, AccessLogFormat::Json);
    assert_eq!(c.access_log.path, "stderr");
    assert_eq!(c.rate_limit.as_ref().unwrap().requests_per_second, 2.5);

    // An empty section is the section with all defaults.
    let c = ok(&format!("{BASE}limits:\n"));
    assert_eq!(c.limits.max_connections, 10_000);
}

#[test]
fn unknown_key_names_line_column_and_expected_keys() {
    let yaml = BASE.replace(
        "      - addr: 127.0.0.1:9001\n",
        "      - addr: 127.0.0.1:9001\n        weigth: 2\n",
    );
    assert_eq!(
        one_error(&yaml),
        "10:9: unknown key `weigth` in pools.web.nodes[0]; expected one of addr, weight \
         (did you mean `weight`?)"
    );
    assert_eq!(
        one_error(&format!("{BASE}listener: x\n")),
        "10:1: unknown key `listener` at the top level; expected one of listeners, admin, \
         routes, pools, redis, limits, trusted_proxies, access_log, rate_limit, \
         shutdown_timeout, workers (did you mean `listeners`?)"
    );
}

#[test]
fn every_unknown_key_is_reported_at_once() {
    let yaml = "\
listeners:
  - name: http
    bnd: 127.0.0.1:8080
    bind: 127.0.0.1:8080
    tls_on: true
routes:
  - pool: web
    prefix: /x
pools:
  web:
    nodes: [{addr: '127.0.0.1:9001', wieght: 3}]
";
    let errs = errors(yaml);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(errs[0].starts_with("3:5: unknown key `bnd` in listeners[0]; expected one of name, bind, proxy_protocol, tls (did you mean `bind`?)"), "{}", errs[0]);
    assert!(
        errs[1].starts_with("5:5: unknown key `tls_on` in listeners[0]"),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].starts_with(
            "8:5: unknown key `prefix` in routes[0]; expected one of host, path_prefix, pool"
        ),
        "{}",
        errs[2]
    );
    assert!(
        errs[3].starts_with("11:38: unknown key `wieght` in pools.web.nodes[0]"),
        "{}",
        errs[3]
    );
}

#[test]
fn route_to_missing_pool_points_at_the_pool_value() {
    let yaml = BASE.replace(
        "  - pool: web\n",
        "  - pool: web\n  - path_prefix: /api\n    pool: api\n",
    );
    assert_eq!(
        one_error(&yaml),
        "7:11: routes[1].pool: route points at unknown pool `api`; defined pools: web"
    );
}

#[test]
fn weight_zero_is_out_of_range() {
    let yaml = BASE.replace(
        "      - addr: 127.0.0.1:9001\n",
        "      - addr: 127.0.0.1:9001\n        weight: 0\n",
    );
    let e = one_error(&yaml);
    assert!(
        e.starts_with(
            "10:17: pools.web.nodes[0].weight: weight 0 is out of range: expected 1..=1000"
        ),
        "{e}"
    );
    let yaml = BASE.replace(
        "addr: 127.0.0.1:9001",
        "{addr: 127.0.0.1:9001, weight: 1001}",
    );
    assert_eq!(
        one_error(&yaml),
        "9:40: pools.web.nodes[0].weight: weight 1001 is out of range: expected 1..=1000"
    );
}

#[test]
fn bad_duration_size_and_enum_values() {
    let yaml = format!("{BASE}    timeouts:\n      connect: 5 seconds\n");
    assert_eq!(
        one_error(&yaml),
        "11:16: pools.web.timeouts.connect: invalid duration `5 seconds`: expected a number and \
         a unit (ms, s, m, h) such as 250ms, 2s, 1m"
    );
    let yaml = format!("{BASE}    timeouts:\n      request: 30\n");
    assert_eq!(
        one_error(&yaml),
        "11:16: pools.web.timeouts.request: invalid duration `30`: a unit is required, e.g. 30s \
         or 30ms"
    );
    let yaml = format!("{BASE}limits:\n  max_body_bytes: 10 megabytes\n");
    assert_eq!(
        one_error(&yaml),
        "11:19: limits.max_body_bytes: invalid size `10 megabytes`: expected bytes or a number \
         with KiB, MiB, GiB (e.g. 64KiB, 10MiB)"
    );
    let yaml = BASE.replace("  web:\n", "  web:\n    strategy: fastest\n");
    assert_eq!(
        one_error(&yaml),
        "8:15: pools.web.strategy: unknown value `fastest`; expected one of round_robin, \
         weighted_round_robin, least_conn, p2c_ewma, consistent_hash, random"
    );
    let yaml = format!("{BASE}access_log:\n  format: text\n");
    assert_eq!(
        one_error(&yaml),
        "11:11: access_log.format: unknown value `text`; expected one of json, logfmt, off"
    );
    let yaml = format!("{BASE}    retries:\n      on: [timeout, 404]\n");
    assert_eq!(
        one_error(&yaml),
        "11:21: pools.web.retries.on[1]: invalid retry condition `404`: expected \
         connect_failure, timeout, or a status code 500-599"
    );
    let yaml = format!("{BASE}workers: many\n");
    assert_eq!(
        one_error(&yaml),
        "10:10: workers: expected a whole number from 0 to 18446744073709551615, found `many`"
    );
}

#[test]
fn duplicate_and_overlapping_binds() {
    let yaml = "\
listeners:
  - name: a
    bind: 127.0.0.1:8080
  - name: b
    bind: 127.0.0.1:8080
  - name: c
    bind: 0.0.0.0:8081
  - name: d
    bind: 10.0.0.1:8081
admin:
  bind: 127.0.0.1:8080
routes: [{pool: web}]
pools: {web: {nodes: [{addr: 'a:1'}]}}
";
    assert_eq!(
        errors(yaml),
        vec![
            "5:11: listeners[1].bind: 127.0.0.1:8080 is already bound by listener `a` at \
             listeners[0].bind (line 3); every listener and the admin server need their own \
             address",
            "9:11: listeners[3].bind: 10.0.0.1:8081 overlaps 0.0.0.0:8081 bound by listener `c` \
             at listeners[2].bind (line 7): a wildcard address takes the port on every \
             interface; use another port",
            "11:9: admin.bind: 127.0.0.1:8080 is already bound by listener `a` at \
             listeners[0].bind (line 3); every listener and the admin server need their own \
             address",
        ]
    );
}

#[test]
fn bad_bind() {
    let yaml = BASE.replace("bind: 127.0.0.1:8080", "bind: localhost:8080");
    assert_eq!(
        one_error(&yaml),
        "3:11: listeners[0].bind: invalid bind address `localhost:8080`: expected IP:PORT such as \
         0.0.0.0:8080 or [::]:8080 (a host name is not allowed; write 127.0.0.1:8080)"
    );
    let yaml = BASE.replace("bind: 127.0.0.1:8080", "bind: 8080");
    assert!(one_error(&yaml).starts_with("3:11: listeners[0].bind: invalid bind address `8080`"));
}

#[test]
fn invalid_wildcard_hosts() {
    let yaml = BASE.replace(
        "  - pool: web\n",
        "  - host: a.*.com\n    pool: web\n  - host: '*example.com'\n    pool: web\n  - host: '*'\n    pool: web\n  - host: '*.example.com'\n    pool: web\n",
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "5:11: routes[0].host: invalid wildcard host `a.*.com`: `*` is only allowed as the \
             whole first label, as in `*.example.com`",
            "7:11: routes[1].host: invalid wildcard host `*example.com`: `*` must be a whole \
             label followed by a dot, as in `*.example.com` (which matches a.example.com but \
             not example.com)",
            "9:11: routes[2].host: `*` alone is not a host pattern; omit `host` to match every \
             host",
        ]
    );
}

#[test]
fn path_prefix_must_start_with_a_slash() {
    let yaml = BASE.replace("  - pool: web\n", "  - path_prefix: api\n    pool: web\n");
    assert_eq!(
        one_error(&yaml),
        "5:18: routes[0].path_prefix: path_prefix `api` must start with `/`, e.g. `/api`"
    );
}

#[test]
fn several_errors_are_all_reported_in_file_order() {
    let yaml = "\
listeners:
  - name: http
    bind: 127.0.0.1:8080
    colour: blue
routes:
  - path_prefix: api
    pool: nope
pools:
  web:
    strategy: round_robin
    hash_key: client_ip
    nodes:
      - addr: 127.0.0.1:9001
        weight: 0
      - addr: 127.0.0.1
    health_check:
      interval: 1s
      timeout: 2s
limits:
  max_header_bytes: 1KiB
  idle_timeout: forever
workers: 5000
";
    assert_eq!(
        errors(yaml),
        vec![
            "4:5: unknown key `colour` in listeners[0]; expected one of name, bind, \
             proxy_protocol, tls",
            "6:18: routes[0].path_prefix: path_prefix `api` must start with `/`, e.g. `/api`",
            "7:11: routes[0].pool: route points at unknown pool `nope`; defined pools: web",
            "11:15: pools.web.hash_key: hash_key only applies to strategy consistent_hash (this \
             pool uses round_robin); remove it or set `strategy: consistent_hash`",
            "14:17: pools.web.nodes[0].weight: weight 0 is out of range: expected 1..=1000; a \
             node with weight 0 would never get traffic: remove it, or drain it through the \
             admin API",
            "15:15: pools.web.nodes[1].addr: invalid node address `127.0.0.1`: the port is \
             missing; expected HOST:PORT such as 127.0.0.1:9001, backend.internal:8080 or \
             [::1]:9001",
            "18:16: pools.web.health_check.timeout: health check timeout 2s is longer than its \
             interval 1s: a probe would still be running when the next one starts; make \
             timeout <= interval",
            "20:21: limits.max_header_bytes: max_header_bytes 1KiB is too small: the HTTP/1 \
             parser needs at least 8KiB (8192 bytes)",
            "21:17: limits.idle_timeout: invalid duration `forever`: expected a number and a \
             unit (ms, s, m, h) such as 250ms, 2s, 1m",
            "22:10: workers: 5000 worker threads is too many: at most 1024; use 0 for one per \
             CPU core",
        ]
    );
}

#[test]
fn type_errors_do_not_cause_follow_on_errors() {
    // The strategy is invalid, so whether hash_key fits it cannot be judged; the route's
    // pool exists even though its definition has an error; the node with the missing addr
    // is not also reported as an invalid address.
    let yaml = "\
listeners:
  - name: http
    bind: 127.0.0.1:8080
routes:
  - pool: web
pools:
  web:
    strategy: consistent_hashing
    hash_key: header:X-User
    nodes:
      - weight: 2
      - addr: 127.0.0.1:9002
        weight: 0
";
    let errs = errors(yaml);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].starts_with("8:15: pools.web.strategy: unknown value `consistent_hashing`"));
    assert_eq!(
        errs[1],
        "11:9: missing required key `addr` in pools.web.nodes[0]: the node's HOST:PORT, such as \
         127.0.0.1:9001"
    );
    assert!(errs[2].starts_with("13:17: pools.web.nodes[1].weight: weight 0 is out of range"));
}

#[test]
fn missing_listeners_and_empty_pools() {
    assert_eq!(
        errors("pools:\n  web:\n    nodes: []\n"),
        vec![
            "1:1: listeners: no listeners are configured, so nothing would accept traffic; add \
             one, e.g. `listeners: [{name: http, bind: 0.0.0.0:8080}]`",
            "2:3: pools.web: pool web has no nodes and no redis registry is configured; add \
             nodes or a redis section",
        ]
    );
    // With a registry, an empty pool is fine: nodes register at run time.
    ok(&format!(
        "{BASE}  dynamic: {{}}\nredis:\n  url: rediss://:secret@redis.internal:6380/0\n"
    ));
    // An empty file is an empty config.
    assert_eq!(errors("").len(), 1);
}

#[test]
fn listener_names_and_tls_files() {
    let dir = std::env::temp_dir().join(format!("switchyard-config-test-{}", std::process::id()));
    let _ = std::fs::create_dir_all(dir.join("certs"));
    std::fs::write(dir.join("certs/site.pem"), "pem").unwrap();
    let yaml = "\
listeners:
  - name: http
    bind: 127.0.0.1:8080
  - name: http
    bind: 127.0.0.1:8443
    tls:
      certificates:
        - cert: certs/site.pem
          key: certs/site.key
  - name: ''
    bind: 127.0.0.1:8444
    tls: {certificates: []}
routes: [{pool: web}]
pools: {web: {nodes: [{addr: 'b:1'}]}}
";
    let path = dir.join("switchyard.yaml");
    std::fs::write(&path, yaml).unwrap();
    let err = load(&path).unwrap_err();
    let file = path.display().to_string();
    let lines: Vec<String> = err.to_string().lines().map(str::to_string).collect();
    let key = dir.join("certs/site.key");
    assert_eq!(
        lines,
        vec![
            format!(
                "{file}:4:11: listeners[1].name: listener name `http` is already used by \
                 listeners[0] (line 2); names must be unique"
            ),
            format!(
                "{file}:9:16: listeners[1].tls.certificates[0].key: cannot read private key \
                 file `{}`: No such file or directory (os error 2) (relative paths resolve \
                 against the config file's directory)",
                key.display()
            ),
            format!(
                "{file}:10:11: listeners[2].name: listener name must not be empty; it labels \
                 this listener's metrics and logs"
            ),
            format!(
                "{file}:12:25: listeners[2].tls.certificates: a TLS listener needs at least one \
                 certificate: add `certificates: [{{cert: FILE, key: FILE}}]`, or remove `tls` \
                 for plain HTTP"
            ),
        ]
    );
    let (good, text) = check_report(&path);
    assert!(!good);
    assert_eq!(text, err.to_string());
    std::fs::write(dir.join("certs/site.key"), "key").unwrap();
    let fixed = yaml
        .replace(
            "  - name: ''\n    bind: 127.0.0.1:8444\n    tls: {certificates: []}\n",
            "",
        )
        .replace(
            "  - name: http\n    bind: 127.0.0.1:8443",
            "  - name: https\n    bind: 127.0.0.1:8443",
        );
    std::fs::write(&path, fixed).unwrap();
    // Readable is not enough: the pair is parsed, and placeholder bytes are refused...
    let err = load(&path).unwrap_err().to_string();
    assert!(
        err.contains("listeners[1].tls.certificates[0].cert")
            && err.contains("holds no certificate"),
        "{err}"
    );
    // ...while a real pair loads.
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("certs/site.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("certs/site.key"), key_pair.serialize_pem()).unwrap();
    let loaded = load(&path).unwrap();
    assert_eq!(loaded.base_dir, dir);
    // The relative paths resolved against the config file's directory, and what loaded
    // from there is what the listener will serve.
    let certs = loaded.tls.listeners[1]
        .as_ref()
        .expect("the TLS listener's certificates are loaded");
    assert_eq!(certs.sources()[0].cert, dir.join("certs/site.pem"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pool_level_checks() {
    let yaml = format!(
        "{BASE}    health_check:\n      path: healthz\n      healthy_threshold: 0\n\
         \x20   outlier_detection:\n      max_ejection_percent: 150\n      base_ejection_time: 0s\n\
         \x20   retries:\n      attempts: 20\n    max_connections_per_node: 0\n\
         \x20   hash_key: 'header:'\n"
    );
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 7, "{errs:#?}");
    assert!(
        errs[0].starts_with(
            "11:13: pools.web.health_check.path: health check path `healthz` must start with `/`"
        ),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("12:26: pools.web.health_check.healthy_threshold: must be at least 1"),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].starts_with(
            "14:29: pools.web.outlier_detection.max_ejection_percent: 150 is not a percentage"
        ),
        "{}",
        errs[2]
    );
    assert!(errs[3].starts_with("15:27: pools.web.outlier_detection.base_ejection_time: base_ejection_time must be greater than 0s"), "{}", errs[3]);
    assert!(errs[4].starts_with("17:17: pools.web.retries.attempts: 20 retry attempts is too many: at most 10; each extra attempt adds load to a pool that is already failing (a retry storm)"), "{}", errs[4]);
    assert!(
        errs[5].starts_with("18:31: pools.web.max_connections_per_node: must be at least 1"),
        "{}",
        errs[5]
    );
    // A hash_key the schema cannot parse is a type error; it does not also count as
    // "hash_key on the wrong strategy" because it was dropped.
    assert!(
        errs[6].starts_with("19:15: pools.web.hash_key: invalid hash_key `header:`"),
        "{}",
        errs[6]
    );
    let yaml = BASE.replace(
        "  web:\n",
        "  web:\n    strategy: consistent_hash\n    hash_key: 'header:'\n",
    );
    assert_eq!(
        one_error(&yaml),
        "9:15: pools.web.hash_key: invalid hash_key `header:`: expected one of client_ip, \
         header:NAME, cookie:NAME, path"
    );
    let yaml = BASE.replace(
        "  web:\n",
        "  web:\n    strategy: consistent_hash\n    hash_key: header:X-User\n",
    );
    assert_eq!(
        ok(&yaml).pools["web"].hash_key,
        Some(HashKey::Header("x-user".into()))
    );
    let yaml = BASE
        .replace("  web:\n", "  'my pool':\n")
        .replace("pool: web", "pool: my pool");
    assert_eq!(
        one_error(&yaml),
        "7:3: pools[\"my pool\"]: pool name `my pool` may only contain letters, digits, `-`, `_` \
         and `.`: it appears in admin URLs, Redis keys and metric labels"
    );
    let yaml = BASE.replace(
        "addr: 127.0.0.1:9001\n",
        "addr: 127.0.0.1:9001\n      - addr: 127.0.0.1:9001\n",
    );
    assert_eq!(
        one_error(&yaml),
        "10:15: pools.web.nodes[1].addr: node 127.0.0.1:9001 is listed twice in pool web (first \
         as pools.web.nodes[0] (line 9)); remove one"
    );
}

#[test]
fn redis_limits_and_rate_limit_checks() {
    let yaml = format!(
        "{BASE}redis:\n  url: http://127.0.0.1:6379\n  key_prefix: ''\n  resync_interval: 0s\n\
         limits:\n  max_header_bytes: 32MiB\n  max_body_bytes: 0\n  max_connections: 0\n\
         rate_limit:\n  requests_per_second: 0\n  burst: 0\naccess_log:\n  path: ''\n"
    );
    let errs = errors(&yaml);
    let want = [
        "11:8: redis.url: invalid Redis URL: expected redis://HOST:PORT/DB",
        "12:15: redis.key_prefix: key_prefix must not be empty",
        "13:20: redis.resync_interval: resync_interval must be greater than 0s",
        "15:21: limits.max_header_bytes: max_header_bytes 32MiB is too large: at most 16MiB",
        "16:19: limits.max_body_bytes: max_body_bytes 0 would refuse every request body",
        "17:20: limits.max_connections: must be at least 1",
        "19:24: rate_limit.requests_per_second: requests_per_second must be a positive number, not 0",
        "20:10: rate_limit.burst: must be at least 1",
        "22:9: access_log.path: access_log.path must not be empty",
    ];
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
    for (e, w) in errs.iter().zip(want) {
        assert!(e.starts_with(w), "{e}\n  does not start with\n{w}");
    }
}

#[test]
fn syntax_errors_have_positions() {
    assert_eq!(
        errors("listeners:\n  - name: http\n   bind: x\n"),
        vec!["3:8: invalid YAML: while parsing a block collection, did not find expected '-' indicator"]
    );
    let e = errors("listeners:\n\t- name: http\n");
    assert!(
        e[0].starts_with("2:1: invalid YAML:") && e[0].contains("tabs"),
        "{e:?}"
    );
}

#[test]
fn duplicate_keys_and_wrong_shapes() {
    let yaml = format!("{BASE}workers: 2\nworkers: 3\n");
    assert_eq!(
        one_error(&yaml),
        "11:1: duplicate key `workers` (first written at line 10, column 1); remove one of them"
    );
    assert_eq!(
        one_error(&BASE.replace("routes:\n  - pool: web\n", "routes:\n  pool: web\n")),
        "5:3: routes: expected a list, found a mapping"
    );
    assert_eq!(
        errors("- a\n"),
        vec![
            "1:1: expected a mapping with keys listeners, admin, routes, pools, redis, limits, \
             trusted_proxies, access_log, rate_limit, shutdown_timeout, workers, found a list"
        ]
    );
    assert_eq!(
        one_error(&format!(
            "{BASE}trusted_proxies: [10.0.0.0/8, 10.0.0.0/33]\n"
        )),
        "10:31: trusted_proxies[1]: invalid network `10.0.0.0/33`: expected an address or CIDR \
         such as 10.0.0.0/8"
    );
}

#[test]
fn errors_display_as_file_line_column() {
    let err = parse_str(&format!("{BASE}workers: x\n"), "conf/sy.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "conf/sy.yaml:10:10: workers: expected a whole number from 0 to 18446744073709551615, \
         found `x`"
    );
    let (good, text) = check_report(Path::new("/nonexistent/switchyard.yaml"));
    assert!(!good);
    assert!(text.starts_with("/nonexistent/switchyard.yaml: cannot read the config file"));
}

#[test]
fn summary_counts() {
    let c = ok(&format!("{BASE}redis: {{url: 'redis://r:6379'}}\n"));
    assert_eq!(
        summary(&c),
        "config OK: 1 listener, 1 route, 1 pool, 1 static node, redis registry"
    );
}

#[test]
fn empty_list_items_and_defaults_in_messages() {
    let yaml =
        BASE.replace("listeners:\n", "listeners:\n  -\n") + "    health_check: {interval: 500ms}\n";
    assert_eq!(
        errors(&yaml),
        vec![
            "2:3: missing required key `name` in listeners[0]: a unique name for this listener, \
             such as http",
            "11:30: pools.web.health_check.interval: health check timeout 1s (the default) is \
             longer than its interval 500ms: a probe would still be running when the next one \
             starts; make timeout <= interval",
        ]
    );
}

// Found by fuzzing: a key or value with a control character was quoted raw in
// the message, so one error could print as several lines or drive the terminal.
#[test]
fn control_characters_in_messages_are_escaped() {
    let errs = errors("listeners: []\nroutes:\n  - host\u{1}: a\n    pool: \"w\\e[31m\\nx\"\n");
    assert!(!errs.is_empty());
    for e in &errs {
        assert!(!e.chars().any(char::is_control), "{e:?}");
    }
    assert!(errs.iter().any(|e| e.contains("host\\u{1}")), "{errs:#?}");
    assert!(
        errs.iter().any(|e| e.contains("w\\u{1b}[31m\\nx")),
        "{errs:#?}"
    );
    assert_eq!(escape_controls("a\tb\r\n"), "a\\tb\\r\\n");
}

// Found by fuzzing: positions must lie inside the file. The scanner marks a
// problem at the end of the stream on a line after the last one (`!` alone was reported at
// 2:1 of a one-line file), and the tab hint counted lines with `str::lines`, which does not
// break at a lone `\r` as YAML does, so it looked for the tab on the wrong line.
#[test]
fn error_positions_stay_inside_the_file() {
    assert_eq!(
        errors("!")[0],
        "1:2: YAML tag `!` is not supported here; remove it"
    );
    for (yaml, at) in [
        ("listeners: []\r\tpools: {}\n", "2:1:"),
        ("a: 1\rb:\r\t- x\n", "3:1:"),
        ("a: 1\r\nb:\r\n\t- x\n", "3:1:"),
    ] {
        let e = one_error(yaml);
        assert!(e.starts_with(at) && e.contains("not tabs"), "{yaml:?}: {e}");
    }
    let lines = tree::yaml_lines("ab\r\ncd\ref\n");
    assert_eq!(lines, ["ab", "cd", "ef", ""]);
    let m = |line, column| tree::Mark { line, column };
    assert_eq!(m(9, 9).clamp(&lines), m(4, 1));
    assert_eq!(m(2, 9).clamp(&lines), m(2, 3));
    assert_eq!(m(0, 0).clamp(&lines), tree::Mark::START);
}
