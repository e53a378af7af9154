//! One-line canonical rendering of an instruction, as `executor dockerfile
//! check` prints it: upper-case keyword, flags in a fixed order, values quoted
//! only when they would not read back as one word, exec forms as compact JSON.

use std::fmt::Write as _;

use super::super::gopath;
use super::super::parser::go_quote;
use super::{
    Command, CopyArgs, Healthcheck, Instruction, Kind, Mount, MountKind, Sharing,
    format_go_duration,
};

impl Instruction {
    /// Canonical one-line rendering with the current (expanded, once
    /// [`Instruction::expand`] ran) values, e.g. `COPY --from=build
    /// --chown=1:1 /a /b`, `RUN ["a","b"]`, `ENV A="x y"`. Heredoc bodies are
    /// not shown.
    #[must_use]
    pub fn display(&self) -> String {
        display_kind(&self.kind)
    }
}

fn display_kind(kind: &Kind) -> String {
    let mut out = kind.keyword().to_string();
    match kind {
        Kind::From(from) => {
            if let Some(platform) = &from.platform {
                flag(&mut out, "platform", platform);
            }
            push_word(&mut out, &from.image);
            if let Some(name) = &from.stage_name {
                out.push_str(" AS ");
                out.push_str(name);
            }
        }
        Kind::Arg(arg) => {
            for def in &arg.args {
                out.push(' ');
                out.push_str(&word(&def.key));
                if let Some(value) = &def.value {
                    out.push('=');
                    out.push_str(&word(value));
                }
            }
        }
        Kind::Env(pairs) | Kind::Label(pairs) => {
            for pair in &pairs.0 {
                let _ = write!(out, " {}={}", word(&pair.key), word(&pair.value));
            }
        }
        Kind::Maintainer(text)
        | Kind::Workdir(text)
        | Kind::User(text)
        | Kind::StopSignal(text) => {
            out.push(' ');
            out.push_str(text);
        }
        Kind::Copy(copy) => copy_args(&mut out, &copy.args, |_| {}),
        Kind::Add(add) => copy_args(&mut out, &add.args, |out| {
            if let Some(keep) = add.keep_git_dir {
                bool_flag(out, "keep-git-dir", keep);
            }
            if let Some(checksum) = &add.checksum {
                flag(out, "checksum", checksum);
            }
            if let Some(unpack) = add.unpack {
                bool_flag(out, "unpack", unpack);
            }
        }),
        Kind::Run(run) => {
            for mount in &run.mounts {
                flag(&mut out, "mount", &mount_spec(mount));
            }
            if let Some(network) = run.network {
                flag(&mut out, "network", network.as_str());
            }
            if let Some(security) = run.security {
                flag(&mut out, "security", security.as_str());
            }
            push_command(&mut out, &run.command);
        }
        Kind::Cmd(command) | Kind::Entrypoint(command) => push_command(&mut out, command),
        Kind::Expose(ports) => {
            for port in ports {
                push_word(&mut out, port);
            }
        }
        Kind::Volume(paths) => {
            if paths.iter().any(|p| word(p) != *p) {
                out.push(' ');
                out.push_str(&json(paths));
            } else {
                for path in paths {
                    push_word(&mut out, path);
                }
            }
        }
        Kind::Healthcheck(Healthcheck::None) => out.push_str(" NONE"),
        Kind::Healthcheck(Healthcheck::Check {
            test,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        }) => {
            for (name, value) in [
                ("interval", interval),
                ("timeout", timeout),
                ("start-period", start_period),
                ("start-interval", start_interval),
            ] {
                if let Some(d) = value {
                    flag(&mut out, name, &format_go_duration(*d));
                }
            }
            if let Some(retries) = retries {
                flag(&mut out, "retries", &retries.to_string());
            }
            out.push_str(" CMD");
            match test.split_first() {
                Some((kind, rest)) if kind == "CMD-SHELL" => {
                    for part in rest {
                        out.push(' ');
                        out.push_str(part);
                    }
                }
                Some((_, rest)) => {
                    out.push(' ');
                    out.push_str(&json(rest));
                }
                None => {}
            }
        }
        Kind::Shell(shell) => {
            out.push(' ');
            out.push_str(&json(shell));
        }
        Kind::Onbuild(onbuild) => {
            out.push(' ');
            out.push_str(&display_kind(&onbuild.trigger.kind));
        }
    }
    out
}

fn copy_args(out: &mut String, args: &CopyArgs, add_flags: impl FnOnce(&mut String)) {
    if let Some(from) = &args.from {
        flag(out, "from", from);
    }
    if let Some(chown) = &args.chown {
        flag(out, "chown", chown);
    }
    if let Some(chmod) = &args.chmod {
        flag(out, "chmod", chmod);
    }
    if args.link {
        out.push_str(" --link");
    }
    if args.parents {
        out.push_str(" --parents");
    }
    for exclude in &args.exclude {
        flag(out, "exclude", exclude);
    }
    add_flags(out);
    for source in &args.sources {
        push_word(out, source);
    }
    for heredoc in &args.heredocs {
        if heredoc.expand {
            let _ = write!(out, " <<{}", heredoc.name);
        } else {
            let _ = write!(out, " <<'{}'", heredoc.name);
        }
    }
    push_word(out, &args.dest);
}

fn push_command(out: &mut String, command: &Command) {
    match command {
        Command::Shell(line) if line.is_empty() => {}
        Command::Shell(line) => {
            out.push(' ');
            out.push_str(line);
        }
        Command::Exec(args) => {
            out.push(' ');
            out.push_str(&json(args));
        }
    }
}

/// A mount as a `--mount` value: every set option, `ro`/`rw` only when it
/// differs from the type's default.
fn mount_spec(m: &Mount) -> String {
    let mut fields = vec![format!("type={}", m.kind.as_str())];
    let mut push = |key: &str, value: &str| fields.push(format!("{key}={}", csv_value(value)));
    if let Some(from) = &m.from {
        push("from", from);
    }
    if let Some(source) = &m.source {
        push("source", source);
    }
    if let Some(target) = &m.target {
        push("target", target);
    }
    if let Some(id) = &m.id {
        let implied = m.kind == MountKind::Cache
            && *id == gopath::clean(m.target.as_deref().unwrap_or_default());
        if !implied {
            push("id", id);
        }
    }
    if let Some(sharing) = m.sharing.filter(|s| *s != Sharing::Shared) {
        push("sharing", sharing.as_str());
    }
    if let Some(env) = &m.env {
        push("env", env);
    }
    if let Some(mode) = m.mode {
        push("mode", &format!("{mode:04o}"));
    }
    if let Some(uid) = m.uid {
        push("uid", &uid.to_string());
    }
    if let Some(gid) = m.gid {
        push("gid", &gid.to_string());
    }
    if let Some(size) = m.size {
        push("size", &size.to_string());
    }
    let read_only_default = !matches!(m.kind, MountKind::Cache | MountKind::Tmpfs);
    if m.read_only != read_only_default {
        fields.push(if m.read_only { "ro" } else { "rw" }.to_string());
    }
    if m.required {
        fields.push("required".to_string());
    }
    fields.join(",")
}

/// A CSV field, quoted when it holds a comma or a quote.
fn csv_value(value: &str) -> String {
    if value.contains([',', '"']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

fn flag(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, " --{name}={}", word(value));
}

fn bool_flag(out: &mut String, name: &str, value: bool) {
    if value {
        let _ = write!(out, " --{name}");
    } else {
        let _ = write!(out, " --{name}=false");
    }
}

fn push_word(out: &mut String, value: &str) {
    out.push(' ');
    out.push_str(&word(value));
}

/// `value` as one word: as is, or double-quoted when empty or holding
/// whitespace, quotes or backslashes.
fn word(value: &str) -> String {
    if value.is_empty()
        || value.contains(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '\\'))
    {
        go_quote(value)
    } else {
        value.to_string()
    }
}

fn json(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::super::parser;
    use super::super::parse_node;

    fn display(text: &str) -> String {
        let parsed = parser::parse(text).unwrap();
        parse_node(parsed.nodes.last().unwrap(), &parsed)
            .unwrap()
            .display()
    }

    #[test]
    fn renders_each_instruction() {
        let cases = [
            ("FROM alpine", "FROM alpine"),
            (
                "from --platform=linux/arm64 alpine as Build",
                "FROM --platform=linux/arm64 alpine AS build",
            ),
            ("ARG a b=1 c=\"x y\"", "ARG a b=1 c=\"\\\"x y\\\"\""),
            ("ENV A=\"x y\" B=1", "ENV A=\"\\\"x y\\\"\" B=1"),
            ("ENV A x y", "ENV A=\"x y\""),
            ("LABEL a=b", "LABEL a=b"),
            ("MAINTAINER Jo Doe <jo@x>", "MAINTAINER Jo Doe <jo@x>"),
            ("WORKDIR /my dir", "WORKDIR /my dir"),
            ("USER 1:1", "USER 1:1"),
            ("STOPSIGNAL SIGINT", "STOPSIGNAL SIGINT"),
            (
                "COPY --link --chown=1:1 --from=build --exclude=*.md --parents a b /c",
                "COPY --from=build --chown=1:1 --link --parents --exclude=*.md a b /c",
            ),
            ("COPY [\"a b\", \"/c\"]", "COPY \"a b\" /c"),
            (
                "ADD --keep-git-dir=false --unpack --checksum=sha256:x --chmod=755 u /d",
                "ADD --chmod=755 --keep-git-dir=false --checksum=sha256:x --unpack u /d",
            ),
            ("RUN [\"a\", \"b\"]", "RUN [\"a\",\"b\"]"),
            ("RUN echo hi", "RUN echo hi"),
            (
                "RUN --network=host --security=insecure x",
                "RUN --network=host --security=insecure x",
            ),
            (
                "RUN --mount=type=cache,target=/c,sharing=locked,uid=1 --mount=type=secret,id=t x",
                "RUN --mount=type=cache,target=/c,sharing=locked,uid=1 --mount=type=secret,target=/run/secrets/t,id=t x",
            ),
            (
                "RUN --mount=target=/s,rw x",
                "RUN --mount=type=bind,target=/s,rw x",
            ),
            (
                "RUN --mount=type=tmpfs,target=/t,ro,size=1k x",
                "RUN --mount=type=tmpfs,target=/t,size=1024,ro x",
            ),
            (
                "RUN --mount=type=ssh,required,mode=0600 x",
                "RUN --mount=type=ssh,target=/run/buildkit/ssh_agent.0,id=default,mode=0600,required x",
            ),
            (
                "RUN --mount=\"type=cache,target=/a b\" x",
                "RUN --mount=\"type=cache,target=/a b\" x",
            ),
            ("CMD [\"a\"]", "CMD [\"a\"]"),
            ("ENTRYPOINT exec x", "ENTRYPOINT exec x"),
            ("EXPOSE 80 443/udp", "EXPOSE 443/udp 80"),
            ("VOLUME /a /b", "VOLUME /a /b"),
            ("VOLUME [\"/a b\"]", "VOLUME [\"/a b\"]"),
            ("HEALTHCHECK NONE", "HEALTHCHECK NONE"),
            (
                "HEALTHCHECK --retries=3 --interval=90s CMD curl -f x",
                "HEALTHCHECK --interval=1m30s --retries=3 CMD curl -f x",
            ),
            (
                "HEALTHCHECK CMD [\"a\", \"b\"]",
                "HEALTHCHECK CMD [\"a\",\"b\"]",
            ),
            ("SHELL [\"sh\", \"-c\"]", "SHELL [\"sh\",\"-c\"]"),
            ("ONBUILD run echo", "ONBUILD RUN echo"),
        ];
        for (input, want) in cases {
            assert_eq!(display(&format!("FROM a\n{input}\n")), want, "{input}");
        }
    }

    #[test]
    fn renders_heredoc_sources() {
        assert_eq!(
            display("FROM a\nCOPY <<EOF <<'RAW' /d\nx\nEOF\ny\nRAW\n"),
            "COPY <<EOF <<'RAW' /d"
        );
    }
}
