//! Messages of the command line for mistakes a user makes, through the
//! real binary: each says what is wrong with what was given.

use std::path::Path;
use std::process::{Command, Output};

fn executor(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_executor"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("EXECUTOR_VERBOSITY")
        .output()
        .expect("the executor binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The README calls `-v` global: it works before the subcommand too.
#[test]
fn verbosity_before_the_subcommand_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["-v", "debug", "schema"][..],
        &["--verbosity=warn", "schema"],
        &["-v", "debug", "--log-format", "json", "schema"],
        &["schema", "-v", "debug"],
    ] {
        let out = executor(dir.path(), args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
}

/// A pipeline file that does not exist is said to be missing, outside a
/// git repository too (not "not inside a git repository").
#[test]
fn a_missing_pipeline_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = executor(dir.path(), &["run", "nosuch.yaml"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nosuch.yaml: no pipeline file there"), "{err}");
    assert!(!err.contains("git repository"), "{err}");
}

/// `--repo` naming a path that does not exist says so (not "unsupported
/// URL protocol"), with or without `--commit`.
#[test]
fn a_missing_repo_path_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nonexistent");
    let missing = missing.to_str().unwrap();
    for args in [
        &["run", "--repo", missing, "--commit", "main"][..],
        &["run", "--repo", missing],
    ] {
        let out = executor(dir.path(), args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!("git repository {missing}: no such directory")),
            "{args:?}: {err}"
        );
        assert!(!err.contains("unsupported URL protocol"), "{err}");
    }
}

/// `--build-arg =x` has no name: refused before anything runs.
#[test]
fn a_build_arg_without_a_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["build", "--no-push", "--build-arg", "=x"][..],
        &["dockerfile", "check", "--build-arg", "="],
    ] {
        let out = executor(dir.path(), args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("has no name"), "{args:?}: {err}");
    }
}
