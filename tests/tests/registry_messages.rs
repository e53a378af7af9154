//! What `executor build` says when a registry cannot be used: a server
//! that does not speak TLS (one error, its cause and the right flag once,
//! no retries), `--insecure` being for pushes only (as kaniko's), and push
//! credentials checked before anything is built, missing ones told from
//! refused ones.

use std::fs;

use base64::Engine as _;
use executor_e2e::{PASSWORD, Project, Registry, RegistryKind, USER};

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error:")).collect()
}

#[test]
fn a_plain_http_registry_reached_over_https_is_one_error_with_the_pull_or_push_flag() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let host = &registry.host;

    // A pull, with --insecure (pushes only, as kaniko's) and retries to spare.
    let project = Project::new(&format!("FROM {base}\n"), &[]);
    let stderr = project.fails(&["--no-push", "--insecure", "--image-download-retry", "3"]);
    assert_eq!(count(&stderr, "retrying"), 0, "{stderr}");
    assert_eq!(error_lines(&stderr).len(), 1, "{stderr}");
    assert_eq!(count(&stderr, "does not speak TLS"), 1, "{stderr}");
    assert_eq!(count(&stderr, "hint:"), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "hint: if {host} serves plain HTTP, pass --insecure-registry {host} (or --insecure-pull for every pull)"
        )),
        "{stderr}"
    );
    // The cause, once: rustls's own words.
    assert_eq!(
        count(&stderr, "caused by: received corrupt message"),
        1,
        "{stderr}"
    );

    // A push names the push flag, and is found before the build.
    let project = Project::new("FROM scratch\nCOPY f /f\n", &[("f", "x")]);
    let stderr = project.fails(&["-d", &registry.reference("app:1"), "--push-retry", "3"]);
    assert_eq!(count(&stderr, "retrying"), 0, "{stderr}");
    assert_eq!(count(&stderr, "hint:"), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "hint: if {host} serves plain HTTP, pass --insecure-registry {host} (or --insecure for every push)"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("STEP"), "nothing was built: {stderr}");

    // With the flags the hints name, both work.
    project.ok(&["-d", &registry.reference("app:1"), "--insecure"]);
    let project = Project::new(&format!("FROM {base}\n"), &[]);
    project.ok(&["--no-push", "--insecure-registry", host]);
}

#[test]
fn help_says_insecure_is_for_pushes_and_insecure_pull_for_pulls() {
    let project = Project::new("FROM scratch\n", &[]);
    let mut cmd = project.executor();
    cmd.args(["build", "--help"]);
    let out = cmd.output().expect("executor runs");
    let help = String::from_utf8_lossy(&out.stdout);
    let flag = |name: &str| -> String {
        let start = help
            .find(&format!("      --{name} "))
            .or_else(|| help.find(&format!("      --{name}\n")))
            .unwrap_or_else(|| panic!("--{name} in {help}"));
        let rest = &help[start + 8..];
        let end = rest.find("\n      --").unwrap_or(rest.len());
        rest[..end].split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let insecure = flag("insecure");
    assert!(
        insecure.contains("Push to plain-HTTP registries"),
        "{insecure}"
    );
    assert!(insecure.contains("Pushes only"), "{insecure}");
    assert!(!insecure.contains("pull from"), "{insecure}");
    let pull = flag("insecure-pull");
    assert!(pull.contains("Pulls only"), "{pull}");
    let timeout = flag("registry-timeout");
    assert!(timeout.contains("[default: 60]"), "{timeout}");
}

fn write_config(project: &Project, host: &str, user: &str, password: &str) {
    let dir = project.path("docker-config");
    fs::create_dir_all(&dir).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    fs::write(
        dir.join("config.json"),
        format!("{{\"auths\":{{\"{host}\":{{\"auth\":\"{auth}\"}}}}}}"),
    )
    .unwrap();
}

#[test]
fn push_credentials_are_checked_before_the_build() {
    let registry = Registry::start(RegistryKind::Basic);
    let host = &registry.host;
    let project = Project::new("FROM scratch\nCOPY f /f\n", &[("f", "x")]);
    let destination = registry.reference("private:1");
    let config = project.path("docker-config").join("config.json");

    // No docker config at all.
    let stderr = project.fails(&["-d", &destination, "--insecure"]);
    assert!(!stderr.contains("STEP"), "nothing was built: {stderr}");
    assert_eq!(error_lines(&stderr).len(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: checking push access to {host}/private: registry {host} asks for credentials and none for {host} were found in {}",
            config.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("hint: add them with `docker login {host}`")),
        "{stderr}"
    );

    // A config without this host: the file is named.
    write_config(&project, "other.example", USER, PASSWORD);
    let stderr = project.fails(&["-d", &destination, "--insecure"]);
    assert!(
        stderr.contains(&format!(
            "none for {host} were found in {}\n",
            config.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("(none exists)"), "{stderr}");

    // Wrong credentials: refused, as that user.
    write_config(&project, host, USER, "wrong-password");
    let stderr = project.fails(&["-d", &destination, "--insecure"]);
    assert!(!stderr.contains("STEP"), "nothing was built: {stderr}");
    assert_eq!(error_lines(&stderr).len(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "registry {host} refused the credentials for {host} as {USER} (from {})",
            config.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "hint: check the password or token of {USER} for {host}"
        )),
        "{stderr}"
    );

    // --no-push checks nothing; the right credentials push.
    project.ok(&["-d", &destination, "--insecure", "--no-push"]);
    write_config(&project, host, USER, PASSWORD);
    let stderr = project.ok(&["-d", &destination, "--insecure"]);
    assert!(stderr.contains("STEP"), "{stderr}");
    // The check cancelled its upload session; the image is complete.
    assert_eq!(
        registry.inspect_config(&destination)["rootfs"]["diff_ids"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}
