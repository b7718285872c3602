//! Third-party programs the tests drive (ApacheBench, curl, Python with grpcio and h2): find
//! them or fail with the sentence that says what to install — a test never skips silently.
//! Every run is bounded by a timeout and killed past it.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::blocking;

/// `name` on `PATH`, or a panic naming the package to install.
pub fn require(name: &str, install: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not on PATH: install it with `{install}` to run this test")
        })
}

/// `python3`, with every module of `modules` importable (`(module, pip package)`).
pub fn require_python(modules: &[(&str, &str)]) -> PathBuf {
    let python = require("python3", "apt-get install python3");
    for (module, package) in modules {
        let ok = Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "the Python module `{module}` is missing: install it with `pip install {package}` to run this test"
        );
    }
    python
}

/// Run `cmd` to completion, killing it after `timeout` (then panicking). Blocks the calling
/// thread without starving a multi-threaded tokio runtime.
pub fn run(mut cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    blocking(move || {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        // Drain the pipes on their own threads so a chatty child cannot fill them and stall.
        let mut out = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let out_t = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut out, &mut v);
            v
        });
        let err_t = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut err, &mut v);
            v
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{what} did not finish within {timeout:?}");
                }
            }
        };
        Output {
            status,
            stdout: out_t.join().unwrap_or_default(),
            stderr: err_t.join().unwrap_or_default(),
        }
    })
}

/// A script of `tests/fixtures/` run with `python`; its stdout parsed as JSON.
pub fn python_json(
    python: &PathBuf,
    script: &str,
    args: &[&str],
    timeout: Duration,
) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(script);
    let mut cmd = Command::new(python);
    cmd.arg(&path).args(args);
    let out = run(cmd, timeout);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} {args:?} failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
