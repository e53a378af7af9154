//! The in-place snapshot's metadata walk: every entry of a root filesystem
//! with what identifies its state — inode, size, modification and change
//! times, mode, owner, device number, link target — and the layer entries
//! that turn one walk into the next.
//!
//! No file content is read to compare: a step cannot change an entry
//! without changing its ctime, which no system call lets a process set (a
//! rewrite with its mtime put back, a chmod, a chown, an xattr all move it),
//! so equal records mean an unchanged entry. Only the entries that changed
//! are read, when the layer is written. This is what lets a snapshot of
//! half a million files take seconds, where kaniko hashes every file.
//!
//! The walk is parallel over directories with rayon's work-stealing scope
//! (rayon rather than jwalk or ignore's `WalkParallel`: both sort or filter
//! entries through their own iterator types and hand back `DirEntry`s that
//! still need the `lstat` we do anyway; a scope that spawns one task per
//! directory is all this needs, and keeps every core busy on a deep or wide
//! tree). Skipped paths (the protected ones: `/proc`, the store, mounts...)
//! are left out with everything below them. Entries that vanish while the
//! tree is walked are left out.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::image::layer::{self, EntryKind, LayerEntry, LayerError};

/// Why a walk failed.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Layer(#[from] LayerError),
}

type Result<T, E = WalkError> = std::result::Result<T, E>;

/// What identifies one entry's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub ino: u64,
    pub dev: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    /// File type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub nlink: u64,
    /// Symlinks only.
    pub target: Option<PathBuf>,
}

impl Record {
    fn of(path: &Path, meta: &fs::Metadata) -> io::Result<Self> {
        let target = if meta.file_type().is_symlink() {
            Some(fs::read_link(path)?)
        } else {
            None
        };
        Ok(Self {
            ino: meta.ino(),
            dev: meta.dev(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev(),
            nlink: meta.nlink(),
            target,
        })
    }

    fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// Equal but for the change time: for the paths the executor itself
    /// touched around the step (a mount target it filled and emptied, the
    /// parent whose times it put back).
    fn same_but_ctime(&self, other: &Self) -> bool {
        Self {
            ctime: other.ctime,
            ..self.clone()
        } == *other
    }
}

/// One walk: every entry below the root (relative paths) but the skipped.
#[derive(Debug, Default)]
pub struct Walk {
    pub entries: HashMap<PathBuf, Record>,
}

impl Walk {
    /// Walks `root`, leaving out `skip` (relative paths) and what is below.
    pub fn of(root: &Path, skip: &HashSet<PathBuf>) -> Result<Self> {
        let found = Mutex::new(Vec::new());
        let failed = Mutex::new(None);
        rayon::scope(|scope| visit(scope, root, Path::new(""), skip, &found, &failed));
        if let Some(err) = failed
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            return Err(err);
        }
        let found = found
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut entries = HashMap::with_capacity(found.iter().map(Vec::len).sum());
        for batch in found {
            entries.extend(batch);
        }
        Ok(Self { entries })
    }

    /// The layer entries that turn `before` into `self` (the tree at
    /// `root` now), sorted by path as [`crate::image::diff::diff_trees`]
    /// gives them: every new or changed entry, its parent directories, a
    /// whiteout for each removed path (not below a removed directory), and
    /// the other paths of a changed file's inode as hard links to the first.
    /// `relaxed` paths are compared without their change time.
    pub fn diff(
        &self,
        before: &Walk,
        root: &Path,
        relaxed: &HashSet<PathBuf>,
    ) -> Result<Vec<LayerEntry>> {
        let mut changed: BTreeSet<&Path> = BTreeSet::new();
        for (rel, record) in &self.entries {
            let same = before.entries.get(rel).is_some_and(|old| {
                old == record || (relaxed.contains(rel) && old.same_but_ctime(record))
            });
            if !same {
                changed.insert(rel);
            }
        }
        // Every path of a changed inode with several links.
        let linked: Vec<(u64, u64)> = changed
            .iter()
            .map(|rel| &self.entries[*rel])
            .filter(|r| !r.is_dir() && r.nlink > 1)
            .map(|r| (r.dev, r.ino))
            .collect();
        let mut groups: HashMap<(u64, u64), Vec<&Path>> = HashMap::new();
        if !linked.is_empty() {
            let linked: HashSet<(u64, u64)> = linked.into_iter().collect();
            for (rel, record) in &self.entries {
                if !record.is_dir() && linked.contains(&(record.dev, record.ino)) {
                    groups
                        .entry((record.dev, record.ino))
                        .or_default()
                        .push(rel);
                    changed.insert(rel);
                }
            }
        }
        let mut included: BTreeSet<PathBuf> = BTreeSet::new();
        for rel in &changed {
            for parent in rel.ancestors().skip(1) {
                if parent.as_os_str().is_empty() || included.contains(parent) {
                    break;
                }
                if !changed.contains(parent) {
                    included.insert(parent.to_path_buf());
                }
            }
            included.insert(rel.to_path_buf());
        }
        let mut out = BTreeMap::new();
        for rel in &included {
            let path = root.join(rel);
            let meta = fs::symlink_metadata(&path).map_err(|source| WalkError::Read {
                path: path.clone(),
                source,
            })?;
            if let Some((entry, _)) = layer::entry_for(&path, rel.clone(), &meta, false)? {
                out.insert(rel.clone(), entry);
            }
        }
        for mut group in groups.into_values() {
            group.sort();
            let first = group[0].to_path_buf();
            for rel in &group[1..] {
                if let Some(entry) = out.get_mut(*rel) {
                    entry.kind = EntryKind::Hardlink(first.clone());
                }
            }
        }
        for rel in before.entries.keys() {
            if self.entries.contains_key(rel) {
                continue;
            }
            let parent_gone = rel.ancestors().skip(1).any(|parent| {
                !parent.as_os_str().is_empty()
                    && !self.entries.contains_key(parent)
                    && before.entries.contains_key(parent)
            });
            if !parent_gone {
                out.insert(
                    rel.clone(),
                    LayerEntry::new(rel.clone(), EntryKind::Whiteout),
                );
            }
        }
        // A directory that replaced a file at a path keeps its entry; a
        // path replaced by another type is one changed entry, no whiteout.
        Ok(out.into_values().collect())
    }
}

fn visit<'s>(
    scope: &rayon::Scope<'s>,
    root: &'s Path,
    rel: &Path,
    skip: &'s HashSet<PathBuf>,
    found: &'s Mutex<Vec<Vec<(PathBuf, Record)>>>,
    failed: &'s Mutex<Option<WalkError>>,
) {
    let dir = root.join(rel);
    let read = match fs::read_dir(&dir) {
        Ok(read) => read,
        // Removed meanwhile, or replaced by a non-directory.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => return,
        Err(source) => {
            fail(failed, dir, source);
            return;
        }
    };
    let mut batch = Vec::new();
    for entry in read {
        let entry = match entry {
            Ok(entry) => entry,
            Err(source) => {
                fail(failed, dir, source);
                return;
            }
        };
        let child = rel.join(entry.file_name());
        if skip.contains(&child) {
            continue;
        }
        let path = entry.path();
        // DirEntry::metadata is an fstatat relative to the directory (no
        // symlink followed): no path resolution from the root per entry.
        let record = match entry.metadata().and_then(|meta| Record::of(&path, &meta)) {
            Ok(record) => record,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                fail(failed, path, source);
                return;
            }
        };
        if record.is_dir() {
            let child = child.clone();
            scope.spawn(move |scope| visit(scope, root, &child, skip, found, failed));
        }
        batch.push((child, record));
    }
    found
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(batch);
}

fn fail(failed: &Mutex<Option<WalkError>>, path: PathBuf, source: io::Error) {
    failed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_or_insert(WalkError::Read { path, source });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::upper::tests::kinds;
    use std::os::unix::fs::{PermissionsExt as _, symlink};

    fn base(root: &Path) {
        for dir in ["etc", "usr/bin", "var/lib/gone", "proc/1"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        fs::write(root.join("etc/config"), "a=1\n").unwrap();
        fs::write(root.join("etc/mode"), "x").unwrap();
        fs::write(root.join("etc/same"), "kept").unwrap();
        fs::write(root.join("usr/bin/tool"), "tool").unwrap();
        fs::write(root.join("var/lib/gone/file"), "bye").unwrap();
        fs::write(root.join("proc/1/status"), "skipped").unwrap();
        symlink("config", root.join("etc/link")).unwrap();
    }

    #[test]
    fn changes_are_found_by_metadata_and_skipped_paths_are_not_walked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        base(root);
        let skip: HashSet<PathBuf> = [PathBuf::from("proc")].into();
        let before = Walk::of(root, &skip).unwrap();
        assert!(!before.entries.keys().any(|p| p.starts_with("proc")));
        // A same-size rewrite with the old mtime put back: ctime moves.
        let old = fs::metadata(root.join("etc/config")).unwrap();
        fs::write(root.join("etc/config"), "a=2\n").unwrap();
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: old.atime(),
                tv_nsec: old.atime_nsec(),
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: old.mtime(),
                tv_nsec: old.mtime_nsec(),
            },
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            root.join("etc/config"),
            &times,
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
        fs::set_permissions(root.join("etc/mode"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::remove_dir_all(root.join("var/lib/gone")).unwrap();
        fs::write(root.join("usr/bin/new"), "new").unwrap();
        fs::hard_link(root.join("usr/bin/new"), root.join("usr/bin/new2")).unwrap();
        fs::write(root.join("proc/1/status"), "changed, but skipped").unwrap();
        let after = Walk::of(root, &skip).unwrap();
        let entries = after.diff(&before, root, &HashSet::new()).unwrap();
        let got = kinds(&entries);
        let want: Vec<(String, String)> = [
            ("etc", "dir"),
            ("etc/config", "file"),
            ("etc/mode", "file"),
            ("usr", "dir"),
            ("usr/bin", "dir"),
            ("usr/bin/new", "file"),
            ("usr/bin/new2", "link:usr/bin/new"),
            ("var", "dir"),
            ("var/lib", "dir"),
            ("var/lib/gone", "whiteout"),
        ]
        .iter()
        .map(|(p, k)| ((*p).to_string(), (*k).to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn an_unchanged_tree_has_no_entries_and_relaxed_paths_ignore_ctime() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        base(root);
        let before = Walk::of(root, &HashSet::new()).unwrap();
        // chown to the same owner moves only the ctime.
        let meta = fs::metadata(root.join("etc/same")).unwrap();
        std::os::unix::fs::chown(root.join("etc/same"), Some(meta.uid()), Some(meta.gid()))
            .unwrap();
        let after = Walk::of(root, &HashSet::new()).unwrap();
        let relaxed: HashSet<PathBuf> = [PathBuf::from("etc/same")].into();
        assert!(after.diff(&before, root, &relaxed).unwrap().is_empty());
        let strict = after.diff(&before, root, &HashSet::new()).unwrap();
        assert_eq!(
            kinds(&strict),
            vec![
                ("etc".to_string(), "dir".to_string()),
                ("etc/same".into(), "file".into())
            ]
        );
    }
}
