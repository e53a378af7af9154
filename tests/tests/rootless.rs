//! `executor build` without root, run by an unprivileged user of this
//! machine made for each test ([`TestUser`], removed afterwards):
//! - with a subordinate id range in /etc/subuid and /etc/subgid, the build
//!   runs as root of a user namespace mapping it: the base's files of other
//!   owners (Debian's), USER and COPY `--chown` keep the image's own ids,
//!   the store holds them as the range's host ids, and the next build of
//!   the user reads that store back. (The RUN cases of the differential
//!   corpus are compared with buildah this way in `differential.rs`,
//!   `run_cases_without_root`.)
//! - without a range, the single-id mode: `USER 1000` with a RUN, and COPY
//!   `--chown=1000`, fail with the error they always had and a hint saying
//!   why and how to get a range;
//! - with a range, an id past it fails saying which ids are mapped;
//! - a malformed entry for the user is an error naming the file and line;
//! - signals sent to the first process reach the build in the namespace.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use executor_e2e::{
    Project, Registry, RegistryKind, TestUser, executor_for_anyone, fails, ok, open_dir, unpack,
};

/// A project the user owns (context, store, `HOME` in `home/`), and the
/// executor binary it can run.
fn owned_project(user: &TestUser, dockerfile: &str, files: &[(&str, &str)]) -> (Project, PathBuf) {
    let project = Project::new(dockerfile, files);
    open_dir(project.dir.path());
    fs::create_dir_all(project.path("home")).unwrap();
    let bin = executor_for_anyone(project.dir.path());
    user.give(project.dir.path());
    (project, bin)
}

/// `executor build` of `project` with `args`, as `user`.
fn build_as(user: &TestUser, project: &Project, bin: &Path, args: &[&str]) -> Command {
    user.executor(bin, &project.build(args), &project.path("home"))
}

/// Asserts that `stderr` holds each of `expected`.
fn contains_all(stderr: &str, expected: &[&str]) {
    for expected in expected {
        assert!(stderr.contains(expected), "{expected:?} in:\n{stderr}");
    }
}

fn owner(path: &Path) -> (u32, u32) {
    let meta = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.uid(), meta.gid())
}

#[test]
fn other_ids_keep_their_owners_and_the_store_serves_the_next_build() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let debian = registry.push_debian();
    let user = TestUser::new(true);
    let (first, count) = user.range.unwrap();
    let (project, bin) = owned_project(
        &user,
        &format!(
            "FROM {debian}\n\
             RUN groupadd -g 1234 app && useradd -u 1234 -g app app && mkdir /data && chown app:app /data && touch /var/mail/new && stat -c '%u:%g' /var/mail /etc/shadow > /base-owners\n\
             COPY --chown=4242:50 f /data/f\n\
             USER app\n\
             RUN touch /data/mine && id -u > /data/uid && id -G > /data/groups\n"
        ),
        &[("f", "copied\n")],
    );
    let destination = registry.reference("rootless/owners:1");
    ok(&mut build_as(
        &user,
        &project,
        &bin,
        &["-d", &destination, "--insecure-registry", &registry.host],
    ));

    let rootfs = unpack(&registry, &destination, &project.path("unpacked"));
    let read = |path: &str| fs::read_to_string(rootfs.join(path)).unwrap();
    // Base files of other groups, as the RUN saw them and in the image.
    assert_eq!(read("base-owners"), "0:8\n0:42\n");
    assert_eq!(owner(&rootfs.join("var/mail")), (0, 8));
    // /var/mail is setgid: what is made in it takes its group.
    assert_eq!(owner(&rootfs.join("var/mail/new")), (0, 8));
    assert_eq!(owner(&rootfs.join("etc/shadow")), (0, 42));
    // chown in a RUN, COPY --chown, and what USER app writes.
    assert_eq!(owner(&rootfs.join("data")), (1234, 1234));
    assert_eq!(owner(&rootfs.join("data/f")), (4242, 50));
    assert_eq!(owner(&rootfs.join("data/mine")), (1234, 1234));
    assert_eq!(read("data/uid"), "1234\n");
    assert_eq!(read("data/groups"), "1234\n");

    // On disk, the store holds the range's host ids: /etc/shadow's group
    // 42 is the range's 42nd id (namespace id 0 is the user).
    let layers = project.cache().join("layers/sha256");
    let shadow = fs::read_dir(&layers)
        .unwrap()
        .map(|entry| entry.unwrap().path().join("etc/shadow"))
        .find(|path| path.exists())
        .expect("the base layer, extracted in the store");
    assert_eq!(owner(&shadow), (user.uid, first + 41));
    assert!(first + 41 < first + count);

    // The next build of the user uses that store: nothing downloaded, and
    // a RUN on the extracted base sees the same owners.
    project.write(
        "Dockerfile",
        format!(
            "FROM {debian}\nRUN stat -c '%u:%g' /var/mail /etc/shadow > /base-owners && chown 7:7 /var/local\n"
        ),
    );
    let again = registry.reference("rootless/owners:2");
    let stderr = ok(&mut build_as(
        &user,
        &project,
        &bin,
        &["-d", &again, "--insecure-registry", &registry.host],
    ));
    assert!(stderr.contains(" 0 B downloaded"), "{stderr}");
    let rootfs = unpack(&registry, &again, &project.path("unpacked-again"));
    assert_eq!(
        fs::read_to_string(rootfs.join("base-owners")).unwrap(),
        "0:8\n0:42\n"
    );
    assert_eq!(owner(&rootfs.join("var/local")), (7, 7));
}

#[test]
fn without_a_range_other_ids_fail_saying_how_to_get_one() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let busybox = registry.push_busybox();
    let user = TestUser::new(false);
    let (project, bin) = owned_project(
        &user,
        &format!("FROM {busybox}\nRUN id -u > /uid\nUSER 1000\nRUN id\n"),
        &[("f", "x")],
    );
    let args = ["--no-push", "--insecure-registry", &registry.host];
    let stderr = fails(&mut build_as(&user, &project, &bin, &args));
    contains_all(
        &stderr,
        &[
            "Dockerfile:4: RUN failed",
            "sandbox setup failed: switching to uid 1000 gid 0 groups [0]",
            &format!(
                "hint: without root, only your own id is mapped (to root) since {} has no range in /etc/subuid",
                user.name
            ),
            &format!(
                "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {}",
                user.name
            ),
            "apt-get install uidmap",
            "caused by: Invalid argument",
        ],
    );

    project.write(
        "Dockerfile",
        format!("FROM {busybox}\nCOPY --chown=1000:1000 f /f\n"),
    );
    user.give(&project.context());
    let stderr = fails(&mut build_as(&user, &project, &bin, &args));
    contains_all(
        &stderr,
        &[
            "Dockerfile:2: COPY failed",
            "the owner 1000:1000",
            "has no range in /etc/subuid",
            "usermod --add-subuids",
        ],
    );
}

#[test]
fn a_malformed_entry_names_the_file_and_line() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let busybox = registry.push_busybox();
    let user = TestUser::new(true);
    let (project, bin) = owned_project(&user, &format!("FROM {busybox}\nRUN true\n"), &[]);
    let entry = format!("{}:abc:10", user.name);
    user.add_subid_line("/etc/subgid", &entry);
    let stderr = fails(&mut build_as(
        &user,
        &project,
        &bin,
        &["--no-push", "--insecure-registry", &registry.host],
    ));
    let message = format!("malformed entry {entry:?}: the first id is not a number\nhint: ");
    let at = stderr
        .find(&message)
        .unwrap_or_else(|| panic!("{message:?} in:\n{stderr}"));
    let Some((_, line)) = stderr[..at].rsplit_once("error: /etc/subgid:") else {
        panic!("the file and line in:\n{stderr}");
    };
    assert!(
        line.trim_end_matches(": ").parse::<usize>().is_ok(),
        "{line:?} in:\n{stderr}"
    );
}

/// A build started as `user`, stopped once its RUN prints `started`:
/// returns the waiter (the process started: the executor that re-executed
/// itself in the namespace) and the rest of its stderr, unread.
#[allow(clippy::zombie_processes)] // the caller waits for the child it gets
fn started_build(
    user: &TestUser,
    project: &Project,
    bin: &Path,
    registry: &Registry,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStderr>,
    String,
) {
    use std::io::BufRead as _;
    let mut cmd = build_as(
        user,
        project,
        bin,
        &["--no-push", "--insecure-registry", &registry.host],
    );
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let status = child.wait().unwrap();
            panic!("the build ended ({status}) before its RUN started:\n{seen}");
        }
        seen.push_str(&line);
        if line.contains("started") {
            return (child, stderr, seen);
        }
    }
}

/// The first process passes SIGTERM on to the build in the namespace,
/// which stops as it does when run directly; a SIGKILL of the first
/// process takes the build with it (it holds stderr open until it ends).
#[test]
fn signals_reach_the_build_in_the_namespace() {
    use std::io::Read as _;
    let registry = Registry::start(RegistryKind::Anonymous);
    let busybox = registry.push_busybox();
    let user = TestUser::new(true);
    let (project, bin) = owned_project(
        &user,
        &format!("FROM {busybox}\nRUN echo started && sleep 600\n"),
        &[],
    );

    let (mut waiter, mut stderr, mut seen) = started_build(&user, &project, &bin, &registry);
    let pid = rustix::process::Pid::from_child(&waiter);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    stderr.read_to_string(&mut seen).unwrap();
    let status = waiter.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{seen}");
    assert!(seen.contains("SIGTERM: stopping the build"), "{seen}");

    let (mut waiter, mut stderr, mut seen) = started_build(&user, &project, &bin, &registry);
    waiter.kill().unwrap();
    // End of file: the build in the namespace, which shares this stderr,
    // has ended too.
    stderr.read_to_string(&mut seen).unwrap();
    waiter.wait().unwrap();
}

#[test]
fn ids_beyond_the_range_fail_naming_what_is_mapped() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let busybox = registry.push_busybox();
    let user = TestUser::new(true);
    let (project, bin) = owned_project(
        &user,
        &format!("FROM {busybox}\nUSER 70000\nRUN id\n"),
        &[("f", "x")],
    );
    let args = ["--no-push", "--insecure-registry", &registry.host];
    let hint =
        "hint: this build runs in a user namespace that maps uids 0 to 65536 and gids 0 to 65536";
    let stderr = fails(&mut build_as(&user, &project, &bin, &args));
    contains_all(
        &stderr,
        &[
            "Dockerfile:3: RUN failed",
            "switching to uid 70000",
            hint,
            "usermod --add-subuids",
        ],
    );

    project.write(
        "Dockerfile",
        format!("FROM {busybox}\nCOPY --chown=70000 f /f\n"),
    );
    let stderr = fails(&mut build_as(&user, &project, &bin, &args));
    contains_all(
        &stderr,
        &["Dockerfile:2: COPY failed", "the owner 70000:70000", hint],
    );
}
