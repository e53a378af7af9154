//! Path resolution confined to a root directory, for layer apply.
//!
//! Every lookup starts from an open handle on the root and goes one step at a
//! time through directory handles; a symlink met on the way is read and its
//! target resolved as if the root were `/` (an absolute target restarts at
//! the root, `..` stops at the root). This is what the kernel's
//! `openat2(RESOLVE_IN_ROOT)` does, and that call is used when the kernel
//! offers it; the hand-written walk is the fallback (kernels before 5.6,
//! seccomp filters that refuse the call) and the way missing directories are
//! created. Nothing here takes a path string that starts outside the root.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self, AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// The kernel's limit on symlinks followed in one lookup (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// How many times a lookup retries after losing a race with itself
/// (`mkdirat` said `EEXIST`, then the directory was gone) or with the
/// kernel's rename check (`openat2` said `EAGAIN`).
const MAX_RETRIES: usize = 8;

/// Flags for opening a directory handle to look things up in.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

/// Which lookup [`Root`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Resolver {
    /// `openat2(RESOLVE_IN_ROOT)`, falling back to [`Resolver::Walk`] when the
    /// kernel refuses it.
    Openat2,
    /// The component-by-component walk with `O_NOFOLLOW` only (tests use it
    /// to check the fallback on kernels that have openat2).
    #[cfg_attr(not(test), allow(dead_code))]
    Walk,
}

/// A directory made on the way to another one: the identity (`st_dev`,
/// `st_ino`) of its parent and its name.
pub(super) type Created = (u64, u64, Vec<u8>);

/// An open root directory that lookups are confined to.
pub(super) struct Root {
    fd: OwnedFd,
    openat2: Cell<bool>,
}

impl Root {
    /// Opens `path` (a trusted path chosen by the caller; it may itself be
    /// reached through symlinks) as the root.
    pub(super) fn open(path: &std::path::Path, resolver: Resolver) -> io::Result<Self> {
        let fd = fs::open(path, DIR_FLAGS, Mode::empty())?;
        Ok(Self {
            fd,
            openat2: Cell::new(resolver == Resolver::Openat2),
        })
    }

    /// Opens the directory at `path` (components relative to the root),
    /// following every symlink on the way, the last one included, rooted at
    /// the root. With `create`, missing directories are made (mode 0755) and
    /// listed in `created`.
    pub(super) fn open_dir(
        &self,
        path: &[&[u8]],
        create: bool,
        created: &mut Vec<Created>,
    ) -> io::Result<OwnedFd> {
        self.lookup(path, true, create, created)
    }

    /// Opens the directory at `path` without following a symlink in its last
    /// component (that gives `ELOOP`).
    pub(super) fn open_dir_nofollow(&self, path: &[&[u8]]) -> io::Result<OwnedFd> {
        self.lookup(path, false, false, &mut Vec::new())
    }

    fn lookup(
        &self,
        path: &[&[u8]],
        follow_last: bool,
        create: bool,
        created: &mut Vec<Created>,
    ) -> io::Result<OwnedFd> {
        if path.is_empty() {
            return Ok(fs::openat(&self.fd, c".", DIR_FLAGS, Mode::empty())?);
        }
        if self.openat2.get() {
            let joined = path.join(&b'/');
            let flags = if follow_last {
                DIR_FLAGS
            } else {
                DIR_FLAGS | OFlags::NOFOLLOW
            };
            for _ in 0..MAX_RETRIES {
                match fs::openat2(
                    &self.fd,
                    joined.as_slice(),
                    flags,
                    Mode::empty(),
                    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
                ) {
                    Ok(fd) => return Ok(fd),
                    // A rename raced with the lookup: the kernel asks to retry.
                    Err(Errno::AGAIN) => {}
                    // Missing directories are made by the walk; a path too
                    // long for one call is walked a component at a time.
                    Err(Errno::NOENT) if create => break,
                    Err(Errno::NAMETOOLONG) => break,
                    // No openat2 here (old kernel, seccomp filter): walk from now on.
                    Err(Errno::NOSYS | Errno::PERM | Errno::INVAL | Errno::TOOBIG) => {
                        tracing::debug!("openat2 is not available; resolving paths by walking");
                        self.openat2.set(false);
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.walk(path, follow_last, create, created)
    }

    /// The fallback lookup: one `openat(O_NOFOLLOW)` per component, symlinks
    /// read and resolved here, `..` taken from the names walked so far (never
    /// from the kernel, so it cannot climb above the root).
    fn walk(
        &self,
        path: &[&[u8]],
        follow_last: bool,
        create: bool,
        created: &mut Vec<Created>,
    ) -> io::Result<OwnedFd> {
        let mut todo: VecDeque<Vec<u8>> = path.iter().map(|c| c.to_vec()).collect();
        let mut walked: Vec<Vec<u8>> = Vec::new();
        let mut cur = self.reopen(&walked)?;
        let mut links = 0;
        let mut retries = 0;
        while let Some(name) = todo.pop_front() {
            if name.is_empty() || name == b"." {
                continue;
            }
            if name == b".." {
                if walked.pop().is_some() {
                    cur = self.reopen(&walked)?;
                }
                continue;
            }
            let last = todo.is_empty();
            match open_child(&cur, &name) {
                Ok(fd) => {
                    cur = fd;
                    walked.push(name);
                }
                Err(Errno::NOENT) if create => {
                    match fs::mkdirat(&cur, name.as_slice(), Mode::from_raw_mode(0o755)) {
                        Ok(()) => {
                            let parent = fs::fstat(&cur)?;
                            let fd = open_child(&cur, &name)?;
                            // mkdirat's mode went through the umask.
                            fs::fchmod(&fd, Mode::from_raw_mode(0o755))?;
                            created.push((parent.st_dev, parent.st_ino, name.clone()));
                            cur = fd;
                            walked.push(name);
                        }
                        Err(Errno::EXIST) if retries < MAX_RETRIES => {
                            retries += 1;
                            todo.push_front(name);
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    let stat = fs::statat(&cur, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)?;
                    if FileType::from_raw_mode(stat.st_mode) != FileType::Symlink {
                        return Err(Errno::NOTDIR.into());
                    }
                    if last && !follow_last {
                        return Err(Errno::LOOP.into());
                    }
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(Errno::LOOP.into());
                    }
                    let target = fs::readlinkat(&cur, name.as_slice(), Vec::new())?.into_bytes();
                    if target.first() == Some(&b'/') {
                        walked.clear();
                        cur = self.reopen(&walked)?;
                    }
                    for component in target.split(|b| *b == b'/').rev() {
                        todo.push_front(component.to_vec());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(cur)
    }

    /// Opens the directory reached by `names` from the root, following no
    /// symlink (each of them was a directory when the walk passed it).
    fn reopen(&self, names: &[Vec<u8>]) -> io::Result<OwnedFd> {
        let mut cur = fs::openat(&self.fd, c".", DIR_FLAGS, Mode::empty())?;
        for name in names {
            cur = open_child(&cur, name)?;
        }
        Ok(cur)
    }
}

/// Opens the directory `name` in `dir`, refusing a symlink (`ELOOP`) or a
/// non-directory (`ENOTDIR`).
pub(super) fn open_child(dir: impl AsFd, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    fs::openat(dir, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())
}

/// One directory being emptied by [`remove_all`].
struct Level {
    dir: Dir,
    name: Vec<u8>,
}

impl Level {
    fn open(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Self>> {
        match open_child(parent, name) {
            Ok(fd) => Ok(Some(Self {
                dir: Dir::new(fd)?,
                name: name.to_vec(),
            })),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Removes `name` in `dir` and, if it is a directory, everything under it,
/// without following any symlink. A missing `name` is not an error. The walk
/// keeps its own stack (one open handle per level), so a deep tree cannot
/// overflow the thread's stack.
pub(super) fn remove_all(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let mut stack: Vec<Level> = Level::open(dir, name)?.into_iter().collect();
    while let Some(top) = stack.last_mut() {
        let Some(entry) = top.dir.read() else {
            // Empty now: remove it from its parent.
            let done_name = std::mem::take(&mut top.name);
            stack.pop();
            let parent = match stack.last() {
                Some(level) => level.dir.fd()?,
                None => dir,
            };
            match fs::unlinkat(parent, done_name.as_slice(), AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
            continue;
        };
        let entry = entry?;
        let child = entry.file_name().to_bytes();
        if child == b"." || child == b".." {
            continue;
        }
        let fd = top.dir.fd()?;
        match fs::unlinkat(fd, child, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(Errno::ISDIR) => {
                if let Some(level) = Level::open(fd, child)? {
                    stack.push(level);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
