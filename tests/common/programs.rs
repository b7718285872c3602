//! Third-party programs the tests drive (curl, ab, h2load, nginx, Python with grpcio, ...):
//! find them or fail with the sentence that says what to install — a test never skips
//! silently. Every run is bounded by a timeout and killed past it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{blocking, WAIT};

/// The path of `program` on `PATH` (or `program` itself when it names a file); panics
/// with `install` (what to install) when it is not there.
pub fn require(program: &str, install: &str) -> PathBuf {
    find_program(program).unwrap_or_else(|| {
        panic!("{program} not found on PATH: {install}, then run the tests again")
    })
}

fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    // Debian puts daemons such as nginx in /usr/sbin, which a non-root PATH may lack.
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// `python3`, checked to import every module of `modules` (`(module, pip package)`);
/// panics naming the packages to install otherwise.
pub fn require_python(modules: &[(&str, &str)]) -> PathBuf {
    let python = require("python3", "apt-get install python3");
    let imports: Vec<&str> = modules.iter().map(|(m, _)| *m).collect();
    let mut cmd = Command::new(&python);
    cmd.arg("-c").arg(format!("import {}", imports.join(", ")));
    let ran = run_bounded("python3 importing the interop modules", cmd, WAIT);
    if ran.code != Some(0) {
        let packages: Vec<&str> = modules.iter().map(|(_, p)| *p).collect();
        panic!(
            "python3 cannot import {}: pip install {}, then run the tests again\n{}",
            imports.join(", "),
            packages.join(" "),
            ran.stderr
        );
    }
    python
}

/// What a finished program printed, and how it exited.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Ran {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Run `cmd` to completion (stdin closed), killing it and panicking with `what` when it
/// takes longer than `timeout`.
pub fn run_bounded(what: &str, mut cmd: Command, timeout: Duration) -> Ran {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {:?}: {e}", cmd.get_program()));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = blocking(|| loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {timeout:?}");
            }
        }
    });
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Ran {
        code: status.code(),
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Read a pipe to its end on a thread of its own (so neither pipe can fill and block).
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut out);
        }
        out
    })
}

/// [`run_bounded`], named after the command.
pub fn run(cmd: Command, timeout: Duration) -> Ran {
    let what = format!("{cmd:?}");
    run_bounded(&what, cmd, timeout)
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
    let stdout = out.stdout_text();
    assert!(
        out.code == Some(0),
        "{script} {args:?} failed ({:?}): {stdout}\n{}",
        out.code,
        out.stderr
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {stdout}\n{}", out.stderr))
}
