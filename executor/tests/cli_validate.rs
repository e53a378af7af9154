//! `executor validate` and `executor schema` through the real binary, as a
//! user runs them in a repository (snapshots in `snapshots/`).

use std::path::Path;
use std::process::{Command, Output};

fn executor(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_executor"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("the executor binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("its directory");
        std::fs::write(path, content).expect("the file is written");
    }
    dir
}

const VALID: &str = "version: 1
include: [ci/test.yaml]
jobs:
  image:
    stage: build
    build:
      destinations: [registry.example/app:$CI_COMMIT_SHORT_SHA]
";

const INCLUDED: &str = "jobs:
  test:
    needs: [image]
    image: {job: image}
    parallel:
      matrix:
        - PY: ['3.11', '3.12']
    script: [pytest]
";

#[test]
fn valid_pipeline_prints_its_job_count() {
    let dir = repo(&[("pipeline.yaml", VALID), ("ci/test.yaml", INCLUDED)]);
    let out = executor(dir.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "pipeline.yaml: valid (3 jobs)\n");
    assert!(out.stderr.is_empty());
}

#[test]
fn invalid_pipeline_prints_every_error_and_exits_1() {
    let broken = VALID.replace("stage: build", "stage: biuld\n    neds: [test]");
    let included = INCLUDED.replace("needs: [image]", "needs: [imag]");
    let dir = repo(&[("ci/p.yaml", &broken), ("ci/ci/test.yaml", &included)]);
    let out = executor(dir.path(), &["validate", "ci/p.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout for an invalid file"
    );
    insta::assert_snapshot!("invalid_stderr", text(&out.stderr));
}

#[test]
fn missing_pipeline_is_one_error() {
    let dir = repo(&[]);
    let out = executor(dir.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "cannot read pipeline.yaml: No such file or directory (os error 2)\n\
         pipeline.yaml: invalid (1 error)\n"
    );
}

#[test]
fn schema_prints_the_committed_json_schema() {
    let dir = repo(&[]);
    let out = executor(dir.path(), &["schema"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let committed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipeline-schema/pipeline.schema.json");
    let committed = std::fs::read_to_string(committed).expect("the committed schema");
    assert_eq!(text(&out.stdout), committed);
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(schema["title"], "pipeline.yaml");
}
