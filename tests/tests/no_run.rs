//! A build without RUN steps (and without cache hits) asks nothing of the
//! sandbox and mounts nothing (issue 18): `executor build` runs under
//! `strace -f`, which records every call that makes or enters a namespace
//! and every mount call, and the record must hold none but the executor's
//! own private mount namespace, made first thing in `main` for every
//! command. COPY (`--chown` by name from the image's `/etc/passwd`, into a
//! directory reached through the image's symlink), WORKDIR and USER read
//! the stage's layers without mounting them, on a registry base and FROM
//! scratch; the images must still hold what the Dockerfile says. The same
//! build with one RUN step added must show namespaces and mounts, so the
//! trace is known to see them.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use executor_e2e::{Project, Registry, RegistryKind, ok, unpack, unpack_layout, wrapped};

/// The calls strace records: every way to make or enter a namespace, and
/// every way to mount (the new mount API included).
const TRACED: &str = "trace=clone,clone3,unshare,setns,mount,umount2,fsopen,fsconfig,fsmount,move_mount,mount_setattr,open_tree";

/// What `main` always does: its private mount namespace, and its mounts
/// made private (no mount of a build's).
fn made_by_main(call: &str) -> bool {
    call.starts_with("unshare(CLONE_NEWNS)")
        || call.starts_with("mount(NULL, \"/\", NULL, MS_REC|MS_PRIVATE, NULL)")
}

/// Whether a traced call makes or enters a namespace or mounts something
/// (a clone without a `CLONE_NEW*` flag makes a thread or a process,
/// nothing else).
fn isolates(call: &str) -> bool {
    if call.starts_with("clone(") || call.starts_with("clone3(") {
        return call.contains("CLONE_NEW");
    }
    [
        "unshare(",
        "setns(",
        "mount(",
        "umount2(",
        "fsopen(",
        "fsconfig(",
        "fsmount(",
        "move_mount(",
        "mount_setattr(",
        "open_tree(",
    ]
    .iter()
    .any(|name| call.starts_with(name))
}

/// Runs `executor build ARGS` on `project` under strace; returns the
/// namespace-making and mounting calls other than `main`'s, one line each
/// (without strace's pid prefix).
fn isolating_calls(project: &Project, args: &[&str]) -> Vec<String> {
    let trace = project.path("trace");
    let _ = fs::remove_file(&trace);
    let trace_arg = trace.display().to_string();
    ok(&mut wrapped(
        &["strace", "-f", "-qq", "-o", &trace_arg, "-e", TRACED],
        &project.build(args),
    ));
    calls(&trace)
}

fn calls(trace: &Path) -> Vec<String> {
    let text = fs::read_to_string(trace).expect("strace wrote its trace");
    text.lines()
        // "PID call(...) = result": the pid is strace's -f prefix.
        .map(|line| line.split_once(' ').map_or(line, |(_, call)| call).trim())
        .filter(|call| !call.starts_with("+++") && !call.starts_with("---"))
        .filter(|call| !made_by_main(call) && isolates(call))
        .map(str::to_owned)
        .collect()
}

/// The steps under test: WORKDIR, COPY --chown by name, a directory, a
/// COPY into `/link/` (a symlink to `opt/real` the base has), and USER
/// before a WORKDIR below the link (made owned by that user).
const STEPS: &str = "WORKDIR /app\n\
                     COPY --chown=nobody:nogroup app.txt ./\n\
                     COPY dir/ /app/dir/\n\
                     COPY app.txt /link/\n\
                     ENV GREETING=hello\n\
                     USER nobody\n\
                     WORKDIR /link/work\n";

const FILES: &[(&str, &str)] = &[
    ("app.txt", "app\n"),
    ("dir/inner.txt", "inner\n"),
    ("tree/opt/real/keep.txt", "keep\n"),
    (
        "tree/etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    ),
    ("tree/etc/group", "root:x:0:\nnogroup:x:65534:\n"),
];

/// A project with [`FILES`] and `tree/link -> opt/real`.
fn project(dockerfile: &str) -> Project {
    let project = Project::new(dockerfile, FILES);
    std::os::unix::fs::symlink("opt/real", project.context().join("tree/link")).unwrap();
    project
}

fn assert_none(found: &[String], what: &str) {
    assert!(
        found.is_empty(),
        "{what} made namespaces or mounts:\n{}",
        found.join("\n")
    );
}

/// What [`STEPS`] made, in an unpacked root.
fn assert_steps_made(rootfs: &Path) {
    let owner = |rel: &str| {
        let meta = fs::symlink_metadata(rootfs.join(rel)).unwrap();
        (meta.uid(), meta.gid())
    };
    assert_eq!(
        fs::read_to_string(rootfs.join("app/app.txt")).unwrap(),
        "app\n"
    );
    assert_eq!(owner("app/app.txt"), (65534, 65534), "--chown by name");
    assert_eq!(owner("app"), (0, 0), "WORKDIR before USER");
    assert_eq!(
        fs::read_to_string(rootfs.join("app/dir/inner.txt")).unwrap(),
        "inner\n"
    );
    assert_eq!(
        fs::read_link(rootfs.join("link")).unwrap(),
        Path::new("opt/real"),
        "the link stays a link"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("opt/real/app.txt")).unwrap(),
        "app\n",
        "COPY into /link/ lands where the link leads"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("opt/real/keep.txt")).unwrap(),
        "keep\n"
    );
    assert!(rootfs.join("opt/real/work").is_dir());
    assert_eq!(owner("opt/real/work"), (65534, 65534), "WORKDIR under USER");
}

#[test]
fn a_build_without_run_never_probes_the_sandbox_nor_mounts() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let busybox = registry.push_busybox();
    let insecure = ["--insecure-registry", registry.host.as_str()];

    // A base whose second layer has the link (and a passwd of its own over
    // busybox's): itself a build without RUN.
    let base = registry.reference("norun/linked:1");
    let linked = project(&format!("FROM {busybox}\nCOPY tree/ /\n"));
    let found = isolating_calls(&linked, &[&["-d", base.as_str()][..], &insecure].concat());
    assert_none(&found, "a COPY on a registry base");

    let image = registry.reference("norun/app:1");
    let app = project(&format!("FROM {base}\n{STEPS}"));
    let found = isolating_calls(&app, &[&["-d", image.as_str()][..], &insecure].concat());
    assert_none(&found, "COPY --chown, WORKDIR and USER on a registry base");
    let out = tempfile::tempdir().unwrap();
    let rootfs = unpack(&registry, &image, out.path());
    assert_steps_made(&rootfs);
    assert!(rootfs.join("bin/busybox").is_file(), "the base is there");

    // FROM scratch: the passwd and the link come from the stage's own
    // first COPY.
    let scratch = project(&format!("FROM scratch\nCOPY tree/ /\n{STEPS}"));
    let layout = scratch.path("layout");
    let layout_arg = layout.display().to_string();
    let found = isolating_calls(
        &scratch,
        &[
            "--no-push",
            "--destination",
            "example.test/norun:1",
            "--oci-layout-path",
            &layout_arg,
        ],
    );
    assert_none(&found, "the same FROM scratch");
    let rootfs = unpack_layout(&layout, "example.test/norun:1", &scratch.path("unpacked"));
    assert_steps_made(&rootfs);

    // With one RUN step the same trace shows the probe's namespaces and
    // the overlay's mount: it does see them.
    app.write(
        "Dockerfile",
        format!("FROM {base}\n{STEPS}USER root\nRUN echo ran > /ran\n"),
    );
    let found = isolating_calls(
        &app,
        &[
            &["--no-push", "--destination", "norun/with-run:1"][..],
            &insecure,
        ]
        .concat(),
    );
    assert!(
        found.iter().any(|c| c.contains("CLONE_NEW")),
        "no namespace seen for RUN:\n{}",
        found.join("\n")
    );
    assert!(
        found
            .iter()
            .any(|c| c.starts_with("mount(") || c.starts_with("fsmount(")),
        "no mount seen for RUN:\n{}",
        found.join("\n")
    );
}

/// `COPY --from` a stage built without a mount (its layers written
/// straight from the context, never extracted) mounts that stage then:
/// the copy gets what its layers hold.
#[test]
fn copy_from_a_stage_built_without_a_mount_gets_its_files() {
    let project = project(
        "FROM scratch AS files\n\
         COPY tree/ /\n\
         COPY app.txt /link/\n\
         FROM scratch\n\
         COPY --from=files /opt/real/ /got/\n\
         COPY --from=files /etc/passwd /got/passwd\n",
    );
    let layout = project.path("layout");
    project.ok(&[
        "--no-push",
        "--destination",
        "example.test/from:1",
        "--oci-layout-path",
        &layout.display().to_string(),
    ]);
    let rootfs = unpack_layout(&layout, "example.test/from:1", &project.path("unpacked"));
    for (rel, content) in [
        ("got/keep.txt", "keep\n"),
        ("got/app.txt", "app\n"),
        ("got/passwd", FILES[3].1),
    ] {
        assert_eq!(
            fs::read_to_string(rootfs.join(rel)).unwrap(),
            content,
            "{rel}"
        );
    }
}
