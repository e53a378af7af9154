//! The local content store: an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/<alg>/<hex>`) under one root directory, the
//! `--cache-dir` (default `~/.cache/executor`), with the executor's own
//! rooms beside it: `tmp/` for blobs and layers being written, `layers/`
//! for extracted layers (`layers.rs`).
//!
//! The layout itself is the storage layer's one implementation,
//! [`executor_cache::oci_layout`]: blobs appear under their digest only
//! once checked, and are checked again when read back (one found corrupt
//! is deleted and reported); named references live in `index.json`
//! (`org.opencontainers.image.ref.name`), changed only under its lock, so
//! separate processes can share one store. This module adds what an image
//! store needs on top: typed digests, streamed downloads
//! ([`BlobWriter`], in `writer.rs`), extracted layers, and exports of
//! images as layouts of their own (`export.rs`), and upkeep: the removal
//! of what was least recently used (`prune.rs`), never while a handle on
//! the store is open.

mod export;
mod layers;
pub mod prune;
#[cfg(test)]
mod tests;
mod writer;

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use executor_cache::oci_layout::{
    ANNOTATION_REF_NAME, Index, LayoutError, OciLayout, create_dir, read_error,
    remove_dead_temp_files, write_error,
};
use oci_spec::image::Descriptor;

pub use writer::BlobWriter;

use super::digest::{Algorithm, Digest, DigestError};

/// The store's directories kept private to their owner (mode 0700, the
/// root's too): extracted layers hold setuid files and device nodes as the
/// images have them, and scratch directories hold build secrets; nobody
/// else may reach them.
const PRIVATE_DIRS: &[&str] = &["blobs", "layers", "tmp", "cache-entries", "cache-mounts"];

/// Temporary files older than this found under `<root>/tmp/` when the store
/// is opened were left by a crashed process and are removed.
const STALE_TEMP_AGE: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The layout: its files, its index, its blobs (missing or corrupt).
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("manifest {digest} is not valid JSON")]
    Manifest {
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("descriptor in {context} has an unusable digest")]
    Digest {
        context: String,
        #[source]
        source: DigestError,
    },
    #[error("blob content hashes to {actual}, expected {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {expected} cannot be checked by a {algorithm} writer")]
    AlgorithmMismatch {
        expected: Digest,
        algorithm: Algorithm,
    },
    #[error("blob has {actual} bytes, expected {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("reference name must not be empty")]
    EmptyRefName,
    #[error("cannot extract layer {blob} (diffID {diff_id})")]
    Extract {
        blob: Digest,
        diff_id: Digest,
        #[source]
        source: super::apply::ApplyError,
    },
    #[error("cannot apply layer {blob}")]
    Apply {
        blob: Digest,
        #[source]
        source: super::apply::ApplyError,
    },
    #[error(
        "layer {blob} does not match its diffID: its uncompressed content hashes to {actual}, the image says {expected}"
    )]
    DiffIdMismatch {
        blob: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error(
        "cannot move {} into the layer store at {}\nhint: the directory must be on the store's filesystem (make it under the store's tmp/)",
        from.display(), to.display()
    )]
    Adopt {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot make {} private to its owner (mode 0700)", path.display())]
    Private {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, StoreError>;

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| read_error(path)(source).into()
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| write_error(path)(source).into()
}

/// An OCI image layout on disk used as this machine's content store.
/// Cheap to clone: it is its root path.
#[derive(Debug, Clone)]
pub struct Store {
    /// The layout at the store's root.
    layout: OciLayout,
    /// A shared `flock` on [`IN_USE_LOCK`] while any clone lives (none for
    /// the store prune opens, which holds it exclusive).
    in_use: Option<std::sync::Arc<File>>,
    /// Blobs hashed whole in this process, by [`Store::has_sound_blob`] or
    /// as a [`BlobWriter`] wrote them (the clones'
    /// shared set): a build asks for its base layers several times, and
    /// one check is enough.
    sound: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<Digest>>>,
}

/// The file whose `flock` says the store is in use (shared: builds, runs)
/// or being pruned (exclusive).
const IN_USE_LOCK: &str = "in-use.lock";

impl Store {
    /// The default store root: `$XDG_CACHE_HOME/executor` when that is set
    /// to an absolute path, else `$HOME/.cache/executor`.
    #[must_use]
    pub fn default_root() -> Option<PathBuf> {
        if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from)
            && xdg.is_absolute()
        {
            return Some(xdg.join("executor"));
        }
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|home| PathBuf::from(home).join(".cache").join("executor"))
    }

    /// Opens the store at `root`, creating the directory and an empty layout
    /// if needed, makes its directories private (see [`PRIVATE_DIRS`]) and
    /// removes temporary files a crashed process left behind.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let mut store = Self::open_unlocked(root)?;
        let lock_path = store.root().join(IN_USE_LOCK);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(write_err(&lock_path))?;
        // Waits while a prune runs.
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockShared)
            .map_err(|e| write_err(&lock_path)(e.into()))?;
        store.in_use = Some(std::sync::Arc::new(lock));
        Ok(store)
    }

    /// [`Store::open`] without the in-use lock (prune holds it exclusive).
    fn open_unlocked(root: impl Into<PathBuf>) -> Result<Store> {
        let store = Store {
            layout: OciLayout::open(&root.into())?,
            in_use: None,
            sound: std::sync::Arc::default(),
        };
        create_dir(&store.tmp_dir())?;
        create_dir(&store.layer_dir(Algorithm::Sha256))?;
        store.make_private()?;
        store.remove_stale_temp_files();
        Ok(store)
    }

    /// Sets the root and [`PRIVATE_DIRS`] (those present, and their
    /// per-algorithm subdirectories) to mode 0700, stores made before this
    /// rule included.
    fn make_private(&self) -> Result<()> {
        let mut dirs = vec![self.root().to_path_buf()];
        for name in PRIVATE_DIRS {
            let dir = self.root().join(name);
            if !dir.is_dir() {
                continue;
            }
            if matches!(*name, "blobs" | "layers")
                && let Ok(entries) = fs::read_dir(&dir)
            {
                dirs.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
            dirs.push(dir);
        }
        for dir in dirs {
            let private =
                fs::metadata(&dir).is_ok_and(|m| m.permissions().mode() & 0o7777 == 0o700);
            if !private {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                    .map_err(|source| StoreError::Private { path: dir, source })?;
            }
        }
        Ok(())
    }

    #[must_use]
    pub fn root(&self) -> &Path {
        self.layout.dir()
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root().join("tmp")
    }

    fn blob_dir(&self, algorithm: Algorithm) -> PathBuf {
        self.root().join("blobs").join(algorithm.as_str())
    }

    /// Where the blob with this digest lives (whether or not it exists).
    #[must_use]
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.layout.blob_path(&digest.to_string())
    }

    #[must_use]
    pub fn has_blob(&self, digest: &Digest) -> bool {
        let path = self.blob_path(digest);
        let found = path.is_file();
        if found {
            prune::mark_used(&path);
        }
        found
    }

    /// Removes the temporary files of writers that died: partial blobs in
    /// `tmp/` (see `writer.rs`) and in `blobs/<alg>/` and `index.json`'s
    /// (see [`OciLayout::remove_dead_temp_files`]), all told by their free
    /// lock; and other files in `tmp/` older than [`STALE_TEMP_AGE`].
    fn remove_stale_temp_files(&self) {
        let tmp = self.tmp_dir();
        let dead = remove_dead_temp_files(&tmp, writer::PARTIAL_BLOB_PREFIX)
            .into_iter()
            .chain(self.layout.remove_dead_temp_files());
        for path in dead {
            tracing::debug!(path = %path.display(), "removed a dead writer's temporary file");
        }
        let Ok(entries) = fs::read_dir(&tmp) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_file())
                || entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(writer::PARTIAL_BLOB_PREFIX)
            {
                continue;
            }
            let path = entry.path();
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_TEMP_AGE);
            if stale {
                match fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::debug!(path = %path.display(), "removed a stale temporary file");
                    }
                    Err(err) => {
                        tracing::debug!(path = %path.display(), %err, "cannot remove stale temporary file");
                    }
                }
            }
        }
    }

    /// Stores `data` as a sha256 blob and returns its digest. A blob already
    /// present with the right size is left as it is.
    pub fn put_bytes(&self, data: &[u8]) -> Result<Digest> {
        let digest = self.layout.put_blob(data)?;
        digest.parse().map_err(|source| StoreError::Digest {
            context: "a blob just written".to_owned(),
            source,
        })
    }

    /// Opens a blob for reading, without verifying it: stream it through a
    /// [`HashingReader`](super::digest::HashingReader) or call
    /// [`Store::verify_blob`] first.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let file = self.layout.open_blob(&digest.to_string())?;
        prune::mark_used(&self.blob_path(digest));
        Ok(file)
    }

    /// Reads a whole blob (meant for manifests and configs, not layers),
    /// verifying its digest. A corrupt blob is deleted and reported.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        Ok(self.layout.read_blob(&digest.to_string(), None)?)
    }

    /// Hashes a blob on disk and returns its size; a corrupt blob is deleted
    /// and reported as [`LayoutError::Corrupt`].
    pub fn verify_blob(&self, digest: &Digest) -> Result<u64> {
        Ok(self.layout.verify_blob(&digest.to_string())?)
    }

    /// Names `descriptor` `name` in `index.json`, replacing any descriptor
    /// that had this name. Safe against concurrent writers in other
    /// processes; readers always see a complete file.
    pub fn set_ref(&self, name: &str, descriptor: &Descriptor) -> Result<()> {
        if name.is_empty() {
            return Err(StoreError::EmptyRefName);
        }
        let mut named = descriptor.clone();
        let mut annotations = named.annotations().clone().unwrap_or_default();
        annotations.insert(ANNOTATION_REF_NAME.to_owned(), name.to_owned());
        named.set_annotations(Some(annotations));
        self.layout.update_index(|index: &mut Index<Descriptor>| {
            match index
                .manifests
                .iter()
                .position(|d| ref_name(d) == Some(name))
            {
                Some(i) => index.manifests[i] = named,
                None => index.manifests.push(named),
            }
        })?;
        Ok(())
    }

    /// The descriptor named `name` in `index.json`, if any.
    pub fn get_ref(&self, name: &str) -> Result<Option<Descriptor>> {
        Ok(self.refs()?.into_iter().find(|d| ref_name(d) == Some(name)))
    }

    /// Removes the descriptor named `name`; returns whether there was one.
    /// The blobs stay.
    pub fn remove_ref(&self, name: &str) -> Result<bool> {
        Ok(self.layout.update_index(|index: &mut Index<Descriptor>| {
            let before = index.manifests.len();
            index.manifests.retain(|d| ref_name(d) != Some(name));
            index.manifests.len() != before
        })?)
    }

    /// Every descriptor in `index.json`, in file order.
    pub fn refs(&self) -> Result<Vec<Descriptor>> {
        Ok(self.layout.read_index::<Descriptor>()?.manifests)
    }
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()?
        .get(ANNOTATION_REF_NAME)
        .map(String::as_str)
}

/// Whether the file system holding `path` is full: less than
/// [`FULL_BELOW`] bytes left for unprivileged writers. False when that
/// cannot be told.
#[must_use]
pub fn is_full(path: &Path) -> bool {
    rustix::fs::statvfs(path)
        .is_ok_and(|stat| stat.f_bavail.saturating_mul(stat.f_frsize) < FULL_BELOW)
}

/// The free space under which [`is_full`] calls a file system full: a write
/// that failed for want of space can leave a little behind.
const FULL_BELOW: u64 = 1 << 20;

/// Removes a directory tree, making read-only directories writable first
/// (a layer may hold them, and the store may run without root); a tree
/// already gone is fine.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(first) => {
            let mut todo = vec![path.to_path_buf()];
            while let Some(dir) = todo.pop() {
                let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
                if let Ok(entries) = fs::read_dir(&dir) {
                    for entry in entries.flatten() {
                        if entry.file_type().is_ok_and(|t| t.is_dir()) {
                            todo.push(entry.path());
                        }
                    }
                }
            }
            fs::remove_dir_all(path).map_err(|_| first)
        }
    }
}
