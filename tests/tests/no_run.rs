//! A build without RUN steps (and without cache hits) asks nothing of the
//! sandbox (issue 18): `executor build` runs under `strace -f`, which
//! records every call that makes a namespace, and the record must hold
//! none but the executor's own private mount namespace, made first thing
//! in `main` for every command. (It still mounts the stage's overlay of the
//! store's extracted layers, so that the base is not extracted again on
//! every build; see `Engine::mode`.) The same build with one RUN step added
//! must show the probe's namespaces, so the trace is known to see them.

use std::fs;
use std::path::Path;

use executor_e2e::{Project, Registry, RegistryKind, ok, unpack, wrapped};

/// The calls strace records: every way to make or enter a namespace.
const TRACED: &str = "trace=clone,clone3,unshare,setns";

/// What `main` always does: its private mount namespace.
fn made_by_main(call: &str) -> bool {
    call.starts_with("unshare(CLONE_NEWNS)")
}

/// Whether a traced call makes or enters a namespace (a clone without a
/// `CLONE_NEW*` flag makes a thread or a process, nothing else).
fn isolates(call: &str) -> bool {
    if call.starts_with("clone(") || call.starts_with("clone3(") {
        return call.contains("CLONE_NEW");
    }
    call.starts_with("unshare(") || call.starts_with("setns(")
}

/// Runs `executor build ARGS` on `project` under strace; returns the
/// namespace-making calls other than `main`'s, one line each (without
/// strace's pid prefix).
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

#[test]
fn a_build_without_run_never_probes_the_sandbox() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let steps = "WORKDIR /app\n\
                 COPY --chown=nobody app.txt ./\n\
                 COPY dir/ /app/dir/\n\
                 ENV GREETING=hello\n\
                 USER nobody\n";
    let project = Project::new(
        &format!("FROM {base}\n{steps}"),
        &[("app.txt", "app\n"), ("dir/inner.txt", "inner\n")],
    );
    let image = registry.reference("norun/app:1");
    let found = isolating_calls(
        &project,
        &["-d", &image, "--insecure-registry", &registry.host],
    );
    assert!(
        found.is_empty(),
        "a build without RUN made namespaces:\n{}",
        found.join("\n")
    );
    // It built what the Dockerfile says, on the base's tree.
    let out = tempfile::tempdir().unwrap();
    let rootfs = unpack(&registry, &image, out.path());
    assert_eq!(
        fs::read_to_string(rootfs.join("app/app.txt")).unwrap(),
        "app\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("app/dir/inner.txt")).unwrap(),
        "inner\n"
    );
    assert!(rootfs.join("bin/busybox").is_file(), "the base is there");

    // FROM scratch (no passwd: a numeric owner): the same.
    let scratch = Project::new(
        &format!("FROM scratch\n{}", steps.replace("nobody", "65534")),
        &[("app.txt", "app\n"), ("dir/inner.txt", "inner\n")],
    );
    let found = isolating_calls(&scratch, &["--no-push", "--destination", "norun/scratch:1"]);
    assert!(found.is_empty(), "{}", found.join("\n"));

    // With one RUN step the same trace shows the probe's namespaces: it
    // does see them.
    project.write(
        "Dockerfile",
        format!("FROM {base}\n{steps}USER root\nRUN echo ran > /ran\n"),
    );
    let found = isolating_calls(
        &project,
        &[
            "--no-push",
            "--destination",
            "norun/with-run:1",
            "--insecure-registry",
            &registry.host,
        ],
    );
    assert!(
        found.iter().any(|c| c.contains("CLONE_NEW")),
        "no namespace seen for RUN:\n{}",
        found.join("\n")
    );
}
