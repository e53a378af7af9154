//! Builds killed with SIGKILL, end to end: what they leave in the local
//! store (`--cache-dir`) is cleaned up by the next build on it, secrets
//! first, and never taken for good content. Each test kills only the
//! executor it started and looks only at its own store.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use executor_e2e::{Project, Registry, RegistryKind, executor_bin, free_port};
use sha2::{Digest as _, Sha256};

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

/// `kill -9` while a RUN has a secret mounted: the secret's plain text is
/// never on the store's disk (a tmpfs of the build's own mount namespace
/// holds it), and the build's scratch is removed by the next build.
#[test]
fn a_killed_builds_secret_and_scratch_go_at_the_next_build() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = Project::new(
        &format!(
            "FROM {base}\nRUN --mount=type=secret,id=token cat /run/secrets/token > /dev/null && touch /started-marker && sleep 600\n"
        ),
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
    // The RUN's upper directory is on the store's disk: its marker says
    // the secret is mounted and was read.
    wait_for(&mut child, "the RUN's start", || {
        !find(&tmp, "started-marker").is_empty()
    });
    let on_disk = |what: &str| {
        let leaked: Vec<_> = find(&tmp, "secret-")
            .into_iter()
            .filter(|p| fs::read(p).is_ok_and(|c| c == b"plain-text-token"))
            .collect();
        assert_eq!(leaked, Vec::<PathBuf>::new(), "{what}");
    };
    on_disk("while the RUN runs");
    child.kill().unwrap();
    child.wait().unwrap();
    on_disk("after the kill");

    let next = Project::new(&format!("FROM {base}\nRUN true\n"), &[]);
    let mut again = next.build_in(
        &store,
        &["--no-push", "--insecure-registry", &registry.host],
    );
    executor_e2e::ok(&mut again);
    assert_eq!(find(&tmp, "secret"), Vec::<PathBuf>::new());
    assert_eq!(find(&tmp, "build-"), Vec::<PathBuf>::new());
    assert_eq!(mounts_under(&store), Vec::<String>::new());
}

/// How many kill points [`killed_builds_leave_a_store_the_next_build_trusts`]
/// tries: `EXECUTOR_CRASH_POINTS` (the full check is 20:
/// `EXECUTOR_CRASH_POINTS=20 cargo test -p executor-e2e --test
/// store_crashes`), 5 by default so that CI stays quick.
fn crash_points() -> u64 {
    std::env::var("EXECUTOR_CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// A seeded pseudo-random sequence (xorshift), the same on every run.
struct Seeded(u64);

impl Seeded {
    /// A fraction in [0, 1).
    fn next_fraction(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        #[expect(clippy::cast_precision_loss, reason = "a fraction")]
        let fraction = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        fraction
    }
}

/// The build the crash tests run: a pull, a COPY, a RUN (each its layer),
/// cache entries in `cache_repo`, a push to `destination`.
fn crash_build(
    project: &Project,
    store: &Path,
    host: &str,
    destination: &str,
    cache_repo: &str,
    digest_file: &Path,
) -> std::process::Command {
    let digest_file = digest_file.display().to_string();
    let mut cmd = project.build_in(
        store,
        &[
            "-d",
            destination,
            "--insecure-registry",
            host,
            "--reproducible",
            "--cache=true",
            "--cache-repo",
            cache_repo,
            "--digest-file",
            &digest_file,
        ],
    );
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

/// `kill -9` of `executor build` at seeded points (its pull, layer
/// extraction, COPY, RUN, layer writes, cache writes, push): the next build
/// on the same `--cache-dir` succeeds and gives the digest an undisturbed
/// build gives.
#[test]
fn killed_builds_leave_a_store_the_next_build_trusts() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = Project::new(
        &format!(
            "FROM {base}\nCOPY data /data\nRUN cat /data/* > /all && seq 1 20000 > /numbers\n"
        ),
        &[],
    );
    for i in 0..64 {
        project.write(
            &format!("data/file-{i}"),
            format!("{i}\n").repeat(2000 + i * 100),
        );
    }
    // The undisturbed build, and how long it takes.
    let clean_store = project.path("clean-store");
    let clean_digest_file = project.path("clean-digest");
    let started = Instant::now();
    executor_e2e::ok(&mut crash_build(
        &project,
        &clean_store,
        &registry.host,
        &registry.reference("crash/clean:1"),
        &registry.reference("crash/clean-cache"),
        &clean_digest_file,
    ));
    let duration = started.elapsed();
    let expected = fs::read_to_string(&clean_digest_file).unwrap();

    let mut seeded = Seeded(0x5eed_0017);
    for point in 0..crash_points() {
        // Each point its own store and cache repository: every one starts
        // from nothing, so a kill can land in any phase.
        let store = project.path(&format!("store-{point}"));
        let destination = registry.reference(&format!("crash/p{point}:1"));
        let cache_repo = registry.reference(&format!("crash/p{point}-cache"));
        let digest_file = project.path(&format!("digest-{point}"));
        let delay = duration.mul_f64(seeded.next_fraction());
        let mut child = crash_build(
            &project,
            &store,
            &registry.host,
            &destination,
            &cache_repo,
            &digest_file,
        )
        .spawn()
        .unwrap();
        std::thread::sleep(delay);
        // It may have finished already: then this point checks a rerun.
        let _ = child.kill();
        child.wait().unwrap();
        let stderr = executor_e2e::ok(&mut crash_build(
            &project,
            &store,
            &registry.host,
            &destination,
            &cache_repo,
            &digest_file,
        ));
        assert_eq!(
            fs::read_to_string(&digest_file).unwrap(),
            expected,
            "point {point} (killed after {delay:?}): {stderr}"
        );
        assert_eq!(mounts_under(&store), Vec::<String>::new(), "point {point}");
        // Temporary files beside blobs (a killed writer's) are gone too.
        assert_eq!(
            find(&store.join("blobs"), "."),
            Vec::<PathBuf>::new(),
            "point {point}"
        );
    }
}

/// Four builds at once on one `--cache-dir` and one cache repository: all
/// succeed, with the image an undisturbed build gives.
#[test]
fn four_builds_at_once_share_a_store() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = Project::new(
        &format!("FROM {base}\nCOPY data /data\nRUN seq 1 5000 > /numbers\n"),
        &[("data/a", "a\n"), ("data/b", "b\n")],
    );
    let clean_digest_file = project.path("clean-digest");
    executor_e2e::ok(&mut crash_build(
        &project,
        &project.path("clean-store"),
        &registry.host,
        &registry.reference("together/clean:1"),
        &registry.reference("together/clean-cache"),
        &clean_digest_file,
    ));
    let expected = fs::read_to_string(&clean_digest_file).unwrap();

    let store = project.path("shared-store");
    let cache_repo = registry.reference("together/cache");
    let children: Vec<_> = (0..4)
        .map(|i| {
            crash_build(
                &project,
                &store,
                &registry.host,
                &registry.reference(&format!("together/b{i}:1")),
                &cache_repo,
                &project.path(&format!("digest-{i}")),
            )
            .spawn()
            .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "build {i}: {stderr}");
        assert_eq!(
            fs::read_to_string(project.path(&format!("digest-{i}"))).unwrap(),
            expected,
            "build {i}"
        );
    }
    assert_eq!(find(&store.join("tmp"), "build-"), Vec::<PathBuf>::new());
}

/// The largest blob of the store at `store` (a base image's layer).
fn largest_blob(store: &Path) -> PathBuf {
    fs::read_dir(store.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap()
}

/// Whether the blob at `path` holds what its name says.
fn sound(path: &Path) -> bool {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
        == path.file_name().unwrap().to_string_lossy()
}

/// A base layer blob damaged in place (same size: no cheap sign of it),
/// its extracted copy gone (as prune removes it): the next build, in
/// either snapshot mode, finds it damaged before using it, downloads it
/// again and succeeds.
#[test]
fn a_base_blob_corrupted_in_place_is_fetched_again() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    for mode in ["overlay", "full"] {
        let project = Project::new(&format!("FROM {base}\nRUN cat /bin/busybox > /copy\n"), &[]);
        let args = [
            "--no-push",
            "--insecure-registry",
            &registry.host,
            "--snapshot-mode",
            mode,
        ];
        project.ok(&args);
        let store = project.cache();
        let blob = largest_blob(&store);
        let mut data = fs::read(&blob).unwrap();
        let middle = data.len() / 2;
        data[middle] ^= 0xff;
        fs::write(&blob, &data).unwrap();
        assert!(!sound(&blob));
        let layers = store.join("layers");
        if layers.exists() {
            fs::remove_dir_all(&layers).unwrap();
        }

        let stderr = project.ok(&args);
        assert!(
            sound(&blob),
            "{mode}: the blob was not fetched again: {stderr}"
        );
    }
}

/// A writer killed (SIGKILL) while it wrote a blob into `blobs/sha256/`
/// leaves its temporary file there; the next build removes it, but not one
/// whose writer still holds its lock.
#[test]
fn a_killed_writers_temporary_blob_file_goes_at_the_next_build() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = Project::new(&format!("FROM {base}\nRUN true\n"), &[]);
    let args = ["--no-push", "--insecure-registry", &registry.host];
    project.ok(&args);
    let blobs = project.cache().join("blobs/sha256");
    let hex = largest_blob(&project.cache())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // Writers as oci_layout makes them: the file's `flock` held while it is
    // written.
    let writer = |name: &str| {
        let path = blobs.join(format!(".{hex}.{name}"));
        fs::write(&path, b"part of a blob").unwrap();
        // The shell becomes `sleep` still holding the locked descriptor:
        // the process killed is the lock's holder.
        let child = Command::new("sh")
            .args(["-c", "exec 9<\"$0\" && flock -x 9 && exec sleep 600"])
            .arg(&path)
            .stdin(Stdio::null())
            .spawn()
            .expect("sh and flock run (util-linux)");
        (path, child)
    };
    let (killed, mut killed_writer) = writer("killed");
    let (live, mut live_writer) = writer("alive");
    // Not a timing assertion: a bound on a wait for `flock` to lock.
    let deadline = Instant::now() + Duration::from_secs(60);
    let locked = |path: &Path| {
        fs::read_to_string("/proc/locks").unwrap().lines().any(|l| {
            let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(path).unwrap());
            l.contains(&format!(":{inode} "))
        })
    };
    while !(locked(&killed) && locked(&live)) {
        assert!(Instant::now() < deadline, "flock did not lock the files");
        std::thread::sleep(Duration::from_millis(20));
    }
    killed_writer.kill().unwrap();
    killed_writer.wait().unwrap();

    project.ok(&args);
    assert!(!killed.exists(), "the killed writer's file is still there");
    assert!(live.exists(), "a live writer's file was removed");
    live_writer.kill().unwrap();
    live_writer.wait().unwrap();
    project.ok(&args);
    assert_eq!(find(&blobs, "."), Vec::<PathBuf>::new());
}

/// `executor serve` holds no handle on its runners' store while no run
/// runs: `executor cache prune` on it goes ahead.
#[test]
fn prune_runs_while_a_server_is_idle() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = Project::new(&format!("FROM {base}\nRUN true\n"), &[]);
    project.ok(&["--no-push", "--insecure-registry", &registry.host]);
    let store = project.cache();
    let listen = format!("127.0.0.1:{}", free_port());
    let config = project.path("executor.toml");
    fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\ndata_dir = \"{}\"\nbase_url = \"http://ci.example.test\"\n\n[runner]\ncache_dir = \"{}\"\n",
            project.path("data").display(),
            store.display()
        ),
    )
    .unwrap();
    let mut server = Command::new(executor_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--runners", "1"])
        .env("TMPDIR", project.path("tmp"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Not a timing assertion: a bound on a wait for the server to listen.
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(&listen).is_err() {
        if let Ok(Some(status)) = server.try_wait() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut server.stderr.take().unwrap(), &mut stderr).unwrap();
            panic!("executor serve exited ({status}): {stderr}");
        }
        assert!(Instant::now() < deadline, "executor serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pruned = project
        .executor()
        .args(["cache", "prune", "--max-size", "0", "--cache-dir"])
        .arg(&store)
        .output()
        .unwrap();
    let _ = server.kill();
    server.wait().unwrap();
    assert!(
        pruned.status.success(),
        "{}",
        String::from_utf8_lossy(&pruned.stderr)
    );
    assert_eq!(find(&store.join("blobs/sha256"), ""), Vec::<PathBuf>::new());
}
