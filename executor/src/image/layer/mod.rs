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
//! This module owns the entries and the stream around them (compression,
//! digests); `format.rs` the tar format itself (planning, headers,
//! PAX records); `from_dir.rs` turning a prepared directory
//! tree, or an overlayfs upper directory, into entries.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

use oci_spec::image::{Descriptor, MediaType};

use super::digest::{Digest, HashingWriter};
use format::{plan, write_tar};

mod blocks;
mod format;
mod from_dir;
mod mgzip;
#[cfg(test)]
mod tests;

pub(crate) use from_dir::{entry_for, read_xattrs};
pub use from_dir::{layer_from_dir, layer_from_overlay_upper};

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
/// **Digests do not depend on `threads`.** gzip is written by `gzp` in its
/// mgzip format: the tar stream is cut into fixed 128 KiB blocks, each
/// deflated on its own by libdeflate into gzip members of its own, so the
/// output is a function of the data only; the parts of a block deflate
/// cannot shrink are stored without being searched for matches, as
/// members of their own (`blocks.rs`). A multi-member gzip file is
/// standard gzip (RFC 1952): Go's `compress/gzip` (containerd, Docker,
/// containers/image, umoci, skopeo), GNU gzip and flate2's
/// `MultiGzDecoder` read every member, and eStargz layers are built the
/// same way. libdeflate at level 6 took 40% less CPU than zlib-rs
/// streaming with a dictionary, for a slightly smaller layer (10,000 files,
/// 500 MiB: 5.2 s against 8.3 s of CPU, 445.6 MB against 448.5 MB). zstd always runs in its multi-threaded mode with
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
    let (digest, diff_id, size, uncompressed_size) = match compression {
        Compression::Uncompressed => {
            let mut tar = HashingWriter::sha256(out);
            write_tar(&plan, &mut tar)?;
            let (_, diff_id, size) = tar.finish();
            (diff_id.clone(), diff_id, size, size)
        }
        Compression::Gzip => std::thread::scope(|scope| -> Result<_> {
            let level = u32::try_from(level).expect("gzip levels are 0 to 9");
            let gz = mgzip::Mgzip::new(HashingWriter::sha256(out), level, threads, scope)
                .map_err(|e| LayerError::Write(io::Error::other(e)))?;
            let mut tar = HashingWriter::sha256(NoFlush {
                inner: gz,
                failed: false,
            });
            let written = write_tar(&plan, &mut tar);
            let (gz, diff_id, uncompressed_size) = tar.finish();
            let NoFlush { inner: gz, failed } = gz;
            if failed {
                // gzp reported its writer's error (the output's: a full
                // disk) and shut down: finishing now would panic on the
                // pipeline it took apart.
                written?;
                return Err(LayerError::Write(io::Error::other(
                    "the gzip compressor stopped",
                )));
            }
            // Else always finish: it joins gzp's threads (and its Drop
            // panics on errors).
            let finished = gz.finish().map_err(|e| {
                LayerError::Write(match e {
                    gzp::GzpError::Io(e) => e,
                    other => io::Error::other(other),
                })
            });
            written?;
            let (_, digest, size) = finished?.finish();
            Ok((digest, diff_id, size, uncompressed_size))
        })?,
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
            (digest, diff_id, size, uncompressed_size)
        }
    };
    Ok(LayerInfo {
        digest,
        diff_id,
        size,
        uncompressed_size,
        media_type,
    })
}

/// Keeps `flush` calls from reaching gzp, where they would end a block
/// early and make the output depend on when they happen; and remembers
/// whether a write failed, after which gzp has shut its pipeline down and
/// must not be finished (that panics).
struct NoFlush<W> {
    inner: W,
    failed: bool,
}

impl<W: Write> Write for NoFlush<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf);
        self.failed |= written.is_err();
        written
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let written = self.inner.write_all(buf);
        self.failed |= written.is_err();
        written
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
