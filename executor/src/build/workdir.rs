//! A build's scratch space: a `build-*` directory under the store's `tmp/`
//! holding stage root filesystems and staging trees, removed when the build
//! ends. A build that dies (killed, out of memory, power loss) cannot remove
//! its own, so every build holds a lock on a file in its directory, and the
//! next build on the same store removes the directories whose lock nobody
//! holds: they can be gigabytes.

use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rustix::fs::{FlockOperation, flock};

const LOCK_FILE: &str = ".lock";
const PREFIX: &str = "build-";
/// A directory this young may belong to a build that has not taken its lock
/// yet: left alone.
const GRACE: Duration = Duration::from_secs(60);

/// A locked scratch directory, removed on drop.
#[derive(Debug)]
pub struct ScratchDir {
    dir: tempfile::TempDir,
    _lock: File,
}

impl ScratchDir {
    /// Creates a locked `build-*` directory in `parent`, after removing the
    /// abandoned ones there.
    pub fn create(parent: &Path) -> io::Result<Self> {
        fs::create_dir_all(parent)?;
        remove_abandoned(parent);
        let dir = tempfile::Builder::new().prefix(PREFIX).tempdir_in(parent)?;
        let lock = File::create(dir.path().join(LOCK_FILE))?;
        flock(&lock, FlockOperation::NonBlockingLockExclusive)?;
        Ok(Self { dir, _lock: lock })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        self.dir.path()
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
        if is_build_dir && abandoned(&path) {
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

fn abandoned(dir: &Path) -> bool {
    let young = fs::metadata(dir)
        .and_then(|m| m.modified())
        .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() < GRACE);
    if young {
        return false;
    }
    match File::open(dir.join(LOCK_FILE)) {
        // Our lock is released as soon as we drop the file: nothing else
        // happens between taking it and removing the directory.
        Ok(lock) => flock(&lock, FlockOperation::NonBlockingLockExclusive).is_ok(),
        Err(err) => err.kind() == io::ErrorKind::NotFound,
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
        // A build that has just made its directory, not locked yet.
        let young = parent.path().join("build-young");
        fs::create_dir(&young).unwrap();
        // Not ours at all.
        let other = parent.path().join("blob-123");
        fs::create_dir(&other).unwrap();
        age(&other);

        let next = ScratchDir::create(parent.path()).unwrap();
        assert!(!dead.exists(), "the abandoned directory is removed");
        assert!(live.path().is_dir(), "a locked one stays");
        assert!(young.is_dir(), "a young one stays");
        assert!(other.is_dir(), "only build directories are touched");
        let path = next.path().to_path_buf();
        drop(next);
        assert!(!path.exists(), "a finished build removes its own");
    }
}
