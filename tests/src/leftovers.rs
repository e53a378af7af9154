//! What a build must not leave behind, whether it succeeded, failed or was
//! killed: processes (found by a marker the test's Dockerfile puts on their
//! command line), mounts below the paths the test owns (its store, its temp
//! dir: mounts elsewhere on the machine are other work's, a peer tool's or
//! another test's, and never fail it), and `build-*` scratch directories
//! under the store's `tmp/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The processes whose command line contains `marker`, as (pid, command
/// line), this test process excluded.
#[must_use]
pub fn processes_with(marker: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) {
            found.push((pid, cmdline.trim_end().to_owned()));
        }
    }
    found
}

/// The mount points in `/proc/self/mountinfo`, in order.
fn mounts() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .expect("/proc/self/mountinfo")
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(str::to_owned))
        .collect()
}

/// The state before a build, to compare with after it.
#[derive(Debug)]
pub struct Leftovers {
    store: PathBuf,
    /// The paths the test made: the store and what `owning` adds.
    owned: Vec<PathBuf>,
    mounts: Vec<String>,
}

impl Leftovers {
    /// Records the mounts now; `store` is the build's `--cache-dir`.
    #[must_use]
    pub fn before(store: &Path) -> Self {
        Self {
            store: store.to_path_buf(),
            owned: vec![store.to_path_buf()],
            mounts: mounts(),
        }
    }

    /// Also looks for mounts left below `dir`, a directory of the test's
    /// own (its temp dir, where the builds it starts keep their `TMPDIR`).
    #[must_use]
    pub fn owning(mut self, dir: &Path) -> Self {
        self.owned.push(dir.to_path_buf());
        self
    }

    /// Whether `mount` lies below one of the paths the test owns.
    fn is_owned(&self, mount: &str) -> bool {
        self.owned
            .iter()
            .any(|dir| Path::new(mount).starts_with(dir))
    }

    /// Asserts that nothing of the build is left: no process with `marker`
    /// on its command line (waiting up to 5 s for the kernel to reap the
    /// killed ones), no mount below the test's paths that was not there
    /// before (and none below the store), no `build-*` directory under the
    /// store's `tmp/`.
    pub fn assert_none(&self, marker: &str) {
        if let Err(left) = self.check(marker) {
            panic!("{left}");
        }
    }

    /// What [`Leftovers::assert_none`] asserts, as the first thing left.
    ///
    /// # Errors
    /// What is left behind, with the paths of a scratch directory's entries.
    pub fn check(&self, marker: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = processes_with(marker);
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("processes left behind by the build: {left:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let now = mounts();
        let new: Vec<&String> = now
            .iter()
            .filter(|m| self.is_owned(m) && !self.mounts.contains(m))
            .collect();
        if !new.is_empty() {
            return Err(format!("mounts left behind by the build: {new:?}"));
        }
        let store = self.store.display().to_string();
        let below: Vec<&String> = now.iter().filter(|m| m.starts_with(&store)).collect();
        if !below.is_empty() {
            return Err(format!("mounts left below the store: {below:?}"));
        }
        let tmp = self.store.join("tmp");
        let dirs: Vec<PathBuf> = fs::read_dir(&tmp)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("build-"))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        if dirs.is_empty() {
            return Ok(());
        }
        let mut entries = Vec::new();
        for dir in &dirs {
            tree(dir, &mut entries);
        }
        Err(format!(
            "scratch directories left in {}: {dirs:?}, holding {entries:#?}",
            tmp.display()
        ))
    }
}

/// Every path below `dir`, depth first (up to 200 of them).
fn tree(dir: &Path, into: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if into.len() >= 200 {
            return;
        }
        into.push(entry.path());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            tree(&entry.path(), into);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mounts_below_the_tests_own_paths_count() {
        let leftovers = Leftovers::before(Path::new("/tmp/t1/store")).owning(Path::new("/tmp/t1"));
        assert!(leftovers.is_owned("/tmp/t1/store/tmp/build-1/rootfs"));
        assert!(leftovers.is_owned("/tmp/t1/tmp/executor-probe-x"));
        // Another test's, or a peer tool's, mounts.
        assert!(!leftovers.is_owned("/tmp/t10/store"));
        assert!(!leftovers.is_owned("/var/lib/containers/storage/overlay/x/merged"));
    }
}
