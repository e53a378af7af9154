//! The instructions that run or name a command: RUN (with its `--mount`,
//! `--network` and `--security` flags), CMD, ENTRYPOINT, SHELL, HEALTHCHECK
//! and ONBUILD, typed as BuildKit's `parse.go` types them.

use std::time::Duration;

use super::super::super::error::{Error, Position};
use super::super::super::parser::{Node, go_quote};
use super::super::flags::{FlagKind, Flags};
use super::super::mount::{self, Mode, MountError};
use super::super::{Command, Healthcheck, Kind, Onbuild, Run};
use super::{Cx, Result, at_least_one, parse_node};

/// The command of RUN, CMD, ENTRYPOINT (BuildKit `handleJSONArgs`).
fn command(node: &Node) -> Command {
    if node.json {
        Command::Exec(node.args.clone())
    } else {
        Command::Shell(node.args.join(" "))
    }
}

pub(super) fn parse_command(cx: &Cx<'_>, keyword: &str) -> Result<Command> {
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

pub(super) fn parse_run(cx: &mut Cx<'_>) -> Result<Kind> {
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

pub(super) fn parse_shell(cx: &Cx<'_>) -> Result<Kind> {
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

pub(super) fn parse_healthcheck(cx: &Cx<'_>) -> Result<Kind> {
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
    let nanos = super::super::parse_go_duration(value).map_err(|message| Error {
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

pub(super) fn parse_onbuild(cx: &Cx<'_>) -> Result<Kind> {
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
