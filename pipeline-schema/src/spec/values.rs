//! The leaf values of `pipeline.yaml`, each read and checked alone:
//! names, `version`, variables and label maps, durations, `if`
//! expressions, glob lists and command lists. Each has the JSON Schema an
//! editor checks it with.

use std::borrow::Cow;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::decode::{Ctx, Cx, Decode, OneOrMany, Spanned, Text};
use crate::error::ErrorKind;
use crate::expr::Expr;
use crate::glob::Filter;
use crate::yaml::{Node, Value};

/// The pattern of a variable name.
pub(crate) const VARIABLE_NAME: &str = "^[A-Za-z_][A-Za-z0-9_]*$";
/// The pattern of a job name: letters, digits, `_`, `-` and `.`, not
/// starting with `-`; a name starting with `.` is a template.
pub(crate) const JOB_NAME: &str = "^[A-Za-z0-9_.][A-Za-z0-9_.-]*$";

pub(crate) fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(crate) fn is_job_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `version: 1`.
#[derive(Debug, Clone)]
pub(crate) struct Version;

impl JsonSchema for Version {
    fn schema_name() -> Cow<'static, str> {
        "Version".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "const": 1 })
    }
}

impl Decode for Version {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Scalar(s) if s.text == "1" => Some(Self),
            Value::Scalar(s) => {
                cx.error(&node.at, ctx, ErrorKind::Version(s.text.clone()))
                    .hint = Some("this executor reads `version: 1`".to_string());
                None
            }
            _ => {
                cx.type_error(node, ctx, "the version number 1");
                None
            }
        }
    }
}

/// A mapping of variable names to values, in the order written.
#[derive(Debug, Clone, Default)]
pub(crate) struct Variables(pub Vec<(Spanned<String>, String)>);

impl Decode for Variables {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        let entries = named_entries(node, ctx, cx)?;
        let mut out = Vec::new();
        for (name, value_node, value_ctx) in entries {
            if let Some(Text(value)) = Text::decode(value_node, &value_ctx, cx) {
                out.push((name, value));
            }
        }
        Some(Self(out))
    }
}

/// Whether a mapping has keys other than `keys` (already reported).
pub(crate) fn has_unknown_keys(node: &Node, keys: &[&str]) -> bool {
    node.entries()
        .is_some_and(|entries| entries.iter().any(|e| !keys.contains(&e.key.as_str())))
}

/// The entries of a mapping whose keys are variable names.
pub(crate) fn named_entries<'a>(
    node: &'a Node,
    ctx: &Ctx,
    cx: &mut Cx,
) -> Option<Vec<(Spanned<String>, &'a Node, Ctx)>> {
    let Some(entries) = node.entries() else {
        cx.type_error(node, ctx, "a mapping");
        return None;
    };
    let mut out = Vec::new();
    for entry in entries {
        let child = ctx.key(&entry.key, &entry.value);
        if !is_variable_name(&entry.key) {
            cx.error(
                &entry.key_at,
                &child,
                ErrorKind::VariableName(entry.key.clone()),
            )
            .hint = Some(
                "a variable name is letters, digits and `_`, not starting with a digit".to_string(),
            );
            continue;
        }
        out.push((
            Spanned {
                value: entry.key.clone(),
                at: entry.key_at.clone(),
                ctx: child.clone(),
            },
            &entry.value,
            child,
        ));
    }
    Some(out)
}

impl JsonSchema for Variables {
    fn schema_name() -> Cow<'static, str> {
        "Variables".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let value = generator.subschema_for::<Text>();
        json_schema!({
            "description": "Variables by name; values are strings (numbers and booleans read as written).",
            "type": "object",
            "propertyNames": { "pattern": VARIABLE_NAME },
            "additionalProperties": value,
        })
    }
}

/// A mapping of any names to scalar values, in the order written (labels).
#[derive(Debug, Clone, Default)]
pub(crate) struct StringMap(pub Vec<(String, String)>);

impl Decode for StringMap {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        let Some(entries) = node.entries() else {
            cx.type_error(node, ctx, "a mapping");
            return None;
        };
        let mut out = Vec::new();
        for entry in entries {
            let child = ctx.key(&entry.key, &entry.value);
            if let Some(Text(value)) = Text::decode(&entry.value, &child, cx) {
                out.push((entry.key.clone(), value));
            }
        }
        Some(Self(out))
    }
}

impl JsonSchema for StringMap {
    fn schema_name() -> Cow<'static, str> {
        "StringMap".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let value = generator.subschema_for::<Text>();
        json_schema!({ "type": "object", "additionalProperties": value })
    }
}

/// A duration: `30s`, `10m`, `1h30m`, `1.5h`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DurationSpec(pub Duration);

impl Decode for DurationSpec {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        let text = String::decode(node, ctx, cx)?;
        match crate::duration::parse_duration(&text) {
            Ok(d) if d.is_zero() => {
                cx.error(&node.at, ctx, ErrorKind::Range(text, "a duration above 0s"));
                None
            }
            Ok(d) => Some(Self(d)),
            Err(source) => {
                cx.error(
                    &node.at,
                    ctx,
                    ErrorKind::Duration {
                        value: text,
                        source,
                    },
                )
                .hint = Some("write durations as 30s, 10m, 1h30m or 1.5h".to_string());
                None
            }
        }
    }
}

const DURATION_PATTERN: &str = r"^\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h|d)(\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h|d))*\s*$";

impl JsonSchema for DurationSpec {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: numbers with units ns, us, ms, s, m, h, d, as in 30s, 10m, 1h30m, 1.5h.",
            "type": "string",
            "pattern": DURATION_PATTERN,
            "examples": ["10m", "1h30m"],
        })
    }
}

/// A rules `if` expression, parsed.
#[derive(Debug, Clone)]
pub(crate) struct ExprSpec(pub Expr);

impl Decode for ExprSpec {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        let text = String::decode(node, ctx, cx)?;
        match Expr::parse(&text) {
            Ok(e) => Some(Self(e)),
            Err(source) => {
                // Point at the error's own column when the expression is
                // written verbatim on one line.
                let mut at = node.at.clone();
                if let Value::Scalar(s) = &node.value {
                    if let Some(column) = s.verbatim_column {
                        at.column = column + source.column - 1;
                    }
                }
                cx.error(&at, ctx, ErrorKind::Expression { text, source });
                None
            }
        }
    }
}

impl JsonSchema for ExprSpec {
    fn schema_name() -> Cow<'static, str> {
        "Expression".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A condition over variables: $VAR, \"strings\", null, ==, !=, =~ /regex/, !~, &&, ||, parentheses.",
            "type": "string",
            "examples": ["$CI_COMMIT_BRANCH == \"main\"", "$CI_COMMIT_TAG =~ /^v[0-9]+/"],
        })
    }
}

/// A non-empty list of globs, `!glob` excluding.
#[derive(Debug, Clone)]
pub(crate) struct Patterns(pub Filter);

impl Decode for Patterns {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        let OneOrMany(items) = OneOrMany::<Spanned<String>>::decode(node, ctx, cx)?;
        if items.is_empty() {
            cx.error(&node.at, ctx, ErrorKind::Empty("a list of patterns"))
                .hint = Some("leave the key out to match everything".to_string());
            return None;
        }
        let mut patterns = Vec::new();
        let mut ok = true;
        for item in items {
            match Filter::pattern(&item.value) {
                Ok(p) => patterns.push(p),
                Err(e) => {
                    ok = false;
                    cx.error(
                        &item.at,
                        &item.ctx,
                        ErrorKind::Glob {
                            pattern: item.value.clone(),
                            reason: e.to_string(),
                        },
                    );
                }
            }
        }
        ok.then(|| Self(Filter::from_patterns(patterns)))
    }
}

impl JsonSchema for Patterns {
    fn schema_name() -> Cow<'static, str> {
        "Patterns".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Globs (`*` stops at `/`, `**` crosses it); a glob starting with `!` excludes, the last match decides.",
            "anyOf": [
                { "type": "string" },
                { "type": "array", "items": { "type": "string" }, "minItems": 1 },
            ],
        })
    }
}

/// Commands: one string or a list (nested lists, from anchors, flatten).
#[derive(Debug, Clone, Default)]
pub(crate) struct Lines(pub Vec<String>);

impl Decode for Lines {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        fn collect(node: &Node, ctx: &Ctx, cx: &mut Cx, out: &mut Vec<String>, depth: usize) {
            match &node.value {
                Value::Seq(items) if depth < 10 => {
                    for (i, item) in items.iter().enumerate() {
                        collect(item, &ctx.index(i, item), cx, out, depth + 1);
                    }
                }
                Value::Scalar(s) => out.push(s.text.clone()),
                _ => cx.type_error(node, ctx, "a command or a list of commands"),
            }
        }
        let errors = cx.errors.len();
        let mut out = Vec::new();
        collect(node, ctx, cx, &mut out, 0);
        (cx.errors.len() == errors).then_some(Self(out))
    }
}

impl JsonSchema for Lines {
    fn schema_name() -> Cow<'static, str> {
        "Commands".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Shell commands: one string or a list (nested lists flatten).",
            "anyOf": [
                { "type": "string" },
                { "type": "array", "items": { "anyOf": [
                    { "type": "string" },
                    { "type": "array", "items": { "type": "string" } },
                ] } },
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_variable_name("CI_COMMIT_SHA"));
        assert!(is_variable_name("_x1"));
        assert!(!is_variable_name("1X"));
        assert!(!is_variable_name("A-B"));
        assert!(!is_variable_name(""));
        assert!(is_job_name("build-app"));
        assert!(is_job_name(".base"));
        assert!(is_job_name("test_3.12"));
        assert!(!is_job_name("-x"));
        assert!(!is_job_name("unit tests"));
        assert!(!is_job_name("a/b"));
    }
}
