//! YAML text to a tree of nodes, each marked with the file, line and column
//! it was written at.
//!
//! # Why a tree of our own
//!
//! Errors must point at the offending text for every value, not only at the
//! first syntax error, and must keep pointing at the right place through
//! anchors, merge keys, `include` and `extends`. serde-based YAML crates
//! (serde_yaml and its forks) deserialize straight into types and forget
//! positions, so this module reads the events of `saphyr-parser`, a
//! maintained YAML 1.2 event parser that marks every event, and builds a
//! [`Node`] tree where every node and every mapping key carries its
//! [`Mark`]:
//!
//! - an alias (`*name`) becomes a copy of its anchor's node that keeps the
//!   anchor's marks, since the text is there, and records the alias's own
//!   mark in `via` so an error can also say where it was used;
//! - merge keys (`<<: *defaults`, `<<: [*a, *b]`) are applied here, on the
//!   tree: the mapping's own keys win, then the merged mappings in order;
//!   merged values keep the marks of their text and get the `<<`'s alias as
//!   `via`;
//! - a duplicate key is an error at its second occurrence;
//! - plain scalars stay text ([`Scalar`] with `plain: true`), so a variable
//!   written `1.10` stays `1.10`; the decoder resolves booleans and numbers
//!   for the keys that want them.
//!
//! `include` and `extends` merge whole trees with [`deep_merge`], which
//! moves nodes and so keeps their marks, and the marks carry their file.
//! The typed layer (`decode`) then reads the tree.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::decode::KeyPath;
use crate::error::ErrorKind;

/// Past this many nodes, alias expansion is an error rather than a way to
/// exhaust memory ("billion laughs").
pub(crate) const MAX_NODES: usize = 200_000;
/// Past this depth of nested lists and mappings, the document is refused
/// (every later step walks the tree recursively).
pub(crate) const MAX_DEPTH: usize = 128;

/// Where a node was written: 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mark {
    pub file: Arc<Path>,
    pub line: usize,
    pub column: usize,
}

impl Mark {
    pub(crate) fn location(&self) -> crate::Location {
        crate::Location {
            file: self.file.to_path_buf(),
            line: self.line,
            column: self.column,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub value: Value,
    pub at: Mark,
    /// The alias this node was reached through, when it is a copy of an
    /// anchored node (or a value merged from one).
    pub via: Option<Mark>,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Null,
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone)]
pub(crate) struct Scalar {
    pub text: String,
    /// Written plain (not quoted, not a block scalar, no `!!str`): only then
    /// may it be read as a boolean or a number.
    pub plain: bool,
    /// The column of the text's first character when the text is written
    /// verbatim on one line (plain, or quoted without escapes), so that an
    /// error inside it (an `if` expression) can point at its own column.
    pub verbatim_column: Option<usize>,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: String,
    pub key_at: Mark,
    pub value: Node,
}

impl Node {
    /// What the node is, for "expected a string, found a list".
    pub(crate) fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
            Value::Scalar(s) if !s.plain => "a string",
            Value::Scalar(s) => {
                if plain_bool(&s.text).is_some() {
                    "a boolean"
                } else if plain_int(&s.text).is_some() {
                    "an integer"
                } else if is_plain_float(&s.text) {
                    "a number"
                } else {
                    "a string"
                }
            }
        }
    }

    pub(crate) fn entries(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Entry> {
        self.entries()?.iter().find(|e| e.key == key)
    }

    /// Removes `key` from a mapping, returning its entry.
    pub(crate) fn take(&mut self, key: &str) -> Option<Entry> {
        match &mut self.value {
            Value::Map(entries) => {
                let i = entries.iter().position(|e| e.key == key)?;
                Some(entries.remove(i))
            }
            _ => None,
        }
    }

    fn size(&self) -> usize {
        1 + match &self.value {
            Value::Null | Value::Scalar(_) => 0,
            Value::Seq(items) => items.iter().map(Node::size).sum(),
            Value::Map(entries) => entries.iter().map(|e| e.value.size()).sum(),
        }
    }
}

/// YAML 1.2 core schema booleans.
pub(crate) fn plain_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// YAML 1.2 core schema integers (decimal, `0o`, `0x`).
pub(crate) fn plain_int(text: &str) -> Option<i64> {
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok();
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return i64::from_str_radix(oct, 8).ok();
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn is_plain_float(text: &str) -> bool {
    matches!(
        text,
        ".inf" | ".Inf" | ".INF" | "-.inf" | "-.Inf" | "-.INF" | "+.inf" | ".nan" | ".NaN" | ".NAN"
    ) || (text.bytes().any(|b| b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && text.parse::<f64>().is_ok())
}

/// Where `text` starts, when the span holds exactly it (plain) or it in
/// quotes (quoted without escapes), on one line.
fn verbatim_column(text: &str, style: ScalarStyle, span: Span) -> Option<usize> {
    let quotes = match style {
        ScalarStyle::Plain => 0,
        ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => 1,
        _ => return None,
    };
    let same_line = span.start.line() == span.end.line();
    let verbatim =
        span.end.index().checked_sub(span.start.index()) == Some(text.chars().count() + 2 * quotes);
    (same_line && verbatim && !text.contains('\n')).then_some(span.start.col() + 1 + quotes)
}

fn is_plain_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// An error found while reading the YAML, before any key has a meaning.
#[derive(Debug)]
pub(crate) struct YamlError {
    pub at: Mark,
    /// The key path of the offending node.
    pub path: String,
    pub kind: ErrorKind,
    pub hint: Option<String>,
    pub via: Option<Mark>,
}

enum Frame {
    Seq {
        items: Vec<Node>,
        at: Mark,
        anchor: usize,
    },
    Map {
        pairs: Vec<(Node, Node)>,
        key: Option<Node>,
        at: Mark,
        anchor: usize,
    },
}

struct Builder {
    file: Arc<Path>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    nodes: usize,
    errors: Vec<YamlError>,
}

/// Parses one YAML document into a marked tree. `None` for an empty file;
/// a syntax error ends the parse, other errors (duplicate keys, bad merge
/// keys, tags) are collected and the tree is still built around them.
pub(crate) fn parse(text: &str, file: &Arc<Path>) -> (Option<Node>, Vec<YamlError>) {
    let mut b = Builder {
        file: file.clone(),
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        nodes: 0,
        errors: Vec::new(),
    };
    let mut documents = 0;
    for event in Parser::new_from_str(text) {
        let (event, span) = match event {
            Ok(e) => e,
            Err(e) => {
                let m = e.marker();
                let path = b.path().to_string();
                b.errors.push(YamlError {
                    at: Mark {
                        file: file.clone(),
                        line: m.line(),
                        column: m.col() + 1,
                    },
                    path,
                    kind: ErrorKind::Syntax(e.info().to_string()),
                    hint: None,
                    via: None,
                });
                return (None, b.errors);
            }
        };
        let at = b.mark(span);
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    b.error(at, ErrorKind::MultipleDocuments, None);
                    break;
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let mut plain = style == ScalarStyle::Plain;
                if let Some(tag) = tag {
                    if tag.is_yaml_core_schema() {
                        if tag.suffix == "str" {
                            plain = false;
                        }
                    } else {
                        b.error(at.clone(), ErrorKind::Tag(tag.to_string()), None);
                    }
                }
                let value = if plain && is_plain_null(&text) {
                    Value::Null
                } else {
                    let verbatim_column = verbatim_column(&text, style, span);
                    Value::Scalar(Scalar {
                        text: text.into_owned(),
                        plain,
                        verbatim_column,
                    })
                };
                b.finish(
                    Node {
                        value,
                        at,
                        via: None,
                    },
                    anchor,
                );
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if b.stack.len() >= MAX_DEPTH => {
                b.error(at, ErrorKind::TooDeep(MAX_DEPTH), None);
                return (None, b.errors);
            }
            Event::SequenceStart(anchor, tag) => {
                b.check_tag(&at, tag.as_deref(), "seq");
                b.stack.push(Frame::Seq {
                    items: Vec::new(),
                    at,
                    anchor,
                });
            }
            Event::MappingStart(anchor, tag) => {
                b.check_tag(&at, tag.as_deref(), "map");
                b.stack.push(Frame::Map {
                    pairs: Vec::new(),
                    key: None,
                    at,
                    anchor,
                });
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq { items, at, anchor }) = b.stack.pop() {
                    b.finish(
                        Node {
                            value: Value::Seq(items),
                            at,
                            via: None,
                        },
                        anchor,
                    );
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    pairs, at, anchor, ..
                }) = b.stack.pop()
                {
                    let entries = b.entries(pairs);
                    b.finish(
                        Node {
                            value: Value::Map(entries),
                            at,
                            via: None,
                        },
                        anchor,
                    );
                }
            }
            Event::Alias(id) => {
                // saphyr-parser rejects an alias to an unknown anchor.
                let Some(target) = b.anchors.get(&id) else {
                    continue;
                };
                b.nodes += target.size();
                if b.nodes > MAX_NODES {
                    b.error(at, ErrorKind::TooLarge(MAX_NODES), None);
                    return (None, b.errors);
                }
                let mut node = target.clone();
                node.via = Some(at);
                b.finish(node, 0);
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
    (b.root, b.errors)
}

impl Builder {
    fn mark(&self, span: Span) -> Mark {
        Mark {
            file: self.file.clone(),
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }

    /// The key path of the node being built.
    fn path(&self) -> KeyPath {
        let mut path = KeyPath::default();
        for frame in &self.stack {
            path = match frame {
                Frame::Seq { items, .. } => path.index(items.len()),
                Frame::Map { key: Some(k), .. } => match &k.value {
                    Value::Scalar(s) => path.key(&s.text),
                    _ => path,
                },
                Frame::Map { .. } => path,
            };
        }
        path
    }

    fn error(&mut self, at: Mark, kind: ErrorKind, hint: Option<String>) {
        let path = self.path().to_string();
        self.errors.push(YamlError {
            at,
            path,
            kind,
            hint,
            via: None,
        });
    }

    fn check_tag(&mut self, at: &Mark, tag: Option<&saphyr_parser::Tag>, core: &str) {
        if let Some(tag) = tag {
            if !(tag.is_yaml_core_schema() && tag.suffix == core) {
                self.error(at.clone(), ErrorKind::Tag(tag.to_string()), None);
            }
        }
    }

    /// A complete node: into its parent, or the root.
    fn finish(&mut self, node: Node, anchor: usize) {
        self.nodes += 1;
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { pairs, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => pairs.push((k, node)),
            },
            None => self.root = Some(node),
        }
    }

    /// A mapping's entries: string keys, no duplicates, merge keys applied.
    fn entries(&mut self, pairs: Vec<(Node, Node)>) -> Vec<Entry> {
        let mut entries: Vec<Entry> = Vec::with_capacity(pairs.len());
        let mut merges = Vec::new();
        for (key, value) in pairs {
            let Value::Scalar(ref scalar) = key.value else {
                let found = key.kind_name();
                self.error(key.at, ErrorKind::KeyType(found), None);
                continue;
            };
            let name = scalar.text.clone();
            if name == "<<" && matches!(key.value, Value::Scalar(Scalar { plain: true, .. })) {
                merges.push(value);
                continue;
            }
            if let Some(first) = entries.iter().find(|e| e.key == name) {
                let hint = format!(
                    "the first `{name}` is at line {}, column {}; a key appears once in a mapping",
                    first.key_at.line, first.key_at.column
                );
                let path = self.path().key(&name).to_string();
                self.errors.push(YamlError {
                    at: key.at,
                    path,
                    kind: ErrorKind::DuplicateKey(name),
                    hint: Some(hint),
                    via: None,
                });
                continue;
            }
            entries.push(Entry {
                key: name,
                key_at: key.at,
                value,
            });
        }
        for merge in merges {
            let via = merge.via.clone();
            let sources = match merge.value {
                Value::Map(_) => vec![merge],
                Value::Seq(items) => items,
                _ => {
                    let found = merge.kind_name();
                    self.error(merge.at, ErrorKind::Merge(found), None);
                    continue;
                }
            };
            for source in sources {
                let source_via = source.via.clone().or_else(|| via.clone());
                let Value::Map(source_entries) = source.value else {
                    let found = source.kind_name();
                    let path = self.path().to_string();
                    self.errors.push(YamlError {
                        at: source.at,
                        path,
                        kind: ErrorKind::Merge(found),
                        hint: None,
                        via: source_via,
                    });
                    continue;
                };
                for mut entry in source_entries {
                    if entries.iter().any(|e| e.key == entry.key) {
                        continue;
                    }
                    if entry.value.via.is_none() {
                        entry.value.via.clone_from(&source_via);
                    }
                    entries.push(entry);
                }
            }
        }
        entries
    }
}

/// Merges `over` into `base` the way GitLab's `extends` and `include` do:
/// mappings merge key by key, recursively, `over`'s keys winning; any
/// other value of `over` (a list, a scalar, null) replaces `base`'s. Nodes
/// move, so every value keeps the mark of the text it came from. The result
/// has `over`'s mark.
pub(crate) fn deep_merge(base: Node, over: Node) -> Node {
    match (base.value, over.value) {
        (Value::Map(mut entries), Value::Map(over_entries)) => {
            for entry in over_entries {
                match entries.iter().position(|e| e.key == entry.key) {
                    Some(i) => {
                        let old = entries.remove(i);
                        let value =
                            if old.value.entries().is_some() && entry.value.entries().is_some() {
                                deep_merge(old.value, entry.value)
                            } else {
                                entry.value
                            };
                        entries.insert(
                            i,
                            Entry {
                                key: entry.key,
                                key_at: entry.key_at,
                                value,
                            },
                        );
                    }
                    None => entries.push(entry),
                }
            }
            Node {
                value: Value::Map(entries),
                at: over.at,
                via: over.via,
            }
        }
        (_, value) => Node {
            value,
            at: over.at,
            via: over.via,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Node {
        let (node, errors) = parse(text, &Arc::from(Path::new("p.yaml")));
        assert!(errors.is_empty(), "{errors:?}");
        node.expect("a document")
    }

    fn pos(m: &Mark) -> (usize, usize) {
        (m.line, m.column)
    }

    fn scalar(n: &Node) -> &str {
        match &n.value {
            Value::Scalar(s) => &s.text,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn marks_keys_and_values() {
        let n = parse_ok("a: 1\nb:\n  c: [x, 'y']\n  d: \"z\"\n");
        let b = n.get("b").unwrap();
        assert_eq!(pos(&b.key_at), (2, 1));
        let c = b.value.get("c").unwrap();
        assert_eq!(pos(&c.key_at), (3, 3));
        let Value::Seq(items) = &c.value.value else {
            panic!()
        };
        assert_eq!(pos(&items[0].at), (3, 7));
        assert_eq!(pos(&items[1].at), (3, 10));
        assert_eq!(pos(&b.value.get("d").unwrap().value.at), (4, 6));
    }

    #[test]
    fn aliases_keep_the_anchor_marks_and_record_the_alias() {
        let n = parse_ok("x: &a\n  k: v\ny: *a\n");
        let y = &n.get("y").unwrap().value;
        assert_eq!(pos(&y.get("k").unwrap().value.at), (2, 6));
        assert_eq!(pos(y.via.as_ref().unwrap()), (3, 4));
    }

    #[test]
    fn merge_keys_own_keys_win_then_sources_in_order() {
        let n = parse_ok("a: &a {k: 1, l: 1}\nb: &b {k: 2, m: 2}\nc:\n  <<: [*a, *b]\n  l: 3\n");
        let c = &n.get("c").unwrap().value;
        let keys: Vec<_> = c
            .entries()
            .unwrap()
            .iter()
            .map(|e| e.key.as_str())
            .collect();
        assert_eq!(keys, ["l", "k", "m"]);
        assert_eq!(scalar(&c.get("k").unwrap().value), "1");
        assert_eq!(scalar(&c.get("l").unwrap().value), "3");
        let m = &c.get("m").unwrap().value;
        assert_eq!(pos(&m.at), (2, 17));
        assert_eq!(pos(m.via.as_ref().unwrap()), (4, 12));
    }

    #[test]
    fn duplicate_keys_and_bad_merges_are_errors() {
        let (_, errors) = parse("a: 1\na: 2\nb:\n  <<: 3\n", &Arc::from(Path::new("p")));
        let mut kinds: Vec<_> = errors
            .iter()
            .map(|e| (e.kind.to_string(), pos(&e.at)))
            .collect();
        kinds.sort_by_key(|(_, p)| *p);
        assert_eq!(
            kinds,
            [
                ("duplicate key `a`".to_string(), (2, 1)),
                (
                    "`<<` merges a mapping or a list of mappings, found an integer".to_string(),
                    (4, 7)
                ),
            ]
        );
    }

    #[test]
    fn syntax_errors_stop_with_a_position() {
        let (node, errors) = parse("a: [1, 2\nb: 3\n", &Arc::from(Path::new("p")));
        assert!(node.is_none());
        assert_eq!(errors.len(), 1);
        assert!(matches!(errors[0].kind, ErrorKind::Syntax(_)));
    }

    #[test]
    fn alias_bombs_are_refused() {
        use std::fmt::Write as _;

        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            let _ = writeln!(
                text,
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]"
            );
        }
        let (node, errors) = parse(&text, &Arc::from(Path::new("p")));
        assert!(node.is_none());
        assert!(matches!(errors[0].kind, ErrorKind::TooLarge(_)));
    }

    #[test]
    fn plain_scalars_stay_text_and_nulls_are_null() {
        let n = parse_ok("a: 1.10\nb: ~\nc:\nd: '~'\ne: !!str true\n");
        assert_eq!(scalar(&n.get("a").unwrap().value), "1.10");
        assert!(matches!(n.get("b").unwrap().value.value, Value::Null));
        assert!(matches!(n.get("c").unwrap().value.value, Value::Null));
        assert_eq!(n.get("d").unwrap().value.kind_name(), "a string");
        assert_eq!(n.get("e").unwrap().value.kind_name(), "a string");
    }

    #[test]
    fn deep_merge_merges_mappings_and_replaces_the_rest() {
        let base = parse_ok("a: {x: 1, y: [1]}\nb: 1\n");
        let over = parse_ok("a: {y: [2], z: 3}\nc: 4\n");
        let merged = deep_merge(base, over);
        let a = &merged.get("a").unwrap().value;
        let keys: Vec<_> = a
            .entries()
            .unwrap()
            .iter()
            .map(|e| e.key.as_str())
            .collect();
        assert_eq!(keys, ["x", "y", "z"]);
        let Value::Seq(y) = &a.get("y").unwrap().value.value else {
            panic!()
        };
        assert_eq!(scalar(&y[0]), "2");
        assert!(merged.get("b").is_some() && merged.get("c").is_some());
    }
}
