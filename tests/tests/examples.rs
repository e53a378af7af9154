//! Every example under `examples/` is exercised: `examples/run.sh` (the
//! README's first command) runs end to end with this workspace's binary:
//! its own registry, the busybox base from Debian's package, hello-httpd
//! built FROM it, pushed, and checked with skopeo and umoci.

use std::path::Path;
use std::process::Command;

use executor_e2e::executor_bin;

#[test]
fn examples_run_sh_builds_pushes_and_checks_hello_httpd() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().unwrap();
    let result = Command::new("bash")
        .arg(root.join("examples/run.sh"))
        .env("EXECUTOR", executor_bin())
        .env("EXECUTOR_EXAMPLES_OUT", out.path())
        .output()
        .expect("bash runs");
    let stderr = String::from_utf8_lossy(&result.stderr);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "examples/run.sh failed:\n{stderr}\n{stdout}"
    );
    assert!(
        stderr.contains("config: ok") || stdout.contains("config: ok"),
        "{stdout}"
    );
    assert!(stderr.contains("files: ok"), "{stderr}");
    let image = std::fs::read_to_string(out.path().join("hello-httpd.image")).unwrap();
    assert!(image.contains("/examples/hello-httpd@sha256:"), "{image}");
    assert!(out.path().join("hello-httpd.tar").is_file());
}

/// Copies the files of `examples/NAME` (as the repository holds them) into
/// `dir`, a git work tree of its own.
fn copy_example(name: &str, dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", root.display()))
        .arg(dir)
        .status()
        .expect("cp runs");
    assert!(status.success());
}

/// `executor run` in `repo` with `args`; stdout and stderr, and whether it
/// succeeded.
fn executor_run(repo: &Path, store: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(executor_bin())
        .arg("run")
        .args(args)
        .arg("--cache-dir")
        .arg(store)
        .current_dir(repo)
        .output()
        .expect("executor runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The status column of `job` in a run's summary table.
fn status_of(output: &str, job: &str) -> String {
    let table = output.rsplit_once("JOB ").map_or("", |(_, table)| table);
    table
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(job)).then(|| words.next().unwrap_or_default().to_string())
        })
        .unwrap_or_else(|| panic!("no row for {job} in:\n{output}"))
}

#[test]
fn monorepo_example_builds_the_base_and_only_the_services_a_commit_changed() {
    let registry = executor_e2e::Registry::start(executor_e2e::RegistryKind::Anonymous);
    let busybox = registry.push_busybox();
    let repo = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path()).unwrap();
    copy_example("monorepo", repo.path());
    executor_e2e::git_repo(repo.path(), &[]);
    let vars = [
        "--var",
        &format!("REGISTRY={}", registry.host),
        "--var",
        &format!("BUSYBOX={busybox}"),
        "--insecure-registry",
        &registry.host,
    ];

    // The first commit has no parent to compare with: every job runs.
    let (ok, out) = executor_run(repo.path(), store.path(), &vars);
    assert!(ok, "{out}");
    for job in ["base", "api", "web", "test-api", "test-web"] {
        assert_eq!(status_of(&out, job), "succeeded", "{job}:\n{out}");
    }
    let sha = executor_e2e::git(repo.path(), &["rev-parse", "--short=8", "HEAD"]);
    for image in ["base", "api", "web"] {
        assert!(
            registry.tags(&format!("monorepo/{image}")).contains(&sha),
            "monorepo/{image}:{sha} was not pushed"
        );
    }

    // A commit that changes only the web service: api's jobs are skipped,
    // the base comes whole from the cache.
    executor_e2e::git_commit(
        repo.path(),
        &[(
            "services/web/web.sh",
            "#!/bin/sh\necho \"web on shared base $(cat /opt/shared/VERSION)\"\n# changed\n",
        )],
        "web: a change",
    );
    let (ok, out) = executor_run(repo.path(), store.path(), &vars);
    assert!(ok, "{out}");
    assert_eq!(status_of(&out, "base"), "succeeded", "{out}");
    assert_eq!(status_of(&out, "web"), "succeeded", "{out}");
    assert_eq!(status_of(&out, "test-web"), "succeeded", "{out}");
    assert_eq!(status_of(&out, "api"), "skipped:", "{out}");
    assert_eq!(status_of(&out, "test-api"), "skipped:", "{out}");
    assert!(
        out.contains("base     |  INFO built") && out.contains("0 steps executed, 2 cached"),
        "the unchanged base was not taken from the cache:\n{out}"
    );
}
