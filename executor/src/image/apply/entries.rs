//! The entries a layer being applied creates: regular files, directories,
//! symlinks, hard links and special files, each made by name in its parent
//! directory's handle after clearing the way, then given the layer's owner,
//! mode, times and xattrs; directories' modes and times last, once their
//! contents are in.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{self, AtFlags, FileType, Mode, OFlags, XattrFlags};
use rustix::io::Errno;
use tar::{EntryType, Header};

use super::confined::{open_child, remove_all};
use super::{
    Applier, DeferredDir, Failure, Meta, Result, Target, WhiteoutMode, components,
    no_directory_there, shown,
};

impl Applier<'_> {
    /// Clears the way for a new entry `name` in `dir`: whatever is there is
    /// removed, except a directory when the new entry is one too (Docker's
    /// rule: the two merge). Returns whether a directory was kept.
    pub(super) fn replace(dir: BorrowedFd<'_>, name: &[u8], new_is_dir: bool) -> io::Result<bool> {
        match fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
            Ok(stat) => {
                if new_is_dir && FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
                    Ok(true)
                } else {
                    remove_all(dir, name)?;
                    Ok(false)
                }
            }
        }
    }

    /// Makes a new entry `name` in `dir` with `make`, which fails with
    /// `EEXIST` when something is there: that is then removed
    /// ([`Applier::replace`]) and `make` tried again. In a layer extracted
    /// into an empty directory nothing is ever there, and one call does.
    fn make<T>(
        dir: BorrowedFd<'_>,
        name: &[u8],
        make: impl Fn() -> rustix::io::Result<T>,
    ) -> io::Result<T> {
        match make() {
            Err(Errno::EXIST) => {
                Self::replace(dir, name, false)?;
                Ok(make()?)
            }
            first => Ok(first?),
        }
    }

    /// Whether a new entry must be given `owner`: not when it has it as
    /// made (the caller's ids, in a directory without the setgid bit),
    /// which spares a `chown` of each entry, and its journal write, when
    /// root extracts root's files.
    fn needs_owner(&self, owner: (rustix::fs::Uid, rustix::fs::Gid)) -> bool {
        owner != self.ids || self.parent_setgid
    }

    pub(super) fn file<R: Read>(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
    ) -> Result<u64, Failure> {
        let fd = Self::make(dir.as_fd(), name, || {
            fs::openat(
                dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
        })?;
        let mut file = File::from(fd);
        let declared = entry.size();
        let mut written: u64 = 0;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            file.write_all(&self.buf[..n])?;
            written += n as u64;
        }
        if written != declared {
            return Err(Failure::Truncated {
                declared,
                found: written,
            });
        }
        self.stats.bytes += written;
        // chown first: it clears setuid bits and security.capability.
        if let Some((uid, gid)) = meta.owner
            && self.needs_owner((uid, gid))
        {
            fs::fchown(&file, Some(uid), Some(gid))?;
        }
        fs::fchmod(&file, meta.mode)?;
        self.xattrs(Target::Fd(file.as_fd()), meta)?;
        fs::futimens(&file, &meta.times)?;
        Ok(written)
    }

    pub(super) fn dir(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        path: &[&[u8]],
        meta: &Meta,
    ) -> Result<(), Failure> {
        // Owner-only until the layer is done; the mode is set then.
        let made = match fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => true,
            Err(Errno::EXIST) if Self::replace(dir.as_fd(), name, true)? => false,
            Err(Errno::EXIST) => {
                fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))?;
                true
            }
            Err(e) => return Err(e.into()),
        };
        let fd = open_child(dir, name)?;
        if let Some((uid, gid)) = meta.owner
            && (!made || self.needs_owner((uid, gid)))
        {
            fs::fchown(&fd, Some(uid), Some(gid))?;
        }
        self.xattrs(Target::Fd(fd.as_fd()), meta)?;
        self.dirs.push(DeferredDir {
            path: path.iter().map(|c| c.to_vec()).collect(),
            mode: meta.mode,
            times: meta.times.clone(),
        });
        Ok(())
    }

    pub(super) fn symlink(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        target: &[u8],
        meta: &Meta,
    ) -> Result<(), Failure> {
        if target.contains(&0) {
            return Err(Failure::Refused(
                "its link target contains a NUL byte".to_owned(),
            ));
        }
        Self::make(dir.as_fd(), name, || fs::symlinkat(target, dir, name))?;
        self.at_metadata(dir.as_fd(), name, meta, false)
    }

    /// A hard link to an entry already under the root: the target's parent
    /// is looked up under the root like any path, its last component is not
    /// followed (a link to a symlink links the symlink, as `link(2)` does).
    /// The link's own header metadata is not applied: the inode keeps what
    /// its first entry gave it (a `chown` would drop `security.capability`).
    pub(super) fn hardlink(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        target: &[u8],
    ) -> Result<(), Failure> {
        let failed = |source: io::Error| Failure::HardLink {
            target: target.to_vec(),
            source,
        };
        let path = components(target).map_err(|reason| {
            Failure::Refused(format!("its hard link target {:?} {reason}", shown(target)))
        })?;
        let Some((&last, parent)) = path.split_last() else {
            return Err(Failure::Refused("it is a hard link to the root".to_owned()));
        };
        let missing =
            |e: &io::Error| matches!(Errno::from_io_error(e), Some(Errno::NOENT | Errno::NOTDIR));
        let found = self
            .root
            .open_dir(parent, false, &mut Vec::new())
            .and_then(|target_dir| {
                let stat = fs::statat(&target_dir, last, AtFlags::SYMLINK_NOFOLLOW)?;
                Ok((target_dir, stat))
            });
        let (target_dir, target_stat) = match found {
            Ok(found) => found,
            Err(e) if missing(&e) && self.copy_from_lowers(dir, name, &path)? => return Ok(()),
            Err(e) => return Err(failed(e)),
        };
        if FileType::from_raw_mode(target_stat.st_mode) == FileType::Directory {
            return Err(failed(Errno::PERM.into()));
        }
        if let Ok(existing) = fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            && (existing.st_dev, existing.st_ino) == (target_stat.st_dev, target_stat.st_ino)
        {
            // Already that file (a link to itself, or a repeated entry).
            return Ok(());
        }
        Self::replace(dir.as_fd(), name, false)?;
        fs::linkat(&target_dir, last, dir, name, AtFlags::empty()).map_err(|e| failed(e.into()))?;
        Ok(())
    }

    pub(super) fn node(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        kind: EntryType,
        header: &Header,
        meta: &Meta,
    ) -> Result<(), Failure> {
        let number = |n: io::Result<Option<u32>>| {
            n.map(Option::unwrap_or_default)
                .map_err(|_| Failure::Refused("its device number is malformed".to_owned()))
        };
        let (file_type, dev) = match kind {
            EntryType::Char => (
                FileType::CharacterDevice,
                fs::makedev(
                    number(header.device_major())?,
                    number(header.device_minor())?,
                ),
            ),
            EntryType::Block => (
                FileType::BlockDevice,
                fs::makedev(
                    number(header.device_major())?,
                    number(header.device_minor())?,
                ),
            ),
            _ => (FileType::Fifo, 0),
        };
        let made = Self::make(dir.as_fd(), name, || {
            fs::mknodat(dir, name, file_type, Mode::from_raw_mode(0o600), dev)
        });
        match made.map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO)) {
            // Root of a user namespace (a build without root that maps its
            // subordinate ids, a pod with `hostUsers: false`) makes fifos
            // but no devices: skipped, as without root and as
            // containers/storage does there.
            Err(Errno::PERM) if file_type != FileType::Fifo => {
                tracing::debug!(entry = %String::from_utf8_lossy(name), "device node skipped: the kernel refuses to make it here");
                return Ok(());
            }
            made => made?,
        }
        self.at_metadata(dir.as_fd(), name, meta, true)
    }

    /// Owner, mode (for device nodes and fifos), xattrs and times of `name`
    /// in `dir`, never following it.
    fn at_metadata(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), Failure> {
        if let Some((uid, gid)) = meta.owner
            && self.needs_owner((uid, gid))
        {
            fs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)?;
        }
        if chmod {
            // Just made by mknodat in this handle: not a symlink.
            fs::chmodat(dir, name, meta.mode, AtFlags::empty())?;
        }
        self.xattrs(Target::At(dir, name), meta)?;
        fs::utimensat(dir, name, &meta.times, AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(())
    }

    /// Sets the entry's xattrs. `security.capability` is always tried;
    /// `trusted.*` and other `security.*` only as root. A file system or a
    /// kernel that refuses one gets a warning, not an error (as Docker).
    fn xattrs(&self, target: Target<'_>, meta: &Meta) -> Result<(), Failure> {
        for (key, value) in &meta.xattrs {
            if matches!(self.whiteouts, WhiteoutMode::Overlay { .. })
                && (key.starts_with(b"trusted.overlay.") || key.starts_with(b"user.overlay."))
            {
                tracing::debug!(xattr = %shown(key), "overlayfs xattr in the layer dropped");
                continue;
            }
            let privileged_only = key.as_slice() != b"security.capability"
                && (key.starts_with(b"trusted.") || key.starts_with(b"security."));
            if privileged_only && !self.opts.root_is_privileged {
                tracing::debug!(xattr = %shown(key), "xattr skipped: not running as root");
                continue;
            }
            if key.is_empty() || key.contains(&0) {
                return Err(Failure::Refused(
                    "it has an xattr with a malformed name".to_owned(),
                ));
            }
            let result = match target {
                Target::Fd(fd) => fs::fsetxattr(fd, key.as_slice(), value, XattrFlags::empty()),
                Target::At(dir, name) => {
                    // The directory handle through /proc: the name is looked
                    // up in that directory and, with lsetxattr, not followed.
                    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
                    path.extend_from_slice(name);
                    fs::lsetxattr(path.as_slice(), key.as_slice(), value, XattrFlags::empty())
                }
            };
            match result {
                Ok(()) => {}
                Err(
                    e @ (Errno::NOTSUP
                    | Errno::PERM
                    | Errno::ACCESS
                    | Errno::RANGE
                    | Errno::TOOBIG
                    | Errno::INVAL
                    | Errno::NOENT),
                ) => {
                    tracing::warn!(xattr = %shown(key), error = %e, "xattr not set");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Mode and times of the layer's directories, now that their contents
    /// are in place. A directory replaced or deleted later in the layer is
    /// passed over.
    pub(super) fn finish_dirs(&mut self) -> Result<()> {
        for deferred in std::mem::take(&mut self.dirs) {
            let path: Vec<&[u8]> = deferred.path.iter().map(Vec::as_slice).collect();
            let fd = match self.root.open_dir_nofollow(&path) {
                Ok(fd) => fd,
                Err(e) if no_directory_there(&e) => continue,
                Err(e) => return Err(Failure::from(e).named(&deferred.path.join(&b'/'))),
            };
            fs::fchmod(&fd, deferred.mode)
                .and_then(|()| fs::futimens(&fd, &deferred.times))
                .map_err(|e| Failure::from(e).named(&deferred.path.join(&b'/')))?;
        }
        Ok(())
    }
}
