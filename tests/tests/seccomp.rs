//! seccomp for RUN, end to end: a RUN gets Docker's default profile (a call
//! it refuses fails with EPERM), `--security-opt seccomp=unconfined` lifts
//! it, `seccomp=PATH` replaces it with a Docker-format profile (a broken one
//! is refused before any step runs, naming the file, line and column), and
//! no_new_privs stays off unless `--security-opt no-new-privileges` asks for
//! it, so a non-root `USER` still gets what a setgid program gives. In
//! place, in a pod whose runtime set no_new_privs and a filter of its own,
//! the executor's filter is added to the runtime's. `executor run` gives its
//! script jobs the same filter and takes the same `--security-opt`.

use std::fs;
use std::path::Path;

use executor_e2e::{
    Pod, PodImage, Project, Registry, RegistryKind, executor_bin, git_repo, unpack, unpack_layout,
};

fn read(rootfs: &Path, path: &str) -> String {
    fs::read_to_string(rootfs.join(path)).unwrap_or_else(|e| panic!("/{path} in the image: {e}"))
}

/// Builds `project` with `args`, pushes it as `seccomp/NAME:1` and unpacks
/// it; returns the rootfs.
fn build(registry: &Registry, project: &Project, name: &str, args: &[&str]) -> std::path::PathBuf {
    let reference = registry.reference(&format!("seccomp/{name}:1"));
    let mut all = vec!["-d", &reference, "--insecure-registry", &registry.host];
    all.extend_from_slice(args);
    project.ok(&all);
    unpack(
        registry,
        &reference,
        &project.path(&format!("unpacked-{name}")),
    )
}

/// The value of `field` in a `/proc/PID/status` text.
fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {status:?}"))
        .trim()
        .to_owned()
}

/// What the RUN of [`probe`] records: its seccomp mode and no_new_privs,
/// and what `unshare -U` (unshare(CLONE_NEWUSER), refused by the default
/// profile without CAP_SYS_ADMIN) said.
fn probe(base: &str) -> Project {
    Project::new(
        &format!(
            "FROM {base}\n\
             RUN cat /proc/self/status > /status; \
                 if unshare -U true 2>/unshare.err; then echo allowed > /unshare; else echo refused > /unshare; fi\n"
        ),
        &[],
    )
}

#[test]
fn a_run_calling_what_the_default_profile_refuses_gets_eperm() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = probe(&base);
    let rootfs = build(&registry, &project, "default", &[]);
    let status = read(&rootfs, "status");
    assert_eq!(status_field(&status, "Seccomp"), "2", "a filter: {status}");
    assert_eq!(status_field(&status, "NoNewPrivs"), "0");
    assert_eq!(read(&rootfs, "unshare"), "refused\n");
    let message = read(&rootfs, "unshare.err");
    assert!(message.contains("Operation not permitted"), "{message}");

    // The step's own failure says so too.
    let failing = Project::new(&format!("FROM {base}\nRUN unshare -U true\n"), &[]);
    let stderr = failing.fails(&["--no-push", "--insecure-registry", &registry.host]);
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
    assert!(stderr.contains("exited with status 1"), "{stderr}");
}

#[test]
fn unconfined_runs_without_the_filter() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = probe(&base);
    let rootfs = build(
        &registry,
        &project,
        "unconfined",
        &["--security-opt", "seccomp=unconfined"],
    );
    // The executor's own mode (a CI container may have a filter of its own).
    let own = fs::read_to_string("/proc/self/status").unwrap();
    let status = read(&rootfs, "status");
    assert_eq!(
        status_field(&status, "Seccomp"),
        status_field(&own, "Seccomp")
    );
    assert_eq!(
        status_field(&status, "Seccomp_filters"),
        status_field(&own, "Seccomp_filters"),
        "no filter added"
    );
    // unshare(CLONE_NEWUSER) reaches the kernel, which allows it here
    // unless the machine forbids user namespaces to this process too.
    if status_field(&own, "Seccomp") == "0" {
        assert_eq!(
            read(&rootfs, "unshare"),
            "allowed\n",
            "{}",
            read(&rootfs, "unshare.err")
        );
    }
}

#[test]
fn a_profile_file_replaces_the_default_one() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN if mkdir /made 2>/mkdir.err; then echo allowed; else echo refused; fi > /mkdir; \
                 if unshare -U true 2>/dev/null; then echo allowed; else echo refused; fi > /unshare\n"
        ),
        &[],
    );
    // Everything allowed but mkdir, which fails with EACCES.
    let profile = project.path("profile.json");
    fs::write(
        &profile,
        r#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
            ]
        }"#,
    )
    .unwrap();
    let option = format!("seccomp={}", profile.display());
    let rootfs = build(&registry, &project, "profile", &["--security-opt", &option]);
    assert_eq!(read(&rootfs, "mkdir"), "refused\n");
    assert!(
        read(&rootfs, "mkdir.err").contains("Permission denied"),
        "{}",
        read(&rootfs, "mkdir.err")
    );
    assert!(!rootfs.join("made").exists());

    // A profile that is no JSON: refused before anything runs.
    fs::write(
        &profile,
        "{\n  \"defaultAction\": \"SCMP_ACT_ERRNO\",\n  oops\n}\n",
    )
    .unwrap();
    let stderr = project.fails(&["--no-push", "--security-opt", &option]);
    assert!(
        stderr.contains(&format!("invalid seccomp profile {}", profile.display())),
        "{stderr}"
    );
    assert!(stderr.contains("line 3 column 3"), "{stderr}");
    // One the executor cannot honour: the reason.
    fs::write(&profile, r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#).unwrap();
    let stderr = project.fails(&["--no-push", "--security-opt", &option]);
    assert!(
        stderr.contains("SCMP_ACT_NOTIFY needs a listener"),
        "{stderr}"
    );
    // And an option that is none of buildah's.
    let stderr = project.fails(&["--no-push", "--security-opt", "apparmor=unconfined"]);
    assert!(
        stderr.contains("invalid --security-opt \"apparmor=unconfined\""),
        "{stderr}"
    );
}

#[test]
fn setgid_programs_work_for_a_non_root_user_unless_no_new_privileges() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_debian();
    // chage is setgid shadow: `chage -l` of one's own account reads
    // /etc/shadow, which only root and the shadow group can.
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN useradd --create-home builder\n\
             USER builder\n\
             RUN cat /proc/self/status > /home/builder/status; \
                 if chage -l builder > /home/builder/chage 2>&1; then echo ok; else echo failed; fi > /home/builder/result\n"
        ),
        &[],
    );
    let rootfs = build(&registry, &project, "setgid", &[]);
    let status = read(&rootfs, "home/builder/status");
    assert_eq!(status_field(&status, "Seccomp"), "2");
    assert_eq!(status_field(&status, "NoNewPrivs"), "0");
    assert_eq!(
        read(&rootfs, "home/builder/result"),
        "ok\n",
        "{}",
        read(&rootfs, "home/builder/chage")
    );
    assert!(read(&rootfs, "home/builder/chage").contains("Password expires"));

    let rootfs = build(
        &registry,
        &project,
        "no-new-privileges",
        &["--security-opt", "no-new-privileges"],
    );
    let status = read(&rootfs, "home/builder/status");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(status_field(&status, "Seccomp"), "2");
    assert_eq!(
        read(&rootfs, "home/builder/result"),
        "failed\n",
        "{}",
        read(&rootfs, "home/builder/chage")
    );
}

#[test]
fn in_place_in_a_pod_with_no_new_privs_the_filter_is_added_to_the_runtimes() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let image = PodImage::executor();
    let project = Project::new(
        &format!("FROM {base}\nRUN cat /proc/self/status > /status\n"),
        &[],
    );
    let pod = Pod {
        image: &image,
        overlay: true,
        volumes: vec![project.dir.path().to_path_buf()],
        env: Vec::new(),
    };
    let build = |layout: &str, extra: &[&str]| {
        let mut argv: Vec<String> = [
            "/kaniko/executor",
            "build",
            "--context",
            &project.context().display().to_string(),
            "--cache-dir",
            &project.cache().display().to_string(),
            "--no-push",
            "--destination",
            "example.test/seccomp:1",
            "--oci-layout-path",
            &project.arg(layout),
            "--insecure-registry",
            &registry.host,
        ]
        .iter()
        .map(|a| (*a).to_string())
        .collect();
        argv.extend(extra.iter().map(|a| (*a).to_string()));
        argv
    };
    let run = pod.run(&[
        build("layout-default", &[]),
        build(
            "layout-unconfined",
            &["--security-opt", "seccomp=unconfined"],
        ),
    ]);
    assert_eq!(run.statuses, [0, 0], "{}", run.stderr);
    assert!(
        run.stderr.contains("RUN steps run in place"),
        "{}",
        run.stderr
    );
    let status = |layout: &str| {
        let rootfs = unpack_layout(
            &project.path(layout),
            "example.test/seccomp:1",
            &project.path(&format!("unpacked-{layout}")),
        );
        read(&rootfs, "status")
    };
    // The runtime's filters, then ours on top of them.
    let filters =
        |status: &str| -> u32 { status_field(status, "Seccomp_filters").parse().unwrap() };
    let default = status("layout-default");
    let unconfined = status("layout-unconfined");
    assert_eq!(status_field(&default, "NoNewPrivs"), "1");
    assert!(filters(&unconfined) >= 1, "the pod's own: {unconfined}");
    assert_eq!(filters(&default), filters(&unconfined) + 1, "{default}");
}

#[test]
fn script_jobs_get_the_filter_and_executor_run_takes_security_opt() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    git_repo(
        &repo,
        &[(
            "pipeline.yaml",
            &format!(
                "version: 1\njobs:\n  probe:\n    image: {base}\n    script: [unshare -U true]\n"
            ),
        )],
    );
    let store = dir.path().join("store").display().to_string();
    let run = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(executor_bin());
        cmd.current_dir(&repo)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .args([
                "run",
                "--cache-dir",
                &store,
                "--insecure-registry",
                &registry.host,
            ])
            .args(extra);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("EXECUTOR_") {
                cmd.env_remove(name);
            }
        }
        let output = cmd.output().expect("executor runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code(), text)
    };
    let (code, text) = run(&[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("Operation not permitted"), "{text}");
    let (code, text) = run(&["--security-opt", "seccomp=unconfined"]);
    assert_eq!(code, Some(0), "{text}");
}
