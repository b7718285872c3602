//! The layers of `src/` hold: every import goes downward, and no two files import each other
//! through any chain.
//!
//! Why a test: `lib.rs` and `docs/architecture.md` describe the layers, but only the imports
//! make them true, and one convenient `use` in the wrong direction undoes them silently. This
//! test reads every `src/**/*.rs` with a small Rust lexer (comments, strings and character
//! literals skipped), collects each file's crate-internal imports — `use crate::..`,
//! `use super::..`, `use self::..`, a child module named in a `use` or a path, and
//! `crate::`/`super::`/`self::` paths written in code (`switchyard::` in `main.rs`) — and
//! resolves each to the file that defines the module it names. A parent's `mod child;`
//! declaration is not an import. Code under `#[cfg(test)]` is left out: a unit test may set
//! up whatever it tests from any layer, and it is not part of what ships.
//!
//! It then asserts:
//! 1. no import cycle between files (each cycle is reported with its files) — hence a
//!    folder's `mod.rs` defines nothing its children import: shared types live in a child
//!    file that the `mod.rs` re-exports;
//! 2. every import follows [`LAYERS`] (a layer may import itself and any layer listed after
//!    it) and the narrower rules of [`ONLY`]; each violation is reported with its file,
//!    line and the forbidden edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, top to bottom, and the top-level modules of `src/` in each. A layer may
/// import itself and the layers below it, never one above. `main` is `src/main.rs`.
const LAYERS: &[(&str, &[&str])] = &[
    ("cli", &["main", "cli"]),
    ("control", &["control"]),
    ("downstream", &["downstream"]),
    ("proxy", &["proxy"]),
    ("balance", &["balance"]),
    ("upstream", &["upstream"]),
    ("config", &["config"]),
    ("tls", &["tls"]),
    ("metrics", &["metrics"]),
    ("util", &["util"]),
];

/// Layers that may import less than their place allows: the only module paths (prefixes)
/// their files may import, and why.
const ONLY: &[(&str, &[&str], &str)] = &[
    (
        "upstream",
        &["upstream", "tls", "util"],
        "the transport speaks its own settings and never reads the config, the snapshot or \
         the request path",
    ),
    (
        "config",
        &["config", "tls::certs", "util"],
        "the config checks certificates through tls::certs and knows nothing else of the \
         process",
    ),
    (
        "metrics",
        &["metrics", "util"],
        "metric names and handles sit below everything that records them",
    ),
    (
        "util",
        &["util"],
        "the binary's small helpers import nothing from the crate",
    ),
];

#[test]
fn imports_follow_the_layers_and_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let report = check(&src);
    assert!(report.is_empty(), "\n{report}");
}

/// Everything wrong with the imports under `src`, one line per problem; empty when the
/// layers hold.
fn check(src: &Path) -> String {
    let crate_ = Crate::read(src);
    let mut out = Vec::new();
    for problem in crate_.layer_violations() {
        out.push(problem);
    }
    for (cycle, tangle) in crate_.cycles() {
        let mut line = format!("import cycle: {}", cycle.join(" -> "));
        if tangle.len() + 1 > cycle.len() {
            line.push_str(&format!(
                " — one of the circles through these {} files: {}",
                tangle.len(),
                tangle.join(", ")
            ));
        }
        out.push(line);
    }
    out.join("\n")
}

// ---- the crate's files and their imports ----------------------------------------------

/// One source file: its module path and the imports found in it.
struct File {
    /// Relative to `src/`, e.g. `upstream/mod.rs`.
    rel: String,
    /// `["upstream"]` for `upstream/mod.rs`; empty for `lib.rs`; `["main"]` for `main.rs`.
    module: Vec<String>,
    imports: Vec<Import>,
}

/// One crate-internal path written in a file.
struct Import {
    line: usize,
    /// The path as written, for the report.
    written: String,
    /// The absolute module path it names (items included; resolution trims them).
    target: Vec<String>,
}

struct Crate {
    files: Vec<File>,
    /// Module path → index in `files`.
    modules: BTreeMap<Vec<String>, usize>,
}

impl Crate {
    fn read(src: &Path) -> Crate {
        let mut paths = Vec::new();
        walk(src, &mut paths);
        paths.sort();
        // Files declared only under `#[cfg(test)]` (`#[cfg(test)] mod tests;`) are test code.
        let mut test_only = BTreeSet::new();
        let mut parsed = Vec::new();
        for path in &paths {
            let rel = path
                .strip_prefix(src)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            let module = module_of(&rel);
            let text = std::fs::read_to_string(path).expect("read a source file");
            let scan = Scanner::new(&lex(&text), &module, rel == "main.rs").run();
            for child in &scan.test_children {
                let mut m = module.clone();
                m.push(child.clone());
                test_only.insert(m);
            }
            parsed.push(File {
                rel,
                module,
                imports: scan.imports,
            });
        }
        let files: Vec<File> = parsed
            .into_iter()
            .filter(|f| !test_only.contains(&f.module))
            .collect();
        let modules = files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.module.clone(), i))
            .collect();
        Crate { files, modules }
    }

    /// The file defining the longest module prefix of `path`.
    fn resolve(&self, path: &[String]) -> Option<usize> {
        (0..=path.len())
            .rev()
            .find_map(|n| self.modules.get(&path[..n]).copied())
    }

    /// File → files it imports (self-imports and `lib.rs` left out).
    fn edges(&self) -> Vec<BTreeSet<usize>> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                f.imports
                    .iter()
                    .filter_map(|imp| self.resolve(&imp.target))
                    .filter(|&j| j != i && !self.files[j].module.is_empty())
                    .collect()
            })
            .collect()
    }

    fn layer_violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for f in &self.files {
            let Some(top) = f.module.first() else {
                continue;
            };
            let Some(from) = layer_of(top) else {
                out.push(format!(
                    "src/{}: module `{top}` is in no layer: move it into one of the layer \
                     folders (tests/layering.rs lists them)",
                    f.rel
                ));
                continue;
            };
            for imp in &f.imports {
                let Some(j) = self.resolve(&imp.target) else {
                    continue;
                };
                let target = &self.files[j];
                let Some(to_top) = target.module.first() else {
                    continue;
                };
                let Some(to) = layer_of(to_top) else { continue };
                let edge = format!(
                    "src/{}:{}: `{}` ({} → {})",
                    f.rel, imp.line, imp.written, LAYERS[from].0, LAYERS[to].0
                );
                if to < from {
                    out.push(format!(
                        "{edge}: layer {} may not import layer {}, which is above it",
                        LAYERS[from].0, LAYERS[to].0
                    ));
                    continue;
                }
                if let Some((_, allowed, why)) = ONLY.iter().find(|(l, _, _)| *l == LAYERS[from].0)
                {
                    let module = target.module.join("::");
                    let ok = allowed
                        .iter()
                        .any(|a| module == *a || module.starts_with(&format!("{a}::")));
                    if !ok {
                        out.push(format!(
                            "{edge}: layer {} imports only {} ({why})",
                            LAYERS[from].0,
                            allowed.join(", ")
                        ));
                    }
                }
            }
        }
        out
    }

    /// Every import cycle: one shortest cycle per strongly connected group of files (through
    /// its first file, starting and ending with it), and every file of the group.
    fn cycles(&self) -> Vec<(Vec<String>, Vec<String>)> {
        let edges = self.edges();
        let mut out = Vec::new();
        for group in strongly_connected(&edges) {
            if group.len() < 2 {
                continue;
            }
            let start = *group.iter().next().expect("non-empty");
            let name = |i: &usize| format!("src/{}", self.files[*i].rel);
            let path = cycle_through(start, &group, &edges);
            out.push((
                path.iter().map(name).collect(),
                group.iter().map(name).collect(),
            ));
        }
        out
    }
}

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&top))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `a/b.rs` → `[a, b]`, `a/mod.rs` → `[a]`, `lib.rs` → `[]`, `main.rs` → `[main]`.
fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    let last = parts.pop().unwrap_or_default();
    match last.as_str() {
        "lib.rs" if parts.is_empty() => {}
        "mod.rs" => {}
        name => parts.push(name.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// Tarjan's strongly connected components.
fn strongly_connected(edges: &[BTreeSet<usize>]) -> Vec<BTreeSet<usize>> {
    struct State<'a> {
        edges: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<BTreeSet<usize>>,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in s.edges[v].iter() {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut group = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                group.insert(w);
                if w == v {
                    break;
                }
            }
            s.out.push(group);
        }
    }
    let n = edges.len();
    let mut s = State {
        edges,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

/// A shortest cycle from `start` back to itself inside `group` (breadth first).
fn cycle_through(start: usize, group: &BTreeSet<usize>, edges: &[BTreeSet<usize>]) -> Vec<usize> {
    let mut prev: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &edges[v] {
            if !group.contains(&w) {
                continue;
            }
            if w == start {
                let mut path = vec![start];
                let mut cur = v;
                while cur != start {
                    path.push(cur);
                    cur = prev[&cur];
                }
                path.push(start);
                path.reverse();
                return path;
            }
            if let std::collections::btree_map::Entry::Vacant(e) = prev.entry(w) {
                e.insert(v);
                queue.push_back(w);
            }
        }
    }
    vec![start, start]
}

// ---- a small Rust lexer ----------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    Path,
    Punct(char),
}

/// Identifiers, `::` and single punctuation characters with their line numbers; comments,
/// string, byte-string and character literals, lifetimes and numbers are skipped.
fn lex(text: &str) -> Vec<(Tok, usize)> {
    let b: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let count_lines = |from: usize, to: usize, line: &mut usize| {
        *line += b[from..to.min(b.len())]
            .iter()
            .filter(|&&c| c == '\n')
            .count();
    };
    while i < b.len() {
        let c = b[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
            let start = i;
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            count_lines(start, i, &mut line);
        } else if let Some(end) = raw_string_end(&b, i) {
            count_lines(i, end, &mut line);
            i = end;
        } else if c == '"' || (c == 'b' && b.get(i + 1) == Some(&'"')) {
            let start = i;
            i += if c == 'b' { 2 } else { 1 };
            while i < b.len() && b[i] != '"' {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            count_lines(start, i, &mut line);
        } else if c == '\'' || (c == 'b' && b.get(i + 1) == Some(&'\'')) {
            let q = if c == 'b' { i + 1 } else { i };
            if b.get(q + 1) == Some(&'\\') {
                // An escaped character literal: up to the closing quote.
                i = q + 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(q + 2) == Some(&'\'') {
                i = q + 3; // 'x'
            } else {
                // A lifetime or label: skip the quote and the name.
                i = q + 1;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            // `r#ident`: a raw identifier.
            if word == "r" && b.get(i) == Some(&'#') {
                i += 1;
                continue;
            }
            out.push((Tok::Ident(word), line));
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_' || b[i] == '.') {
                if b[i] == '.' && b.get(i + 1) == Some(&'.') {
                    break;
                }
                i += 1;
            }
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push((Tok::Path, line));
            i += 2;
        } else {
            out.push((Tok::Punct(c), line));
            i += 1;
        }
    }
    out
}

/// The end of a raw (byte) string starting at `i` (`r"..."`, `r#"..."#`, `br"..."`).
fn raw_string_end(b: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if b.get(j) == Some(&'b') {
        j += 1;
    }
    if b.get(j) != Some(&'r') {
        return None;
    }
    if i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while b.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if b.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < b.len() {
        if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(b.len())
}

// ---- finding the imports ----------------------------------------------------------------

struct Scan {
    imports: Vec<Import>,
    /// Child modules declared under `#[cfg(test)]` (their files are test code).
    test_children: Vec<String>,
}

struct Scanner<'a> {
    toks: &'a [(Tok, usize)],
    pos: usize,
    /// The file's module path.
    file_module: &'a [String],
    /// `main.rs`: `switchyard::` names the library crate.
    is_main: bool,
    /// Inline modules entered (`mod tests { .. }`), with the brace depth they close at.
    inline: Vec<(String, usize)>,
    depth: usize,
    /// Children declared in this file (`mod x;` and inline `mod x { }`), by parent path.
    children: BTreeMap<Vec<String>, BTreeSet<String>>,
    out: Scan,
}

impl<'a> Scanner<'a> {
    fn new(toks: &'a [(Tok, usize)], file_module: &'a [String], is_main: bool) -> Self {
        Scanner {
            toks,
            pos: 0,
            file_module,
            is_main,
            inline: Vec::new(),
            depth: 0,
            children: BTreeMap::new(),
            out: Scan {
                imports: Vec::new(),
                test_children: Vec::new(),
            },
        }
    }

    fn run(mut self) -> Scan {
        self.collect_children();
        self.pos = 0;
        while self.pos < self.toks.len() {
            self.step();
        }
        self.out
    }

    fn current_module(&self) -> Vec<String> {
        let mut m = self.file_module.to_vec();
        if self.is_main {
            m.clear();
        }
        m.extend(self.inline.iter().map(|(n, _)| n.clone()));
        m
    }

    fn tok(&self, at: usize) -> Option<&Tok> {
        self.toks.get(at).map(|(t, _)| t)
    }

    fn ident(&self, at: usize) -> Option<&str> {
        match self.tok(at) {
            Some(Tok::Ident(s)) => Some(s),
            _ => None,
        }
    }

    fn is(&self, at: usize, c: char) -> bool {
        self.tok(at) == Some(&Tok::Punct(c))
    }

    /// First pass: the child modules each module of this file declares.
    fn collect_children(&mut self) {
        let mut stack: Vec<(String, usize)> = Vec::new();
        let mut depth = 0;
        let mut i = 0;
        while i < self.toks.len() {
            match self.tok(i) {
                Some(Tok::Punct('{')) => depth += 1,
                Some(Tok::Punct('}')) => {
                    depth -= 1;
                    if stack.last().is_some_and(|(_, d)| *d == depth) {
                        stack.pop();
                    }
                }
                Some(Tok::Ident(k)) if k == "mod" => {
                    if let Some(name) = self.ident(i + 1).map(str::to_string) {
                        let mut parent = if self.is_main {
                            Vec::new()
                        } else {
                            self.file_module.to_vec()
                        };
                        parent.extend(stack.iter().map(|(n, _)| n.clone()));
                        self.children
                            .entry(parent)
                            .or_default()
                            .insert(name.clone());
                        if self.is(i + 2, '{') {
                            stack.push((name, depth));
                            depth += 1;
                            i += 3;
                            continue;
                        }
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }

    fn step(&mut self) {
        let (tok, _) = &self.toks[self.pos];
        match tok {
            Tok::Punct('#') if self.is_cfg_test() => self.skip_test_item(),
            Tok::Punct('{') => {
                self.depth += 1;
                self.pos += 1;
            }
            Tok::Punct('}') => {
                self.depth = self.depth.saturating_sub(1);
                if self.inline.last().is_some_and(|(_, d)| *d == self.depth) {
                    self.inline.pop();
                }
                self.pos += 1;
            }
            Tok::Ident(k) if k == "mod" => {
                // `mod x;` declares a child (not an import); `mod x {` enters it.
                if let Some(name) = self.ident(self.pos + 1).map(str::to_string) {
                    if self.is(self.pos + 2, '{') {
                        self.inline.push((name, self.depth));
                        self.depth += 1;
                        self.pos += 3;
                        return;
                    }
                }
                self.pos += 1;
            }
            Tok::Ident(k) if k == "use" => self.use_decl(),
            Tok::Ident(_) => self.path_in_code(),
            _ => self.pos += 1,
        }
    }

    /// `#[cfg(test)]` at `pos`.
    fn is_cfg_test(&self) -> bool {
        let want = [
            Tok::Punct('#'),
            Tok::Punct('['),
            Tok::Ident("cfg".into()),
            Tok::Punct('('),
            Tok::Ident("test".into()),
            Tok::Punct(')'),
            Tok::Punct(']'),
        ];
        want.iter()
            .enumerate()
            .all(|(k, t)| self.tok(self.pos + k) == Some(t))
    }

    /// Skip the item after `#[cfg(test)]`: to its `;`, or to the end of its first block.
    fn skip_test_item(&mut self) {
        self.pos += 7;
        // `mod name;`: the child's file is test code.
        if self.ident(self.pos) == Some("mod") && self.is(self.pos + 2, ';') {
            if let Some(name) = self.ident(self.pos + 1) {
                self.out.test_children.push(name.to_string());
            }
        }
        let mut depth = 0usize;
        while let Some(t) = self.tok(self.pos).cloned() {
            self.pos += 1;
            match t {
                Tok::Punct(';') if depth == 0 => return,
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return;
                    }
                }
                _ => {}
            }
        }
    }

    /// A `use` declaration: every path of its tree.
    fn use_decl(&mut self) {
        let line = self.toks[self.pos].1;
        self.pos += 1;
        let mut paths = Vec::new();
        self.use_tree(Vec::new(), &mut paths);
        while self.pos < self.toks.len() && !self.is(self.pos, ';') {
            self.pos += 1;
        }
        self.pos += 1;
        for p in paths {
            self.record(&p, line);
        }
    }

    fn use_tree(&mut self, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut path = prefix;
        if self.tok(self.pos) == Some(&Tok::Path) {
            self.pos += 1; // `::std` — an extern path
            path.push(String::new());
        }
        loop {
            match self.tok(self.pos).cloned() {
                Some(Tok::Ident(s)) => {
                    path.push(s);
                    self.pos += 1;
                    if self.tok(self.pos) == Some(&Tok::Path) {
                        self.pos += 1;
                        continue;
                    }
                    if self.ident(self.pos) == Some("as") {
                        self.pos += 2;
                    }
                    out.push(path);
                    return;
                }
                Some(Tok::Punct('*')) => {
                    self.pos += 1;
                    out.push(path);
                    return;
                }
                Some(Tok::Punct('{')) => {
                    self.pos += 1;
                    loop {
                        if self.is(self.pos, '}') {
                            self.pos += 1;
                            break;
                        }
                        self.use_tree(path.clone(), out);
                        if self.is(self.pos, ',') {
                            self.pos += 1;
                        } else if self.is(self.pos, '}') {
                            self.pos += 1;
                            break;
                        } else {
                            return; // not a use tree we understand
                        }
                    }
                    return;
                }
                _ => return,
            }
        }
    }

    /// A path in code starting at an identifier: recorded when it starts with `crate`,
    /// `super`, `self`, `switchyard` (in `main.rs`) or a child module, and goes on with `::`.
    fn path_in_code(&mut self) {
        let line = self.toks[self.pos].1;
        // Not the tail of a longer path (`a::crate` cannot happen; `x::child::` is not ours).
        if self.pos > 0 && self.tok(self.pos - 1) == Some(&Tok::Path) {
            self.pos += 1;
            return;
        }
        let mut path = Vec::new();
        let mut i = self.pos;
        while let Some(s) = self.ident(i) {
            path.push(s.to_string());
            if self.tok(i + 1) == Some(&Tok::Path) {
                i += 2;
            } else {
                break;
            }
        }
        self.pos = i + 1;
        if path.len() >= 2 {
            self.record(&path, line);
        }
    }

    /// Resolve `path` (as written in this module) to an absolute one and keep it when it
    /// stays inside the crate.
    fn record(&mut self, path: &[String], line: usize) {
        let Some(first) = path.first() else { return };
        let here = self.current_module();
        let mut abs: Vec<String>;
        let mut rest = path;
        match first.as_str() {
            "crate" => {
                abs = Vec::new();
                rest = &path[1..];
            }
            "switchyard" if self.is_main => {
                abs = Vec::new();
                rest = &path[1..];
            }
            "self" | "super" => {
                abs = here.clone();
                while let Some(seg) = rest.first() {
                    match seg.as_str() {
                        "self" => {}
                        "super" => {
                            abs.pop();
                        }
                        _ => break,
                    }
                    rest = &rest[1..];
                }
            }
            name if self.children.get(&here).is_some_and(|c| c.contains(name)) => {
                abs = here.clone();
            }
            _ => return, // another crate, a local name, a type's associated item
        }
        abs.extend(rest.iter().filter(|s| s.as_str() != "self").cloned());
        self.out.imports.push(Import {
            line,
            written: path.join("::"),
            target: abs,
        });
    }
}

// ---- the checker's own tests --------------------------------------------------------------

/// A throwaway `src/` tree for the checker's own tests.
fn tree(files: &[(&str, &str)]) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "switchyard-layering-{}-{n}/src",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    for (rel, text) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
    dir
}

#[test]
fn the_checker_finds_upward_imports_and_cycles_and_ignores_comments_and_tests() {
    let src = tree(&[
        (
            "lib.rs",
            "pub mod util;\npub mod proxy;\npub mod upstream;\npub mod balance;\n",
        ),
        ("util/mod.rs", "pub mod clock;\n"),
        // An upward import in code, written as a path rather than a `use`.
        ("util/clock.rs", "fn f() { let _ = crate::balance::X; }\n"),
        ("balance/mod.rs", "pub struct X;\n"),
        (
            "proxy/mod.rs",
            "mod a;\nmod b;\n// crate::util::nothing in a comment\nconst S: &str = \"crate::util\";\n\
             use crate::util::{clock::{self, now}, self as u};\n",
        ),
        ("proxy/a.rs", "use super::b::Thing;\n"),
        ("proxy/b.rs", "use super::a::Other;\n#[cfg(test)]\nmod tests { use crate::upstream::Z; }\n"),
        ("upstream/mod.rs", "use crate::proxy::Y;\n"),
    ]);
    let report = check(&src);
    assert!(
        report.contains("src/util/clock.rs:1: `crate::balance::X` (util → balance): layer util may not import layer balance"),
        "{report}"
    );
    assert!(
        report.contains("src/upstream/mod.rs:1: `crate::proxy::Y` (upstream → proxy)"),
        "{report}"
    );
    assert!(
        report.contains("import cycle: src/proxy/a.rs -> src/proxy/b.rs -> src/proxy/a.rs"),
        "{report}"
    );
    // The comment, the string and the test module are not imports; proxy → util is allowed.
    assert_eq!(report.lines().count(), 3, "{report}");
    let _ = std::fs::remove_dir_all(src.parent().expect("tree root"));
}

#[test]
fn a_folder_whose_children_import_its_mod_rs_is_a_cycle() {
    let src = tree(&[
        ("lib.rs", "pub mod upstream;\n"),
        (
            "upstream/mod.rs",
            "mod connect;\npub struct Target;\npub fn send() { connect::open() }\n",
        ),
        (
            "upstream/connect.rs",
            "use super::Target;\npub fn open() {}\n",
        ),
    ]);
    let report = check(&src);
    assert!(
        report.contains(
            "import cycle: src/upstream/connect.rs -> src/upstream/mod.rs -> src/upstream/connect.rs"
        ),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(src.parent().expect("tree root"));
}
