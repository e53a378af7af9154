//! Build contexts through the CLI: a directory (with `--context-sub-path`
//! and `--dockerfile`), `tar://PATH` to a .tar.gz, `tar://stdin`, kaniko's
//! `git://HOST/REPO#REF#COMMIT` against `git daemon`, an http URL ending in
//! `.git` against `git http-backend` (with `--git branch=...,
//! single-branch=true, recurse-submodules=true`), and files that try to
//! leave the context. Each image is written as an OCI layout and read back
//! with umoci.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use executor_e2e::{GitDaemon, GitHttpServer, Project, git, git_commit, git_repo, unpack_layout};

const NAME: &str = "example.test/context:1";

/// Builds with `args` into an OCI layout in the project dir; returns the
/// unpacked rootfs.
fn build_to_layout(project: &Project, cmd: &mut Command) -> PathBuf {
    let layout = project.path("layout");
    let _ = fs::remove_dir_all(&layout);
    let _ = fs::remove_dir_all(project.path("unpacked"));
    cmd.args(["--no-push", "--destination", NAME, "--oci-layout-path"])
        .arg(&layout);
    executor_e2e::ok(cmd);
    unpack_layout(&layout, NAME, &project.path("unpacked"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `executor build` with `--context VALUE` and the project's store.
fn build_with_context(project: &Project, context: &str) -> Command {
    let mut cmd = project.executor();
    cmd.arg("build")
        .arg("--context")
        .arg(context)
        .arg("--cache-dir")
        .arg(project.cache());
    cmd
}

#[test]
fn directory_context_with_sub_path_and_dockerfile() {
    let project = Project::new(
        "FROM scratch\nCOPY top.txt /\n",
        &[
            ("top.txt", "top\n"),
            ("app/build/app.Dockerfile", "FROM scratch\nCOPY . /app/\n"),
            ("app/main.txt", "main\n"),
            ("app/.dockerignore", "build\n"),
        ],
    );
    // The default Dockerfile at the root.
    let rootfs = build_to_layout(&project, &mut project.build(&[]));
    assert_eq!(read(&rootfs.join("top.txt")), "top\n");
    // A sub-directory as the context, the Dockerfile inside it.
    let rootfs = build_to_layout(
        &project,
        &mut project.build(&[
            "--context-sub-path",
            "app",
            "--dockerfile",
            "build/app.Dockerfile",
        ]),
    );
    assert_eq!(read(&rootfs.join("app/main.txt")), "main\n");
    assert!(!rootfs.join("app/top.txt").exists(), "only the sub-path");
    assert!(
        !rootfs.join("app/build").exists(),
        "the sub-path's .dockerignore applies"
    );
    // A sub-path that is not in the context is an error naming it.
    let stderr = project.fails(&["--no-push", "--context-sub-path", "nowhere"]);
    assert!(stderr.contains("nowhere"), "{stderr}");
}

#[test]
fn tar_gz_file_and_tar_on_stdin() {
    let project = Project::new(
        "FROM scratch\nCOPY data/ /data/\n",
        &[("data/a.txt", "from a tarball\n")],
    );
    let tarball = project.path("context.tar.gz");
    let out = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(project.context())
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Move the directory away: the files can only come from the tarball.
    fs::rename(project.context(), project.path("moved")).unwrap();
    let context = format!("tar://{}", tarball.display());
    let rootfs = build_to_layout(&project, &mut build_with_context(&project, &context));
    assert_eq!(read(&rootfs.join("data/a.txt")), "from a tarball\n");

    // The same archive, uncompressed, on standard input.
    let plain = Command::new("tar")
        .arg("-cf")
        .arg("-")
        .arg("-C")
        .arg(project.path("moved"))
        .arg(".")
        .output()
        .unwrap();
    assert!(plain.status.success());
    let layout = project.path("stdin-layout");
    let mut child = build_with_context(&project, "tar://stdin")
        .args(["--no-push", "--destination", NAME, "--oci-layout-path"])
        .arg(&layout)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&plain.stdout)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rootfs = unpack_layout(&layout, NAME, &project.path("stdin-unpacked"));
    assert_eq!(read(&rootfs.join("data/a.txt")), "from a tarball\n");

    // A missing tarball is an error naming it.
    let missing = format!("tar://{}", project.path("missing.tar.gz").display());
    let stderr = executor_e2e::fails(build_with_context(&project, &missing).arg("--no-push"));
    assert!(stderr.contains("missing.tar.gz"), "{stderr}");
}

#[test]
fn kaniko_git_context_at_a_commit_below_the_branch_tip() {
    let project = Project::new("unused", &[]);
    let base = project.path("repos");
    let tree = project.path("tree");
    git_repo(
        &tree,
        &[
            ("Dockerfile", "FROM scratch\nCOPY version.txt /\n"),
            ("version.txt", "main\n"),
        ],
    );
    git(&tree, &["checkout", "-q", "-b", "feature"]);
    let first = git_commit(&tree, &[("version.txt", "feature 1\n")], "one");
    git_commit(&tree, &[("version.txt", "feature 2\n")], "two");
    fs::create_dir_all(&base).unwrap();
    git(
        &project.path(""),
        &[
            "clone",
            "-q",
            "--bare",
            tree.to_str().unwrap(),
            base.join("repo.git").to_str().unwrap(),
        ],
    );
    let daemon = GitDaemon::start(&base);

    // kaniko's form: the ref, then the commit; the transport from
    // GIT_PULL_METHOD.
    let context = format!("git://{}/repo.git#refs/heads/feature#{first}", daemon.host);
    let mut cmd = build_with_context(&project, &context);
    cmd.env("GIT_PULL_METHOD", "git");
    let rootfs = build_to_layout(&project, &mut cmd);
    assert_eq!(read(&rootfs.join("version.txt")), "feature 1\n");

    // The branch's tip without a commit.
    let context = format!("git://{}/repo.git#refs/heads/feature", daemon.host);
    let mut cmd = build_with_context(&project, &context);
    cmd.env("GIT_PULL_METHOD", "git");
    let rootfs = build_to_layout(&project, &mut cmd);
    assert_eq!(read(&rootfs.join("version.txt")), "feature 2\n");

    // An unknown branch is an error naming it.
    let context = format!("git://{}/repo.git#refs/heads/gone", daemon.host);
    let mut cmd = build_with_context(&project, &context);
    cmd.env("GIT_PULL_METHOD", "git").arg("--no-push");
    let stderr = executor_e2e::fails(&mut cmd);
    assert!(stderr.contains("refs/heads/gone"), "{stderr}");
}

#[test]
fn http_git_context_with_branch_single_branch_and_submodules() {
    let project = Project::new("unused", &[]);
    let server = GitHttpServer::start();
    let lib_tree = project.path("lib");
    git_repo(&lib_tree, &[("lib.txt", "library\n")]);
    git(
        &project.path(""),
        &[
            "clone",
            "-q",
            "--bare",
            lib_tree.to_str().unwrap(),
            server.repos().join("lib.git").to_str().unwrap(),
        ],
    );
    let tree = project.path("app");
    git_repo(
        &tree,
        &[
            ("Dockerfile", "FROM scratch\nCOPY . /src/\n"),
            ("branch.txt", "main\n"),
        ],
    );
    git(&tree, &["checkout", "-q", "-b", "release"]);
    git(
        &tree,
        &[
            "submodule",
            "add",
            "-q",
            &server.url("lib.git"),
            "vendor/lib",
        ],
    );
    git_commit(&tree, &[("branch.txt", "release\n")], "release");
    // The bare copy's default branch is the one checked out.
    git(&tree, &["checkout", "-q", "-f", "main"]);
    git(
        &project.path(""),
        &[
            "clone",
            "-q",
            "--bare",
            tree.to_str().unwrap(),
            server.repos().join("app.git").to_str().unwrap(),
        ],
    );

    let context = server.url("app.git");
    let mut cmd = build_with_context(&project, &context);
    cmd.args([
        "--git",
        "branch=release,single-branch=true,recurse-submodules=true",
    ]);
    let rootfs = build_to_layout(&project, &mut cmd);
    assert_eq!(read(&rootfs.join("src/branch.txt")), "release\n");
    assert_eq!(read(&rootfs.join("src/vendor/lib/lib.txt")), "library\n");
    assert!(
        !rootfs.join("src/.git").exists(),
        "no .git in a git context"
    );

    // Without recurse-submodules the submodule stays empty; without a
    // branch the default branch is built.
    let rootfs = build_to_layout(&project, &mut build_with_context(&project, &context));
    assert_eq!(read(&rootfs.join("src/branch.txt")), "main\n");
    let mut cmd = build_with_context(&project, &context);
    cmd.args(["--git", "branch=release"]);
    let rootfs = build_to_layout(&project, &mut cmd);
    assert!(!rootfs.join("src/vendor/lib/lib.txt").exists());
    // A bad --git option is an error naming it.
    let stderr = executor_e2e::fails(build_with_context(&project, &context).args([
        "--no-push",
        "--git",
        "depth=1",
    ]));
    assert!(stderr.contains("depth=1"), "{stderr}");
}

#[test]
fn context_files_cannot_leave_the_context() {
    let project = Project::new("FROM scratch\nCOPY ../secret /\n", &[("ok", "ok")]);
    fs::write(project.path("secret"), "outside\n").unwrap();
    let stderr = project.fails(&["--no-push"]);
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");
    assert!(stderr.contains("secret"), "{stderr}");

    // A symlink out of the context: its target is looked up inside the
    // context, as BuildKit does, where it is missing.
    std::os::unix::fs::symlink(project.path("secret"), project.context().join("link")).unwrap();
    project.write("Dockerfile", "FROM scratch\nCOPY link /copied\n");
    let layout = project.path("layout");
    let out = project.run(&[
        "--no-push",
        "--destination",
        NAME,
        "--oci-layout-path",
        layout.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("link"), "{stderr}");
    assert!(!layout.exists(), "nothing is written after the error");

    // A relative link that climbs out, inside a copied directory, is kept
    // as a link (its target is not read).
    fs::remove_file(project.context().join("link")).unwrap();
    fs::create_dir_all(project.context().join("dir")).unwrap();
    std::os::unix::fs::symlink("../../secret", project.context().join("dir/up")).unwrap();
    project.write("Dockerfile", "FROM scratch\nCOPY dir /dir/\n");
    let rootfs = build_to_layout(&project, &mut project.build(&[]));
    assert_eq!(
        fs::read_link(rootfs.join("dir/up")).unwrap(),
        Path::new("../../secret")
    );
}
