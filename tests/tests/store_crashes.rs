//! Builds killed with SIGKILL, end to end: what they leave in the local
//! store (`--cache-dir`) is cleaned up by the next build on it, secrets
//! first, and never taken for good content. Each test kills only the
//! executor it started and looks only at its own store.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use executor_e2e::{Project, Registry, RegistryKind};

/// Every path below `dir` whose file name starts with `prefix`.
fn find(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                found.push(path.clone());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path);
            }
        }
    }
    found
}

/// Waits until `ready` holds, the build still running; panics (after
/// killing it) when the build ends first.
fn wait_for(child: &mut Child, what: &str, ready: impl Fn() -> bool) {
    // Not a timing assertion: a bound on a wait for an event that comes
    // within a second or two.
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the build ended ({status}) before {what}");
        }
        assert!(Instant::now() < deadline, "no {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Mount points below `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect()
}

/// `kill -9` while a RUN has a secret mounted: the secret's plain text
/// and the build's scratch (with its overlay mounts) survive the build,
/// and the next build on the store removes them.
#[test]
fn a_killed_builds_secret_and_scratch_go_at_the_next_build() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = Project::new(
        &format!("FROM {base}\nRUN --mount=type=secret,id=token sleep 600\n"),
        &[("token.txt", "plain-text-token")],
    );
    let store = project.cache();
    let token = project.context().join("token.txt");
    let secret_arg = format!("id=token,src={}", token.display());
    let mut child = project
        .build(&[
            "--no-push",
            "--insecure-registry",
            &registry.host,
            "--secret",
            &secret_arg,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tmp = store.join("tmp");
    wait_for(&mut child, "the secret file", || {
        !find(&tmp, "secret-").is_empty()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let secrets = find(&tmp, "secret-");
    assert_eq!(
        fs::read_to_string(&secrets[0]).unwrap(),
        "plain-text-token",
        "the secret survived the kill (what this test is about)"
    );

    let next = Project::new(&format!("FROM {base}\nRUN true\n"), &[]);
    let mut again = next.build_in(
        &store,
        &["--no-push", "--insecure-registry", &registry.host],
    );
    executor_e2e::ok(&mut again);
    assert_eq!(find(&tmp, "secret-"), Vec::<PathBuf>::new());
    assert_eq!(find(&tmp, "build-"), Vec::<PathBuf>::new());
    assert_eq!(mounts_under(&store), Vec::<String>::new());
}
