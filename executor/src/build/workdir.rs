//! A build's scratch space: a `build-*` directory under the store's `tmp/`
//! holding stage root filesystems and staging trees, removed when the build
//! ends. A build that dies (killed, out of memory, power loss) cannot remove
//! its own, so every build holds a lock on a file in its directory, and the
//! next build on the same store removes the directories whose lock nobody
//! holds: they can be gigabytes, and may hold the plain text of the build's
//! secrets (`stage-*/run/secrets/secret-*`, when no tmpfs could be mounted
//! there), which go first. Mounts a killed build
//! left there (its stages' overlays) are detached before anything is
//! removed, so the removal never reaches into a mounted tree.
//!
//! A directory is visible before its lock is taken; a cleaner that takes
//! the lock in between removes it, and the new build, once it has its
//! lock, sees its lock file gone and makes another directory.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{FlockOperation, flock};
use rustix::mount::{UnmountFlags, unmount};

use crate::sandbox::mountinfo;

const LOCK_FILE: &str = ".lock";
const PREFIX: &str = "build-";
/// A directory this young without a lock file may belong to a build that
/// has not made it yet: left alone.
const GRACE: Duration = Duration::from_secs(60);
/// How many times a build makes a new directory when a cleaner removed the
/// one it had just made.
const ATTEMPTS: usize = 8;

/// A locked scratch directory, removed on drop.
#[derive(Debug)]
pub struct ScratchDir {
    /// Kept from its `TempDir` once locked: the drop below removes it, and
    /// says when it cannot (the `TempDir`'s would not).
    dir: PathBuf,
    _lock: File,
}

impl ScratchDir {
    /// Creates a locked `build-*` directory in `parent`, after removing the
    /// abandoned ones there.
    pub fn create(parent: &Path) -> io::Result<Self> {
        fs::create_dir_all(parent)?;
        remove_abandoned(parent);
        let mut attempt = 0;
        loop {
            let dir = tempfile::Builder::new().prefix(PREFIX).tempdir_in(parent)?;
            let lock_path = dir.path().join(LOCK_FILE);
            let made = File::create(&lock_path).and_then(|lock| {
                // Blocking: a cleaner holding it is about to remove the
                // directory, after which the check below fails.
                flock(&lock, FlockOperation::LockExclusive)?;
                Ok(lock)
            });
            attempt += 1;
            match made {
                Ok(lock) if is_same_file(&lock, &lock_path) => {
                    return Ok(Self {
                        dir: dir.keep(),
                        _lock: lock,
                    });
                }
                Ok(_) | Err(_) if attempt < ATTEMPTS => {}
                Ok(_) => {
                    return Err(io::Error::other(format!(
                        "{}: build directories removed as they were made",
                        parent.display()
                    )));
                }
                Err(err) => return Err(err),
            }
        }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // What the build mounted here is unmounted by then, unless an
        // unmount failed: detached first, so that the removal neither stops
        // at it nor reaches into it.
        detach_mounts_under(&self.dir);
        if let Err(err) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(path = %self.dir.display(), %err, "cannot remove the build's scratch directory");
        }
    }
}

/// Removes every `build-*` directory in `parent` whose lock no process
/// holds (or that has no lock file, once past the grace period). Failures
/// are logged, never fatal: this is housekeeping.
fn remove_abandoned(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_build_dir = entry.file_name().to_string_lossy().starts_with(PREFIX)
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if is_build_dir && let Some(_lock) = abandoned(&path) {
            remove_secrets(&path);
            detach_mounts_under(&path);
            match fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::debug!(path = %path.display(), "removed an abandoned build directory");
                }
                Err(err) => {
                    tracing::debug!(path = %path.display(), %err, "cannot remove an abandoned build directory");
                }
            }
        }
    }
}

/// Why a build directory may be removed.
enum Abandoned {
    /// Its lock, free, now held until the directory is gone.
    Unlocked(#[expect(dead_code, reason = "held, not read")] File),
    /// It has no lock file and is older than [`GRACE`].
    NoLock,
}

/// Whether `dir` is abandoned: its lock file is there and nobody holds it,
/// or it has none and is older than [`GRACE`].
fn abandoned(dir: &Path) -> Option<Abandoned> {
    match File::open(dir.join(LOCK_FILE)) {
        Ok(lock) => flock(&lock, FlockOperation::NonBlockingLockExclusive)
            .is_ok()
            .then_some(Abandoned::Unlocked(lock)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let young = fs::metadata(dir)
                .and_then(|m| m.modified())
                .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() < GRACE);
            (!young).then_some(Abandoned::NoLock)
        }
        Err(_) => None,
    }
}

/// Whether the open `file` is still what `path` names.
fn is_same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Removes the secrets a dead build wrote (`stage-*/run/secrets/*`, and
/// `stage-*/run/secret-*` of older versions), before the rest of its
/// directory: if that removal stops halfway, they are gone.
fn remove_secrets(dir: &Path) {
    let Ok(stages) = fs::read_dir(dir) else {
        return;
    };
    for stage in stages.flatten() {
        let run = stage.path().join("run");
        let entries = [run.clone(), run.join("secrets")]
            .into_iter()
            .filter_map(|d| fs::read_dir(d).ok())
            .flatten()
            .flatten();
        for entry in entries {
            if entry.file_name().to_string_lossy().starts_with("secret-") {
                let path = entry.path();
                if let Err(err) = fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), %err, "cannot remove a dead build's secret");
                }
            }
        }
    }
}

/// Detaches every mount at or below `dir` (deepest first): a killed build
/// leaves its stages' overlays mounted, a finished one those it could not
/// unmount.
fn detach_mounts_under(dir: &Path) {
    let mut points = mountinfo::mount_points_under(dir);
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        match unmount(&point, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW) {
            Ok(()) => tracing::debug!(path = %point.display(), "detached a dead build's mount"),
            Err(err) => {
                tracing::debug!(path = %point.display(), %err, "cannot detach a dead build's mount");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path) {
        let old = SystemTime::now() - 2 * GRACE;
        File::open(path).unwrap().set_modified(old).unwrap();
    }

    #[test]
    fn abandoned_directories_go_live_and_young_ones_stay() {
        let parent = tempfile::tempdir().unwrap();
        // A live build: locked, and old.
        let live = ScratchDir::create(parent.path()).unwrap();
        age(live.path());
        // A dead build: its lock file is there, nobody holds it.
        let dead = parent.path().join("build-dead");
        fs::create_dir_all(dead.join("stage-0/rootfs")).unwrap();
        File::create(dead.join(LOCK_FILE)).unwrap();
        age(&dead);
        // Its secret, readable until the directory is removed.
        fs::create_dir_all(dead.join("stage-1/run/secrets")).unwrap();
        fs::write(dead.join("stage-1/run/secrets/secret-0"), "hunter2").unwrap();
        // A build killed a moment ago: its lock is free, so it goes too.
        let just_dead = parent.path().join("build-just-dead");
        fs::create_dir_all(just_dead.join("stage-0/run")).unwrap();
        fs::write(just_dead.join("stage-0/run/secret-0"), "hunter2").unwrap();
        File::create(just_dead.join(LOCK_FILE)).unwrap();
        // A build that has just made its directory, no lock file yet.
        let young = parent.path().join("build-young");
        fs::create_dir(&young).unwrap();
        // Not ours at all.
        let other = parent.path().join("blob-123");
        fs::create_dir(&other).unwrap();
        age(&other);

        let next = ScratchDir::create(parent.path()).unwrap();
        assert!(!dead.exists(), "the abandoned directory is removed");
        assert!(!just_dead.exists(), "however young, once its lock is free");
        assert!(live.path().is_dir(), "a locked one stays");
        assert!(young.is_dir(), "a young one stays");
        assert!(other.is_dir(), "only build directories are touched");
        let path = next.path().to_path_buf();
        drop(next);
        assert!(!path.exists(), "a finished build removes its own");
    }

    #[test]
    fn secrets_go_first() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("stage-3/run/secrets")).unwrap();
        fs::create_dir_all(dir.path().join("stage-3/rootfs")).unwrap();
        fs::write(dir.path().join("stage-3/run/secrets/secret-1"), "s").unwrap();
        fs::write(dir.path().join("stage-3/run/secret-2"), "s").unwrap();
        fs::write(dir.path().join("stage-3/run/other"), "o").unwrap();
        remove_secrets(dir.path());
        assert!(!dir.path().join("stage-3/run/secrets/secret-1").exists());
        assert!(!dir.path().join("stage-3/run/secret-2").exists());
        assert!(dir.path().join("stage-3/run/other").exists());
    }
}
