//! The typed parse: serde deserialization of the marked tree (`tree.rs`) into the schema
//! (`model.rs`), reporting *every* type error and unknown key, each at its own position.
//!
//! Why not `serde_yaml::from_str`: it stops at the first error, so a file with three typos
//! would take three edit-and-retry rounds, and its errors do not name the key path. Here a
//! small `serde::Deserializer` walks the tree instead; every error carries the node it
//! happened at. After an error the tree is repaired and the parse runs again:
//!
//! - an unknown key is removed (its value never reached the typed config anyway);
//! - an invalid value is removed, so the key's default applies;
//! - a missing required key gets a neutral placeholder (`""`, `0`, an empty list).
//!
//! Removed and invented parts are marked *tainted* so that the semantic checks skip them
//! rather than report follow-on errors the user did not make. The loop ends when the parse
//! succeeds or no repair is possible; every round fixes one node, so it terminates.
//!
//! Scalars resolve like serde_yaml (YAML 1.2 core schema): unquoted `~`/`null`/empty is null,
//! `true`/`false` booleans, numbers numbers, anything quoted is a string, and any scalar is
//! accepted where a string is expected (`bind: 8080` is the string "8080"). An empty value
//! where a section is expected (`limits:` with nothing under it) is an empty section.

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, Expected, MapAccess, SeqAccess,
    Unexpected, VariantAccess, Visitor,
};

use super::tree::{key_path, Doc, Entry, Mark, Node, NodeKind, Problem};

/// Upper bound on repair rounds (each round is one error); a pathological file stops here.
const MAX_ROUNDS: usize = 500;

/// Deserialize `doc` into `T`, repairing the tree after each error. Returns the value when
/// one could be built (also when errors were found: the caller decides) and every problem.
pub(crate) fn from_doc<T: DeserializeOwned>(doc: &mut Doc) -> (Option<T>, Vec<Problem>) {
    let mut problems = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let err = match T::deserialize(De(&doc.root)) {
            Ok(v) => return (Some(v), problems),
            Err(e) => e,
        };
        let Some(at) = err.at.clone() else {
            problems.push(Problem::new(doc.root.mark, err.message));
            return (None, problems);
        };
        let repaired = match &err.kind {
            ErrKind::UnknownField { field, expected } => {
                let container = parent_of(&doc.root, at.node).map(|p| p.path.clone());
                problems.push(Problem::new(
                    at.mark,
                    unknown_key_message(field, expected, container.as_deref().unwrap_or("")),
                ));
                remove_node(&mut doc.root, at.node, false)
            }
            ErrKind::MissingField(field) => {
                let already_reported = find(&doc.root, at.node).is_some_and(|n| {
                    matches!(&n.kind, NodeKind::Map(m) if m.dropped_keys.iter().any(|k| k == field))
                });
                if !already_reported {
                    problems.push(Problem::new(at.mark, missing_key_message(field, &at.path)));
                }
                let id = doc.next_id;
                doc.next_id += 2;
                // Not a mapping (an empty value standing for an empty section): drop it.
                insert_placeholder(&mut doc.root, at.node, field, id)
                    || remove_node(&mut doc.root, at.node, true)
            }
            ErrKind::Other => {
                let message = if at.path.is_empty() {
                    err.message.clone()
                } else {
                    format!("{}: {}", at.path, err.message)
                };
                problems.push(Problem::new(at.mark, message));
                remove_node(&mut doc.root, at.node, true)
            }
        };
        if !repaired {
            return (None, problems);
        }
    }
    problems.push(Problem::new(
        doc.root.mark,
        format!("too many errors; stopped after {MAX_ROUNDS}"),
    ));
    (None, problems)
}

fn unknown_key_message(field: &str, expected: &[&str], container: &str) -> String {
    let place = if container.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in {container}")
    };
    let mut msg = format!("unknown key `{field}` {place}");
    if expected.is_empty() {
        msg.push_str("; no keys are allowed here");
    } else {
        msg.push_str(&format!("; expected one of {}", expected.join(", ")));
        if let Some(s) = closest(field, expected) {
            msg.push_str(&format!(" (did you mean `{s}`?)"));
        }
    }
    msg
}

fn missing_key_message(field: &str, container: &str) -> String {
    let place = if container.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in {container}")
    };
    match super::model::required_key_hint(field) {
        Some(hint) => format!("missing required key `{field}` {place}: {hint}"),
        None => format!("missing required key `{field}` {place}"),
    }
}

/// The expected name within edit distance 2 of a typo, if exactly one is closest.
fn closest<'a>(typo: &str, expected: &[&'a str]) -> Option<&'a str> {
    let typo = typo.to_ascii_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for &cand in expected {
        let d = edit_distance(&typo, cand);
        if d <= 2 && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, cand));
        }
    }
    best.map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------------------
// Tree surgery

fn find(node: &Node, id: usize) -> Option<&Node> {
    if node.id == id {
        return Some(node);
    }
    match &node.kind {
        NodeKind::Seq(items) => items.iter().find_map(|n| find(n, id)),
        NodeKind::Map(m) => m
            .entries
            .iter()
            .find_map(|e| find(&e.key, id).or_else(|| find(&e.value, id))),
        _ => None,
    }
}

/// The sequence or mapping directly holding node `id` (as an item, a key or a value).
fn parent_of(node: &Node, id: usize) -> Option<&Node> {
    let holds = match &node.kind {
        NodeKind::Seq(items) => items.iter().any(|n| n.id == id),
        NodeKind::Map(m) => m.entries.iter().any(|e| e.key.id == id || e.value.id == id),
        _ => false,
    };
    if holds {
        return Some(node);
    }
    match &node.kind {
        NodeKind::Seq(items) => items.iter().find_map(|n| parent_of(n, id)),
        NodeKind::Map(m) => m.entries.iter().find_map(|e| parent_of(&e.value, id)),
        _ => None,
    }
}

/// Remove node `id` from its list, or its entry from its mapping. `taint`: the removed value
/// was invalid (not merely an unknown key), so later checks should not trust the container.
/// False when `id` is the root, a placeholder, or not found: nothing to repair.
fn remove_node(node: &mut Node, id: usize, taint: bool) -> bool {
    match &mut node.kind {
        NodeKind::Seq(items) => {
            if let Some(i) = items.iter().position(|n| n.id == id) {
                if matches!(items[i].kind, NodeKind::Placeholder) {
                    return false;
                }
                items.remove(i);
                node.tainted |= taint;
                return true;
            }
            items.iter_mut().any(|n| remove_node(n, id, taint))
        }
        NodeKind::Map(m) => {
            if let Some(i) = m
                .entries
                .iter()
                .position(|e| e.key.id == id || e.value.id == id)
            {
                if matches!(m.entries[i].value.kind, NodeKind::Placeholder) {
                    return false;
                }
                let e = m.entries.remove(i);
                if taint {
                    m.dropped_keys
                        .push(e.key.text().unwrap_or_default().to_string());
                }
                return true;
            }
            m.entries
                .iter_mut()
                .any(|e| remove_node(&mut e.value, id, taint))
        }
        _ => false,
    }
}

/// Add `field: <placeholder>` to mapping `map_id`. False when there is no such mapping.
fn insert_placeholder(node: &mut Node, map_id: usize, field: &str, first_id: usize) -> bool {
    if node.id == map_id {
        let NodeKind::Map(m) = &mut node.kind else {
            return false; // a placeholder section: nothing sensible to invent inside it
        };
        if m.entries.iter().any(|e| e.key.text() == Some(field)) {
            return false;
        }
        let path = key_path(&node.path, field);
        let make = |id, kind| Node {
            id,
            mark: node.mark,
            path: path.clone(),
            kind,
            tainted: true,
        };
        let key = make(
            first_id,
            NodeKind::Scalar {
                text: field.to_string(),
                plain: false,
            },
        );
        let value = make(first_id + 1, NodeKind::Placeholder);
        m.entries.push(Entry { key, value });
        return true;
    }
    match &mut node.kind {
        NodeKind::Seq(items) => items
            .iter_mut()
            .any(|n| insert_placeholder(n, map_id, field, first_id)),
        NodeKind::Map(m) => m
            .entries
            .iter_mut()
            .any(|e| insert_placeholder(&mut e.value, map_id, field, first_id)),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Errors

/// Where an error happened.
#[derive(Debug, Clone)]
struct At {
    node: usize,
    mark: Mark,
    path: String,
}

#[derive(Debug, Clone)]
enum ErrKind {
    UnknownField {
        field: String,
        expected: &'static [&'static str],
    },
    MissingField(&'static str),
    Other,
}

/// A deserialization error; located at the innermost node it came out of.
#[derive(Debug, Clone)]
pub(crate) struct DeError {
    kind: ErrKind,
    message: String,
    at: Option<At>,
}

impl DeError {
    fn other(message: String) -> DeError {
        DeError {
            kind: ErrKind::Other,
            message,
            at: None,
        }
    }

    fn locate(mut self, node: &Node) -> DeError {
        if self.at.is_none() {
            self.at = Some(At {
                node: node.id,
                mark: node.mark,
                path: node.path.clone(),
            });
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

/// serde's names for what a visitor expected, in words a config author knows.
fn expected_words(exp: &dyn Expected) -> String {
    let s = exp.to_string();
    let max = match s.as_str() {
        "u8" => Some(u8::MAX as u64),
        "u16" => Some(u16::MAX as u64),
        "u32" => Some(u32::MAX as u64),
        "u64" | "usize" => Some(u64::MAX),
        _ => None,
    };
    if let Some(max) = max {
        return format!("a whole number from 0 to {max}");
    }
    match s.as_str() {
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_string(),
        "f32" | "f64" => "a number".to_string(),
        "a boolean" => "true or false".to_string(),
        "a sequence" => "a list".to_string(),
        "a map" => "a mapping".to_string(),
        "path string" => "a file path".to_string(),
        _ if s.starts_with("struct ") => "a mapping".to_string(),
        _ => s,
    }
}

fn unexpected_words(u: &Unexpected) -> String {
    match u {
        Unexpected::Unit | Unexpected::Option => "an empty value".to_string(),
        Unexpected::Bool(b) => format!("`{b}`"),
        Unexpected::Unsigned(n) => format!("`{n}`"),
        Unexpected::Signed(n) => format!("`{n}`"),
        Unexpected::Float(n) => format!("`{n}`"),
        Unexpected::Str(s) => format!("`{s}`"),
        Unexpected::Seq => "a list".to_string(),
        Unexpected::Map => "a mapping".to_string(),
        other => other.to_string(),
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::other(msg.to_string())
    }

    fn invalid_type(unexp: Unexpected, exp: &dyn Expected) -> Self {
        DeError::other(format!(
            "expected {}, found {}",
            expected_words(exp),
            unexpected_words(&unexp)
        ))
    }

    fn invalid_value(unexp: Unexpected, exp: &dyn Expected) -> Self {
        Self::invalid_type(unexp, exp)
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::other(format!(
            "unknown value `{variant}`; expected one of {}",
            expected.join(", ")
        ))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            kind: ErrKind::UnknownField {
                field: field.to_string(),
                expected,
            },
            message: format!("unknown key `{field}`"),
            at: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            kind: ErrKind::MissingField(field),
            message: format!("missing required key `{field}`"),
            at: None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Scalars

/// What an unquoted scalar means (YAML 1.2 core schema, as serde_yaml reads it).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scalar<'a> {
    Null,
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Str(&'a str),
}

fn resolve(text: &str, plain: bool) -> Scalar<'_> {
    if !plain {
        return Scalar::Str(text);
    }
    if super::tree::is_null_text(text) {
        return Scalar::Null;
    }
    match text {
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Scalar::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    let unsigned = text.strip_prefix('+').unwrap_or(text);
    if let Some(hex) = unsigned.strip_prefix("0x") {
        if let Ok(n) = u64::from_str_radix(hex, 16) {
            return Scalar::Unsigned(n);
        }
    }
    if let Some(oct) = unsigned.strip_prefix("0o") {
        if let Ok(n) = u64::from_str_radix(oct, 8) {
            return Scalar::Unsigned(n);
        }
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(unsigned) {
        if let Ok(n) = unsigned.parse::<u64>() {
            return Scalar::Unsigned(n);
        }
    }
    if let Some(neg) = text.strip_prefix('-') {
        if digits(neg) {
            if let Ok(n) = text.parse::<i64>() {
                return Scalar::Signed(n);
            }
        }
    }
    // Floats: digits with a point and/or an exponent; never words like `inf` or `nan`.
    let body = text.strip_prefix(['+', '-']).unwrap_or(text);
    if body.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && body.bytes().any(|b| b.is_ascii_digit())
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        if let Ok(f) = text.parse::<f64>() {
            return Scalar::Float(f);
        }
    }
    Scalar::Str(text)
}

impl<'a> Scalar<'a> {
    fn unexpected(self) -> Unexpected<'a> {
        match self {
            Scalar::Null => Unexpected::Unit,
            Scalar::Bool(b) => Unexpected::Bool(b),
            Scalar::Unsigned(n) => Unexpected::Unsigned(n),
            Scalar::Signed(n) => Unexpected::Signed(n),
            Scalar::Float(f) => Unexpected::Float(f),
            Scalar::Str(s) => Unexpected::Str(s),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The Deserializer

/// Deserializes one node of the tree.
#[derive(Clone, Copy)]
struct De<'a>(&'a Node);

impl<'a> De<'a> {
    fn scalar(&self) -> Option<Scalar<'a>> {
        match &self.0.kind {
            NodeKind::Scalar { text, plain } => Some(resolve(text, *plain)),
            _ => None,
        }
    }

    fn unexpected(&self) -> Unexpected<'a> {
        match &self.0.kind {
            NodeKind::Scalar { text, plain } => resolve(text, *plain).unexpected(),
            NodeKind::Seq(_) => Unexpected::Seq,
            NodeKind::Map(_) => Unexpected::Map,
            NodeKind::Placeholder => Unexpected::Unit,
        }
    }

    fn wrong_type<T>(&self, exp: &dyn Expected) -> Result<T, DeError> {
        Err(<DeError as de::Error>::invalid_type(self.unexpected(), exp).locate(self.0))
    }

    fn wrong_type_msg<T>(&self, expected: String) -> Result<T, DeError> {
        Err(DeError::other(format!(
            "expected {expected}, found {}",
            unexpected_words(&self.unexpected())
        ))
        .locate(self.0))
    }

    /// Empty value or placeholder where a list or mapping is expected: treat as empty.
    fn is_empty_section(&self) -> bool {
        self.0.is_null() || matches!(self.0.kind, NodeKind::Placeholder)
    }

    fn number<V: Visitor<'a>>(self, visitor: V, float: bool) -> Result<V::Value, DeError> {
        let r = match self.scalar() {
            Some(Scalar::Unsigned(n)) => visitor.visit_u64(n),
            Some(Scalar::Signed(n)) => visitor.visit_i64(n),
            Some(Scalar::Float(f)) if float => visitor.visit_f64(f),
            None if matches!(self.0.kind, NodeKind::Placeholder) => visitor.visit_u64(0),
            _ => return self.wrong_type(&visitor),
        };
        r.map_err(|e: DeError| e.locate(self.0))
    }
}

macro_rules! integers {
    ($($m:ident)*) => {$(
        fn $m<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.number(visitor, false)
        }
    )*};
}

impl<'a> de::Deserializer<'a> for De<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let node = self.0;
        let r = match &node.kind {
            NodeKind::Scalar { text, plain } => match resolve(text, *plain) {
                Scalar::Null => visitor.visit_unit(),
                Scalar::Bool(b) => visitor.visit_bool(b),
                Scalar::Unsigned(n) => visitor.visit_u64(n),
                Scalar::Signed(n) => visitor.visit_i64(n),
                Scalar::Float(f) => visitor.visit_f64(f),
                Scalar::Str(_) => visitor.visit_borrowed_str(text),
            },
            NodeKind::Seq(items) => visitor.visit_seq(Seq(items.iter())),
            NodeKind::Map(m) => visitor.visit_map(Map::new(&m.entries)),
            NodeKind::Placeholder => visitor.visit_unit(),
        };
        r.map_err(|e: DeError| e.locate(node))
    }

    fn deserialize_bool<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar() {
            Some(Scalar::Bool(b)) => visitor.visit_bool(b).map_err(|e: DeError| e.locate(self.0)),
            None if matches!(self.0.kind, NodeKind::Placeholder) => visitor
                .visit_bool(false)
                .map_err(|e: DeError| e.locate(self.0)),
            _ => self.wrong_type(&visitor),
        }
    }

    integers!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
              deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128);

    fn deserialize_f32<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.number(visitor, true)
    }

    fn deserialize_f64<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.number(visitor, true)
    }

    fn deserialize_char<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let node = self.0;
        match &node.kind {
            NodeKind::Scalar { text, .. } if !node.is_null() => visitor
                .visit_borrowed_str(text)
                .map_err(|e: DeError| e.locate(node)),
            NodeKind::Placeholder => visitor.visit_str("").map_err(|e: DeError| e.locate(node)),
            _ => self.wrong_type(&visitor),
        }
    }

    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.is_empty_section() {
            visitor.visit_none().map_err(|e: DeError| e.locate(self.0))
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.is_empty_section() {
            visitor.visit_unit().map_err(|e: DeError| e.locate(self.0))
        } else {
            self.wrong_type(&visitor)
        }
    }

    fn deserialize_unit_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let node = self.0;
        match &node.kind {
            NodeKind::Seq(items) => visitor.visit_seq(Seq(items.iter())),
            _ if self.is_empty_section() => visitor.visit_seq(Seq([].iter())),
            _ => return self.wrong_type_msg("a list".to_string()),
        }
        .map_err(|e: DeError| e.locate(node))
    }

    fn deserialize_tuple<V: Visitor<'a>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let node = self.0;
        match &node.kind {
            NodeKind::Map(m) => visitor.visit_map(Map::new(&m.entries)),
            _ if self.is_empty_section() => visitor.visit_map(Map::new(&[])),
            _ => return self.wrong_type_msg("a mapping".to_string()),
        }
        .map_err(|e: DeError| e.locate(node))
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let node = self.0;
        match &node.kind {
            NodeKind::Map(m) => visitor.visit_map(Map::new(&m.entries)),
            _ if self.is_empty_section() => visitor.visit_map(Map::new(&[])),
            _ => return self.wrong_type_msg(format!("a mapping with keys {}", fields.join(", "))),
        }
        .map_err(|e: DeError| e.locate(node))
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let node = self.0;
        let text: &'a str = match &node.kind {
            NodeKind::Scalar { text, .. } if !node.is_null() => text,
            NodeKind::Placeholder => variants.first().copied().unwrap_or(""),
            _ => return self.wrong_type_msg(format!("one of {}", variants.join(", "))),
        };
        visitor
            .visit_enum(UnitEnum(text))
            .map_err(|e: DeError| e.locate(node))
    }

    fn deserialize_identifier<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct Seq<'a>(std::slice::Iter<'a, Node>);

impl<'a> SeqAccess<'a> for Seq<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.0.next() {
            Some(node) => seed
                .deserialize(De(node))
                .map(Some)
                .map_err(|e: DeError| e.locate(node)),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Map<'a> {
    entries: std::slice::Iter<'a, Entry>,
    value: Option<&'a Node>,
}

impl<'a> Map<'a> {
    fn new(entries: &'a [Entry]) -> Map<'a> {
        Map {
            entries: entries.iter(),
            value: None,
        }
    }
}

impl<'a> MapAccess<'a> for Map<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some(e) => {
                self.value = Some(&e.value);
                seed.deserialize(De(&e.key))
                    .map(Some)
                    .map_err(|err| err.locate(&e.key))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some(node) => seed
                .deserialize(De(node))
                .map_err(|e: DeError| e.locate(node)),
            None => Err(DeError::other(
                "a value was asked for before its key".into(),
            )),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// An enum written as a plain word (`strategy: round_robin`): unit variants only.
struct UnitEnum<'a>(&'a str);

impl<'a> EnumAccess<'a> for UnitEnum<'a> {
    type Error = DeError;
    type Variant = UnitOnly;

    fn variant_seed<V: DeserializeSeed<'a>>(
        self,
        seed: V,
    ) -> Result<(V::Value, UnitOnly), DeError> {
        let de = de::value::BorrowedStrDeserializer::<DeError>::new(self.0);
        seed.deserialize(de).map(|v| (v, UnitOnly))
    }
}

struct UnitOnly;

impl<'a> VariantAccess<'a> for UnitOnly {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'a>>(self, _seed: T) -> Result<T::Value, DeError> {
        Err(DeError::other("expected a mapping for this value".into()))
    }

    fn tuple_variant<V: Visitor<'a>>(self, _len: usize, _visitor: V) -> Result<V::Value, DeError> {
        Err(DeError::other("expected a list for this value".into()))
    }

    fn struct_variant<V: Visitor<'a>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, DeError> {
        Err(DeError::other("expected a mapping for this value".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        label: String,
        #[serde(default)]
        n: u32,
        #[serde(default)]
        on: Option<bool>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default)]
        items: Vec<Inner>,
        #[serde(default)]
        f: f64,
        #[serde(default)]
        tags: Vec<String>,
    }

    fn run(text: &str) -> (Option<Outer>, Vec<(usize, usize, String)>) {
        let mut doc = super::super::tree::parse(text).unwrap();
        let (v, p) = from_doc::<Outer>(&mut doc);
        (
            v,
            p.into_iter()
                .map(|p| (p.mark.line, p.mark.column, p.message))
                .collect(),
        )
    }

    #[test]
    fn scalars_resolve_like_yaml_1_2() {
        assert_eq!(resolve("~", true), Scalar::Null);
        assert_eq!(resolve("yes", true), Scalar::Str("yes"));
        assert_eq!(resolve("True", true), Scalar::Bool(true));
        assert_eq!(resolve("42", true), Scalar::Unsigned(42));
        assert_eq!(resolve("-4", true), Scalar::Signed(-4));
        assert_eq!(resolve("0x10", true), Scalar::Unsigned(16));
        assert_eq!(resolve("1.5", true), Scalar::Float(1.5));
        assert_eq!(resolve("1e3", true), Scalar::Float(1000.0));
        assert_eq!(resolve("inf", true), Scalar::Str("inf"));
        assert_eq!(resolve("1.2.3.4", true), Scalar::Str("1.2.3.4"));
        assert_eq!(resolve("42", false), Scalar::Str("42"));
    }

    #[test]
    fn every_error_is_reported_and_the_rest_still_parses() {
        let (v, errs) = run(
            "items:\n  - label: a\n    n: x\n    lable: b\n  - n: 3\n  - label: c\n    on: maybe\nf: 2\nextra: 1\n",
        );
        assert_eq!(
            errs,
            vec![
                (3, 8, "items[0].n: expected a whole number from 0 to 4294967295, found `x`".into()),
                (
                    4,
                    5,
                    "unknown key `lable` in items[0]; expected one of label, n, on (did you mean `label`?)"
                        .into()
                ),
                (5, 5, "missing required key `label` in items[1]".into()),
                (7, 9, "items[2].on: expected true or false, found `maybe`".into()),
                (
                    9,
                    1,
                    "unknown key `extra` at the top level; expected one of items, f, tags".into()
                ),
            ]
        );
        let v = v.unwrap();
        assert_eq!(v.items.len(), 3);
        assert_eq!(v.items[2].label, "c");
        assert_eq!(v.f, 2.0);
    }

    #[test]
    fn strings_accept_any_scalar_but_not_null_or_lists() {
        let (v, errs) = run("tags: [8080, true, 'x', ~, [a]]\n");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(
            errs[0],
            (
                1,
                25,
                "tags[3]: expected a string, found an empty value".into()
            )
        );
        assert_eq!(
            errs[1],
            (1, 28, "tags[4]: expected a string, found a list".into())
        );
        assert_eq!(v.unwrap().tags, vec!["8080", "true", "x"]);
    }

    #[test]
    fn wrong_shapes() {
        let (v, errs) = run("- a\n");
        assert!(v.is_none());
        assert_eq!(
            errs[0].2,
            "expected a mapping with keys items, f, tags, found a list"
        );
        let (_, errs) = run("items: {name: a}\n");
        assert_eq!(
            errs[0],
            (1, 8, "items: expected a list, found a mapping".into())
        );
        let (v, errs) = run("items:\nf:\n");
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0],
            (2, 1, "f: expected a number, found an empty value".into())
        );
        assert!(v.unwrap().items.is_empty());
    }
}
