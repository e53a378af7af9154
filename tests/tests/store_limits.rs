//! The local store (`--cache-dir`) at its limits, end to end: a file system
//! that fills up while a build writes a layer or runs a step, then gets
//! space back. Each test mounts its own small tmpfs in its own temp dir
//! (and unmounts it, also when it fails), and looks only at what it made.

use std::path::{Path, PathBuf};
use std::process::Command;

use executor_e2e::{Project, Registry, RegistryKind, fails, ok};

/// A tmpfs of `size` mounted at `dir`, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        ok(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700"))
            .arg("tmpfs")
            .arg(dir));
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Gives the file system `size` (space comes back).
    fn resize(&self, size: &str) {
        ok(Command::new("mount")
            .args(["-o"])
            .arg(format!("remount,size={size}"))
            .arg(&self.dir));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// Random bytes (they do not compress): `len` of them.
fn random(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// A project built FROM the tests' busybox with `steps` into a store on
/// a tmpfs of `size`, pushed as `full/NAME:1`.
/// Fields drop in order: the tmpfs is unmounted before the project's
/// directory holding it is removed.
struct SmallStore {
    tmpfs: Tmpfs,
    registry: Registry,
    project: Project,
    store: PathBuf,
    destination: String,
}

impl SmallStore {
    fn new(steps: &str, size: &str, name: &str) -> Self {
        let registry = Registry::start(RegistryKind::Anonymous);
        let base = registry.push_busybox();
        let project = Project::new(&format!("FROM {base}\n{steps}"), &[]);
        let store = project.path("small-store");
        let tmpfs = Tmpfs::mount(&store, size);
        let destination = registry.reference(&format!("full/{name}:1"));
        Self {
            tmpfs,
            registry,
            project,
            store,
            destination,
        }
    }

    fn build(&self) -> Command {
        let args = [
            "-d",
            &self.destination,
            "--insecure-registry",
            &self.registry.host,
        ];
        self.project.build_in(&self.store, &args)
    }
}

/// A gzip layer that does not fit: one clear error naming the store's
/// file and the cause, no panic; with space back, the same store builds.
#[test]
fn a_full_store_fails_a_layer_write_clearly_and_serves_again() {
    let small = SmallStore::new("COPY big.bin /big.bin\n", "40m", "layer");
    // Larger than the store: a build without RUN keeps no copy of the
    // file besides the layer's blob.
    small.project.write("big.bin", random(48 << 20));

    let stderr = fails(&mut small.build());
    assert!(!stderr.contains("internal error"), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot write {}/tmp/", small.store.display())),
        "the error names the file in the store: {stderr}"
    );

    small.tmpfs.resize("256m");
    ok(&mut small.build());
    assert_eq!(
        small.registry.digest_of(&small.destination).len(),
        "sha256:".len() + 64
    );
}

/// A RUN that fails because the store's file system is full says so,
/// with the store's path; with space back, the same store builds.
#[test]
fn a_run_failing_on_a_full_store_says_so() {
    let small = SmallStore::new(
        "RUN dd if=/dev/zero of=/fill bs=1M count=64 && rm /fill\n",
        "24m",
        "run",
    );

    let stderr = fails(&mut small.build());
    assert!(stderr.contains("exited with status 1"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the file system of the store {} is full (no space left on device)",
            small.store.display()
        )),
        "{stderr}"
    );

    small.tmpfs.resize("256m");
    ok(&mut small.build());
}

/// A RUN's layer is written while the build goes on: when it does not
/// fit, the build still fails naming that RUN and the cause, and leaves no
/// partial blob in the store; with space back, the same store builds.
#[test]
fn a_run_layer_that_does_not_fit_fails_naming_its_step() {
    // The step's 12 MiB fit in its upper directory; their layer (random
    // bytes do not compress) does not fit beside them.
    let small = SmallStore::new(
        "RUN head -c 12582912 /dev/urandom > /big\nENV AFTER=1\n",
        "20m",
        "run-layer",
    );

    let stderr = fails(&mut small.build());
    assert!(stderr.contains(":2: RUN failed"), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot write {}/tmp/blob-", small.store.display())),
        "the layer's write failed, not the step: {stderr}"
    );
    assert!(stderr.contains("No space left on device"), "{stderr}");
    let partial: Vec<_> = std::fs::read_dir(small.store.join("tmp"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("blob-"))
        .collect();
    assert!(partial.is_empty(), "partial blobs left: {partial:?}");

    small.tmpfs.resize("256m");
    ok(&mut small.build());
}

/// `executor cache prune`: a dry run lists and keeps, a real one empties
/// the store down to the size, refused while a build holds the store; the
/// next build fetches again what it needs.
#[test]
fn cache_prune_empties_the_store_and_the_next_build_refetches() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = Project::new(&format!("FROM {base}\nRUN echo hi > /hi\n"), &[]);
    let destination = registry.reference("prune/app:1");
    let args = ["-d", &destination, "--insecure-registry", &registry.host];
    ok(&mut project.build(&args));
    let store = project.cache();
    let store_arg = store.display().to_string();
    let prune = |extra: &[&str]| {
        let mut cmd = project.executor();
        cmd.args(["cache", "prune", "--cache-dir", &store_arg])
            .args(extra);
        cmd
    };
    // Items, not the store's locks and markers (dot files).
    let count = |dir: &str| {
        std::fs::read_dir(store.join(dir))
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count()
    };
    let blobs = || count("blobs/sha256");
    let before = blobs();
    assert!(before > 2);

    let out = prune(&["--max-size", "0", "--dry-run"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("would remove extracted layer"), "{stdout}");
    assert!(stdout.contains("(dry run)"), "{stdout}");
    assert_eq!(blobs(), before, "a dry run removes nothing");

    let out = prune(&["--max-size", "0"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(&format!("{store_arg}: ")), "{stdout}");
    assert!(stdout.contains(" after"), "{stdout}");
    assert_eq!(blobs(), 0, "{stdout}");
    assert_eq!(count("layers/sha256"), 0, "{stdout}");

    let stderr = fails(&mut prune(&[]));
    assert!(
        stderr.contains("give --max-size SIZE or --older-than DURATION"),
        "{stderr}"
    );

    ok(&mut project.build(&args));
}
