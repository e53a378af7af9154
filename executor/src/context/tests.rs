//! Preparing contexts from each kind of source: directories with their
//! `.dockerignore`, tar and tar.gz archives, `--context-sub-path`, and git
//! repositories the tests create (served from the file system and by a real
//! `git daemon`).

use std::fs;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use git2::{Oid, Repository, Signature};

use super::*;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// Every path a COPY of `source` would take from the context.
fn copied(context: &Context, source: &str) -> Vec<String> {
    let selected = context.select(&strings(&[source]), &[]).unwrap();
    let mut out = Vec::new();
    for s in &selected {
        out.push(s.rel.clone());
        for entry in context.walk(s, &[]).unwrap() {
            out.push(entry.unwrap().rel);
        }
    }
    out
}

fn dir_options(dockerfile: Option<&str>) -> PrepareOptions {
    PrepareOptions {
        dockerfile: dockerfile.map(PathBuf::from),
        ..PrepareOptions::default()
    }
}

#[test]
fn directory_context_with_dockerignore() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "Dockerfile", "FROM scratch\n");
    write(
        root,
        ".dockerignore",
        "*.log\nvendor\n!vendor/keep/**\nsecret.txt\n",
    );
    write(root, "main.go", "package main");
    write(root, "debug.log", "x");
    write(root, "secret.txt", "x");
    write(root, "vendor/drop/a.go", "x");
    write(root, "vendor/keep/b.go", "x");
    write(root, "vendor/top.go", "x");

    let context =
        Context::prepare(&ContextSource::Dir(root.to_owned()), &dir_options(None)).unwrap();
    assert_eq!(context.root(), fs::canonicalize(root).unwrap());
    assert_eq!(context.dockerfile(), context.root().join("Dockerfile"));
    assert_eq!(
        context.dockerignore().unwrap().0,
        context.root().join(".dockerignore")
    );
    assert_eq!(context.commit(), None);
    assert_eq!(
        copied(&context, "."),
        [
            ".",
            ".dockerignore",
            "Dockerfile",
            "main.go",
            "vendor",
            "vendor/keep",
            "vendor/keep/b.go"
        ]
    );
    // The excluded directory is there only for what is re-included below it.
    assert_eq!(
        copied(&context, "vendor"),
        ["vendor", "vendor/keep", "vendor/keep/b.go"]
    );
    for hidden in ["secret.txt", "debug.log", "vendor/top.go", "vendor/drop"] {
        let err = context.select(&strings(&[hidden]), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "file not found in build context or excluded by .dockerignore: stat {hidden}: file does not exist"
            )
        );
    }
}

#[test]
fn dockerfile_specific_ignore_file_wins() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "docker/app.Dockerfile", "FROM scratch\n");
    write(root, "docker/app.Dockerfile.dockerignore", "b.txt\n");
    write(root, ".dockerignore", "a.txt\n");
    write(root, "a.txt", "a");
    write(root, "b.txt", "b");
    let source = ContextSource::Dir(root.to_owned());

    let context = Context::prepare(&source, &dir_options(Some("docker/app.Dockerfile"))).unwrap();
    assert_eq!(
        context.dockerfile(),
        context.root().join("docker/app.Dockerfile")
    );
    assert_eq!(
        context.dockerignore().unwrap().0,
        context.root().join("docker/app.Dockerfile.dockerignore")
    );
    assert_eq!(copied(&context, "a.txt"), ["a.txt"]);
    assert!(context.select(&strings(&["b.txt"]), &[]).is_err());

    // Without a Dockerfile-specific file, the context's applies.
    write(root, "Dockerfile", "FROM scratch\n");
    let context = Context::prepare(&source, &dir_options(None)).unwrap();
    assert_eq!(copied(&context, "b.txt"), ["b.txt"]);
    assert!(context.select(&strings(&["a.txt"]), &[]).is_err());
}

#[test]
fn dockerfile_path_follows_kaniko() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ctx");
    write(&root, "build/Containerfile", "FROM scratch\n");
    let source = ContextSource::Dir(root.clone());
    // Relative to the context when it does not exist as given.
    let context = Context::prepare(&source, &dir_options(Some("build/Containerfile"))).unwrap();
    assert_eq!(
        context.dockerfile(),
        context.root().join("build/Containerfile")
    );
    // An absolute path outside the context is used as given.
    write(dir.path(), "elsewhere/Dockerfile", "FROM scratch\n");
    let outside = dir.path().join("elsewhere/Dockerfile");
    let context = Context::prepare(&source, &dir_options(outside.to_str())).unwrap();
    assert_eq!(context.dockerfile(), outside);
    // Missing: the message says where it looked.
    let err = Context::prepare(&source, &dir_options(Some("nope/Dockerfile"))).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("no Dockerfile at nope/Dockerfile (looked at nope/Dockerfile and "),
        "{message}"
    );
    assert!(message.contains("\nhint: "), "{message}");
    // A context that is not a directory.
    let err = Context::prepare(
        &ContextSource::Dir(root.join("build/Containerfile")),
        &dir_options(None),
    )
    .unwrap_err();
    assert!(err.to_string().contains("is not a directory"), "{err}");
    let err = Context::prepare(
        &ContextSource::Dir(dir.path().join("missing")),
        &dir_options(None),
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn context_sub_path_stays_inside() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ctx");
    write(&root, "services/api/Dockerfile", "FROM scratch\n");
    write(&root, "services/api/app.txt", "api");
    write(dir.path(), "outside/Dockerfile", "FROM scratch\n");
    symlink("../../outside", root.join("services/out")).unwrap();
    let source = ContextSource::Dir(root.clone());
    let with_sub = |sub: &str| PrepareOptions {
        sub_path: Some(PathBuf::from(sub)),
        ..PrepareOptions::default()
    };

    let context = Context::prepare(&source, &with_sub("services/api")).unwrap();
    assert_eq!(
        context.root(),
        fs::canonicalize(root.join("services/api")).unwrap()
    );
    assert_eq!(context.dockerfile(), context.root().join("Dockerfile"));
    assert_eq!(copied(&context, "app.txt"), ["app.txt"]);

    for (sub, reason) in [
        ("..", "leaves the context"),
        ("services/../../outside", "leaves the context"),
        ("/etc", "must be relative to the context"),
        ("services/out", "leaves the context (through a symlink)"),
        ("services/none", "no such directory in the context"),
        ("services/api/app.txt", "not a directory"),
    ] {
        let err = Context::prepare(&source, &with_sub(sub)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("invalid --context-sub-path {sub:?}: {reason}"),
            "{sub}"
        );
    }
}

/// A tar.gz of `files` (path, content), with a `./` prefix as `tar -C dir
/// -czf` writes it, and a symlink.
fn make_tarball(path: &Path, files: &[(&str, &str)], gzip: bool) {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_600_000_000);
        builder
            .append_data(&mut header, format!("./{name}"), content.as_bytes())
            .unwrap();
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    header.set_mode(0o777);
    builder
        .append_link(&mut header, "./link", "app/main.go")
        .unwrap();
    // A read-only directory: its mode is applied after its contents.
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(0o555);
    builder.append_data(&mut header, "./ro/", &b""[..]).unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o444);
    builder
        .append_data(&mut header, "./ro/file", &b"r"[..])
        .unwrap();
    let data = builder.into_inner().unwrap();
    if gzip {
        let mut encoder = flate2::write::GzEncoder::new(
            fs::File::create(path).unwrap(),
            flate2::Compression::default(),
        );
        encoder.write_all(&data).unwrap();
        encoder.finish().unwrap();
    } else {
        fs::write(path, data).unwrap();
    }
}

#[test]
fn tar_and_tar_gz_contexts() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("Dockerfile", "FROM scratch\nCOPY app /app\n"),
        (".dockerignore", "app/*.tmp\n"),
        ("app/main.go", "package main"),
        ("app/cache.tmp", "x"),
    ];
    for (name, gzip) in [("ctx.tar", false), ("ctx.tar.gz", true)] {
        let path = dir.path().join(name);
        make_tarball(&path, &files, gzip);
        let scratch = dir.path().join(format!("scratch-{name}"));
        fs::create_dir(&scratch).unwrap();
        let options = PrepareOptions {
            scratch_dir: Some(scratch.clone()),
            ..PrepareOptions::default()
        };
        let source: ContextSource = format!("tar://{}", path.display()).parse().unwrap();
        let context = Context::prepare(&source, &options).unwrap();
        assert!(context.root().starts_with(&scratch), "{name}");
        assert_eq!(
            fs::read_to_string(context.dockerfile()).unwrap(),
            "FROM scratch\nCOPY app /app\n"
        );
        assert_eq!(copied(&context, "app"), ["app", "app/main.go"], "{name}");
        assert_eq!(copied(&context, "link"), ["link"], "{name}");
        assert_eq!(copied(&context, "ro"), ["ro", "ro/file"], "{name}");
        let mode = fs::metadata(context.root().join("ro"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o555, "{name}");
        let selected = context.select(&strings(&["link"]), &[]).unwrap();
        assert_eq!(selected[0].resolved, "app/main.go");
        // Dropping the context removes what was extracted.
        drop(context);
        assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0, "{name}");
    }
}

#[test]
fn malicious_tar_context_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    header.set_mode(0o777);
    builder.append_link(&mut header, "etc", "/etc").unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "etc/evil", &b"evil"[..])
        .unwrap();
    let path = dir.path().join("evil.tar");
    fs::write(&path, builder.into_inner().unwrap()).unwrap();
    let scratch = dir.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    let options = PrepareOptions {
        scratch_dir: Some(scratch.clone()),
        ..PrepareOptions::default()
    };
    let err = Context::prepare(&ContextSource::Tar(path.clone()), &options).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "refusing build context archive {}: entry \"etc\": symlink to the absolute path \"/etc\"",
            path.display()
        )
    );
    assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0);
    let err =
        Context::prepare(&ContextSource::Tar(dir.path().join("none.tar")), &options).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("failed to read build context archive"),
        "{err}"
    );
}

// --- git -----------------------------------------------------------------

enum Item<'a> {
    File(&'a str),
    Submodule(Oid),
}

/// Write a tree of `items` (nested paths) into `repo`.
fn write_tree(repo: &Repository, items: &[(&str, Item<'_>)]) -> Oid {
    let mut builder = repo.treebuilder(None).unwrap();
    let mut subdirs: Vec<(&str, Vec<(&str, Item<'_>)>)> = Vec::new();
    for (path, item) in items {
        match path.split_once('/') {
            Some((dir, rest)) => {
                let copy = match item {
                    Item::File(c) => Item::File(c),
                    Item::Submodule(o) => Item::Submodule(*o),
                };
                match subdirs.iter_mut().find(|(d, _)| *d == dir) {
                    Some((_, list)) => list.push((rest, copy)),
                    None => subdirs.push((dir, vec![(rest, copy)])),
                }
            }
            None => match item {
                Item::File(content) => {
                    let blob = repo.blob(content.as_bytes()).unwrap();
                    builder.insert(path, blob, 0o100_644).unwrap();
                }
                Item::Submodule(commit) => {
                    builder.insert(path, *commit, 0o160_000).unwrap();
                }
            },
        }
    }
    for (dir, list) in subdirs {
        let tree = write_tree(repo, &list);
        builder.insert(dir, tree, 0o040_000).unwrap();
    }
    builder.write().unwrap()
}

fn commit(repo: &Repository, branch: &str, parent: Option<Oid>, items: &[(&str, Item<'_>)]) -> Oid {
    let tree = repo.find_tree(write_tree(repo, items)).unwrap();
    let signature = Signature::new(
        "Test",
        "test@example.com",
        &git2::Time::new(1_700_000_000, 0),
    )
    .unwrap();
    let parents: Vec<git2::Commit<'_>> = parent
        .iter()
        .map(|p| repo.find_commit(*p).unwrap())
        .collect();
    let parent_refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
    repo.commit(
        Some(&format!("refs/heads/{branch}")),
        &signature,
        &signature,
        "commit",
        &tree,
        &parent_refs,
    )
    .unwrap()
}

/// Bare repositories `origin.git` and `lib.git` under one directory:
/// origin's `main` has two commits (the second with `lib` as a submodule),
/// `dev` branches off the first, and the annotated tag `v1` marks the first.
struct Repos {
    dir: tempfile::TempDir,
    first: Oid,
    second: Oid,
    dev: Oid,
}

impl Repos {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let lib = Repository::init_bare(dir.path().join("lib.git")).unwrap();
        let lib_commit = commit(&lib, "main", None, &[("lib.txt", Item::File("library"))]);
        lib.set_head("refs/heads/main").unwrap();

        let repo = Repository::init_bare(dir.path().join("origin.git")).unwrap();
        let first = commit(
            &repo,
            "main",
            None,
            &[
                ("Dockerfile", Item::File("FROM scratch\n")),
                ("app/version.txt", Item::File("v1")),
            ],
        );
        let second = commit(
            &repo,
            "main",
            Some(first),
            &[
                ("Dockerfile", Item::File("FROM scratch\n")),
                ("app/version.txt", Item::File("v2")),
                ("app/Dockerfile", Item::File("FROM scratch\nCOPY . /\n")),
                (
                    ".gitmodules",
                    Item::File("[submodule \"lib\"]\n\tpath = lib\n\turl = ../lib.git\n"),
                ),
                ("lib", Item::Submodule(lib_commit)),
            ],
        );
        let dev = commit(
            &repo,
            "dev",
            Some(first),
            &[
                ("Dockerfile", Item::File("FROM scratch\n")),
                ("app/version.txt", Item::File("dev")),
            ],
        );
        repo.set_head("refs/heads/main").unwrap();
        let signature = Signature::new(
            "Test",
            "test@example.com",
            &git2::Time::new(1_700_000_000, 0),
        )
        .unwrap();
        repo.tag(
            "v1",
            &repo.find_object(first, None).unwrap(),
            &signature,
            "v1",
            false,
        )
        .unwrap();
        Self {
            dir,
            first,
            second,
            dev,
        }
    }

    fn url(&self) -> String {
        format!("file://{}", self.dir.path().join("origin.git").display())
    }
}

fn prepare_git(context: &str, git: GitOptions) -> Result<Context> {
    let options = PrepareOptions {
        git,
        ..PrepareOptions::default()
    };
    Context::prepare(&context.parse().unwrap(), &options)
}

fn version(context: &Context) -> String {
    fs::read_to_string(context.root().join("app/version.txt")).unwrap()
}

#[test]
fn git_context_at_default_branch_branch_tag_and_commit() {
    let repos = Repos::new();
    let url = repos.url();

    let context = prepare_git(&url, GitOptions::default()).unwrap();
    assert_eq!(version(&context), "v2");
    assert_eq!(context.commit(), Some(repos.second.to_string().as_str()));
    assert!(
        !context.root().join(".git").exists(),
        "no .git in the context"
    );
    assert!(
        !context.root().join("lib/lib.txt").exists(),
        "submodules only on request"
    );

    let context = prepare_git(&format!("{url}#dev"), GitOptions::default()).unwrap();
    assert_eq!(version(&context), "dev");
    assert_eq!(context.commit(), Some(repos.dev.to_string().as_str()));

    let options: GitOptions = "branch=dev".parse().unwrap();
    let context = prepare_git(&url, options.clone()).unwrap();
    assert_eq!(version(&context), "dev");
    // The ref in the context wins over --git branch=.
    let context = prepare_git(&format!("{url}#refs/heads/main"), options).unwrap();
    assert_eq!(version(&context), "v2");

    let context = prepare_git(&format!("{url}#v1"), GitOptions::default()).unwrap();
    assert_eq!(version(&context), "v1");
    assert_eq!(context.commit(), Some(repos.first.to_string().as_str()));

    // kaniko's REF#COMMIT, with a commit below the ref's tip.
    let context = prepare_git(
        &format!("{url}#refs/heads/main#{}", repos.first),
        GitOptions::default(),
    )
    .unwrap();
    assert_eq!(version(&context), "v1");
    assert_eq!(context.commit(), Some(repos.first.to_string().as_str()));
    // A commit id where the ref goes.
    let short = &repos.dev.to_string()[..10];
    let context = prepare_git(&format!("{url}#{short}"), GitOptions::default()).unwrap();
    assert_eq!(version(&context), "dev");

    let err = prepare_git(&format!("{url}#main:nope"), GitOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid git context directory \"nope\": no such directory in the context"
    );
    // Docker's #REF:DIR, then the Dockerfile of that directory.
    let context = prepare_git(&format!("{url}#main:app"), GitOptions::default()).unwrap();
    assert_eq!(
        fs::read_to_string(context.root().join("version.txt")).unwrap(),
        "v2"
    );
    assert_eq!(context.dockerfile(), context.root().join("Dockerfile"));
}

#[test]
fn git_context_with_submodules() {
    let repos = Repos::new();
    let options: GitOptions = "recurse-submodules=true".parse().unwrap();
    let context = prepare_git(&repos.url(), options).unwrap();
    assert_eq!(
        fs::read_to_string(context.root().join("lib/lib.txt")).unwrap(),
        "library"
    );
    assert!(!context.root().join("lib/.git").exists());
    assert_eq!(copied(&context, "lib"), ["lib", "lib/lib.txt"]);
}

#[test]
fn git_context_errors_name_what_is_missing() {
    let repos = Repos::new();
    let url = repos.url();
    let err = prepare_git(&format!("{url}#nope"), GitOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "git context {url}: no ref \"nope\" on the remote (looked for it as a ref, a branch and a tag)"
        )
    );
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let err = prepare_git(&format!("{url}#main#{missing}"), GitOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("git context {url}: commit {missing} not found")
    );
    let err = prepare_git(
        &format!("file://{}/none.git", repos.dir.path().display()),
        GitOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Git { .. }), "{err}");
    assert!(err.to_string().contains("connecting failed"), "{err}");
}

/// A `git daemon` serving a directory on a free local port, stopped on drop.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn start(base: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("git")
            .arg("daemon")
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon (the git package) is installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn git_daemon_context_is_fetched_shallow() {
    let repos = Repos::new();
    let daemon = Daemon::start(repos.dir.path());
    let git = GitOptions {
        pull_method: PullMethod::Git,
        ..GitOptions::default()
    };
    let clone = |context: &str, git: &GitOptions| {
        let ContextSource::Git(source) = context.parse().unwrap() else {
            panic!("not a git context");
        };
        let scratch = tempfile::tempdir().unwrap();
        let worktree = scratch.path().join("tree");
        fs::create_dir(&worktree).unwrap();
        let gitdir = scratch.path().join("repo");
        let commit = git::clone(&source, git, &gitdir, &worktree)?;
        let shallow = Repository::open(&gitdir).unwrap().is_shallow();
        let version = fs::read_to_string(worktree.join("app/version.txt")).unwrap();
        Ok::<_, Error>((commit, shallow, version))
    };
    let base = format!("git://127.0.0.1:{}/origin.git", daemon.port);

    // kaniko's git:// form over the git protocol: one commit deep.
    let (commit, shallow, version) = clone(&format!("{base}#refs/heads/dev"), &git).unwrap();
    assert_eq!(
        (commit, shallow, version.as_str()),
        (repos.dev.to_string(), true, "dev")
    );
    let (commit, shallow, _) = clone(&base, &git).unwrap();
    assert_eq!((commit, shallow), (repos.second.to_string(), true));
    // The tip named as the commit is still shallow.
    let (_, shallow, _) = clone(&format!("{base}#main#{}", repos.second), &git).unwrap();
    assert!(shallow);
    // A commit below the tip needs the ref's history.
    let (commit, _, version) = clone(&format!("{base}#main#{}", repos.first), &git).unwrap();
    assert_eq!((commit, version.as_str()), (repos.first.to_string(), "v1"));
    // A commit on another branch: found by fetching every branch, unless
    // single-branch forbids it.
    let (commit, _, version) = clone(&format!("{base}#main#{}", repos.dev), &git).unwrap();
    assert_eq!((commit, version.as_str()), (repos.dev.to_string(), "dev"));
    let single = GitOptions {
        single_branch: true,
        ..git.clone()
    };
    let err = clone(&format!("{base}#main#{}", repos.dev), &single).unwrap_err();
    assert!(
        err.to_string()
            .ends_with(&format!("commit {} not found", repos.dev)),
        "{err}"
    );

    // The file transport cannot fetch shallow: a full fetch instead.
    let (commit, shallow, _) = clone(&format!("{}#dev", repos.url()), &git).unwrap();
    assert_eq!((commit, shallow), (repos.dev.to_string(), false));
}
