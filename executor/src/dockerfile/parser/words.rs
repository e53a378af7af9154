//! The shapes of an instruction's arguments, as BuildKit's
//! `frontend/dockerfile/parser/line_parsers.go` reads them: whitespace
//! separated words, one string, a JSON array with the fallback to shell
//! form, `key=value` pairs (ENV, LABEL, ARG), words with quotes and the
//! escape character, leading `--flags`; and Go's `strconv.Quote`, which
//! BuildKit's dumps and error messages use.

use std::fmt::Write as _;

/// `[\t\v\f\r ]`: BuildKit's `reWhitespace`.
pub(super) fn is_ascii_ws(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

pub(super) fn whitespace_delimited(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(is_ascii_ws)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

pub(super) fn string_arg(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        Vec::new()
    } else {
        vec![rest.to_string()]
    }
}

enum JsonArray {
    Strings(Vec<String>),
    NotJson,
}

/// Parses `rest` as a JSON array of strings. A JSON array holding anything but
/// strings is an error; text that is not a JSON array is `NotJson`.
fn parse_json(rest: &str) -> std::result::Result<JsonArray, String> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(JsonArray::NotJson);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return Ok(JsonArray::NotJson);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            other => Err(format!(
                "JSON arrays in Dockerfiles must hold only strings, found {other}"
            )),
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(JsonArray::Strings)
}

pub(super) fn maybe_json(rest: &str) -> std::result::Result<(Vec<String>, bool), String> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    Ok(match parse_json(rest)? {
        JsonArray::Strings(v) => (v, true),
        JsonArray::NotJson => (vec![rest.to_string()], false),
    })
}

pub(super) fn maybe_json_to_list(rest: &str) -> std::result::Result<(Vec<String>, bool), String> {
    Ok(match parse_json(rest)? {
        JsonArray::Strings(v) => (v, true),
        JsonArray::NotJson => (whitespace_delimited(rest), false),
    })
}

pub(super) fn parse_health(rest: &str) -> std::result::Result<(Vec<String>, bool), String> {
    let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if sep == 0 {
        return Ok((Vec::new(), false));
    }
    let typ = &rest[..sep];
    let cmd = rest[sep..].trim_start();
    let (mut args, json) = maybe_json(cmd)?;
    args.insert(0, typ.to_string());
    Ok((args, json))
}

/// ENV and LABEL: `KEY value` (legacy) or `k=v k2=v2`; gives `key value sep`
/// triples, sep `=` or empty for the legacy form.
pub(super) fn parse_name_val(
    rest: &str,
    key: &str,
    escape: char,
) -> std::result::Result<Vec<String>, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let mut parts = rest.splitn(2, is_ascii_ws);
        let name = parts.next().unwrap_or_default();
        let value = parts.next().map(|v| v.trim_start_matches(is_ascii_ws));
        return match value {
            Some(value) => Ok(vec![name.to_string(), value.to_string(), String::new()]),
            None => Err(format!("{key} must have two arguments")),
        };
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "syntax error - can't find = in {}. Must be of the form: name=value",
                go_quote(&word)
            ));
        };
        out.push(k.to_string());
        out.push(v.to_string());
        out.push("=".to_string());
    }
    Ok(out)
}

/// BuildKit's `parseWords`: splits on unquoted whitespace, keeping quotes and
/// escapes in the words (they are processed later, during expansion).
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut chars = rest.chars().peekable();
    loop {
        let Some(ch) = chars.next() else {
            if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        };
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                continue;
            }
            phase = Phase::Word;
        }
        match phase {
            Phase::Word => {
                if ch.is_whitespace() {
                    phase = Phase::Spaces;
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    blank_ok = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    quote = ch;
                    blank_ok = true;
                    phase = Phase::Quote;
                }
                if ch == escape {
                    let Some(next) = chars.next() else {
                        continue;
                    };
                    word.push(ch);
                    word.push(next);
                    continue;
                }
                word.push(ch);
            }
            Phase::Quote => {
                if ch == quote {
                    phase = Phase::Word;
                }
                if ch == escape && quote != '\'' {
                    let Some(next) = chars.next() else {
                        phase = Phase::Word;
                        continue;
                    };
                    word.push(ch);
                    word.push(next);
                    continue;
                }
                word.push(ch);
            }
            Phase::Spaces => unreachable!("handled above"),
        }
    }
    words
}

/// BuildKit's `extractBuilderFlags`: leading `--name[=value]` words, ending at
/// the first word not starting with `--`, or at a bare `--`. Returns the rest
/// of the line and the flags.
pub(super) fn extract_flags(line: &str) -> (&str, Vec<String>) {
    let mut flags = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut iter = line.char_indices().peekable();
    // Looking for the start of a word.
    'words: loop {
        let start = loop {
            match iter.peek() {
                None => return ("", flags),
                Some(&(_, c)) if c.is_whitespace() => {
                    iter.next();
                }
                Some(&(i, _)) => break i,
            }
        };
        if !line[start..].starts_with("--") {
            return (&line[start..], flags);
        }
        let mut quote: Option<char> = None;
        loop {
            let Some((pos, ch)) = iter.next() else {
                if word != "--" && (blank_ok || !word.is_empty()) {
                    flags.push(std::mem::take(&mut word));
                }
                return ("", flags);
            };
            if let Some(q) = quote {
                if ch == q {
                    quote = None;
                    continue;
                }
                if ch == '\\' {
                    match iter.next() {
                        Some((_, next)) => word.push(next),
                        None => quote = None,
                    }
                    continue;
                }
                word.push(ch);
                continue;
            }
            if ch.is_whitespace() {
                if word == "--" {
                    return (&line[pos..], flags);
                }
                if blank_ok || !word.is_empty() {
                    flags.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                continue 'words;
            }
            if ch == '\'' || ch == '"' {
                quote = Some(ch);
                blank_ok = true;
                continue;
            }
            if ch == '\\' {
                if let Some((_, next)) = iter.next() {
                    word.push(next);
                }
                continue;
            }
            word.push(ch);
        }
    }
}

/// Go's `strconv.Quote`, which BuildKit's dumps use.
#[must_use]
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint` without the Unicode category
/// tables: space, and anything that is not a control, separator, format or
/// private-use character.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    !matches!(u,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f
        | 0x2028..=0x202e | 0x2060..=0x206f | 0xd800..=0xdfff | 0xe000..=0xf8ff
        | 0xfeff | 0xfff9..=0xfffb | 0xfffe | 0xffff | 0xf0000..)
}
