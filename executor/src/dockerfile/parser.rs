//! The Dockerfile parser: text in, a list of raw instruction nodes out.
//!
//! This is the first of BuildKit's two parsing layers
//! (`frontend/dockerfile/parser`): parser directives, comments, line
//! continuations with the escape character, heredocs, JSON exec form with the
//! fallback to shell form, and instruction flags. It knows the *shape* of each
//! instruction's arguments (JSON array, words, key/value pairs) but not their
//! meaning: unknown instructions and unknown flags pass through here and are
//! rejected by [`super::instructions`]. Nothing here touches the filesystem.
//! This file reads lines into nodes; `words` reads the argument shapes and
//! `heredoc` the heredoc words.
//!
//! Hand-written because no crate reproduces BuildKit's exact line and word
//! rules; the conformance suite in `executor/tests/dockerfile_conformance.rs`
//! checks it byte for byte against BuildKit's own test data.

use std::fmt::Write as _;

use serde::Serialize;

use super::error::{Error, Position, Result};

mod heredoc;
mod words;

use heredoc::{can_contain_heredoc, heredocs_from_line};
pub use heredoc::{chomp_heredoc_content, parse_heredoc};
pub use words::go_quote;
use words::{
    extract_flags, is_ascii_ws, maybe_json, maybe_json_to_list, parse_health, parse_name_val,
    parse_words, string_arg, whitespace_delimited,
};

/// The default escape character.
pub const DEFAULT_ESCAPE: char = '\\';

/// A parser directive from the top of the file (`# syntax=...`,
/// `# escape=...`, `# check=...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    /// Lower-cased name.
    pub name: String,
    pub value: String,
    pub line: usize,
}

/// A heredoc attached to a RUN, COPY or ADD line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word, quotes removed.
    pub name: String,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 when absent.
    pub file_descriptor: u32,
    /// False when any part of the delimiter was quoted: the content is then
    /// taken literally.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the content and the delimiter.
    pub chomp: bool,
    /// The body, every line with its newline.
    pub content: String,
}

/// One instruction as written: keyword, flags and arguments, before any
/// meaning is given to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The keyword as written (`run`, `RUN`, `Run` ...).
    pub keyword: String,
    /// `--name=value` flags in order, as written (quotes removed).
    pub flags: Vec<String>,
    /// The arguments in BuildKit's layout: one per JSON element, one string
    /// for shell form, `key value sep` triples for ENV and LABEL, `TYPE args`
    /// for HEALTHCHECK.
    pub args: Vec<String>,
    /// ONBUILD's trigger instruction.
    pub nested: Option<Box<Node>>,
    /// The arguments were a JSON array (exec form).
    pub json: bool,
    pub heredocs: Vec<Heredoc>,
    /// The logical line after continuations were joined (without the keyword
    /// being removed).
    pub original: String,
    /// Where the keyword starts.
    pub start: Position,
    pub end_line: usize,
    /// Comment lines directly above the instruction.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub comments: Vec<String>,
}

impl Node {
    /// The keyword in lower case.
    #[must_use]
    pub fn name(&self) -> String {
        self.keyword.to_ascii_lowercase()
    }

    /// BuildKit's S-expression dump of this node (the format of its parser
    /// test `result` files).
    #[must_use]
    pub fn dump(&self) -> String {
        let mut out = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            out.push_str(" [");
            for (i, flag) in self.flags.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(&go_quote(flag));
            }
            out.push(']');
        }
        if let Some(nested) = &self.nested {
            let _ = write!(out, " ({})", nested.dump());
        }
        for arg in &self.args {
            out.push(' ');
            out.push_str(&go_quote(arg));
        }
        out
    }
}

/// The result of parsing a whole Dockerfile.
#[derive(Debug, Clone, Serialize)]
pub struct Parsed {
    /// The name the Dockerfile was read under, for messages
    /// (`file:line:column: ...`).
    pub file: String,
    pub directives: Vec<Directive>,
    pub escape: char,
    pub nodes: Vec<Node>,
    pub warnings: Vec<Warning>,
    /// The source split into lines (without line endings), to locate text for
    /// error columns.
    #[serde(skip)]
    pub lines: Vec<String>,
}

/// A non-fatal finding of the parser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub position: Position,
    pub message: String,
}

impl Parsed {
    /// BuildKit's dump of the whole file: one line per instruction.
    #[must_use]
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            out.push('(');
            out.push_str(&node.dump());
            out.push_str(")\n");
        }
        out
    }

    /// The value of a parser directive, if present.
    #[must_use]
    pub fn directive(&self, name: &str) -> Option<&Directive> {
        self.directives.iter().find(|d| d.name == name)
    }

    /// Finds where `needle` is written within the lines of `node`, for error
    /// columns; falls back to the start of the instruction.
    #[must_use]
    pub fn locate(&self, node: &Node, needle: &str) -> Position {
        self.locate_in(node.start, node.end_line, needle)
    }

    /// Like [`Self::locate_in`], but the last place `needle` is written.
    #[must_use]
    pub fn locate_last_in(&self, start: Position, end_line: usize, needle: &str) -> Position {
        let mut found = start;
        let mut from = start;
        while !needle.is_empty() {
            let at = self.locate_in(from, end_line, needle);
            // `locate_in` falls back to `from` when nothing is found.
            if !self.text_at(at).starts_with(needle) {
                break;
            }
            found = at;
            from = Position::new(at.line, at.column + 1);
        }
        found
    }

    fn text_at(&self, at: Position) -> &str {
        self.lines
            .get(at.line.saturating_sub(1))
            .and_then(|l| {
                l.char_indices()
                    .nth(at.column.saturating_sub(1))
                    .map(|(b, _)| &l[b..])
            })
            .unwrap_or("")
    }

    /// Finds `needle` in the lines from `start` to `end_line`; falls back to
    /// `start`.
    #[must_use]
    pub fn locate_in(&self, start: Position, end_line: usize, needle: &str) -> Position {
        if !needle.is_empty() {
            let first = start.line.saturating_sub(1);
            let last = end_line.max(start.line).min(self.lines.len());
            for (idx, line) in self.lines.iter().enumerate().take(last).skip(first) {
                let from = if idx == first {
                    line.char_indices()
                        .nth(start.column.saturating_sub(1))
                        .map_or(line.len(), |(b, _)| b)
                } else {
                    0
                };
                if let Some(byte) = line[from..].find(needle) {
                    let column = line[..from + byte].chars().count() + 1;
                    return Position::new(idx + 1, column);
                }
            }
        }
        start
    }
}

/// Parses Dockerfile text. Stops at the first syntax error, as BuildKit does;
/// the typed layer then reports every instruction-level error.
pub fn parse(text: &str) -> Result<Parsed> {
    parse_named("Dockerfile", text)
}

/// Like [`parse`], for a Dockerfile read under the name `file`.
pub fn parse_named(file: &str, text: &str) -> Result<Parsed> {
    let mut parsed = Parser::new(text).run()?;
    parsed.file = file.to_string();
    Ok(parsed)
}

/// Escape state: the character and the continuation rule it implies.
struct Directives {
    escape: char,
    parsed: Vec<Directive>,
    seen_done: bool,
    line: usize,
}

impl Directives {
    fn new() -> Self {
        Self {
            escape: DEFAULT_ESCAPE,
            parsed: Vec::new(),
            seen_done: false,
            line: 0,
        }
    }

    /// Looks at one line (newline removed) while directives may still appear.
    /// Returns true when the line was a directive.
    fn possible_directive(&mut self, line: &str) -> Result<bool> {
        self.line += 1;
        if self.seen_done {
            return Ok(false);
        }
        let Some((name, value)) = match_directive(line) else {
            self.seen_done = true;
            return Ok(false);
        };
        let name = name.to_ascii_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.seen_done = true;
            return Ok(false);
        }
        if self.parsed.iter().any(|d| d.name == name) {
            return Err(Error::new(
                Position::new(self.line, 1),
                format!("only one {name} parser directive can be used"),
            ));
        }
        if name == "escape" {
            self.escape = match value {
                "\\" => '\\',
                "`" => '`',
                _ => {
                    let column = line
                        .rfind(value)
                        .map_or(1, |b| line[..b].chars().count() + 1);
                    return Err(Error::new(
                        Position::new(self.line, column),
                        format!("invalid escape token '{value}' does not match ` or \\"),
                    )
                    .with_hint("write `# escape=\\` or `# escape=``"));
                }
            };
        }
        self.parsed.push(Directive {
            name,
            value: value.to_string(),
            line: self.line,
        });
        Ok(true)
    }

    /// BuildKit's continuation rule: the line ends (ignoring spaces and tabs)
    /// with the escape character, not itself escaped; or the line is only the
    /// escape character. Returns the line without it and whether the logical
    /// line goes on.
    fn trim_continuation<'a>(&self, line: &'a str) -> (&'a str, bool) {
        let trimmed = line.trim_end_matches([' ', '\t']);
        if let Some(before) = trimmed.strip_suffix(self.escape) {
            if before.is_empty() || !before.ends_with(self.escape) {
                return (before, true);
            }
        }
        (line, false)
    }
}

/// `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`, by hand.
fn match_directive(line: &str) -> Option<(&str, &str)> {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r');
    let rest = line.strip_prefix('#')?.trim_start_matches(is_space);
    let first = rest.chars().next()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let key_end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    let (key, rest) = rest.split_at(key_end);
    let rest = rest.trim_start_matches(is_space).strip_prefix('=')?;
    if rest.is_empty() {
        return None;
    }
    let value = rest.trim_start_matches(is_space).trim_end_matches(is_space);
    if value.is_empty() {
        // `.+?` must take one character: the regex gives back the last space.
        let last = rest.chars().next_back()?;
        return Some((key, &rest[rest.len() - last.len_utf8()..]));
    }
    Some((key, value))
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Splits text into lines that keep their `\n`, like BuildKit's scanner.
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n')
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

struct Parser<'a> {
    lines: std::iter::Peekable<std::iter::Enumerate<std::str::SplitInclusive<'a, char>>>,
    directives: Directives,
    all_lines: Vec<String>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Self {
            lines: text.split_inclusive('\n').enumerate().peekable(),
            directives: Directives::new(),
            all_lines: split_lines(text)
                .map(|l| trim_newline(l).to_string())
                .collect(),
        }
    }

    /// Processes one physical line: newline removed, optionally leading space
    /// removed, looked at as a directive, and emptied when it is a comment.
    fn process_line(&mut self, raw: &'a str, strip_left: bool) -> Result<(&'a str, bool)> {
        let mut token = trim_newline(raw);
        if strip_left {
            token = token.trim_start();
        }
        let directive = self.directives.possible_directive(token)?;
        if is_comment(token) {
            token = "";
        }
        Ok((token, directive))
    }

    fn run(mut self) -> Result<Parsed> {
        let mut nodes = Vec::new();
        let mut warnings = Vec::new();
        let mut comments: Vec<String> = Vec::new();
        let mut current_line = 0usize;

        while let Some((_, raw)) = self.lines.next() {
            if is_comment(raw) {
                let comment = raw.trim_start()[1..].trim();
                if comment.is_empty() {
                    comments.clear();
                } else {
                    comments.push(comment.to_string());
                }
            }
            let (line, was_directive) = self.process_line(raw, true)?;
            if was_directive {
                comments.pop();
            }
            current_line += 1;
            let start_line = current_line;
            let start_column = {
                let full = trim_newline(raw);
                full[..full.len() - full.trim_start().len()].chars().count() + 1
            };
            let (first, mut continues) = self.directives.trim_continuation(line);
            if !continues && first.is_empty() {
                continue;
            }
            let mut buf = String::from(first);
            let mut empty_continuation = false;
            while continues {
                let Some((_, raw)) = self.lines.next() else {
                    break;
                };
                let (line, _) = self.process_line(raw, false)?;
                current_line += 1;
                if is_comment(raw) {
                    continue;
                }
                if line.trim_start().is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (part, more) = self.directives.trim_continuation(line);
                buf.push_str(part);
                continues = more;
            }

            if empty_continuation {
                warnings.push(Warning {
                    position: Position::new(current_line, 1),
                    message: format!("empty continuation line found in: {buf}"),
                });
            }

            let start = Position::new(start_line, start_column);
            let mut node =
                node_from_line(&buf, self.directives.escape, std::mem::take(&mut comments))
                    .map_err(|message| Error::new(start, message))?;
            node.start = start;

            if can_contain_heredoc(&node) && buf.contains("<<") {
                let heredocs =
                    heredocs_from_line(&buf).map_err(|message| Error::new(start, message))?;
                for mut heredoc in heredocs {
                    let mut terminated = false;
                    for (_, raw) in self.lines.by_ref() {
                        current_line += 1;
                        let mut candidate = trim_newline(raw);
                        if heredoc.chomp {
                            candidate = candidate.trim_start_matches('\t');
                        }
                        if candidate == heredoc.name {
                            terminated = true;
                            break;
                        }
                        heredoc.content.push_str(raw);
                    }
                    if !terminated {
                        return Err(Error::new(
                            start,
                            format!("unterminated heredoc: no line `{}` closes it", heredoc.name),
                        )
                        .with_hint(format!(
                            "end the heredoc with a line holding only `{}`",
                            heredoc.name
                        )));
                    }
                    node.heredocs.push(heredoc);
                }
            }
            node.end_line = current_line;
            nodes.push(node);
        }

        if nodes.is_empty() {
            return Err(Error::new(
                Position::new(current_line.max(1), 1),
                "file with no instructions",
            )
            .with_hint("a Dockerfile needs at least a FROM instruction"));
        }

        Ok(Parsed {
            file: String::new(),
            directives: self.directives.parsed,
            escape: self.directives.escape,
            nodes,
            warnings,
            lines: self.all_lines,
        })
    }
}

/// Splits `KEYWORD [--flags] args` and shapes the arguments as BuildKit's
/// dispatch table does for that keyword.
fn node_from_line(
    line: &str,
    escape: char,
    comments: Vec<String>,
) -> std::result::Result<Node, String> {
    node_from_line_at_depth(line, escape, comments, 0)
}

/// How deep `ONBUILD ONBUILD ...` nests before the parser refuses: the typed
/// layer rejects any nesting, the parser only has to stay bounded.
const MAX_ONBUILD_DEPTH: usize = 8;

fn node_from_line_at_depth(
    line: &str,
    escape: char,
    comments: Vec<String>,
    depth: usize,
) -> std::result::Result<Node, String> {
    let trimmed = line.trim();
    let (keyword, rest) = match trimmed.find(is_ascii_ws) {
        Some(i) => (&trimmed[..i], trimmed[i..].trim_start_matches(is_ascii_ws)),
        None => (trimmed, ""),
    };
    let (flags, args) = if rest.is_empty() {
        (Vec::new(), "")
    } else {
        let (args, flags) = extract_flags(rest);
        (flags, args.trim())
    };

    let mut node = Node {
        keyword: keyword.to_string(),
        flags,
        args: Vec::new(),
        nested: None,
        json: false,
        heredocs: Vec::new(),
        original: line.to_string(),
        start: Position::new(0, 0),
        end_line: 0,
        comments,
    };
    let (args, json) = match keyword.to_ascii_lowercase().as_str() {
        "add" | "copy" | "volume" => maybe_json_to_list(args)?,
        "arg" => (parse_words(args, escape), false),
        "cmd" | "entrypoint" | "run" | "shell" => maybe_json(args)?,
        "env" => (parse_name_val(args, "ENV", escape)?, false),
        "label" => (parse_name_val(args, "LABEL", escape)?, false),
        "expose" | "from" => (whitespace_delimited(args), false),
        "healthcheck" => parse_health(args)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => (string_arg(args), false),
        "onbuild" => {
            if depth >= MAX_ONBUILD_DEPTH {
                return Err(
                    "ONBUILD triggers nested too deeply: ONBUILD ONBUILD isn't allowed".to_string(),
                );
            }
            if !args.is_empty() {
                node.nested = Some(Box::new(node_from_line_at_depth(
                    args,
                    escape,
                    Vec::new(),
                    depth + 1,
                )?));
            }
            (Vec::new(), false)
        }
        // Unknown instructions keep no arguments; the typed layer rejects them.
        _ => (Vec::new(), false),
    };
    node.args = args;
    node.json = json;
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(text: &str) -> String {
        parse(text).unwrap().dump()
    }

    #[test]
    fn flags_and_double_dash() {
        assert_eq!(
            dump("COPY --chown=a:b --link -- --x y\n"),
            "(copy [\"--chown=a:b\" \"--link\"] \"--x\" \"y\")\n"
        );
        assert_eq!(
            dump("RUN --mount=type=cache,target=\"/a b\" make\n"),
            "(run [\"--mount=type=cache,target=/a b\"] \"make\")\n"
        );
    }

    #[test]
    fn json_falls_back_to_shell_form() {
        assert_eq!(dump("CMD [\"a\", 'b']\n"), "(cmd \"[\\\"a\\\", 'b']\")\n");
        assert_eq!(dump("CMD [\"a\", \"b\"]\n"), "(cmd \"a\" \"b\")\n");
        let err = parse("CMD [\"a\", [\"b\"]]\n").unwrap_err();
        assert_eq!(err.position, Position::new(1, 1));
    }

    #[test]
    fn continuation_and_comments() {
        let parsed = parse("FROM a\nRUN echo \\\n  # comment\n\n  b\n").unwrap();
        assert_eq!(parsed.nodes[1].args, ["echo   b"]);
        assert_eq!(parsed.nodes[1].start, Position::new(2, 1));
        assert_eq!(parsed.nodes[1].end_line, 5);
        assert_eq!(parsed.warnings.len(), 1);
    }

    #[test]
    fn backtick_escape_directive() {
        let parsed = parse("# escape=`\nFROM a\nRUN dir `\n  c:\\\n").unwrap();
        assert_eq!(parsed.escape, '`');
        assert_eq!(parsed.nodes[1].args, ["dir   c:\\"]);
        let err = parse("# escape=x\nFROM a\n").unwrap_err();
        assert!(err.message.contains("invalid escape token 'x'"), "{err}");
        let err = parse("# escape=`\n# escape=\\\nFROM a\n").unwrap_err();
        assert_eq!(err.position.line, 2);
    }

    #[test]
    fn directives_stop_at_first_other_line() {
        let parsed =
            parse("# syntax=docker/dockerfile:1\n# check=skip=all\n\n# escape=`\nFROM a\n")
                .unwrap();
        assert_eq!(parsed.directives.len(), 2);
        assert_eq!(parsed.escape, '\\');
        assert_eq!(parsed.directive("check").unwrap().value, "skip=all");
    }

    #[test]
    fn heredocs() {
        let text = "FROM a\nRUN <<EOF cat 3<<-'END'\necho $x\nEOF\n\tliteral $y\n\tEND\nRUN b\n";
        let parsed = parse(text).unwrap();
        let run = &parsed.nodes[1];
        assert_eq!(run.heredocs.len(), 2);
        assert_eq!(run.heredocs[0].name, "EOF");
        assert!(run.heredocs[0].expand);
        assert_eq!(run.heredocs[0].content, "echo $x\n");
        assert_eq!(run.heredocs[1].name, "END");
        assert!(!run.heredocs[1].expand);
        assert!(run.heredocs[1].chomp);
        assert_eq!(run.heredocs[1].file_descriptor, 3);
        assert_eq!(
            chomp_heredoc_content(&run.heredocs[1].content),
            "literal $y\n"
        );
        assert_eq!(run.end_line, 6);
        assert_eq!(parsed.nodes[2].start.line, 7);
        let err = parse("FROM a\nRUN <<EOF\nnever closed\n").unwrap_err();
        assert!(err.message.starts_with("unterminated heredoc"), "{err}");
        // JSON form never has heredocs.
        let parsed = parse("FROM a\nRUN [\"<<EOF\"]\nEOF\n").unwrap();
        assert_eq!(parsed.nodes.len(), 3);
    }

    #[test]
    fn deep_onbuild_nesting_is_an_error_not_a_stack_overflow() {
        let text = format!("FROM a\n{}RUN x\n", "ONBUILD ".repeat(200_000));
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("nested too deeply"), "{err}");
        assert_eq!(err.position, Position::new(2, 1));
    }

    #[test]
    fn onbuild_nests() {
        assert_eq!(
            dump("ONBUILD RUN [\"echo\", \"test\"]\n"),
            "(onbuild (run \"echo\" \"test\"))\n"
        );
    }

    #[test]
    fn env_forms() {
        assert_eq!(dump("ENV a b c\n"), "(env \"a\" \"b c\" \"\")\n");
        assert_eq!(
            dump("ENV a=1 b=\"2 3\"\n"),
            "(env \"a\" \"1\" \"=\" \"b\" \"\\\"2 3\\\"\" \"=\")\n"
        );
        assert!(
            parse("ENV a\n")
                .unwrap_err()
                .message
                .contains("two arguments")
        );
        assert!(
            parse("ENV a=1 b\n")
                .unwrap_err()
                .message
                .contains("can't find =")
        );
    }

    #[test]
    fn empty_file_is_an_error() {
        assert_eq!(
            parse("# only\n\n").unwrap_err().message,
            "file with no instructions"
        );
        assert!(parse("").is_err());
    }

    #[test]
    fn locate_finds_columns() {
        let parsed = parse("FROM a\n  COPY --bogus=1 \\\n    x y\n").unwrap();
        let node = &parsed.nodes[1];
        assert_eq!(node.start, Position::new(2, 3));
        assert_eq!(parsed.locate(node, "--bogus"), Position::new(2, 8));
        assert_eq!(parsed.locate(node, "y"), Position::new(3, 7));
    }

    #[test]
    fn go_quote_matches_strconv() {
        assert_eq!(
            go_quote("a\"b\\c\td\u{1}é한"),
            "\"a\\\"b\\\\c\\td\\x01é한\""
        );
        assert_eq!(go_quote("\u{200b}"), "\"\\u200b\"");
    }
}
