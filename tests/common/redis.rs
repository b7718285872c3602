//! A private `redis-server` per test, on a free port of 127.0.0.1 (never 6379: a shared
//! Redis may run there), with no persistence, killed when dropped.
//!
//! Use it from a test file with `#[path = "common/redis.rs"] mod redis_server;` (it needs
//! only std and the `redis` crate). The server can be killed and started again on the same
//! port ([`RedisServer::kill`], [`RedisServer::restart`]) to test outages.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The exact message when the binary is missing: the tests fail, they do not skip.
pub const MISSING: &str =
    "redis-server not found on PATH: install it with `apt-get install redis-server`";

/// How long a redis-server may take to answer PING after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running redis-server.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

/// `redis-server` from PATH, or a panic with [`MISSING`].
pub fn redis_server_bin() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{MISSING}"))
}

fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        drop(l);
        if port != 6379 {
            return port;
        }
    }
}

impl RedisServer {
    /// Start a fresh server on a free port (another port is tried if it fails to start).
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// [`RedisServer::start`] with extra `redis-server` arguments (e.g. `--requirepass x`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let bin = redis_server_bin();
        let dir = std::env::temp_dir().join(format!(
            "switchyard-redis-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("create a dir for redis-server");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut last_err = String::new();
        for _ in 0..10 {
            let port = free_port();
            match spawn(&bin, port, &dir, &extra) {
                Ok(child) => {
                    return RedisServer {
                        child: Some(child),
                        port,
                        dir,
                        extra,
                    }
                }
                Err(e) => last_err = e,
            }
        }
        panic!("could not start redis-server on a free port: {last_err}");
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// SIGKILL the server and wait for it to go away.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the server again on the same port (empty: there is no persistence), with
    /// `extra` arguments instead of the original ones.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.kill();
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        let bin = redis_server_bin();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match spawn(&bin, self.port, &self.dir, &self.extra) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "could not restart redis-server on port {}: {e}",
                        self.port
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Start the server again on the same port, with its original arguments.
    pub fn restart(&mut self) {
        let extra = self.extra.clone();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        self.restart_with(&extra);
    }

    /// The server's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A client for this server.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("redis client")
    }

    /// A new async connection (multiplexed).
    pub async fn con(&self) -> redis::aio::MultiplexedConnection {
        tokio::time::timeout(
            Duration::from_secs(10),
            self.client().get_multiplexed_async_connection(),
        )
        .await
        .expect("connecting to the test redis timed out")
        .expect("connect to the test redis")
    }

    /// The server's log file (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- redis-server log (port {}) -----\n{}",
                self.port,
                self.log()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Start redis-server on `port` and wait until it answers PING; an error if it exits first
/// (port taken) or does not answer in time.
fn spawn(bin: &Path, port: u16, dir: &Path, extra: &[String]) -> Result<Child, String> {
    let mut cmd = Command::new(bin);
    cmd.args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .args(["--loglevel", "notice"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server on port {port} exited: {status}"));
        }
        match ping(port, child.id()) {
            Ping::Ours => return Ok(child),
            Ping::Locked => {
                // A password is set: the INFO check cannot run; a server that stays up is
                // ours (one that lost the port race exits at once).
                std::thread::sleep(Duration::from_millis(200));
                if let Ok(None) = child.try_wait() {
                    return Ok(child);
                }
            }
            Ping::No => {}
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("redis-server on port {port} did not answer PING"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

enum Ping {
    /// Our server answers.
    Ours,
    /// A Redis answers, but wants a password (so its pid cannot be read).
    Locked,
    /// Nothing (yet), or another process.
    No,
}

/// Ask whatever listens on `port` for `INFO server` and compare its `process_id` with
/// `pid`, so a server that lost the race for the port is not mistaken for another one.
fn ping(port: u16, pid: u32) -> Ping {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return Ping::No;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"INFO server\r\n").is_err() {
        return Ping::No;
    }
    let want = format!("process_id:{pid}\r\n");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < 64 * 1024 {
        match s.read(&mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
        let text = String::from_utf8_lossy(&got);
        if text.starts_with("-NOAUTH") {
            return Ping::Locked;
        }
        if text.contains(&want) {
            return Ping::Ours;
        }
        if text.starts_with('-') || text.contains("process_id:") && text.ends_with("\r\n\r\n") {
            break;
        }
    }
    Ping::No
}
