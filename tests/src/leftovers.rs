//! What a build must not leave behind, whether it succeeded, failed or was
//! killed: processes (found by a marker the test's Dockerfile puts on their
//! command line), mounts visible to the test process, and `build-*`
//! scratch directories under the store's `tmp/`.

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
    mounts: Vec<String>,
}

impl Leftovers {
    /// Records the mounts now; `store` is the build's `--cache-dir`.
    #[must_use]
    pub fn before(store: &Path) -> Self {
        Self {
            store: store.to_path_buf(),
            mounts: mounts(),
        }
    }

    /// Asserts that nothing of the build is left: no process with `marker`
    /// on its command line (waiting up to 5 s for the kernel to reap the
    /// killed ones), no mount that was not there before (and none below the
    /// store), no `build-*` directory under the store's `tmp/`.
    pub fn assert_none(&self, marker: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = processes_with(marker);
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "processes left behind by the build: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let now = mounts();
        let new: Vec<&String> = now.iter().filter(|m| !self.mounts.contains(m)).collect();
        assert!(new.is_empty(), "mounts left behind by the build: {new:?}");
        let store = self.store.display().to_string();
        let below: Vec<&String> = now.iter().filter(|m| m.starts_with(&store)).collect();
        assert!(below.is_empty(), "mounts left below the store: {below:?}");
        let tmp = self.store.join("tmp");
        let dirs: Vec<String> = fs::read_dir(&tmp)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with("build-"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            dirs.is_empty(),
            "scratch directories left in {}: {dirs:?}",
            tmp.display()
        );
    }
}
