//! The config file as a YAML tree that remembers where every key and value was written.
//!
//! Why this exists: serde_yaml stops at the first problem and forgets positions once the typed
//! value is built, so it can neither report every unknown key at once nor say where a
//! *semantically* wrong value (a route to a missing pool, a duplicate bind) sits. Parsing once
//! with yaml-rust2's marked event parser gives a line and column for every key and value; the
//! typed parse (`de.rs`) runs over this tree and the validator (`validate.rs`) asks
//! [`Positions`] where a key path such as `pools.web.nodes[1].weight` was written.
//!
//! Paths are written the way messages show them: `listeners[0].bind`, `pools.web.strategy`;
//! a map key that is not a plain identifier is quoted: `pools["my pool"].nodes[0]`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, ScanError, TScalarStyle};

/// A 1-based line and column in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Mark {
    pub line: usize,
    pub column: usize,
}

impl Mark {
    /// The start of the file: where problems with no better place are reported.
    pub const START: Mark = Mark { line: 1, column: 1 };

    /// yaml-rust2 counts lines from 1 and columns from 0.
    fn from_marker(m: &Marker) -> Mark {
        Mark {
            line: m.line().max(1),
            column: m.col() + 1,
        }
    }
}

/// One problem found while reading the file, before it is tied to a file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub mark: Mark,
    pub message: String,
}

impl Problem {
    pub fn new(mark: Mark, message: impl Into<String>) -> Problem {
        Problem {
            mark,
            message: message.into(),
        }
    }
}

/// One YAML node with its position.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// Unique within a document; the typed parse names failing nodes by id.
    pub id: usize,
    /// Where the value starts (for an empty value: where its key is).
    pub mark: Mark,
    /// The node's path as the user sees it in the file (indices are never renumbered).
    pub path: String,
    pub kind: NodeKind,
    /// Content was made up or removed to get past an error (see `de.rs`): semantic checks on
    /// this part of the file would only repeat or invent problems.
    pub tainted: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum NodeKind {
    /// `plain` is false for quoted, block and `!!str` scalars, which are always strings.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Mapping),
    /// Stands in for a required key that is missing (see `de.rs`); never written by the user.
    Placeholder,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Mapping {
    pub entries: Vec<Entry>,
    /// Keys whose invalid value was dropped to get past an error.
    pub dropped_keys: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Always a scalar.
    pub key: Node,
    pub value: Node,
}

impl Node {
    fn new(mark: Mark, kind: NodeKind) -> Node {
        Node {
            id: 0,
            mark,
            path: String::new(),
            kind,
            tainted: false,
        }
    }

    /// True for an empty value, `~` or `null` written without quotes.
    pub fn is_null(&self) -> bool {
        match &self.kind {
            NodeKind::Scalar { text, plain } => *plain && is_null_text(text),
            _ => false,
        }
    }

    /// The scalar's text, if this is a scalar.
    pub fn text(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    fn depth(&self) -> usize {
        1 + match &self.kind {
            NodeKind::Seq(items) => items.iter().map(Node::depth).max().unwrap_or(0),
            NodeKind::Map(m) => m.entries.iter().map(|e| e.value.depth()).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn count(&self) -> usize {
        1 + match &self.kind {
            NodeKind::Seq(items) => items.iter().map(Node::count).sum(),
            NodeKind::Map(m) => m
                .entries
                .iter()
                .map(|e| e.key.count() + e.value.count())
                .sum(),
            _ => 0,
        }
    }
}

/// YAML 1.2 core-schema null.
pub(crate) fn is_null_text(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

/// A parsed document: its root node plus non-fatal problems (duplicate keys, tags).
#[derive(Debug)]
pub(crate) struct Doc {
    pub root: Node,
    pub problems: Vec<Problem>,
    /// Next free node id (for nodes the typed parse adds).
    pub next_id: usize,
}

/// Nesting deeper than this is refused (a config is a handful of levels deep; this bounds
/// recursion).
const MAX_DEPTH: usize = 64;
/// Nodes after alias expansion at most (a "billion laughs" file must not exhaust memory).
const MAX_NODES: usize = 200_000;

/// Parse `text` into a marked tree. A YAML syntax error is fatal and returned alone: nothing
/// after it can be trusted. An empty file is an empty mapping.
pub(crate) fn parse(text: &str) -> Result<Doc, Problem> {
    // yaml-rust2 reads a UTF-8 byte order mark as part of the first key; editors hide it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut b = Builder {
        text,
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        problems: Vec::new(),
        nodes: 0,
    };
    let mut root = b.document()?;
    let next_id = finish(&mut root, String::new(), 0);
    Ok(Doc {
        root,
        problems: b.problems,
        next_id,
    })
}

/// Assign ids and display paths depth-first; returns the next free id.
fn finish(node: &mut Node, path: String, mut next_id: usize) -> usize {
    node.id = next_id;
    next_id += 1;
    match &mut node.kind {
        NodeKind::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                next_id = finish(item, index_path(&path, i), next_id);
            }
        }
        NodeKind::Map(m) => {
            for e in &mut m.entries {
                let child = key_path(&path, e.key.text().unwrap_or_default());
                next_id = finish(&mut e.key, child.clone(), next_id);
                next_id = finish(&mut e.value, child, next_id);
            }
        }
        _ => {}
    }
    node.path = path;
    next_id
}

struct Builder<'a> {
    text: &'a str,
    parser: Parser<std::str::Chars<'a>>,
    anchors: HashMap<usize, Node>,
    problems: Vec<Problem>,
    nodes: usize,
}

/// The text's lines as YAML counts them: `\n`, `\r\n` and a lone `\r` each end a line
/// (`str::lines` would miss the lone `\r`, and the line numbers would drift from the
/// scanner's). Always at least one line.
pub fn yaml_lines(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                lines.push(&text[start..i]);
                start = i + 1;
            }
            b'\r' => {
                lines.push(&text[start..i]);
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    lines.push(&text[start..]);
    lines
}

impl Mark {
    /// This mark moved inside the file whose lines are `lines`: the scanner marks some
    /// problems at the end of the stream, which can be a line after the last one or a
    /// column past a line's end; those point at the end of the last line (or of the line)
    /// instead. Line 0 (no position) becomes the start of the file.
    pub(crate) fn clamp(self, lines: &[&str]) -> Mark {
        if self.line == 0 || lines.is_empty() {
            return Mark::START;
        }
        let (line, column) = if self.line > lines.len() {
            (lines.len(), usize::MAX)
        } else {
            (self.line, self.column.max(1))
        };
        let width = lines[line - 1].chars().count();
        Mark {
            line,
            column: column.min(width + 1),
        }
    }
}

fn scan_problem(e: &ScanError, text: &str) -> Problem {
    let mut mark = Mark::from_marker(e.marker());
    let mut message = format!("invalid YAML: {}", e.info());
    if e.info().contains("tab") {
        message.push_str(" (indent with spaces, not tabs)");
        // The scanner reports the position after the tab; point at the tab itself.
        let tab = yaml_lines(text)
            .get(mark.line - 1)
            .and_then(|l| l.chars().position(|c| c == '\t'));
        if let Some(col) = tab {
            mark.column = col + 1;
        }
    }
    Problem::new(mark, message)
}

impl Builder<'_> {
    fn next(&mut self) -> Result<(Event, Mark), Problem> {
        self.parser
            .next_token()
            .map(|(ev, m)| (ev, Mark::from_marker(&m)))
            .map_err(|e| scan_problem(&e, self.text))
    }

    fn document(&mut self) -> Result<Node, Problem> {
        let empty = || Node::new(Mark::START, NodeKind::Map(Mapping::default()));
        loop {
            match self.next()? {
                (Event::StreamStart, _) => continue,
                (Event::StreamEnd, _) => return Ok(empty()),
                (Event::DocumentStart, _) => break,
                (_, mark) => return Err(Problem::new(mark, "invalid YAML: expected a document")),
            }
        }
        let (ev, mark) = self.next()?;
        if ev == Event::DocumentEnd {
            return Ok(empty());
        }
        let root = self.node(ev, mark, 0)?;
        // After the document: its end, then the end of the stream or a second document.
        loop {
            match self.next()? {
                (Event::DocumentEnd, _) => continue,
                (Event::StreamEnd, _) => break,
                (Event::DocumentStart, mark) => {
                    self.problems.push(Problem::new(
                        mark,
                        "a config file holds one YAML document; remove the `---` separator and \
                         merge or delete what follows",
                    ));
                    break;
                }
                (_, mark) => {
                    return Err(Problem::new(mark, "invalid YAML: unexpected content"));
                }
            }
        }
        // A root that is not a mapping is reported by the typed parse ("expected a mapping").
        Ok(root)
    }

    fn count(&mut self, n: usize, mark: Mark) -> Result<(), Problem> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(Problem::new(
                mark,
                format!("the document has more than {MAX_NODES} nodes once aliases are expanded"),
            ));
        }
        Ok(())
    }

    fn node(&mut self, ev: Event, mark: Mark, depth: usize) -> Result<Node, Problem> {
        if depth > MAX_DEPTH {
            return Err(Problem::new(
                mark,
                format!("nesting deeper than {MAX_DEPTH} levels is not supported"),
            ));
        }
        self.count(1, mark)?;
        let (node, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let mut plain = style == TScalarStyle::Plain;
                if let Some(tag) = tag {
                    if is_core_tag(&tag, "str") {
                        plain = false;
                    } else {
                        self.check_tag(&tag, mark);
                    }
                }
                (Node::new(mark, NodeKind::Scalar { text, plain }), anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                if let Some(tag) = tag {
                    self.check_tag(&tag, mark);
                }
                let mut items: Vec<Node> = Vec::new();
                // An empty item (`-` and nothing after it) is marked by yaml-rust2 at the next
                // token: just after the next item's `-`, or at the end of the list. Point at
                // its own `-` instead, once it is known which of the two followed.
                let mut empty_item: Option<usize> = None;
                loop {
                    let (ev, m) = self.next()?;
                    let end = ev == Event::SequenceEnd;
                    if let Some(i) = empty_item.take() {
                        let skip = usize::from(!end);
                        if let Some(dash) = self.dash_before(items[i].mark, skip) {
                            items[i].mark = dash;
                        }
                    }
                    if end {
                        break;
                    }
                    let item = self.node(ev, m, depth + 1)?;
                    if item.is_null() && item.text() == Some("") {
                        empty_item = Some(items.len());
                    }
                    items.push(item);
                }
                (Node::new(mark, NodeKind::Seq(items)), anchor)
            }
            Event::MappingStart(anchor, tag) => {
                if let Some(tag) = tag {
                    self.check_tag(&tag, mark);
                }
                let mut map = Mapping::default();
                let mut first_key: Option<Mark> = None;
                loop {
                    let (ev, m) = self.next()?;
                    if ev == Event::MappingEnd {
                        break;
                    }
                    let key = self.node(ev, m, depth + 1)?;
                    let (ev, m) = self.next()?;
                    let mut value = self.node(ev, m, depth + 1)?;
                    first_key.get_or_insert(key.mark);
                    if value.is_null() && value.text() == Some("") {
                        // `key:` with nothing after it: the key is the place to point at.
                        value.mark = key.mark;
                    }
                    let Some(text) = key.text() else {
                        self.problems.push(Problem::new(
                            key.mark,
                            "a key must be a plain word, not a list or a mapping",
                        ));
                        continue;
                    };
                    if let Some(first) = map.entries.iter().find(|e| e.key.text() == Some(text)) {
                        self.problems.push(Problem::new(
                            key.mark,
                            format!(
                                "duplicate key `{text}` (first written at line {}, column {}); \
                                 remove one of them",
                                first.key.mark.line, first.key.mark.column
                            ),
                        ));
                        continue;
                    }
                    map.entries.push(Entry { key, value });
                }
                // Flow mappings are marked at their `{`, block mappings after their first
                // key: the earlier of that mark and the first key is where it visibly starts.
                let start = first_key.map_or(mark, |k| k.min(mark));
                (Node::new(start, NodeKind::Map(map)), anchor)
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id) else {
                    return Err(Problem::new(mark, "invalid YAML: unknown alias"));
                };
                let mut copy = target.clone();
                copy.mark = mark;
                if depth + copy.depth() > MAX_DEPTH {
                    return Err(Problem::new(
                        mark,
                        format!("nesting deeper than {MAX_DEPTH} levels is not supported"),
                    ));
                }
                let n = copy.count();
                self.count(n, mark)?;
                (copy, 0)
            }
            _ => return Err(Problem::new(mark, "invalid YAML: unexpected content")),
        };
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    /// The `-` of an empty list item whose (empty) value yaml-rust2 marked at `mark`: the
    /// nearest dash before it, after passing over `skip` others, with only blanks and
    /// comments in between.
    fn dash_before(&self, mark: Mark, mut skip: usize) -> Option<Mark> {
        let lines = yaml_lines(self.text);
        for line_no in (1..=mark.line).rev() {
            let chars: Vec<char> = lines.get(line_no - 1)?.chars().collect();
            let mut end = if line_no == mark.line {
                (mark.column - 1).min(chars.len())
            } else {
                chars.len()
            };
            if let Some(hash) =
                (0..end).find(|&i| chars[i] == '#' && (i == 0 || chars[i - 1].is_whitespace()))
            {
                end = hash;
            }
            for i in (0..end).rev() {
                let c = chars[i];
                if c == '-'
                    && chars.get(i + 1).is_none_or(|n| n.is_whitespace())
                    && (i == 0 || chars[i - 1].is_whitespace())
                {
                    if skip == 0 {
                        return Some(Mark {
                            line: line_no,
                            column: i + 1,
                        });
                    }
                    skip -= 1;
                } else if !c.is_whitespace() {
                    return None;
                }
            }
        }
        None
    }

    fn check_tag(&mut self, tag: &Tag, mark: Mark) {
        if tag.handle == CORE_TAG_HANDLE {
            return; // !!int, !!map, ...: the typed parse checks the value itself
        }
        self.problems.push(Problem::new(
            mark,
            format!(
                "YAML tag `{}{}` is not supported here; remove it",
                tag.handle, tag.suffix
            ),
        ));
    }
}

const CORE_TAG_HANDLE: &str = "tag:yaml.org,2002:";

fn is_core_tag(tag: &Tag, suffix: &str) -> bool {
    tag.handle == CORE_TAG_HANDLE && tag.suffix == suffix
}

// ---------------------------------------------------------------------------------------
// Paths

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The path of key `key` inside the mapping at `parent`.
pub(crate) fn key_path(parent: &str, key: &str) -> String {
    if is_plain_key(key) {
        if parent.is_empty() {
            key.to_string()
        } else {
            format!("{parent}.{key}")
        }
    } else {
        format!("{parent}[{key:?}]")
    }
}

/// The path of item `i` of the list at `parent`.
pub(crate) fn index_path(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// The path one level up: `pools.web.nodes[0]` → `pools.web.nodes` → `pools.web` → `pools` → ``.
pub(crate) fn parent_path(p: &str) -> &str {
    let mut last = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in p.char_indices() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '.' | '[' => last = i,
            _ => {}
        }
    }
    &p[..last]
}

/// True when one path is the other or lies inside it.
fn related(a: &str, b: &str) -> bool {
    fn inside(child: &str, parent: &str) -> bool {
        child.len() > parent.len()
            && child.starts_with(parent)
            && (parent.is_empty() || matches!(child.as_bytes()[parent.len()], b'.' | b'['))
    }
    a == b || inside(a, b) || inside(b, a)
}

// ---------------------------------------------------------------------------------------
// Positions for semantic errors

/// Where the key and the value at one path were written.
#[derive(Debug, Clone)]
struct Loc {
    key: Option<Mark>,
    value: Mark,
    /// The path as the user counts it (differs only after a list item was dropped).
    display: String,
}

/// What an error should point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The key, e.g. a pool name that is itself the problem.
    Key,
    /// The value; the key when the value is empty.
    Value,
}

/// Key path → position, built from the tree the typed parse accepted, so paths index the
/// typed config exactly (`routes[2]` is `config.routes[2]`).
#[derive(Debug, Default)]
pub(crate) struct Positions {
    locs: HashMap<String, Loc>,
    /// Paths whose content was invented or dropped while recovering from type errors.
    tainted: Vec<String>,
}

impl Positions {
    pub fn build(root: &Node) -> Positions {
        let mut p = Positions::default();
        p.locs.insert(
            String::new(),
            Loc {
                key: None,
                value: root.mark,
                display: String::new(),
            },
        );
        p.walk(root, "");
        p
    }

    fn walk(&mut self, node: &Node, path: &str) {
        if node.tainted {
            self.tainted.push(path.to_string());
        }
        match &node.kind {
            NodeKind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let child = index_path(path, i);
                    self.locs.insert(
                        child.clone(),
                        Loc {
                            key: None,
                            value: item.mark,
                            display: item.path.clone(),
                        },
                    );
                    self.walk(item, &child);
                }
            }
            NodeKind::Map(m) => {
                for k in &m.dropped_keys {
                    self.tainted.push(key_path(path, k));
                }
                for e in &m.entries {
                    let child = key_path(path, e.key.text().unwrap_or_default());
                    self.locs.insert(
                        child.clone(),
                        Loc {
                            key: Some(e.key.mark),
                            value: e.value.mark,
                            display: e.value.path.clone(),
                        },
                    );
                    self.walk(&e.value, &child);
                }
            }
            _ => {}
        }
    }

    /// The nearest written path at or above `path`.
    fn nearest<'p>(&self, mut path: &'p str) -> (&'p str, &Loc) {
        loop {
            if let Some(loc) = self.locs.get(path) {
                return (path, loc);
            }
            if path.is_empty() {
                // The root is always present; this is only reached for a hand-made Positions.
                static ROOT: Loc = Loc {
                    key: None,
                    value: Mark::START,
                    display: String::new(),
                };
                return ("", &ROOT);
            }
            path = parent_path(path);
        }
    }

    /// Was `path` written in the file (rather than filled in by a default)?
    pub fn has(&self, path: &str) -> bool {
        self.locs.contains_key(path)
    }

    /// Where to report a problem at `path`. A path that was not written (a default) falls
    /// back to the nearest enclosing key that was, and the key itself for [`Target::Key`].
    pub fn mark(&self, path: &str, target: Target) -> Mark {
        let (found, loc) = self.nearest(path);
        match (target, loc.key) {
            (Target::Key, Some(k)) => k,
            // A default inside a section: point at the section's key, not its first child.
            (Target::Value, Some(k)) if found != path => k,
            _ => loc.value,
        }
    }

    /// `path` as the user counts it, for messages.
    pub fn display(&self, path: &str) -> String {
        let (found, loc) = self.nearest(path);
        format!("{}{}", loc.display, &path[found.len()..])
    }

    /// Line of `path` (for "first defined at line N" hints).
    pub fn line(&self, path: &str) -> usize {
        self.mark(path, Target::Value).line
    }

    /// True when a problem about any of `scope` could be a consequence of an earlier type
    /// error (its content was dropped or invented), so reporting it would mislead.
    pub fn suppressed(&self, scope: &[String]) -> bool {
        scope
            .iter()
            .any(|s| self.tainted.iter().any(|t| related(s, t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(key_path("", "pools"), "pools");
        assert_eq!(key_path("pools", "web"), "pools.web");
        assert_eq!(key_path("pools", "my pool"), "pools[\"my pool\"]");
        assert_eq!(index_path("pools.web.nodes", 2), "pools.web.nodes[2]");
        assert_eq!(parent_path("pools.web.nodes[2]"), "pools.web.nodes");
        assert_eq!(parent_path("pools.web.nodes"), "pools.web");
        assert_eq!(parent_path("pools[\"a.b[1]\"].x"), "pools[\"a.b[1]\"]");
        assert_eq!(parent_path("pools[\"a.b[1]\"]"), "pools");
        assert_eq!(parent_path("pools"), "");
        assert!(related("pools.web", "pools.web.nodes[0]"));
        assert!(related("pools.web.nodes[0]", "pools.web"));
        assert!(!related("pools.web", "pools.webx"));
    }

    #[test]
    fn marks_are_one_based_and_point_at_keys_and_values() {
        let doc = parse("a:\n  b: 1\n  c:\n  d: [x, 'y']\n").unwrap();
        let p = Positions::build(&doc.root);
        assert_eq!(p.mark("a.b", Target::Key), Mark { line: 2, column: 3 });
        assert_eq!(p.mark("a.b", Target::Value), Mark { line: 2, column: 6 });
        // An empty value points at its key.
        assert_eq!(p.mark("a.c", Target::Value), Mark { line: 3, column: 3 });
        assert_eq!(
            p.mark("a.d[1]", Target::Value),
            Mark {
                line: 4,
                column: 10
            }
        );
        // A default inside a written section points at the section's key.
        assert_eq!(p.mark("a.zz", Target::Value), Mark { line: 1, column: 1 });
        assert_eq!(p.mark("a.d[7]", Target::Value), Mark { line: 4, column: 3 });
    }

    #[test]
    fn empty_list_items_point_at_their_dash() {
        let doc = parse("a:\n  -\n  # a comment - with a dash\n  - b\n  -\nc: 1\n").unwrap();
        let p = Positions::build(&doc.root);
        assert_eq!(p.mark("a[0]", Target::Value), Mark { line: 2, column: 3 });
        assert_eq!(p.mark("a[1]", Target::Value), Mark { line: 4, column: 5 });
        assert_eq!(p.mark("a[2]", Target::Value), Mark { line: 5, column: 3 });
    }

    #[test]
    fn duplicate_keys_tags_and_documents_are_reported() {
        let doc = parse("a: 1\nb: !foo 2\na: 3\n---\nc: 1\n").unwrap();
        let msgs: Vec<_> = doc
            .problems
            .iter()
            .map(|p| (p.mark.line, p.mark.column, p.message.clone()))
            .collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert_eq!((msgs[0].0, msgs[0].1), (2, 9)); // the tagged value
        assert!(msgs[0].2.contains("tag `!foo`"));
        assert_eq!((msgs[1].0, msgs[1].1), (3, 1));
        assert!(msgs[1]
            .2
            .contains("duplicate key `a` (first written at line 1, column 1)"));
        assert_eq!(msgs[2].0, 4);
    }

    #[test]
    fn byte_order_mark_and_crlf_are_accepted() {
        let doc = parse("\u{feff}a:\r\n  b: 1\r\n").unwrap();
        let p = Positions::build(&doc.root);
        assert_eq!(p.mark("a.b", Target::Value), Mark { line: 2, column: 6 });
    }

    #[test]
    fn syntax_error_has_a_position() {
        let e = parse("a: 1\n  b: 2\n").unwrap_err();
        assert_eq!(e.mark, Mark { line: 2, column: 4 });
        assert!(e.message.starts_with("invalid YAML"));
    }

    #[test]
    fn aliases_are_expanded_and_bounded() {
        let doc = parse("a: &x {k: 1}\nb: *x\n").unwrap();
        let p = Positions::build(&doc.root);
        assert!(p.has("b.k"));
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let prev = format!("*a{}", i - 1);
            bomb.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                std::iter::repeat_n(prev.as_str(), 10)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        assert!(parse(&bomb).is_err());
        let deep = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
        assert!(parse(&deep).unwrap_err().message.contains("nesting deeper"));
        let deep_alias = "a: &x [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n\
                          b: &y [*x, [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[*x]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n";
        assert!(parse(deep_alias)
            .unwrap_err()
            .message
            .contains("nesting deeper"));
    }
}
