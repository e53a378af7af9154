//! The local content store: an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/<alg>/<hex>`) under one root directory, the
//! `--cache-dir` (default `~/.cache/executor`).
//!
//! Blobs are written to a temporary file under `<root>/tmp/` and renamed
//! into `blobs/` only once their digest (and size, when known) has been
//! checked, so a crash or a failed download never leaves a partial blob
//! under a digest name. Blobs read back are verified again: one found
//! corrupt is deleted and reported. Named references live in `index.json`
//! (`org.opencontainers.image.ref.name`), rewritten atomically under an
//! exclusive `flock` on `<root>/index.json.lock`, so separate processes can
//! share one store.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use oci_spec::image::{ANNOTATION_REF_NAME, Descriptor, ImageIndex, ImageIndexBuilder, MediaType};
use rustix::fs::FlockOperation;
use serde::Deserialize;
use tempfile::NamedTempFile;

use super::digest::{Algorithm, Digest, DigestError, HashingReader, HashingWriter};

/// Content of the `oci-layout` file.
const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
/// Temporary files older than this found under `<root>/tmp/` when the store
/// is opened were left by a crashed process and are removed.
const STALE_TEMP_AGE: Duration = Duration::from_secs(24 * 60 * 60);
const COPY_BUFFER: usize = 1 << 20;

const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MEDIA_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the image store directory {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not valid OCI layout JSON")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} has image layout version {version:?}, expected \"1.0.0\"")]
    LayoutVersion { path: PathBuf, version: String },
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
    #[error("blob {digest} is not in the image store at {root}")]
    BlobNotFound { digest: Digest, root: PathBuf },
    #[error(
        "blob {digest} in the image store is corrupt (its content hashes to {actual}); it was removed"
    )]
    Corrupt { digest: Digest, actual: Digest },
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
}

type Result<T> = std::result::Result<T, StoreError>;

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Read {
        path: path.to_owned(),
        source,
    }
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Write {
        path: path.to_owned(),
        source,
    }
}

/// An OCI image layout on disk used as this machine's content store.
/// Cheap to clone: it is its root path.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

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
    /// if needed, and removes temporary files a crashed process left behind.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let store = Store { root: root.into() };
        for dir in [
            store.root.clone(),
            store.blob_dir(Algorithm::Sha256),
            store.tmp_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(|source| StoreError::Create { path: dir, source })?;
        }
        init_layout(&store.root)?;
        store.remove_stale_temp_files();
        Ok(store)
    }

    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn blob_dir(&self, algorithm: Algorithm) -> PathBuf {
        self.root.join("blobs").join(algorithm.as_str())
    }

    fn layer_dir(&self, algorithm: Algorithm) -> PathBuf {
        self.root.join("layers").join(algorithm.as_str())
    }

    /// Where the extracted copy of the layer with this diffID lives
    /// (whether or not it exists).
    #[must_use]
    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.layer_dir(diff_id.algorithm()).join(diff_id.hex())
    }

    /// Holds an exclusive `flock` on `layers/<alg>/.<hex>.lock` until
    /// dropped: one extraction of a layer at a time, across processes.
    fn lock_layer(&self, diff_id: &Digest) -> Result<File> {
        let dir = self.layer_dir(diff_id.algorithm());
        fs::create_dir_all(&dir).map_err(|source| StoreError::Create {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(format!(".{}.lock", diff_id.hex()));
        let lock_err = |source| StoreError::Lock {
            path: path.clone(),
            source,
        };
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_err)?;
        rustix::fs::flock(&file, FlockOperation::LockExclusive).map_err(|e| lock_err(e.into()))?;
        Ok(file)
    }

    /// The layer (blob `blob`, diffID `diff_id`) extracted once into
    /// `layers/<alg>/<hex>` in overlay form (whiteouts as 0:0 character
    /// devices, opaque directories by xattr: see
    /// [`WhiteoutMode::Overlay`](super::apply::WhiteoutMode::Overlay)),
    /// ready to be an overlay lower directory.
    ///
    /// The blob (gzip, zstd, bzip2, xz or plain) is read once: decompressed,
    /// hashed against `diff_id` (and the compressed bytes against `blob`)
    /// and extracted into a directory under `tmp/`, renamed into place only
    /// when all of it matched. A failed extraction removes its directory;
    /// an interrupted one leaves it under `tmp/`, where the next extraction
    /// of that layer removes it. Concurrent callers, in this process or
    /// others, wait for one extraction (a per-layer `flock`) and get the
    /// same directory. Cross-layer hard links are not resolved (no lower
    /// directories are known here): such a link fails the extraction.
    pub fn extracted_layer(&self, diff_id: &Digest, blob: &Digest) -> Result<PathBuf> {
        let dst = self.layer_path(diff_id);
        if dst.is_dir() {
            return Ok(dst);
        }
        let _lock = self.lock_layer(diff_id)?;
        if dst.is_dir() {
            return Ok(dst);
        }
        let prefix = format!("layer-{}.", diff_id.hex());
        self.remove_leftovers(&prefix);
        let tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(self.tmp_dir())
            .map_err(write_err(&self.tmp_dir()))?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
            .map_err(write_err(tmp.path()))?;

        let blob_path = self.blob_path(blob);
        let mut compressed = HashingReader::new(self.open_blob(blob)?, blob.algorithm());
        let extract_err = |source| StoreError::Extract {
            blob: blob.clone(),
            diff_id: diff_id.clone(),
            source,
        };
        let stream = super::apply::decompress(&mut compressed).map_err(extract_err)?;
        let mut tar = HashingReader::new(stream, diff_id.algorithm());
        let privileged = rustix::process::geteuid().is_root();
        let opts = super::apply::ApplyOptions {
            root_is_privileged: privileged,
            preserve_ownership: true,
            ignore_paths: Vec::new(),
        };
        let mode = super::apply::WhiteoutMode::overlay(Vec::new());
        super::apply::apply_tar_with(&mut tar, tmp.path(), &opts, &mode).map_err(extract_err)?;
        io::copy(&mut tar, &mut io::sink()).map_err(read_err(&blob_path))?;
        let (_, actual, _) = tar.finish();
        io::copy(&mut compressed, &mut io::sink()).map_err(read_err(&blob_path))?;
        let (_, blob_actual, _) = compressed.finish();
        if blob_actual != *blob {
            return Err(StoreError::DigestMismatch {
                expected: blob.clone(),
                actual: blob_actual,
            });
        }
        if actual != *diff_id {
            return Err(StoreError::DiffIdMismatch {
                blob: blob.clone(),
                expected: diff_id.clone(),
                actual,
            });
        }
        let dir = tmp.keep();
        Self::rename_layer(&dir, &dst)
    }

    /// Moves a finished overlay-form directory (a RUN's upper directory, a
    /// COPY's staging directory) into the store as the extracted copy of
    /// `diff_id`, with one `rename` (so `dir` must be on the store's
    /// filesystem: make it under the store's `tmp/`). When the store
    /// already has that layer, `dir` is removed and the existing copy
    /// returned. The content is trusted to be what `diff_id` names.
    pub fn adopt_layer(&self, diff_id: &Digest, dir: &Path) -> Result<PathBuf> {
        let dst = self.layer_path(diff_id);
        let _lock = self.lock_layer(diff_id)?;
        Self::rename_layer(dir, &dst)
    }

    /// Renames `dir` to `dst` unless `dst` exists, in which case `dir` is
    /// removed.
    fn rename_layer(dir: &Path, dst: &Path) -> Result<PathBuf> {
        let adopt_err = |source| StoreError::Adopt {
            from: dir.to_path_buf(),
            to: dst.to_path_buf(),
            source,
        };
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            dir,
            rustix::fs::CWD,
            dst,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => Ok(dst.to_path_buf()),
            Err(rustix::io::Errno::EXIST | rustix::io::Errno::NOTEMPTY) => {
                tracing::debug!(layer = %dst.display(), "layer already in the store; dropping this copy");
                remove_tree(dir).map_err(write_err(dir))?;
                Ok(dst.to_path_buf())
            }
            Err(e) => Err(adopt_err(e.into())),
        }
    }

    /// Removes the `tmp/` directories named `prefix*`: extractions of one
    /// layer that were interrupted (the caller holds that layer's lock, so
    /// none of them is still running).
    fn remove_leftovers(&self, prefix: &str) {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                let path = entry.path();
                if let Err(err) = remove_tree(&path) {
                    tracing::debug!(path = %path.display(), %err, "cannot remove an interrupted extraction");
                }
            }
        }
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Where the blob with this digest lives (whether or not it exists).
    #[must_use]
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blob_dir(digest.algorithm()).join(digest.hex())
    }

    #[must_use]
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    fn remove_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_TEMP_AGE);
            if stale {
                let path = entry.path();
                if let Err(err) = fs::remove_file(&path) {
                    tracing::debug!(path = %path.display(), %err, "cannot remove stale temporary file");
                }
            }
        }
    }

    /// A writer for a new sha256 blob. Nothing appears under `blobs/` until
    /// [`BlobWriter::commit`] has checked the content.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        self.blob_writer_with(Algorithm::Sha256)
    }

    /// A writer for a new blob whose digest uses `algorithm` (pass the
    /// expected digest's algorithm when downloading a known blob).
    pub fn blob_writer_with(&self, algorithm: Algorithm) -> Result<BlobWriter> {
        let dir = self.tmp_dir();
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&dir)
            .map_err(write_err(&dir))?;
        Ok(BlobWriter {
            out: HashingWriter::new(BufWriter::with_capacity(256 * 1024, file), algorithm),
            expected_size: None,
            blob_dir: self.blob_dir(algorithm),
            algorithm,
        })
    }

    /// Stores `data` as a sha256 blob and returns its digest. A blob already
    /// present with the right size is left as it is.
    pub fn put_bytes(&self, data: &[u8]) -> Result<Digest> {
        let digest = super::digest::sha256_bytes(data);
        let path = self.blob_path(&digest);
        if fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == data.len() as u64) {
            return Ok(digest);
        }
        let mut writer = self.blob_writer()?;
        writer.write_all(data).map_err(write_err(&path))?;
        writer.commit(Some(&digest))?;
        Ok(digest)
    }

    /// Opens a blob for reading, without verifying it: stream it through a
    /// [`HashingReader`] or call [`Store::verify_blob`] first.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|source| self.open_error(digest, &path, source))
    }

    fn open_error(&self, digest: &Digest, path: &Path, source: io::Error) -> StoreError {
        if source.kind() == io::ErrorKind::NotFound {
            StoreError::BlobNotFound {
                digest: digest.clone(),
                root: self.root.clone(),
            }
        } else {
            StoreError::Read {
                path: path.to_owned(),
                source,
            }
        }
    }

    /// Reads a whole blob (meant for manifests and configs, not layers),
    /// verifying its digest. A corrupt blob is deleted and reported.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let mut file = self.open_blob(digest)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(read_err(&path))?;
        let actual = Digest::of(digest.algorithm(), &data);
        self.check_or_remove(digest, &file, actual)?;
        Ok(data)
    }

    /// Hashes a blob on disk and returns its size; a corrupt blob is deleted
    /// and reported as [`StoreError::Corrupt`].
    pub fn verify_blob(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest);
        let file = self.open_blob(digest)?;
        let mut reader = HashingReader::new(&file, digest.algorithm());
        io::copy(&mut reader, &mut io::sink()).map_err(read_err(&path))?;
        let (_, actual, size) = reader.finish();
        self.check_or_remove(digest, &file, actual)?;
        Ok(size)
    }

    /// Compares a blob's computed digest with its name; on mismatch removes
    /// the file, unless another process already replaced it meanwhile.
    fn check_or_remove(&self, digest: &Digest, file: &File, actual: Digest) -> Result<()> {
        if actual == *digest {
            return Ok(());
        }
        let path = self.blob_path(digest);
        let ours = file.metadata().map_err(read_err(&path))?;
        if let Ok(current) = fs::symlink_metadata(&path)
            && current.dev() == ours.dev()
            && current.ino() == ours.ino()
        {
            fs::remove_file(&path).map_err(write_err(&path))?;
        }
        Err(StoreError::Corrupt {
            digest: digest.clone(),
            actual,
        })
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

        let _lock = self.lock_index()?;
        let mut index = self.read_index()?;
        let mut manifests = index.manifests().clone();
        match manifests.iter().position(|d| ref_name(d) == Some(name)) {
            Some(i) => manifests[i] = named,
            None => manifests.push(named),
        }
        index.set_manifests(manifests);
        write_index(&self.root, &index)
    }

    /// The descriptor named `name` in `index.json`, if any.
    pub fn get_ref(&self, name: &str) -> Result<Option<Descriptor>> {
        Ok(self
            .read_index()?
            .manifests()
            .iter()
            .find(|d| ref_name(d) == Some(name))
            .cloned())
    }

    /// Removes the descriptor named `name`; returns whether there was one.
    /// The blobs stay.
    pub fn remove_ref(&self, name: &str) -> Result<bool> {
        let _lock = self.lock_index()?;
        let mut index = self.read_index()?;
        let mut manifests = index.manifests().clone();
        manifests.retain(|d| ref_name(d) != Some(name));
        if manifests.len() == index.manifests().len() {
            return Ok(false);
        }
        index.set_manifests(manifests);
        write_index(&self.root, &index)?;
        Ok(true)
    }

    /// Every descriptor in `index.json`, in file order.
    pub fn refs(&self) -> Result<Vec<Descriptor>> {
        Ok(self.read_index()?.manifests().clone())
    }

    fn read_index(&self) -> Result<ImageIndex> {
        read_index_at(&self.index_path())
    }

    /// Holds an exclusive `flock` on `index.json.lock` until dropped.
    /// `flock` locks belong to the open file description, so two threads of
    /// one process exclude each other exactly as two processes do.
    fn lock_index(&self) -> Result<File> {
        let path = self.root.join("index.json.lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StoreError::Lock {
                path: path.clone(),
                source,
            })?;
        rustix::fs::flock(&file, FlockOperation::LockExclusive).map_err(|e| StoreError::Lock {
            path,
            source: e.into(),
        })?;
        Ok(file)
    }

    /// Writes an OCI image layout at `dir` (for `--oci-layout-path`) holding
    /// `roots` in its `index.json` and every blob they reach: the manifests
    /// and indexes (OCI and Docker schema 2), their configs and layers.
    /// Blobs are verified, then hard-linked when `dir` is on the store's
    /// filesystem and copied otherwise. An existing layout at `dir` is kept:
    /// a root replaces an entry with the same ref name (or, unnamed, the
    /// same digest). Layers missing from the store are an error, except
    /// non-distributable ones that carry `urls`.
    pub fn export_layout(&self, dir: &Path, roots: &[Descriptor]) -> Result<()> {
        self.export_layout_with(dir, roots, true)
    }

    fn export_layout_with(&self, dir: &Path, roots: &[Descriptor], allow_link: bool) -> Result<()> {
        let mut blobs = BTreeSet::new();
        for root in roots {
            self.collect_blobs(root, &mut blobs)?;
        }
        fs::create_dir_all(dir).map_err(|source| StoreError::Create {
            path: dir.to_owned(),
            source,
        })?;
        init_layout(dir)?;
        for digest in &blobs {
            self.export_blob(digest, dir, allow_link)?;
        }
        let index_path = dir.join("index.json");
        let mut index = read_index_at(&index_path)?;
        let mut manifests = index.manifests().clone();
        for root in roots {
            let name = ref_name(root);
            let same = |d: &Descriptor| match name {
                Some(name) => ref_name(d) == Some(name),
                None => ref_name(d).is_none() && d.digest() == root.digest(),
            };
            match manifests.iter().position(same) {
                Some(i) => manifests[i] = root.clone(),
                None => manifests.push(root.clone()),
            }
        }
        index.set_manifests(manifests);
        write_index(dir, &index)
    }

    /// Adds `descriptor`'s blob and, for manifests and indexes, everything
    /// they reference to `out`.
    fn collect_blobs(&self, descriptor: &Descriptor, out: &mut BTreeSet<Digest>) -> Result<()> {
        let digest =
            Digest::try_from(descriptor.digest()).map_err(|source| StoreError::Digest {
                context: format!("a {} descriptor", descriptor.media_type()),
                source,
            })?;
        if out.contains(&digest) {
            return Ok(());
        }
        if !self.has_blob(&digest) && descriptor.urls().as_ref().is_some_and(|u| !u.is_empty()) {
            // A foreign layer: registries serve it from its URLs, not from us.
            return Ok(());
        }
        let media_type = descriptor.media_type();
        let is_tree = matches!(media_type, MediaType::ImageManifest | MediaType::ImageIndex)
            || matches!(media_type, MediaType::Other(m)
                if m == MEDIA_DOCKER_MANIFEST || m == MEDIA_DOCKER_MANIFEST_LIST);
        if is_tree {
            let data = self.read_blob(&digest)?;
            let children: Children =
                serde_json::from_slice(&data).map_err(|source| StoreError::Manifest {
                    digest: digest.clone(),
                    source,
                })?;
            out.insert(digest);
            for child in children
                .manifests
                .iter()
                .chain(&children.config)
                .chain(&children.layers)
            {
                self.collect_blobs(child, out)?;
            }
        } else if self.has_blob(&digest) {
            out.insert(digest);
        } else {
            return Err(StoreError::BlobNotFound {
                digest,
                root: self.root.clone(),
            });
        }
        Ok(())
    }

    fn export_blob(&self, digest: &Digest, dir: &Path, allow_link: bool) -> Result<()> {
        let src = self.blob_path(digest);
        let dst_dir = dir.join("blobs").join(digest.algorithm().as_str());
        let dst = dst_dir.join(digest.hex());
        fs::create_dir_all(&dst_dir).map_err(|source| StoreError::Create {
            path: dst_dir.clone(),
            source,
        })?;
        let size = self.verify_blob(digest)?;
        if fs::metadata(&dst).is_ok_and(|m| m.is_file() && m.len() == size) {
            return Ok(());
        }
        if allow_link {
            // Link under a temporary name, then rename over any stale file.
            let tmp = dst_dir.join(format!(".{}.link-{}", digest.hex(), std::process::id()));
            let _ = fs::remove_file(&tmp);
            match fs::hard_link(&src, &tmp) {
                Ok(()) => return fs::rename(&tmp, &dst).map_err(write_err(&dst)),
                Err(err) => {
                    tracing::debug!(%digest, %err, "cannot hard-link blob, copying it");
                }
            }
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", digest.hex()))
            .tempfile_in(&dst_dir)
            .map_err(write_err(&dst_dir))?;
        let mut reader = HashingReader::new(self.open_blob(digest)?, digest.algorithm());
        copy_buffered(&mut reader, tmp.as_file_mut()).map_err(write_err(&dst))?;
        let (_, actual, _) = reader.finish();
        if actual != *digest {
            return Err(StoreError::Corrupt {
                digest: digest.clone(),
                actual,
            });
        }
        finish_blob_file(tmp, &dst)
    }
}

/// The descriptors a manifest or index references.
#[derive(Deserialize)]
struct Children {
    #[serde(default)]
    manifests: Vec<Descriptor>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()?
        .get(ANNOTATION_REF_NAME)
        .map(String::as_str)
}

/// Creates `oci-layout` and an empty `index.json` in `dir` when missing, and
/// checks the layout version when present.
fn init_layout(dir: &Path) -> Result<()> {
    let layout = dir.join("oci-layout");
    match fs::read(&layout) {
        Ok(data) => {
            #[derive(Deserialize)]
            struct Layout {
                #[serde(rename = "imageLayoutVersion")]
                version: String,
            }
            let parsed: Layout =
                serde_json::from_slice(&data).map_err(|source| StoreError::Json {
                    path: layout.clone(),
                    source,
                })?;
            if parsed.version != "1.0.0" {
                return Err(StoreError::LayoutVersion {
                    path: layout,
                    version: parsed.version,
                });
            }
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            write_atomic(dir, "oci-layout", OCI_LAYOUT.as_bytes())?;
        }
        Err(source) => {
            return Err(StoreError::Read {
                path: layout,
                source,
            });
        }
    }
    if !dir.join("index.json").exists() {
        write_index(dir, &empty_index())?;
    }
    Ok(())
}

fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .expect("all required index fields are set")
}

fn read_index_at(path: &Path) -> Result<ImageIndex> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data).map_err(|source| StoreError::Json {
            path: path.to_owned(),
            source,
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(empty_index()),
        Err(source) => Err(StoreError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `index.json` in `dir` atomically, with sorted object keys so the
/// same index always gives the same bytes.
fn write_index(dir: &Path, index: &ImageIndex) -> Result<()> {
    let path = dir.join("index.json");
    let json_err = |source| StoreError::Json {
        path: path.clone(),
        source,
    };
    let value = serde_json::to_value(index).map_err(json_err)?;
    let mut data = serde_json::to_vec_pretty(&value).map_err(json_err)?;
    data.push(b'\n');
    write_atomic(dir, "index.json", &data)
}

/// Writes `dir/name` through a temporary sibling and a rename.
fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)
        .map_err(write_err(&path))?;
    tmp.write_all(data).map_err(write_err(&path))?;
    finish_blob_file(tmp, &path)
}

/// Syncs a finished temporary file, makes it world-readable and renames it
/// to `dst`.
fn finish_blob_file(tmp: NamedTempFile, dst: &Path) -> Result<()> {
    let file = tmp.as_file();
    file.sync_data().map_err(write_err(dst))?;
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(write_err(dst))?;
    tmp.persist(dst).map_err(|e| StoreError::Write {
        path: dst.to_owned(),
        source: e.error,
    })?;
    Ok(())
}

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

fn copy_buffered(reader: &mut impl Read, writer: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// A blob being written to the store. Dropping it without
/// [`commit`](BlobWriter::commit) removes the temporary file.
#[derive(Debug)]
pub struct BlobWriter {
    out: HashingWriter<BufWriter<NamedTempFile>>,
    expected_size: Option<u64>,
    blob_dir: PathBuf,
    algorithm: Algorithm,
}

impl BlobWriter {
    /// Declares the blob's size: writing more fails at once, and
    /// [`commit`](BlobWriter::commit) fails if fewer bytes were written.
    pub fn expect_size(&mut self, size: u64) {
        self.expected_size = Some(size);
    }

    /// Bytes written so far.
    #[must_use]
    pub fn written(&self) -> u64 {
        self.out.count()
    }

    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Checks the content against `expected` (when given) and the declared
    /// size, then moves the blob into place. Returns its digest and size.
    /// On any error the temporary file is removed and no blob appears.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let algorithm = self.algorithm;
        if let Some(expected) = expected
            && expected.algorithm() != algorithm
        {
            return Err(StoreError::AlgorithmMismatch {
                expected: expected.clone(),
                algorithm,
            });
        }
        let (buffered, digest, size) = self.out.finish();
        let tmp = buffered.into_inner().map_err(|e| StoreError::Write {
            path: self.blob_dir.join(digest.hex()),
            source: e.into_error(),
        })?;
        if let Some(expected) = self.expected_size
            && expected != size
        {
            return Err(StoreError::SizeMismatch {
                expected,
                actual: size,
            });
        }
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
        fs::create_dir_all(&self.blob_dir).map_err(|source| StoreError::Create {
            path: self.blob_dir.clone(),
            source,
        })?;
        finish_blob_file(tmp, &self.blob_dir.join(digest.hex()))?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(expected) = self.expected_size
            && self.out.count() + buf.len() as u64 > expected
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob is larger than its expected {expected} bytes"),
            ));
        }
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::digest::sha256_bytes;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        (dir, store)
    }

    fn tmp_files(store: &Store) -> Vec<PathBuf> {
        fs::read_dir(store.tmp_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    fn blob_files(store: &Store) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for alg in fs::read_dir(store.root.join("blobs")).unwrap() {
            for blob in fs::read_dir(alg.unwrap().path()).unwrap() {
                out.push(blob.unwrap().path());
            }
        }
        out
    }

    fn descriptor(media_type: MediaType, data: &[u8]) -> Descriptor {
        Descriptor::new(media_type, data.len() as u64, sha256_bytes(data))
    }

    #[test]
    fn open_creates_an_oci_layout_and_reopens_it() {
        let (_dir, store) = store();
        let layout = fs::read_to_string(store.root().join("oci-layout")).unwrap();
        assert_eq!(layout, OCI_LAYOUT);
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(store.root().join("index.json")).unwrap()).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["manifests"], serde_json::json!([]));
        assert!(store.root().join("blobs/sha256").is_dir());
        let again = Store::open(store.root()).unwrap();
        assert!(again.refs().unwrap().is_empty());
    }

    #[test]
    fn open_rejects_another_layout_version() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"2.0.0"}"#,
        )
        .unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("\"2.0.0\""), "{err}");
    }

    #[test]
    fn open_removes_stale_temporary_files_only() {
        let (_dir, store) = store();
        let old = store.tmp_dir().join("blob-old");
        let fresh = store.tmp_dir().join("blob-fresh");
        File::create(&old)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(3 * 24 * 3600))
            .unwrap();
        File::create(&fresh).unwrap();
        Store::open(store.root()).unwrap();
        assert!(!old.exists());
        assert!(fresh.exists());
    }

    #[test]
    fn put_and_read_blob_round_trip() {
        let (_dir, store) = store();
        let digest = store.put_bytes(b"hello").unwrap();
        assert_eq!(digest, sha256_bytes(b"hello"));
        let path = store.blob_path(&digest);
        assert_eq!(
            path,
            store.root().join("blobs/sha256").join(digest.hex()),
            "blobs live at blobs/<alg>/<hex>"
        );
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        assert!(store.has_blob(&digest));
        assert_eq!(store.read_blob(&digest).unwrap(), b"hello");
        assert_eq!(store.verify_blob(&digest).unwrap(), 5);
        let mut s = String::new();
        store
            .open_blob(&digest)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "hello");
        // Putting it again is a no-op.
        assert_eq!(store.put_bytes(b"hello").unwrap(), digest);
        assert!(tmp_files(&store).is_empty());
    }

    #[test]
    fn blob_writer_commits_with_expected_digest_and_size() {
        let (_dir, store) = store();
        let data = vec![42u8; 1_000_000];
        let expected = sha256_bytes(&data);
        let mut w = store.blob_writer().unwrap();
        w.expect_size(data.len() as u64);
        for chunk in data.chunks(4096) {
            w.write_all(chunk).unwrap();
        }
        assert_eq!(w.written(), 1_000_000);
        let (digest, size) = w.commit(Some(&expected)).unwrap();
        assert_eq!((digest, size), (expected.clone(), 1_000_000));
        assert_eq!(store.verify_blob(&expected).unwrap(), 1_000_000);
    }

    #[test]
    fn blob_writer_supports_sha512() {
        let (_dir, store) = store();
        let expected = Digest::of(Algorithm::Sha512, b"abc");
        let mut w = store.blob_writer_with(Algorithm::Sha512).unwrap();
        w.write_all(b"abc").unwrap();
        w.commit(Some(&expected)).unwrap();
        assert!(
            store
                .root()
                .join("blobs/sha512")
                .join(expected.hex())
                .is_file()
        );
        assert_eq!(store.read_blob(&expected).unwrap(), b"abc");
        // A sha256 writer cannot check a sha512 digest.
        let w = store.blob_writer().unwrap();
        let err = w.commit(Some(&expected)).unwrap_err();
        assert!(matches!(err, StoreError::AlgorithmMismatch { .. }), "{err}");
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let (_dir, store) = store();
        let mut w = store.blob_writer().unwrap();
        w.write_all(&vec![1u8; 300_000]).unwrap();
        assert_eq!(
            tmp_files(&store).len(),
            1,
            "the write goes to a temporary file"
        );
        drop(w);
        assert!(tmp_files(&store).is_empty());
        assert!(blob_files(&store).is_empty());
    }

    #[test]
    fn failed_commit_leaves_no_blob_and_no_temporary_file() {
        let (_dir, store) = store();
        let wrong = sha256_bytes(b"something else");
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"partial download").unwrap();
        let err = w.commit(Some(&wrong)).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }));
        assert!(
            err.to_string().contains(&wrong.to_string()),
            "the error names the digest: {err}"
        );
        assert!(!store.has_blob(&wrong));
        assert!(!store.has_blob(&sha256_bytes(b"partial download")));
        assert!(tmp_files(&store).is_empty());
        assert!(blob_files(&store).is_empty());
    }

    #[test]
    fn size_is_enforced_while_writing_and_at_commit() {
        let (_dir, store) = store();
        let mut w = store.blob_writer().unwrap();
        w.expect_size(4);
        let err = w.write_all(b"12345").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        drop(w);

        let mut w = store.blob_writer().unwrap();
        w.expect_size(10);
        w.write_all(b"1234").unwrap();
        let err = w.commit(None).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::SizeMismatch {
                    expected: 10,
                    actual: 4
                }
            ),
            "{err}"
        );
        assert!(tmp_files(&store).is_empty());
        assert!(blob_files(&store).is_empty());
    }

    #[test]
    fn corrupt_blob_is_detected_reported_and_removed() {
        let (_dir, store) = store();
        let digest = store.put_bytes(b"original content").unwrap();
        let path = store.blob_path(&digest);
        // Same size, different bytes: only hashing can tell.
        fs::write(&path, b"0riginal content").unwrap();
        let err = store.read_blob(&digest).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }));
        assert!(err.to_string().contains(&digest.to_string()), "{err}");
        assert!(!path.exists(), "the corrupt blob is removed");
        let err = store.read_blob(&digest).unwrap_err();
        assert!(matches!(err, StoreError::BlobNotFound { .. }), "{err}");
        assert!(err.to_string().contains(&digest.to_string()), "{err}");

        // A truncated blob, found by verify_blob; put_bytes repairs it.
        let digest = store.put_bytes(b"another blob").unwrap();
        fs::write(store.blob_path(&digest), b"another").unwrap();
        let err = store.verify_blob(&digest).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(!store.has_blob(&digest));
        fs::write(store.blob_path(&digest), b"another").unwrap();
        store.put_bytes(b"another blob").unwrap();
        assert_eq!(store.read_blob(&digest).unwrap(), b"another blob");
    }

    #[test]
    fn set_ref_replaces_and_get_ref_finds() {
        let (_dir, store) = store();
        let one = descriptor(MediaType::ImageManifest, b"one");
        let two = descriptor(MediaType::ImageManifest, b"two");
        assert_eq!(store.get_ref("app:latest").unwrap(), None);
        store.set_ref("app:latest", &one).unwrap();
        store.set_ref("base:1", &one).unwrap();
        store.set_ref("app:latest", &two).unwrap();
        let got = store.get_ref("app:latest").unwrap().unwrap();
        assert_eq!(got.digest(), two.digest());
        assert_eq!(ref_name(&got), Some("app:latest"));
        assert_eq!(store.refs().unwrap().len(), 2);
        assert!(store.remove_ref("base:1").unwrap());
        assert!(!store.remove_ref("base:1").unwrap());
        assert_eq!(store.refs().unwrap().len(), 1);
        assert!(matches!(
            store.set_ref("", &one),
            Err(StoreError::EmptyRefName)
        ));
    }

    #[test]
    fn concurrent_set_ref_loses_no_update_and_readers_see_whole_files() {
        let (_dir, store) = store();
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let store = store.clone();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(Ordering::Relaxed) {
                    store.refs().expect("index.json is always complete");
                    reads += 1;
                }
                reads
            })
        };
        let writers: Vec<_> = (0..8)
            .map(|t| {
                // Each thread opens its own Store, as separate processes would.
                let store = Store::open(store.root()).unwrap();
                std::thread::spawn(move || {
                    for i in 0..20 {
                        let d = descriptor(MediaType::ImageManifest, format!("{t}/{i}").as_bytes());
                        store.set_ref(&format!("img-{t}:{i}"), &d).unwrap();
                        // Everyone also fights over one shared name.
                        store.set_ref("shared", &d).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        let refs = store.refs().unwrap();
        assert_eq!(refs.len(), 8 * 20 + 1);
        for t in 0..8 {
            for i in 0..20 {
                let d = store.get_ref(&format!("img-{t}:{i}")).unwrap().unwrap();
                assert_eq!(
                    d.digest(),
                    descriptor(MediaType::ImageManifest, format!("{t}/{i}").as_bytes()).digest()
                );
            }
        }
        let leftovers: Vec<_> = fs::read_dir(store.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    /// Stores a one-layer image and returns (manifest descriptor, blobs).
    fn sample_image(store: &Store) -> (Descriptor, Vec<Digest>) {
        let layer = b"pretend this is a gzipped tar".to_vec();
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let layer_d = store.put_bytes(&layer).unwrap();
        let config_d = store.put_bytes(config).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_d.to_string(),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_d.to_string(),
                "size": layer.len(),
            }, {
                "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                "digest": sha256_bytes(b"foreign").to_string(),
                "size": 7,
                "urls": ["https://example.invalid/foreign"],
            }],
        });
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let manifest_d = store.put_bytes(&manifest).unwrap();
        let mut desc = descriptor(MediaType::ImageManifest, &manifest);
        let mut ann = std::collections::HashMap::new();
        ann.insert(ANNOTATION_REF_NAME.to_owned(), "app:1".to_owned());
        desc.set_annotations(Some(ann));
        (desc, vec![manifest_d, config_d, layer_d])
    }

    fn check_exported(out: &Path, blobs: &[Digest]) {
        assert_eq!(
            fs::read_to_string(out.join("oci-layout")).unwrap(),
            OCI_LAYOUT
        );
        let index = read_index_at(&out.join("index.json")).unwrap();
        assert_eq!(index.manifests().len(), 1);
        assert_eq!(ref_name(&index.manifests()[0]), Some("app:1"));
        let exported = Store::open(out).unwrap();
        for d in blobs {
            exported.verify_blob(d).unwrap();
        }
        let count = fs::read_dir(out.join("blobs/sha256")).unwrap().count();
        assert_eq!(
            count,
            blobs.len(),
            "only the image's blobs, no temporary files"
        );
    }

    #[test]
    fn export_layout_hard_links_on_the_same_filesystem() {
        let (dir, store) = store();
        let (manifest, blobs) = sample_image(&store);
        store.put_bytes(b"unrelated").unwrap();
        let out = dir.path().join("layout");
        store
            .export_layout(&out, std::slice::from_ref(&manifest))
            .unwrap();
        for d in &blobs {
            let a = fs::metadata(store.blob_path(d)).unwrap();
            let b = fs::metadata(out.join("blobs/sha256").join(d.hex())).unwrap();
            assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "{d} is hard-linked");
        }
        // Exporting again, into the existing layout, is idempotent.
        store.export_layout(&out, &[manifest]).unwrap();
        check_exported(&out, &blobs);
    }

    #[test]
    fn export_layout_copies_when_it_cannot_link() {
        let (dir, store) = store();
        let (manifest, blobs) = sample_image(&store);
        let out = dir.path().join("layout");
        store.export_layout_with(&out, &[manifest], false).unwrap();
        for d in &blobs {
            let a = fs::metadata(store.blob_path(d)).unwrap();
            let b = fs::metadata(out.join("blobs/sha256").join(d.hex())).unwrap();
            assert_ne!(a.ino(), b.ino());
        }
        check_exported(&out, &blobs);
    }

    #[test]
    fn export_layout_reports_a_missing_blob() {
        let (dir, store) = store();
        let (manifest, blobs) = sample_image(&store);
        fs::remove_file(store.blob_path(&blobs[2])).unwrap();
        let err = store
            .export_layout(&dir.path().join("layout"), &[manifest])
            .unwrap_err();
        assert!(matches!(err, StoreError::BlobNotFound { .. }), "{err}");
        assert!(err.to_string().contains(&blobs[2].to_string()), "{err}");
    }

    /// A gzip layer with a whiteout, an opaque directory and a file.
    fn sample_layer(store: &Store) -> (Digest, Digest) {
        use crate::image::layer::{Compression, EntryKind, LayerEntry, WriteOptions, write_layer};
        let src = tempfile::tempdir().unwrap();
        let file = src.path().join("f");
        fs::write(&file, "content").unwrap();
        let entries = vec![
            LayerEntry::new("etc", EntryKind::Dir),
            LayerEntry::new("etc/gone", EntryKind::Whiteout),
            LayerEntry::new("etc/file", EntryKind::File(file)),
            LayerEntry::new("var", EntryKind::Dir),
            LayerEntry::new("var", EntryKind::OpaqueWhiteout),
        ];
        let mut blob = Vec::new();
        let info = write_layer(
            entries,
            Compression::Gzip,
            None,
            1,
            &mut blob,
            &WriteOptions::default(),
        )
        .unwrap();
        assert_eq!(store.put_bytes(&blob).unwrap(), info.digest);
        (info.diff_id, info.digest)
    }

    #[test]
    fn extracted_layer_is_extracted_once_in_overlay_form() {
        let (_dir, store) = store();
        let (diff_id, blob) = sample_layer(&store);
        let paths: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| store.extracted_layer(&diff_id, &blob).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let path = store.layer_path(&diff_id);
        assert!(paths.iter().all(|p| *p == path), "{paths:?}");
        assert_eq!(
            fs::read_to_string(path.join("etc/file")).unwrap(),
            "content"
        );
        let whiteout = fs::symlink_metadata(path.join("etc/gone")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &whiteout.file_type()
        ));
        assert_eq!(whiteout.rdev(), 0);
        let xattrs = crate::image::layer::read_xattrs(&path.join("var")).unwrap();
        assert_eq!(xattrs["trusted.overlay.opaque"], b"y");
        // Nothing left in tmp/, one directory in layers/.
        assert!(tmp_files(&store).is_empty(), "{:?}", tmp_files(&store));
        let layers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| !n.to_string_lossy().starts_with('.'))
            .collect();
        assert_eq!(layers.len(), 1);
    }

    #[test]
    fn extracted_layer_rejects_a_blob_that_does_not_match_its_diff_id() {
        let (_dir, store) = store();
        let (_, blob) = sample_layer(&store);
        let wrong = sha256_bytes(b"not this layer");
        // A leftover of an interrupted extraction of that layer is removed.
        let leftover = store.tmp_dir().join(format!("layer-{}.stale", wrong.hex()));
        fs::create_dir(&leftover).unwrap();
        let err = store.extracted_layer(&wrong, &blob).unwrap_err();
        assert!(matches!(err, StoreError::DiffIdMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&wrong.to_string()), "{err}");
        assert!(!store.layer_path(&wrong).exists());
        assert!(tmp_files(&store).is_empty(), "{:?}", tmp_files(&store));
        // A blob that is not a layer at all.
        let junk = store.put_bytes(b"\x1f\x8b junk that is not gzip").unwrap();
        let err = store.extracted_layer(&wrong, &junk).unwrap_err();
        assert!(matches!(err, StoreError::Extract { .. }), "{err}");
        assert!(!store.layer_path(&wrong).exists());
        assert!(tmp_files(&store).is_empty(), "{:?}", tmp_files(&store));
    }

    #[test]
    fn adopt_layer_renames_and_drops_the_loser() {
        let (_dir, store) = store();
        let diff_id = sha256_bytes(b"some layer");
        let make = |text: &str| {
            let dir = tempfile::Builder::new()
                .prefix("upper-")
                .tempdir_in(store.tmp_dir())
                .unwrap()
                .keep();
            fs::write(dir.join("file"), text).unwrap();
            dir
        };
        let first = make("first");
        let path = store.adopt_layer(&diff_id, &first).unwrap();
        assert_eq!(path, store.layer_path(&diff_id));
        assert!(!first.exists());
        let second = make("second");
        assert_eq!(store.adopt_layer(&diff_id, &second).unwrap(), path);
        assert!(!second.exists(), "the losing copy is removed");
        assert_eq!(fs::read_to_string(path.join("file")).unwrap(), "first");
        // Another filesystem cannot be renamed in.
        let elsewhere = tempfile::tempdir_in("/dev/shm").unwrap();
        let err = store
            .adopt_layer(&sha256_bytes(b"other"), elsewhere.path())
            .unwrap_err();
        assert!(err.to_string().contains("hint:"), "{err}");
    }
}
