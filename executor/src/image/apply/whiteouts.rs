//! Whiteouts in a layer being applied: `.wh.NAME` deletes what the layers
//! below hold at NAME, and `.wh..wh..opq` hides everything they hold in its
//! directory, either done on the root (a plain apply) or, when a layer is
//! extracted for overlayfs, written as overlayfs' own marks (a 0:0
//! character device, the `opaque` xattr), with the files a hard link needs
//! copied up from the lower directories.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{self, AtFlags, FileType, Mode, XattrFlags};
use rustix::io::Errno;

use super::confined::{Resolver, Root, open_child, remove_all};
use super::{
    Applier, Failure, OPAQUE_MARKER, WHITEOUT_PREFIX, WhiteoutMode, no_directory_there, shown,
    unlink,
};

impl Applier<'_> {
    /// A whiteout `.wh.NAME` (deletes NAME) or the opaque marker.
    pub(super) fn whiteout(
        &mut self,
        parent: &[&[u8]],
        last: &[u8],
        target: &[u8],
    ) -> Result<(), Failure> {
        if last == OPAQUE_MARKER {
            self.stats.whiteouts += 1;
            if let WhiteoutMode::Overlay { user_xattr, .. } = self.whiteouts {
                return self.overlay_opaque(parent, *user_xattr);
            }
            return self.opaque(parent);
        }
        if target.starts_with(WHITEOUT_PREFIX) {
            tracing::debug!(name = %shown(last), "AUFS metadata entry skipped");
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(Failure::Refused(
                "it is a whiteout that names no file".to_owned(),
            ));
        }
        self.stats.whiteouts += 1;
        let mut path = parent.to_vec();
        path.push(target);
        if self.ignored(&path) {
            return Ok(());
        }
        if let WhiteoutMode::Overlay { .. } = self.whiteouts {
            return self.overlay_whiteout(parent, target);
        }
        let dir = match self.root.open_dir(parent, false, &mut Vec::new()) {
            Ok(dir) => dir,
            // Nothing there to delete.
            Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::NOENT | Errno::NOTDIR)) => {
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if self.shields_ignored(&path) {
            match open_child(&dir, target) {
                Ok(fd) => self.prune(fd, path.iter().map(|c| c.to_vec()).collect(), false)?,
                Err(Errno::NOENT) => {}
                Err(Errno::NOTDIR | Errno::LOOP) => unlink(dir.as_fd(), target)?,
                Err(e) => return Err(e.into()),
            }
        } else {
            remove_all(dir.as_fd(), target)?;
        }
        Ok(())
    }

    /// A whiteout in overlay form: a character device 0:0, unless this
    /// layer has the name itself.
    fn overlay_whiteout(&mut self, parent: &[&[u8]], name: &[u8]) -> Result<(), Failure> {
        self.created.clear();
        let dir = self.root.open_dir(parent, true, &mut self.created)?;
        self.added.extend(self.created.drain(..));
        match fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => {
                tracing::debug!(name = %shown(name), "whiteout of a path this layer has: kept the path");
                Ok(())
            }
            Err(Errno::NOENT) => {
                fs::mknodat(
                    &dir,
                    name,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    fs::makedev(0, 0),
                )?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The opaque marker in overlay form: an xattr on the directory.
    fn overlay_opaque(&mut self, parent: &[&[u8]], user_xattr: bool) -> Result<(), Failure> {
        if self.ignored(parent) {
            return Ok(());
        }
        self.created.clear();
        let dir = self.root.open_dir(parent, true, &mut self.created)?;
        self.added.extend(self.created.drain(..));
        let key = if user_xattr {
            "user.overlay.opaque"
        } else {
            "trusted.overlay.opaque"
        };
        fs::fsetxattr(&dir, key, b"y", XattrFlags::empty())?;
        Ok(())
    }

    /// A hard link whose target is not in this layer, in overlay form: a
    /// copy of the target from the topmost lower directory that has it.
    /// False when none has it.
    pub(super) fn copy_from_lowers(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        target: &[&[u8]],
    ) -> Result<bool, Failure> {
        let WhiteoutMode::Overlay { lower_dirs, .. } = self.whiteouts else {
            return Ok(false);
        };
        let Some((&last, parent)) = target.split_last() else {
            return Ok(false);
        };
        for lower in lower_dirs.iter().rev() {
            let root = Root::open(lower, Resolver::Openat2)?;
            let parent_dir = match root.open_dir(parent, false, &mut Vec::new()) {
                Ok(fd) => fd,
                Err(e) if no_directory_there(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            match fs::statat(&parent_dir, last, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => {
                    let file_type = FileType::from_raw_mode(stat.st_mode);
                    if file_type == FileType::CharacterDevice && stat.st_rdev == 0 {
                        // Deleted in that layer.
                        return Ok(false);
                    }
                    if file_type == FileType::Directory {
                        return Err(Failure::Refused(
                            "it is a hard link to a directory".to_owned(),
                        ));
                    }
                    Self::replace(dir.as_fd(), name, false)?;
                    let source = crate::image::diff::proc_path(parent_dir.as_fd(), last);
                    crate::image::diff::copy_node_at(
                        parent_dir.as_fd(),
                        last,
                        dir.as_fd(),
                        name,
                        &stat,
                        &source,
                        self.chown,
                    )?;
                    return Ok(true);
                }
                Err(Errno::NOENT) => {
                    let opaque = ["trusted.overlay.opaque", "user.overlay.opaque"]
                        .iter()
                        .any(|key| {
                            let mut value = [0u8; 1];
                            fs::fgetxattr(&parent_dir, *key, &mut value[..])
                                .is_ok_and(|n| n == 1 && value[0] == b'y')
                        });
                    if opaque {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// `.wh..wh..opq`: empties the directory of everything this layer did not
    /// put there.
    fn opaque(&mut self, parent: &[&[u8]]) -> Result<(), Failure> {
        if self.ignored(parent) {
            return Ok(());
        }
        self.created.clear();
        let dir = self.root.open_dir(parent, true, &mut self.created)?;
        self.added.extend(self.created.drain(..));
        self.prune(dir, parent.iter().map(|c| c.to_vec()).collect(), true)?;
        Ok(())
    }

    /// Removes the children of `dir` (whose image path is `path`) except
    /// ignored paths and, with `keep_added`, what this layer added;
    /// descends into what it keeps. Its own stack: no recursion.
    fn prune(&self, dir: OwnedFd, path: Vec<Vec<u8>>, keep_added: bool) -> io::Result<()> {
        struct Level {
            dir: fs::Dir,
            id: (u64, u64),
            path: Vec<Vec<u8>>,
        }
        let level = |fd: OwnedFd, path: Vec<Vec<u8>>| -> io::Result<Level> {
            let stat = fs::fstat(&fd)?;
            Ok(Level {
                dir: fs::Dir::new(fd)?,
                id: (stat.st_dev, stat.st_ino),
                path,
            })
        };
        let mut stack = vec![level(dir, path)?];
        while let Some(top) = stack.last_mut() {
            let Some(item) = top.dir.read() else {
                stack.pop();
                continue;
            };
            let item = item?;
            let name = item.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let mut path = top.path.clone();
            path.push(name.to_vec());
            if self.ignored(&path) {
                continue;
            }
            let added = keep_added && self.added.contains(&(top.id.0, top.id.1, name.to_vec()));
            let fd = top.dir.fd()?;
            if !added && !self.shields_ignored(&path) {
                remove_all(fd, name)?;
                continue;
            }
            match open_child(fd, name) {
                Ok(child) => {
                    let next = level(child, path)?;
                    stack.push(next);
                }
                Err(Errno::NOTDIR | Errno::LOOP) if !added => unlink(fd, name)?,
                Err(Errno::NOTDIR | Errno::LOOP | Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
