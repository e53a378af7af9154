//! What the fuzz targets that write files share: a sandbox directory
//! holding the directory the code under test writes into next to a canary
//! tree it must never touch, and a snapshot of a tree (every entry's type,
//! mode, owner, size, modification time, content or link target, read
//! without following symlinks) to show that nothing outside the written
//! directory changed.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

/// One entry of a [`snapshot`].
#[derive(Debug, PartialEq, Eq)]
pub struct Seen {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ino: u64,
    pub nlink: u64,
    /// A file's bytes or a symlink's target.
    pub content: Vec<u8>,
}

/// Every entry at and under `top`, by path; a symlink is recorded, never
/// followed.
///
/// # Panics
/// When `top` cannot be read: the sandbox is broken, not the input.
#[must_use]
pub fn snapshot(top: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut seen = BTreeMap::new();
    let mut pending = vec![top.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = fs::symlink_metadata(&path).expect("sandbox entry is readable");
        let kind = meta.file_type();
        let (kind, content) = if kind.is_dir() {
            for entry in fs::read_dir(&path).expect("sandbox directory is readable") {
                pending.push(entry.expect("sandbox directory entry").path());
            }
            ("dir", Vec::new())
        } else if kind.is_symlink() {
            let target = fs::read_link(&path).expect("sandbox symlink is readable");
            ("symlink", target.into_os_string().into_encoded_bytes())
        } else if kind.is_file() {
            ("file", fs::read(&path).expect("sandbox file is readable"))
        } else {
            ("other", Vec::new())
        };
        seen.insert(
            path,
            Seen {
                kind,
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
                size: meta.len(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                ino: meta.ino(),
                nlink: meta.nlink(),
                content,
            },
        );
    }
    seen
}

/// A fresh directory holding `inside` (empty: where the code under test
/// writes) and `canary` (a few files, a directory, a symlink and a hard
/// link that must come out unchanged), so that an escape through `..`,
/// a symlink or a hard link shows as a change of [`Sandbox::outside`].
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub inside: PathBuf,
    before: BTreeMap<PathBuf, Seen>,
}

impl Sandbox {
    /// # Panics
    /// When the temporary directory cannot be made.
    #[must_use]
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("executor-fuzz-")
            .tempdir()
            .expect("temporary directory");
        let inside = dir.path().join("inside");
        fs::create_dir(&inside).expect("inside directory");
        let canary = dir.path().join("canary");
        fs::create_dir_all(canary.join("etc")).expect("canary directory");
        fs::write(canary.join("file"), b"canary\n").expect("canary file");
        fs::write(canary.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").expect("canary file");
        fs::set_permissions(canary.join("file"), fs::Permissions::from_mode(0o644))
            .expect("canary mode");
        symlink("file", canary.join("link")).expect("canary symlink");
        fs::hard_link(canary.join("file"), canary.join("hard")).expect("canary hard link");
        let mut sandbox = Self {
            dir,
            inside,
            before: BTreeMap::new(),
        };
        sandbox.before = sandbox.outside();
        sandbox
    }

    /// Everything in the sandbox but `inside`, and `inside` itself (its
    /// type and inode: replacing it is an escape too; its mode and owner
    /// are a layer's to set).
    #[must_use]
    pub fn outside(&self) -> BTreeMap<PathBuf, Seen> {
        let mut seen = BTreeMap::new();
        for entry in fs::read_dir(self.dir.path()).expect("sandbox is readable") {
            let path = entry.expect("sandbox entry").path();
            if path == self.inside {
                let meta = fs::symlink_metadata(&path).expect("inside is there");
                let kind = if meta.is_dir() { "dir" } else { "not a dir" };
                seen.insert(
                    path,
                    Seen {
                        kind,
                        mode: 0,
                        uid: 0,
                        gid: 0,
                        size: 0,
                        mtime: (0, 0),
                        ino: meta.ino(),
                        nlink: 0,
                        content: Vec::new(),
                    },
                );
            } else {
                seen.extend(snapshot(&path));
            }
        }
        seen
    }

    /// # Panics
    /// When anything outside `inside` changed: the input escaped.
    pub fn assert_confined(&self, what: &str) {
        let after = self.outside();
        if after != self.before {
            let changed: Vec<_> = self
                .before
                .keys()
                .chain(after.keys())
                .filter(|p| self.before.get(*p) != after.get(*p))
                .collect();
            panic!("{what} changed files outside its directory: {changed:?}");
        }
    }

    /// Makes every directory under `inside` writable and searchable again
    /// (an input may leave a mode-0 directory) so the sandbox can go.
    pub fn unlock(&self) {
        let mut pending = vec![self.inside.clone()];
        while let Some(dir) = pending.pop() {
            let Ok(meta) = fs::symlink_metadata(&dir) else {
                continue;
            };
            if !meta.is_dir() {
                continue;
            }
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
            if let Ok(entries) = fs::read_dir(&dir) {
                pending.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.unlock();
    }
}
