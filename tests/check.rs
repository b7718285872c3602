//! `switchyard check`: exit codes and `FILE:LINE:COLUMN:` error positions (1-based,
//! pointing at the offending key or value, DESIGN.md "Decisions").

mod common;

use std::path::{Path, PathBuf};

use common::{check, unique_dir};

/// A temp dir holding one config file; removed on drop.
struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    fn new(yaml: &str) -> ConfigFile {
        let dir = unique_dir("check");
        let path = dir.join("switchyard.yaml");
        std::fs::write(&path, yaml).expect("write config");
        ConfigFile { dir, path }
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// 1-based (line, column) of the first occurrence of `needle` on a line containing
/// `line_has` (both must be found).
fn position(yaml: &str, line_has: &str, needle: &str) -> (usize, usize) {
    for (i, line) in yaml.lines().enumerate() {
        if line.contains(line_has) {
            let col = line.find(needle).expect("needle on the line");
            return (i + 1, col + 1);
        }
    }
    panic!("no line containing {line_has:?}");
}

/// The error lines (`FILE:...`) of a failed check.
fn error_lines(stdout: &str, file: &Path) -> Vec<String> {
    let prefix = format!("{}:", file.display());
    stdout
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

const VALID: &str = "\
listeners:
  - name: http
    bind: 127.0.0.1:8080
routes:
  - path_prefix: /api
    pool: api
  - pool: web
pools:
  web:
    strategy: round_robin
    nodes:
      - addr: 127.0.0.1:9001
  api:
    strategy: least_conn
    nodes:
      - addr: 127.0.0.1:9002
        weight: 2
";

#[test]
fn shipped_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    assert!(path.exists(), "{} is missing", path.display());
    let out = check(&path);
    assert_eq!(
        out.code,
        Some(0),
        "check of the example failed:\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
}

#[test]
fn valid_config_exits_0_with_a_one_line_summary() {
    let f = ConfigFile::new(VALID);
    let out = check(&f.path);
    assert_eq!(
        out.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "one summary line: {:?}", out.stdout);
}

#[test]
fn unknown_key_is_reported_at_the_key() {
    let yaml = VALID.replace(
        "    strategy: least_conn\n",
        "    strategy: least_conn\n    timeoutz: 5s\n",
    );
    let f = ConfigFile::new(&yaml);
    let out = check(&f.path);
    assert_eq!(
        out.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    let (line, col) = position(&yaml, "timeoutz", "timeoutz");
    assert_eq!((line, col), (15, 5), "test fixture sanity");
    let errors = error_lines(&out.stdout, &f.path);
    assert_eq!(errors.len(), 1, "exactly one error line: {:?}", out.stdout);
    let want = format!("{}:{line}:{col}: ", f.path.display());
    assert!(
        errors[0].starts_with(&want),
        "expected an error at {want:?}, got {:?}",
        errors[0]
    );
    assert!(
        errors[0].contains("timeoutz"),
        "the message names the key: {}",
        errors[0]
    );
}

#[test]
fn route_to_missing_pool_is_reported_at_the_pool_value() {
    let yaml = VALID.replace("    pool: api\n", "    pool: apii\n");
    let f = ConfigFile::new(&yaml);
    let out = check(&f.path);
    assert_eq!(
        out.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    let (line, col) = position(&yaml, "pool: apii", "apii");
    assert_eq!((line, col), (6, 11), "test fixture sanity");
    let errors = error_lines(&out.stdout, &f.path);
    assert_eq!(errors.len(), 1, "exactly one error line: {:?}", out.stdout);
    let want = format!("{}:{line}:{col}: ", f.path.display());
    assert!(
        errors[0].starts_with(&want),
        "expected an error at {want:?}, got {:?}",
        errors[0]
    );
    assert!(
        errors[0].contains("apii"),
        "the message names the pool: {}",
        errors[0]
    );
}

#[test]
fn every_error_is_reported_in_one_run() {
    let yaml = VALID
        .replace("    pool: api\n", "    pool: apii\n")
        .replace(
            "    strategy: least_conn\n",
            "    strategy: least_conn\n    timeoutz: 5s\n",
        );
    let f = ConfigFile::new(&yaml);
    let out = check(&f.path);
    assert_eq!(
        out.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    let errors = error_lines(&out.stdout, &f.path);
    let p = f.path.display();
    assert_eq!(
        errors.len(),
        2,
        "two errors, one per line: {:?}",
        out.stdout
    );
    assert!(
        errors.iter().any(|e| e.starts_with(&format!("{p}:6:11: "))),
        "missing pool error: {errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.starts_with(&format!("{p}:15:5: "))),
        "unknown key error: {errors:?}"
    );
}

#[test]
fn bad_enum_value_lists_the_valid_ones() {
    let yaml = VALID.replace("strategy: round_robin", "strategy: round_robbin");
    let f = ConfigFile::new(&yaml);
    let out = check(&f.path);
    assert_eq!(
        out.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    let (line, col) = position(&yaml, "round_robbin", "round_robbin");
    let errors = error_lines(&out.stdout, &f.path);
    assert_eq!(errors.len(), 1, "exactly one error line: {:?}", out.stdout);
    assert!(
        errors[0].starts_with(&format!("{}:{line}:{col}: ", f.path.display())),
        "expected the error at {line}:{col}: {:?}",
        errors[0]
    );
    for valid in [
        "round_robin",
        "weighted_round_robin",
        "least_conn",
        "p2c_ewma",
        "consistent_hash",
        "random",
    ] {
        assert!(
            errors[0].contains(valid),
            "the message lists {valid}: {}",
            errors[0]
        );
    }
}
