//! The integration-test harness: the real `switchyard` binary, real backend servers and a
//! small HTTP client, all on 127.0.0.1 with ports chosen by the kernel.
//!
//! - [`Switchyard`]: runs `switchyard run -c FILE --log-format json` (or `demo`), learns the
//!   bound addresses from its JSON log lines, keeps every stderr line for assertions, and
//!   kills the process when dropped (printing its log if the test is failing).
//! - [`backend`]: hyper servers with scripted behaviours (echo, sink, source, hang, ...).
//! - [`client`]: HTTP/1.1 and h2c requests with a timeout on everything.
//! - [`raw`]: exact bytes over TCP, for malformed and pipelined requests.
//! - [`thirdparty`]: third-party servers (nginx, hypercorn, grpcio) and clients (curl, ab,
//!   h2load, grpcio) for the interoperability tests.
//! - [`programs`]: third-party programs (ab, curl, Python with grpcio), required, bounded.
//! - [`certs`]: certificates made with rcgen (self-signed, or signed by a private CA).
//!
//! Each test file uses a subset of this module, hence the `dead_code` allowance.
#![allow(dead_code, unused_imports)]

pub mod backend;
pub mod certs;
pub mod client;
pub mod programs;
pub mod raw;
pub mod thirdparty;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use backend::{refusing_addr, Backend, Behaviour};
pub use client::Resp;

/// The binary under test, built by cargo for the integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// How long the binary may take to report ready (a debug build on a busy 2-core machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The default bound for any single wait in the tests: long enough for a slow machine,
/// short enough that a hang fails the test instead of blocking CI.
pub const WAIT: Duration = Duration::from_secs(20);

/// A fresh directory under the system temp dir, unique to this process and call.
pub fn unique_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "switchyard-test-{tag}-{}-{n}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// Run a blocking wait from either a plain test or a multi-threaded tokio test without
/// starving the runtime's other tasks (backends keep serving meanwhile).
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Poll `cond` every 10 ms until it holds; panic with `what` after `timeout`.
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Poll the async `cond` every 10 ms until it holds; panic with `what` after `timeout`.
/// Returns how long it took.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A running `switchyard` process.
pub struct Switchyard {
    child: Child,
    dir: PathBuf,
    config: PathBuf,
    listeners: Vec<(String, SocketAddr)>,
    admin: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
    lines_rx: mpsc::Receiver<String>,
    exited: Option<ExitStatus>,
}

impl Switchyard {
    /// Write `yaml` to a temp file and run `switchyard run` on it; returns once the process
    /// has logged `switchyard ready`.
    pub fn start(yaml: &str) -> Switchyard {
        Switchyard::start_with_env(yaml, &[])
    }

    /// [`Switchyard::start`] with extra environment variables (e.g. the admin token).
    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Switchyard {
        let dir = unique_dir("run");
        let config = dir.join("switchyard.yaml");
        std::fs::write(&config, yaml).expect("write the config");
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("-c")
            .arg(&config)
            .args(["--log-format", "json"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Switchyard::spawn(cmd, dir, config)
    }

    /// `switchyard demo` on kernel-chosen ports.
    pub fn demo() -> Switchyard {
        let dir = unique_dir("demo");
        let mut cmd = Command::new(BIN);
        cmd.args([
            "--log-format",
            "json",
            "demo",
            "--bind",
            "127.0.0.1:0",
            "--admin-bind",
            "127.0.0.1:0",
        ]);
        Switchyard::spawn(cmd, dir.clone(), dir.join("none.yaml"))
    }

    /// The binary with these arguments (a subcommand that serves, such as `demo` with binds
    /// of its own), behind `--log-format json` for the harness to read.
    pub fn start_args(args: &[&str]) -> Switchyard {
        let dir = unique_dir("args");
        let mut cmd = Command::new(BIN);
        cmd.args(["--log-format", "json"]).args(args);
        Switchyard::spawn(cmd, dir.clone(), dir.join("none.yaml"))
    }

    fn spawn(mut cmd: Command, dir: PathBuf, config: PathBuf) -> Switchyard {
        // The harness needs the INFO lines (`listening`, `switchyard ready`): an inherited
        // RUST_LOG=warn must not hide them. SWITCHYARD_TEST_RUST_LOG overrides for debugging.
        let filter = std::env::var("SWITCHYARD_TEST_RUST_LOG").unwrap_or_else(|_| "info".into());
        cmd.env("RUST_LOG", filter);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the switchyard binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines_rx) = mpsc::channel();
        let echo = std::env::var_os("SWITCHYARD_TEST_ECHO")
            .is_some()
            .then(|| "[switchyard] ".to_string());
        read_lines(stderr, echo, Arc::clone(&log), tx);
        let mut sy = Switchyard {
            child,
            dir,
            config,
            listeners: Vec::new(),
            admin: None,
            log,
            lines_rx,
            exited: None,
        };
        blocking(|| sy.wait_ready());
        sy
    }

    /// Read log lines until `switchyard ready`, collecting the bound addresses.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines_rx.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("switchyard did not log `switchyard ready` within {START_TIMEOUT:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    self.exited = status;
                    panic!("switchyard exited before it was ready: {status:?}");
                }
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let fields = &v["fields"];
            match fields["message"].as_str() {
                Some("listening") => {
                    let name = fields["listener"]
                        .as_str()
                        .expect("listener name")
                        .to_string();
                    let addr = parse_addr(&fields["addr"]);
                    self.listeners.push((name, addr));
                }
                Some("admin listening") => self.admin = Some(parse_addr(&fields["addr"])),
                Some("switchyard ready") => break,
                _ => {}
            }
        }
        assert!(
            !self.listeners.is_empty(),
            "switchyard reported ready without a `listening` line"
        );
    }

    /// The bound address of the listener called `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no listener `{name}` in {:?}", self.listeners))
    }

    /// The first listener's address.
    pub fn http(&self) -> SocketAddr {
        self.listeners[0].1
    }

    pub fn admin_opt(&self) -> Option<SocketAddr> {
        self.admin
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.expect("the admin API is not configured")
    }

    /// `http://ADDR/path` on the first listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http(), path)
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stderr line so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Stderr lines whose JSON `fields.message` equals `message`.
    pub fn log_messages(&self, message: &str) -> Vec<serde_json::Value> {
        self.stderr_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["fields"]["message"].as_str() == Some(message))
            .collect()
    }

    /// Wait until a log line with JSON `fields.message == message` has appeared more than
    /// `already` times.
    pub fn wait_for_message(&self, message: &str, already: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        blocking(|| loop {
            if self.log_messages(message).len() > already {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for log message `{message}`"
            );
            std::thread::sleep(Duration::from_millis(20));
        })
    }

    /// Send a signal by name (`HUP`, `TERM`, ...) with `kill -s`.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -s {sig} failed: {st}");
    }

    /// Replace the config file and reload it with SIGHUP; returns once the process logged
    /// `config reloaded` (panics if it rejected the file instead).
    pub fn reload(&self, yaml: &str) {
        std::fs::write(&self.config, yaml).expect("rewrite the config");
        let ok = self.log_messages("config reloaded").len();
        let rejected = self
            .log_messages("config reload rejected; the old config keeps serving")
            .len();
        self.signal("HUP");
        let deadline = Instant::now() + WAIT;
        blocking(|| loop {
            if self.log_messages("config reloaded").len() > ok {
                return;
            }
            let now_rejected = self
                .log_messages("config reload rejected; the old config keeps serving")
                .len();
            assert_eq!(now_rejected, rejected, "the reload was rejected");
            assert!(
                Instant::now() < deadline,
                "no `config reloaded` log line within {WAIT:?} of SIGHUP"
            );
            std::thread::sleep(Duration::from_millis(20));
        })
    }

    /// Wait for the process to exit; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.exited {
            return Some(st);
        }
        let deadline = Instant::now() + timeout;
        let child = &mut self.child;
        let st = blocking(|| loop {
            match child.try_wait() {
                Ok(Some(st)) => return Some(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return None,
            }
        });
        self.exited = st;
        st
    }
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let lines = self.log.lock().map(|l| l.clone()).unwrap_or_default();
            eprintln!(
                "----- switchyard stderr ({} lines, pid {}) -----",
                lines.len(),
                self.child.id()
            );
            for l in lines {
                eprintln!("{l}");
            }
            eprintln!("----- end of switchyard stderr -----");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Read `pipe` line by line on a thread of its own until it closes: each line (lossy
/// UTF-8, line end trimmed) is appended to `log` and sent to `tx`; with `echo`, it is also
/// printed to stderr behind that prefix.
pub fn read_lines<R: std::io::Read + Send + 'static>(
    pipe: R,
    echo: Option<String>,
    log: Arc<Mutex<Vec<String>>>,
    tx: mpsc::Sender<String>,
) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    if let Some(prefix) = &echo {
                        eprintln!("{prefix}{line}");
                    }
                    if let Ok(mut l) = log.lock() {
                        l.push(line.clone());
                    }
                    let _ = tx.send(line);
                }
            }
        }
    });
}

fn parse_addr(v: &serde_json::Value) -> SocketAddr {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a socket address in the log: {v}"))
}

/// The output of `switchyard check`.
pub struct CheckOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `switchyard check -c path`.
pub fn check(path: &Path) -> CheckOutput {
    let out = Command::new(BIN)
        .arg("check")
        .arg("-c")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run switchyard check");
    CheckOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One Prometheus sample: name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub value: f64,
}

/// Parse the Prometheus text exposition (enough of it for the tests: no escaped quotes or
/// commas inside label values).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(p) => p,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let body = rest.trim_end_matches('}');
                let labels = body
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        Some((k.to_string(), v.trim_matches('"').to_string()))
                    })
                    .collect();
                (n.to_string(), labels)
            }
            None => (series.to_string(), HashMap::new()),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// The value of the sample named `name` whose labels include every `(key, value)` given.
pub fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// A pool block for a config: `nodes` as `(addr, weight)`; `extra` is spliced in as
/// further lines of the pool (already indented by 4 spaces).
pub fn pool_yaml(name: &str, strategy: &str, nodes: &[(SocketAddr, u32)], extra: &str) -> String {
    let mut s = format!("  {name}:\n    strategy: {strategy}\n");
    s.push_str(extra);
    s.push_str("    nodes:\n");
    for (addr, weight) in nodes {
        s.push_str(&format!(
            "      - addr: \"{addr}\"\n        weight: {weight}\n"
        ));
    }
    s
}

/// A whole config: one `http` listener on 127.0.0.1:0, the admin API on 127.0.0.1:0, a
/// catch-all route to `pool` and that one pool.
pub fn single_pool_config(strategy: &str, nodes: &[SocketAddr], extra: &str) -> String {
    let nodes: Vec<(SocketAddr, u32)> = nodes.iter().map(|a| (*a, 1)).collect();
    format!(
        "listeners:\n  - name: http\n    bind: 127.0.0.1:0\nadmin:\n  bind: 127.0.0.1:0\nroutes:\n  - pool: web\npools:\n{}",
        pool_yaml("web", strategy, &nodes, extra)
    )
}
