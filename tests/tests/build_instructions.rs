//! Dockerfile instructions through the CLI against the real registry, read
//! back with `skopeo inspect --config` and `umoci unpack`: ONBUILD, SHELL,
//! HEALTHCHECK NONE, CMD/ENTRYPOINT reset rules, ARG/ENV expansion, WORKDIR
//! ownership, COPY's flags (--chown by name, --chmod, --link, --parents,
//! --exclude), wildcards and heredocs; and the errors a user sees (exit 1,
//! naming the input), with no half-pushed image left behind.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::process::Command;

use executor_e2e::{Project, Registry, RegistryKind, unpack};

fn env_has(config: &serde_json::Value, entry: &str) -> bool {
    config["config"]["Env"]
        .as_array()
        .is_some_and(|env| env.iter().any(|e| e == entry))
}

#[test]
fn onbuild_shell_healthcheck_cmd_entrypoint_and_expansion() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    // A parent image with triggers and a healthcheck, CMD and ENTRYPOINT.
    let parent = Project::new(
        &format!(
            "FROM {base}\n\
             ONBUILD COPY trigger.txt /from-trigger.txt\n\
             ONBUILD ENV TRIGGERED=yes\n\
             HEALTHCHECK --interval=5s CMD true\n\
             ENTRYPOINT [\"/bin/sh\", \"-c\"]\n\
             CMD [\"parent cmd\"]\n"
        ),
        &[],
    );
    let parent_ref = registry.reference("inst/parent:1");
    parent.ok(&["-d", &parent_ref, "--insecure-registry", &registry.host]);
    let config = registry.raw_config(&parent_ref);
    assert_eq!(config["config"]["OnBuild"].as_array().unwrap().len(), 2);

    let child = Project::new(
        &format!(
            "FROM {parent_ref}\n\
             ARG VERSION=1.2\n\
             ENV APP_HOME=/opt/app DIR=${{APP_HOME:-unset}}\n\
             ENV FULL=$APP_HOME/v${{VERSION}} ALT=${{MISSING:-fallback}} PLUS=${{VERSION:+set}}\n\
             SHELL [\"/bin/ash\", \"-eo\", \"pipefail\", \"-c\"]\n\
             HEALTHCHECK NONE\n\
             ENTRYPOINT [\"/bin/echo\"]\n\
             LABEL version=$VERSION\n"
        ),
        &[("trigger.txt", "ran the trigger\n")],
    );
    let child_ref = registry.reference("inst/child:1");
    child.ok(&["-d", &child_ref, "--insecure-registry", &registry.host]);
    let config = registry.raw_config(&child_ref);
    let c = &config["config"];
    assert!(
        c["OnBuild"].is_null() || c["OnBuild"].as_array().unwrap().is_empty(),
        "the child has no triggers: {c}"
    );
    assert!(env_has(&config, "TRIGGERED=yes"), "{c}");
    assert!(env_has(&config, "APP_HOME=/opt/app"), "{c}");
    // ENV on one line sees the values before it (not its own).
    assert!(env_has(&config, "DIR=unset"), "{c}");
    assert!(env_has(&config, "FULL=/opt/app/v1.2"), "{c}");
    assert!(env_has(&config, "ALT=fallback"), "{c}");
    assert!(env_has(&config, "PLUS=set"), "{c}");
    assert!(!env_has(&config, "VERSION=1.2"), "ARG is not ENV: {c}");
    assert_eq!(c["Labels"]["version"], "1.2");
    assert_eq!(
        c["Shell"],
        serde_json::json!(["/bin/ash", "-eo", "pipefail", "-c"])
    );
    assert_eq!(c["Healthcheck"]["Test"], serde_json::json!(["NONE"]));
    // A new ENTRYPOINT resets the inherited CMD.
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/echo"]));
    assert!(c["Cmd"].is_null(), "CMD reset by ENTRYPOINT: {c}");
    let rootfs = unpack(&registry, &child_ref, child.dir.path());
    assert_eq!(
        fs::read_to_string(rootfs.join("from-trigger.txt")).unwrap(),
        "ran the trigger\n"
    );

    // CMD alone keeps the inherited ENTRYPOINT; shell form is wrapped in
    // the SHELL of the stage.
    let cmd_only = Project::new(
        &format!("FROM {parent_ref}\nSHELL [\"/bin/ash\", \"-c\"]\nCMD echo hi\n"),
        &[("trigger.txt", "t")],
    );
    let cmd_ref = registry.reference("inst/cmd:1");
    cmd_only.ok(&["-d", &cmd_ref, "--insecure-registry", &registry.host]);
    let c = &registry.raw_config(&cmd_ref)["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], serde_json::json!(["/bin/ash", "-c", "echo hi"]));
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "true"])
    );
}

#[test]
fn workdir_and_copy_flags() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             USER nobody\n\
             WORKDIR /home/nobody/work\n\
             USER root\n\
             COPY --chown=nobody:nogroup owned.txt /owned/\n\
             COPY --chmod=0751 run.sh /bin/run.sh\n\
             COPY --link linked.txt /linked/\n\
             COPY --parents src/a/*.txt src/b/deep/file.txt /parents/\n\
             COPY --exclude=*.log --exclude=skip logs/ /logs/\n\
             COPY src/*/*.txt /wild/\n\
             COPY w?ld[0-9].conf /conf/\n\
             COPY <<EOF /heredoc/greeting\n\
             hello $HOSTNAME_UNSET-${{HOME_DIR:-/root}}\n\
             EOF\n\
             COPY <<'RAW' <<PLAIN /heredoc/\n\
             raw $NOT_EXPANDED\n\
             RAW\n\
             plain\n\
             PLAIN\n"
        ),
        &[
            ("owned.txt", "owned\n"),
            ("run.sh", "#!/bin/sh\n"),
            ("linked.txt", "linked\n"),
            ("src/a/one.txt", "1"),
            ("src/a/two.md", "2"),
            ("src/b/deep/file.txt", "deep"),
            ("src/b/three.txt", "3"),
            ("logs/keep.txt", "keep"),
            ("logs/drop.log", "drop"),
            ("logs/skip", "skip"),
            ("wild1.conf", "w1"),
            ("wild22.conf", "w22"),
        ],
    );
    let destination = registry.reference("inst/copy:1");
    project.ok(&["-d", &destination, "--insecure-registry", &registry.host]);
    let rootfs = unpack(&registry, &destination, project.dir.path());
    let meta =
        |p: &str| fs::symlink_metadata(rootfs.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));

    // WORKDIR created for USER nobody, with every directory it had to
    // create (BuildKit's MkdirAllAndChown); existing parents stay root's.
    let work = meta("home/nobody/work");
    assert_eq!((work.uid(), work.gid()), (65534, 65534));
    assert_eq!(meta("home/nobody").uid(), 65534);
    assert_eq!(meta("home").uid(), 0);
    let owned = meta("owned/owned.txt");
    assert_eq!((owned.uid(), owned.gid()), (65534, 65534));
    assert_eq!(meta("bin/run.sh").mode() & 0o7777, 0o751);
    assert_eq!(
        fs::read_to_string(rootfs.join("linked/linked.txt")).unwrap(),
        "linked\n"
    );
    // --parents keeps the source paths.
    assert!(rootfs.join("parents/src/a/one.txt").is_file());
    assert!(rootfs.join("parents/src/b/deep/file.txt").is_file());
    assert!(!rootfs.join("parents/src/a/two.md").exists());
    assert!(!rootfs.join("parents/one.txt").exists());
    // --exclude.
    assert!(rootfs.join("logs/keep.txt").is_file());
    assert!(!rootfs.join("logs/drop.log").exists());
    assert!(!rootfs.join("logs/skip").exists());
    // Wildcards.
    assert!(rootfs.join("wild/one.txt").is_file());
    assert!(rootfs.join("wild/three.txt").is_file());
    assert!(!rootfs.join("wild/two.md").exists());
    assert!(rootfs.join("conf/wild1.conf").is_file());
    assert!(!rootfs.join("conf/wild22.conf").exists());
    // Heredocs.
    assert_eq!(
        fs::read_to_string(rootfs.join("heredoc/greeting")).unwrap(),
        "hello -/root\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("heredoc/RAW")).unwrap(),
        "raw $NOT_EXPANDED\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("heredoc/PLAIN")).unwrap(),
        "plain\n"
    );
}

/// The tags of `repo` on `registry` (empty when none).
/// BuildKit's ids need no `/etc/passwd` or `/etc/group`: `root` is 0 and a
/// number is itself, in `--chown` and in the USER a WORKDIR is made for.
/// (buildah 1.28 looks `--chown=root` up and fails without the files, so
/// this is checked here rather than in the differential test.) A name is
/// still looked up, and its absence is an error naming the name.
#[test]
fn chown_to_root_by_name_needs_no_passwd() {
    // The last USER is numeric only: umoci, which unpacks the image, looks
    // a group name up.
    let project = Project::new(
        "FROM scratch\n\
         COPY --chown=root:root f /root-root\n\
         COPY --chown=root f /root-alone\n\
         COPY --chown=1000:root f /id-root\n\
         COPY --chown=root:50 f /root-id\n\
         COPY --chown=1000 f /id-alone\n\
         USER 1000:root\n\
         WORKDIR /made-for-1000\n\
         USER 1000\n",
        &[("f", "f\n")],
    );
    let layout = project.path("layout");
    project.ok(&[
        "--no-push",
        "--destination",
        "example.test/ids:1",
        "--oci-layout-path",
        layout.to_str().unwrap(),
    ]);
    let rootfs = executor_e2e::unpack_layout(&layout, "example.test/ids:1", &project.path("u"));
    for (path, owner) in [
        ("root-root", (0, 0)),
        ("root-alone", (0, 0)),
        ("id-root", (1000, 0)),
        ("root-id", (0, 50)),
        ("id-alone", (1000, 1000)),
        ("made-for-1000", (1000, 0)),
    ] {
        let meta = fs::symlink_metadata(rootfs.join(path)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), owner, "{path}");
    }

    for (line, name, file) in [
        ("COPY --chown=nobody f /x", "user nobody", "/etc/passwd"),
        ("COPY --chown=0:staff f /x", "group staff", "/etc/group"),
        ("USER app\nWORKDIR /w", "user app", "/etc/passwd"),
    ] {
        project.write("Dockerfile", format!("FROM scratch\n{line}\n"));
        let stderr = project.fails(&["--no-push"]);
        assert!(stderr.contains("Dockerfile:"), "{stderr}");
        assert!(stderr.contains(name), "{stderr}");
        assert!(
            stderr.contains(&format!("the image has no {file}")),
            "{stderr}"
        );
    }
}

fn tags(registry: &Registry, repo: &str) -> Vec<String> {
    let out = Command::new("skopeo")
        .arg("list-tags")
        .args(registry.skopeo_args(""))
        .arg(format!("docker://{}", registry.reference(repo)))
        .output()
        .unwrap();
    if !out.status.success() {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["Tags"]
        .as_array()
        .map(|t| t.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn user_errors_exit_1_and_name_the_input() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let host = registry.host.clone();
    let project = Project::new("FROM scratch\nCOPY f /f\n", &[("f", "x")]);

    // Missing Dockerfile.
    let stderr = project.fails(&["--no-push", "--dockerfile", "Missing.Dockerfile"]);
    assert!(stderr.contains("Missing.Dockerfile"), "{stderr}");
    // Bad syntax: file:line:column.
    project.write(
        "Bad.Dockerfile",
        "FROM scratch\nCOPY f /f\nCOPY --bogus=1 f /g\n",
    );
    let stderr = project.fails(&["--no-push", "-f", "Bad.Dockerfile"]);
    assert!(stderr.contains("Bad.Dockerfile:3:"), "{stderr}");
    assert!(stderr.contains("bogus"), "{stderr}");
    // Unknown target stage.
    let stderr = project.fails(&["--no-push", "--target", "nosuchstage"]);
    assert!(stderr.contains("nosuchstage"), "{stderr}");
    // A base image that is not in the registry.
    let missing = registry.reference("does/not-exist:1");
    project.write("Missing.Dockerfile", format!("FROM {missing}\n"));
    let stderr = project.fails(&[
        "--no-push",
        "-f",
        "Missing.Dockerfile",
        "--insecure-registry",
        &host,
    ]);
    assert!(stderr.contains("does/not-exist"), "{stderr}");
    // A bad --destination.
    let stderr = project.fails(&["-d", "UPPER/Case::bad"]);
    assert!(stderr.contains("UPPER/Case::bad"), "{stderr}");
    // No panic, no backtrace in any of them (fails() checks "panicked").
}

#[test]
fn failed_pushes_leave_no_manifest_with_missing_blobs() {
    let open = Registry::start(RegistryKind::Anonymous);
    let private = Registry::start(RegistryKind::Basic);
    let project = Project::new("FROM scratch\nCOPY big /big\n", &[]);
    project.write("big", vec![7u8; 3 << 20]);
    // Bad credentials for the private registry.
    let config = project.path("docker-config");
    fs::create_dir_all(&config).unwrap();
    fs::write(
        config.join("config.json"),
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{}\"}}}}}}",
            private.host,
            "ZXhlY3V0b3I6d3JvbmctcGFzcw==" // executor:wrong-pass
        ),
    )
    .unwrap();
    let refused = private.reference("private/app:1");
    let stderr = project.fails(&[
        "-d",
        &refused,
        "-d",
        &open.reference("open/app:1"),
        "--insecure",
        "--push-retry",
        "0",
    ]);
    assert!(stderr.contains(&private.host), "{stderr}");
    assert!(tags(&private, "private/app").is_empty());
    // Whatever reached the other registry is complete: every tag there
    // copies in full (skopeo fetches and verifies each blob).
    for tag in tags(&open, "open/app") {
        let out = Command::new("skopeo")
            .args(["copy", "--quiet"])
            .args(open.skopeo_args("src-"))
            .arg(format!(
                "docker://{}",
                open.reference(&format!("open/app:{tag}"))
            ))
            .arg(format!(
                "oci:{}:x",
                project.path(&format!("copy-{tag}")).display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "open/app:{tag} has missing blobs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn copy_link_ignores_what_is_below_it() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let project = Project::new(
        "FROM scratch AS base\n\
         COPY tree/ /\n\
         FROM base\n\
         COPY f /alias/plain/\n\
         COPY --link f /alias/linked/\n\
         COPY --link f /private/\n",
        &[("f", "f\n"), ("tree/real/.keep", "")],
    );
    let tree = project.context().join("tree");
    std::os::unix::fs::symlink("real", tree.join("alias")).unwrap();
    fs::create_dir(tree.join("private")).unwrap();
    fs::set_permissions(tree.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    let destination = registry.reference("inst/link:1");
    project.ok(&["-d", &destination, "--insecure-registry", &registry.host]);
    let rootfs = unpack(&registry, &destination, project.dir.path());

    // Without --link the copy goes through the image's symlink.
    assert!(rootfs.join("real/plain/f").is_file());
    // With --link the layer knows nothing of the image: `alias` is a plain
    // directory in it, which replaces the symlink when the layer is laid
    // over the base (as with BuildKit), and `private` is made 0755.
    let alias = fs::symlink_metadata(rootfs.join("alias")).unwrap();
    assert!(alias.is_dir(), "{alias:?}");
    assert!(rootfs.join("alias/linked/f").is_file());
    assert!(!rootfs.join("real/linked").exists());
    let private = fs::metadata(rootfs.join("private")).unwrap();
    assert_eq!(private.mode() & 0o7777, 0o755);
}
