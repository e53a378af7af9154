//! The full-copy snapshot (`--snapshot-mode=full`, and where overlay
//! cannot be mounted): [`copy_tree`] takes a copy of a root filesystem
//! before a step, and [`diff_trees`] walks the copy and the changed root
//! and lists the layer entries that turn one into the other, in the form
//! [`layer_from_dir`](super::layer::layer_from_dir) gives (so
//! [`write_layer`](super::layer::write_layer) takes them as they are).
//!
//! Both trees are the executor's own (a stage root and its copy), not
//! untrusted input: paths are used as they are, without the confinement
//! layer apply needs. Symlinks are never followed. This module must not
//! run processes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{
    self as rfs, AtFlags, Dir, FileType, Gid, Mode, OFlags, Stat, Timespec, Timestamps, Uid,
    XattrFlags,
};
use rustix::io::Errno;

use super::layer::{self, EntryKind, LayerEntry, LayerError};

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Layer(#[from] LayerError),
}

type Result<T, E = DiffError> = std::result::Result<T, E>;

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

// ---------------------------------------------------------------------------
// Copying.

/// Copies the tree under `from` to `to` (created when missing; its own
/// metadata copied too), keeping everything a layer can hold: owner, mode
/// with setuid/setgid/sticky, times (to the nanosecond), xattrs (with
/// `security.capability`; not `security.selinux`, a host label), hard links
/// as hard links, device nodes, fifos and symlinks as they are. File data
/// is reflinked (`FICLONE`) where the filesystem can, else copied in the
/// kernel (`copy_file_range`). Sockets are skipped. Owners are kept only
/// when running as root.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let read = |source: io::Error| DiffError::Read {
        path: from.to_path_buf(),
        source,
    };
    let write = |source: io::Error| DiffError::Write {
        path: to.to_path_buf(),
        source,
    };
    let src = rfs::open(from, DIR_FLAGS, Mode::empty()).map_err(|e| read(e.into()))?;
    match fs::create_dir(to) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(write(e)),
    }
    let dst = rfs::open(to, DIR_FLAGS, Mode::empty()).map_err(|e| write(e.into()))?;
    let mut copier = Copier {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        chown: rustix::process::geteuid().is_root(),
        links: HashMap::new(),
        dst_root: dst.try_clone().map_err(write)?,
    };
    copier.dir(&src, &dst, Path::new(""))?;
    let stat = rfs::fstat(&src).map_err(|e| read(e.into()))?;
    let xattrs = layer::read_xattrs(from)?;
    set_metadata(Target::Fd(dst.as_fd()), to, &stat, &xattrs, copier.chown).map_err(write)
}

struct Copier {
    from: PathBuf,
    to: PathBuf,
    chown: bool,
    /// Inodes with several links copied so far: the first copy's path.
    links: HashMap<(u64, u64), PathBuf>,
    dst_root: OwnedFd,
}

impl Copier {
    fn dir(&mut self, src: &OwnedFd, dst: &OwnedFd, rel: &Path) -> Result<()> {
        let src_path = self.from.join(rel);
        let read = |e: Errno| DiffError::Read {
            path: src_path.clone(),
            source: e.into(),
        };
        let mut names = Vec::new();
        let mut dir = Dir::read_from(src).map_err(read)?;
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(read)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        names.sort();
        for name in names {
            let child = rel.join(OsStr::from_bytes(&name));
            let (src_child, dst_child) = (self.from.join(&child), self.to.join(&child));
            let read = |e: io::Error| DiffError::Read {
                path: src_child.clone(),
                source: e,
            };
            let write = |e: io::Error| DiffError::Write {
                path: dst_child.clone(),
                source: e,
            };
            let stat = rfs::statat(src, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| read(e.into()))?;
            if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
                match rfs::mkdirat(dst, name.as_slice(), Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(write(e.into())),
                }
                let sub_src = rfs::openat(src, name.as_slice(), DIR_FLAGS, Mode::empty())
                    .map_err(|e| read(e.into()))?;
                let sub_dst = rfs::openat(dst, name.as_slice(), DIR_FLAGS, Mode::empty())
                    .map_err(|e| write(e.into()))?;
                self.dir(&sub_src, &sub_dst, &child)?;
                let xattrs = layer::read_xattrs(&self.from.join(&child))?;
                set_metadata(
                    Target::Fd(sub_dst.as_fd()),
                    &self.to.join(&child),
                    &stat,
                    &xattrs,
                    self.chown,
                )
                .map_err(write)?;
                continue;
            }
            let id = (stat.st_dev, stat.st_ino);
            if stat.st_nlink > 1 {
                if let Some(first) = self.links.get(&id) {
                    rfs::linkat(
                        &self.dst_root,
                        first.as_path(),
                        dst,
                        name.as_slice(),
                        AtFlags::empty(),
                    )
                    .map_err(|e| write(e.into()))?;
                    continue;
                }
                self.links.insert(id, child.clone());
            }
            copy_node_at(
                src.as_fd(),
                &name,
                dst.as_fd(),
                &name,
                &stat,
                &self.from.join(&child),
                self.chown,
            )
            .map_err(write)?;
        }
        Ok(())
    }
}

/// Where metadata goes: an open file, or a name in an open directory.
#[derive(Clone, Copy)]
enum Target<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a [u8]),
}

/// A path naming `name` in the directory `dir` through `/proc`, for the
/// xattr calls that have no `*at` form (with `l*`, the name is not
/// followed).
pub(crate) fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> PathBuf {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    PathBuf::from(std::ffi::OsString::from_vec(path))
}

/// Copies the non-directory `src_name` in `src` (whose `lstat` is `stat`,
/// whose path is `src_path` for reading its xattrs) to `dst_name` in
/// `dst`, which must not exist, with its data, owner (when `chown`), mode,
/// xattrs and times. A socket is skipped.
pub(crate) fn copy_node_at(
    src: BorrowedFd<'_>,
    src_name: &[u8],
    dst: BorrowedFd<'_>,
    dst_name: &[u8],
    stat: &Stat,
    src_path: &Path,
    chown: bool,
) -> io::Result<()> {
    let xattrs = layer::read_xattrs(src_path).map_err(|e| match e {
        LayerError::Read { source, .. } => source,
        other => io::Error::other(other),
    })?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => {
            let from = File::from(rfs::openat(
                src,
                src_name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
                Mode::empty(),
            )?);
            let to = File::from(rfs::openat(
                dst,
                dst_name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?);
            copy_data(&from, &to)?;
            set_metadata(Target::Fd(to.as_fd()), Path::new(""), stat, &xattrs, chown)
        }
        FileType::Symlink => {
            let target = rfs::readlinkat(src, src_name, Vec::new())?;
            rfs::symlinkat(target.as_c_str(), dst, dst_name)?;
            set_metadata(
                Target::At(dst, dst_name),
                Path::new(""),
                stat,
                &xattrs,
                chown,
            )
        }
        kind @ (FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo) => {
            rfs::mknodat(
                dst,
                dst_name,
                kind,
                Mode::from_raw_mode(0o600),
                stat.st_rdev,
            )?;
            set_metadata(
                Target::At(dst, dst_name),
                Path::new(""),
                stat,
                &xattrs,
                chown,
            )
        }
        FileType::Directory => Err(Errno::ISDIR.into()),
        _ => {
            tracing::debug!(path = %src_path.display(), "socket not copied");
            Ok(())
        }
    }
}

/// File data from `from` to `to`: a reflink when the filesystem shares
/// extents, else `copy_file_range`, else read and write.
fn copy_data(from: &File, to: &File) -> io::Result<()> {
    if rfs::ioctl_ficlone(to, from).is_ok() {
        return Ok(());
    }
    loop {
        match rfs::copy_file_range(from, None, to, None, 1 << 30) {
            Ok(0) => return Ok(()),
            Ok(_) | Err(Errno::INTR) => {}
            Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP | Errno::PERM) => {
                let (mut from, mut to) = (from, to);
                io::copy(&mut from, &mut to)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Owner (chown first: it clears setuid and `security.capability`), mode
/// (not of symlinks), xattrs, then times. `path` names a [`Target::Fd`]
/// for xattrs when not empty (a directory's real path).
fn set_metadata(
    target: Target<'_>,
    path: &Path,
    stat: &Stat,
    xattrs: &BTreeMap<String, Vec<u8>>,
    chown: bool,
) -> io::Result<()> {
    let is_symlink = FileType::from_raw_mode(stat.st_mode) == FileType::Symlink;
    let (uid, gid) = (Uid::from_raw(stat.st_uid), Gid::from_raw(stat.st_gid));
    let mode = Mode::from_raw_mode(stat.st_mode & 0o7777);
    match target {
        Target::Fd(fd) => {
            if chown {
                rfs::fchown(fd, Some(uid), Some(gid))?;
            }
            rfs::fchmod(fd, mode)?;
        }
        Target::At(dir, name) => {
            if chown {
                rfs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)?;
            }
            if !is_symlink {
                // Just made by mknodat: not a symlink.
                rfs::chmodat(dir, name, mode, AtFlags::empty())?;
            }
        }
    }
    for (key, value) in xattrs {
        let result = match target {
            Target::Fd(fd) if path.as_os_str().is_empty() => {
                rfs::fsetxattr(fd, key.as_str(), value, XattrFlags::empty())
            }
            Target::Fd(_) => rfs::lsetxattr(path, key.as_str(), value, XattrFlags::empty()),
            Target::At(dir, name) => rfs::lsetxattr(
                proc_path(dir, name).as_path(),
                key.as_str(),
                value,
                XattrFlags::empty(),
            ),
        };
        match result {
            Ok(()) => {}
            Err(e @ (Errno::NOTSUP | Errno::PERM | Errno::ACCESS)) => {
                tracing::warn!(xattr = %key, error = %e, "xattr not copied");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let time = |sec: i64, nsec: u64| Timespec {
        tv_sec: sec,
        tv_nsec: i64::try_from(nsec).unwrap_or(0),
    };
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    let times = Timestamps {
        last_access: time(stat.st_atime as i64, stat.st_atime_nsec as u64),
        last_modification: time(stat.st_mtime as i64, stat.st_mtime_nsec as u64),
    };
    match target {
        Target::Fd(fd) => rfs::futimens(fd, &times)?,
        Target::At(dir, name) => rfs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)?,
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Diffing.

/// The layer entries that turn `before` into `after`, sorted as
/// [`layer_from_dir`](super::layer::layer_from_dir) sorts them:
///
/// - every path of `after` that `before` lacks, or has with another type,
///   mode, owner, modification time (to the nanosecond), size, device
///   number, link target, xattrs or content (content is compared whenever
///   all the rest is equal: a same-size rewrite with its time put back is
///   still found);
/// - every parent directory of those, with its `after` metadata;
/// - a [`EntryKind::Whiteout`] for each path `before` has and `after`
///   lacks (not for the children of a removed directory, nor where a
///   directory became something else: the new entry replaces it);
/// - the other paths of a changed file's inode (hard links in `after`),
///   all but the first as [`EntryKind::Hardlink`]s to it.
///
/// `ignore` lists paths (relative, or absolute in the image) left out
/// with everything under them, in both trees.
pub fn diff_trees(before: &Path, after: &Path, ignore: &[PathBuf]) -> Result<Vec<LayerEntry>> {
    let mut differ = Differ {
        before,
        after,
        ignore: ignore.iter().map(|p| relative(p)).collect(),
        included: BTreeMap::new(),
        links: HashMap::new(),
    };
    differ.walk()?;
    differ.hard_links()?;
    differ.parents()?;
    Ok(differ.included.into_values().collect())
}

/// `path` without its root and `.` components.
fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect()
}

struct Differ<'a> {
    before: &'a Path,
    after: &'a Path,
    ignore: Vec<PathBuf>,
    included: BTreeMap<PathBuf, LayerEntry>,
    /// Non-directories of `after` with several links, by inode.
    links: HashMap<(u64, u64), Vec<PathBuf>>,
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> DiffError + '_ {
    move |source| DiffError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn names(dir: &Path) -> Result<BTreeSet<std::ffi::OsString>> {
    let mut out = BTreeSet::new();
    for entry in fs::read_dir(dir).map_err(read_err(dir))? {
        out.insert(entry.map_err(read_err(dir))?.file_name());
    }
    Ok(out)
}

impl Differ<'_> {
    fn ignored(&self, rel: &Path) -> bool {
        self.ignore.iter().any(|ig| rel.starts_with(ig))
    }

    /// Walks `after` (its own stack), comparing with `before`.
    fn walk(&mut self) -> Result<()> {
        // (directory in `after`, whether `before` has a directory there)
        let mut todo = vec![(PathBuf::new(), true)];
        while let Some((rel, before_is_dir)) = todo.pop() {
            let after_names = names(&self.after.join(&rel))?;
            let before_names = if before_is_dir {
                names(&self.before.join(&rel))?
            } else {
                BTreeSet::new()
            };
            for name in &after_names {
                let child = rel.join(name);
                if self.ignored(&child) {
                    continue;
                }
                let after_path = self.after.join(&child);
                let meta = fs::symlink_metadata(&after_path).map_err(read_err(&after_path))?;
                let before_meta = if before_names.contains(name) {
                    let path = self.before.join(&child);
                    Some(fs::symlink_metadata(&path).map_err(read_err(&path))?)
                } else {
                    None
                };
                if !meta.is_dir() && meta.nlink() > 1 {
                    self.links
                        .entry((meta.dev(), meta.ino()))
                        .or_default()
                        .push(child.clone());
                }
                let changed = match &before_meta {
                    None => true,
                    Some(old) => !self.same(&child, old, &meta)?,
                };
                if changed {
                    self.include(&child, &meta)?;
                }
                if meta.is_dir() {
                    todo.push((
                        child,
                        before_meta.as_ref().is_some_and(fs::Metadata::is_dir),
                    ));
                }
            }
            for name in before_names.difference(&after_names) {
                let child = rel.join(name);
                if !self.ignored(&child) {
                    self.included
                        .insert(child.clone(), LayerEntry::new(child, EntryKind::Whiteout));
                }
            }
        }
        Ok(())
    }

    fn include(&mut self, rel: &Path, meta: &fs::Metadata) -> Result<()> {
        let path = self.after.join(rel);
        if let Some((entry, _)) = layer::entry_for(&path, rel.to_path_buf(), meta, false)? {
            self.included.insert(rel.to_path_buf(), entry);
        }
        Ok(())
    }

    /// Whether `rel` is the same in both trees (`old` and `new` being its
    /// `lstat`s).
    fn same(&self, rel: &Path, old: &fs::Metadata, new: &fs::Metadata) -> Result<bool> {
        let ft = new.file_type();
        if old.file_type() != ft
            || old.mode() != new.mode()
            || old.uid() != new.uid()
            || old.gid() != new.gid()
            || old.mtime() != new.mtime()
            || old.mtime_nsec() != new.mtime_nsec()
            || (!ft.is_dir() && old.size() != new.size())
            || old.rdev() != new.rdev()
        {
            return Ok(false);
        }
        let (before, after) = (self.before.join(rel), self.after.join(rel));
        if ft.is_symlink()
            && fs::read_link(&before).map_err(read_err(&before))?
                != fs::read_link(&after).map_err(read_err(&after))?
        {
            return Ok(false);
        }
        if layer::read_xattrs(&before)? != layer::read_xattrs(&after)? {
            return Ok(false);
        }
        if ft.is_file() {
            return same_content(&before, &after);
        }
        Ok(true)
    }

    /// Brings in every link of a changed inode, and makes all but the
    /// first (in path order) hard links to it.
    fn hard_links(&mut self) -> Result<()> {
        let groups: Vec<Vec<PathBuf>> = self.links.values().cloned().collect();
        for mut group in groups {
            if !group.iter().any(|p| self.included.contains_key(p)) {
                continue;
            }
            group.sort();
            for rel in &group {
                if !self.included.contains_key(rel) {
                    let path = self.after.join(rel);
                    let meta = fs::symlink_metadata(&path).map_err(read_err(&path))?;
                    self.include(rel, &meta)?;
                }
            }
            let first = group[0].clone();
            for rel in &group[1..] {
                if let Some(entry) = self.included.get_mut(rel) {
                    entry.kind = EntryKind::Hardlink(first.clone());
                }
            }
        }
        Ok(())
    }

    /// Adds the parent directories of every entry, with their `after`
    /// metadata.
    fn parents(&mut self) -> Result<()> {
        let mut missing = BTreeSet::new();
        for rel in self.included.keys() {
            for parent in rel.ancestors().skip(1) {
                if parent.as_os_str().is_empty() {
                    break;
                }
                if !self.included.contains_key(parent) {
                    missing.insert(parent.to_path_buf());
                }
            }
        }
        for rel in missing {
            let path = self.after.join(&rel);
            let meta = fs::symlink_metadata(&path).map_err(read_err(&path))?;
            self.include(&rel, &meta)?;
        }
        Ok(())
    }
}

/// Whether two regular files hold the same bytes.
fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let open = |path: &Path| File::open(path).map_err(read_err(path));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let mut ba = vec![0u8; 256 * 1024];
    let mut bb = vec![0u8; 256 * 1024];
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(read_err(a))?;
        let nb = read_full(&mut fb, &mut bb).map_err(read_err(b))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
    use std::path::{Path, PathBuf};

    use rustix::fs::{AtFlags, CWD, FileType, Mode, Timestamps, XattrFlags};

    use super::{copy_tree, diff_trees};
    use crate::image::apply::{ApplyOptions, apply_layer};
    use crate::image::layer::{
        Compression, EntryKind, LayerEntry, WriteOptions, layer_from_overlay_upper, write_layer,
    };
    use crate::sandbox::overlay::Overlay;

    /// `security.capability` v2 granting cap_net_bind_service (bit 10),
    /// effective.
    const CAP_NET_BIND: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    fn write(root: &Path, rel: &str, data: &str, mode: u32) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A base tree with what a RUN can change.
    fn make_base(root: &Path) {
        write(root, "bin/tool", "#!/bin/sh\necho tool\n", 0o755);
        write(root, "bin/ping", "ping binary", 0o755);
        write(root, "etc/config", "value=1\n", 0o644);
        write(root, "etc/gone", "to be deleted", 0o644);
        write(root, "etc/owned", "chowned later", 0o600);
        write(root, "etc/kept", "untouched", 0o644);
        rustix::fs::setxattr(
            root.join("etc/kept").as_path(),
            "user.note",
            b"kept",
            XattrFlags::empty(),
        )
        .unwrap();
        write(root, "var/cache/a", "cached a", 0o644);
        write(root, "var/cache/b/c", "cached c", 0o644);
        write(root, "usr/a", "linked", 0o644);
        fs::hard_link(root.join("usr/a"), root.join("usr/b")).unwrap();
        fs::create_dir_all(root.join("usr/local")).unwrap();
        write(root, "opt/thing", "a file, then a dir", 0o644);
        symlink("etc/kept", root.join("oldlink")).unwrap();
        rustix::fs::mknodat(
            CWD,
            root.join("fifo").as_path(),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    /// The changes, made the same way in an overlay's merged view and in a
    /// plain copy.
    fn mutate(root: &Path) {
        write(root, "new/dir/file.txt", "brand new", 0o640);
        rustix::fs::chown(
            root.join("new/dir/file.txt").as_path(),
            Some(rustix::fs::Uid::from_raw(1000)),
            Some(rustix::fs::Gid::from_raw(1000)),
        )
        .unwrap();
        // Same size, time put back: only the content tells.
        let config = root.join("etc/config");
        let before = rustix::fs::stat(config.as_path()).unwrap();
        fs::write(&config, "value=2\n").unwrap();
        let times = Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: before.st_atime,
                tv_nsec: i64::try_from(before.st_atime_nsec).unwrap(),
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: before.st_mtime,
                tv_nsec: i64::try_from(before.st_mtime_nsec).unwrap(),
            },
        };
        rustix::fs::utimensat(CWD, config.as_path(), &times, AtFlags::empty()).unwrap();
        fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::remove_file(root.join("etc/gone")).unwrap();
        fs::remove_dir_all(root.join("var/cache")).unwrap();
        write(root, "var/cache/fresh", "recreated", 0o644);
        fs::hard_link(root.join("bin/tool"), root.join("bin/tool-link")).unwrap();
        symlink("../../bin/tool", root.join("usr/local/link")).unwrap();
        rustix::fs::setxattr(
            root.join("bin/ping").as_path(),
            "security.capability",
            &CAP_NET_BIND,
            XattrFlags::empty(),
        )
        .unwrap();
        rustix::fs::chown(
            root.join("etc/owned").as_path(),
            Some(rustix::fs::Uid::from_raw(123)),
            Some(rustix::fs::Gid::from_raw(456)),
        )
        .unwrap();
        fs::remove_file(root.join("opt/thing")).unwrap();
        write(root, "opt/thing/inside", "now a dir", 0o644);
        fs::remove_file(root.join("oldlink")).unwrap();
        rustix::fs::mknodat(
            CWD,
            root.join("dev-null").as_path(),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
    }

    /// Everything a layer carries but times: type, mode, owner, content or
    /// target or device number, xattrs, and which paths share an inode.
    pub(crate) fn snapshot(root: &Path) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
        let mut todo = vec![PathBuf::new()];
        while let Some(rel) = todo.pop() {
            let mut names: Vec<_> = fs::read_dir(root.join(&rel))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for name in names {
                let rel = rel.join(name);
                let path = root.join(&rel);
                let meta = fs::symlink_metadata(&path).unwrap();
                let ft = meta.file_type();
                let what = if ft.is_dir() {
                    todo.push(rel.clone());
                    "dir".to_owned()
                } else if ft.is_symlink() {
                    format!("-> {}", fs::read_link(&path).unwrap().display())
                } else if ft.is_file() {
                    format!("file {:?}", fs::read_to_string(&path).unwrap())
                } else {
                    format!("node {:o} {}", meta.mode() & 0o170_000, meta.rdev())
                };
                let mode = if ft.is_symlink() {
                    0
                } else {
                    meta.mode() & 0o7777
                };
                let mut xattrs = crate::image::layer::read_xattrs(&path).unwrap();
                xattrs.retain(|k, _| {
                    !k.starts_with("trusted.overlay.") && !k.starts_with("user.overlay.")
                });
                let key = rel.display().to_string();
                let link = if !ft.is_dir() && meta.nlink() > 1 {
                    let first = inodes
                        .entry((meta.dev(), meta.ino()))
                        .or_insert_with(|| key.clone());
                    format!(" linked with {first}")
                } else {
                    String::new()
                };
                out.insert(
                    key,
                    format!(
                        "{what} {mode:o} {}:{} {xattrs:?}{link}",
                        meta.uid(),
                        meta.gid()
                    ),
                );
            }
        }
        out
    }

    fn apply_entries(entries: Vec<LayerEntry>, root: &Path) {
        let mut tar = Vec::new();
        write_layer(
            entries,
            Compression::Uncompressed,
            None,
            1,
            &mut tar,
            &WriteOptions::default(),
        )
        .unwrap();
        let opts = ApplyOptions {
            root_is_privileged: true,
            preserve_ownership: true,
            ignore_paths: Vec::new(),
        };
        apply_layer(&tar[..], root, &opts).unwrap();
    }

    fn kinds(entries: &[LayerEntry]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|e| {
                let kind = match &e.kind {
                    EntryKind::File(_) => "file".to_owned(),
                    other => format!("{other:?}"),
                };
                (
                    format!("{} {}", e.path.display(), kind),
                    format!("{:o} {}:{}", e.mode, e.uid, e.gid),
                )
            })
            .collect()
    }

    #[test]
    fn copy_tree_keeps_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let (base, copy) = (tmp.path().join("base"), tmp.path().join("copy"));
        fs::create_dir(&base).unwrap();
        make_base(&base);
        mutate(&base);
        copy_tree(&base, &copy).unwrap();
        assert_eq!(snapshot(&copy), snapshot(&base));
        // Times to the nanosecond too, and nothing differs for diff_trees.
        let config = |root: &Path| fs::symlink_metadata(root.join("etc/config")).unwrap();
        assert_eq!(config(&copy).mtime_nsec(), config(&base).mtime_nsec());
        assert_eq!(diff_trees(&base, &copy, &[]).unwrap(), Vec::new());
        let caps = crate::image::layer::read_xattrs(&copy.join("bin/ping")).unwrap();
        assert_eq!(caps["security.capability"], CAP_NET_BIND);
    }

    #[test]
    fn diff_finds_a_same_size_rewrite_and_honours_ignore_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let (base, after) = (tmp.path().join("base"), tmp.path().join("after"));
        fs::create_dir(&base).unwrap();
        make_base(&base);
        copy_tree(&base, &after).unwrap();
        mutate(&after);
        let entries = diff_trees(
            &base,
            &after,
            &[PathBuf::from("/new"), PathBuf::from("var/cache")],
        )
        .unwrap();
        let got = kinds(&entries);
        assert!(got.contains_key("etc/config file"), "{got:#?}");
        assert!(
            !got.keys()
                .any(|k| k.starts_with("new") || k.starts_with("var/cache")),
            "{got:#?}"
        );
        assert!(!got.keys().any(|k| k.starts_with("etc/kept")), "{got:#?}");
    }

    #[test]
    fn overlay_upper_gives_the_expected_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let [base, upper, work, merged] =
            ["base", "upper", "work", "merged"].map(|d| tmp.path().join(d));
        for d in [&base, &upper, &work, &merged] {
            fs::create_dir(d).unwrap();
        }
        make_base(&base);
        let overlay = Overlay::mount(std::slice::from_ref(&base), &upper, &work, &merged).unwrap();
        mutate(&merged);
        overlay.unmount().unwrap();
        let entries = layer_from_overlay_upper(&upper).unwrap();
        let got = kinds(&entries);
        let expected: BTreeMap<String, String> = [
            ("bin Dir", "755 0:0"),
            ("bin/ping file", "755 0:0"),
            ("bin/tool file", "4755 0:0"),
            ("bin/tool-link Hardlink(\"bin/tool\")", "4755 0:0"),
            ("dev-null CharDevice(1, 3)", "644 0:0"),
            ("etc Dir", "755 0:0"),
            ("etc/config file", "644 0:0"),
            ("etc/gone Whiteout", "644 0:0"),
            ("etc/owned file", "600 123:456"),
            ("new Dir", "755 0:0"),
            // With index=on the root is a merged directory, and overlayfs
            // marks a directory made in a merged one opaque (the
            // snapshotter drops such markers where no lower layer has
            // the path: `build::rootfs`).
            ("new OpaqueWhiteout", "644 0:0"),
            ("new/dir Dir", "755 0:0"),
            ("new/dir/file.txt file", "640 1000:1000"),
            ("oldlink Whiteout", "644 0:0"),
            ("opt Dir", "755 0:0"),
            ("opt/thing Dir", "755 0:0"),
            ("opt/thing OpaqueWhiteout", "644 0:0"),
            ("opt/thing/inside file", "644 0:0"),
            ("usr Dir", "755 0:0"),
            ("usr/local Dir", "755 0:0"),
            ("usr/local/link Symlink(\"../../bin/tool\")", "777 0:0"),
            ("var Dir", "755 0:0"),
            ("var/cache Dir", "755 0:0"),
            ("var/cache OpaqueWhiteout", "644 0:0"),
            ("var/cache/fresh file", "644 0:0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(got, expected);
        let ping = entries
            .iter()
            .find(|e| e.path == Path::new("bin/ping"))
            .unwrap();
        assert_eq!(ping.xattrs["security.capability"], CAP_NET_BIND);
    }

    /// The key property: the overlay snapshot and the full-copy snapshot of
    /// the same changes are layers that rebuild the same tree.
    #[test]
    fn overlay_and_full_copy_snapshots_give_the_same_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let [base, upper, work, merged, full] =
            ["base", "upper", "work", "merged", "full"].map(|d| tmp.path().join(d));
        for d in [&base, &upper, &work, &merged] {
            fs::create_dir(d).unwrap();
        }
        make_base(&base);

        let overlay = Overlay::mount(std::slice::from_ref(&base), &upper, &work, &merged).unwrap();
        mutate(&merged);
        let merged_view = snapshot(&merged);
        overlay.unmount().unwrap();
        let from_overlay = layer_from_overlay_upper(&upper).unwrap();

        copy_tree(&base, &full).unwrap();
        mutate(&full);
        let from_full = diff_trees(&base, &full, &[]).unwrap();

        let (root_overlay, root_full) = (tmp.path().join("root-o"), tmp.path().join("root-f"));
        copy_tree(&base, &root_overlay).unwrap();
        copy_tree(&base, &root_full).unwrap();
        apply_entries(from_overlay, &root_overlay);
        apply_entries(from_full, &root_full);

        let expected = snapshot(&full);
        assert_eq!(snapshot(&root_full), expected, "full-copy layer");
        assert_eq!(snapshot(&root_overlay), expected, "overlay layer");
        assert_eq!(merged_view, expected, "merged view");
        assert!(
            expected["bin/tool-link"].ends_with("linked with bin/tool"),
            "{expected:#?}"
        );
        assert!(!expected.contains_key("etc/gone"));
        assert!(!expected.contains_key("var/cache/a"));
    }
}
