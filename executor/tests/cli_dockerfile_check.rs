//! `executor dockerfile check` through the real binary, as a user runs it:
//! exit status, stdout and stderr (snapshots in `snapshots/`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/dockerfiles")
        .join(name)
}

fn executor(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_executor"));
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the executor binary runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(text.as_bytes())
            .expect("stdin takes the Dockerfile");
    }
    drop(child.stdin.take());
    child
        .wait_with_output()
        .expect("the executor binary finishes")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Checks a Dockerfile given on stdin; returns (status, stdout, stderr).
fn check_stdin(dockerfile: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["dockerfile", "check", "-f", "-"];
    args.extend_from_slice(extra);
    let out = executor(&args, Some(dockerfile));
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[test]
fn valid_multistage_prints_expanded_stages() {
    let file = data("multistage.Dockerfile");
    let out = executor(
        &[
            "dockerfile",
            "check",
            "-f",
            file.to_str().unwrap(),
            "--build-arg",
            "VERSION=1.37",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    insta::assert_snapshot!("multistage_text", text(&out.stdout));
}

#[test]
fn broken_dockerfile_reports_every_error_with_positions() {
    let file = "tests/data/dockerfiles/broken.Dockerfile";
    let out = executor(&["dockerfile", "check", "-f", file], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout for an invalid file"
    );
    insta::assert_snapshot!("broken_stderr", text(&out.stderr));
}

#[test]
fn json_format_is_machine_readable() {
    let file = data("multistage.Dockerfile");
    let out = executor(
        &[
            "dockerfile",
            "check",
            "-f",
            file.to_str().unwrap(),
            "--format",
            "json",
            "--target",
            "build",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(json["valid"], true);
    let report = &json["report"];
    assert_eq!(report["target"], 0);
    let stages = report["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 3);
    assert_eq!(stages[0]["base"]["value"], "busybox:1.36");
    assert_eq!(stages[0]["needed"], true);
    assert_eq!(stages[1]["needed"], false);
    assert_eq!(stages[2]["needed"], false);
    // WORKDIR $APP_HOME expanded from the ENV line above it.
    let workdir = &stages[0]["instructions"][3];
    assert_eq!(workdir["instruction"], "WORKDIR", "{workdir}");
    assert_eq!(workdir["path"], "/src/app", "{workdir}");
}

#[test]
fn json_format_lists_errors_and_exits_1() {
    let (status, stdout, _) = check_stdin("FROM a\nRUNN x\n", &["--format", "json"]);
    assert_eq!(status, 1);
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is JSON");
    assert_eq!(json["valid"], false);
    let errors = json["report"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["position"]["line"], 2);
    assert_eq!(errors[0]["position"]["column"], 1);
}

#[test]
fn parse_errors_name_file_line_and_column() {
    let cases: &[(&str, &str)] = &[
        ("FROM a\nCMD [\"a\", 1]\n", "<stdin>:2:1: "),
        (
            "FROM a\nENV onlykey\n",
            "<stdin>:2:1: ENV must have two arguments",
        ),
        (
            "FROM a\nRUN <<EOF\necho\n",
            "<stdin>:2:1: unterminated heredoc",
        ),
        (
            "# escape=x\nFROM a\n",
            "<stdin>:1:10: invalid escape token 'x'",
        ),
        (
            "# only a comment\n",
            "<stdin>:1:1: file with no instructions",
        ),
        (
            "RUN echo\nFROM a\n",
            "<stdin>:1:1: RUN instruction before the first FROM",
        ),
    ];
    for (dockerfile, expected) in cases {
        let (status, _, stderr) = check_stdin(dockerfile, &[]);
        assert_eq!(status, 1, "{dockerfile:?}");
        assert!(
            stderr.contains(expected),
            "{dockerfile:?}: expected {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn stage_graph_errors() {
    let (status, _, stderr) = check_stdin("FROM a AS x\nFROM b AS x\n", &[]);
    assert_eq!(status, 1);
    assert!(
        stderr.contains("<stdin>:2:11: duplicate stage name \"x\""),
        "{stderr}"
    );

    let (status, _, stderr) = check_stdin(
        "FROM a AS one\nCOPY --from=two /a /a\nFROM b AS two\nCOPY --from=one /b /b\n",
        &[],
    );
    assert_eq!(status, 1);
    assert!(
        stderr.contains("circular dependency between stages: one -> two -> one"),
        "{stderr}"
    );

    let (status, _, stderr) = check_stdin("FROM a\nCOPY --from=5 /a /a\n", &[]);
    assert_eq!(status, 1);
    assert!(
        stderr.contains("<stdin>:2:13: stage index 5 out of bounds"),
        "{stderr}"
    );

    let (status, _, stderr) = check_stdin("FROM a AS build\nFROM b\n", &["--target", "biuld"]);
    assert_eq!(status, 1);
    assert!(
        stderr.contains("target stage \"biuld\" could not be found"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: did you mean \"build\"?"), "{stderr}");
}

#[test]
fn unused_build_args_warn_but_pass() {
    let (status, _, stderr) = check_stdin(
        "FROM a\nARG USED\n",
        &[
            "--build-arg",
            "USED=1",
            "--build-arg",
            "UNUSED=2",
            "--build-arg",
            "HTTP_PROXY=x",
        ],
    );
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stderr.contains("build args were not consumed: [UNUSED]"),
        "{stderr}"
    );
}

#[test]
fn bare_build_arg_reads_the_environment() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_executor"));
    let out = cmd
        .args([
            "dockerfile",
            "check",
            "-f",
            "-",
            "--build-arg",
            "FROM_ENV",
            "--format",
            "json",
        ])
        .env("FROM_ENV", "from-the-env")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"FROM a\nARG FROM_ENV\nENV X=$FROM_ENV\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let env = &json["report"]["stages"][0]["env"];
    assert_eq!(env[0][1], "from-the-env", "{env}");
}

#[test]
fn global_arg_used_in_a_stage_without_redeclaring_warns() {
    let (status, _, stderr) = check_stdin("ARG V=1\nFROM a:$V\nLABEL v=$V\n", &[]);
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stderr.contains("<stdin>:3:9: warning: usage of undefined variable '$V': the global ARG V is not in scope"),
        "{stderr}"
    );
}

#[test]
fn check_directive_turns_warnings_into_errors() {
    let (status, _, stderr) = check_stdin("# check=error=true\nFROM a\nMAINTAINER me\n", &[]);
    assert_eq!(status, 1);
    assert!(
        stderr.contains("<stdin>:3:1: the MAINTAINER instruction is deprecated"),
        "{stderr}"
    );
    let (status, _, stderr) = check_stdin(
        "# check=skip=MaintainerDeprecated;error=true\nFROM a\nMAINTAINER me\n",
        &[],
    );
    assert_eq!(status, 0, "{stderr}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = executor(&["dockerfile", "check", "-f", "no/such/Dockerfile"], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: cannot read Dockerfile no/such/Dockerfile"),
        "{stderr}"
    );
}

#[test]
fn help_and_version() {
    let out = executor(&["--version"], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("executor "));
    let out = executor(&["dockerfile", "check", "--help"], None);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for flag in [
        "--file",
        "--build-arg",
        "--target",
        "--format",
        "--verbosity",
        "--log-format",
    ] {
        assert!(help.contains(flag), "{flag} missing from help:\n{help}");
    }
}
