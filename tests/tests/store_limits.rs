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

/// A gzip layer that does not fit: one clear error naming the store's
/// file and the cause, no panic; with space back, the same store builds.
#[test]
fn a_full_store_fails_a_layer_write_clearly_and_serves_again() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = Project::new(&format!("FROM {base}\nCOPY big.bin /big.bin\n"), &[]);
    // Larger than the store: a build without RUN keeps no copy of the
    // file besides the layer's blob.
    project.write("big.bin", random(48 << 20));
    let store = project.path("small-store");
    let tmpfs = Tmpfs::mount(&store, "40m");
    let destination = registry.reference("full/layer:1");
    let args = ["-d", &destination, "--insecure-registry", &registry.host];

    let stderr = fails(&mut project.build_in(&store, &args));
    assert!(!stderr.contains("internal error"), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot write {}/tmp/", store.display())),
        "the error names the file in the store: {stderr}"
    );

    tmpfs.resize("256m");
    ok(&mut project.build_in(&store, &args));
    assert_eq!(registry.digest_of(&destination).len(), "sha256:".len() + 64);
}

/// A RUN that fails because the store's file system is full says so,
/// with the store's path; with space back, the same store builds.
#[test]
fn a_run_failing_on_a_full_store_says_so() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = Project::new(
        &format!("FROM {base}\nRUN dd if=/dev/zero of=/fill bs=1M count=64 && rm /fill\n"),
        &[],
    );
    let store = project.path("small-store");
    let tmpfs = Tmpfs::mount(&store, "24m");
    let destination = registry.reference("full/run:1");
    let args = ["-d", &destination, "--insecure-registry", &registry.host];

    let stderr = fails(&mut project.build_in(&store, &args));
    assert!(stderr.contains("exited with status 1"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the file system of the store {} is full (no space left on device)",
            store.display()
        )),
        "{stderr}"
    );

    tmpfs.resize("256m");
    ok(&mut project.build_in(&store, &args));
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
