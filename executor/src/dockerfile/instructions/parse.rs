//! From raw nodes to typed instructions: BuildKit's `parse.go`, one function
//! per keyword, in BuildKit's order of checks so the first error reported is
//! the one BuildKit reports.

use std::collections::HashSet;
use std::time::Duration;

use super::super::error::{Error, Position};
use super::super::parser::{Node, Parsed, chomp_heredoc_content, go_quote, parse_heredoc};
use super::flags::{FlagError, FlagKind, Flags};
use super::mount::{self, Mode, MountError};
use super::{
    Add, Arg, ArgDef, Command, Copy, CopyArgs, From, Healthcheck, HeredocFile, Instruction,
    KEYWORDS, KeyValue, KeyValues, Kind, Location, Onbuild, Run,
};
use crate::dockerfile::suggest::nearest as suggest;

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

/// The command of RUN, CMD, ENTRYPOINT (BuildKit `handleJSONArgs`).
fn command(node: &Node) -> Command {
    if node.json {
        Command::Exec(node.args.clone())
    } else {
        Command::Shell(node.args.join(" "))
    }
}

fn parse_command(cx: &Cx<'_>, keyword: &str) -> Result<Command> {
    cx.flags(keyword, &[])?;
    // BuildKit accepts this here and fails when dispatching the stage
    // ("parsing produced an invalid run command: []").
    if !cx.node.json && cx.node.args.is_empty() {
        return Err(cx.error(at_least_one(keyword)).with_hint(format!(
            "write `{keyword} [\"executable\", \"arg\"]`, or `{keyword} []` for none"
        )));
    }
    Ok(command(cx.node))
}

fn parse_run(cx: &mut Cx<'_>) -> Result<Kind> {
    let flags = cx.flags(
        "RUN",
        &[
            ("mount", FlagKind::Strings),
            ("network", FlagKind::String),
            ("security", FlagKind::String),
        ],
    )?;
    let mount_specs = flags.strings("mount");
    let mut mounts = Vec::with_capacity(mount_specs.len());
    let mut cursor = cx.cursor_at(cx.node.start);
    for spec in &mount_specs {
        // The n-th `--mount` is the n-th spec.
        let mut flag_at = cx.node.start;
        if let Some(found) = cursor.and_then(|c| cx.seek(c, "--mount")) {
            flag_at = found.position();
            cursor = Some(cx.skip(found, 1));
        }
        let mount = mount::parse_mount(spec, &Mode::Parse)
            .map_err(|e| mount_error(cx, flag_at, spec, e))?;
        mounts.push(mount);
        cx.push_location(spec, flag_at);
        for field in spec.split(',') {
            if let Some((_, value)) = field.split_once('=') {
                if value.contains('$') && !cx.seen.contains(value) {
                    let position = cx.find_from(flag_at, value).unwrap_or(flag_at);
                    cx.push_location(value, position);
                }
            }
        }
    }
    mount::number_ssh_sockets(&mut mounts);
    let network = match flags.string("network") {
        Some(value) => Some(mount::parse_network(value).map_err(|(message, hint)| {
            Error::new(cx.flag_position("network"), message).with_hint(hint)
        })?),
        None => None,
    };
    let security = match flags.string("security") {
        Some(value) => Some(mount::parse_security(value).map_err(|(message, hint)| {
            Error::new(cx.flag_position("security"), message).with_hint(hint)
        })?),
        None => None,
    };
    Ok(Kind::Run(Run {
        command: command(cx.node),
        heredocs: cx.node.heredocs.clone(),
        mounts,
        network,
        security,
        mount_specs,
    }))
}

/// Turns a `--mount` problem into an error pointing at the offending option.
fn mount_error(cx: &Cx<'_>, flag_at: Position, spec: &str, error: MountError) -> Error {
    match error {
        MountError::Invalid {
            message,
            hint,
            near,
        } => {
            let position = cx
                .find_from(flag_at, &near)
                .or_else(|| cx.find_from(flag_at, spec))
                .unwrap_or(flag_at);
            let error = Error::new(position, message);
            match hint {
                Some(hint) => error.with_hint(hint),
                None => error,
            }
        }
        MountError::Shell { word, error } => Error::new(
            flag_at,
            format!("failed to process {}: {}", go_quote(&word), error.message),
        ),
    }
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

fn parse_shell(cx: &Cx<'_>) -> Result<Kind> {
    cx.flags("SHELL", &[])?;
    if cx.node.args.is_empty() {
        return Err(cx
            .error(at_least_one("SHELL"))
            .with_hint("write `SHELL [\"executable\", \"parameters\"]`"));
    }
    if !cx.node.json {
        return Err(not_json(cx, "SHELL"));
    }
    Ok(Kind::Shell(cx.node.args.clone()))
}

/// BuildKit `errNotJSON`, with its hint for unescaped Windows paths.
fn not_json(cx: &Cx<'_>, keyword: &str) -> Error {
    let original = cx
        .node
        .original
        .to_lowercase()
        .replace(&format!("{} ", keyword.to_lowercase()), "");
    let looks_like_path = original.char_indices().any(|(i, c)| {
        c == '"' && {
            let mut rest = original[i + 1..].chars();
            matches!(
                (rest.next(), rest.next(), rest.next()),
                (Some('a'..='z'), Some(':'), Some('\\'))
            )
        }
    });
    let mut hint = format!("write `{keyword} [\"executable\", \"parameters\"]`");
    if looks_like_path
        && !original.contains("\\\\")
        && original.contains('[')
        && original.contains(']')
    {
        hint.push_str(
            "; it looks like a file path without escaped back-slashes: JSON needs `[\"c:\\\\path\\\\to\\\\file.exe\", \"/parameter\"]`",
        );
    }
    cx.error(format!(
        "{keyword} requires the arguments to be in JSON form"
    ))
    .with_hint(hint)
}

fn parse_healthcheck(cx: &Cx<'_>) -> Result<Kind> {
    let args = &cx.node.args;
    let Some(kind) = args.first() else {
        return Err(cx
            .error(at_least_one("HEALTHCHECK"))
            .with_hint("write `HEALTHCHECK CMD <command>` or `HEALTHCHECK NONE`"));
    };
    let kind = kind.to_uppercase();
    let rest = &args[1..];
    if kind == "NONE" {
        // BuildKit never looks at the flags of HEALTHCHECK NONE.
        if let Some(extra) = rest.first() {
            return Err(cx.error_at(extra, "HEALTHCHECK NONE takes no arguments"));
        }
        return Ok(Kind::Healthcheck(Healthcheck::None));
    }
    let flags = cx.flags(
        "HEALTHCHECK",
        &[
            ("interval", FlagKind::String),
            ("retries", FlagKind::String),
            ("start-interval", FlagKind::String),
            ("start-period", FlagKind::String),
            ("timeout", FlagKind::String),
        ],
    )?;
    if kind != "CMD" {
        return Err(cx
            .error_at(
                &args[0],
                format!("unknown type {} in HEALTHCHECK (try CMD)", go_quote(&kind)),
            )
            .with_hint("write `HEALTHCHECK CMD <command>` or `HEALTHCHECK NONE`"));
    }
    let mut test = Vec::with_capacity(rest.len() + 1);
    if cx.node.json {
        test.push("CMD".to_string());
        test.extend(rest.iter().cloned());
    } else {
        let line = rest.join(" ");
        if !line.is_empty() {
            test.push("CMD-SHELL".to_string());
            test.push(line);
        }
    }
    if test.len() <= 1 {
        return Err(cx
            .error_at(&args[0], "missing command after HEALTHCHECK CMD")
            .with_hint("write `HEALTHCHECK CMD <command>`"));
    }
    let interval = opt_interval(cx, &flags, "interval")?;
    let timeout = opt_interval(cx, &flags, "timeout")?;
    let start_period = opt_interval(cx, &flags, "start-period")?;
    let start_interval = opt_interval(cx, &flags, "start-interval")?;
    let retries = match flags.string("retries").filter(|v| !v.is_empty()) {
        None => None,
        Some(value) => Some(parse_retries(value).map_err(|message| {
            Error::new(cx.flag_position("retries"), message)
                .with_hint("write a whole number of retries, such as --retries=3")
        })?),
    };
    Ok(Kind::Healthcheck(Healthcheck::Check {
        test,
        interval,
        timeout,
        start_period,
        start_interval,
        retries,
    }))
}

/// BuildKit `parseOptInterval`: empty or zero is "not set"; otherwise at
/// least 1ms.
fn opt_interval(cx: &Cx<'_>, flags: &Flags, name: &str) -> Result<Option<Duration>> {
    let Some(value) = flags.string(name).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let at = || Error::new(cx.flag_position(name), String::new());
    let nanos = super::parse_go_duration(value).map_err(|message| Error {
        message: format!("{} for --{name}", message.trim_start_matches("time: ")),
        hint: Some(format!("write a duration such as --{name}=30s")),
        ..at()
    })?;
    if nanos == 0 {
        return Ok(None);
    }
    if nanos < 1_000_000 {
        return Err(Error {
            message: format!("interval {} cannot be less than 1ms", go_quote(name)),
            hint: Some(format!(
                "write --{name} of at least 1ms, or 0 for the default"
            )),
            ..at()
        });
    }
    Ok(Some(Duration::from_nanos(nanos.unsigned_abs())))
}

/// `strconv.ParseInt(value, 10, 32)`, then not negative.
fn parse_retries(value: &str) -> std::result::Result<u32, String> {
    let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid --retries value {}: expected a whole number",
            go_quote(value)
        ));
    }
    let Ok(number) = value.parse::<i32>() else {
        return Err(format!(
            "invalid --retries value {}: value out of range",
            go_quote(value)
        ));
    };
    u32::try_from(number).map_err(|_| format!("--retries cannot be negative ({number})"))
}

fn parse_onbuild(cx: &Cx<'_>) -> Result<Kind> {
    let Some(nested) = &cx.node.nested else {
        return Err(cx
            .error(at_least_one("ONBUILD"))
            .with_hint("write `ONBUILD <instruction>`"));
    };
    cx.flags("ONBUILD", &[])?;
    let trigger_keyword = nested.keyword.trim().to_uppercase();
    // Where the trigger's keyword is written: after ONBUILD's own.
    let after_onbuild = Position::new(
        cx.node.start.line,
        cx.node.start.column + cx.node.keyword.chars().count(),
    );
    let trigger_start = cx
        .find_from(after_onbuild, &nested.keyword)
        .unwrap_or(cx.node.start);
    if nested.keyword.to_lowercase() == "onbuild" {
        return Err(Error::new(
            trigger_start,
            "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
        ));
    }
    match trigger_keyword.as_str() {
        "ONBUILD" => {
            return Err(Error::new(
                trigger_start,
                "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
            ));
        }
        "MAINTAINER" | "FROM" => {
            return Err(Error::new(
                trigger_start,
                format!("{trigger_keyword} isn't allowed as an ONBUILD trigger"),
            ));
        }
        _ => {}
    }
    let mut expression = strip_onbuild(&cx.node.original).to_string();
    for heredoc in &cx.node.heredocs {
        expression.push('\n');
        expression.push_str(&heredoc.content);
        expression.push_str(&heredoc.name);
    }
    // The trigger is typed now; BuildKit types it only when an image built
    // from this one runs it. It cannot be ONBUILD, so this recurses once.
    let mut trigger_node = (**nested).clone();
    trigger_node.start = trigger_start;
    trigger_node.end_line = cx.node.end_line;
    trigger_node.heredocs.clone_from(&cx.node.heredocs);
    let trigger = parse_node(&trigger_node, cx.parsed)?;
    Ok(Kind::Onbuild(Onbuild {
        expression,
        trigger: Box::new(trigger),
    }))
}

/// `(?i)^\s*ONBUILD\s*` removed.
fn strip_onbuild(original: &str) -> &str {
    let is_space = |c: char| matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ');
    let rest = original.trim_start_matches(is_space);
    match rest.get(..7) {
        Some(word) if word.eq_ignore_ascii_case("onbuild") => {
            rest[7..].trim_start_matches(is_space)
        }
        _ => original,
    }
}

#[cfg(test)]
mod tests;
