//! The Grafana dashboards in deploy/grafana/ query only what Switchyard exports.
//!
//! A balancer is started with every kind of series its metrics have (a plain and a TLS
//! listener, a pool with health checks, a Redis registry with a registered node, a reload,
//! traffic), and its live `/metrics` is read. Then, for every panel expression and every
//! template-variable query of every dashboard:
//! - each metric name is in the exposition (a histogram as its `_bucket`, `_sum` or
//!   `_count` series), and only `switchyard_*` names are used;
//! - each label in a `{...}` matcher is a label of that metric (or `instance`/`job`, which
//!   Prometheus adds), and an `=` matcher's value occurs in the exposition;
//! - each label in `by (...)` and in the legend is a label of a metric of the expression;
//! - `promtool check rules` accepts the expression as PromQL (Grafana's `$variables`
//!   replaced by what they stand for).

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use common::certs::{self_signed, write_pair};
use common::client::get;
use common::{parse_metrics, unique_dir, wait_until, Backend, Behaviour, Sample, Switchyard, BIN};
use redis_server::RedisServer;

/// Labels Prometheus attaches to every scraped series.
const TARGET_LABELS: &[&str] = &["instance", "job"];

/// One metric selector of an expression: `name{label op "value", ...}`.
#[derive(Debug, PartialEq)]
struct Selector {
    name: String,
    matchers: Vec<(String, String, String)>,
}

/// What an expression refers to: its selectors and the labels of its `by`/`without`/`on`/
/// `ignoring`/`group_*` clauses.
#[derive(Debug, Default, PartialEq)]
struct Refs {
    selectors: Vec<Selector>,
    grouping: Vec<String>,
}

const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "Inf", "NaN",
];
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A small PromQL scanner: enough to find metric names, matchers and grouping labels in
/// the dashboards' expressions (string literals, numbers, durations, `[ranges]` and Grafana
/// `$variables` are skipped; an identifier followed by `(` is a function or aggregation).
fn refs(expr: &str) -> Refs {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Refs::default();
    let mut i = 0;
    let skip_ws = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let ident_at = |j: usize| -> (String, usize) {
        let mut k = j;
        while k < chars.len() && is_ident(chars[k]) {
            k += 1;
        }
        (chars[j..k].iter().collect(), k)
    };
    let string_at = |j: usize| -> (String, usize) {
        let quote = chars[j];
        let mut k = j + 1;
        let mut s = String::new();
        while k < chars.len() && chars[k] != quote {
            if chars[k] == '\\' && k + 1 < chars.len() {
                k += 1;
            }
            s.push(chars[k]);
            k += 1;
        }
        (s, k + 1)
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = string_at(i).1;
        } else if c == '$' {
            i += 1;
            if i < chars.len() && chars[i] == '{' {
                while i < chars.len() && chars[i] != '}' {
                    i += 1;
                }
                i += 1;
            } else {
                i = ident_at(i).1;
            }
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && i + 1 < chars.len() && chars[i + 1].is_ascii_digit())
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let (word, end) = ident_at(i);
            let next = skip_ws(end);
            if GROUPING.contains(&word.as_str()) {
                i = next;
                if i < chars.len() && chars[i] == '(' {
                    let close = chars[i..].iter().position(|&c| c == ')').map(|p| i + p);
                    let close = close.unwrap_or_else(|| panic!("unclosed `{word} (` in {expr}"));
                    let list: String = chars[i + 1..close].iter().collect();
                    out.grouping.extend(
                        list.split(',')
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(String::from),
                    );
                    i = close + 1;
                }
            } else if KEYWORDS.contains(&word.as_str())
                || (next < chars.len() && chars[next] == '(')
                || ["by", "without"].contains(&ident_at(next).0.as_str())
            {
                // A keyword, a function, or an aggregation (`sum by (l) (...)`).
                i = end;
            } else {
                let mut sel = Selector {
                    name: word,
                    matchers: Vec::new(),
                };
                i = next;
                if i < chars.len() && chars[i] == '{' {
                    i += 1;
                    loop {
                        i = skip_ws(i);
                        if i >= chars.len() || chars[i] == '}' {
                            i += 1;
                            break;
                        }
                        if chars[i] == ',' {
                            i += 1;
                            continue;
                        }
                        let (label, end) = ident_at(i);
                        assert!(!label.is_empty(), "cannot read the matchers of {expr}");
                        let mut j = skip_ws(end);
                        let op_start = j;
                        while j < chars.len() && "=!~".contains(chars[j]) {
                            j += 1;
                        }
                        let op: String = chars[op_start..j].iter().collect();
                        let (value, end) = string_at(skip_ws(j));
                        sel.matchers.push((label, op, value));
                        i = end;
                    }
                }
                out.selectors.push(sel);
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn the_scanner_reads_selectors_matchers_and_grouping() {
    let r = refs(
        "histogram_quantile(0.99, sum by (pool, le) (rate(a_bucket{instance=~\"$instance\", \
         status_class=\"5xx\"}[$__rate_interval]))) / on(pool) group_left count(b) > 1e3 \
         and c offset 5m",
    );
    let names: Vec<&str> = r.selectors.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a_bucket", "b", "c"]);
    assert_eq!(
        r.selectors[0].matchers,
        [
            ("instance".into(), "=~".into(), "$instance".into()),
            ("status_class".into(), "=".into(), "5xx".into())
        ]
    );
    assert_eq!(r.grouping, ["pool", "le", "pool"]);
}

/// Every dashboard JSON file in deploy/grafana/.
fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("read the dashboard");
            let doc = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
            out.push((path, doc));
        }
    }
    assert!(!out.is_empty(), "no dashboard in {}", dir.display());
    out
}

/// (panel title, expr, legendFormat) of every query target, at any depth (rows nest panels).
fn targets(v: &Value, title: &str, out: &mut Vec<(String, String, String)>) {
    match v {
        Value::Object(m) => {
            let title = m.get("title").and_then(Value::as_str).unwrap_or(title);
            if let Some(expr) = m.get("expr").and_then(Value::as_str) {
                let legend = m.get("legendFormat").and_then(Value::as_str).unwrap_or("");
                out.push((title.to_string(), expr.to_string(), legend.to_string()));
            }
            for (k, child) in m {
                if k != "templating" {
                    targets(child, title, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| targets(c, title, out)),
        _ => {}
    }
}

/// The selector of every `label_values(SELECTOR, label)` variable query.
fn variable_queries(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for var in doc["templating"]["list"].as_array().into_iter().flatten() {
        let q = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str())
            .unwrap_or("");
        if let Some(inner) = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
        {
            let (selector, label) = inner
                .rsplit_once(',')
                .expect("label_values(SELECTOR, label)");
            out.push((selector.trim().to_string(), label.trim().to_string()));
        } else if var["type"] == "query" {
            panic!(
                "variable {}: a query the test does not read: {q}",
                var["name"]
            );
        }
    }
    out
}

/// Every label name and every `label=value` pair of each metric name in the exposition.
struct Exposition {
    labels: HashMap<String, HashSet<String>>,
    pairs: HashMap<String, HashSet<(String, String)>>,
}

impl Exposition {
    fn new(samples: &[Sample]) -> Exposition {
        let mut labels: HashMap<String, HashSet<String>> = HashMap::new();
        let mut pairs: HashMap<String, HashSet<(String, String)>> = HashMap::new();
        for s in samples {
            let l = labels.entry(s.name.clone()).or_default();
            let p = pairs.entry(s.name.clone()).or_default();
            for (k, v) in &s.labels {
                l.insert(k.clone());
                p.insert((k.clone(), v.clone()));
            }
        }
        Exposition { labels, pairs }
    }

    /// Every way `expr` (with `legend`) refers to something the exposition lacks.
    fn problems(&self, expr: &str, legend: &str) -> Vec<String> {
        let r = refs(expr);
        let mut out = Vec::new();
        if r.selectors.is_empty() {
            out.push("no metric in the expression".to_string());
        }
        let mut known: HashSet<String> = TARGET_LABELS.iter().map(|s| s.to_string()).collect();
        for sel in &r.selectors {
            if !sel.name.starts_with("switchyard_") {
                out.push(format!("{}: not a switchyard_* metric", sel.name));
                continue;
            }
            let Some(labels) = self.labels.get(&sel.name) else {
                out.push(format!("{}: not in the live /metrics", sel.name));
                continue;
            };
            known.extend(labels.iter().cloned());
            for (label, op, value) in &sel.matchers {
                if !labels.contains(label) && !TARGET_LABELS.contains(&label.as_str()) {
                    out.push(format!("{}: has no label `{label}`", sel.name));
                } else if op == "="
                    && !value.contains('$')
                    && !self.pairs[&sel.name].contains(&(label.clone(), value.clone()))
                {
                    out.push(format!("{}: no series with {label}=\"{value}\"", sel.name));
                }
            }
        }
        for label in &r.grouping {
            if !known.contains(label) {
                out.push(format!(
                    "by/on label `{label}` is not a label of its metrics"
                ));
            }
        }
        for part in legend.split("{{").skip(1) {
            let label = part.split("}}").next().unwrap_or("").trim();
            if !known.contains(label) {
                out.push(format!(
                    "legend label `{label}` is not a label of its metrics"
                ));
            }
        }
        out
    }
}

/// `promtool check rules` on every expression as a recording rule; the report on failure.
fn promtool_check(exprs: &[String]) -> Result<(), String> {
    let promtool = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool not found on PATH: install the Debian package `prometheus` \
                 (apt-get install prometheus); .ci/run does when it is missing"
            )
        });
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let promql = e
            .replace("$__rate_interval", "1m")
            .replace("$__interval", "1m")
            .replace("$instance", ".*")
            .replace("$pool", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:expr_{i}\n        expr: {}\n",
            serde_json::to_string(&promql).expect("a JSON string is a YAML string")
        ));
    }
    let dir = unique_dir("dashboard-rules");
    let file = dir.join("rules.yaml");
    std::fs::write(&file, &rules).expect("write the rules");
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("run promtool");
    let _ = std::fs::remove_dir_all(&dir);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}\n--- rules ---\n{rules}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A balancer with every kind of series: a plain and a TLS listener, a pool with a static
/// node and health checks, a Redis registry.
fn config(node: std::net::SocketAddr, cert: &Path, key: &Path, redis: &str) -> String {
    format!(
        "listeners:
  - name: http
    bind: 127.0.0.1:0
  - name: https
    bind: 127.0.0.1:0
    tls:
      certificates:
        - cert: \"{}\"
          key: \"{}\"
admin:
  bind: 127.0.0.1:0
routes:
  - pool: web
pools:
  web:
    strategy: round_robin
    health_check: {{path: /, interval: 500ms, timeout: 500ms}}
    nodes:
      - addr: \"{node}\"
redis:
  url: {redis}
",
        cert.display(),
        key.display()
    )
}

async fn live_metrics(sy: &Switchyard) -> Vec<Sample> {
    let r = get(sy.admin_addr(), "/metrics").await;
    assert_eq!(r.status, 200, "/metrics: {}", r.text());
    parse_metrics(&r.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_expression_resolves_against_a_live_metrics_endpoint() {
    let a = Backend::start("a", Behaviour::Echo).await;
    let b = Backend::start("b", Behaviour::Echo).await;
    let redis = RedisServer::start();
    let dir = unique_dir("dashboard");
    let (cert, key) = write_pair(&dir, "localhost", &self_signed(&["localhost"]));
    let yaml = config(a.addr, &cert, &key, &redis.url());
    let sy = Switchyard::start(&yaml);

    // Traffic, a registered node, a reload: the series that only appear once used.
    // The node takes traffic once its first probe passed.
    wait_until(
        "the node to answer through the balancer",
        common::WAIT,
        || async { get(sy.http(), "/").await.status == 200 },
    )
    .await;
    for _ in 0..3 {
        assert_eq!(get(sy.http(), "/").await.status, 200);
    }
    let out = Command::new(BIN)
        .args(["node", "register", "--redis", &redis.url(), "--pool", "web"])
        .args(["--addr", &b.addr.to_string()])
        .output()
        .expect("run switchyard node register");
    assert!(
        out.status.success(),
        "node register: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    sy.reload(&format!("{yaml}# reloaded\n"));
    let wanted = [
        "switchyard_registry_updates_total",
        "switchyard_health_checks_total",
        "switchyard_config_reloads_total",
        "switchyard_tls_handshake_errors_total",
    ];
    wait_until("every kind of series to appear", common::WAIT, || async {
        let names: HashSet<String> = live_metrics(&sy)
            .await
            .into_iter()
            .map(|s| s.name)
            .collect();
        wanted.iter().all(|w| names.contains(*w))
    })
    .await;
    let exposition = Exposition::new(&live_metrics(&sy).await);

    let mut problems = Vec::new();
    let mut exprs = Vec::new();
    let mut metric_names = BTreeSet::new();
    for (path, doc) in dashboards() {
        let file = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mut ts = Vec::new();
        targets(&doc["panels"], "", &mut ts);
        assert!(!ts.is_empty(), "{file}: no panel queries anything");
        for (title, expr, legend) in ts {
            for p in exposition.problems(&expr, &legend) {
                problems.push(format!("{file}: panel \"{title}\": {p}\n    {expr}"));
            }
            metric_names.extend(refs(&expr).selectors.into_iter().map(|s| s.name));
            exprs.push(expr);
        }
        for (selector, label) in variable_queries(&doc) {
            for p in exposition.problems(&selector, &format!("{{{{{label}}}}}")) {
                problems.push(format!("{file}: variable query: {p}\n    {selector}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard expressions that do not match the live /metrics:\n{}",
        problems.join("\n")
    );
    if let Err(report) = promtool_check(&exprs) {
        panic!("promtool rejects a dashboard expression:\n{report}");
    }
    eprintln!(
        "{} expressions over {} metrics checked: {metric_names:?}",
        exprs.len(),
        metric_names.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
