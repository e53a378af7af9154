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
//! consumed: what was moved is gone from it. The root keeps sub-second
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
