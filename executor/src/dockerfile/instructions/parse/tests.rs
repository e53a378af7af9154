//! Every instruction and flag through the parser and this layer, the error
//! cases with their messages and positions, and a no-panic sweep.

use std::time::Duration;

use super::super::super::error::{Error, Position};
use super::super::super::parser;
use super::super::super::shell::Lex;
use super::super::*;

/// The last instruction of `text`, typed.
fn typed(text: &str) -> Instruction {
    let parsed = parser::parse(text).unwrap();
    parse_node(parsed.nodes.last().unwrap(), &parsed).unwrap()
}

fn kind(text: &str) -> Kind {
    typed(text).kind
}

/// The error for the last instruction of `text`.
fn error(text: &str) -> Error {
    let parsed = parser::parse(text).unwrap();
    match parse_node(parsed.nodes.last().unwrap(), &parsed) {
        Ok(i) => panic!("{text:?} parsed as {i:?}"),
        Err(e) => e,
    }
}

fn message(text: &str) -> String {
    error(text).message
}

fn at(line: usize, column: usize) -> Position {
    Position::new(line, column)
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| (*s).to_string()).collect()
}

fn copy_args(text: &str) -> CopyArgs {
    match kind(text) {
        Kind::Copy(c) => c.args,
        Kind::Add(a) => a.args,
        other => panic!("{other:?}"),
    }
}

fn run(text: &str) -> Run {
    let Kind::Run(run) = kind(text) else {
        panic!("not RUN")
    };
    run
}

fn mounts(text: &str) -> Vec<Mount> {
    run(text).mounts
}

// --- FROM ---------------------------------------------------------------

#[test]
fn from_forms() {
    assert_eq!(
        kind("FROM alpine:3"),
        Kind::From(From {
            image: "alpine:3".into(),
            stage_name: None,
            platform: None,
        })
    );
    assert_eq!(
        kind("FROM --platform=$BUILDPLATFORM golang AS Build-1_.x"),
        Kind::From(From {
            image: "golang".into(),
            stage_name: Some("build-1_.x".into()),
            platform: Some("$BUILDPLATFORM".into()),
        })
    );
    let Kind::From(f) = kind("from a as b") else {
        panic!()
    };
    assert_eq!(f.stage_name.as_deref(), Some("b"));
    let Kind::From(f) = kind("FROM --platform= a") else {
        panic!()
    };
    assert_eq!(f.platform, None);
}

#[test]
fn from_errors() {
    let e = error("FROM");
    assert_eq!(e.message, "FROM requires either one or three arguments");
    assert_eq!(e.position, at(1, 1));
    assert!(e.hint.is_some());
    assert_eq!(
        message("FROM a b"),
        "FROM requires either one or three arguments"
    );
    assert_eq!(
        message("FROM a is b"),
        "FROM requires either one or three arguments"
    );
    assert_eq!(
        message("FROM a AS b c"),
        "FROM requires either one or three arguments"
    );
    let e = error("FROM a AS 1x");
    assert_eq!(
        e.message,
        "invalid name for build stage: \"1x\", name can't start with a number or contain symbols"
    );
    assert_eq!(e.position, at(1, 11));
    assert_eq!(
        message("FROM a AS b$c"),
        "invalid name for build stage: \"b$c\", name can't start with a number or contain symbols"
    );
    // The name is checked before the flags, as BuildKit does.
    assert!(message("FROM --bogus a AS 1").starts_with("invalid name"));
    let e = error("FROM --platfom=x a");
    assert_eq!(e.message, "unknown flag: --platfom");
    assert_eq!(e.position, at(1, 6));
    assert_eq!(
        e.hint.as_deref(),
        Some("did you mean --platform? FROM accepts --platform")
    );
    assert_eq!(
        error("FROM --plat=x a").hint.as_deref(),
        Some("FROM accepts --platform")
    );
    assert_eq!(
        message("FROM --platform a"),
        "missing a value on flag: platform"
    );
    assert_eq!(
        message("FROM --platform=a --platform=b c"),
        "duplicate flag specified: platform"
    );
}

// --- ARG, ENV, LABEL ----------------------------------------------------

#[test]
fn arg_forms() {
    let Kind::Arg(arg) = kind("ARG a b=1 c= d=\"x y\"") else {
        panic!()
    };
    let got: Vec<(&str, Option<&str>)> = arg
        .args
        .iter()
        .map(|d| (d.key.as_str(), d.value.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("a", None),
            ("b", Some("1")),
            ("c", Some("")),
            ("d", Some("\"x y\""))
        ]
    );
    // BuildKit never parses ARG's flags.
    let Kind::Arg(arg) = kind("ARG --anything a") else {
        panic!()
    };
    assert_eq!(arg.args[0].key, "a");
}

#[test]
fn arg_errors() {
    let e = error("ARG");
    assert_eq!(e.message, "ARG requires at least one argument");
    let e = error("ARG a =x");
    assert_eq!(e.message, "ARG names can not be blank");
    assert_eq!(e.position, at(1, 7));
}

#[test]
fn env_and_label_forms() {
    let pairs = |k: Kind| match k {
        Kind::Env(kv) | Kind::Label(kv) => {
            kv.0.into_iter()
                .map(|p| (p.key, p.value))
                .collect::<Vec<_>>()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        pairs(kind("ENV A=1 B=\"2 3\"")),
        [("A".into(), "1".into()), ("B".into(), "\"2 3\"".into())]
    );
    assert_eq!(pairs(kind("ENV A 1 2")), [("A".into(), "1 2".into())]);
    assert_eq!(
        pairs(kind("LABEL org.x=\"a b\" y=z")),
        [("org.x".into(), "\"a b\"".into()), ("y".into(), "z".into())]
    );
    assert_eq!(pairs(kind("LABEL a b")), [("a".into(), "b".into())]);
}

#[test]
fn env_and_label_errors() {
    assert_eq!(message("ENV"), "ENV requires at least one argument");
    assert_eq!(message("LABEL"), "LABEL requires at least one argument");
    let e = error("ENV A=1 =x");
    assert_eq!(e.message, "ENV names can not be blank");
    assert_eq!(e.position, at(1, 9));
    assert_eq!(message("LABEL =x"), "LABEL names can not be blank");
    let e = error("ENV --x A=1");
    assert_eq!(e.message, "unknown flag: --x");
    assert_eq!(e.hint.as_deref(), Some("ENV accepts no flags"));
    assert_eq!(message("LABEL --x a=1"), "unknown flag: --x");
}

// --- one-value instructions ---------------------------------------------

#[test]
fn single_value_instructions() {
    assert_eq!(
        kind("MAINTAINER Jo Doe <jo@x>"),
        Kind::Maintainer("Jo Doe <jo@x>".into())
    );
    assert_eq!(kind("WORKDIR /my dir"), Kind::Workdir("/my dir".into()));
    assert_eq!(kind("USER app:app"), Kind::User("app:app".into()));
    assert_eq!(
        kind("STOPSIGNAL SIGKILL"),
        Kind::StopSignal("SIGKILL".into())
    );
    // BuildKit never parses STOPSIGNAL's flags.
    assert_eq!(kind("STOPSIGNAL --x 9"), Kind::StopSignal("9".into()));
}

#[test]
fn single_value_errors() {
    for keyword in ["MAINTAINER", "WORKDIR", "USER", "STOPSIGNAL"] {
        let e = error(keyword);
        assert_eq!(
            e.message,
            format!("{keyword} requires exactly one argument")
        );
        assert_eq!(e.position, at(1, 1));
    }
    for keyword in ["MAINTAINER", "WORKDIR", "USER"] {
        let e = error(&format!("{keyword} --bogus x"));
        assert_eq!(e.message, "unknown flag: --bogus", "{keyword}");
        assert_eq!(e.position.column, keyword.len() + 2);
    }
}

// --- COPY and ADD ------------------------------------------------------

#[test]
fn copy_forms_and_flags() {
    let a = copy_args(
        "COPY --from=build --chown=1:2 --chmod=0755 --link --parents --exclude=*.md --exclude=.git a b/ /dst/",
    );
    assert_eq!(a.sources, strings(&["a", "b/"]));
    assert_eq!(a.dest, "/dst/");
    assert_eq!(a.from.as_deref(), Some("build"));
    assert_eq!(a.chown.as_deref(), Some("1:2"));
    assert_eq!(a.chmod.as_deref(), Some("0755"));
    assert!(a.link);
    assert!(a.parents);
    assert_eq!(a.exclude, strings(&["*.md", ".git"]));
    assert!(a.heredocs.is_empty());

    let a = copy_args("COPY [\"a b\", \"c\", \"/d e\"]");
    assert_eq!(a.sources, strings(&["a b", "c"]));
    assert_eq!(a.dest, "/d e");

    let a = copy_args("COPY --from= --link=false --parents=FALSE a b");
    assert_eq!(a.from, None);
    assert!(!a.link);
    assert!(!a.parents);
}

#[test]
fn add_flags() {
    let Kind::Add(add) = kind(
        "ADD --chown=app --chmod=644 --link --keep-git-dir --checksum=sha256:abc --unpack=false --exclude=x https://e/x.tgz /",
    ) else {
        panic!()
    };
    assert_eq!(add.args.sources, strings(&["https://e/x.tgz"]));
    assert_eq!(add.args.chown.as_deref(), Some("app"));
    assert_eq!(add.args.chmod.as_deref(), Some("644"));
    assert!(add.args.link);
    assert_eq!(add.args.exclude, strings(&["x"]));
    assert_eq!(add.keep_git_dir, Some(true));
    assert_eq!(add.checksum.as_deref(), Some("sha256:abc"));
    assert_eq!(add.unpack, Some(false));
    let Kind::Add(add) = kind("ADD a b") else {
        panic!()
    };
    assert_eq!(
        (add.keep_git_dir, add.unpack, add.checksum),
        (None, None, None)
    );
    let Kind::Add(add) = kind("ADD --keep-git-dir=false a b") else {
        panic!()
    };
    assert_eq!(add.keep_git_dir, Some(false));
}

#[test]
fn copy_heredocs() {
    let a = copy_args("COPY <<EOF <<-'RAW' /dst/\nhello $x\nEOF\n\tkept $y\n\tRAW\n");
    assert!(a.sources.is_empty());
    assert_eq!(a.dest, "/dst/");
    assert_eq!(
        a.heredocs,
        [
            HeredocFile {
                name: "EOF".into(),
                content: "hello $x\n".into(),
                expand: true,
            },
            HeredocFile {
                name: "RAW".into(),
                content: "kept $y\n".into(),
                expand: false,
            },
        ]
    );
    let a = copy_args("COPY a <<EOF /d\nx\nEOF\n");
    assert_eq!(a.sources, strings(&["a"]));
    assert_eq!(a.heredocs[0].content, "x\n");
    // JSON form: BuildKit still reads the word as a heredoc, with no body.
    let a = copy_args("COPY [\"<<EOF\", \"/d\"]");
    assert_eq!(a.heredocs[0].name, "EOF");
    assert_eq!(a.heredocs[0].content, "");
}

#[test]
fn copy_and_add_errors() {
    for keyword in ["COPY", "ADD"] {
        let e = error(&format!("{keyword} a"));
        assert_eq!(
            e.message,
            format!(
                "{keyword} requires at least two arguments, but only one was provided. Destination could not be determined"
            )
        );
        assert_eq!(e.position, at(1, 1));
        assert!(error(keyword).message.contains("at least two arguments"));
    }
    // The argument count is checked before the flags.
    assert!(message("COPY --bogus a").contains("at least two arguments"));
    let e = error("COPY a <<EOF\nx\nEOF\n");
    assert_eq!(e.message, "COPY cannot accept a heredoc as a destination");
    assert_eq!(e.position, at(1, 8));
    let e = error("ADD --from=x a b");
    assert_eq!(e.message, "unknown flag: --from");
    assert_eq!(
        e.hint.as_deref(),
        Some(
            "ADD accepts --checksum, --chmod, --chown, --exclude, --keep-git-dir, --link, --unpack"
        )
    );
    assert_eq!(message("ADD --parents a b"), "unknown flag: --parents");
    let e = error("COPY --checksum=x a b");
    assert_eq!(e.message, "unknown flag: --checksum");
    assert_eq!(
        e.hint.as_deref(),
        Some("COPY accepts --chmod, --chown, --exclude, --from, --link, --parents")
    );
    assert_eq!(
        message("COPY --keep-git-dir a b"),
        "unknown flag: --keep-git-dir"
    );
    assert_eq!(message("COPY --unpack a b"), "unknown flag: --unpack");
    assert_eq!(
        message("COPY --chown=a --chown=b c d"),
        "duplicate flag specified: chown"
    );
    assert_eq!(
        message("COPY --link=maybe a b"),
        "expecting boolean value for flag link, not: maybe"
    );
    assert_eq!(message("COPY --from a b"), "missing a value on flag: from");
    assert_eq!(
        message("COPY --exclude a b"),
        "missing a value on flag: exclude"
    );
    let e = error("COPY --chonw=1 a b");
    assert_eq!(
        e.hint
            .as_deref()
            .map(|h| h.starts_with("did you mean --chown?")),
        Some(true)
    );
}

#[test]
fn flag_errors_point_at_continuation_lines() {
    let e = error("COPY --chown=a \\\n    --bogus=1 a b\n");
    assert_eq!(e.position, at(2, 5));
    let e = error("FROM a\n  RUN --network=space x\n");
    assert_eq!(e.position, at(2, 7));
}

// --- RUN ----------------------------------------------------------------

#[test]
fn run_forms() {
    let r = run("RUN echo $HOME && ls");
    assert_eq!(r.command, Command::Shell("echo $HOME && ls".into()));
    assert!(r.mounts.is_empty() && r.network.is_none() && r.security.is_none());
    assert_eq!(
        run("RUN [\"a\", \"b c\"]").command,
        Command::Exec(strings(&["a", "b c"]))
    );
    assert_eq!(run("RUN []").command, Command::Exec(vec![]));
    // Accepted by BuildKit: runs `sh -c ""`.
    assert_eq!(run("RUN").command, Command::Shell(String::new()));
    let r = run("RUN <<EOF\necho hi\nEOF\n");
    assert_eq!(r.command, Command::Shell("<<EOF".into()));
    assert_eq!(r.heredocs.len(), 1);
    assert_eq!(r.heredocs[0].name, "EOF");
    assert_eq!(r.heredocs[0].content, "echo hi\n");
}

#[test]
fn run_network_and_security() {
    assert_eq!(run("RUN --network=none x").network, Some(NetworkMode::None));
    assert_eq!(run("RUN --network=host x").network, Some(NetworkMode::Host));
    assert_eq!(
        run("RUN --network=default x").network,
        Some(NetworkMode::Default)
    );
    assert_eq!(
        run("RUN --security=insecure x").security,
        Some(SecurityMode::Insecure)
    );
    assert_eq!(
        run("RUN --security=sandbox x").security,
        Some(SecurityMode::Sandbox)
    );
    let e = error("RUN --network=bridge x");
    assert_eq!(e.message, "invalid network mode \"bridge\"");
    assert_eq!(e.position, at(1, 5));
    assert_eq!(
        e.hint.as_deref(),
        Some("network modes: default, none, host")
    );
    assert_eq!(
        message("RUN --network x"),
        "missing a value on flag: network"
    );
    assert_eq!(
        message("RUN --security=root x"),
        "security \"root\" is not valid"
    );
    let e = error("RUN --device=x y");
    assert_eq!(e.message, "unknown flag: --device");
    assert_eq!(
        e.hint.as_deref(),
        Some("RUN accepts --mount, --network, --security")
    );
    assert_eq!(message("RUN --mount x"), "missing a value on flag: mount");
}

#[test]
fn run_mount_types() {
    let m = mounts(
        "RUN --mount=type=bind,from=build,source=/out,target=/in \
         --mount=type=cache,target=/root/.cache,id=pip,sharing=private,mode=0700,uid=1,gid=2 \
         --mount=type=tmpfs,target=/tmp,size=1g \
         --mount=type=secret,id=npm,target=/n,required,mode=0440,uid=3,gid=4 \
         --mount=type=secret,id=tok,env=TOKEN \
         --mount=type=ssh,id=gh,required x",
    );
    assert_eq!(m.len(), 6);
    assert_eq!(
        m[0],
        Mount {
            kind: MountKind::Bind,
            target: Some("/in".into()),
            source: Some("/out".into()),
            from: Some("build".into()),
            read_only: true,
            id: None,
            sharing: None,
            mode: None,
            uid: None,
            gid: None,
            required: false,
            env: None,
            size: None,
        }
    );
    assert_eq!(m[1].kind, MountKind::Cache);
    assert_eq!(m[1].id.as_deref(), Some("pip"));
    assert_eq!(m[1].sharing, Some(Sharing::Private));
    assert_eq!(
        (m[1].mode, m[1].uid, m[1].gid),
        (Some(0o700), Some(1), Some(2))
    );
    assert!(!m[1].read_only);
    assert_eq!(m[2].kind, MountKind::Tmpfs);
    assert_eq!(m[2].size, Some(1 << 30));
    assert!(!m[2].read_only);
    assert_eq!(m[3].kind, MountKind::Secret);
    assert_eq!(m[3].target.as_deref(), Some("/n"));
    assert!(m[3].required && m[3].read_only);
    assert_eq!(
        (m[3].mode, m[3].uid, m[3].gid),
        (Some(0o440), Some(3), Some(4))
    );
    assert_eq!(m[4].env.as_deref(), Some("TOKEN"));
    assert_eq!(m[4].target, None);
    assert_eq!(m[5].kind, MountKind::Ssh);
    assert_eq!(m[5].id.as_deref(), Some("gh"));
    assert_eq!(m[5].target.as_deref(), Some("/run/buildkit/ssh_agent.0"));
    assert!(m[5].required);
}

#[test]
fn run_mount_defaults_and_aliases() {
    let m = mounts("RUN --mount=target=/src x");
    assert_eq!(m[0].kind, MountKind::Bind);
    assert!(m[0].read_only);
    let m = mounts("RUN --mount=type=bind,src=a,dst=/b,rw x");
    assert_eq!(
        (m[0].source.as_deref(), m[0].target.as_deref()),
        (Some("a"), Some("/b"))
    );
    assert!(!m[0].read_only);
    let m = mounts("RUN --mount=type=bind,source=a,destination=/b,readwrite x");
    assert!(!m[0].read_only);
    let m = mounts("RUN --mount=type=cache,target=/c/ x");
    assert_eq!(m[0].id.as_deref(), Some("/c"));
    assert_eq!(m[0].sharing, Some(Sharing::Shared));
    let m = mounts("RUN --mount=type=cache,target=/c,readonly x");
    assert!(m[0].read_only);
    let m = mounts("RUN --mount=type=secret,id=aws x");
    assert_eq!(m[0].target.as_deref(), Some("/run/secrets/aws"));
    let m = mounts("RUN --mount=type=secret,source=a/b x");
    assert_eq!(m[0].id.as_deref(), Some("a/b"));
    assert_eq!(m[0].target.as_deref(), Some("/run/secrets/b"));
    let m = mounts("RUN --mount=type=secret,target=/etc/pw,ro=false x");
    assert_eq!(m[0].id.as_deref(), Some("pw"));
    assert!(!m[0].read_only);
    let m = mounts("RUN --mount=type=ssh --mount=type=ssh,id=b x");
    assert_eq!(m[0].id.as_deref(), Some("default"));
    assert_eq!(m[1].target.as_deref(), Some("/run/buildkit/ssh_agent.1"));
    let m = mounts("RUN --mount=\"type=cache,target=/a b\" x");
    assert_eq!(m[0].target.as_deref(), Some("/a b"));
}

#[test]
fn run_mount_errors() {
    let e = error("RUN --mount=type=bnd,target=/x y");
    assert_eq!(e.message, "unsupported mount type \"bnd\"");
    assert_eq!(e.position, at(1, 13));
    assert_eq!(
        e.hint.as_deref(),
        Some("did you mean bind? mount types: bind, cache, tmpfs, secret, ssh")
    );
    let e = error("RUN --mount=type=cache,tagret=/x y");
    assert_eq!(e.message, "unexpected key 'tagret' in 'tagret=/x'");
    assert_eq!(e.position, at(1, 24));
    assert!(e.hint.unwrap().starts_with("did you mean target?"));
    let e = error(
        "FROM a\nRUN --mount=type=cache,target=/x \\\n  --mount=type=cache,target=/y,sharing=no y\n",
    );
    assert_eq!(e.message, "unsupported sharing value \"no\"");
    assert_eq!(e.position, at(3, 32));
    let cases = [
        (
            "type=cache,target",
            "invalid field 'target' must be a key=value pair",
        ),
        (
            "target=/x,required",
            "unexpected key 'required' for mount type 'bind'",
        ),
        (
            "type=cache,target=/x,size=1m",
            "unexpected key 'size' for mount type 'cache'",
        ),
        (
            "type=tmpfs,target=/x,size=big",
            "invalid value for size: big",
        ),
        ("target=/x,ro=yes", "invalid value for ro: yes"),
        ("target=/x,rw=yes", "invalid value for rw: yes"),
        (
            "type=secret,id=a,required=maybe",
            "invalid value for required: maybe",
        ),
        (
            "type=cache,target=/x,mode=rwx",
            "invalid value rwx for mode",
        ),
        ("type=cache,target=/x,uid=me", "invalid value me for uid"),
        ("type=cache,target=/x,gid=-2", "invalid value -2 for gid"),
        (
            "target=/x,mode=0700",
            "mode not allowed for \"bind\" type mounts",
        ),
        (
            "type=tmpfs,target=/x,uid=1",
            "uid not allowed for \"tmpfs\" type mounts",
        ),
        (
            "type=bind,target=/x,gid=1",
            "gid not allowed for \"bind\" type mounts",
        ),
        (
            "type=tmpfs,target=/x,sharing=locked",
            "invalid cache sharing set for tmpfs mount",
        ),
        (
            "type=secret",
            "invalid secret mount. one of source, target required",
        ),
        ("type=secret,id=a,src=b", "both source and id can't be set"),
        (
            "type=secret,id=a,from=b",
            "secret mount should not have a from",
        ),
        (
            "type=secret,id=a,sharing=shared",
            "secret mount should not define sharing",
        ),
        ("type=ssh,source=x", "ssh does not support source"),
        (
            "type=bind,from=$STAGE,target=/x",
            "'from' doesn't support variable expansion, define alias stage instead",
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(message(&format!("RUN --mount={spec} x")), want, "{spec}");
    }
}

#[test]
fn run_mounts_with_variables_wait_for_expansion() {
    let r = run("RUN --mount=type=cache,target=$DIR,mode=$MODE,uid=${U} x");
    assert_eq!(r.mounts[0].target.as_deref(), Some("$DIR"));
    assert_eq!(r.mounts[0].mode, None);
    assert_eq!(
        r.mount_specs,
        strings(&["type=cache,target=$DIR,mode=$MODE,uid=${U}"])
    );
    // Checks bound to a value that holds a variable wait too.
    assert!(run("RUN --mount=type=$T,size=$S x").mounts.len() == 1);
}

// --- CMD, ENTRYPOINT ------------------------------------------------------

#[test]
fn cmd_and_entrypoint() {
    assert_eq!(
        kind("CMD echo hi"),
        Kind::Cmd(Command::Shell("echo hi".into()))
    );
    assert_eq!(
        kind("CMD [\"a\", \"b\"]"),
        Kind::Cmd(Command::Exec(strings(&["a", "b"])))
    );
    assert_eq!(kind("CMD []"), Kind::Cmd(Command::Exec(vec![])));
    // Not JSON (single quotes): shell form.
    assert_eq!(kind("CMD ['a']"), Kind::Cmd(Command::Shell("['a']".into())));
    assert_eq!(
        kind("ENTRYPOINT exec app"),
        Kind::Entrypoint(Command::Shell("exec app".into()))
    );
    assert_eq!(
        kind("ENTRYPOINT [\"app\"]"),
        Kind::Entrypoint(Command::Exec(strings(&["app"])))
    );
    assert_eq!(
        kind("ENTRYPOINT []"),
        Kind::Entrypoint(Command::Exec(vec![]))
    );
    for keyword in ["CMD", "ENTRYPOINT"] {
        let e = error(keyword);
        assert_eq!(
            e.message,
            format!("{keyword} requires at least one argument")
        );
        assert_eq!(message(&format!("{keyword} --x y")), "unknown flag: --x");
    }
}

// --- EXPOSE, VOLUME, SHELL ------------------------------------------------

#[test]
fn expose_sorts_ports() {
    assert_eq!(
        kind("EXPOSE 8080 443/tcp 53/udp $P"),
        Kind::Expose(strings(&["$P", "443/tcp", "53/udp", "8080"]))
    );
    assert_eq!(message("EXPOSE"), "EXPOSE requires at least one argument");
    assert_eq!(message("EXPOSE --x 80"), "unknown flag: --x");
}

#[test]
fn volume_forms() {
    assert_eq!(kind("VOLUME /a /b"), Kind::Volume(strings(&["/a", "/b"])));
    assert_eq!(
        kind("VOLUME [\" /a \", \"/b c\"]"),
        Kind::Volume(strings(&["/a", "/b c"]))
    );
    assert_eq!(message("VOLUME"), "VOLUME requires at least one argument");
    assert_eq!(
        message("VOLUME [\" \"]"),
        "VOLUME specified can not be an empty string"
    );
    assert_eq!(message("VOLUME --x /a"), "unknown flag: --x");
}

#[test]
fn shell_must_be_json() {
    assert_eq!(
        kind("SHELL [\"bash\", \"-exc\"]"),
        Kind::Shell(strings(&["bash", "-exc"]))
    );
    let e = error("SHELL bash -c");
    assert_eq!(e.message, "SHELL requires the arguments to be in JSON form");
    assert!(!e.hint.unwrap().contains("back-slashes"));
    let e = error("SHELL [\"c:\\windows\\cmd.exe\", \"/S\"]");
    assert_eq!(e.message, "SHELL requires the arguments to be in JSON form");
    assert!(e.hint.unwrap().contains("back-slashes"));
    assert_eq!(message("SHELL []"), "SHELL requires at least one argument");
    assert_eq!(message("SHELL"), "SHELL requires at least one argument");
    assert_eq!(message("SHELL --x [\"a\"]"), "unknown flag: --x");
}

// --- HEALTHCHECK ----------------------------------------------------------

#[test]
fn healthcheck_forms() {
    assert_eq!(
        kind("HEALTHCHECK NONE"),
        Kind::Healthcheck(Healthcheck::None)
    );
    assert_eq!(
        kind("healthcheck none"),
        Kind::Healthcheck(Healthcheck::None)
    );
    // BuildKit never parses the flags of HEALTHCHECK NONE.
    assert_eq!(
        kind("HEALTHCHECK --bogus NONE"),
        Kind::Healthcheck(Healthcheck::None)
    );
    assert_eq!(
        kind(
            "HEALTHCHECK --interval=30s --timeout=1m30s --start-period=1.5s --start-interval=2ms --retries=3 CMD curl -f http://x/ || exit 1"
        ),
        Kind::Healthcheck(Healthcheck::Check {
            test: strings(&["CMD-SHELL", "curl -f http://x/ || exit 1"]),
            interval: Some(Duration::from_secs(30)),
            timeout: Some(Duration::from_secs(90)),
            start_period: Some(Duration::from_millis(1500)),
            start_interval: Some(Duration::from_millis(2)),
            retries: Some(3),
        })
    );
    let Kind::Healthcheck(Healthcheck::Check {
        test,
        interval,
        retries,
        ..
    }) = kind("HEALTHCHECK --interval=0s --retries=0 cmd [\"/bin/check\", \"-q\"]")
    else {
        panic!()
    };
    assert_eq!(test, strings(&["CMD", "/bin/check", "-q"]));
    assert_eq!(interval, None);
    assert_eq!(retries, Some(0));
}

#[test]
fn healthcheck_errors() {
    assert_eq!(
        message("HEALTHCHECK"),
        "HEALTHCHECK requires at least one argument"
    );
    assert_eq!(
        message("HEALTHCHECK NONE x"),
        "HEALTHCHECK NONE takes no arguments"
    );
    let e = error("HEALTHCHECK PING x");
    assert_eq!(e.message, "unknown type \"PING\" in HEALTHCHECK (try CMD)");
    assert_eq!(e.position, at(1, 13));
    assert_eq!(
        message("HEALTHCHECK CMD"),
        "missing command after HEALTHCHECK CMD"
    );
    assert_eq!(
        message("HEALTHCHECK CMD []"),
        "missing command after HEALTHCHECK CMD"
    );
    let e = error("HEALTHCHECK --interval=500us CMD x");
    assert_eq!(e.message, "interval \"interval\" cannot be less than 1ms");
    assert_eq!(e.position, at(1, 13));
    assert_eq!(
        message("HEALTHCHECK --timeout=-1s CMD x"),
        "interval \"timeout\" cannot be less than 1ms"
    );
    assert_eq!(
        message("HEALTHCHECK --timeout=5 CMD x"),
        "missing unit in duration \"5\" for --timeout"
    );
    assert_eq!(
        message("HEALTHCHECK --start-period=1d CMD x"),
        "unknown unit \"d\" in duration \"1d\" for --start-period"
    );
    assert_eq!(
        message("HEALTHCHECK --start-interval=x CMD x"),
        "invalid duration \"x\" for --start-interval"
    );
    assert_eq!(
        message("HEALTHCHECK --retries=-1 CMD x"),
        "--retries cannot be negative (-1)"
    );
    assert_eq!(
        message("HEALTHCHECK --retries=two CMD x"),
        "invalid --retries value \"two\": expected a whole number"
    );
    assert_eq!(
        message("HEALTHCHECK --retries=2147483648 CMD x"),
        "invalid --retries value \"2147483648\": value out of range"
    );
    let e = error("HEALTHCHECK --intervl=1s CMD x");
    assert_eq!(e.message, "unknown flag: --intervl");
    assert!(e.hint.unwrap().starts_with("did you mean --interval?"));
    // Flags come before the type check, as in BuildKit.
    assert_eq!(message("HEALTHCHECK --x PING"), "unknown flag: --x");
}

// --- ONBUILD --------------------------------------------------------------

#[test]
fn onbuild_triggers() {
    let i = typed("FROM a\nONBUILD RUN echo hi\n");
    let Kind::Onbuild(o) = &i.kind else { panic!() };
    assert_eq!(o.expression, "RUN echo hi");
    assert_eq!(
        o.trigger.kind,
        Kind::Run(Run {
            command: Command::Shell("echo hi".into()),
            heredocs: vec![],
            mounts: vec![],
            network: None,
            security: None,
            mount_specs: vec![],
        })
    );
    assert_eq!(o.trigger.start, at(2, 9));
    assert_eq!(o.trigger.original, "RUN echo hi");
    let Kind::Onbuild(o) = kind("  onbuild   add --chown=1 a b") else {
        panic!()
    };
    assert_eq!(o.expression, "add --chown=1 a b");
    assert_eq!(o.trigger.keyword(), "ADD");
    let Kind::Onbuild(o) = kind("ONBUILD COPY <<EOF /x\nhello\nEOF\n") else {
        panic!()
    };
    assert_eq!(o.expression, "COPY <<EOF /x\nhello\nEOF");
    let Kind::Copy(c) = &o.trigger.kind else {
        panic!()
    };
    assert_eq!(c.args.heredocs[0].content, "hello\n");
}

#[test]
fn onbuild_errors() {
    assert_eq!(message("ONBUILD"), "ONBUILD requires at least one argument");
    let e = error("ONBUILD ONBUILD RUN x");
    assert_eq!(
        e.message,
        "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(e.position, at(1, 9));
    assert_eq!(
        message("ONBUILD FROM a"),
        "FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        message("ONBUILD maintainer me"),
        "MAINTAINER isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(message("ONBUILD --x RUN y"), "unknown flag: --x");
    let e = error("ONBUILD  RUNN x");
    assert_eq!(e.message, "unknown instruction: RUNN");
    assert_eq!(e.position, at(1, 10));
    assert_eq!(e.hint.as_deref(), Some("did you mean RUN?"));
    let e = error("ONBUILD COPY a");
    assert!(e.message.contains("at least two arguments"));
    assert_eq!(e.position, at(1, 9));
}

// --- unknown instructions, whole files ------------------------------------

#[test]
fn unknown_instructions_suggest() {
    let e = error("FROM a\n  RUNN x\n");
    assert_eq!(e.message, "unknown instruction: RUNN");
    assert_eq!(e.position, at(2, 3));
    assert_eq!(e.hint.as_deref(), Some("did you mean RUN?"));
    assert_eq!(error("runn x").hint.as_deref(), Some("did you mean run?"));
    assert_eq!(error("FORM a").hint.as_deref(), Some("did you mean FROM?"));
    assert_eq!(
        error("Copyy a b").hint.as_deref(),
        Some("did you mean copy?")
    );
    assert_eq!(error("FOOBAR x").hint, None);
    assert_eq!(message("FOOBAR x"), "unknown instruction: FOOBAR");
}

#[test]
fn parse_reports_every_bad_instruction() {
    let text = "FROM a AS 1\nRUNN x\nCOPY a\nRUN ok\nWORKDIR\nUSER me\n";
    let parsed = parser::parse(text).unwrap();
    let (instructions, errors) = parse(&parsed);
    let keywords: Vec<&str> = instructions.iter().map(Instruction::keyword).collect();
    assert_eq!(keywords, ["RUN", "USER"]);
    let lines: Vec<usize> = errors.iter().map(|e| e.position.line).collect();
    assert_eq!(lines, [1, 2, 3, 5]);
}

#[test]
fn instruction_positions_and_original() {
    let i = typed("FROM a\n\n  COPY a \\\n   b\n");
    assert_eq!(i.start, at(3, 3));
    assert_eq!(i.end_line, 4);
    assert_eq!(i.original, "COPY a    b");
    assert_eq!(i.keyword(), "COPY");
    let i = typed("FROM a\nRUN <<EOF\nx\nEOF\n");
    assert_eq!(i.end_line, 4);
}

#[test]
fn serializes_with_a_tag() {
    let json = |text: &str| serde_json::to_value(typed(text)).unwrap();
    let v = json("FROM a\nENV A=1");
    assert_eq!(v["instruction"], "ENV");
    assert_eq!(v["pairs"][0]["key"], "A");
    assert_eq!(v["start"]["line"], 2);
    let v = json("USER app");
    assert_eq!(v["user"], "app");
    let v = json("CMD [\"a\"]");
    assert_eq!(v["instruction"], "CMD");
    assert_eq!(v["form"], "exec");
    assert_eq!(v["command"][0], "a");
    let v = json("HEALTHCHECK --interval=90s CMD x");
    assert_eq!(v["type"], "CHECK");
    assert_eq!(v["interval"], "1m30s");
    assert_eq!(v["timeout"], serde_json::Value::Null);
    assert_eq!(json("HEALTHCHECK NONE")["type"], "NONE");
    let v = json("RUN --mount=type=cache,target=/c --network=none x");
    assert_eq!(v["mounts"][0]["type"], "cache");
    assert_eq!(v["mounts"][0]["sharing"], "shared");
    assert_eq!(v["network"], "none");
    let v = json("COPY --from=b a /c");
    assert_eq!(v["from"], "b");
    assert_eq!(v["dest"], "/c");
    let v = json("ONBUILD STOPSIGNAL 9");
    assert_eq!(v["trigger"]["signal"], "9");
    for text in [
        "EXPOSE 80",
        "VOLUME /v",
        "SHELL [\"sh\"]",
        "MAINTAINER me",
        "WORKDIR /w",
        "LABEL a=b",
        "ARG a",
        "ADD a b",
    ] {
        assert!(json(text).is_object(), "{text}");
    }
}

/// Random Dockerfile-shaped text: nothing panics, whatever parses can be
/// typed, expanded and displayed.
#[test]
fn large_instructions_stay_fast() {
    let sources: Vec<String> = (0..5000).map(|i| format!("src{i}")).collect();
    let flags = "--exclude=x ".repeat(2000);
    let text = format!("FROM a\nCOPY {flags}{} /dst\n", sources.join(" "));
    let started = std::time::Instant::now();
    let a = copy_args(&text);
    assert_eq!(a.sources.len(), 5000);
    assert_eq!(a.exclude.len(), 2000);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn never_panics() {
    const PIECES: &[&str] = &[
        "FROM",
        "RUN",
        "COPY",
        "ADD",
        "ONBUILD",
        "HEALTHCHECK",
        "ENV",
        "ARG",
        "EXPOSE",
        "VOLUME",
        "SHELL",
        "CMD",
        "LABEL",
        "USER",
        "WORKDIR",
        "STOPSIGNAL",
        "MAINTAINER",
        "ENTRYPOINT",
        "NONE",
        "AS",
        "--mount=",
        "type=",
        "cache",
        "secret",
        "ssh",
        "tmpfs",
        "bind",
        ",",
        "=",
        "target=",
        "id=",
        "mode=",
        "size=",
        "required",
        "ro",
        "--from=",
        "--chown=",
        "--chmod=",
        "--link",
        "--interval=",
        "--retries=",
        "--network=",
        "--security=",
        "--platform=",
        "$",
        "${",
        "}",
        "\"",
        "'",
        "[",
        "]",
        "\\",
        "<<",
        "EOF",
        "<<-",
        "\n",
        "\t",
        " ",
        " ",
        "a",
        "1",
        "0s",
        "-",
        "é",
        "μs",
        "/",
        ":",
        "#",
        "`",
        "1.5",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let lex = Lex::new('\\');
    let env: Vec<(String, String)> = vec![("a".into(), "x y".into())];
    for _ in 0..3000 {
        let len = usize::try_from(next() % 40).unwrap();
        let mut text = String::new();
        for _ in 0..len {
            let index = usize::try_from(next() % PIECES.len() as u64).unwrap();
            text.push_str(PIECES[index]);
            if next() % 3 == 0 {
                text.push(' ');
            }
        }
        let Ok(parsed) = parser::parse(&text) else {
            continue;
        };
        let (instructions, _) = parse(&parsed);
        for mut instruction in instructions {
            let _ = instruction.display();
            let _ = instruction.expand(&|w| lex.process_word(w, &env));
            let _ = instruction.display();
            let _ = serde_json::to_string(&instruction);
        }
    }
}
