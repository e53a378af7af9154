//! Which fields BuildKit expands, per instruction: its `Expand` methods
//! (`commands.go`, `commands_runmount.go`) and the dispatcher's own expansions
//! (FROM with the global ARGs, EXPOSE word by word).

use super::super::error::{Error, Position};
use super::super::parser::go_quote;
use super::super::shell::ShellError;
use super::mount::{self, Mode, MountError};
use super::{CopyArgs, Instruction, Kind, Location};

/// A single-word expander (BuildKit `ProcessWord`).
pub type WordExpander<'a> = &'a dyn Fn(&str) -> Result<String, ShellError>;
/// A multi-word expander (BuildKit `ProcessWords`).
pub type WordsExpander<'a> = &'a dyn Fn(&str) -> Result<Vec<String>, ShellError>;

impl Instruction {
    /// Expands, in place, the fields BuildKit expands for this instruction,
    /// each as one word (BuildKit `ProcessWord`):
    ///
    /// - FROM: the image and `--platform` (the planner passes the global
    ///   ARGs); an empty result is BuildKit's error.
    /// - ARG: the default values (BuildKit expands a default only when no
    ///   build argument overrides it, and never the names).
    /// - ENV, LABEL: names and values.
    /// - COPY, ADD: `--chown`, `--chmod`, ADD's `--checksum`, the source
    ///   paths and the destination. Not `--from` (BuildKit resolves it as
    ///   written), not `--exclude`, not heredoc bodies (see
    ///   [`super::HeredocFile::expand`]).
    /// - WORKDIR, USER, STOPSIGNAL, VOLUME: their values.
    /// - EXPOSE: each port, split into words (see [`Instruction::expand_with`]).
    /// - RUN: every `--mount` option value, the mounts then re-checked.
    ///
    /// Nothing else: not shell-form RUN/CMD/ENTRYPOINT, SHELL, HEALTHCHECK,
    /// MAINTAINER or ONBUILD. Call it once: expanding twice expands twice.
    pub fn expand(
        &mut self,
        expand: &dyn Fn(&str) -> Result<String, ShellError>,
    ) -> Result<(), Error> {
        let words = |word: &str| -> Result<Vec<String>, ShellError> {
            Ok(expand(word)?
                .split_ascii_whitespace()
                .map(str::to_string)
                .collect())
        };
        self.expand_with(expand, &words)
    }

    /// [`Instruction::expand`] with a separate multi-word expander for EXPOSE,
    /// as BuildKit uses `ProcessWords` there. `expand` approximates it by
    /// splitting the one-word result on whitespace, which differs only for
    /// quoted variables (`EXPOSE "$PORTS"`).
    pub fn expand_with(
        &mut self,
        word: WordExpander<'_>,
        words: WordsExpander<'_>,
    ) -> Result<(), Error> {
        let x = Expander {
            word,
            locations: &self.locations,
            start: self.start,
        };
        match &mut self.kind {
            Kind::From(from) => {
                let image = x.one(&from.image)?;
                if image.is_empty() {
                    return Err(x
                        .error_at(
                            &from.image,
                            format!("base name ({}) should not be blank", from.image),
                        )
                        .with_hint(
                            "give the ARG used in FROM a default, or pass it with --build-arg",
                        ));
                }
                from.image = image;
                if let Some(platform) = &mut from.platform {
                    let value = x.one(platform)?;
                    if value.is_empty() {
                        return Err(x
                            .error_at(
                                platform,
                                format!("empty platform value from expression {platform}"),
                            )
                            .with_hint("give the ARG used in --platform a value"));
                    }
                    *platform = value;
                }
            }
            Kind::Arg(arg) => {
                for def in &mut arg.args {
                    if let Some(value) = &mut def.value {
                        *value = x.one(value)?;
                    }
                }
            }
            Kind::Env(pairs) | Kind::Label(pairs) => {
                for pair in &mut pairs.0 {
                    pair.key = x.one(&pair.key)?;
                    pair.value = x.one(&pair.value)?;
                }
            }
            Kind::Copy(copy) => x.copy_args(&mut copy.args, None)?,
            Kind::Add(add) => x.copy_args(&mut add.args, Some(&mut add.checksum))?,
            Kind::Workdir(value) | Kind::User(value) | Kind::StopSignal(value) => {
                *value = x.one(value)?;
            }
            Kind::Volume(volumes) => {
                for volume in volumes.iter_mut() {
                    *volume = x.one(volume)?;
                }
            }
            Kind::Expose(ports) => {
                let mut expanded = Vec::with_capacity(ports.len());
                for port in ports.iter() {
                    for value in words(port).map_err(|e| x.shell_error(port, &e))? {
                        validate_port(&value).map_err(|reason| {
                            x.error_at(port, format!("invalid port {value:?} in EXPOSE: {reason}"))
                                .with_hint("write `EXPOSE <port>[-<port>][/tcp|udp|sctp]`")
                        })?;
                        expanded.push(value);
                    }
                }
                *ports = expanded;
            }
            Kind::Run(run) => {
                let mut mounts = Vec::with_capacity(run.mount_specs.len());
                for spec in &run.mount_specs {
                    let mount =
                        mount::parse_mount(spec, &Mode::Expand(word)).map_err(|e| match e {
                            MountError::Shell { word, error } => x.shell_error(&word, &error),
                            MountError::Invalid {
                                message,
                                hint,
                                near: _,
                            } => {
                                let error = x.error_at(spec, message);
                                match hint {
                                    Some(hint) => error.with_hint(hint),
                                    None => error,
                                }
                            }
                        })?;
                    mounts.push(mount);
                }
                mount::number_ssh_sockets(&mut mounts);
                run.mounts = mounts;
            }
            Kind::Maintainer(_)
            | Kind::Cmd(_)
            | Kind::Entrypoint(_)
            | Kind::Healthcheck(_)
            | Kind::Shell(_)
            | Kind::Onbuild(_) => {}
        }
        Ok(())
    }
}

struct Expander<'a> {
    word: WordExpander<'a>,
    locations: &'a [Location],
    start: Position,
}

impl Expander<'_> {
    fn position(&self, text: &str) -> Position {
        self.locations
            .iter()
            .find(|l| l.text == text)
            .map_or(self.start, |l| l.position)
    }

    fn error_at(&self, text: &str, message: String) -> Error {
        Error::new(self.position(text), message)
    }

    /// BuildKit's `failed to process "<word>": <reason>`, pointing at the
    /// failing construct when the word's place is known.
    fn shell_error(&self, text: &str, error: &ShellError) -> Error {
        let mut position = self.position(text);
        if self.locations.iter().any(|l| l.text == text) {
            let prefix = text.get(..error.offset).unwrap_or_default();
            position.column += prefix.chars().count();
        }
        Error::new(
            position,
            format!("failed to process {}: {}", go_quote(text), error.message),
        )
    }

    fn one(&self, text: &str) -> Result<String, Error> {
        (self.word)(text).map_err(|e| self.shell_error(text, &e))
    }

    /// An optional flag value; an empty result counts as absent, as BuildKit
    /// tests `!= ""`.
    fn optional(&self, value: &mut Option<String>) -> Result<(), Error> {
        if let Some(text) = value.as_deref() {
            let expanded = self.one(text)?;
            *value = Some(expanded).filter(|v| !v.is_empty());
        }
        Ok(())
    }

    fn copy_args(
        &self,
        args: &mut CopyArgs,
        checksum: Option<&mut Option<String>>,
    ) -> Result<(), Error> {
        self.optional(&mut args.chown)?;
        self.optional(&mut args.chmod)?;
        for source in &mut args.sources {
            *source = self.one(source)?;
        }
        if let Some(checksum) = checksum {
            let written = checksum.clone().unwrap_or_default();
            self.optional(checksum)?;
            if let Some(value) = checksum.as_deref() {
                validate_digest(value).map_err(|reason| {
                    self.error_at(&written, format!("invalid --checksum {value:?}: {reason}"))
                        .with_hint("write --checksum=sha256:<64 hex digits>")
                })?;
                if let Some(local) = args.sources.iter().find(|s| !is_remote_source(s)) {
                    return Err(self.error_at(
                        &written,
                        format!("--checksum can't be used with the local source {local:?}: only with HTTP(S) or git sources"),
                    ));
                }
            }
        }
        args.dest = self.one(&args.dest)?;
        Ok(())
    }
}

/// Docker's `nat.ParsePortSpec` rules for an exposed port: `N`, `N-M`, each
/// optionally followed by `/tcp`, `/udp` or `/sctp` (any case).
fn validate_port(spec: &str) -> Result<(), String> {
    let (port, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    if !matches!(proto.to_ascii_lowercase().as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("unknown protocol {proto:?}: use tcp, udp or sctp"));
    }
    // `ip:host:container` forms are for `docker run -p`; Docker keeps the
    // container port, the last part.
    let port = port.rsplit(':').next().unwrap_or(port);
    let number = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("{p:?} is not a port number (0 to 65535)"))
    };
    match port.split_once('-') {
        Some((start, end)) => {
            let (start, end) = (number(start)?, number(end)?);
            if start > end {
                return Err(format!("the range {start}-{end} ends before it starts"));
            }
        }
        None => {
            number(port)?;
        }
    }
    Ok(())
}

/// An OCI digest with an algorithm BuildKit can verify.
fn validate_digest(value: &str) -> Result<(), String> {
    let Some((algorithm, encoded)) = value.split_once(':') else {
        return Err("expected <algorithm>:<hex digest>".to_string());
    };
    let length = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        other => return Err(format!("unsupported digest algorithm {other:?}")),
    };
    if encoded.len() != length
        || !encoded
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(format!(
            "a {algorithm} digest is {length} lowercase hex digits"
        ));
    }
    Ok(())
}

/// ADD sources fetched from the network rather than the context.
fn is_remote_source(source: &str) -> bool {
    let lower = source.to_ascii_lowercase();
    lower.starts_with("http://")
        || lower.starts_with("https://")
        || lower.starts_with("git@")
        || lower.starts_with("git://")
        || lower.starts_with("ssh://")
}

#[cfg(test)]
mod tests {
    use super::super::super::error::{Error, Position};
    use super::super::super::parser;
    use super::super::super::shell::Lex;
    use super::super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    fn expanded(text: &str, vars_in: &[(&str, &str)]) -> Result<Instruction, Error> {
        let parsed = parser::parse(text).unwrap();
        let node = parsed.nodes.last().unwrap();
        let mut instruction = parse_node(node, &parsed).unwrap();
        let env = vars(vars_in);
        let lex = Lex::new(parsed.escape);
        instruction
            .expand_with(&|w| lex.process_word(w, &env), &|w| {
                lex.process_words(w, &env)
            })
            .map(|()| instruction)
    }

    #[test]
    fn from_image_and_platform() {
        let i = expanded(
            "FROM --platform=$P ${IMG}:1 AS b",
            &[("P", "linux/arm64"), ("IMG", "alpine")],
        )
        .unwrap();
        let Kind::From(from) = i.kind else { panic!() };
        assert_eq!(from.image, "alpine:1");
        assert_eq!(from.platform.as_deref(), Some("linux/arm64"));
        assert_eq!(from.stage_name.as_deref(), Some("b"));
        let e = expanded("FROM $NOPE", &[]).unwrap_err();
        assert_eq!(e.message, "base name ($NOPE) should not be blank");
        assert_eq!(e.position, Position::new(1, 6));
        let e = expanded("FROM --platform=$NOPE alpine", &[]).unwrap_err();
        assert_eq!(e.message, "empty platform value from expression $NOPE");
    }

    #[test]
    fn env_label_arg() {
        let i = expanded(
            "FROM a\nENV $K=\"$V x\" B=${V}",
            &[("K", "key"), ("V", "v")],
        )
        .unwrap();
        let Kind::Env(kv) = i.kind else { panic!() };
        assert_eq!(kv.0[0].key, "key");
        assert_eq!(kv.0[0].value, "v x");
        assert_eq!(kv.0[1].value, "v");
        let i = expanded("FROM a\nLABEL \"a b\"=$V", &[("V", "1")]).unwrap();
        let Kind::Label(kv) = i.kind else { panic!() };
        assert_eq!(kv.0[0].key, "a b");
        assert_eq!(kv.0[0].value, "1");
        let i = expanded("FROM a\nARG $N=${V}-x", &[("V", "1")]).unwrap();
        let Kind::Arg(arg) = i.kind else { panic!() };
        assert_eq!(arg.args[0].key, "$N");
        assert_eq!(arg.args[0].value.as_deref(), Some("1-x"));
    }

    #[test]
    fn copy_fields() {
        let i = expanded(
            "FROM a\nCOPY --from=$S --chown=$U --chmod=$M --exclude=$E $SRC <<EOF $DST\n$body\nEOF\n",
            &[("U", "app"), ("M", "0644"), ("SRC", "a.txt"), ("DST", "/d/"), ("S", "x"), ("E", "y")],
        )
        .unwrap();
        let Kind::Copy(copy) = i.kind else { panic!() };
        let a = copy.args;
        assert_eq!(a.chown.as_deref(), Some("app"));
        assert_eq!(a.chmod.as_deref(), Some("0644"));
        assert_eq!(a.sources, ["a.txt"]);
        assert_eq!(a.dest, "/d/");
        assert_eq!(a.from.as_deref(), Some("$S"));
        assert_eq!(a.exclude, ["$E"]);
        assert_eq!(a.heredocs[0].content, "$body\n");
        let i = expanded("FROM a\nCOPY --chown=$EMPTY a b", &[]).unwrap();
        let Kind::Copy(copy) = i.kind else { panic!() };
        assert_eq!(copy.args.chown, None);
    }

    #[test]
    fn add_checksum() {
        let sum = format!("sha256:{}", "ab".repeat(32));
        let i = expanded(
            "FROM a\nADD --checksum=$SUM https://x/$F /",
            &[("SUM", &sum), ("F", "f.tgz")],
        )
        .unwrap();
        let Kind::Add(add) = i.kind else { panic!() };
        assert_eq!(add.checksum.as_deref(), Some(sum.as_str()));
        assert_eq!(add.args.sources, ["https://x/f.tgz"]);

        let e = expanded("FROM a\nADD --checksum=sha256:abc https://x/f /", &[]).unwrap_err();
        assert!(e.message.contains("64 lowercase hex digits"), "{e}");
        assert_eq!(e.position, Position::new(2, 16));
        let e = expanded("FROM a\nADD --checksum=md5:abc https://x/f /", &[]).unwrap_err();
        assert!(e.message.contains("unsupported digest algorithm"), "{e}");
        let e = expanded(&format!("FROM a\nADD --checksum={sum} local.tgz /"), &[]).unwrap_err();
        assert!(e.message.contains("local source \"local.tgz\""), "{e}");
    }

    #[test]
    fn expose_ports_are_validated_after_expansion() {
        assert!(
            expanded(
                "FROM a\nEXPOSE 80 443/UDP 8000-8010/sctp $P",
                &[("P", "53/udp")]
            )
            .is_ok()
        );
        for (bad, reason) in [
            ("80/tcpx", "unknown protocol"),
            ("http", "not a port number"),
            ("70000", "not a port number"),
            ("90-80", "ends before it starts"),
        ] {
            let e = expanded(&format!("FROM a\nEXPOSE 22 {bad}"), &[]).unwrap_err();
            assert!(e.message.contains(reason), "{bad}: {e}");
            assert_eq!(e.position, Position::new(2, 11), "{bad}");
        }
    }

    #[test]
    fn single_values_and_lists() {
        let env = [
            ("D", "/app"),
            ("U", "1000"),
            ("S", "SIGINT"),
            ("P", "80 443/udp"),
        ];
        let kind = |t: &str| expanded(&format!("FROM a\n{t}"), &env).unwrap().kind;
        assert_eq!(kind("WORKDIR $D/x"), Kind::Workdir("/app/x".into()));
        assert_eq!(kind("USER ${U}:${U}"), Kind::User("1000:1000".into()));
        assert_eq!(kind("STOPSIGNAL $S"), Kind::StopSignal("SIGINT".into()));
        assert_eq!(
            kind("VOLUME $D /b"),
            Kind::Volume(vec!["/app".into(), "/b".into()])
        );
        assert_eq!(
            kind("EXPOSE $P 8080"),
            Kind::Expose(vec!["80".into(), "443/udp".into(), "8080".into()])
        );
    }

    #[test]
    fn untouched_instructions() {
        let env = [("X", "1")];
        let kind = |t: &str| expanded(&format!("FROM a\n{t}"), &env).unwrap().kind;
        assert_eq!(
            kind("RUN echo $X"),
            Kind::Run(Run {
                command: Command::Shell("echo $X".into()),
                heredocs: vec![],
                mounts: vec![],
                network: None,
                security: None,
                mount_specs: vec![],
            })
        );
        assert_eq!(
            kind("CMD echo $X"),
            Kind::Cmd(Command::Shell("echo $X".into()))
        );
        assert_eq!(kind("MAINTAINER $X"), Kind::Maintainer("$X".into()));
        assert_eq!(kind("SHELL [\"$X\"]"), Kind::Shell(vec!["$X".into()]));
        let Kind::Onbuild(o) = kind("ONBUILD WORKDIR $X") else {
            panic!()
        };
        assert_eq!(o.trigger.kind, Kind::Workdir("$X".into()));
    }

    #[test]
    fn run_mounts() {
        let i = expanded(
            "FROM a\nRUN --mount=type=$T,target=$D,mode=$M,id=c echo",
            &[("T", "cache"), ("D", "/c"), ("M", "0700")],
        )
        .unwrap();
        let Kind::Run(run) = i.kind else { panic!() };
        assert_eq!(run.mounts[0].kind, MountKind::Cache);
        assert_eq!(run.mounts[0].target.as_deref(), Some("/c"));
        assert_eq!(run.mounts[0].mode, Some(0o700));
        assert_eq!(run.mounts[0].sharing, Some(Sharing::Shared));
        let e = expanded(
            "FROM a\nRUN --mount=type=cache,target=/c,mode=$M echo",
            &[("M", "9")],
        )
        .unwrap_err();
        assert_eq!(e.message, "invalid value 9 for mode");
        assert_eq!(e.position, Position::new(2, 5));
        let e = expanded("FROM a\nRUN --mount=type=$T echo", &[("T", "nfs")]).unwrap_err();
        assert_eq!(e.message, "unsupported mount type \"nfs\"");
    }

    #[test]
    fn shell_errors_point_at_the_word() {
        let e = expanded("FROM a\nWORKDIR /x/${a", &[]).unwrap_err();
        assert!(
            e.message.starts_with("failed to process \"/x/${a\": "),
            "{}",
            e.message
        );
        assert_eq!(e.position, Position::new(2, 12));
        let e = expanded("FROM a\nCOPY --chown=${u a b", &[]).unwrap_err();
        assert!(
            e.message.starts_with("failed to process \"${u\""),
            "{}",
            e.message
        );
        assert_eq!(e.position.line, 2);
        let e = expanded("FROM a\nRUN --mount=type=cache,target=${x echo", &[]).unwrap_err();
        assert!(
            e.message.starts_with("failed to process \"${x\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn expand_splits_expose_words() {
        let parsed = parser::parse("FROM a\nEXPOSE $P\n").unwrap();
        let mut i = parse_node(&parsed.nodes[1], &parsed).unwrap();
        let lex = Lex::new('\\');
        let env = vars(&[("P", "1 2")]);
        i.expand(&|w| lex.process_word(w, &env)).unwrap();
        assert_eq!(i.kind, Kind::Expose(vec!["1".into(), "2".into()]));
    }
}
