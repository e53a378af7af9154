//! Writing a layer: a list of [`LayerEntry`]s becomes a deterministic tar
//! stream, compressed with gzip or zstd (or not), with its diffID (sha256
//! of the tar) and its digest (sha256 of the compressed bytes) computed in
//! the same single pass. Nothing is held in memory beyond fixed-size
//! buffers, whatever the size of the layer.
//!
//! Deterministic means the same entries always give the same bytes:
//! entries are sorted by path (component by component, so parents come
//! before their children) whatever order they are given in; headers are
//! normalized (USTAR, with a PAX extended header only where USTAR cannot
//! hold a value: long or non-ASCII names and link targets, sizes of 8 GiB
//! and more, large ids or times, and xattrs as `SCHILY.xattr.*`; whole
//! seconds only; no atime or ctime; empty user and group names; device
//! numbers only on devices). With a `source_date_epoch`, times later than
//! it are clamped to it.
//!
//! Also [`layer_from_dir`], which turns a prepared directory tree into
//! entries (hard links detected, xattrs read, symlinks not followed), and
//! [`layer_from_overlay_upper`], which does the same for an overlayfs
//! upper directory, turning its whiteouts into OCI whiteouts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use gzp::ZWriter;
use gzp::deflate::Gzip;
use gzp::par::compress::ParCompressBuilder;
use oci_spec::image::{Descriptor, MediaType};
use rustix::fs::{Mode, OFlags};

use super::digest::{Digest, HashingWriter};

/// `application/vnd.oci.image.layer.v1.tar`
pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// `application/vnd.oci.image.layer.v1.tar+gzip`
pub const MEDIA_TYPE_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// `application/vnd.oci.image.layer.v1.tar+zstd`
pub const MEDIA_TYPE_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// The prefix that marks a whiteout file in a layer.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The name of the file that marks its directory opaque.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

const BLOCK: usize = 512;
const COPY_BUFFER: usize = 1 << 20;
/// Largest values the USTAR octal fields hold.
const MAX_OCTAL_8: u64 = 0o777_7777;
const MAX_OCTAL_12: u64 = 0o777_7777_7777;

/// Most zstd workers a layer uses. Each costs memory (about 9 MiB at the
/// default level), and more would not help: reading, tar and the two
/// sha256 passes on the calling thread are slower than eight workers.
pub const MAX_ZSTD_WORKERS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("invalid layer path {path:?}: {reason}")]
    InvalidPath { path: PathBuf, reason: &'static str },
    #[error("layer path {path:?} appears more than once")]
    DuplicatePath { path: PathBuf },
    #[error(
        "hard link {path:?} points to {target:?}, which is not a non-directory entry that sorts before it"
    )]
    HardlinkTarget { path: PathBuf, target: PathBuf },
    #[error("invalid xattr name {name:?} on {path:?}")]
    XattrName { path: PathBuf, name: String },
    #[error("compression level {level} is out of range for {compression} ({min} to {max})")]
    Level {
        compression: Compression,
        level: i32,
        min: i32,
        max: i32,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path} changed size while the layer was written (expected {expected} bytes)")]
    Changed { path: PathBuf, expected: u64 },
    #[error("cannot write the layer")]
    Write(#[source] io::Error),
    #[error("cannot start {compression} compression")]
    Compressor {
        compression: Compression,
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, LayerError>;

/// How a layer's tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    Uncompressed,
}

impl Compression {
    /// The OCI layer media type for this compression.
    #[must_use]
    pub fn media_type(self) -> MediaType {
        match self {
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
            Compression::Uncompressed => MediaType::ImageLayer,
        }
    }

    /// The level used when none is given: 6 for gzip (as `gzip` and Go's
    /// `compress/gzip`), 3 for zstd.
    #[must_use]
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Gzip => 6,
            Compression::Zstd => 3,
            Compression::Uncompressed => 0,
        }
    }

    /// The accepted levels: 0 to 9 for gzip, zstd's own range for zstd.
    #[must_use]
    pub fn level_range(self) -> (i32, i32) {
        match self {
            Compression::Gzip => (0, 9),
            Compression::Zstd => {
                let range = zstd::compression_level_range();
                (*range.start(), *range.end())
            }
            Compression::Uncompressed => (0, 0),
        }
    }

    fn resolve_level(self, level: Option<i32>) -> Result<i32> {
        let Some(level) = level else {
            return Ok(self.default_level());
        };
        let (min, max) = self.level_range();
        if self == Compression::Uncompressed || (min..=max).contains(&level) {
            Ok(level)
        } else {
            Err(LayerError::Level {
                compression: self,
                level,
                min,
                max,
            })
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Uncompressed => "uncompressed",
        })
    }
}

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerEntry {
    /// Path in the image, relative to its root (a leading `/` is ignored;
    /// `..` is refused). For whiteouts, the path being deleted; for an
    /// opaque whiteout, the directory made opaque.
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Permission bits, setuid, setgid and sticky (`0o7777`); file type
    /// bits are ignored.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Modification time in whole seconds since the epoch.
    pub mtime: i64,
    /// Extended attributes, written as PAX `SCHILY.xattr.<name>` records.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file whose content is read from this path on disk when
    /// the layer is written.
    File(PathBuf),
    Dir,
    /// A symbolic link with this target, written as is.
    Symlink(PathBuf),
    /// A hard link to this path in the layer, which must be a
    /// non-directory entry that sorts before the link.
    Hardlink(PathBuf),
    /// Character device (major, minor).
    CharDevice(u32, u32),
    /// Block device (major, minor).
    BlockDevice(u32, u32),
    Fifo,
    /// Deletes `path` from lower layers: written as `dir/.wh.name`.
    Whiteout,
    /// Hides everything lower layers have in the directory `path`: written
    /// as `path/.wh..wh..opq`. Add a [`EntryKind::Dir`] entry for the
    /// directory itself too.
    OpaqueWhiteout,
}

impl LayerEntry {
    /// An entry owned by root with mtime 0 and the usual mode for its kind
    /// (0o755 for directories, 0o777 for symlinks, 0o644 otherwise).
    pub fn new(path: impl Into<PathBuf>, kind: EntryKind) -> Self {
        let mode = match kind {
            EntryKind::Dir => 0o755,
            EntryKind::Symlink(_) => 0o777,
            _ => 0o644,
        };
        LayerEntry {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: BTreeMap::new(),
        }
    }
}

/// Options of [`write_layer`] that do not select the compression.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// When set, modification times later than this are clamped to it
    /// (`SOURCE_DATE_EPOCH`, `--reproducible`).
    pub source_date_epoch: Option<u64>,
}

/// What [`write_layer`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// Digest of the bytes written to `out` (the compressed layer).
    pub digest: Digest,
    /// sha256 of the uncompressed tar, for the image config's `diff_ids`.
    pub diff_id: Digest,
    /// Number of bytes written to `out`.
    pub size: u64,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    pub media_type: MediaType,
}

impl LayerInfo {
    /// The descriptor for an image manifest's `layers`.
    #[must_use]
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(self.media_type.clone(), self.size, &self.digest)
    }
}

/// The thread count [`write_layer`] uses for `threads == 0`: every core.
#[must_use]
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Writes `entries` as a layer to `out` and returns its digest, diffID and
/// size, computed while writing.
///
/// `level` defaults to [`Compression::default_level`]. `threads` is the
/// number of compression threads (0: [`default_threads`]); file reading,
/// tar formatting and hashing run on the calling thread.
///
/// **Digests do not depend on `threads`.** gzip is written pigz-style by
/// `gzp`: the tar stream is cut into fixed 128 KiB blocks, each deflated
/// on its own and sync-flushed, so the output is a function of the data
/// only (one standard gzip member, but not the same bytes as a
/// single-stream `gzip`). zstd always runs in its multi-threaded mode with
/// at least one worker, whose output is the same for any worker count
/// (it differs from zstd's single-threaded mode, which is never used).
/// The tests check both. Digests can differ between builds of this program
/// that link other compressor versions; the diffID never does.
///
/// Memory stays flat whatever the layer size: gzip holds about two 128 KiB
/// blocks per thread; zstd about 17 MiB plus 9 MiB per worker at level 3
/// (much more at high levels), which is why it uses at most
/// [`MAX_ZSTD_WORKERS`] workers.
pub fn write_layer<W: Write + Send>(
    entries: Vec<LayerEntry>,
    compression: Compression,
    level: Option<i32>,
    threads: usize,
    out: W,
    options: &WriteOptions,
) -> Result<LayerInfo> {
    let level = compression.resolve_level(level)?;
    let threads = if threads == 0 {
        default_threads()
    } else {
        threads
    };
    let plan = plan(entries, options)?;
    let media_type = compression.media_type();
    match compression {
        Compression::Uncompressed => {
            let mut tar = HashingWriter::sha256(out);
            write_tar(&plan, &mut tar)?;
            let (_, diff_id, size) = tar.finish();
            Ok(LayerInfo {
                digest: diff_id.clone(),
                diff_id,
                size,
                uncompressed_size: size,
                media_type,
            })
        }
        Compression::Gzip => std::thread::scope(|scope| {
            let level = u32::try_from(level).expect("gzip levels are 0 to 9");
            let gz = ParCompressBuilder::<Gzip>::new()
                .num_threads(threads)
                .expect("threads is at least 1")
                .compression_level(flate2::Compression::new(level))
                .from_borrowed_writer(HashingWriter::sha256(out), scope);
            let mut tar = HashingWriter::sha256(NoFlush(gz));
            let written = write_tar(&plan, &mut tar);
            let (NoFlush(mut gz), diff_id, uncompressed_size) = tar.finish();
            // Always finish: it joins gzp's threads (and its Drop panics on
            // errors).
            let finished = gz
                .finish()
                .map_err(|e| LayerError::Write(io::Error::other(e)));
            written?;
            let (_, digest, size) = finished?.finish();
            Ok(LayerInfo {
                digest,
                diff_id,
                size,
                uncompressed_size,
                media_type,
            })
        }),
        Compression::Zstd => {
            let compressor_err = |source| LayerError::Compressor {
                compression,
                source,
            };
            let mut zst = zstd::stream::write::Encoder::new(HashingWriter::sha256(out), level)
                .map_err(compressor_err)?;
            let workers = threads.min(MAX_ZSTD_WORKERS);
            zst.multithread(u32::try_from(workers).expect("at most MAX_ZSTD_WORKERS"))
                .map_err(compressor_err)?;
            let mut tar = HashingWriter::sha256(zst);
            write_tar(&plan, &mut tar)?;
            let (zst, diff_id, uncompressed_size) = tar.finish();
            let (_, digest, size) = zst.finish().map_err(LayerError::Write)?.finish();
            Ok(LayerInfo {
                digest,
                diff_id,
                size,
                uncompressed_size,
                media_type,
            })
        }
    }
}

/// Keeps `flush` calls from reaching gzp, where they would end a block
/// early and make the output depend on when they happen.
struct NoFlush<W>(W);

impl<W: Write> Write for NoFlush<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An entry ready to be written: validated, with its name in the tar.
struct Planned {
    /// Name in the tar, without the trailing `/` of directories.
    name: PathBuf,
    entry: LayerEntry,
}

/// Normalizes a path in the image: no root, no `.`, no `..`.
fn normalize(path: &Path) -> Result<PathBuf> {
    let invalid = |reason| LayerError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(invalid("`..` is not allowed")),
            Component::Prefix(_) => return Err(invalid("not a Unix path")),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(invalid("empty path"));
    }
    Ok(out)
}

fn with_file_name_prefix(path: &Path, prefix: &str) -> PathBuf {
    let mut name = OsStr::new(prefix).to_owned();
    name.push(path.file_name().unwrap_or_default());
    path.with_file_name(name)
}

/// Validates, names, clamps and sorts the entries.
fn plan(entries: Vec<LayerEntry>, options: &WriteOptions) -> Result<Vec<Planned>> {
    let mut planned = Vec::with_capacity(entries.len());
    for mut entry in entries {
        let path = normalize(&entry.path)?;
        let reserved = path
            .file_name()
            .is_some_and(|n| n.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()));
        if reserved {
            return Err(LayerError::InvalidPath {
                path,
                reason: "names starting with .wh. are reserved for whiteouts",
            });
        }
        for name in entry.xattrs.keys() {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(LayerError::XattrName {
                    path,
                    name: name.clone(),
                });
            }
        }
        let name = match entry.kind {
            EntryKind::Whiteout => with_file_name_prefix(&path, WHITEOUT_PREFIX),
            EntryKind::OpaqueWhiteout => path.join(OPAQUE_WHITEOUT),
            _ => path.clone(),
        };
        if let EntryKind::Hardlink(target) = &entry.kind {
            entry.kind = EntryKind::Hardlink(normalize(target)?);
        }
        if let Some(epoch) = options.source_date_epoch {
            entry.mtime = entry.mtime.min(i64::try_from(epoch).unwrap_or(i64::MAX));
        }
        entry.mode &= 0o7777;
        entry.path = path;
        planned.push(Planned { name, entry });
    }
    planned.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(pair) = planned.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(LayerError::DuplicatePath {
            path: pair[1].entry.path.clone(),
        });
    }
    let mut linkable = HashSet::new();
    for p in &planned {
        match &p.entry.kind {
            EntryKind::Dir | EntryKind::Whiteout | EntryKind::OpaqueWhiteout => {}
            EntryKind::Hardlink(target) => {
                if !linkable.contains(target) {
                    return Err(LayerError::HardlinkTarget {
                        path: p.entry.path.clone(),
                        target: target.clone(),
                    });
                }
                linkable.insert(p.name.clone());
            }
            _ => {
                linkable.insert(p.name.clone());
            }
        }
    }
    Ok(planned)
}

fn write_tar(plan: &[Planned], out: &mut impl Write) -> Result<()> {
    let mut buf = vec![0u8; COPY_BUFFER];
    for p in plan {
        write_entry(p, out, &mut buf)?;
    }
    out.write_all(&[0u8; 2 * BLOCK]).map_err(LayerError::Write)
}

fn write_entry(p: &Planned, out: &mut impl Write, buf: &mut [u8]) -> Result<()> {
    let (file, size) = match &p.entry.kind {
        EntryKind::File(source) => {
            let file = open_source(source)?;
            let size = file
                .metadata()
                .map_err(|source_err| LayerError::Read {
                    path: source.clone(),
                    source: source_err,
                })?
                .len();
            (Some((file, source)), size)
        }
        _ => (None, 0),
    };
    let (header, pax) = header_for(p, size);
    if !pax.is_empty() {
        let (pax_header, data) = pax_header(&p.name, &pax);
        out.write_all(pax_header.as_bytes())
            .and_then(|()| out.write_all(&data))
            .and_then(|()| out.write_all(&[0u8; BLOCK][..padding(data.len() as u64)]))
            .map_err(LayerError::Write)?;
    }
    out.write_all(header.as_bytes())
        .map_err(LayerError::Write)?;
    if let Some((file, path)) = file {
        copy_exact(file, path, size, out, buf)?;
        out.write_all(&[0u8; BLOCK][..padding(size)])
            .map_err(LayerError::Write)?;
    }
    Ok(())
}

/// Opens a file's content source without blocking on FIFOs and checks that
/// it is a regular file.
fn open_source(path: &Path) -> Result<File> {
    let read_err = |source: io::Error| LayerError::Read {
        path: path.to_owned(),
        source,
    };
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| read_err(e.into()))?;
    let file = File::from(fd);
    if !file.metadata().map_err(read_err)?.is_file() {
        return Err(LayerError::NotAFile {
            path: path.to_owned(),
        });
    }
    Ok(file)
}

/// Copies exactly `size` bytes of `file` to `out`; a file that is shorter
/// or longer than that now is an error.
fn copy_exact(
    mut file: File,
    path: &Path,
    size: u64,
    out: &mut impl Write,
    buf: &mut [u8],
) -> Result<()> {
    let changed = || LayerError::Changed {
        path: path.to_owned(),
        expected: size,
    };
    let mut remaining = size;
    while remaining > 0 {
        let want = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => return Err(changed()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(LayerError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        out.write_all(&buf[..n]).map_err(LayerError::Write)?;
        remaining -= n as u64;
    }
    let mut probe = [0u8; 1];
    match file.read(&mut probe) {
        Ok(0) => Ok(()),
        Ok(_) => Err(changed()),
        Err(source) => Err(LayerError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn padding(size: u64) -> usize {
    // The remainder is below 512, so the cast is lossless.
    #[allow(clippy::cast_possible_truncation)]
    let rem = (size % BLOCK as u64) as usize;
    (BLOCK - rem) % BLOCK
}

/// Builds the USTAR header for an entry and the PAX records it needs.
fn header_for(p: &Planned, size: u64) -> (tar::Header, BTreeMap<String, Vec<u8>>) {
    let e = &p.entry;
    let mut pax = BTreeMap::new();
    let mut h = tar::Header::new_ustar();

    let mut name = p.name.as_os_str().as_bytes().to_vec();
    if e.kind == EntryKind::Dir {
        name.push(b'/');
    }
    if !set_ustar_name(&mut h, &name) {
        pax.insert("path".to_owned(), name.clone());
        set_field(&mut h.as_old_mut().name, &ascii_lossy(&name));
    }

    h.set_mode(e.mode);
    for (key, value, field) in [("uid", e.uid, 0), ("gid", e.gid, 1)] {
        let value = if value > MAX_OCTAL_8 {
            pax.insert(key.to_owned(), value.to_string().into_bytes());
            0
        } else {
            value
        };
        if field == 0 {
            h.set_uid(value);
        } else {
            h.set_gid(value);
        }
    }
    match u64::try_from(e.mtime) {
        Ok(t) if t <= MAX_OCTAL_12 => h.set_mtime(t),
        _ => {
            pax.insert("mtime".to_owned(), e.mtime.to_string().into_bytes());
            h.set_mtime(0);
        }
    }
    if size > MAX_OCTAL_12 {
        pax.insert("size".to_owned(), size.to_string().into_bytes());
        h.set_size(0);
    } else {
        h.set_size(size);
    }

    let (entry_type, link) = match &e.kind {
        EntryKind::File(_) | EntryKind::Whiteout | EntryKind::OpaqueWhiteout => {
            (tar::EntryType::Regular, None)
        }
        EntryKind::Dir => (tar::EntryType::Directory, None),
        EntryKind::Symlink(target) => (tar::EntryType::Symlink, Some(target)),
        EntryKind::Hardlink(target) => (tar::EntryType::Link, Some(target)),
        EntryKind::CharDevice(..) => (tar::EntryType::Char, None),
        EntryKind::BlockDevice(..) => (tar::EntryType::Block, None),
        EntryKind::Fifo => (tar::EntryType::Fifo, None),
    };
    h.set_entry_type(entry_type);
    if let Some(target) = link {
        let target = target.as_os_str().as_bytes();
        if target.len() <= 100 && target.is_ascii() {
            set_field(&mut h.as_old_mut().linkname, target);
        } else {
            pax.insert("linkpath".to_owned(), target.to_vec());
        }
    }
    if let EntryKind::CharDevice(major, minor) | EntryKind::BlockDevice(major, minor) = e.kind {
        let ustar = h.as_ustar_mut().expect("a USTAR header");
        ustar.set_device_major(major);
        ustar.set_device_minor(minor);
    }
    for (name, value) in &e.xattrs {
        pax.insert(format!("SCHILY.xattr.{name}"), value.clone());
    }
    h.set_cksum();
    (h, pax)
}

/// Puts `name` in the USTAR name field, or split between prefix and name
/// as Go's `archive/tar` does; false when it does not fit or is not ASCII.
fn set_ustar_name(h: &mut tar::Header, name: &[u8]) -> bool {
    if !name.is_ascii() {
        return false;
    }
    if name.len() <= 100 {
        set_field(&mut h.as_old_mut().name, name);
        return true;
    }
    // The prefix is at most 155 bytes; the separator goes in neither field.
    let limit = (name.len() - 1).min(156);
    let Some(split) = name[..limit].iter().rposition(|&b| b == b'/') else {
        return false;
    };
    let rest = &name[split + 1..];
    if split == 0 || rest.is_empty() || rest.len() > 100 {
        return false;
    }
    let ustar = h.as_ustar_mut().expect("a USTAR header");
    set_field(&mut ustar.prefix, &name[..split]);
    set_field(&mut ustar.name, rest);
    true
}

fn set_field(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    field[n..].fill(0);
}

fn ascii_lossy(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().copied().filter(u8::is_ascii).collect()
}

/// The PAX extended header (`x`) block and its data for an entry.
fn pax_header(name: &Path, records: &BTreeMap<String, Vec<u8>>) -> (tar::Header, Vec<u8>) {
    let mut data = Vec::new();
    for (key, value) in records {
        // "%d %s=%s\n", where the length counts itself.
        let base = key.len() + value.len() + 3;
        let mut len = base + base.to_string().len();
        if len.to_string().len() + base != len {
            len = base + len.to_string().len();
        }
        data.extend_from_slice(len.to_string().as_bytes());
        data.push(b' ');
        data.extend_from_slice(key.as_bytes());
        data.push(b'=');
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let mut h = tar::Header::new_ustar();
    let mut pax_name = b"PaxHeaders.0/".to_vec();
    pax_name.extend(ascii_lossy(name.file_name().unwrap_or_default().as_bytes()));
    set_field(&mut h.as_old_mut().name, &pax_name);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_cksum();
    (h, data)
}

/// The entries for the tree under `dir` (not `dir` itself), sorted as
/// [`write_layer`] writes them.
///
/// Symlinks are not followed. A non-directory with several links inside
/// the tree is written once, at the path that sorts first, and as hard
/// links at the others. Xattrs are read without following symlinks,
/// except `security.selinux` (a host label) and overlayfs' own
/// `trusted.overlay.*` / `user.overlay.*`. Sockets are skipped.
pub fn layer_from_dir(dir: &Path) -> Result<Vec<LayerEntry>> {
    walk(dir, false)
}

/// Like [`layer_from_dir`] for the upper directory of an overlay mount:
/// its whiteouts (character devices 0:0) become [`EntryKind::Whiteout`]
/// and its opaque directories (`trusted.overlay.opaque` or
/// `user.overlay.opaque` set to `y`) get an [`EntryKind::OpaqueWhiteout`].
pub fn layer_from_overlay_upper(dir: &Path) -> Result<Vec<LayerEntry>> {
    walk(dir, true)
}

fn walk(root: &Path, overlay: bool) -> Result<Vec<LayerEntry>> {
    let mut entries = Vec::new();
    // Inodes with several links, by (dev, ino), with the paths found.
    let mut links: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let dir = root.join(&rel);
        let read_err = |source| LayerError::Read {
            path: dir.clone(),
            source,
        };
        let mut names = Vec::new();
        for child in fs::read_dir(&dir).map_err(read_err)? {
            names.push(child.map_err(read_err)?.file_name());
        }
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            let path = root.join(&rel);
            let meta = fs::symlink_metadata(&path).map_err(|source| LayerError::Read {
                path: path.clone(),
                source,
            })?;
            let Some((entry, opaque)) = entry_for(&path, rel.clone(), &meta, overlay)? else {
                continue;
            };
            if entry.kind == EntryKind::Dir {
                pending.push(rel.clone());
            } else if meta.nlink() > 1 && entry.kind != EntryKind::Whiteout {
                links
                    .entry((meta.dev(), meta.ino()))
                    .or_default()
                    .push(entries.len());
            }
            entries.push(entry);
            if opaque {
                let mut marker = LayerEntry::new(rel, EntryKind::OpaqueWhiteout);
                marker.mtime = meta.mtime();
                entries.push(marker);
            }
        }
    }
    for indexes in links.values() {
        let Some(&first) = indexes
            .iter()
            .min_by(|&&a, &&b| entries[a].path.cmp(&entries[b].path))
        else {
            continue;
        };
        let target = entries[first].path.clone();
        for &i in indexes {
            if i != first {
                entries[i].kind = EntryKind::Hardlink(target.clone());
            }
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

/// The entry for one file of a tree, and whether it is an opaque overlay
/// directory; `None` for files a layer cannot hold (sockets).
pub(crate) fn entry_for(
    path: &Path,
    rel: PathBuf,
    meta: &fs::Metadata,
    overlay: bool,
) -> Result<Option<(LayerEntry, bool)>> {
    let read_err = |source| LayerError::Read {
        path: path.to_owned(),
        source,
    };
    let ft = meta.file_type();
    let rdev = meta.rdev();
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    let mut xattrs = read_xattrs(path)?;
    let mut opaque = false;
    for ns in ["trusted.overlay.", "user.overlay."] {
        if overlay && ft.is_dir() {
            let key = format!("{ns}opaque");
            opaque |= xattrs.get(&key).is_some_and(|v| v == b"y");
        }
        xattrs.retain(|k, _| !k.starts_with(ns));
    }
    let kind = if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File(path.to_owned())
    } else if ft.is_symlink() {
        EntryKind::Symlink(fs::read_link(path).map_err(read_err)?)
    } else if ft.is_char_device() && overlay && rdev == 0 {
        EntryKind::Whiteout
    } else if ft.is_char_device() {
        EntryKind::CharDevice(major, minor)
    } else if ft.is_block_device() {
        EntryKind::BlockDevice(major, minor)
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else {
        tracing::debug!(path = %path.display(), "skipping a socket: layers cannot hold sockets");
        return Ok(None);
    };
    let entry = if kind == EntryKind::Whiteout {
        LayerEntry {
            mtime: meta.mtime(),
            ..LayerEntry::new(rel, kind)
        }
    } else {
        LayerEntry {
            path: rel,
            kind,
            mode: meta.mode() & 0o7777,
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
            mtime: meta.mtime(),
            xattrs,
        }
    };
    Ok(Some((entry, opaque)))
}

/// Every xattr of `path` a layer records ([`executor_cache::xattr::read_xattrs`]:
/// not following symlinks, without `security.selinux`).
pub(crate) fn read_xattrs(path: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    executor_cache::xattr::read_xattrs(path).map_err(|source| LayerError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::digest::sha256_bytes;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn write_to_vec(
        entries: Vec<LayerEntry>,
        compression: Compression,
        threads: usize,
        options: &WriteOptions,
    ) -> (LayerInfo, Vec<u8>) {
        let mut out = Vec::new();
        let info = write_layer(entries, compression, None, threads, &mut out, options).unwrap();
        (info, out)
    }

    fn tar_of(entries: Vec<LayerEntry>) -> Vec<u8> {
        write_to_vec(
            entries,
            Compression::Uncompressed,
            1,
            &WriteOptions::default(),
        )
        .1
    }

    /// Sets a path's times without following a final symlink.
    fn set_mtime(path: &Path, secs: u64) {
        let t = rustix::fs::Timespec {
            tv_sec: i64::try_from(secs).unwrap(),
            tv_nsec: 0,
        };
        let times = rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            path,
            &times,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }

    fn make_tree(root: &Path, mtime: u64, reverse: bool) {
        let mut files: Vec<(&str, &[u8])> = vec![
            ("a.txt", b"alpha"),
            ("b/c.txt", b"charlie"),
            ("b/d/e.bin", &[0u8, 1, 2, 3, 255]),
            ("z", b""),
        ];
        if reverse {
            files.reverse();
        }
        for (path, data) in files {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, data).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        }
        symlink("../a.txt", root.join("b/link")).unwrap();
        for dir in ["b/d", "b", "."] {
            fs::set_permissions(root.join(dir), fs::Permissions::from_mode(0o755)).unwrap();
        }
        // Every entry, the link and the root included: two trees made in
        // different seconds must still be the same tree.
        for path in [
            "a.txt",
            "b/c.txt",
            "b/d/e.bin",
            "z",
            "b/link",
            "b/d",
            "b",
            ".",
        ] {
            set_mtime(&root.join(path), mtime);
        }
    }

    fn digest_of_dir(dir: &Path, compression: Compression, options: &WriteOptions) -> LayerInfo {
        let entries = layer_from_dir(dir).unwrap();
        write_to_vec(entries, compression, 2, options).0
    }

    #[test]
    fn same_tree_gives_the_same_digest_whatever_the_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        make_tree(a.path(), 1_600_000_000, false);
        make_tree(b.path(), 1_600_000_000, true);
        for compression in [
            Compression::Gzip,
            Compression::Zstd,
            Compression::Uncompressed,
        ] {
            let options = WriteOptions::default();
            let first = digest_of_dir(a.path(), compression, &options);
            assert_eq!(first, digest_of_dir(a.path(), compression, &options));
            assert_eq!(first, digest_of_dir(b.path(), compression, &options));
            // The order entries are given in does not matter either.
            let mut entries = layer_from_dir(a.path()).unwrap();
            entries.reverse();
            let shuffled = write_to_vec(entries, compression, 2, &options).0;
            assert_eq!(first, shuffled);
        }
    }

    #[test]
    fn source_date_epoch_clamps_mtimes() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        make_tree(a.path(), 1_600_000_000, false);
        make_tree(b.path(), 1_700_000_000, false);
        let plain = WriteOptions::default();
        let clamped = WriteOptions {
            source_date_epoch: Some(1_500_000_000),
        };
        let da = digest_of_dir(a.path(), Compression::Gzip, &plain);
        let db = digest_of_dir(b.path(), Compression::Gzip, &plain);
        assert_ne!(da.diff_id, db.diff_id, "mtimes are part of the layer");
        let ca = digest_of_dir(a.path(), Compression::Gzip, &clamped);
        let cb = digest_of_dir(b.path(), Compression::Gzip, &clamped);
        assert_eq!(ca, cb);
        // Times before the epoch are kept.
        let mut early = LayerEntry::new("x", EntryKind::Dir);
        early.mtime = 1_000;
        let tar = write_to_vec(vec![early], Compression::Uncompressed, 1, &clamped).1;
        let mut archive = tar::Archive::new(&tar[..]);
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.header().mtime().unwrap(), 1_000);
    }

    /// A parsed entry of a tar as the `tar` crate reads it.
    #[derive(Debug, PartialEq, Eq)]
    struct Seen {
        path: Vec<u8>,
        kind: tar::EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        link: Option<Vec<u8>>,
        device: Option<(u32, u32)>,
        pax: Vec<String>,
        xattrs: Vec<(String, Vec<u8>)>,
        data: Vec<u8>,
    }

    fn read_back(tar: &[u8]) -> Vec<Seen> {
        let mut archive = tar::Archive::new(tar);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let ustar = header.as_ustar().expect("USTAR headers");
            assert_eq!(ustar.username_bytes(), b"", "uname is empty");
            assert_eq!(ustar.groupname_bytes(), b"", "gname is empty");
            let kind = header.entry_type();
            let device = if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
                Some((
                    header.device_major().unwrap().unwrap(),
                    header.device_minor().unwrap().unwrap(),
                ))
            } else {
                assert_eq!(ustar.dev_major, [0; 8], "no device numbers");
                assert_eq!(ustar.dev_minor, [0; 8], "no device numbers");
                None
            };
            let mut pax = Vec::new();
            let mut xattrs = Vec::new();
            if let Some(exts) = entry.pax_extensions().unwrap() {
                for ext in exts {
                    let ext = ext.unwrap();
                    let key = ext.key().unwrap().to_owned();
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        xattrs.push((name.to_owned(), ext.value_bytes().to_vec()));
                    }
                    pax.push(key);
                }
            }
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            out.push(Seen {
                path: entry.path_bytes().into_owned(),
                kind,
                mode: header.mode().unwrap(),
                uid: entry.header().uid().unwrap(),
                gid: entry.header().gid().unwrap(),
                mtime: header.mtime().unwrap(),
                link: entry.link_name_bytes().map(std::borrow::Cow::into_owned),
                device,
                pax,
                xattrs,
                data,
            });
        }
        out
    }

    fn seen(path: &str, kind: tar::EntryType, mode: u32) -> Seen {
        Seen {
            path: path.as_bytes().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            link: None,
            device: None,
            pax: vec![],
            xattrs: vec![],
            data: vec![],
        }
    }

    #[test]
    fn tar_reads_back_with_exactly_the_expected_headers() {
        let dir = tempfile::tempdir().unwrap();
        let content = dir.path().join("content");
        fs::write(&content, b"#!/bin/sh\necho hi\n").unwrap();
        let long_dir = "d".repeat(120);
        let long_name = format!("{long_dir}/{}", "n".repeat(120));
        let long_target = format!("/{}", "t".repeat(150));

        let mut file = LayerEntry::new("usr/bin/hello", EntryKind::File(content.clone()));
        file.mode = 0o104_755; // file type bits are dropped, setuid kept
        file.uid = 1000;
        file.gid = 1001;
        file.mtime = 1_700_000_000;
        file.xattrs
            .insert("security.capability".into(), vec![1, 0, 0, 2, 0, 0x20]);
        file.xattrs.insert("user.note".into(), b"hi".to_vec());
        let mut big_ids = LayerEntry::new("srv", EntryKind::Dir);
        big_ids.uid = 3_000_000;
        big_ids.gid = 3_000_001;
        big_ids.mode = 0o1777;
        let entries = vec![
            file,
            LayerEntry::new(
                "usr/bin/hello-link",
                EntryKind::Hardlink("/usr/bin/hello".into()),
            ),
            LayerEntry::new("usr/bin/sh", EntryKind::Symlink("hello".into())),
            LayerEntry::new("usr", EntryKind::Dir),
            LayerEntry::new("usr/bin", EntryKind::Dir),
            LayerEntry::new("dev/null", EntryKind::CharDevice(1, 3)),
            LayerEntry::new("dev/sda", EntryKind::BlockDevice(8, 0)),
            LayerEntry::new("run/fifo", EntryKind::Fifo),
            LayerEntry::new("etc/gone", EntryKind::Whiteout),
            LayerEntry::new("var/cache", EntryKind::OpaqueWhiteout),
            LayerEntry::new("var/cache", EntryKind::Dir),
            LayerEntry::new(long_name.clone(), EntryKind::File(content.clone())),
            LayerEntry::new("long-link", EntryKind::Symlink(long_target.clone().into())),
            LayerEntry::new("caf\u{e9}", EntryKind::Dir),
            big_ids,
        ];
        let got = read_back(&tar_of(entries));
        let data = b"#!/bin/sh\necho hi\n".to_vec();
        let reg = tar::EntryType::Regular;
        let expected = vec![
            Seen {
                pax: vec!["path".into()],
                ..seen("caf\u{e9}/", tar::EntryType::Directory, 0o755)
            },
            Seen {
                pax: vec!["path".into()],
                data: data.clone(),
                ..seen(&long_name, reg, 0o644)
            },
            Seen {
                device: Some((1, 3)),
                ..seen("dev/null", tar::EntryType::Char, 0o644)
            },
            Seen {
                device: Some((8, 0)),
                ..seen("dev/sda", tar::EntryType::Block, 0o644)
            },
            seen("etc/.wh.gone", reg, 0o644),
            Seen {
                link: Some(long_target.clone().into_bytes()),
                pax: vec!["linkpath".into()],
                ..seen("long-link", tar::EntryType::Symlink, 0o777)
            },
            seen("run/fifo", tar::EntryType::Fifo, 0o644),
            Seen {
                uid: 3_000_000,
                gid: 3_000_001,
                pax: vec!["gid".into(), "uid".into()],
                ..seen("srv/", tar::EntryType::Directory, 0o1777)
            },
            seen("usr/", tar::EntryType::Directory, 0o755),
            seen("usr/bin/", tar::EntryType::Directory, 0o755),
            Seen {
                uid: 1000,
                gid: 1001,
                mtime: 1_700_000_000,
                pax: vec![
                    "SCHILY.xattr.security.capability".into(),
                    "SCHILY.xattr.user.note".into(),
                ],
                xattrs: vec![
                    ("security.capability".into(), vec![1, 0, 0, 2, 0, 0x20]),
                    ("user.note".into(), b"hi".to_vec()),
                ],
                data,
                ..seen("usr/bin/hello", reg, 0o4755)
            },
            Seen {
                link: Some(b"usr/bin/hello".to_vec()),
                ..seen("usr/bin/hello-link", tar::EntryType::Link, 0o644)
            },
            Seen {
                link: Some(b"hello".to_vec()),
                ..seen("usr/bin/sh", tar::EntryType::Symlink, 0o777)
            },
            seen("var/cache/", tar::EntryType::Directory, 0o755),
            seen("var/cache/.wh..wh..opq", reg, 0o644),
        ];
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g, e, "entry {}", String::from_utf8_lossy(&e.path));
        }
    }

    #[test]
    fn names_up_to_255_bytes_use_the_ustar_prefix_not_pax() {
        let name = format!("{}/{}", "p".repeat(150), "n".repeat(99));
        let tar = tar_of(vec![LayerEntry::new(name.clone(), EntryKind::Dir)]);
        let header = tar::Header::from_byte_slice(&tar[..BLOCK]);
        assert_eq!(
            header.entry_type(),
            tar::EntryType::Directory,
            "no PAX header"
        );
        assert_eq!(header.path_bytes().as_ref(), format!("{name}/").as_bytes());
        assert_eq!(tar.len(), 3 * BLOCK, "one header and the two end blocks");
    }

    #[test]
    fn pax_records_cover_big_sizes_and_times() {
        let planned = Planned {
            name: "big".into(),
            entry: LayerEntry {
                mtime: -1,
                ..LayerEntry::new("big", EntryKind::File("/dev/zero".into()))
            },
        };
        let (header, pax) = header_for(&planned, 9 << 30);
        assert_eq!(pax["size"], (9u64 << 30).to_string().into_bytes());
        assert_eq!(pax["mtime"], b"-1");
        assert_eq!(header.size().unwrap(), 0);
        let (_, data) = pax_header(Path::new("big"), &pax);
        // Each record's length counts its own digits.
        let text = String::from_utf8(data).unwrap();
        for record in text.split_inclusive('\n') {
            let (len, _) = record.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), record.len(), "{record:?}");
        }
    }

    #[test]
    fn gzip_and_zstd_decompress_to_the_diff_id() {
        let dir = tempfile::tempdir().unwrap();
        make_tree(dir.path(), 1_600_000_000, false);
        let entries = layer_from_dir(dir.path()).unwrap();
        let options = WriteOptions::default();
        let (plain, tar) = write_to_vec(entries.clone(), Compression::Uncompressed, 1, &options);
        assert_eq!(plain.digest, plain.diff_id);
        assert_eq!(plain.diff_id, sha256_bytes(&tar));
        assert_eq!(plain.size, tar.len() as u64);
        assert_eq!(plain.media_type.to_string(), MEDIA_TYPE_TAR);

        let (gz, gz_bytes) = write_to_vec(entries.clone(), Compression::Gzip, 2, &options);
        assert_eq!(gz.media_type.to_string(), MEDIA_TYPE_TAR_GZIP);
        assert_eq!(gz.digest, sha256_bytes(&gz_bytes));
        assert_eq!(gz.size, gz_bytes.len() as u64);
        assert_eq!(gz.uncompressed_size, tar.len() as u64);
        // One gzip member: the single-member decoder reads it all.
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&gz_bytes[..])
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(sha256_bytes(&unzipped), plain.diff_id);
        assert_eq!(gz.diff_id, plain.diff_id);

        let (zst, zst_bytes) = write_to_vec(entries, Compression::Zstd, 2, &options);
        assert_eq!(zst.media_type.to_string(), MEDIA_TYPE_TAR_ZSTD);
        assert_eq!(zst.digest, sha256_bytes(&zst_bytes));
        let unzstd = zstd::stream::decode_all(&zst_bytes[..]).unwrap();
        assert_eq!(sha256_bytes(&unzstd), plain.diff_id);
        assert_eq!(zst.diff_id, plain.diff_id);
        assert_ne!(gz.digest, zst.digest);

        let descriptor = zst.descriptor();
        assert_eq!(descriptor.size(), zst.size);
        assert_eq!(descriptor.digest().to_string(), zst.digest.to_string());
    }

    /// Semi-compressible bytes: words from a small alphabet.
    fn text(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let word_len = 2 + (x % 9) as usize;
            for i in 0..word_len {
                out.push(b'a' + ((x >> (8 + i * 3)) % 16) as u8);
            }
            out.push(if x.is_multiple_of(11) { b'\n' } else { b' ' });
        }
        out.truncate(len);
        out
    }

    #[test]
    fn compressed_digests_do_not_depend_on_the_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        // Several gzip blocks (128 KiB) and several zstd jobs (level 1 jobs
        // are 2 MiB: four times its window).
        let big = dir.path().join("big");
        fs::write(&big, text(9 << 20, 7)).unwrap();
        let entries = vec![LayerEntry::new("big", EntryKind::File(big))];
        for compression in [Compression::Gzip, Compression::Zstd] {
            let digests: Vec<_> = [1, 2, 3]
                .iter()
                .map(|&threads| {
                    let mut out = Vec::new();
                    write_layer(
                        entries.clone(),
                        compression,
                        Some(1),
                        threads,
                        &mut out,
                        &WriteOptions::default(),
                    )
                    .unwrap()
                    .digest
                })
                .collect();
            assert_eq!(digests[0], digests[1], "{compression}: 1 and 2 threads");
            assert_eq!(digests[0], digests[2], "{compression}: 1 and 3 threads");
        }
    }

    #[test]
    fn invalid_entries_are_refused() {
        let cases: Vec<(Vec<LayerEntry>, &str)> = vec![
            (
                vec![LayerEntry::new("a/../b", EntryKind::Dir)],
                "`..` is not allowed",
            ),
            (vec![LayerEntry::new("/", EntryKind::Dir)], "empty path"),
            (
                vec![
                    LayerEntry::new("a", EntryKind::Dir),
                    LayerEntry::new("./a/", EntryKind::Fifo),
                ],
                "appears more than once",
            ),
            (
                vec![LayerEntry::new("a/.wh.b", EntryKind::Fifo)],
                "reserved for whiteouts",
            ),
            (
                vec![LayerEntry::new(
                    "link",
                    EntryKind::Hardlink("missing".into()),
                )],
                "not a non-directory entry",
            ),
            (
                vec![
                    LayerEntry::new("a", EntryKind::Hardlink("b".into())),
                    LayerEntry::new("b", EntryKind::Fifo),
                ],
                "sorts before it",
            ),
            (
                vec![
                    LayerEntry::new("d", EntryKind::Dir),
                    LayerEntry::new("l", EntryKind::Hardlink("d".into())),
                ],
                "not a non-directory entry",
            ),
            (
                vec![LayerEntry {
                    xattrs: [("user.a=b".to_owned(), vec![])].into(),
                    ..LayerEntry::new("x", EntryKind::Dir)
                }],
                "invalid xattr name",
            ),
            (
                vec![LayerEntry::new(
                    "f",
                    EntryKind::File("/nonexistent/file".into()),
                )],
                "cannot read /nonexistent/file",
            ),
            (
                vec![LayerEntry::new("f", EntryKind::File("/dev/null".into()))],
                "/dev/null is not a regular file",
            ),
        ];
        for (entries, message) in cases {
            let err = write_layer(
                entries,
                Compression::Gzip,
                None,
                1,
                io::sink(),
                &WriteOptions::default(),
            )
            .unwrap_err();
            assert!(err.to_string().contains(message), "{err} lacks {message:?}");
        }
        let err = write_layer(
            vec![],
            Compression::Gzip,
            Some(10),
            1,
            io::sink(),
            &WriteOptions::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "compression level 10 is out of range for gzip (0 to 9)"
        );
    }

    #[test]
    fn empty_layer_is_two_zero_blocks() {
        let (info, tar) = write_to_vec(
            vec![],
            Compression::Uncompressed,
            1,
            &WriteOptions::default(),
        );
        assert_eq!(tar, vec![0u8; 1024]);
        assert_eq!(info.size, 1024);
    }

    #[test]
    fn layer_from_dir_reads_the_tree_without_following_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), b"s").unwrap();
        fs::write(root.join("bin/tool"), b"tool").unwrap();
        fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(root.join("bin/tool"), root.join("bin/a-alias")).unwrap();
        fs::hard_link(root.join("bin/tool"), root.join("zz-alias")).unwrap();
        symlink(&outside, root.join("escape")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("fifo").as_path(),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        rustix::fs::lsetxattr(
            root.join("bin/tool").as_path(),
            "user.origin",
            b"test",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        set_mtime(&root.join("bin/tool"), 1_234_567_890);

        let entries = layer_from_dir(&root).unwrap();
        let summary: Vec<(String, EntryKind)> = entries
            .iter()
            .map(|e| (e.path.display().to_string(), e.kind.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("bin".into(), EntryKind::Dir),
                (
                    "bin/a-alias".into(),
                    EntryKind::File(root.join("bin/a-alias"))
                ),
                ("bin/tool".into(), EntryKind::Hardlink("bin/a-alias".into())),
                ("escape".into(), EntryKind::Symlink(outside.clone())),
                ("fifo".into(), EntryKind::Fifo),
                ("zz-alias".into(), EntryKind::Hardlink("bin/a-alias".into())),
            ]
        );
        let tool = &entries[1];
        assert_eq!(tool.mode, 0o4755);
        assert_eq!(tool.mtime, 1_234_567_890);
        assert_eq!(
            tool.xattrs.get("user.origin").map(Vec::as_slice),
            Some(&b"test"[..])
        );
        assert_eq!(entries[4].mode, 0o600);
        let meta = fs::metadata(root.join("bin")).unwrap();
        assert_eq!(
            (entries[0].uid, entries[0].gid),
            (u64::from(meta.uid()), u64::from(meta.gid()))
        );

        // The tree writes, and hard links read back as links.
        let seen = read_back(&tar_of(entries));
        assert_eq!(seen[2].kind, tar::EntryType::Link);
        assert_eq!(seen[2].link.as_deref(), Some(&b"bin/a-alias"[..]));
        assert_eq!(seen[1].data, b"tool");
        assert_eq!(
            seen[1].xattrs,
            vec![("user.origin".into(), b"test".to_vec())]
        );
    }

    #[test]
    fn device_nodes_become_device_entries() {
        let meta = fs::symlink_metadata("/dev/null").unwrap();
        let (entry, _) = entry_for(Path::new("/dev/null"), "dev/null".into(), &meta, false)
            .unwrap()
            .unwrap();
        assert_eq!(entry.kind, EntryKind::CharDevice(1, 3));
        assert_eq!(entry.mode, 0o666);
    }

    /// Needs CAP_MKNOD to make the 0:0 character device overlayfs uses as
    /// a whiteout.
    #[test]
    fn overlay_upper_whiteouts_become_oci_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path();
        fs::create_dir_all(upper.join("etc/opaque")).unwrap();
        fs::write(upper.join("etc/opaque/new"), b"n").unwrap();
        rustix::fs::lsetxattr(
            upper.join("etc/opaque").as_path(),
            "user.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            upper.join("etc/deleted").as_path(),
            rustix::fs::FileType::CharacterDevice,
            Mode::from_raw_mode(0o000),
            0,
        )
        .expect("mknod of a 0:0 whiteout (needs CAP_MKNOD)");
        let entries = layer_from_overlay_upper(upper).unwrap();
        let kinds: Vec<(String, EntryKind)> = entries
            .iter()
            .map(|e| (e.path.display().to_string(), e.kind.clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("etc".into(), EntryKind::Dir),
                ("etc/deleted".into(), EntryKind::Whiteout),
                ("etc/opaque".into(), EntryKind::Dir),
                ("etc/opaque".into(), EntryKind::OpaqueWhiteout),
                (
                    "etc/opaque/new".into(),
                    EntryKind::File(upper.join("etc/opaque/new"))
                ),
            ]
        );
        assert!(
            entries[2].xattrs.is_empty(),
            "overlay xattrs are not copied"
        );
        let names: Vec<_> = read_back(&tar_of(entries))
            .into_iter()
            .map(|s| String::from_utf8(s.path).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "etc/",
                "etc/.wh.deleted",
                "etc/opaque/",
                "etc/opaque/.wh..wh..opq",
                "etc/opaque/new"
            ]
        );
        // A plain walk keeps the device.
        let plain = layer_from_dir(upper).unwrap();
        assert_eq!(plain[1].kind, EntryKind::CharDevice(0, 0));
    }

    fn vm_hwm_kib() -> u64 {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Writes a 200 MB sparse file as a gzip and a zstd layer in a fresh
    /// process (so that other tests' allocations do not count) and checks
    /// that the peak resident memory grew by less than 64 MB.
    #[test]
    fn writing_a_large_layer_streams() {
        let exe = std::env::current_exe().unwrap();
        let output = std::process::Command::new(exe)
            .args([
                "image::layer::tests::large_layer_memory_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
        // The harness prints the line after "test <name> ... ".
        let at = stdout
            .find("peak memory growth")
            .unwrap_or_else(|| panic!("the child test did not run:\n{stdout}"));
        println!("{}", stdout[at..].lines().next().unwrap_or_default());
    }

    #[test]
    #[ignore = "run in its own process by writing_a_large_layer_streams"]
    fn large_layer_memory_child() {
        let dir = tempfile::tempdir().unwrap();
        let sparse = dir.path().join("sparse");
        File::create(&sparse)
            .unwrap()
            .set_len(200 * 1000 * 1000)
            .unwrap();
        let entries = vec![LayerEntry::new("sparse", EntryKind::File(sparse))];
        let before = vm_hwm_kib();
        // Two threads whatever the machine, so the bound does not depend on
        // its core count; gzip at level 1 only to keep the debug build fast.
        for (compression, level) in [(Compression::Zstd, None), (Compression::Gzip, Some(1))] {
            let info = write_layer(
                entries.clone(),
                compression,
                level,
                2,
                io::sink(),
                &WriteOptions::default(),
            )
            .unwrap();
            // One header, the data (a multiple of 512 bytes) and the end blocks.
            assert_eq!(info.uncompressed_size, 512 + 200 * 1000 * 1000 + 1024);
        }
        let growth = vm_hwm_kib().saturating_sub(before);
        println!("peak memory growth: {growth} KiB");
        assert!(growth < 64 * 1024, "peak memory grew by {growth} KiB");
    }
}
