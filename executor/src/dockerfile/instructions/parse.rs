//! From raw nodes to typed instructions: BuildKit's `parse.go`, one function
//! per keyword, in BuildKit's order of checks so the first error reported is
//! the one BuildKit reports. The instructions that run or name a command
//! (RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD) are in `commands`.

use std::collections::HashSet;

use super::super::error::{Error, Position};
use super::super::parser::{Node, Parsed, chomp_heredoc_content, go_quote, parse_heredoc};
use super::flags::{FlagError, FlagKind, Flags};
use super::{
    Add, Arg, ArgDef, Copy, CopyArgs, From, HeredocFile, Instruction, KEYWORDS, KeyValue,
    KeyValues, Kind, Location,
};
use crate::dockerfile::suggest::nearest as suggest;

mod commands;

use commands::{parse_command, parse_healthcheck, parse_onbuild, parse_run, parse_shell};

type Result<T> = std::result::Result<T, Error>;

/// Types every node. Returns the instructions that parsed and one error for
/// each node that did not: a linter reports every problem, not the first.
#[must_use]
pub fn parse(parsed: &Parsed) -> (Vec<Instruction>, Vec<Error>) {
    let mut instructions = Vec::with_capacity(parsed.nodes.len());
    let mut errors = Vec::new();
    for node in &parsed.nodes {
        match parse_node(node, parsed) {
            Ok(instruction) => instructions.push(instruction),
            Err(error) => errors.push(error),
        }
    }
    (instructions, errors)
}

/// Types one node (BuildKit `ParseInstruction`).
pub fn parse_node(node: &Node, parsed: &Parsed) -> Result<Instruction> {
    let mut cx = Cx {
        node,
        parsed,
        args_start: node.start,
        next_arg: None,
        seen: HashSet::new(),
        locations: Vec::new(),
    };
    cx.next_arg = cx.find_args_start();
    if let Some(cursor) = cx.next_arg {
        cx.args_start = cursor.position();
    }
    let keyword = node.keyword.to_lowercase();
    let kind = match keyword.as_str() {
        "add" => parse_copy(&mut cx, true)?,
        "arg" => parse_arg(&cx)?,
        "cmd" => Kind::Cmd(parse_command(&cx, "CMD")?),
        "copy" => parse_copy(&mut cx, false)?,
        "entrypoint" => Kind::Entrypoint(parse_command(&cx, "ENTRYPOINT")?),
        "env" => Kind::Env(parse_key_values(&mut cx, "ENV")?),
        "expose" => parse_expose(&mut cx)?,
        "from" => parse_from(&mut cx)?,
        "healthcheck" => parse_healthcheck(&cx)?,
        "label" => Kind::Label(parse_key_values(&mut cx, "LABEL")?),
        "maintainer" => Kind::Maintainer(parse_single(&mut cx, "MAINTAINER", true)?),
        "onbuild" => parse_onbuild(&cx)?,
        "run" => parse_run(&mut cx)?,
        "shell" => parse_shell(&cx)?,
        "stopsignal" => Kind::StopSignal(parse_single(&mut cx, "STOPSIGNAL", false)?),
        "user" => Kind::User(parse_single(&mut cx, "USER", true)?),
        "volume" => parse_volume(&mut cx)?,
        "workdir" => Kind::Workdir(parse_single(&mut cx, "WORKDIR", true)?),
        _ => {
            let mut error =
                Error::new(node.start, format!("unknown instruction: {}", node.keyword));
            if let Some(close) = suggest(&node.keyword, KEYWORDS, false) {
                error = error.with_hint(format!("did you mean {close}?"));
            }
            return Err(error);
        }
    };
    Ok(Instruction {
        kind,
        start: node.start,
        end_line: node.end_line,
        original: node.original.trim().to_string(),
        locations: cx.locations,
    })
}

/// What the per-keyword parsers share: the node, the source for error
/// columns, and the locations of expandable text found so far.
struct Cx<'a> {
    node: &'a Node,
    parsed: &'a Parsed,
    /// Where the arguments start, after the flags.
    args_start: Position,
    /// Where to look for the next argument: arguments are remembered in the
    /// order they are written, so each search goes on from the last.
    next_arg: Option<Cursor>,
    /// The texts already in `locations`.
    seen: HashSet<String>,
    locations: Vec<Location>,
}

/// A place in the source: 0-based line index, byte offset in the line, and
/// the 1-based column of that byte. Moving it forward costs only the distance
/// moved, so a long line is not rescanned for every argument.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    line: usize,
    byte: usize,
    column: usize,
}

impl Cursor {
    fn position(self) -> Position {
        Position::new(self.line + 1, self.column)
    }
}

impl Cx<'_> {
    /// Where `needle` is first written within the instruction, searching from
    /// `from`.
    fn find_from(&self, from: Position, needle: &str) -> Option<Position> {
        let start = self.cursor_at(from)?;
        self.seek(start, needle).map(Cursor::position)
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::new(self.node.start, message)
    }

    /// A cursor at `position`, if that line exists.
    fn cursor_at(&self, position: Position) -> Option<Cursor> {
        let index = position.line.checked_sub(1)?;
        let line = self.parsed.lines.get(index)?;
        let column = position.column.max(1);
        let byte = line
            .char_indices()
            .nth(column - 1)
            .map_or(line.len(), |(b, _)| b);
        Some(Cursor {
            line: index,
            byte,
            column: line[..byte].chars().count() + 1,
        })
    }

    /// The first `needle` at or after `from`, within the instruction's lines.
    fn seek(&self, from: Cursor, needle: &str) -> Option<Cursor> {
        if needle.is_empty() {
            return None;
        }
        let last = self
            .node
            .end_line
            .max(from.line + 1)
            .min(self.parsed.lines.len());
        for index in from.line..last {
            let line = &self.parsed.lines[index];
            let (byte, column) = if index == from.line {
                (from.byte, from.column)
            } else {
                (0, 1)
            };
            let Some(tail) = line.get(byte..) else {
                continue;
            };
            if let Some(found) = tail.find(needle) {
                return Some(Cursor {
                    line: index,
                    byte: byte + found,
                    column: column + tail[..found].chars().count(),
                });
            }
        }
        None
    }

    /// `cursor` moved `count` characters forward along its line (to the end
    /// of the line at most).
    fn skip(&self, cursor: Cursor, count: usize) -> Cursor {
        let line = self
            .parsed
            .lines
            .get(cursor.line)
            .map_or("", String::as_str);
        let tail = line.get(cursor.byte..).unwrap_or_default();
        let bytes: usize = tail.chars().take(count).map(char::len_utf8).sum();
        let moved = tail[..bytes].chars().count();
        Cursor {
            byte: cursor.byte + bytes,
            column: cursor.column + moved,
            ..cursor
        }
    }

    /// Where the arguments start: after the last flag, as far as that can be
    /// told (flags are stored without their quotes).
    fn find_args_start(&self) -> Option<Cursor> {
        let mut at = self.cursor_at(self.node.start)?;
        for flag in &self.node.flags {
            let name = flag.split_once('=').map_or(flag.as_str(), |(n, _)| n);
            if let Some(found) = self.seek(at, name) {
                at = self.skip(found, flag.chars().count());
            }
        }
        Some(at)
    }

    /// Where an argument is written, else the instruction's start.
    fn arg_position(&self, arg: &str) -> Position {
        self.find_from(self.args_start, arg)
            .or_else(|| self.find_from(self.node.start, arg))
            .unwrap_or(self.node.start)
    }

    fn error_at(&self, arg: &str, message: impl Into<String>) -> Error {
        Error::new(self.arg_position(arg), message)
    }

    fn flag_position(&self, flag: &str) -> Position {
        self.find_from(self.node.start, &format!("--{flag}"))
            .unwrap_or(self.node.start)
    }

    /// Parses the node's flags, pointing errors at the flag.
    fn flags(&self, keyword: &str, accepted: &[(&'static str, FlagKind)]) -> Result<Flags> {
        Flags::parse(keyword, &self.node.flags, accepted).map_err(|e: FlagError| {
            let error = Error::new(self.flag_position(&e.flag), e.message);
            match e.hint {
                Some(hint) => error.with_hint(hint),
                None => error,
            }
        })
    }

    /// Records where an expandable argument is written. Arguments are
    /// remembered in the order they are written.
    fn remember(&mut self, text: &str) {
        if text.is_empty() || self.seen.contains(text) {
            return;
        }
        let found = self.next_arg.and_then(|from| self.seek(from, text));
        let position = match found {
            Some(cursor) => {
                self.next_arg = Some(self.skip(cursor, text.chars().count()));
                cursor.position()
            }
            None => self.arg_position(text),
        };
        self.push_location(text, position);
    }

    fn push_location(&mut self, text: &str, position: Position) {
        if !text.is_empty() && self.seen.insert(text.to_string()) {
            self.locations.push(Location {
                text: text.to_string(),
                position,
            });
        }
    }

    /// Records where an expandable flag value is written: the value itself
    /// when it is found after the flag, else the flag.
    fn remember_flag(&mut self, flag: &str, value: &str) {
        if value.is_empty() || self.seen.contains(value) {
            return;
        }
        let flag_at = self.flag_position(flag);
        let position = self
            .find_from(flag_at, value)
            .filter(|p| p.line == flag_at.line)
            .unwrap_or(flag_at);
        self.push_location(value, position);
    }
}

fn at_least_one(keyword: &str) -> String {
    format!("{keyword} requires at least one argument")
}

fn exactly_one(keyword: &str) -> String {
    format!("{keyword} requires exactly one argument")
}

/// MAINTAINER, WORKDIR, USER, STOPSIGNAL: exactly one argument. STOPSIGNAL's
/// flags are never looked at by BuildKit; the others accept none.
fn parse_single(cx: &mut Cx<'_>, keyword: &str, check_flags: bool) -> Result<String> {
    let [value] = cx.node.args.as_slice() else {
        return Err(cx
            .error(exactly_one(keyword))
            .with_hint(format!("write `{keyword} <value>`")));
    };
    if check_flags {
        cx.flags(keyword, &[])?;
    }
    if keyword != "MAINTAINER" {
        cx.remember(value);
    }
    Ok(value.clone())
}

fn parse_key_values(cx: &mut Cx<'_>, keyword: &str) -> Result<KeyValues> {
    cx.flags(keyword, &[])?;
    let args = &cx.node.args;
    if args.is_empty() {
        return Err(cx
            .error(at_least_one(keyword))
            .with_hint(format!("write `{keyword} key=value`")));
    }
    if args.len() % 3 != 0 {
        return Err(cx.error(format!("bad input to {keyword}, too many arguments")));
    }
    let mut pairs = Vec::with_capacity(args.len() / 3);
    for triple in args.chunks_exact(3) {
        let (key, value) = (&triple[0], &triple[1]);
        if key.is_empty() {
            return Err(cx
                .error_at(
                    &format!("={value}"),
                    format!("{keyword} names can not be blank"),
                )
                .with_hint(format!("write `{keyword} key=value`")));
        }
        pairs.push(KeyValue {
            key: key.clone(),
            value: value.clone(),
        });
    }
    for pair in &pairs {
        cx.remember(&pair.key);
        cx.remember(&pair.value);
    }
    Ok(KeyValues(pairs))
}

/// ARG: BuildKit never parses ARG's flags.
fn parse_arg(cx: &Cx<'_>) -> Result<Kind> {
    let args = &cx.node.args;
    if args.is_empty() {
        return Err(cx
            .error(at_least_one("ARG"))
            .with_hint("write `ARG name` or `ARG name=default`"));
    }
    let mut defs = Vec::with_capacity(args.len());
    for arg in args {
        let def = match arg.split_once('=') {
            Some(("", _)) => {
                return Err(cx
                    .error_at(arg, "ARG names can not be blank")
                    .with_hint("write `ARG name=default`"));
            }
            Some((key, value)) => ArgDef {
                key: key.to_string(),
                value: Some(value.to_string()),
            },
            None => ArgDef {
                key: arg.clone(),
                value: None,
            },
        };
        defs.push(def);
    }
    Ok(Kind::Arg(Arg { args: defs }))
}

fn parse_from(cx: &mut Cx<'_>) -> Result<Kind> {
    let args = &cx.node.args;
    let stage_name = match args.as_slice() {
        [_, word, name] if is_as(word) => {
            let lower = name.to_lowercase();
            if !valid_stage_name(&lower) {
                return Err(cx
                    .error_at(
                        name,
                        format!(
                            "invalid name for build stage: {}, name can't start with a number or contain symbols",
                            go_quote(name)
                        ),
                    )
                    .with_hint(
                        "a stage name starts with a letter and holds letters, digits, `-`, `_` and `.`",
                    ));
            }
            Some(lower)
        }
        [_] => None,
        _ => {
            return Err(cx
                .error("FROM requires either one or three arguments")
                .with_hint("write `FROM image` or `FROM image AS name`"));
        }
    };
    let flags = cx.flags("FROM", &[("platform", FlagKind::String)])?;
    let image = args[0].clone();
    let platform = flags.non_empty("platform");
    cx.remember(&image);
    if let Some(platform) = &platform {
        cx.remember_flag("platform", platform);
    }
    Ok(Kind::From(From {
        image,
        stage_name,
        platform,
    }))
}

/// Go's `strings.EqualFold(word, "as")`, `ſ` (U+017F) folding to `s`.
fn is_as(word: &str) -> bool {
    let mut chars = word.chars();
    matches!(
        (chars.next(), chars.next(), chars.next()),
        (Some('a' | 'A'), Some('s' | 'S' | '\u{17f}'), None)
    )
}

/// `^[a-z][a-z0-9-_.]*$`.
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn parse_copy(cx: &mut Cx<'_>, is_add: bool) -> Result<Kind> {
    let keyword = if is_add { "ADD" } else { "COPY" };
    let args = &cx.node.args;
    if args.len() < 2 {
        return Err(cx
            .error(format!(
                "{keyword} requires at least two arguments, but only one was provided. Destination could not be determined"
            ))
            .with_hint(format!("write `{keyword} <source>... <destination>`")));
    }
    let accepted: &[(&'static str, FlagKind)] = if is_add {
        &[
            ("chmod", FlagKind::String),
            ("checksum", FlagKind::String),
            ("chown", FlagKind::String),
            ("exclude", FlagKind::Strings),
            ("keep-git-dir", FlagKind::Bool),
            ("link", FlagKind::Bool),
            ("unpack", FlagKind::Bool),
        ]
    } else {
        &[
            ("chmod", FlagKind::String),
            ("chown", FlagKind::String),
            ("exclude", FlagKind::Strings),
            ("from", FlagKind::String),
            ("link", FlagKind::Bool),
            ("parents", FlagKind::Bool),
        ]
    };
    let flags = cx.flags(keyword, accepted)?;

    let (sources, dest) = args.split_at(args.len() - 1);
    let dest = dest[0].clone();
    if matches!(parse_heredoc(&dest), Ok(Some(_))) {
        return Err(cx
            .error_at(
                &dest,
                format!("{keyword} cannot accept a heredoc as a destination"),
            )
            .with_hint("a heredoc can only be a source"));
    }
    let mut paths = Vec::new();
    let mut heredocs = Vec::new();
    for source in sources {
        match parse_heredoc(source) {
            Ok(Some(doc)) => {
                let body = cx
                    .node
                    .heredocs
                    .iter()
                    .rev()
                    .find(|h| h.name == doc.name)
                    .map(|h| h.content.as_str())
                    .unwrap_or_default();
                heredocs.push(HeredocFile {
                    content: if doc.chomp {
                        chomp_heredoc_content(body)
                    } else {
                        body.to_string()
                    },
                    name: doc.name,
                    expand: doc.expand,
                });
            }
            _ => paths.push(source.clone()),
        }
    }

    let copy_args = CopyArgs {
        sources: paths,
        dest,
        heredocs,
        from: flags.non_empty("from"),
        chown: flags.non_empty("chown"),
        chmod: flags.non_empty("chmod"),
        link: flags.bool("link"),
        parents: flags.bool("parents"),
        exclude: flags.strings("exclude"),
    };
    for (flag, value) in [("chown", &copy_args.chown), ("chmod", &copy_args.chmod)] {
        if let Some(value) = value {
            cx.remember_flag(flag, value);
        }
    }
    for source in &copy_args.sources {
        cx.remember(source);
    }
    cx.remember(&copy_args.dest);
    if !is_add {
        return Ok(Kind::Copy(Copy { args: copy_args }));
    }
    let checksum = flags.non_empty("checksum");
    if let Some(checksum) = &checksum {
        cx.remember_flag("checksum", checksum);
    }
    Ok(Kind::Add(Add {
        args: copy_args,
        checksum,
        keep_git_dir: flags.opt_bool("keep-git-dir"),
        unpack: flags.opt_bool("unpack"),
    }))
}

fn parse_expose(cx: &mut Cx<'_>) -> Result<Kind> {
    if cx.node.args.is_empty() {
        return Err(cx
            .error(at_least_one("EXPOSE"))
            .with_hint("write `EXPOSE <port>[/<protocol>]`"));
    }
    cx.flags("EXPOSE", &[])?;
    for port in &cx.node.args {
        cx.remember(port);
    }
    let mut ports = cx.node.args.clone();
    ports.sort();
    Ok(Kind::Expose(ports))
}

fn parse_volume(cx: &mut Cx<'_>) -> Result<Kind> {
    if cx.node.args.is_empty() {
        return Err(cx
            .error(at_least_one("VOLUME"))
            .with_hint("write `VOLUME /path` or `VOLUME [\"/path\"]`"));
    }
    cx.flags("VOLUME", &[])?;
    let mut volumes = Vec::with_capacity(cx.node.args.len());
    for volume in &cx.node.args {
        let trimmed = volume.trim();
        if trimmed.is_empty() {
            return Err(cx.error("VOLUME specified can not be an empty string"));
        }
        volumes.push(trimmed.to_string());
    }
    for volume in &volumes {
        cx.remember(volume);
    }
    Ok(Kind::Volume(volumes))
}

#[cfg(test)]
mod tests;
