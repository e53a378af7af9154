//! RUN on the busybox base, end to end: `executor build` against the real
//! registry, the pushed image read back with skopeo and umoci (files,
//! owners, inodes) and blob by blob (layer entries, PAX records, leaks).
//!
//! Covered: users and groups, WORKDIR, ENV and ARG in RUN, SHELL, exec
//! form, heredocs (plain and `#!`), a failing RUN (message, exit status,
//! nothing pushed), deletions from a lower layer, a replaced directory
//! (opaque), hard links, symlinks, every `RUN --mount` type, `--network=none`,
//! `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` kept out of layers,
//! `--snapshot-mode=full` against overlay, `--single-snapshot`,
//! `--ignore-path`, and no process, mount or scratch directory left after
//! success, failure and SIGTERM.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use executor_e2e::{
    Leftovers, Project, Registry, RegistryKind, pull_image, raw_manifest, tree, unpack,
};
use sha2::{Digest as _, Sha256};

/// A registry with the busybox base pushed; the base's reference.
fn bed() -> (Registry, String) {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    (registry, base)
}

/// Builds `project` (with `args`) and pushes it as `run/NAME:1`; returns
/// (reference, executor's stderr).
fn push(registry: &Registry, project: &Project, name: &str, args: &[&str]) -> (String, String) {
    let reference = registry.reference(&format!("run/{name}:1"));
    let mut all = vec!["-d", &reference, "--insecure-registry", &registry.host];
    all.extend_from_slice(args);
    let stderr = project.ok(&all);
    (reference, stderr)
}

/// Builds, pushes and unpacks `project` into `unpacked-NAME` of its temp
/// dir; returns the rootfs.
fn build_unpacked(registry: &Registry, project: &Project, name: &str, args: &[&str]) -> PathBuf {
    let (reference, _) = push(registry, project, name, args);
    unpack(
        registry,
        &reference,
        &project.path(&format!("unpacked-{name}")),
    )
}

fn read(rootfs: &Path, path: &str) -> String {
    fs::read_to_string(rootfs.join(path)).unwrap_or_else(|e| panic!("/{path} in the image: {e}"))
}

/// A number no other test of this run uses, to put in a command line and
/// find its processes by.
fn unique() -> u64 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seconds = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let n = u64::from(std::process::id()) * 100 + u64::from(NEXT.fetch_add(1, Ordering::Relaxed));
    // Nine digits: a valid `sleep` argument and unlikely anywhere else.
    100_000_000 + (n * 1000 + seconds % 1000) % 800_000_000
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The gids `id -G` printed.
fn gids(line: &str) -> BTreeSet<u32> {
    line.split_whitespace()
        .map(|g| g.parse().unwrap_or_else(|_| panic!("a gid in {line:?}")))
        .collect()
}

#[test]
fn run_as_users_uids_and_groups() {
    let (registry, base) = bed();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN echo 'app:x:1000:1000:app:/home/app:/bin/sh' >> /etc/passwd \\\n\
              && echo 'app:x:1000:' >> /etc/group \\\n\
              && echo 'extra:x:2000:app' >> /etc/group \\\n\
              && echo 'more:x:2001:nobody,app' >> /etc/group \\\n\
              && mkdir -m 1777 /out\n\
             USER app\n\
             RUN id > /out/name.id && id -G > /out/name.groups && touch /out/name.owned\n\
             USER 1000\n\
             RUN id > /out/uid.id && id -G > /out/uid.groups\n\
             USER 1000:2000\n\
             RUN id > /out/uidgid.id && id -G > /out/uidgid.groups && touch /out/uidgid.owned\n\
             USER nobody:extra\n\
             RUN id > /out/names.id && id -G > /out/names.groups\n\
             USER 4321:4322\n\
             RUN id -u > /out/unknown.uid && id -g > /out/unknown.gid\n\
             USER root\n\
             RUN id > /out/root.id\n"
        ),
        &[],
    );
    let rootfs = build_unpacked(&registry, &project, "users", &[]);

    // A name: uid and gid from /etc/passwd, the groups that list it.
    let id = read(&rootfs, "out/name.id");
    assert!(id.starts_with("uid=1000(app) gid=1000(app)"), "{id}");
    let groups = gids(&read(&rootfs, "out/name.groups"));
    assert!(
        groups.contains(&2000) && groups.contains(&2001),
        "{groups:?}"
    );
    assert!(groups.is_subset(&[1000, 2000, 2001].into()), "{groups:?}");
    let owned = fs::metadata(rootfs.join("out/name.owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1000, 1000));

    // A uid alone: resolved through /etc/passwd like the name.
    let id = read(&rootfs, "out/uid.id");
    assert!(id.starts_with("uid=1000(app) gid=1000(app)"), "{id}");
    let groups = gids(&read(&rootfs, "out/uid.groups"));
    assert!(
        groups.contains(&2000) && groups.contains(&2001),
        "{groups:?}"
    );

    // uid:gid: exactly those, no supplementary groups looked up.
    let id = read(&rootfs, "out/uidgid.id");
    assert!(id.starts_with("uid=1000(app) gid=2000(extra)"), "{id}");
    let groups = gids(&read(&rootfs, "out/uidgid.groups"));
    assert!(groups.is_subset(&[2000].into()), "{groups:?}");
    let owned = fs::metadata(rootfs.join("out/uidgid.owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1000, 2000));

    // name:group.
    let id = read(&rootfs, "out/names.id");
    assert!(id.starts_with("uid=65534(nobody) gid=2000(extra)"), "{id}");

    // Ids that no file names are used as they are.
    assert_eq!(read(&rootfs, "out/unknown.uid"), "4321\n");
    assert_eq!(read(&rootfs, "out/unknown.gid"), "4322\n");

    let id = read(&rootfs, "out/root.id");
    assert!(id.starts_with("uid=0(root) gid=0(root)"), "{id}");
}

#[test]
fn workdir_env_arg_shell_exec_form_and_streamed_output() {
    let (registry, base) = bed();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             ARG GREETING=hello\n\
             ARG UNUSED_DEFAULT=kept\n\
             ENV TARGET=world\n\
             WORKDIR /made/by/workdir\n\
             RUN pwd > /pwd.txt && echo \"$GREETING $TARGET $UNUSED_DEFAULT\" > /env.txt\n\
             RUN echo relative > here.txt && cat here.txt > /relative.txt\n\
             RUN cd / && rm -rf /made/by\n\
             RUN pwd > /pwd-again.txt\n\
             RUN echo output-line-for-the-log && echo error-line-for-the-log >&2\n\
             RUN [\"cp\", \"/env.txt\", \"/exec-form.txt\"]\n\
             RUN [\"/bin/sh\", \"-c\", \"echo $TARGET from exec > /exec-shell.txt\"]\n\
             RUN [\"/bin/echo\", \"$TARGET\"]\n\
             RUN printf '#!/bin/sh\\necho \"$@\" > /shell-args.txt\\nexec /bin/sh \"$@\"\\n' > /bin/myshell \\\n\
              && chmod 755 /bin/myshell\n\
             SHELL [\"/bin/myshell\", \"-c\"]\n\
             RUN echo through-myshell > /via-shell.txt\n"
        ),
        &[],
    );
    let (reference, stderr) = push(
        &registry,
        &project,
        "workdir",
        &["--build-arg", "GREETING=hi", "--isolation=namespace"],
    );
    let rootfs = unpack(&registry, &reference, &project.path("unpacked"));

    assert!(
        fs::metadata(rootfs.join("made/by/workdir"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(read(&rootfs, "pwd.txt"), "/made/by/workdir\n");
    assert_eq!(read(&rootfs, "relative.txt"), "relative\n");
    // A RUN whose WORKDIR a previous RUN removed gets it made again.
    assert_eq!(read(&rootfs, "pwd-again.txt"), "/made/by/workdir\n");
    assert!(!rootfs.join("made/by/workdir/here.txt").exists());
    // ENV, ARG (overridden and default) in the environment of RUN.
    assert_eq!(read(&rootfs, "env.txt"), "hi world kept\n");
    // ARG does not reach the image config.
    let config = registry.raw_config(&reference);
    let env = config["config"]["Env"].to_string();
    assert!(!env.contains("GREETING"), "{env}");
    assert!(env.contains("TARGET=world"), "{env}");
    // Exec form: no shell, argv[0] looked up in PATH, no expansion.
    assert_eq!(read(&rootfs, "exec-form.txt"), "hi world kept\n");
    assert_eq!(read(&rootfs, "exec-shell.txt"), "world from exec\n");
    // SHELL: the shell form goes to the new shell as its last argument.
    assert_eq!(
        read(&rootfs, "shell-args.txt"),
        "-c echo through-myshell > /via-shell.txt\n"
    );
    assert_eq!(read(&rootfs, "via-shell.txt"), "through-myshell\n");
    // RUN's stdout and stderr reach executor's log.
    assert!(stderr.contains("output-line-for-the-log"), "{stderr}");
    assert!(stderr.contains("error-line-for-the-log"), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.trim_end().ends_with("$TARGET")),
        "exec form prints $TARGET unexpanded: {stderr}"
    );
}

#[test]
fn heredocs_plain_with_a_command_and_with_a_shebang() {
    let (registry, base) = bed();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             ENV TARGET=world\n\
             RUN <<EOF\n\
             echo first > /plain.txt\n\
             echo \"second $TARGET\" >> /plain.txt\n\
             EOF\n\
             RUN cat <<EOF > /with-command.txt\n\
             hello $TARGET\n\
             EOF\n\
             RUN <<EOF\n\
             #!/bin/awk -f\n\
             BEGIN {{ print \"awk ran\" > \"/shebang.txt\" }}\n\
             EOF\n\
             RUN <<'SCRIPT'\n\
             #!/bin/sh\n\
             echo \"$0 $TARGET\" > /shebang-sh.txt\n\
             SCRIPT\n"
        ),
        &[],
    );
    let rootfs = build_unpacked(&registry, &project, "heredoc", &[]);
    assert_eq!(read(&rootfs, "plain.txt"), "first\nsecond world\n");
    assert_eq!(read(&rootfs, "with-command.txt"), "hello world\n");
    // The `#!` line names the interpreter, as with Docker.
    assert_eq!(read(&rootfs, "shebang.txt"), "awk ran\n");
    let sh = read(&rootfs, "shebang-sh.txt");
    assert!(sh.ends_with(" world\n"), "{sh}");
    // The script file run through its `#!` line is not left in the image.
    let script = sh.split(' ').next().unwrap_or_default();
    if let Some(relative) = script.strip_prefix('/') {
        assert!(
            fs::symlink_metadata(rootfs.join(relative)).is_err(),
            "the heredoc's script {script} is in the image"
        );
    }
}

#[test]
fn failing_run_names_the_step_and_status_and_pushes_nothing() {
    let (registry, base) = bed();
    let marker = unique();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN echo before-the-failure\n\
             RUN echo to-stderr-{marker} >&2; sh -c 'sleep {marker}' >/dev/null 2>&1 & exit 3\n\
             RUN echo never-runs-{marker}\n"
        ),
        &[],
    );
    let leftovers = Leftovers::before(&project.cache()).owning(project.dir.path());
    let reference = registry.reference("run/fails:1");
    let stderr = project.fails(&["-d", &reference, "--insecure-registry", &registry.host]);
    // The step, then its cause, each once.
    assert!(
        stderr.contains("error: Dockerfile:3: RUN failed\n  caused by: "),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("exited with status 3").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("exit 3"), "the command is named: {stderr}");
    assert!(stderr.contains(&format!("to-stderr-{marker}")), "{stderr}");
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains(&format!("never-runs-{marker}")) && !l.contains("echo")),
        "the step after the failure ran: {stderr}"
    );
    assert!(registry.tags("run/fails").is_empty());
    // The background process the failed RUN started is gone too.
    leftovers.assert_none(&format!("sleep {marker}"));

    // Exec form, a missing program: still exit 1, naming it.
    project.write(
        "Missing.Dockerfile",
        format!("FROM {base}\nRUN [\"/no/such/program\"]\n"),
    );
    let stderr = project.fails(&[
        "-f",
        "Missing.Dockerfile",
        "--no-push",
        "--insecure-registry",
        &registry.host,
    ]);
    assert!(
        stderr.contains("error: Missing.Dockerfile:2: RUN failed\n  caused by: "),
        "{stderr}"
    );
    assert!(stderr.contains("/no/such/program"), "{stderr}");
    leftovers.assert_none(&format!("sleep {marker}"));
}

#[test]
fn no_leftovers_after_success() {
    let (registry, base) = bed();
    let marker = unique();
    // A RUN that leaves a process running in the background: the build
    // ends the whole process tree when the RUN's main process exits.
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN --mount=type=tmpfs,target=/scratch sh -c 'sleep {marker}' >/dev/null 2>&1 & echo started\n\
             RUN --mount=type=cache,target=/cache echo done-{marker}\n"
        ),
        &[],
    );
    let leftovers = Leftovers::before(&project.cache()).owning(project.dir.path());
    push(&registry, &project, "success", &[]);
    leftovers.assert_none(&format!("sleep {marker}"));
}

/// Reads `child`'s stderr on a thread, line by line.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn sigterm_stops_the_build_promptly_and_leaves_nothing() {
    let (registry, base) = bed();
    let marker = unique();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN --mount=type=tmpfs,target=/scratch echo started-{marker} && sleep {marker}\n"
        ),
        &[],
    );
    let leftovers = Leftovers::before(&project.cache()).owning(project.dir.path());
    let reference = registry.reference("run/sigterm:1");
    let mut child = project
        .build(&[
            "-d",
            &reference,
            "--insecure-registry",
            &registry.host,
            "--verbosity",
            "debug",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("executor starts");
    let lines = stderr_lines(&mut child);
    // The RUN's output reaches the log while it runs.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut log = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the RUN's output did not reach the log while it ran:\n{log:#?}");
        };
        // The echo's output, not a log line quoting the command.
        let started = line.contains(&format!("started-{marker}")) && !line.contains("sleep");
        log.push(line);
        if started {
            break;
        }
    }
    // The RUN is running (its `sh` may be exec'ing `sleep`, whose command
    // line reads empty until the kernel has set it up: looked for again).
    let deadline = Instant::now() + Duration::from_secs(5);
    while executor_e2e::processes_with(&format!("sleep {marker}")).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the RUN is not running:\n{log:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .expect("SIGTERM to executor");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for executor") {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("executor still running 15 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // What executor said after the signal, for a failure below (the pipe
    // closes when it exits).
    log.extend(lines.iter());
    assert!(!status.success(), "{status}");
    assert!(registry.tags("run/sigterm").is_empty());
    if let Err(left) = leftovers.check(&format!("sleep {marker}")) {
        panic!("{left}\nexecutor's log:\n{}", log.join("\n"));
    }
}

#[test]
fn deletions_opaque_directories_hard_links_and_symlinks() {
    let (registry, base) = bed();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN mkdir -p /data/keep /data/replace/sub /data/dropdir/inner \\\n\
              && echo a > /data/gone.txt && echo b > /data/keep/stay.txt \\\n\
              && echo c > /data/replace/old.txt && echo d > /data/replace/sub/deep.txt \\\n\
              && echo e > /data/dropdir/inner/f\n\
             RUN rm /data/gone.txt /bin/vi && rm -rf /data/dropdir \\\n\
              && rm -rf /data/replace && mkdir /data/replace && echo new > /data/replace/new.txt\n\
             RUN echo linked > /data/orig && ln /data/orig /data/hard \\\n\
              && ln /data/keep/stay.txt /data/keep/stay-hard \\\n\
              && ln -s /data/orig /data/soft && ln -s ../keep/stay.txt /data/replace/rel \\\n\
              && ln -s /nonexistent /data/dangling && ln -s keep /data/dirlink\n"
        ),
        &[],
    );
    let (reference, _) = push(&registry, &project, "tree", &[]);
    let rootfs = unpack(&registry, &reference, &project.path("unpacked"));

    // Deleted in a later RUN: gone, whether from the previous RUN's layer
    // or from the base image.
    assert!(!rootfs.join("data/gone.txt").exists());
    assert!(fs::symlink_metadata(rootfs.join("bin/vi")).is_err());
    assert!(rootfs.join("bin/sh").exists(), "only vi was deleted");
    assert!(!rootfs.join("data/dropdir").exists());
    // The replaced directory holds only what the RUN put there.
    let mut replaced: Vec<String> = fs::read_dir(rootfs.join("data/replace"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    replaced.sort();
    assert_eq!(replaced, ["new.txt", "rel"]);
    assert_eq!(read(&rootfs, "data/keep/stay.txt"), "b\n");

    // Hard links: one inode, in one layer and across layers.
    let orig = fs::metadata(rootfs.join("data/orig")).unwrap();
    let hard = fs::metadata(rootfs.join("data/hard")).unwrap();
    assert_eq!(orig.ino(), hard.ino());
    assert_eq!(orig.nlink(), 2);
    let stay = fs::metadata(rootfs.join("data/keep/stay.txt")).unwrap();
    let stay_hard = fs::metadata(rootfs.join("data/keep/stay-hard")).unwrap();
    assert_eq!(stay.ino(), stay_hard.ino());

    // Symlinks keep their targets, dangling or not.
    let link = |p: &str| fs::read_link(rootfs.join(p)).unwrap().display().to_string();
    assert_eq!(link("data/soft"), "/data/orig");
    assert_eq!(link("data/replace/rel"), "../keep/stay.txt");
    assert_eq!(link("data/dangling"), "/nonexistent");
    assert_eq!(link("data/dirlink"), "keep");

    // The layers say it as OCI does: whiteouts for deletions, an opaque
    // marker for the replaced directory.
    let image = pull_image(&registry, &reference, &project.path("pulled"));
    assert_eq!(image.layers.len(), 4, "the base and three RUNs");
    let deletions = image.layer_paths(2);
    for expected in [
        "data/.wh.gone.txt",
        "bin/.wh.vi",
        "data/.wh.dropdir",
        "data/replace/.wh..wh..opq",
        "data/replace/new.txt",
    ] {
        assert!(
            deletions.iter().any(|p| p == expected),
            "{expected} in {deletions:?}"
        );
    }
    assert!(
        !deletions.iter().any(|p| p.starts_with("data/dropdir/")),
        "a deleted directory is one whiteout: {deletions:?}"
    );
}

#[test]
fn run_mount_bind_from_context_stage_and_image() {
    let (registry, base) = bed();
    let project = Project::new(
        &format!(
            "FROM {base} AS stage\n\
             RUN mkdir /built && echo from-stage > /built/artifact\n\
             FROM {base}\n\
             RUN --mount=type=bind,target=/ctx cat /ctx/input.txt > /from-context.txt\n\
             RUN --mount=type=bind,source=sub,target=/sub cat /sub/file > /from-sub.txt\n\
             RUN --mount=type=bind,source=input.txt,target=/single.txt cp /single.txt /from-file.txt\n\
             RUN --mount=type=bind,from=stage,source=/built,target=/art cp /art/artifact /from-stage.txt\n\
             RUN --mount=type=bind,from={base},source=/etc/passwd,target=/p cp /p /from-image.txt\n\
             RUN --mount=type=bind,target=/ctx (touch /ctx/new 2>/dev/null && echo writable || echo readonly) > /ro.txt\n\
             RUN --mount=type=bind,target=/ctx,rw echo changed > /ctx/input.txt && echo x > /ctx/rw-new \\\n\
              && cat /ctx/input.txt > /rw-saw.txt\n\
             RUN --mount=type=bind,target=/ctx,rw (cat /ctx/input.txt; ls /ctx) > /rw-after.txt\n"
        ),
        &[("input.txt", "from-context\n"), ("sub/file", "from-sub\n")],
    );
    let rootfs = build_unpacked(&registry, &project, "bind", &[]);
    assert_eq!(read(&rootfs, "from-context.txt"), "from-context\n");
    assert_eq!(read(&rootfs, "from-sub.txt"), "from-sub\n");
    assert_eq!(read(&rootfs, "from-file.txt"), "from-context\n");
    assert_eq!(read(&rootfs, "from-stage.txt"), "from-stage\n");
    assert!(read(&rootfs, "from-image.txt").starts_with("root:x:0:0:"));
    // Read-only unless rw; rw writes are seen by the RUN, then discarded.
    assert_eq!(read(&rootfs, "ro.txt"), "readonly\n");
    assert_eq!(read(&rootfs, "rw-saw.txt"), "changed\n");
    let after = read(&rootfs, "rw-after.txt");
    assert!(after.starts_with("from-context\n"), "{after}");
    assert!(!after.contains("rw-new"), "{after}");
    assert_eq!(
        fs::read_to_string(project.context().join("input.txt")).unwrap(),
        "from-context\n"
    );
    assert!(!project.context().join("rw-new").exists());
    assert!(!project.context().join("new").exists());
    // Mount points are not part of the image.
    for stub in ["ctx", "sub", "single.txt", "art", "p", "built"] {
        assert!(
            fs::symlink_metadata(rootfs.join(stub)).is_err(),
            "/{stub} left in the image"
        );
    }
}

#[test]
fn run_mount_bind_from_the_context_honours_dockerignore() {
    let (registry, base) = bed();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN --mount=type=bind,target=/ctx ls -a /ctx | sort > /listing.txt\n\
             RUN --mount=type=bind,source=sub,target=/sub ls /sub | sort > /sub-listing.txt\n"
        ),
        &[
            (".dockerignore", "*.key\nsub/private\n"),
            ("kept.txt", "kept\n"),
            ("deploy.key", "not for the build\n"),
            ("sub/public", "public\n"),
            ("sub/private", "private\n"),
        ],
    );
    let rootfs = build_unpacked(&registry, &project, "bind-ignore", &[]);
    let listing = read(&rootfs, "listing.txt");
    assert!(listing.contains("kept.txt"), "{listing}");
    assert!(listing.contains("Dockerfile"), "{listing}");
    assert!(!listing.contains("deploy.key"), "{listing}");
    assert_eq!(read(&rootfs, "sub-listing.txt"), "public\n");
}

#[test]
fn run_mount_cache_persists_between_builds_and_stays_out_of_layers() {
    let (registry, base) = bed();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN --mount=type=cache,target=/var/cache/thing,id=thing \\\n\
              echo first-build > /var/cache/thing/stamp && echo in-image > /made-with-cache.txt\n\
             RUN --mount=type=cache,target=/cache2,uid=65534,gid=65534,mode=0700 \\\n\
              stat -c '%u %g %a' /cache2 > /cache2-stat.txt && touch /cache2/owned\n\
             RUN --mount=type=cache,target=/locked,sharing=locked echo l > /locked/y\n\
             RUN --mount=type=cache,target=/private,sharing=private echo p > /private/y\n\
             RUN --mount=type=cache,target=/shared,sharing=shared echo s > /shared/y\n"
        ),
        &[],
    );
    project.write(
        "Second.Dockerfile",
        format!(
            "FROM {base}\n\
             RUN --mount=type=cache,target=/elsewhere,id=thing cat /elsewhere/stamp > /seen.txt\n\
             RUN --mount=type=cache,target=/shared,sharing=shared cat /shared/y > /shared-seen.txt\n"
        ),
    );
    let (first, _) = push(&registry, &project, "cache-first", &[]);
    let rootfs = unpack(&registry, &first, &project.path("unpacked-first"));
    assert_eq!(read(&rootfs, "made-with-cache.txt"), "in-image\n");
    assert_eq!(read(&rootfs, "cache2-stat.txt"), "65534 65534 700\n");
    // Never in a layer: no file written to a cache mount.
    let image = pull_image(&registry, &first, &project.path("pulled"));
    for i in 0..image.layers.len() {
        for path in image.layer_paths(i) {
            for cached in [
                "var/cache/thing/",
                "cache2/",
                "locked/",
                "private/",
                "shared/",
            ] {
                assert!(!path.starts_with(cached), "{path} in layer {i}");
            }
        }
    }

    // A second build on the same store sees what the first left there.
    let (second, _) = push(
        &registry,
        &project,
        "cache-second",
        &["-f", "Second.Dockerfile"],
    );
    let rootfs = unpack(&registry, &second, &project.path("unpacked-second"));
    assert_eq!(read(&rootfs, "seen.txt"), "first-build\n");
    assert_eq!(read(&rootfs, "shared-seen.txt"), "s\n");
}

#[test]
fn run_mount_tmpfs() {
    let (registry, base) = bed();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN --mount=type=tmpfs,target=/scratch,size=1048576 echo x > /scratch/f \\\n\
              && grep ' /scratch ' /proc/mounts > /scratch-mount.txt\n\
             RUN test ! -e /scratch/f && echo empty > /after.txt\n"
        ),
        &[],
    );
    let rootfs = build_unpacked(&registry, &project, "tmpfs", &[]);
    let mount = read(&rootfs, "scratch-mount.txt");
    assert_eq!(mount.split(' ').nth(2), Some("tmpfs"), "{mount}");
    assert!(mount.contains("size=1024k"), "{mount}");
    assert_eq!(read(&rootfs, "after.txt"), "empty\n");
    assert!(fs::symlink_metadata(rootfs.join("scratch")).is_err());
}

#[test]
fn run_mount_secret_from_file_and_env_never_leaks() {
    let (registry, base) = bed();
    let file_secret = format!("file-secret-{}-{}", std::process::id(), unique());
    let env_secret = format!("env-secret-{}-{}", std::process::id(), unique());
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN --mount=type=secret,id=filesecret sha256sum /run/secrets/filesecret | cut -d' ' -f1 > /file.sha \\\n\
              && stat -c '%a %u' /run/secrets/filesecret > /file.stat\n\
             RUN --mount=type=secret,id=filesecret,target=/custom/place sha256sum /custom/place | cut -d' ' -f1 > /target.sha\n\
             RUN --mount=type=secret,id=envsecret,env=MY_TOKEN printf %s \"$MY_TOKEN\" | sha256sum | cut -d' ' -f1 > /env.sha\n\
             RUN --mount=type=secret,id=envsecret sha256sum /run/secrets/envsecret | cut -d' ' -f1 > /env-file.sha\n\
             RUN --mount=type=secret,id=notgiven test ! -e /run/secrets/notgiven && echo skipped > /optional.txt\n\
             RUN echo \"MY_TOKEN=[$MY_TOKEN]\" > /env-after.txt\n"
        ),
        &[],
    );
    // The secret file lives outside the context.
    let secret_file = project.path("secret.txt");
    fs::write(&secret_file, &file_secret).unwrap();
    let reference = registry.reference("run/secret:1");
    let out = project
        .build(&[
            "-d",
            &reference,
            "--insecure-registry",
            &registry.host,
            "--secret",
            &format!("id=filesecret,src={}", secret_file.display()),
            "--secret",
            "id=envsecret,env=E2E_SECRET_TOKEN",
        ])
        .env("E2E_SECRET_TOKEN", &env_secret)
        .env("RUST_LOG", "debug")
        .output()
        .expect("executor runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rootfs = unpack(&registry, &reference, &project.path("unpacked"));
    assert_eq!(
        read(&rootfs, "file.sha").trim(),
        sha256_hex(file_secret.as_bytes())
    );
    assert_eq!(
        read(&rootfs, "target.sha").trim(),
        sha256_hex(file_secret.as_bytes())
    );
    assert_eq!(
        read(&rootfs, "env.sha").trim(),
        sha256_hex(env_secret.as_bytes())
    );
    assert_eq!(
        read(&rootfs, "env-file.sha").trim(),
        sha256_hex(env_secret.as_bytes())
    );
    assert_eq!(read(&rootfs, "file.stat"), "400 0\n");
    assert_eq!(read(&rootfs, "optional.txt"), "skipped\n");
    // The env= variable exists only for the RUN that mounts it.
    assert_eq!(read(&rootfs, "env-after.txt"), "MY_TOKEN=[]\n");
    assert!(fs::symlink_metadata(rootfs.join("run/secrets")).is_err());
    assert!(fs::symlink_metadata(rootfs.join("custom")).is_err());

    // Not in any blob the registry serves, decompressed or not, nor in the
    // log (at debug level), nor on stdout.
    let image = pull_image(&registry, &reference, &project.path("pulled"));
    for secret in [&file_secret, &env_secret] {
        for (i, blob) in image.everything().enumerate() {
            assert!(
                !blob.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the secret {secret} is in blob {i} of the pushed image"
            );
        }
        assert!(!stderr.contains(secret.as_str()), "{stderr}");
        assert!(!stdout.contains(secret.as_str()), "{stdout}");
    }
}

#[test]
fn run_mount_secret_required_but_missing_fails() {
    let (registry, base) = bed();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN --mount=type=secret,id=absent-secret,required=true cat /run/secrets/absent-secret\n"
        ),
        &[],
    );
    let reference = registry.reference("run/required:1");
    let stderr = project.fails(&["-d", &reference, "--insecure-registry", &registry.host]);
    assert!(stderr.contains("absent-secret"), "{stderr}");
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");
    assert!(registry.tags("run/required").is_empty());
}

/// `ssh-agent -D -a SOCK`, killed when dropped.
struct SshAgent {
    child: Child,
    socket: PathBuf,
}

impl SshAgent {
    fn start(socket: PathBuf) -> Self {
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent starts (the Debian package openssh-client)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent made no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, socket }
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn run_mount_ssh_forwards_the_agent() {
    let (registry, base) = bed();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /ssh-sock.txt\n\
             RUN --mount=type=ssh,target=/agent.sock test -S /agent.sock && echo reachable > /ssh-target.txt\n\
             RUN echo \"[$SSH_AUTH_SOCK]\" > /ssh-after.txt\n"
        ),
        &[],
    );
    let agent = SshAgent::start(project.path("agent.sock"));
    let reference = registry.reference("run/ssh:1");
    executor_e2e::ok(
        project
            .build(&[
                "-d",
                &reference,
                "--insecure-registry",
                &registry.host,
                "--ssh",
                "default",
            ])
            .env("SSH_AUTH_SOCK", &agent.socket),
    );
    let rootfs = unpack(&registry, &reference, &project.path("unpacked"));
    let sock = read(&rootfs, "ssh-sock.txt");
    assert!(sock.starts_with('/'), "{sock}");
    assert_eq!(read(&rootfs, "ssh-target.txt"), "reachable\n");
    assert_eq!(read(&rootfs, "ssh-after.txt"), "[]\n");
    assert!(fs::symlink_metadata(rootfs.join("agent.sock")).is_err());
    let sock_path = sock.trim().trim_start_matches('/');
    assert!(
        fs::symlink_metadata(rootfs.join(sock_path)).is_err(),
        "{sock_path} left in the image"
    );
    drop(agent);
}

/// The interface names in a `/proc/net/dev`.
fn interfaces(dev: &str) -> BTreeSet<String> {
    dev.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect()
}

#[test]
fn run_network_none_has_only_loopback() {
    let (registry, base) = bed();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN --network=none cat /proc/net/dev > /net-none.txt\n\
             RUN --network=host cat /proc/net/dev > /net-host.txt\n\
             RUN cat /proc/net/dev > /net-default.txt\n"
        ),
        &[],
    );
    let rootfs = build_unpacked(&registry, &project, "network", &[]);
    assert_eq!(
        interfaces(&read(&rootfs, "net-none.txt")),
        BTreeSet::from(["lo".to_owned()])
    );
    // Host networking by default: the interfaces of the test's machine.
    let host = interfaces(&fs::read_to_string("/proc/net/dev").unwrap());
    assert_eq!(interfaces(&read(&rootfs, "net-default.txt")), host);
    assert_eq!(interfaces(&read(&rootfs, "net-host.txt")), host);
}

#[test]
fn etc_hosts_resolv_conf_and_hostname_stay_out_of_layers() {
    let (registry, base) = bed();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN cat /etc/hosts > /hosts-seen.txt && cat /etc/resolv.conf > /resolv-seen.txt \\\n\
              && cat /etc/hostname > /hostname-seen.txt && hostname > /hostname-cmd.txt \\\n\
              && echo other > /etc/other-file\n"
        ),
        &[],
    );
    let (reference, _) = push(&registry, &project, "hosts", &[]);
    let rootfs = unpack(&registry, &reference, &project.path("unpacked"));
    let hosts = read(&rootfs, "hosts-seen.txt");
    assert!(
        hosts.contains("127.0.0.1") && hosts.contains("localhost"),
        "{hosts}"
    );
    assert_eq!(
        read(&rootfs, "hostname-seen.txt").trim(),
        read(&rootfs, "hostname-cmd.txt").trim()
    );
    assert!(!read(&rootfs, "hostname-cmd.txt").trim().is_empty());
    // The busybox base has none of them: the image must have none either.
    for file in ["etc/hosts", "etc/resolv.conf", "etc/hostname"] {
        assert!(
            fs::symlink_metadata(rootfs.join(file)).is_err(),
            "/{file} leaked into the image"
        );
    }
    assert_eq!(read(&rootfs, "etc/other-file"), "other\n");
    let image = pull_image(&registry, &reference, &project.path("pulled"));
    let last = image.layer_paths(image.layers.len() - 1);
    for path in &last {
        assert!(
            !["etc/hosts", "etc/resolv.conf", "etc/hostname"].contains(&path.as_str()),
            "{path} in the RUN's layer: {last:?}"
        );
    }
}

/// A Dockerfile that makes every kind of change a layer can hold.
fn corpus(base: &str) -> String {
    format!(
        "FROM {base}\n\
         RUN mkdir -p /c/dir/sub /c/replace/old /c/gone && echo one > /c/dir/file \\\n\
          && echo keep > /c/replace/old/f && echo x > /c/gone/x && echo m > /c/modify\n\
         RUN echo two >> /c/modify && rm -rf /c/gone /bin/vi && rm -rf /c/replace \\\n\
          && mkdir -p /c/replace/new && echo n > /c/replace/new/f\n\
         RUN ln /c/dir/file /c/dir/hard && ln -s ../dir/file /c/link && ln -s /missing /c/dangling \\\n\
          && mkfifo /c/fifo && chmod 4755 /c/dir/file && chmod 1777 /c/dir/sub \\\n\
          && chown 65534:65534 /c/dir/sub && mkdir /c/empty && touch /c/emptyfile\n\
         RUN chmod 600 /etc/passwd && touch /etc/group && echo appended >> /c/modify\n\
         WORKDIR /c/work\n\
         RUN echo last > here\n"
    )
}

#[test]
fn snapshot_mode_full_gives_the_same_tree_as_overlay() {
    let (registry, base) = bed();
    let project = Project::new(&corpus(&base), &[]);
    let overlay = build_unpacked(&registry, &project, "overlay", &["--snapshot-mode=overlay"]);
    let full = build_unpacked(&registry, &project, "full", &["--snapshot-mode=full"]);
    let (overlay_tree, full_tree) = (tree(&overlay), tree(&full));
    assert_eq!(
        overlay_tree.keys().collect::<Vec<_>>(),
        full_tree.keys().collect::<Vec<_>>()
    );
    for (path, node) in &overlay_tree {
        assert_eq!(Some(node), full_tree.get(path), "{path}");
    }
    // And the tree is the one the Dockerfile describes.
    let node = |p: &str| {
        overlay_tree
            .get(p)
            .unwrap_or_else(|| panic!("{p} missing"))
            .clone()
    };
    assert!(!overlay_tree.contains_key("c/gone"));
    assert!(!overlay_tree.contains_key("bin/vi"));
    assert!(!overlay_tree.contains_key("c/replace/old"));
    assert_eq!(node("c/dir/file").mode, 0o4755);
    assert_eq!(node("c/dir/file").nlink, Some(2));
    assert_eq!(node("c/dir/sub").mode, 0o1777);
    assert_eq!(node("c/dir/sub").uid, 65534);
    assert_eq!(node("c/fifo").kind, "fifo");
    assert_eq!(node("c/link").link.as_deref(), Some("../dir/file"));
    assert_eq!(node("etc/passwd").mode, 0o600);
    assert_eq!(read(&full, "c/modify"), "m\ntwo\nappended\n");
    assert_eq!(read(&full, "c/work/here"), "last\n");
}

#[test]
fn single_snapshot_makes_one_layer_over_the_base() {
    let (registry, base) = bed();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN echo one > /one && echo temp > /temp\n\
             COPY two /two\n\
             RUN rm /temp /bin/vi && echo three > /three\n"
        ),
        &[("two", "two\n")],
    );
    let (reference, _) = push(&registry, &project, "single", &["--single-snapshot"]);
    let manifest = raw_manifest(&registry, &reference);
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        2,
        "the base's layer and one more: {manifest}"
    );
    let rootfs = unpack(&registry, &reference, &project.path("unpacked"));
    assert_eq!(read(&rootfs, "one"), "one\n");
    assert_eq!(read(&rootfs, "two"), "two\n");
    assert_eq!(read(&rootfs, "three"), "three\n");
    assert!(!rootfs.join("temp").exists());
    assert!(fs::symlink_metadata(rootfs.join("bin/vi")).is_err());
    let image = pull_image(&registry, &reference, &project.path("pulled"));
    assert!(
        !image.layer_paths(1).iter().any(|p| p == "temp"),
        "a file made and removed during the build is in no layer"
    );
}

#[test]
fn ignore_path_is_left_out_of_layers() {
    let (registry, base) = bed();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN mkdir -p /ignored/deep /kept && echo x > /ignored/deep/f && echo k > /kept/f\n"
        ),
        &[],
    );
    let rootfs = build_unpacked(&registry, &project, "ignore", &["--ignore-path=/ignored"]);
    assert_eq!(read(&rootfs, "kept/f"), "k\n");
    assert!(!rootfs.join("ignored/deep/f").exists());
    assert!(!rootfs.join("ignored/deep").exists());
}
