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
use std::os::unix::ffi::OsStrExt;
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

use std::os::unix::ffi::OsStringExt;

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
            Ok(_) => {}
            Err(Errno::INTR) => {}
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
