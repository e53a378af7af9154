//! Moving a staged tree into a root filesystem: the result of applying the
//! layer that was written from that tree, without reading the layer back.
//!
//! A COPY or WORKDIR stages exactly its layer's content in a directory
//! beside the stage's root, writes the layer from it, and then needs the
//! root to look as if the layer had been applied. Decompressing and
//! extracting the layer again costs a full pass over its data and one new
//! inode per file; renaming the staged entries into the root costs neither.
//!
//! The rules are the layer's (see the module above): an entry replaces
//! whatever the root has at its path (a symlink included: it is removed,
//! never followed), except that a directory merges into a directory, taking
//! the staged directory's owner, mode, xattrs and modification time. A
//! staged path that the root lacks moves whole, with one `rename`. Every
//! call is made relative to a directory handle opened with `O_NOFOLLOW`
//! from the root's handle, so a symlink in the root is never followed.
//!
//! The staged tree has no whiteouts (a COPY deletes nothing) and is
//! consumed: what was moved is gone from it, and merged directories stay
//! behind empty, for the caller to remove. The root keeps sub-second
//! times where extracting would have kept whole seconds; no layer records
//! them (layers are written with whole seconds), so images do not differ.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self, AtFlags, Dir, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use super::confined::{open_child, remove_all};
use super::{ApplyError, Result, shown};

/// What [`merge_tree`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Staged entries renamed into the root (a directory counts once,
    /// whatever it holds).
    pub moved: u64,
    /// Staged directories merged into a directory the root already had.
    pub merged: u64,
    /// Entries of the root replaced by a staged one.
    pub replaced: u64,
}

/// Moves everything under `staging` (not `staging` itself) into `root`, as
/// applying a layer written from `staging` would change `root`. Both must
/// be on one file system (`EXDEV` otherwise, before anything is changed
/// when the root is empty, possibly half-way otherwise: the caller then
/// discards the root, as after a failed apply).
pub fn merge_tree(staging: &Path, root: &Path) -> Result<MergeStats> {
    let open = |path: &Path| {
        fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ApplyError::Root {
            path: path.to_path_buf(),
            source: e.into(),
        })
    };
    let src = open(staging)?;
    let dst = open(root)?;
    let mut merger = Merger {
        chown: rustix::process::geteuid().is_root(),
        stats: MergeStats::default(),
        path: Vec::new(),
    };
    merger.merge(&src, &dst)?;
    Ok(merger.stats)
}

struct Merger {
    chown: bool,
    stats: MergeStats,
    /// The image path of the directory being merged, for messages.
    path: Vec<Vec<u8>>,
}

impl Merger {
    fn failed(&self, name: &[u8], source: impl Into<io::Error>) -> ApplyError {
        let mut entry = self.path.join(&b'/');
        if !entry.is_empty() {
            entry.push(b'/');
        }
        entry.extend_from_slice(name);
        ApplyError::Entry {
            entry: shown(&entry),
            source: source.into(),
        }
    }

    /// Moves the entries of `src` into `dst`.
    fn merge(&mut self, src: &OwnedFd, dst: &OwnedFd) -> Result<()> {
        let mut names = Vec::new();
        let mut dir = Dir::read_from(src).map_err(|e| self.failed(b".", e))?;
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| self.failed(b".", e))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        names.sort();
        for name in names {
            self.entry(src.as_fd(), dst.as_fd(), &name)?;
        }
        Ok(())
    }

    fn entry(&mut self, src: BorrowedFd<'_>, dst: BorrowedFd<'_>, name: &[u8]) -> Result<()> {
        let staged =
            fs::statat(src, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| self.failed(name, e))?;
        let staged_is_dir = FileType::from_raw_mode(staged.st_mode) == FileType::Directory;
        match fs::statat(dst, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => {}
            Err(e) => return Err(self.failed(name, e)),
            Ok(existing) => {
                let existing_is_dir =
                    FileType::from_raw_mode(existing.st_mode) == FileType::Directory;
                if staged_is_dir && existing_is_dir {
                    return self.merge_dir(src, dst, name, &staged);
                }
                remove_all(dst, name).map_err(|e| self.failed(name, e))?;
                self.stats.replaced += 1;
            }
        }
        fs::renameat(src, name, dst, name).map_err(|e| self.failed(name, e))?;
        self.stats.moved += 1;
        Ok(())
    }

    /// Merges staged directory `name` into the root's directory `name`,
    /// then gives the root's the staged one's metadata (last: moving
    /// entries in changed its time).
    fn merge_dir(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        name: &[u8],
        staged: &fs::Stat,
    ) -> Result<()> {
        let from = open_child(src, name).map_err(|e| self.failed(name, e))?;
        let into = open_child(dst, name).map_err(|e| self.failed(name, e))?;
        self.path.push(name.to_vec());
        self.merge(&from, &into)?;
        self.path.pop();
        self.stats.merged += 1;
        let set = || -> io::Result<()> {
            if self.chown {
                fs::fchown(
                    &into,
                    Some(fs::Uid::from_raw(staged.st_uid)),
                    Some(fs::Gid::from_raw(staged.st_gid)),
                )?;
            }
            copy_xattrs(&from, &into)?;
            fs::fchmod(&into, Mode::from_raw_mode(staged.st_mode & 0o7777))?;
            let mtime = Timespec {
                tv_sec: staged.st_mtime,
                tv_nsec: i64::try_from(staged.st_mtime_nsec).unwrap_or(0),
            };
            fs::futimens(
                &into,
                &Timestamps {
                    last_access: mtime,
                    last_modification: mtime,
                },
            )?;
            Ok(())
        };
        set().map_err(|e| self.failed(name, e))
    }
}

/// Copies the xattrs of directory `from` onto `into` (but
/// `security.selinux`, a host label that layers do not carry), keeping the
/// ones `into` has and `from` lacks, as an apply does.
fn copy_xattrs(from: &OwnedFd, into: &OwnedFd) -> io::Result<()> {
    let len = match fs::flistxattr_query(from) {
        Ok(0) | Err(Errno::NOTSUP) => return Ok(()),
        Ok(len) => len,
        Err(e) => return Err(e.into()),
    };
    let mut list = vec![0u8; len];
    let n = fs::flistxattr(from, &mut list[..])?;
    list.truncate(n);
    for key in list.split(|&b| b == 0).filter(|k| !k.is_empty()) {
        if key == b"security.selinux" {
            continue;
        }
        let len = match fs::fgetxattr_query(from, key) {
            Ok(len) => len,
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut value = vec![0u8; len];
        let n = fs::fgetxattr(from, key, &mut value[..])?;
        value.truncate(n);
        match fs::fsetxattr(into, key, &value, XattrFlags::empty()) {
            Ok(()) => {}
            Err(e @ (Errno::NOTSUP | Errno::PERM | Errno::ACCESS)) => {
                tracing::warn!(xattr = %shown(key), error = %e, "xattr not set");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use super::merge_tree;
    use crate::image::apply::{ApplyOptions, apply_layer};
    use crate::image::layer::{Compression, WriteOptions, layer_from_dir, write_layer};

    /// Everything below `root` a layer can tell apart: type, content or
    /// target, mode, owner, modification time in seconds.
    fn snapshot(root: &Path) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(dir) = todo.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                let what = if meta.is_dir() {
                    todo.push(path.clone());
                    "dir".to_string()
                } else if meta.file_type().is_symlink() {
                    format!("-> {}", fs::read_link(&path).unwrap().display())
                } else {
                    format!("file {:?}", fs::read_to_string(&path).unwrap())
                };
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                let mode = if meta.file_type().is_symlink() {
                    0
                } else {
                    meta.mode() & 0o7777
                };
                out.insert(
                    rel,
                    format!(
                        "{what} {mode:o} {}:{} {}",
                        meta.uid(),
                        meta.gid(),
                        meta.mtime()
                    ),
                );
            }
        }
        out
    }

    fn set_mtime(path: &Path, secs: u64) {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let file = fs::File::open(path).unwrap();
        file.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
            .unwrap();
    }

    fn write(path: &Path, text: &str, mode: u32, mtime: u64) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(path, mtime);
    }

    fn dir(path: &Path, mode: u32, mtime: u64) {
        fs::create_dir_all(path).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(path, mtime);
    }

    /// A root with what a layer can replace, merge into or leave alone.
    fn make_root(root: &Path) {
        write(&root.join("existing/old.txt"), "old", 0o644, 100);
        write(&root.join("existing/kept.txt"), "kept", 0o600, 100);
        dir(&root.join("existing"), 0o700, 100);
        write(&root.join("dir-to-file/inside"), "gone", 0o644, 100);
        write(&root.join("file-to-dir"), "a file", 0o644, 100);
        write(&root.join("keep.txt"), "untouched", 0o644, 100);
        symlink("/existing", root.join("data")).unwrap();
        symlink("/nowhere", root.join("dangling")).unwrap();
    }

    /// A staged COPY that touches each of them, with its times set last.
    fn make_staging(staging: &Path) {
        write(&staging.join("existing/old.txt"), "new content", 0o640, 200);
        write(&staging.join("existing/new.txt"), "new", 0o755, 200);
        dir(&staging.join("existing"), 0o750, 300);
        write(&staging.join("dir-to-file"), "now a file", 0o644, 200);
        write(&staging.join("file-to-dir/f"), "in a dir", 0o644, 200);
        dir(&staging.join("file-to-dir"), 0o755, 300);
        write(
            &staging.join("data/a.txt"),
            "not through the link",
            0o644,
            200,
        );
        dir(&staging.join("data"), 0o755, 300);
        write(&staging.join("new/deep/tree/f"), "deep", 0o644, 200);
        dir(&staging.join("new/deep/tree"), 0o711, 300);
        dir(&staging.join("new/deep"), 0o755, 300);
        dir(&staging.join("new"), 0o755, 300);
        write(&staging.join("dangling"), "replaces the link", 0o644, 200);
        symlink("existing/new.txt", staging.join("link")).unwrap();
    }

    #[test]
    fn merging_gives_what_applying_the_layer_gives() {
        let tmp = tempfile::tempdir().unwrap();
        let (applied, merged) = (tmp.path().join("applied"), tmp.path().join("merged"));
        let staging = tmp.path().join("staging");
        for root in [&applied, &merged] {
            fs::create_dir(root).unwrap();
            make_root(root);
        }
        fs::create_dir(&staging).unwrap();
        make_staging(&staging);

        let mut layer = Vec::new();
        let entries = layer_from_dir(&staging).unwrap();
        write_layer(
            entries,
            Compression::Uncompressed,
            None,
            1,
            &mut layer,
            &WriteOptions::default(),
        )
        .unwrap();
        let opts = ApplyOptions {
            root_is_privileged: rustix::process::geteuid().is_root(),
            preserve_ownership: true,
            ignore_paths: Vec::new(),
        };
        apply_layer(&layer[..], &applied, &opts).unwrap();
        let stats = merge_tree(&staging, &merged).unwrap();

        let expected = snapshot(&applied);
        assert_eq!(snapshot(&merged), expected);
        assert!(expected["data"].starts_with("dir "), "{expected:?}");
        assert!(expected["existing/kept.txt"].contains("\"kept\""));
        // `existing` merged; old.txt, dir-to-file, file-to-dir, data and
        // dangling replaced. Only the merged directory's empty shell stays.
        assert_eq!((stats.merged, stats.replaced), (1, 5), "{stats:?}");
        assert_eq!(fs::read_dir(&staging).unwrap().count(), 1);
        assert_eq!(fs::read_dir(staging.join("existing")).unwrap().count(), 0);
    }

    #[test]
    fn a_symlink_in_the_root_is_replaced_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, staging, outside) = (
            tmp.path().join("root"),
            tmp.path().join("staging"),
            tmp.path().join("outside"),
        );
        for d in [&root, &staging, &outside] {
            fs::create_dir(d).unwrap();
        }
        symlink(&outside, root.join("escape")).unwrap();
        write(&staging.join("escape/file"), "x", 0o644, 1);
        merge_tree(&staging, &root).unwrap();
        assert!(root.join("escape").is_dir());
        assert!(!root.join("escape").is_symlink());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }
}
