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
//! otherwise: see [`confined`]); the handle serves the next entries in the
//! same directory too. The entry itself is then made in that parent handle
//! by name with `O_NOFOLLOW`/`O_EXCL` (when the name is taken, whatever holds
//! it is removed and the entry made again), so a symlink in the last
//! component is replaced, never written through. Symlinks are created with
//! their targets as written: they are only ever followed by the lookup
//! above, which keeps them inside.
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
//! whiteouts nor rooted symlink resolution. This file reads the stream and
//! dispatches each entry; `entries` makes files, directories and links,
//! `whiteouts` deletes and hides what lower layers hold.

mod confined;
mod entries;
mod headers;
mod merge;
#[cfg(test)]
mod tests;
mod whiteouts;

use std::collections::HashSet;
use std::io::{self, Read};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{self, AtFlags, FileType, Gid, Mode, Timespec, Timestamps, Uid};
use rustix::io::Errno;
use tar::{EntryType, Header};

pub use merge::{MergeStats, merge_tree};

use confined::{Resolver, Root};
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
        parent: None,
        ids: (rustix::process::geteuid(), rustix::process::getegid()),
        parent_setgid: false,
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
    /// The last entry's parent directory, kept for the next entry if it is
    /// in the same directory (a layer lists a directory's entries
    /// together): one lookup, `fstat` and `close` fewer for each. An entry
    /// in a directory makes, replaces or removes a child of it, which
    /// cannot change where the directory's own path leads (a path that
    /// went through the directory's child to reach it would loop), so the
    /// handle is still the one a lookup would give; an entry elsewhere
    /// replaces it, and a whiteout (which may delete it) drops it.
    parent: Option<Parent>,
    /// The ids new entries get as made (see `Applier::needs_owner`).
    ids: (Uid, Gid),
    /// The current entry's parent has the setgid bit (its entries take its
    /// group as made).
    parent_setgid: bool,
}

/// A parent directory kept by [`Applier::parent`]: its components (as
/// entries name it), handle and identity.
struct Parent {
    path: Vec<Vec<u8>>,
    fd: rustix::fd::OwnedFd,
    dev: u64,
    ino: u64,
    setgid: bool,
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
            // It may delete the kept directory (`.wh.dir` after `dir/x`).
            self.parent = None;
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

        let cached = match self.parent.take() {
            Some(cached)
                if cached
                    .path
                    .iter()
                    .map(Vec::as_slice)
                    .eq(parent.iter().copied()) =>
            {
                cached
            }
            _ => {
                self.created.clear();
                let fd = self.root.open_dir(parent, true, &mut self.created)?;
                self.added.extend(self.created.drain(..));
                let stat = fs::fstat(&fd)?;
                Parent {
                    path: parent.iter().map(|c| c.to_vec()).collect(),
                    fd,
                    dev: stat.st_dev,
                    ino: stat.st_ino,
                    setgid: stat.st_mode & libc::S_ISGID != 0,
                }
            }
        };
        self.parent_setgid = cached.setgid;
        let dir = &cached.fd;
        if kind != EntryType::Directory
            && self.shields_ignored(&path)
            && fs::statat(dir, last, AtFlags::SYMLINK_NOFOLLOW)
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
                consumed = self.file(dir, last, entry, &meta)?;
            }
            EntryType::Directory => self.dir(dir, last, &path, &meta)?,
            EntryType::Symlink => {
                let target = link
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| Failure::Refused("the symlink has no target".to_owned()))?;
                self.symlink(dir, last, &target, &meta)?;
            }
            EntryType::Link => {
                let target = link.unwrap_or_default();
                self.hardlink(dir, last, &target)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.node(dir, last, kind, &header, &meta)?;
            }
            other => {
                return Err(Failure::Refused(format!(
                    "its entry type {:?} is not supported",
                    char::from(other.as_byte())
                )));
            }
        }
        self.added.insert((cached.dev, cached.ino, last.to_vec()));
        self.parent = Some(cached);
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

/// Whether opening a directory failed because there is none at that path
/// (missing, not a directory, or a symlink where `O_NOFOLLOW` refuses one).
fn no_directory_there(error: &io::Error) -> bool {
    matches!(
        Errno::from_io_error(error),
        Some(Errno::NOENT | Errno::NOTDIR | Errno::LOOP)
    )
}

/// Unlinks a non-directory, a missing one being fine.
fn unlink(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
