//! Layer apply: extracting one image layer (gzip, zstd or plain tar) onto a
//! root filesystem directory, with OCI whiteouts and opaque directories, the
//! way containerd's `archive.Apply` and Docker's `ApplyLayer` do. This module
//! owns the layer's meaning on disk; it must not run processes nor know where
//! layers come from (the store hands it a stream).
//!
//! # Confinement
//!
//! A layer is untrusted input, and nothing in it may write or read outside
//! the root. Every file system call is made relative to a directory handle
//! obtained under the root, never with a path string that starts outside it:
//! an entry's parent directory is looked up component by component from the
//! root's handle, and a symlink met on the way (one the layer just made, or
//! one from a lower layer) is resolved as if the root were `/`, so an
//! absolute target restarts at the root and `..` stops there
//! (`openat2(RESOLVE_IN_ROOT)` where the kernel has it, an `O_NOFOLLOW` walk
//! otherwise: see [`confined`]). The entry itself is then made in that parent
//! handle by name with `O_NOFOLLOW`/`O_EXCL` (after removing whatever was
//! there), so a symlink in the last component is replaced, never written
//! through. Symlinks are created with their targets as written: they are
//! only ever followed by the lookup above, which keeps them inside.
//!
//! What the layer asks for is either neutralised (applied inside the root)
//! or refused (an error that names the entry; the root is then left half
//! applied, and the caller must discard it):
//!
//! | in the layer | outcome |
//! |---|---|
//! | absolute name `/a/b` | neutralised: leading `/` stripped, applied at `a/b` |
//! | `.` components, `./` prefix | neutralised: dropped |
//! | a `..` component in a name or a hard link target | refused |
//! | a name naming the root itself (`./`) | skipped, like containerd |
//! | parent path through a symlink (`link -> /etc`, then `link/passwd`) | neutralised: written at `etc/passwd` under the root |
//! | symlink with an absolute or escaping target | created as written; never followed out of the root |
//! | a file where a symlink was (symlink-then-file) | the symlink is replaced, not followed |
//! | hard link to an absolute path | neutralised: the target is looked up under the root |
//! | hard link to a missing file, a directory or the root | refused |
//! | whiteout naming nothing, `.` or `..` (`.wh.`, `.wh..`, `.wh...`) | refused |
//! | name over 4096 bytes, a component over 255 bytes, a NUL byte | refused |
//! | PAX, GNU long name and sparse headers over 1 MiB before one entry | refused after reading at most that much |
//! | file data shorter than declared (an absurd PAX `size`) | refused when the stream ends |
//! | PAX records that are malformed or disagree with the tar reader | refused |
//! | device nodes when not running as root | skipped (debug log) |
//! | `trusted.*` and `security.*` xattrs when not running as root | skipped, except `security.capability`, which is always tried |
//!
//! Memory does not grow with the layer: file data streams through a fixed
//! buffer; per entry the reader keeps at most 1 MiB of headers (see
//! [`headers`]: the `tar` crate alone would read a long-name header of any
//! claimed size into memory); per layer the
//! apply keeps one small record per entry (for opaque directories and
//! directory times).
//!
//! Hand-written over the `tar` crate's own `unpack`, which has neither
//! whiteouts nor rooted symlink resolution.

mod confined;
mod headers;
mod merge;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{
    self, AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;
use tar::{EntryType, Header};

pub use merge::{MergeStats, merge_tree};

use confined::{Resolver, Root, open_child, remove_all};
use headers::{Guard, Guarded, MAX_HEADER_BYTES, Pax};

/// The longest entry name (Linux `PATH_MAX`).
const MAX_NAME: usize = 4096;

/// The longest name component (Linux `NAME_MAX`).
const MAX_COMPONENT: usize = 255;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// How a layer is applied.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// Running as root: `chown`, `mknod` of devices and `trusted.*`/
    /// `security.*` xattrs are allowed.
    pub root_is_privileged: bool,
    /// Give entries the numeric owner and group in the layer (only when
    /// `root_is_privileged`; otherwise files belong to the running user).
    pub preserve_ownership: bool,
    /// Image paths whose entries are skipped (kaniko's `--ignore-path`):
    /// nothing at or under them is created, replaced or deleted.
    pub ignore_paths: Vec<PathBuf>,
}

/// What whiteouts in a layer do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// They delete from the root, which holds the layers below (the
    /// layer's own meaning, as Docker and containerd apply it).
    #[default]
    Apply,
    /// The layer is extracted alone, into an empty directory, to serve as
    /// an overlayfs layer: `.wh.NAME` becomes a character device 0:0 named
    /// `NAME` (unless the layer itself has `NAME`: a whiteout only hides
    /// lower layers), `.wh..wh..opq` becomes the xattr
    /// `trusted.overlay.opaque=y` on its directory (`user.overlay.opaque`
    /// with `user_xattr`, for a `userxattr` mount). The layer's own
    /// `trusted.overlay.*`/`user.overlay.*` xattrs are dropped (overlayfs
    /// would act on them). A parent path through a symlink of a lower layer
    /// is a directory in this one, as with Docker's and containerd's
    /// overlay snapshotters.
    Overlay {
        /// Mark opaque directories in the `user.` namespace.
        user_xattr: bool,
        /// The extracted directories of the layers below, bottom first. A
        /// hard link to a file that is not in this layer (legal in OCI:
        /// the target may be in a lower layer) becomes a copy of that file
        /// from the topmost of these that has it (looked up confined to
        /// that directory, stopping at a whiteout of the file or at an
        /// opaque parent; whiteouts of its ancestors are not looked at).
        /// Without a match the link is refused, as in [`WhiteoutMode::Apply`].
        lower_dirs: Vec<PathBuf>,
    },
}

impl WhiteoutMode {
    /// [`WhiteoutMode::Overlay`] with the xattr namespace an overlay
    /// mounted by this process uses: `user.` when not root or in a user
    /// namespace (the mount then has `userxattr`), `trusted.` otherwise.
    #[must_use]
    pub fn overlay(lower_dirs: Vec<PathBuf>) -> Self {
        let in_user_namespace = std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|map| {
            map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"]
        });
        WhiteoutMode::Overlay {
            user_xattr: in_user_namespace || !rustix::process::geteuid().is_root(),
            lower_dirs,
        }
    }
}

/// What one apply did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Tar entries read (extension headers not counted).
    pub entries: u64,
    /// Bytes of regular file data written.
    pub bytes: u64,
    /// Whiteouts and opaque-directory markers applied.
    pub whiteouts: u64,
}

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot open the root directory {}", path.display())]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the layer")]
    Read(#[source] io::Error),
    #[error("the extension headers after layer entry {after:?} exceed {limit} bytes")]
    HeadersTooLarge { after: String, limit: u64 },
    #[error("layer entry {entry:?} is refused: {reason}")]
    Refused { entry: String, reason: String },
    #[error(
        "layer entry {entry:?} is truncated: its header declares {declared} bytes, the layer holds {found}"
    )]
    Truncated {
        entry: String,
        declared: u64,
        found: u64,
    },
    #[error("hard link {entry:?} cannot link to {target:?} inside the root")]
    HardLink {
        entry: String,
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot apply layer entry {entry:?}")]
    Entry {
        entry: String,
        #[source]
        source: io::Error,
    },
}

type Result<T, E = ApplyError> = std::result::Result<T, E>;

/// Applies one layer (gzip, zstd, bzip2, xz or plain tar, detected from the first bytes,
/// not trusted from a media type) to the root filesystem at `root`. Streams:
/// never holds the layer in memory. Reads the stream to its end, so a
/// digest computed by the reader covers all of it.
pub fn apply_layer(reader: impl Read, root: &Path, opts: &ApplyOptions) -> Result<ApplyStats> {
    apply_with(reader, root, opts, Resolver::Openat2)
}

/// [`apply_layer`] with the whiteouts handled as `whiteouts` says
/// ([`WhiteoutMode::Overlay`]: extracting a layer for overlayfs).
pub fn apply_layer_with(
    reader: impl Read,
    root: &Path,
    opts: &ApplyOptions,
    whiteouts: &WhiteoutMode,
) -> Result<ApplyStats> {
    let stream = decompress(reader)?;
    apply_tar(stream, root, opts, whiteouts, Resolver::Openat2)
}

/// [`apply_layer_with`] for a stream already decompressed (a plain tar; a
/// caller that hashes the tar for the diffID decompresses it itself).
pub fn apply_tar_with(
    tar: impl Read,
    root: &Path,
    opts: &ApplyOptions,
    whiteouts: &WhiteoutMode,
) -> Result<ApplyStats> {
    apply_tar(tar, root, opts, whiteouts, Resolver::Openat2)
}

/// Opens a compressed-or-plain layer stream as a tar reader (also used by
/// others to list a layer).
pub fn decompress<'a>(reader: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let mut reader = reader;
    let mut magic = [0u8; 6];
    let mut filled = 0;
    while filled < magic.len() {
        match reader.read(&mut magic[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ApplyError::Read(e)),
        }
    }
    let magic = &magic[..filled];
    let stream = io::Cursor::new(magic.to_vec()).chain(reader);
    if magic.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(stream)))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(
            zstd::stream::read::Decoder::new(stream).map_err(ApplyError::Read)?,
        ))
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Ok(Box::new(liblzma::read::XzDecoder::new_multi_decoder(
            stream,
        )))
    } else if magic.starts_with(b"BZh") {
        Ok(Box::new(bzip2::read::MultiBzDecoder::new(stream)))
    } else {
        Ok(Box::new(stream))
    }
}

fn apply_with(
    reader: impl Read,
    root: &Path,
    opts: &ApplyOptions,
    resolver: Resolver,
) -> Result<ApplyStats> {
    let stream = decompress(reader)?;
    apply_tar(stream, root, opts, &WhiteoutMode::Apply, resolver)
}

fn apply_tar(
    stream: impl Read,
    root: &Path,
    opts: &ApplyOptions,
    whiteouts: &WhiteoutMode,
    resolver: Resolver,
) -> Result<ApplyStats> {
    let root_dir = Root::open(root, resolver).map_err(|source| ApplyError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    let mut applier = Applier {
        root: root_dir,
        opts,
        whiteouts,
        chown: opts.preserve_ownership && opts.root_is_privileged,
        ignore: opts
            .ignore_paths
            .iter()
            .map(|p| ignore_components(p))
            .collect(),
        added: HashSet::new(),
        dirs: Vec::new(),
        created: Vec::new(),
        buf: vec![0; 128 * 1024],
        stats: ApplyStats::default(),
    };
    applier.run(stream)?;
    applier.finish_dirs()?;
    Ok(applier.stats)
}

/// An ignore path as components, `..` taken lexically.
fn ignore_components(path: &Path) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in path.as_os_str().as_bytes().split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            _ => out.push(c.to_vec()),
        }
    }
    out
}

/// An entry name as components: leading `/` and `.` components dropped,
/// `..` and oversized names refused (the error completes "its name ...").
fn components(raw: &[u8]) -> Result<Vec<&[u8]>, String> {
    if raw.len() > MAX_NAME {
        return Err(format!(
            "is {} bytes long, over the limit of {MAX_NAME}",
            raw.len()
        ));
    }
    if raw.contains(&0) {
        return Err("contains a NUL byte".to_owned());
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("has a `..` component".to_owned()),
            _ if c.len() > MAX_COMPONENT => {
                return Err(format!(
                    "has a component {} bytes long, over the limit of {MAX_COMPONENT}",
                    c.len()
                ));
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// An entry name for messages: lossy UTF-8, cut at 256 bytes.
fn shown(name: &[u8]) -> String {
    const MAX: usize = 256;
    let cut = &name[..name.len().min(MAX)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if name.len() > MAX {
        s.push_str("...");
    }
    s
}

// ---------------------------------------------------------------------------
// Applying entries.

/// Why one entry failed, before the entry's name is attached.
enum Failure {
    Io(io::Error),
    Refused(String),
    Truncated { declared: u64, found: u64 },
    HardLink { target: Vec<u8>, source: io::Error },
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<Errno> for Failure {
    fn from(e: Errno) -> Self {
        Self::Io(e.into())
    }
}

impl Failure {
    fn named(self, entry: &[u8]) -> ApplyError {
        let entry = shown(entry);
        match self {
            Self::Io(source) => ApplyError::Entry { entry, source },
            Self::Refused(reason) => ApplyError::Refused { entry, reason },
            Self::Truncated { declared, found } => ApplyError::Truncated {
                entry,
                declared,
                found,
            },
            Self::HardLink { target, source } => ApplyError::HardLink {
                entry,
                target: shown(&target),
                source,
            },
        }
    }
}

/// The metadata of one entry.
struct Meta {
    mode: Mode,
    owner: Option<(Uid, Gid)>,
    times: Timestamps,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    fn new(header: &Header, pax: &Pax, chown: bool) -> Result<Self, Failure> {
        let refused = |what: &str| Failure::Refused(format!("its header has a malformed {what}"));
        let mode = header.mode().map_err(|_| refused("mode"))? & 0o7777;
        let owner = if chown {
            let id = |pax: Option<u64>, header: io::Result<u64>, what: &str| {
                let id = match pax {
                    Some(id) => id,
                    None => header.map_err(|_| refused(what))?,
                };
                u32::try_from(id)
                    .ok()
                    .filter(|id| *id != u32::MAX)
                    .ok_or_else(|| Failure::Refused(format!("its {what} {id} is out of range")))
            };
            let uid = id(pax.uid, header.uid(), "owner id")?;
            let gid = id(pax.gid, header.gid(), "group id")?;
            Some((Uid::from_raw(uid), Gid::from_raw(gid)))
        } else {
            None
        };
        let mtime = match pax.mtime {
            Some(t) => t,
            None => Timespec {
                tv_sec: header
                    .mtime()
                    .ok()
                    .and_then(|t| i64::try_from(t).ok())
                    .ok_or_else(|| refused("modification time"))?,
                tv_nsec: 0,
            },
        };
        // As containerd: the access time is never before the modification time.
        let atime = pax
            .atime
            .filter(|a| (a.tv_sec, a.tv_nsec) > (mtime.tv_sec, mtime.tv_nsec))
            .unwrap_or(mtime);
        Ok(Self {
            mode: Mode::from_raw_mode(mode),
            owner,
            times: Timestamps {
                last_access: atime,
                last_modification: mtime,
            },
            xattrs: pax.xattrs.clone(),
        })
    }
}

/// A directory whose mode and times are set once the layer is done, so that
/// creating its children does not change them (and a read-only directory
/// can still be filled).
struct DeferredDir {
    path: Vec<Vec<u8>>,
    mode: Mode,
    times: Timestamps,
}

/// Where an xattr goes: an open file, or a name in an open directory (for
/// symlinks and device nodes, which cannot be opened for writing).
#[derive(Clone, Copy)]
enum Target<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a [u8]),
}

struct Applier<'o> {
    root: Root,
    opts: &'o ApplyOptions,
    whiteouts: &'o WhiteoutMode,
    chown: bool,
    ignore: Vec<Vec<Vec<u8>>>,
    /// Everything this layer put in place, as (parent `st_dev`, parent
    /// `st_ino`, name): what an opaque marker keeps.
    added: HashSet<(u64, u64, Vec<u8>)>,
    dirs: Vec<DeferredDir>,
    created: Vec<confined::Created>,
    buf: Vec<u8>,
    stats: ApplyStats,
}

impl Applier<'_> {
    fn run(&mut self, stream: impl Read) -> Result<()> {
        let guard = Rc::new(Guard::default());
        let mut archive = tar::Archive::new(Guarded {
            inner: stream,
            guard: Rc::clone(&guard),
        });
        let mut last: Vec<u8> = b"(start of the layer)".to_vec();
        guard.arm();
        for item in archive.entries().map_err(ApplyError::Read)? {
            let mut entry = match item {
                Ok(entry) => entry,
                Err(_) if guard.tripped.get() => {
                    return Err(ApplyError::HeadersTooLarge {
                        after: shown(&last),
                        limit: MAX_HEADER_BYTES,
                    });
                }
                Err(e) => return Err(ApplyError::Read(e)),
            };
            guard.disarm();
            self.stats.entries += 1;
            let pax = guard.pax_before(entry.raw_header_position());
            let pax = match pax {
                Ok(None) => Ok(Pax::default()),
                Ok(Some(data)) => Pax::parse(&data),
                Err(()) => Err("its extension headers do not parse consistently".to_owned()),
            };
            let name = match &pax {
                Ok(Pax {
                    path: Some(path), ..
                }) => path.clone(),
                _ => entry.path_bytes().into_owned(),
            };
            let result = match pax {
                Ok(pax) => self.entry(&mut entry, &name, &pax),
                Err(reason) => Err(Failure::Refused(reason)),
            };
            result
                .and_then(|consumed| drain(&mut entry, consumed))
                .map_err(|f| f.named(&name))?;
            last = name;
            guard.arm();
        }
        guard.disarm();
        // Read to the end: a gzip trailer is checked, and a caller hashing
        // the stream sees all of it.
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(ApplyError::Read)?;
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &[u8],
        pax: &Pax,
    ) -> Result<u64, Failure> {
        let header = entry.header().clone();
        let mut kind = header.entry_type();
        if let Some(size) = pax.size
            && size != entry.size()
            && kind != EntryType::GNUSparse
        {
            return Err(Failure::Refused(
                "its PAX size disagrees with the tar reader".to_owned(),
            ));
        }
        match kind {
            EntryType::XGlobalHeader => {
                tracing::debug!("PAX global header ignored");
                return Ok(0);
            }
            // Old (v7) tars mark directories with a trailing slash only.
            EntryType::Regular if name.ends_with(b"/") => kind = EntryType::Directory,
            _ => {}
        }
        let path =
            components(name).map_err(|reason| Failure::Refused(format!("its name {reason}")))?;
        let Some((&last, parent)) = path.split_last() else {
            tracing::debug!(entry = %shown(name), "entry naming the root skipped");
            return Ok(0);
        };
        if self.ignored(&path) {
            tracing::debug!(entry = %shown(name), "entry under an ignored path skipped");
            return Ok(0);
        }
        if let Some(target) = last.strip_prefix(WHITEOUT_PREFIX) {
            self.whiteout(parent, last, target)?;
            return Ok(0);
        }
        if matches!(kind, EntryType::Char | EntryType::Block) && !self.opts.root_is_privileged {
            tracing::debug!(entry = %shown(name), "device node skipped: not running as root");
            return Ok(0);
        }
        let meta = Meta::new(&header, pax, self.chown)?;
        let link = pax
            .linkpath
            .clone()
            .or_else(|| entry.link_name_bytes().map(std::borrow::Cow::into_owned));

        self.created.clear();
        let dir = self.root.open_dir(parent, true, &mut self.created)?;
        self.added.extend(self.created.drain(..));
        if kind != EntryType::Directory
            && self.shields_ignored(&path)
            && fs::statat(&dir, last, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
        {
            tracing::warn!(
                entry = %shown(name),
                "entry would replace a directory holding an ignored path; skipped"
            );
            return Ok(0);
        }
        let mut consumed = 0;
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                consumed = self.file(&dir, last, entry, &meta)?;
            }
            EntryType::Directory => self.dir(&dir, last, &path, &meta)?,
            EntryType::Symlink => {
                let target = link
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| Failure::Refused("the symlink has no target".to_owned()))?;
                self.symlink(&dir, last, &target, &meta)?;
            }
            EntryType::Link => {
                let target = link.unwrap_or_default();
                self.hardlink(&dir, last, &target)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.node(&dir, last, kind, &header, &meta)?;
            }
            other => {
                return Err(Failure::Refused(format!(
                    "its entry type {:?} is not supported",
                    char::from(other.as_byte())
                )));
            }
        }
        let parent_stat = fs::fstat(&dir)?;
        self.added
            .insert((parent_stat.st_dev, parent_stat.st_ino, last.to_vec()));
        Ok(consumed)
    }

    fn ignored<C: AsRef<[u8]>>(&self, path: &[C]) -> bool {
        self.ignore.iter().any(|ig| {
            ig.len() <= path.len() && ig.iter().zip(path).all(|(a, b)| a.as_slice() == b.as_ref())
        })
    }

    /// Whether `path` is a strict ancestor of an ignored path.
    fn shields_ignored<C: AsRef<[u8]>>(&self, path: &[C]) -> bool {
        self.ignore.iter().any(|ig| {
            ig.len() > path.len() && ig.iter().zip(path).all(|(a, b)| a.as_slice() == b.as_ref())
        })
    }

    /// A whiteout `.wh.NAME` (deletes NAME) or the opaque marker.
    fn whiteout(&mut self, parent: &[&[u8]], last: &[u8], target: &[u8]) -> Result<(), Failure> {
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
    fn copy_from_lowers(
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
                Err(e)
                    if matches!(
                        Errno::from_io_error(&e),
                        Some(Errno::NOENT | Errno::NOTDIR | Errno::LOOP)
                    ) =>
                {
                    continue;
                }
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

    /// Clears the way for a new entry `name` in `dir`: whatever is there is
    /// removed, except a directory when the new entry is one too (Docker's
    /// rule: the two merge). Returns whether a directory was kept.
    fn replace(dir: BorrowedFd<'_>, name: &[u8], new_is_dir: bool) -> io::Result<bool> {
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

    fn file<R: Read>(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
    ) -> Result<u64, Failure> {
        Self::replace(dir.as_fd(), name, false)?;
        let fd = fs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
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
        if let Some((uid, gid)) = meta.owner {
            fs::fchown(&file, Some(uid), Some(gid))?;
        }
        fs::fchmod(&file, meta.mode)?;
        self.xattrs(Target::Fd(file.as_fd()), meta)?;
        fs::futimens(&file, &meta.times)?;
        Ok(written)
    }

    fn dir(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        path: &[&[u8]],
        meta: &Meta,
    ) -> Result<(), Failure> {
        if !Self::replace(dir.as_fd(), name, true)? {
            // Owner-only until the layer is done; the mode is set then.
            fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))?;
        }
        let fd = open_child(dir, name)?;
        if let Some((uid, gid)) = meta.owner {
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

    fn symlink(
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
        Self::replace(dir.as_fd(), name, false)?;
        fs::symlinkat(target, dir, name)?;
        self.at_metadata(dir.as_fd(), name, meta, false)
    }

    /// A hard link to an entry already under the root: the target's parent
    /// is looked up under the root like any path, its last component is not
    /// followed (a link to a symlink links the symlink, as `link(2)` does).
    /// The link's own header metadata is not applied: the inode keeps what
    /// its first entry gave it (a `chown` would drop `security.capability`).
    fn hardlink(&mut self, dir: &OwnedFd, name: &[u8], target: &[u8]) -> Result<(), Failure> {
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

    fn node(
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
        Self::replace(dir.as_fd(), name, false)?;
        fs::mknodat(dir, name, file_type, Mode::from_raw_mode(0o600), dev)?;
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
        if let Some((uid, gid)) = meta.owner {
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
    fn finish_dirs(&mut self) -> Result<()> {
        for deferred in std::mem::take(&mut self.dirs) {
            let path: Vec<&[u8]> = deferred.path.iter().map(Vec::as_slice).collect();
            let fd = match self.root.open_dir_nofollow(&path) {
                Ok(fd) => fd,
                Err(e)
                    if matches!(
                        Errno::from_io_error(&e),
                        Some(Errno::NOENT | Errno::NOTDIR | Errno::LOOP)
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(Failure::from(e).named(&deferred.path.join(&b'/'))),
            };
            fs::fchmod(&fd, deferred.mode)
                .and_then(|()| fs::futimens(&fd, &deferred.times))
                .map_err(|e| Failure::from(e).named(&deferred.path.join(&b'/')))?;
        }
        Ok(())
    }
}

/// Reads what is left of an entry's data (a directory or link with a size,
/// a skipped entry) after `consumed` bytes, checking that the stream holds
/// all it declares.
fn drain<R: Read>(entry: &mut tar::Entry<'_, R>, consumed: u64) -> Result<(), Failure> {
    let declared = entry.size();
    let found = consumed + io::copy(entry, &mut io::sink())?;
    if found == declared {
        Ok(())
    } else {
        Err(Failure::Truncated { declared, found })
    }
}

/// Unlinks a non-directory, a missing one being fine.
fn unlink(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
