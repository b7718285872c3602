//! Widely used third-party HTTP implementations for the interoperability tests: servers
//! (nginx, hypercorn, a grpcio server, an h11/h2 node that reports request trailers)
//! started on 127.0.0.1 ports of their own, and clients (curl, ab, h2load, nghttp, a grpcio
//! client) run to completion with their results parsed.
//!
//! Tests that use only the project's own backends and clients check that Switchyard agrees
//! with itself; these check it against implementations its users actually run. A test
//! runs each scenario straight against the third-party node and again through switchyard,
//! and the two must agree.
//!
//! - Every program is looked up first; a missing one panics with the package that provides
//!   it (`nginx not found on PATH: apt-get install nginx`). Nothing is ever skipped.
//! - Servers pick their own port where they can (grpcio binds `:0` and prints the port,
//!   hypercorn logs it); nginx needs a port in its config, so it gets a free one and is
//!   started again on another if that one was taken meanwhile. Each start waits, bounded,
//!   until the server accepts connections, and fails with the server's output if it exits.
//! - A [`Server`] is killed when dropped; its output is printed when the test is failing.
//! - Client runs are bounded too ([`run_bounded`]): a hung client fails the test.
//!
//! The Python programs (the grpcio server and client, the ASGI application) are in
//! `tests/interop/`.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::{blocking, read_lines, unique_dir, WAIT};

/// How long a server may take to accept connections: Python importing grpcio on a busy
/// 2-core machine is the slowest.
pub const STARTUP: Duration = Duration::from_secs(30);

/// How long one client run may take (the slowest is a stream of about 8 s, or a grpcio
/// client moving 16 MiB both ways through a debug build).
pub const CLIENT_RUN: Duration = Duration::from_secs(90);

/// The directory of the Python programs the tests run.
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

pub use super::programs::{require, require_python, run_bounded, Ran};

// ---------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------

/// A running third-party server; killed when dropped, its output printed when the test is
/// failing.
pub struct Server {
    name: String,
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
    /// Its config, files and logs; removed when the server is dropped.
    dir: Option<PathBuf>,
}

impl Server {
    /// Start `cmd` with stdout and stderr collected line by line.
    fn spawn(name: &str, mut cmd: Command, dir: Option<PathBuf>) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            read_lines(out, None, Arc::clone(&output), tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            read_lines(err, None, Arc::clone(&output), tx);
        }
        Server {
            name: name.to_string(),
            child,
            output,
            lines,
            dir,
        }
    }

    /// Every line the server printed so far (stdout and stderr interleaved).
    pub fn output(&self) -> Vec<String> {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// The exit status, if the server has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Wait for the first output line `parse` accepts; panics when the server exits first
    /// or prints no such line within [`STARTUP`].
    fn wait_line<T>(&mut self, what: &str, parse: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + STARTUP;
        blocking(|| loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) => {
                    if let Some(v) = parse(&line) {
                        return v;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "{} exited before printing {what}: {status:?}\n{}",
                        self.name,
                        self.output().join("\n")
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} did not print {what} within {STARTUP:?}\n{}",
                self.name,
                self.output().join("\n")
            );
        })
    }

    /// Wait until `addr` accepts TCP connections. `Err` with the server's output when it
    /// exits first (nginx on a port taken meanwhile); panics after [`STARTUP`].
    fn wait_accepting(&mut self, addr: SocketAddr) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP;
        blocking(|| loop {
            if let Some(status) = self.exited() {
                return Err(format!(
                    "{} exited ({status}) before accepting on {addr}:\n{}",
                    self.name,
                    self.output().join("\n")
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                // Still running: the connection reached this server, not a leftover one.
                if self.exited().is_none() {
                    return Ok(());
                }
                continue;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not accept connections on {addr} within {STARTUP:?}\n{}",
                self.name,
                self.output().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let lines = self.output();
            eprintln!("----- {} output ({} lines) -----", self.name, lines.len());
            for l in lines {
                eprintln!("{l}");
            }
            eprintln!("----- end of {} output -----", self.name);
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A port nothing listens on right now (bound and released at once). Another process may
/// take it before the server binds it: callers start again on a new one when that happens.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

// ---------------------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------------------

/// How nginx's server speaks to its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NginxProtocol {
    /// HTTP/1.0 and HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge only (`listen ... http2` without TLS).
    H2c,
}

/// A static file nginx serves: 1 MiB of [`file_byte`]s.
pub const NGINX_FILE: &str = "/files/1m.bin";
pub const NGINX_FILE_SIZE: usize = 1 << 20;
/// A small static file (4 KiB of [`file_byte`]s), for load runs.
pub const NGINX_SMALL_FILE: &str = "/files/4k.bin";
pub const NGINX_SMALL_FILE_SIZE: usize = 4 << 10;
/// An HTML page nginx sends without a length (server-side includes drop it): chunked to
/// HTTP/1.1 clients, delimited by the connection's close to HTTP/1.0 ones, with the
/// response trailer `x-trailer-check: nginx-METHOD` (`add_trailer` applies to chunked and
/// HTTP/2 responses), announced in a `Trailer` header as RFC 9110 §6.6.2 asks (an HTTP/1.1
/// hop that follows it, hyper among them, sends only announced trailer fields).
pub const NGINX_CHUNKED_PAGE: &str = "/chunked/page.html";

/// Byte `i` of nginx's static files: a pattern that does not repeat at a power of two, so a
/// shifted or spliced body shows.
pub fn file_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// The first `len` bytes of the static file pattern.
pub fn file_bytes(len: usize) -> Vec<u8> {
    (0..len).map(file_byte).collect()
}

/// The content of [`NGINX_CHUNKED_PAGE`].
pub fn chunked_page() -> String {
    (0..2000).map(|i| format!("<p>line {i}</p>\n")).collect()
}

/// nginx (Debian's `/usr/sbin/nginx`) in the foreground with a config of its own, as an
/// HTTP/1.1 or h2c node. Locations:
///
/// - `/echo`: `200` and one `key=value` line each for what nginx saw: `method`, `host`
///   (`$host`, no port), `http_host` (the Host header as sent), `uri` (`$request_uri`, query
///   included), `xff`, `xfh`, `te`, `protocol` (`$server_protocol`);
/// - `/post`: reads the request body (proxied to an inner server on a unix socket, which
///   sees it with a length) and answers `len=N`;
/// - `/files/`: the static files [`NGINX_FILE`] and [`NGINX_SMALL_FILE`];
/// - `/dav/`: `PUT` stores the body under the root (read it with [`Nginx::stored`]);
/// - [`NGINX_CHUNKED_PAGE`].
pub struct Nginx {
    pub addr: SocketAddr,
    pub protocol: NginxProtocol,
    root: PathBuf,
    _server: Server,
}

impl Nginx {
    pub fn start(protocol: NginxProtocol) -> Nginx {
        let nginx = require("nginx", "apt-get install nginx");
        let mut last_error = String::new();
        // A free port can be taken by someone else before nginx binds it; try a few.
        for _ in 0..5 {
            let dir = unique_dir("nginx");
            let root = dir.join("www");
            for sub in ["www/files", "www/chunked", "www/dav", "tmp"] {
                std::fs::create_dir_all(dir.join(sub)).expect("create nginx dirs");
            }
            std::fs::write(root.join("files/1m.bin"), file_bytes(NGINX_FILE_SIZE))
                .expect("write the 1 MiB file");
            std::fs::write(root.join("files/4k.bin"), file_bytes(NGINX_SMALL_FILE_SIZE))
                .expect("write the 4 KiB file");
            std::fs::write(root.join("chunked/page.html"), chunked_page()).expect("write the page");
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, nginx_conf(&dir, &root, addr, protocol))
                .expect("write nginx.conf");
            let mut cmd = Command::new(&nginx);
            cmd.arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf)
                .args(["-e", "stderr"]);
            let mut server = Server::spawn("nginx", cmd, Some(dir));
            match server.wait_accepting(addr) {
                Ok(()) => {
                    return Nginx {
                        addr,
                        protocol,
                        root,
                        _server: server,
                    }
                }
                // Only a port taken meanwhile is worth another try.
                Err(e) if e.contains("Address already in use") => last_error = e,
                Err(e) => panic!("nginx did not start: {e}"),
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The file a `PUT` to `/dav/NAME` stored, or `None` when there is none.
    pub fn stored(&self, path: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root.join(path.trim_start_matches('/'))).ok()
    }
}

fn nginx_conf(dir: &Path, root: &Path, addr: SocketAddr, protocol: NginxProtocol) -> String {
    let d = dir.display();
    let listen = match protocol {
        NginxProtocol::Http1 => format!("{addr}"),
        NginxProtocol::H2c => format!("{addr} http2"),
    };
    // master_process off: one process, the one the test kills. Running as root, nginx
    // would switch its workers to `user`; without a master there are no workers to switch.
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log stderr info;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  default_type application/octet-stream;
  types {{ text/html html; }}
  client_max_body_size 64m;
  keepalive_requests 100000;
  server {{
    listen unix:{d}/inner.sock;
    location / {{ return 200 "len=$http_content_length\n"; }}
  }}
  server {{
    listen {listen};
    root {root};
    location = /echo {{
      default_type text/plain;
      return 200 "method=$request_method\nhost=$host\nhttp_host=$http_host\nuri=$request_uri\nxff=$http_x_forwarded_for\nxfh=$http_x_forwarded_host\nte=$http_te\nprotocol=$server_protocol\n";
    }}
    location = /post {{ proxy_pass http://unix:{d}/inner.sock:/len; }}
    location /files/ {{ }}
    location /dav/ {{ dav_methods PUT DELETE; create_full_put_path on; }}
    location /chunked/ {{ ssi on; add_header Trailer x-trailer-check; add_trailer x-trailer-check "nginx-$request_method"; }}
  }}
}}
"#,
        root = root.display()
    )
}

// ---------------------------------------------------------------------------------------
// hypercorn
// ---------------------------------------------------------------------------------------

/// hypercorn (PyPI) serving `tests/interop/asgi_app.py` on one port for HTTP/1.1 and h2c
/// with prior knowledge. See that file for its routes.
pub struct Hypercorn {
    pub addr: SocketAddr,
    _server: Server,
}

impl Hypercorn {
    pub fn start() -> Hypercorn {
        // `python3 -m hypercorn` is the `hypercorn` command of the same Python that runs
        // the other scripts, with no dependence on where pip put the command.
        let python = require_python(&[("hypercorn", "hypercorn")]);
        let mut cmd = Command::new(python);
        // --workers 0: serve in this process (the one the test kills), no worker children.
        cmd.current_dir(interop_dir()).args([
            "-m",
            "hypercorn",
            "--workers",
            "0",
            "--bind",
            "127.0.0.1:0",
            "--keep-alive",
            "30",
            "asgi_app:app",
        ]);
        let mut server = Server::spawn("hypercorn", cmd, None);
        let addr = server.wait_line("`Running on http://127.0.0.1:PORT`", |line| {
            let rest = line.split("Running on http://").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        });
        if let Err(e) = server.wait_accepting(addr) {
            panic!("{e}");
        }
        Hypercorn {
            addr,
            _server: server,
        }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

// ---------------------------------------------------------------------------------------
// grpcio
// ---------------------------------------------------------------------------------------

const GRPC_MODULES: &[(&str, &str)] = &[
    ("grpc", "grpcio"),
    ("grpc_health.v1.health", "grpcio-health-checking"),
];

/// `tests/interop/grpc_server.py`: a grpcio (C-core) server with generic handlers and the
/// standard health service. See that file for its methods.
pub struct GrpcServer {
    pub addr: SocketAddr,
    _server: Server,
}

impl GrpcServer {
    pub fn start() -> GrpcServer {
        let (addr, server) = python_server("grpc_server.py", GRPC_MODULES);
        GrpcServer {
            addr,
            _server: server,
        }
    }
}

/// Run `tests/interop/SCRIPT` (which binds 127.0.0.1:0 and prints `LISTENING PORT`) once
/// python3 can import `modules`; returns once it accepts connections.
fn python_server(script: &str, modules: &[(&str, &str)]) -> (SocketAddr, Server) {
    let python = require_python(modules);
    let mut cmd = Command::new(python);
    cmd.arg(interop_dir().join(script));
    let mut server = Server::spawn(script, cmd, None);
    let port: u16 = server.wait_line("`LISTENING PORT`", |line| {
        line.strip_prefix("LISTENING ")?.trim().parse().ok()
    });
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    if let Err(e) = server.wait_accepting(addr) {
        panic!("{e}");
    }
    (addr, server)
}

// ---------------------------------------------------------------------------------------
// A node that reports request trailers
// ---------------------------------------------------------------------------------------

/// `tests/interop/trailers_node.py`: HTTP/1.1 (h11) and h2c (h2) on one port, answering
/// every request with JSON that includes the request's trailers. Those are the protocol
/// libraries of hypercorn, which itself gives an application no request trailers.
pub struct TrailersNode {
    pub addr: SocketAddr,
    _server: Server,
}

impl TrailersNode {
    pub fn start() -> TrailersNode {
        // hypercorn depends on both; with it installed they are there.
        let (addr, server) = python_server("trailers_node.py", &[("h11", "h11"), ("h2", "h2")]);
        TrailersNode {
            addr,
            _server: server,
        }
    }
}

/// `nghttp` (h2c prior knowledge) sending `body` from a file with `trailers` (`"name:
/// value"`) after it; returns what it printed (the response body).
pub fn nghttp_with_trailers(url: &str, body: &Path, trailers: &[&str]) -> Ran {
    let program = require("nghttp", "apt-get install nghttp2-client");
    let mut cmd = Command::new(program);
    cmd.arg("-d").arg(body);
    for t in trailers {
        cmd.arg(format!("--trailer={t}"));
    }
    cmd.arg(url);
    run_bounded(&format!("nghttp {url}"), cmd, CLIENT_RUN)
}

/// `tests/interop/grpc_client.py` aimed at one target.
#[derive(Clone, Debug)]
pub struct GrpcClient {
    target: SocketAddr,
    /// TLS: the CA file to verify with and the name to verify.
    tls: Option<(PathBuf, String)>,
    authority: Option<String>,
}

impl GrpcClient {
    /// Plaintext HTTP/2 (h2c prior knowledge) to `target`.
    pub fn plaintext(target: SocketAddr) -> GrpcClient {
        GrpcClient {
            target,
            tls: None,
            authority: None,
        }
    }

    /// TLS (ALPN h2) to `target`, verifying its certificate against `ca` for `name`.
    pub fn tls(target: SocketAddr, ca: &Path, name: &str) -> GrpcClient {
        GrpcClient {
            target,
            tls: Some((ca.to_path_buf(), name.to_string())),
            authority: None,
        }
    }

    /// Send `authority` as `:authority` (for routing by host).
    pub fn authority(mut self, authority: &str) -> GrpcClient {
        self.authority = Some(authority.to_string());
        self
    }

    /// Run `command` (see the script) and parse the one JSON object it prints.
    pub fn run(&self, command: &[&str]) -> serde_json::Value {
        let python = require_python(GRPC_MODULES);
        let mut cmd = Command::new(python);
        cmd.arg(interop_dir().join("grpc_client.py"));
        if let Some((ca, name)) = &self.tls {
            cmd.arg("--ca").arg(ca).arg("--server-name").arg(name);
        }
        if let Some(a) = &self.authority {
            cmd.arg("--authority").arg(a);
        }
        // Options before the target: argparse takes no option after the positionals.
        cmd.arg(self.target.to_string()).args(command);
        let what = format!("grpc_client.py {} {}", self.target, command.join(" "));
        let ran = run_bounded(&what, cmd, CLIENT_RUN);
        serde_json::from_slice(&ran.stdout).unwrap_or_else(|e| {
            panic!(
                "{what} printed no JSON ({e}); exit {:?}\nstdout: {}\nstderr: {}",
                ran.code,
                ran.stdout_text(),
                ran.stderr
            )
        })
    }

    /// Every scenario; see the script for what the result holds.
    pub fn scenarios(&self) -> serde_json::Value {
        self.run(&["scenarios"])
    }
}

// ---------------------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------------------

/// Which HTTP curl speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CurlHttp {
    Http10,
    Http11,
    /// HTTP/2 with prior knowledge over plain TCP.
    H2c,
}

/// What curl received.
#[derive(Clone, Debug)]
pub struct CurlResponse {
    /// curl's exit code: 0, or what went wrong (18: body cut short, 92: HTTP/2 stream
    /// error, 56: failure receiving, 28: timeout).
    pub exit_code: Option<i32>,
    pub stderr: String,
    pub status: u16,
    /// `%{http_version}`: `1.0`, `1.1` or `2`.
    pub http_version: String,
    /// The final response's header fields.
    pub headers: Fields,
    /// Trailer fields after the body.
    pub trailers: Fields,
    pub body: Vec<u8>,
}

impl CurlResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_field(&self.headers, name)
    }

    pub fn trailer(&self, name: &str) -> Option<&str> {
        find_field(&self.trailers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `true` when curl finished without an error.
    pub fn ok(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// One line for assertion messages.
    pub fn summary(&self) -> String {
        format!(
            "curl exit {:?}, HTTP/{} {}, {} body bytes, {} trailers{}",
            self.exit_code,
            self.http_version,
            self.status,
            self.body.len(),
            self.trailers.len(),
            if self.stderr.trim().is_empty() {
                String::new()
            } else {
                format!(", stderr: {}", self.stderr.trim())
            }
        )
    }
}

/// A short description of a body for comparing outcomes in assertion messages: a short
/// body as text, a longer one as its length and a hash.
pub fn describe_body(body: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    if body.len() <= 200 {
        return format!("{:?}", String::from_utf8_lossy(body));
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    format!("{} bytes, hash {:016x}", body.len(), h.finish())
}

/// Header or trailer fields in the order received: (lower-case name, value).
pub type Fields = Vec<(String, String)>;

fn find_field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Run curl with `http` on `url`, plus `args` (e.g. `["-X", "POST", "--data-binary",
/// "@FILE"]`). A failed transfer is returned (see [`CurlResponse::exit_code`]), not a panic.
pub fn curl(http: CurlHttp, url: &str, args: &[&str]) -> CurlResponse {
    let program = require("curl", "apt-get install curl");
    let dir = unique_dir("curl");
    let body_file = dir.join("body");
    let head_file = dir.join("head");
    let mut cmd = Command::new(program);
    cmd.args(["-sS", "--max-time", "60", "-o"])
        .arg(&body_file)
        .arg("-D")
        .arg(&head_file)
        .args(["-w", "%{http_code} %{http_version}"])
        .arg(match http {
            CurlHttp::Http10 => "--http1.0",
            CurlHttp::Http11 => "--http1.1",
            CurlHttp::H2c => "--http2-prior-knowledge",
        })
        .args(args)
        .arg(url);
    let ran = run_bounded(&format!("curl {url}"), cmd, CLIENT_RUN);
    let written = ran.stdout_text();
    let mut w = written.split_whitespace();
    let status = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let http_version = w.next().unwrap_or("").to_string();
    let head = std::fs::read(&head_file).unwrap_or_default();
    let (headers, trailers) = parse_curl_head(&String::from_utf8_lossy(&head));
    // For HEAD (`--head`) curl writes the response head into the body file too.
    let head_only = args.iter().any(|a| *a == "--head" || *a == "-I");
    let body = match head_only {
        true => Vec::new(),
        false => std::fs::read(&body_file).unwrap_or_default(),
    };
    let _ = std::fs::remove_dir_all(&dir);
    CurlResponse {
        exit_code: ran.code,
        stderr: ran.stderr,
        status,
        http_version,
        headers,
        trailers,
        body,
    }
}

/// One way to reach a node: a name for messages, the protocol curl speaks, the base URL.
/// The first run of a comparison goes straight to the node: the reference.
pub type Run<'a> = (&'a str, CurlHttp, &'a str);

/// One scenario of a comparison: its name, curl's arguments, the path, and `how` to view
/// the outcome (whatever the test's view function needs).
pub struct Case<'a, T> {
    pub name: &'a str,
    pub args: Vec<&'a str>,
    pub path: &'a str,
    pub how: T,
}

/// Run every case on every run with `common_args` first, describe each outcome with
/// `view(how, run name, response)`, and return one message for each outcome whose view
/// differs from the first run's. Panics when curl fails on the first run: the reference
/// itself is broken, and no comparison with it means anything.
pub fn compare_runs<T>(
    runs: &[Run],
    cases: &[Case<T>],
    common_args: &[&str],
    view: impl Fn(&T, &str, &CurlResponse) -> String,
) -> Vec<String> {
    let mut differ = Vec::new();
    for case in cases {
        let mut outcomes = Vec::new();
        for (run, http, base) in runs {
            let mut args = common_args.to_vec();
            args.extend(case.args.iter().copied());
            let r = curl(*http, &format!("{base}{}", case.path), &args);
            assert!(
                !outcomes.is_empty() || r.ok(),
                "{} ({run}), the reference run: {}",
                case.name,
                r.summary()
            );
            outcomes.push((run, view(&case.how, run, &r)));
        }
        let Some(((_, reference), rest)) = outcomes.split_first() else {
            continue;
        };
        for (run, got) in rest {
            if got != reference {
                differ.push(format!(
                    "  {} ({run}):\n    direct:  {reference}\n    through: {got}",
                    case.name
                ));
            }
        }
    }
    differ
}

/// Split curl's `-D` output: header blocks (interim 1xx ones first) each start with a
/// status line and end with an empty line; lines after the last block are trailers.
fn parse_curl_head(text: &str) -> (Fields, Fields) {
    let mut headers = Vec::new();
    let mut trailers = Vec::new();
    let mut in_head = false;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("HTTP/") {
            headers.clear();
            trailers.clear();
            in_head = true;
            continue;
        }
        if line.is_empty() {
            in_head = false;
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let field = (k.trim().to_ascii_lowercase(), v.trim().to_string());
        if in_head {
            headers.push(field);
        } else {
            trailers.push(field);
        }
    }
    (headers, trailers)
}

// ---------------------------------------------------------------------------------------
// ab and h2load
// ---------------------------------------------------------------------------------------

/// What `ab` (ApacheBench, HTTP/1.0) reported.
#[derive(Clone, Debug)]
pub struct AbReport {
    pub complete: u64,
    pub failed: u64,
    /// Responses other than 2xx (ab prints the line only when there are some).
    pub non_2xx: u64,
    pub keep_alive: u64,
    /// The body length of the first response; ab counts a later one that differs as a
    /// failed request (`Length`).
    pub document_length: u64,
    /// ab's last line when it gave up before the end (exit code 1).
    pub aborted: Option<String>,
    /// ab's whole output, for assertion messages.
    pub output: String,
}

/// `ab -n n -c c [-k] url`.
pub fn ab(url: &str, n: u32, c: u32, keep_alive: bool) -> AbReport {
    let program = require("ab", "apt-get install apache2-utils");
    let mut cmd = Command::new(program);
    cmd.args(["-n", &n.to_string(), "-c", &c.to_string(), "-s", "30"]);
    if keep_alive {
        cmd.arg("-k");
    }
    cmd.arg(url);
    let ran = run_bounded(&format!("ab {url}"), cmd, CLIENT_RUN);
    let output = format!("{}{}", ran.stdout_text(), ran.stderr);
    let field = |name: &str| -> Option<u64> {
        output
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    };
    // An aborted run ("apr_socket_recv: Connection reset by peer", "Test aborted after
    // 10 failures") prints only how many requests completed before.
    let aborted = field("Complete requests:").is_none();
    let complete = field("Complete requests:")
        .or_else(|| {
            output
                .lines()
                .find_map(|l| l.strip_prefix("Total of "))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    AbReport {
        aborted: aborted.then(|| {
            output
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_string()
        }),
        complete,
        failed: field("Failed requests:").unwrap_or(0),
        non_2xx: field("Non-2xx responses:").unwrap_or(0),
        keep_alive: field("Keep-Alive requests:").unwrap_or(0),
        document_length: field("Document Length:").unwrap_or(0),
        output,
    }
}

/// What `h2load` reported.
#[derive(Clone, Debug, Default)]
pub struct H2loadReport {
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    /// h2load's whole output, for assertion messages.
    pub output: String,
}

/// `h2load -n n -c c -m m url` (h2c prior knowledge for an `http://` URL).
pub fn h2load(url: &str, n: u32, c: u32, m: u32) -> H2loadReport {
    let program = require("h2load", "apt-get install nghttp2-client");
    let mut cmd = Command::new(program);
    cmd.args([
        "-n",
        &n.to_string(),
        "-c",
        &c.to_string(),
        "-m",
        &m.to_string(),
        url,
    ]);
    let ran = run_bounded(&format!("h2load {url}"), cmd, CLIENT_RUN);
    let output = format!("{}{}", ran.stdout_text(), ran.stderr);
    let mut r = H2loadReport {
        output: output.clone(),
        ..H2loadReport::default()
    };
    // "requests: 1000 total, 1000 started, 1000 done, 1000 succeeded, 0 failed, 0 errored, 0 timeout"
    // "status codes: 1000 2xx, 0 3xx, 0 4xx, 0 5xx"
    let counts = |prefix: &str| -> Option<Vec<(String, u64)>> {
        let line = output.lines().find_map(|l| l.strip_prefix(prefix))?;
        Some(
            line.split(',')
                .filter_map(|part| {
                    let mut p = part.split_whitespace();
                    let n = p.next()?.parse().ok()?;
                    Some((p.next()?.to_string(), n))
                })
                .collect(),
        )
    };
    let requests = counts("requests:").unwrap_or_else(|| {
        panic!(
            "h2load printed no `requests:` line (exit {:?}):\n{output}",
            ran.code
        )
    });
    for (k, n) in requests {
        match k.as_str() {
            "total" => r.total = n,
            "succeeded" => r.succeeded = n,
            "failed" => r.failed = n,
            "errored" => r.errored = n,
            "timeout" => r.timeout = n,
            _ => {}
        }
    }
    for (k, n) in counts("status codes:").unwrap_or_default() {
        match k.as_str() {
            "2xx" => r.status_2xx = n,
            "3xx" => r.status_3xx = n,
            "4xx" => r.status_4xx = n,
            "5xx" => r.status_5xx = n,
            _ => {}
        }
    }
    r
}

// ---------------------------------------------------------------------------------------
// Switchyard in front of one node
// ---------------------------------------------------------------------------------------

/// A config with one plain listener `http`, the admin API, and a catch-all route to the
/// pool `node` with `node` as its only node; `pool_extra` is spliced into the pool (lines
/// indented by 4 spaces, e.g. `"    upstream_protocol: h2\n"`). The access log goes to
/// stderr, which a failing test prints: each request's status and upstream outcome.
pub fn one_node_config(node: SocketAddr, pool_extra: &str) -> String {
    format!(
        "listeners:\n  - name: http\n    bind: 127.0.0.1:0\nadmin:\n  bind: 127.0.0.1:0\n\
         access_log: {{format: json, path: stderr}}\n\
         routes:\n  - pool: node\npools:\n  node:\n    nodes: [{{addr: \"{node}\"}}]\n{pool_extra}"
    )
}
