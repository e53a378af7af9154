//! Loading valid pipelines: what the runner gets from them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pipeline_schema::{
    Event, EventKind, Image, JobKind, Pipeline, RetryWhen, SecretSource, When, digest_variable,
    image_variable,
};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

fn parse(text: &str) -> Pipeline {
    Pipeline::parse("pipeline.yaml", text).unwrap_or_else(|e| panic!("{e}"))
}

fn names(p: &Pipeline) -> Vec<&str> {
    p.topological_order().map(|j| j.name.as_str()).collect()
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

#[test]
fn a_pipeline_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Pipeline>();
    send_sync::<pipeline_schema::Errors>();
}

#[test]
fn every_key_resolves() {
    let p = Pipeline::load(data("valid/full.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.files().len(), 2, "the pipeline and its include");
    assert_eq!(p.stages(), ["build", "test", "deploy"]);
    assert_eq!(
        p.variables()
            .get("PYTHONDONTWRITEBYTECODE")
            .map(String::as_str),
        Some("1"),
        "variables of an included file"
    );
    assert_eq!(p.variables()["RATIO"], "1.10", "scalars read as written");
    assert_eq!(
        names(&p),
        [
            "image",
            "test: [unit]",
            "test: [integration]",
            "lint",
            "deploy"
        ]
    );

    let image = p.job("image").unwrap();
    let JobKind::Build(build) = &image.kind else {
        panic!("image is a build job")
    };
    assert_eq!(build.target.as_deref(), Some("runtime"));
    assert_eq!(build.args["PYTHON"], "3.12");
    assert_eq!(build.destinations, ["$REGISTRY/app:$CI_COMMIT_SHORT_SHA"]);
    assert!(build.pushes());
    let cache = build.cache.as_ref().unwrap();
    assert_eq!(cache.repo, "$REGISTRY/app/cache", "through an alias");
    assert_eq!(cache.ttl, Some(Duration::from_secs(168 * 3600)));
    assert_eq!(
        build.secrets[0].source,
        SecretSource::Env("PIP_TOKEN".into())
    );
    assert!(build.reproducible);
    assert_eq!(
        image.timeout,
        Duration::from_secs(30 * 60),
        "defaults.timeout"
    );
    assert_eq!(image.retry.max, 1, "defaults.retry");
    assert_eq!(image.image_variable(), "EXECUTOR_IMAGE_IMAGE");

    let test = p.job("test: [integration]").unwrap();
    assert_eq!(test.base_name, "test");
    assert_eq!(test.stage, "test", "from the included template");
    assert_eq!(test.variables["SUITE"], "integration");
    assert_eq!(test.variables["PIP_CACHE_DIR"], ".cache/pip");
    assert_eq!(test.variables["REGISTRY"], "registry.example:5000");
    assert_eq!(test.timeout, Duration::from_secs(20 * 60), "the template's");
    let script = test.script().unwrap();
    assert_eq!(script.image, Some(Image::Job("image".into())));
    assert_eq!(script.before_script, ["pip install -r requirements.txt"]);
    assert_eq!(script.script, ["pytest tests/$SUITE"]);
    assert_eq!(script.after_script, ["echo done"]);
    assert_eq!(script.artifacts, ["reports/"]);

    let lint = p.job("lint").unwrap();
    assert_eq!(lint.needs.as_deref(), Some(&[][..]));
    assert!(lint.depends_on.is_empty());
    assert!(lint.allow_failure);
    assert_eq!(lint.timeout, Duration::from_secs(300));
    assert!(lint.retry.covers(RetryWhen::Timeout));
    assert!(!lint.retry.covers(RetryWhen::SystemFailure));
    assert_eq!(
        lint.script().unwrap().image,
        Some(Image::Reference("alpine:3.20".into()))
    );

    let deploy = p.job("deploy").unwrap();
    assert_eq!(
        deploy.depends_on,
        ["image", "test: [unit]", "test: [integration]", "lint"],
        "without needs: every job of the earlier stages"
    );
    assert_eq!(
        deploy.secrets[0].source,
        SecretSource::File("/run/secrets/deploy_key".into())
    );
}

#[test]
fn rules_decide_with_variables_and_changes() {
    let p = Pipeline::load(data("valid/full.yaml")).unwrap();
    let test = p.job("test: [unit]").unwrap();
    let src = vec!["src/app.py".to_string()];
    let docs = vec!["docs/x.md".to_string()];
    let pr = vars(&[("CI_PIPELINE_SOURCE", "pull_request")]);
    assert_eq!(test.decide(&pr, Some(&src)), When::OnSuccess);
    assert_eq!(test.decide(&pr, Some(&docs)), When::Manual, "falls through");
    assert_eq!(
        test.decide(&pr, None),
        When::OnSuccess,
        "unknown changes match"
    );
    let tag = vars(&[("CI_COMMIT_TAG", "v2.0")]);
    assert_eq!(test.decide(&tag, None), When::OnSuccess);
    let deploy = p.job("deploy").unwrap();
    let main = vars(&[("CI_COMMIT_BRANCH", "main")]);
    let other = vars(&[("CI_COMMIT_BRANCH", "feature")]);
    assert_eq!(deploy.decide(&main, None), When::OnSuccess);
    assert_eq!(deploy.decide(&other, None), When::Never);
    let lint = p.job("lint").unwrap();
    assert_eq!(lint.decide(&other, None), When::OnSuccess, "no rules");
}

#[test]
fn triggers_follow_on() {
    let p = Pipeline::load(data("valid/full.yaml")).unwrap();
    let t = p.triggers();
    let event = |kind, git_ref| Event {
        kind,
        git_ref,
        changed_paths: None,
    };
    assert!(t.matches(&event(EventKind::Push, Some("main"))));
    assert!(t.matches(&event(EventKind::Push, Some("release/2/hotfix"))));
    assert!(!t.matches(&event(EventKind::Push, Some("release/old"))));
    assert!(!t.matches(&event(EventKind::Push, Some("feature/x"))));
    assert!(t.matches(&event(EventKind::Tag, Some("v1.0"))));
    assert!(!t.matches(&event(EventKind::Tag, Some("1.0"))));
    assert!(t.matches(&event(EventKind::PullRequest, Some("anything"))));
    assert!(t.matches(&event(EventKind::Manual, None)));
    let changed = ["docs/readme.md".to_string()];
    assert!(!t.matches(&Event {
        kind: EventKind::Push,
        git_ref: Some("main"),
        changed_paths: Some(&changed),
    }));

    let no_on = parse("version: 1\njobs:\n  a:\n    script: [x]\n");
    assert!(no_on.triggers().matches(&event(EventKind::Tag, Some("x"))));
}

#[test]
fn dag_runs_needs_across_stages_and_waits_for_earlier_stages() {
    let p = parse(
        "version: 1
stages: [build, test, deploy]
jobs:
  deploy:
    stage: deploy
    script: [d]
  unit:
    stage: test
    needs: [compile]
    script: [u]
  compile:
    stage: build
    script: [c]
  docs:
    stage: build
    script: [x]
  early:
    stage: deploy
    needs: []
    script: [e]
",
    );
    // Ready jobs go by stage, then file order.
    assert_eq!(names(&p), ["compile", "docs", "unit", "deploy", "early"]);
    let dag = p.dag();
    let i = |n: &str| p.job_index(n).unwrap();
    assert_eq!(dag.dependencies(i("unit")), [i("compile")]);
    let mut deploy_deps = dag.dependencies(i("deploy")).to_vec();
    deploy_deps.sort_unstable();
    let mut expected = vec![i("unit"), i("compile"), i("docs")];
    expected.sort_unstable();
    assert_eq!(deploy_deps, expected);
    assert!(dag.dependants(i("compile")).contains(&i("unit")));
    assert!(dag.dependencies(i("early")).is_empty());
}

#[test]
fn anchors_and_merge_keys() {
    let p = parse(
        "version: 1
.defaults: &defaults
  timeout: 10m
  retry: {max: 2, when: script_failure}
  script: [echo default]
jobs:
  a:
    <<: *defaults
    timeout: 1h
  b: *defaults
",
    );
    let a = p.job("a").unwrap();
    assert_eq!(a.timeout, Duration::from_secs(3600), "own keys win");
    assert_eq!(a.retry.max, 2);
    assert_eq!(a.retry.when, [RetryWhen::ScriptFailure]);
    assert_eq!(p.job("b").unwrap().timeout, Duration::from_secs(600));
}

#[test]
fn extends_merges_deeply_and_later_parents_win() {
    let p = parse(
        "version: 1
jobs:
  .base:
    variables: {A: base, B: base}
    script: [base]
    timeout: 10m
  .other:
    variables: {B: other}
    timeout: 20m
  job:
    extends: [.base, .other]
    variables: {C: own}
  unset:
    extends: .base
    timeout: null
",
    );
    let job = p.job("job").unwrap();
    assert_eq!(
        job.variables,
        vars(&[("A", "base"), ("B", "other"), ("C", "own")])
    );
    assert_eq!(job.timeout, Duration::from_secs(1200));
    assert_eq!(job.script().unwrap().script, ["base"]);
    assert_eq!(
        p.job("unset").unwrap().timeout,
        Duration::from_secs(3600),
        "null unsets an inherited value"
    );
    assert_eq!(p.jobs().len(), 2, "templates do not run");
}

#[test]
fn defaults_and_build_outputs() {
    let p = parse(
        "version: 1
jobs:
  my-app.image:
    stage: build
    build: {}
  run:
    needs: [my-app.image]
    image: {job: my-app.image}
    script: ./run
",
    );
    let b = p.job("my-app.image").unwrap();
    let build = b.build().unwrap();
    assert_eq!(build.context, ".");
    assert_eq!(build.dockerfile, "Dockerfile");
    assert!(
        build.push && !build.pushes(),
        "no destinations: local store"
    );
    assert_eq!(b.retry.max, 0);
    assert_eq!(b.timeout, pipeline_schema::DEFAULT_TIMEOUT);
    assert_eq!(b.image_variable(), "EXECUTOR_MY_APP_IMAGE_IMAGE");
    assert_eq!(digest_variable(&b.name), "EXECUTOR_MY_APP_IMAGE_DIGEST");
    assert_eq!(image_variable("x"), "EXECUTOR_X_IMAGE");
    let run = p.job("run").unwrap();
    assert_eq!(run.stage, "test");
    assert_eq!(run.script().unwrap().script, ["./run"]);
    assert_eq!(
        run.script().unwrap().image,
        Some(Image::Job("my-app.image".into()))
    );
}

#[test]
fn matrix_instances_and_needs_on_them() {
    let p = parse(
        "version: 1
jobs:
  build:
    stage: build
    parallel:
      matrix:
        - ARCH: [amd64, arm64]
          OS: linux
        - ARCH: riscv64
    build: {platform: $OS/$ARCH}
  test:
    needs: [build]
    script: [t]
  one:
    needs: ['build: [arm64, linux]']
    image: {job: 'build: [arm64, linux]'}
    script: [t]
  riscv:
    needs: [build]
    image: {job: 'build: [riscv64]'}
    script: [t]
",
    );
    assert_eq!(
        p.job("test").unwrap().depends_on,
        [
            "build: [amd64, linux]",
            "build: [arm64, linux]",
            "build: [riscv64]"
        ]
    );
    let one = p.job("one").unwrap();
    assert_eq!(one.depends_on, ["build: [arm64, linux]"]);
    assert_eq!(
        one.script().unwrap().image,
        Some(Image::Job("build: [arm64, linux]".into()))
    );
    assert_eq!(
        p.job("riscv").unwrap().script().unwrap().image,
        Some(Image::Job("build: [riscv64]".into())),
        "an instance of a matrix job in needs"
    );
    let riscv = p.job("build: [riscv64]").unwrap();
    assert_eq!(riscv.matrix, [("ARCH".to_string(), "riscv64".to_string())]);
}

#[test]
fn script_forms_and_empty_variables() {
    let p = parse(
        "version: 1
.setup: &setup [apt-get update, apt-get install -y make]
variables:
  EMPTY: ''
jobs:
  a:
    script:
      - *setup
      - |
        make
        make test
",
    );
    let a = p.job("a").unwrap();
    assert_eq!(
        a.script().unwrap().script,
        [
            "apt-get update",
            "apt-get install -y make",
            "make\nmake test\n"
        ]
    );
    assert_eq!(a.variables["EMPTY"], "");
}
