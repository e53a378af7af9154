//! Reading typed values out of the marked tree, collecting every error.
//!
//! serde stops at the first error, and a pipeline author wants them all, so
//! the document types are read by hand through [`Decode`]: a value that does
//! not fit records an error (with its mark, key path and alias) and reads as
//! `None`, and its siblings are still read. Mappings are read through
//! [`Fields`], which reports unknown keys with the nearest valid one. The
//! keys each type accepts are the same constants its JSON Schema is checked
//! against (see the tests of `spec/mod.rs`).

use std::fmt;

use crate::error::{Error, ErrorKind};
use crate::suggest::did_you_mean;
use crate::yaml::{Mark, Node, Value, plain_bool, plain_int};

/// A key path, `jobs.test.needs[1]`; keys that are not plain identifiers
/// are quoted, `jobs[".base"].script`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl KeyPath {
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Key(key.to_string()));
        p
    }

    pub(crate) fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Index(i));
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(k)
                    if !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
                {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Segment::Key(k) => write!(f, "[{k:?}]")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Where a value being read is: its key path, and the alias it was reached
/// through (inherited from the nearest aliased ancestor).
#[derive(Debug, Clone, Default)]
pub(crate) struct Ctx {
    pub path: KeyPath,
    pub via: Option<Mark>,
}

impl Ctx {
    pub(crate) fn root(node: &Node) -> Self {
        Self {
            path: KeyPath::default(),
            via: node.via.clone(),
        }
    }

    pub(crate) fn key(&self, key: &str, child: &Node) -> Self {
        Self {
            path: self.path.key(key),
            via: child.via.clone().or_else(|| self.via.clone()),
        }
    }

    pub(crate) fn index(&self, i: usize, child: &Node) -> Self {
        Self {
            path: self.path.index(i),
            via: child.via.clone().or_else(|| self.via.clone()),
        }
    }
}

/// The errors found so far.
#[derive(Debug, Default)]
pub(crate) struct Cx {
    pub errors: Vec<Error>,
}

impl Cx {
    /// Records an error at `at`, returning it so a hint can be added.
    pub(crate) fn error(&mut self, at: &Mark, ctx: &Ctx, kind: ErrorKind) -> &mut Error {
        let mut e = Error::new(Some(at.location()), ctx.path.to_string(), kind);
        e.via = ctx.via.as_ref().map(Mark::location);
        self.errors.push(e);
        self.errors.last_mut().expect("just pushed")
    }

    pub(crate) fn type_error(&mut self, node: &Node, ctx: &Ctx, expected: &'static str) {
        self.error(
            &node.at,
            ctx,
            ErrorKind::Type {
                expected,
                found: node.kind_name(),
            },
        );
    }

    /// The fields of a mapping that may hold only `keys`; unknown keys are
    /// errors with the nearest valid key as a hint.
    pub(crate) fn fields<'a>(
        &mut self,
        node: &'a Node,
        ctx: &Ctx,
        keys: &'static [&'static str],
    ) -> Option<Fields<'a>> {
        let Some(entries) = node.entries() else {
            self.type_error(node, ctx, "a mapping");
            return None;
        };
        for entry in entries {
            if !keys.contains(&entry.key.as_str()) {
                self.unknown_key(entry, ctx, keys);
            }
        }
        Some(Fields {
            node,
            ctx: ctx.clone(),
        })
    }

    pub(crate) fn unknown_key(
        &mut self,
        entry: &crate::yaml::Entry,
        ctx: &Ctx,
        keys: &'static [&'static str],
    ) {
        let hint = did_you_mean(&entry.key, keys.iter().copied()).unwrap_or_else(|| match keys {
            [only] => format!("the only key here is `{only}`"),
            _ => format!("the keys here are {}", keys.join(", ")),
        });
        let child = ctx.key(&entry.key, &entry.value);
        self.error(
            &entry.key_at,
            &child,
            ErrorKind::UnknownKey(entry.key.clone()),
        )
        .hint = Some(hint);
    }
}

/// A mapping being read.
pub(crate) struct Fields<'a> {
    node: &'a Node,
    ctx: Ctx,
}

impl<'a> Fields<'a> {
    /// A mapping's fields without a check of its keys (the caller checks).
    pub(crate) fn new(node: &'a Node, ctx: Ctx) -> Self {
        Self { node, ctx }
    }

    /// A present, non-null field with its context.
    pub(crate) fn get(&self, key: &str) -> Option<(&'a Node, Ctx)> {
        let entry = self.node.get(key)?;
        if matches!(entry.value.value, Value::Null) {
            return None;
        }
        Some((&entry.value, self.ctx.key(key, &entry.value)))
    }

    /// An optional field; `null` reads as absent.
    pub(crate) fn opt<T: Decode>(&self, key: &str, cx: &mut Cx) -> Option<T> {
        let (node, ctx) = self.get(key)?;
        T::decode(node, &ctx, cx)
    }

    /// A required field: an error at the mapping when it is missing.
    pub(crate) fn req<T: Decode>(&self, key: &'static str, cx: &mut Cx) -> Option<T> {
        if self.get(key).is_none() {
            cx.error(&self.node.at, &self.ctx, ErrorKind::MissingKey(key));
            return None;
        }
        self.opt(key, cx)
    }
}

/// A type read from the tree.
pub(crate) trait Decode: Sized {
    /// Reads `node`, or records why it cannot and returns `None`.
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self>;
}

impl Decode for String {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        if let Value::Scalar(s) = &node.value {
            Some(s.text.clone())
        } else {
            cx.type_error(node, ctx, "a string");
            None
        }
    }
}

impl Decode for bool {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Scalar(s) if s.plain => plain_bool(&s.text).or_else(|| {
                cx.type_error(node, ctx, "a boolean (true or false)");
                None
            }),
            _ => {
                cx.type_error(node, ctx, "a boolean (true or false)");
                None
            }
        }
    }
}

impl Decode for u32 {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        let n = match &node.value {
            Value::Scalar(s) if s.plain => plain_int(&s.text),
            _ => None,
        };
        let Some(n) = n else {
            cx.type_error(node, ctx, "a whole number");
            return None;
        };
        u32::try_from(n).ok().or_else(|| {
            cx.error(
                &node.at,
                ctx,
                ErrorKind::Range(n.to_string(), "a whole number from 0"),
            );
            None
        })
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        let Value::Seq(items) = &node.value else {
            cx.type_error(node, ctx, "a list");
            return None;
        };
        Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| T::decode(item, &ctx.index(i, item), cx))
                .collect(),
        )
    }
}

/// A value with the place it was written, for errors found later (an
/// unknown job in `needs`, a stage that does not exist).
#[derive(Debug, Clone)]
pub(crate) struct Spanned<T> {
    pub value: T,
    pub at: Mark,
    pub ctx: Ctx,
}

impl<T: Decode> Decode for Spanned<T> {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        Some(Self {
            value: T::decode(node, ctx, cx)?,
            at: node.at.clone(),
            ctx: ctx.clone(),
        })
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Spanned<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// One value or a list of them (`extends: .base` or `extends: [.a, .b]`).
#[derive(Debug, Clone)]
pub(crate) struct OneOrMany<T>(pub Vec<T>);

impl<T: Decode> Decode for OneOrMany<T> {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Seq(_) => Vec::decode(node, ctx, cx).map(Self),
            _ => T::decode(node, ctx, cx).map(|v| Self(vec![v])),
        }
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for OneOrMany<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("OneOrMany_{}", T::schema_name()).into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let one = generator.subschema_for::<T>();
        schemars::json_schema!({
            "anyOf": [one, {"type": "array", "items": one}]
        })
    }
}

/// A scalar as text (`8080` reads `"8080"`, `1.10` reads `"1.10"`): the
/// values of variables, build arguments and labels.
#[derive(Debug, Clone)]
pub(crate) struct Text(pub String);

impl Decode for Text {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Scalar(s) => Some(Self(s.text.clone())),
            Value::Null => {
                cx.error(
                    &node.at,
                    ctx,
                    ErrorKind::Type {
                        expected: "a string, a number or a boolean",
                        found: "null",
                    },
                )
                .hint = Some("write `\"\"` for an empty value".to_string());
                None
            }
            _ => {
                cx.type_error(node, ctx, "a string, a number or a boolean");
                None
            }
        }
    }
}

impl schemars::JsonSchema for Text {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Text".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": ["string", "number", "boolean"]})
    }
}

/// A value out of a fixed set of names (`when: on_success`), with the
/// nearest name suggested for a typo.
pub(crate) fn choice<T: Copy>(
    node: &Node,
    ctx: &Ctx,
    cx: &mut Cx,
    choices: &[(&'static str, T)],
) -> Option<T> {
    let text = String::decode(node, ctx, cx)?;
    if let Some((_, v)) = choices.iter().find(|(name, _)| *name == text) {
        return Some(*v);
    }
    let names = choices.iter().map(|(n, _)| *n);
    let hint = did_you_mean(&text, names.clone());
    cx.error(
        &node.at,
        ctx,
        ErrorKind::Choice {
            value: text,
            expected: names.collect::<Vec<_>>().join(", "),
        },
    )
    .hint = hint;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_read_like_jq() {
        let p = KeyPath::default()
            .key("jobs")
            .key("test")
            .key("needs")
            .index(1);
        assert_eq!(p.to_string(), "jobs.test.needs[1]");
        let p = KeyPath::default().key("jobs").key(".base").key("script");
        assert_eq!(p.to_string(), "jobs[\".base\"].script");
        assert_eq!(
            KeyPath::default().key("include").index(0).to_string(),
            "include[0]"
        );
    }
}
