//! Configuration: parse the YAML file, validate it, and report every problem with
//! `FILE:LINE:COLUMN: message`.
//!
//! The steps, one file each:
//! - `tree.rs` reads the YAML with yaml-rust2's marked parser into a tree that knows the
//!   line and column of every key and value (a syntax error stops here: nothing after it
//!   can be trusted);
//! - `de.rs` deserializes that tree into the typed schema of `model.rs` (serde, unknown keys
//!   rejected), reporting every type error and unknown key rather than only the first;
//! - `validate.rs` runs the semantic checks (routes to missing pools, duplicate binds,
//!   weights out of range, ...) on the typed config and names each problem by key path,
//!   which the tree turns back into a position; it loads the certificate and CA files the
//!   config names through `tls::certs`, and returns them with the config (`TlsMaterial`),
//!   so that what was checked is what runs;
//! - `values.rs` holds the syntax of values given as text (bind and node addresses, host
//!   patterns, path prefixes), which the Redis registry shares.
//!
//! When the tree pass finds nothing wrong, the config that runs is serde_yaml's typed
//! parse of the same text (checked to agree with the tree pass in debug builds).
//!
//! This layer imports only `tls::certs` (for those checks) and `util`: nothing of the
//! running process.
//!
//! All problems come back together, sorted by position. Entry points: [`load`] (the file
//! at a path; relative paths inside it resolve against its directory), [`parse_str`] (text,
//! for tests and reloads) and [`check_report`] (what `switchyard check` prints).

pub mod model;
pub mod validate;
pub mod values;

mod de;
mod tree;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

pub use model::*;
/// How error positions count lines (also what the config fuzz target checks them with).
pub use tree::yaml_lines;
pub use validate::TlsMaterial;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the problem has no position (e.g. the file cannot be read).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// Every problem found in a config file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A parsed, validated config and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    /// The file it was read from.
    pub path: PathBuf,
    /// Directory relative paths in the config resolve against.
    pub base_dir: PathBuf,
    /// [`content_hash`] of the text it was parsed from, so the file watcher can tell a
    /// real change from an event about content already loaded.
    pub source_hash: u64,
    /// The certificates and CA files it names, as validation loaded and checked them.
    pub tls: TlsMaterial,
}

/// Read, parse and validate the config file at `path`.
///
/// `path` is used in messages exactly as given. Every problem is returned, sorted by line
/// and column; a file that cannot be read gives one error without a position.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(path, &e))?;
    load_text(path, &text)
}

/// The error for a config file that cannot be read.
pub fn unreadable(path: &Path, e: &std::io::Error) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        message: format!("cannot read the config file: {e}"),
    }])
}

/// Parse and validate `text`, already read from the file at `path` (for callers that read
/// the file themselves, e.g. without blocking an async runtime).
pub fn load_text(path: &Path, text: &str) -> Result<LoadedConfig, ConfigErrors> {
    let file = path.display().to_string();
    let base_dir = base_dir_of(path);
    let (config, tls) = parse_in(text, &file, &base_dir)?;
    Ok(LoadedConfig {
        config,
        tls,
        path: path.to_path_buf(),
        base_dir,
        source_hash: content_hash(text.as_bytes()),
    })
}

/// A hash of a config file's bytes (not cryptographic: change detection only).
pub fn content_hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Parse and validate config text; `file` is the name used in error messages, and its
/// directory is where relative paths in the config resolve (`.` for a bare name).
pub fn parse_str(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    parse_in(text, file, &base_dir_of(Path::new(file))).map(|(config, _)| config)
}

/// What `switchyard check` prints: `(true, "config OK: ...")` with a one-line summary, or
/// `(false, errors)` with one `FILE:LINE:COLUMN: message` line per problem (no trailing
/// newline in either case). The caller prints the text and exits 0 or 1.
pub fn check_report(path: &Path) -> (bool, String) {
    match load(path) {
        Ok(loaded) => (true, summary(&loaded.config)),
        Err(errors) => (false, errors.to_string()),
    }
}

/// One line describing a valid config, e.g.
/// `config OK: 2 listeners, 3 routes, 2 pools, 5 static nodes`.
pub fn summary(config: &Config) -> String {
    fn count(n: usize, one: &str, many: &str) -> String {
        format!("{n} {}", if n == 1 { one } else { many })
    }
    let nodes: usize = config.pools.values().map(|p| p.nodes.len()).sum();
    let mut s = format!(
        "config OK: {}, {}, {}, {}",
        count(config.listeners.len(), "listener", "listeners"),
        count(config.routes.len(), "route", "routes"),
        count(config.pools.len(), "pool", "pools"),
        count(nodes, "static node", "static nodes"),
    );
    if config.redis.is_some() {
        s.push_str(", redis registry");
    }
    s
}

fn base_dir_of(path: &Path) -> PathBuf {
    path.parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The pipeline: syntax → typed parse (all type errors) → semantic checks (all problems),
/// which also load the TLS files the config names.
fn parse_in(
    text: &str,
    file: &str,
    base_dir: &Path,
) -> Result<(Config, TlsMaterial), ConfigErrors> {
    // The lines as the YAML scanner counts them (after the byte order mark it skips), to
    // keep every reported position inside the file.
    let lines = tree::yaml_lines(text.strip_prefix('\u{feff}').unwrap_or(text));
    let to_errors = |file: &str, problems| to_errors(file, problems, &lines);
    let mut doc = match tree::parse(text) {
        Ok(doc) => doc,
        Err(syntax) => return Err(to_errors(file, vec![syntax])),
    };
    let mut problems = std::mem::take(&mut doc.problems);
    let (config, type_problems) = de::from_doc::<Config>(&mut doc);
    problems.extend(type_problems);
    let Some(config) = config else {
        return Err(to_errors(file, problems));
    };
    // Positions come from the tree the typed parse accepted, so `routes[2]` in a path is
    // `config.routes[2]` even if an invalid list item before it was dropped.
    let positions = tree::Positions::build(&doc.root);
    let (issues, tls) = validate::validate(&config, &positions, base_dir);
    for issue in issues {
        if positions.suppressed(&issue.scope) {
            continue;
        }
        let display = positions.display(&issue.path);
        let message = if display.is_empty() {
            issue.message
        } else {
            format!("{display}: {}", issue.message)
        };
        problems.push(tree::Problem::new(
            positions.mark(&issue.path, issue.target),
            message,
        ));
    }
    if !problems.is_empty() {
        return Err(to_errors(file, problems));
    }
    // The config that runs is serde_yaml's typed parse of the same text; the tree pass
    // above exists to find *every* problem with its position, which serde_yaml (stopping
    // at the first) cannot. The two read YAML the same way; should they ever disagree,
    // serde_yaml's verdict is reported rather than trusting either silently.
    match serde_yaml::from_str::<Config>(text) {
        Ok(typed) => {
            debug_assert_eq!(format!("{typed:?}"), format!("{config:?}"));
            Ok((typed, tls))
        }
        Err(e) => {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            let mark = tree::Mark { line, column }.clamp(&lines);
            Err(ConfigErrors(vec![ConfigError {
                file: file.to_string(),
                line: mark.line,
                column: mark.column,
                message: escape_controls(&e.to_string()),
            }]))
        }
    }
}

fn to_errors(file: &str, mut problems: Vec<tree::Problem>, lines: &[&str]) -> ConfigErrors {
    for p in &mut problems {
        p.mark = p.mark.clamp(lines);
    }
    problems.sort_by_key(|p| p.mark); // stable: equal positions keep discovery order
    problems.dedup();
    ConfigErrors(
        problems
            .into_iter()
            .map(|p| ConfigError {
                file: file.to_string(),
                line: p.mark.line,
                column: p.mark.column,
                message: escape_controls(&p.message),
            })
            .collect(),
    )
}

/// `message` with every control character written as an escape (`\n`, `\t`, `\u{1b}`):
/// messages quote text from the file, and each error must stay on its one line, with no
/// byte from the file reaching the terminal as a control sequence.
pub(crate) fn escape_controls(message: &str) -> String {
    if !message.chars().any(char::is_control) {
        return message.to_string();
    }
    let mut out = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
