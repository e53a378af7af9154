//! An OCI image layout on disk: the `oci-layout` file, `index.json` and
//! `blobs/<alg>/<hex>`, as the OCI image-spec lays them out. This is the
//! one implementation of it in the project: the cache's entry store
//! ([`crate::Layout`], `--cache-repo oci:PATH`) and the executor's image
//! store (`image::store`, the `--cache-dir`, and the layouts
//! `--oci-layout-path` exports) are both built on it.
//!
//! It owns the layout's invariants: `index.json` is only changed under an
//! exclusive `flock` on `index.json.lock` and rewritten through a temporary
//! file and a rename, so several threads or processes can share a layout
//! and a reader always sees a whole file; a blob appears under its digest
//! only once its content was checked against it (written through a
//! temporary file beside it and renamed into place); a blob read back is
//! checked again, and one found corrupt is removed. It knows nothing of
//! what the manifests it indexes mean (cache entries, images): the
//! descriptor type is the caller's, and unknown fields of the index are
//! kept as they are.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256, Sha384, Sha512};

/// The annotation naming a descriptor of `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The media type of an OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Content of the `oci-layout` file.
const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
const COPY_BUFFER: usize = 1 << 20;

/// A layout that cannot be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot create {path}")]
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
    #[error("cannot parse {path} as an OCI {what}")]
    Json {
        path: PathBuf,
        /// `layout file` or `image index`.
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path} has image layout version {version:?}, expected \"1.0.0\"\nhint: use a directory of its own for this layout"
    )]
    LayoutVersion { path: PathBuf, version: String },
    #[error("{path} has schemaVersion {found}, expected 2")]
    IndexVersion { path: PathBuf, found: u64 },
    #[error(
        "{digest:?} is not a blob digest: expected sha256, sha384 or sha512, a colon and lower-case hex"
    )]
    Digest { digest: String },
    #[error("blob {digest} is not in the OCI layout at {dir}")]
    BlobNotFound { digest: String, dir: PathBuf },
    #[error("blob {path} has {actual} bytes, expected {expected}")]
    BlobSize {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest} at {path} is corrupt (its content hashes to {actual}); it was removed")]
    Corrupt {
        digest: String,
        path: PathBuf,
        actual: String,
    },
    #[error("{path} hashes to {actual}, expected {expected}")]
    SourceDigest {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path} has {actual} bytes, expected {expected}")]
    SourceSize {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
}

type Result<T, E = LayoutError> = std::result::Result<T, E>;

/// The [`LayoutError::Read`] of `path`, for `map_err`.
pub fn read_error(path: &Path) -> impl FnOnce(io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Read {
        path: path.to_owned(),
        source,
    }
}

/// The [`LayoutError::Write`] of `path`, for `map_err`.
pub fn write_error(path: &Path) -> impl FnOnce(io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Write {
        path: path.to_owned(),
        source,
    }
}

/// Creates the directory `path` and its parents.
pub fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|source| LayoutError::Create {
        path: path.to_owned(),
        source,
    })
}

/// `index.json`, with the descriptor type `D` of the caller; the fields
/// this module does not know are kept as they are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index<D> {
    pub schema_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default = "Vec::new")]
    pub manifests: Vec<D>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl<D> Index<D> {
    fn empty() -> Self {
        Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_owned()),
            manifests: Vec::new(),
            other: Map::new(),
        }
    }
}

/// An OCI image layout at a directory. Cheap to clone: it is its path.
#[derive(Debug, Clone)]
pub struct OciLayout {
    dir: PathBuf,
}

impl OciLayout {
    /// Opens the layout at `dir`, creating the directory, `oci-layout`,
    /// `index.json` and `blobs/sha256/` where missing; an existing
    /// `oci-layout` must say version 1.0.0 and an existing `index.json`
    /// must be an image index of schema version 2.
    pub fn open(dir: &Path) -> Result<OciLayout> {
        create_dir(&dir.join("blobs").join("sha256"))?;
        let layout = OciLayout {
            dir: dir.to_owned(),
        };
        if layout.index_path().exists() {
            layout.check_version()?;
            layout.read_index::<Value>()?;
        } else {
            // A new layout: its two files are written side by side, not
            // synced (see `write_new`).
            std::thread::scope(|scope| {
                let version = scope.spawn(|| layout.check_version());
                let index = layout.create_index();
                version
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    .and(index)
            })?;
        }
        Ok(layout)
    }

    /// Writes an empty `index.json` unless another process did first.
    fn create_index(&self) -> Result<()> {
        // Under the lock: another process may be creating it and putting a
        // descriptor in it right now.
        let _lock = lock_exclusive(&self.dir.join("index.json.lock"))?;
        let path = self.index_path();
        if !path.exists() {
            write_new(&path, &index_json(&path, &Index::<Value>::empty())?)?;
        }
        Ok(())
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes the temporary files of writers that died while writing a
    /// blob (`blobs/<alg>/.<hex>.*`) or `index.json` (`.index.json.*`):
    /// those whose lock is free (see [`locked_temp_file`]). Returns the
    /// paths removed.
    #[must_use = "the paths removed are for the caller's log"]
    pub fn remove_dead_temp_files(&self) -> Vec<PathBuf> {
        let mut removed = remove_dead_temp_files(&self.dir, ".index.json.");
        if let Ok(algorithms) = fs::read_dir(self.dir.join("blobs")) {
            for algorithm in algorithms.flatten() {
                if algorithm.file_type().is_ok_and(|t| t.is_dir()) {
                    removed.extend(remove_dead_temp_files(&algorithm.path(), "."));
                }
            }
        }
        removed
    }

    /// Where the blob `digest` (`<alg>:<hex>`) is, or would be:
    /// `blobs/<alg>/<hex>`. The digest is not checked: give one that was
    /// (the reading and writing methods check theirs).
    #[must_use]
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let blobs = self.dir.join("blobs");
        match digest.split_once(':') {
            Some((algorithm, hex)) => blobs.join(algorithm).join(hex),
            None => blobs.join(digest),
        }
    }

    /// `index.json`, read with descriptors of type `D`.
    pub fn read_index<D: DeserializeOwned>(&self) -> Result<Index<D>> {
        let path = self.index_path();
        let data = fs::read(&path).map_err(read_error(&path))?;
        if unwritten(&data) {
            // A new layout's, not synced when a crash came (see `write_new`).
            return Ok(Index::empty());
        }
        let index: Index<D> =
            serde_json::from_slice(&data).map_err(|source| LayoutError::Json {
                path: path.clone(),
                what: "image index",
                source,
            })?;
        if index.schema_version != 2 {
            return Err(LayoutError::IndexVersion {
                path,
                found: index.schema_version,
            });
        }
        Ok(index)
    }

    /// Reads `index.json`, lets `change` change it and writes it back,
    /// all under the index lock: no concurrent change is lost, and readers
    /// see the old file or the new one.
    pub fn update_index<D, T>(&self, change: impl FnOnce(&mut Index<D>) -> T) -> Result<T>
    where
        D: Serialize + DeserializeOwned,
    {
        let _lock = lock_exclusive(&self.dir.join("index.json.lock"))?;
        let mut index = self.read_index()?;
        let out = change(&mut index);
        self.write_index(&index)?;
        Ok(out)
    }

    /// Stores `data` as a sha256 blob and returns its digest. A blob
    /// already present with that size is kept.
    pub fn put_blob(&self, data: &[u8]) -> Result<String> {
        let digest = sha256_digest(data);
        let path = self.blob_path(&digest);
        if !fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == data.len() as u64) {
            write_atomic(&path, data)?;
        }
        Ok(digest)
    }

    /// Stores the file `src` as the blob `digest` of `size` bytes, unless
    /// a blob of that size is present: cloned (a reflink, see
    /// [`crate::reflink`]) when the file system can (the
    /// clone is then hashed), else copied (hashed as it is copied); never
    /// hard-linked, so that editing `src` later cannot change the blob.
    /// The blob appears only if `src` matched
    /// both; a `src` that does not is a [`LayoutError::SourceDigest`] or
    /// [`LayoutError::SourceSize`], and nothing is left behind.
    pub fn put_blob_file(&self, src: &Path, digest: &str, size: u64) -> Result<()> {
        let algorithm = Algorithm::of(digest)?;
        let dst = self.blob_path(digest);
        if fs::metadata(&dst).is_ok_and(|m| m.is_file() && m.len() == size) {
            return Ok(());
        }
        let dir = dst.parent().unwrap_or(&self.dir);
        create_dir(dir)?;
        let check = |actual: &str, actual_size: u64| {
            if actual_size != size {
                Err(LayoutError::SourceSize {
                    path: src.to_owned(),
                    expected: size,
                    actual: actual_size,
                })
            } else if actual != digest {
                Err(LayoutError::SourceDigest {
                    path: src.to_owned(),
                    expected: digest.to_owned(),
                    actual: actual.to_owned(),
                })
            } else {
                Ok(())
            }
        };
        let mut tmp = temp_file(&dst)?;
        if let Ok(from) = File::open(src)
            && crate::reflink::clone_into(&from, tmp.as_file())
        {
            // Shared blocks, not a shared inode: hash what was cloned.
            let (actual, actual_size) = copy_hashed(tmp.path(), algorithm, &mut io::sink(), &dst)?;
            check(&actual, actual_size)?;
            return persist(tmp, &dst);
        }
        let (actual, actual_size) = copy_hashed(src, algorithm, tmp.as_file_mut(), &dst)?;
        check(&actual, actual_size)?;
        persist(tmp, &dst)
    }

    /// Opens the blob `digest` for reading, without checking it; a blob
    /// that is not there is [`LayoutError::BlobNotFound`].
    pub fn open_blob(&self, digest: &str) -> Result<File> {
        Algorithm::of(digest)?;
        let path = self.blob_path(digest);
        File::open(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                LayoutError::BlobNotFound {
                    digest: digest.to_owned(),
                    dir: self.dir.clone(),
                }
            } else {
                LayoutError::Read { path, source }
            }
        })
    }

    /// The whole blob `digest` (meant for manifests and configs, not
    /// layers), checked against its digest and, when given, its `size`
    /// (reading no more than one byte past it). A blob of another size is
    /// [`LayoutError::BlobSize`]; one of another content is removed and
    /// reported as [`LayoutError::Corrupt`].
    pub fn read_blob(&self, digest: &str, size: Option<u64>) -> Result<Vec<u8>> {
        let algorithm = Algorithm::of(digest)?;
        let path = self.blob_path(digest);
        let file = self.open_blob(digest)?;
        let mut data = Vec::new();
        match size {
            Some(size) => (&file).take(size.saturating_add(1)).read_to_end(&mut data),
            None => (&file).read_to_end(&mut data),
        }
        .map_err(read_error(&path))?;
        if let Some(size) = size
            && data.len() as u64 != size
        {
            return Err(LayoutError::BlobSize {
                path,
                expected: size,
                actual: data.len() as u64,
            });
        }
        let mut hasher = algorithm.hasher();
        hasher.update(&data);
        self.check_or_remove(digest, &file, &hasher.finish())?;
        Ok(data)
    }

    /// Hashes the blob `digest` and returns its size; one found corrupt is
    /// removed and reported as [`LayoutError::Corrupt`].
    pub fn verify_blob(&self, digest: &str) -> Result<u64> {
        let algorithm = Algorithm::of(digest)?;
        let path = self.blob_path(digest);
        let file = self.open_blob(digest)?;
        let mut hasher = algorithm.hasher();
        let size = stream(&file, &path, |chunk| {
            hasher.update(chunk);
            Ok(())
        })?;
        self.check_or_remove(digest, &file, &hasher.finish())?;
        Ok(size)
    }

    /// Compares a blob's computed digest with its name; on mismatch
    /// removes the file, unless another writer already replaced it.
    fn check_or_remove(&self, digest: &str, file: &File, actual: &str) -> Result<()> {
        if actual == digest {
            return Ok(());
        }
        let path = self.blob_path(digest);
        let ours = file.metadata().map_err(read_error(&path))?;
        if let Ok(current) = fs::symlink_metadata(&path)
            && current.dev() == ours.dev()
            && current.ino() == ours.ino()
        {
            fs::remove_file(&path).map_err(write_error(&path))?;
        }
        Err(LayoutError::Corrupt {
            digest: digest.to_owned(),
            path,
            actual: actual.to_owned(),
        })
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    fn check_version(&self) -> Result<()> {
        #[derive(Deserialize)]
        struct LayoutFile {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let path = self.dir.join("oci-layout");
        match fs::read(&path) {
            // A new layout's, not synced when a crash came (see `write_new`).
            Ok(data) if unwritten(&data) => write_new(&path, OCI_LAYOUT.as_bytes()),
            Ok(data) => {
                let layout: LayoutFile =
                    serde_json::from_slice(&data).map_err(|source| LayoutError::Json {
                        path: path.clone(),
                        what: "layout file",
                        source,
                    })?;
                if layout.version == "1.0.0" {
                    Ok(())
                } else {
                    Err(LayoutError::LayoutVersion {
                        path,
                        version: layout.version,
                    })
                }
            }
            // Racing writers write the same bytes.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                write_new(&path, OCI_LAYOUT.as_bytes())
            }
            Err(source) => Err(LayoutError::Read { path, source }),
        }
    }

    /// Writes `index.json` through a temporary file and a rename, every
    /// object's keys sorted so that one index always gives the same bytes;
    /// the caller holds the lock, or is creating the file.
    fn write_index<D: Serialize>(&self, index: &Index<D>) -> Result<()> {
        let path = self.index_path();
        write_atomic(&path, &index_json(&path, index)?)
    }
}

/// `index` as `index.json` (at `path`, for errors) holds it.
fn index_json<D: Serialize>(path: &Path, index: &Index<D>) -> Result<Vec<u8>> {
    let json_err = |source| LayoutError::Json {
        path: path.to_owned(),
        what: "image index",
        source,
    };
    let value = serde_json::to_value(index).map_err(json_err)?;
    let mut data = serde_json::to_vec_pretty(&value).map_err(json_err)?;
    data.push(b'\n');
    Ok(data)
}

/// Whether a layout file holds nothing written: empty, or zeros. What a
/// file [`write_new`] made can hold after a crash (its rename reached the
/// disk, its data did not); never a file [`write_atomic`] wrote.
fn unwritten(data: &[u8]) -> bool {
    data.iter().all(|&byte| byte == 0)
}

/// [`write_atomic`] without the `fdatasync`, for the files of a new
/// layout (`oci-layout`, the empty `index.json`): they name nothing, and
/// a crash that loses their data leaves them empty (or zeros), which the
/// readers take for what they held ([`unwritten`]); syncing them cost a
/// fresh store, as every CI job that starts with none makes, a journal
/// commit before its first request (3 ms on a journaled ext4). Everything
/// written later that names blobs is synced.
fn write_new(path: &Path, data: &[u8]) -> Result<()> {
    let mut tmp = temp_file(path)?;
    tmp.write_all(data).map_err(write_error(path))?;
    put_in_place(tmp, path)
}

/// `sha256:<hex>` of `data`: the digest a blob of it is stored under.
#[must_use]
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Holds an exclusive `flock` on the file `path` (created if missing)
/// until the returned file is dropped. `flock` locks belong to the open
/// file description, so two threads of one process exclude each other as
/// two processes do.
pub fn lock_exclusive(path: &Path) -> Result<File> {
    let lock_err = |source| LayoutError::Lock {
        path: path.to_owned(),
        source,
    };
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(lock_err)?;
    rustix::fs::flock(&file, FlockOperation::LockExclusive).map_err(|e| lock_err(e.into()))?;
    Ok(file)
}

/// Writes `path` through a temporary file beside it and a rename, so a
/// reader sees the old content or the new, never part of it.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let mut tmp = temp_file(path)?;
    tmp.write_all(data).map_err(write_error(path))?;
    persist(tmp, path)
}

/// Sets the file `path`'s access time to now (its modification time
/// stays): how a store records an item's last use, whatever the file
/// system's `atime` options. Failures are ignored: it is bookkeeping.
pub fn mark_accessed(path: &Path) {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, UTIME_NOW, UTIME_OMIT, utimensat};
    let now = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_NOW,
        },
        last_modification: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
    };
    let _ = utimensat(CWD, path, &now, AtFlags::SYMLINK_NOFOLLOW);
}

/// Syncs a written temporary file, makes it world-readable (a layout may
/// be shared) and renames it to `path`.
pub fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    tmp.as_file().sync_data().map_err(write_error(path))?;
    put_in_place(tmp, path)
}

/// Makes a written temporary file world-readable and renames it to `path`
/// ([`persist`] without the sync).
fn put_in_place(tmp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(write_error(path))?;
    tmp.persist(path).map_err(|e| write_error(path)(e.error))?;
    Ok(())
}

/// A temporary file in `path`'s directory, named after it
/// (`.<name>.<random>`), locked as [`locked_temp_file`] says: a writer
/// killed while writing it leaves it for [`OciLayout::remove_dead_temp_files`].
fn temp_file(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    locked_temp_file(dir, &format!(".{name}.")).map_err(write_error(path))
}

/// A new temporary file `<prefix><random>` in `dir`, holding an exclusive
/// `flock` for as long as it is open (renamed into place too): a cleaner
/// removes only temporary files whose lock is free, so only those of a
/// writer that died. A cleaner can take the lock between the file's
/// creation and ours and remove it: then another is made.
///
/// # Errors
/// The creation's or the lock's.
pub fn locked_temp_file(dir: &Path, prefix: &str) -> io::Result<tempfile::NamedTempFile> {
    loop {
        let file = tempfile::Builder::new().prefix(prefix).tempfile_in(dir)?;
        // Blocking: a cleaner holding it is about to remove it.
        rustix::fs::flock(file.as_file(), FlockOperation::LockExclusive)?;
        let (ours, named) = (file.as_file().metadata(), fs::symlink_metadata(file.path()));
        if let (Ok(ours), Ok(named)) = (ours, named)
            && (ours.dev(), ours.ino()) == (named.dev(), named.ino())
        {
            return Ok(file);
        }
    }
}

/// Removes the regular files in `dir` named `prefix*` whose `flock` is
/// free: temporary files of [`locked_temp_file`] whose writer died (a
/// live writer holds the lock until it renames or removes its file).
/// Returns the paths removed; what cannot be read or removed is left (it
/// is upkeep).
#[must_use = "the paths removed are for the caller's log"]
pub fn remove_dead_temp_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(prefix.as_bytes())
            || !entry.file_type().is_ok_and(|t| t.is_file())
        {
            continue;
        }
        let path = entry.path();
        // Held until the file is removed.
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok()
            && fs::remove_file(&path).is_ok()
        {
            removed.push(path);
        }
    }
    removed
}

/// Streams the file `src` into `dst` (the file at `dst_path`), returning
/// the digest and size of what passed.
fn copy_hashed(
    src: &Path,
    algorithm: Algorithm,
    dst: &mut dyn Write,
    dst_path: &Path,
) -> Result<(String, u64)> {
    let file = File::open(src).map_err(read_error(src))?;
    let mut hasher = algorithm.hasher();
    let size = stream(&file, src, |chunk| {
        hasher.update(chunk);
        dst.write_all(chunk).map_err(write_error(dst_path))
    })?;
    Ok((hasher.finish(), size))
}

/// Reads `file` (at `path`) to its end in large chunks, handing each to
/// `each`; returns the bytes read.
fn stream(mut file: &File, path: &Path, mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<u64> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(size),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(path)(e)),
        };
        each(&buf[..n])?;
        size += n as u64;
    }
}

/// The digest algorithms a layout's blobs may be named by.
#[derive(Debug, Clone, Copy)]
enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    /// The algorithm of `digest`, which must be `<alg>:<hex>` with the
    /// algorithm's length of lower-case hex digits (so that it is also a
    /// safe file name).
    fn of(digest: &str) -> Result<Algorithm> {
        let bad = || LayoutError::Digest {
            digest: digest.to_owned(),
        };
        let (name, hex) = digest.split_once(':').ok_or_else(bad)?;
        let (algorithm, len) = match name {
            "sha256" => (Algorithm::Sha256, 64),
            "sha384" => (Algorithm::Sha384, 96),
            "sha512" => (Algorithm::Sha512, 128),
            _ => return Err(bad()),
        };
        if hex.len() == len && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(algorithm)
        } else {
            Err(bad())
        }
    }

    fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha384 => Hasher::Sha384(Sha384::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }
}

enum Hasher {
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Hasher {
    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest, `<alg>:<hex>`.
    fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha384(h) => format!("sha384:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use serde_json::json;

    use super::*;

    fn layout() -> (tempfile::TempDir, OciLayout) {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OciLayout::open(&tmp.path().join("layout")).unwrap();
        (tmp, layout)
    }

    fn sha512(data: &[u8]) -> String {
        format!("sha512:{}", hex::encode(Sha512::digest(data)))
    }

    /// Files left in a blob directory that are not blobs: temporary files
    /// and links.
    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .filter(|name| name.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn digests_are_checked_before_they_become_paths() {
        let (tmp, layout) = layout();
        let src = tmp.path().join("src");
        fs::write(&src, b"x").unwrap();
        for bad in [
            "sha256:../../../../etc/passwd",
            "sha256:ABCDEF",
            "md5:0123456789abcdef0123456789abcdef",
            &format!("sha256:{}", "a".repeat(63)),
            "sha256",
        ] {
            let err = layout.read_blob(bad, None).unwrap_err();
            assert!(matches!(err, LayoutError::Digest { .. }), "{bad}: {err}");
            let err = layout.put_blob_file(&src, bad, 1).unwrap_err();
            assert!(matches!(err, LayoutError::Digest { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn put_blob_file_checks_what_it_clones_or_copies() {
        let (tmp, layout) = layout();
        let src = tmp.path().join("src");
        fs::write(&src, b"some content").unwrap();
        let digest = sha512(b"some content");
        {
            let wrong = sha512(b"other content");
            let err = layout.put_blob_file(&src, &wrong, 12).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("{} hashes to {digest}, expected {wrong}", src.display())
            );
            let err = layout.put_blob_file(&src, &digest, 13).unwrap_err();
            assert!(
                matches!(err, LayoutError::SourceSize { actual: 12, .. }),
                "{err}"
            );
            assert!(!layout.blob_path(&wrong).exists());
            assert!(!layout.blob_path(&digest).exists());
            assert!(leftovers(&tmp.path().join("layout/blobs/sha512")).is_empty());
        }
        layout.put_blob_file(&src, &digest, 12).unwrap();
        assert_eq!(
            layout.read_blob(&digest, Some(12)).unwrap(),
            b"some content"
        );
        assert_eq!(layout.verify_blob(&digest).unwrap(), 12);
        // The blob is its own file: editing the source in place (same
        // size, as an editor writing through a hard link would) leaves it.
        let (a, b) = (
            fs::metadata(&src).unwrap(),
            fs::metadata(layout.blob_path(&digest)).unwrap(),
        );
        assert_ne!((a.dev(), a.ino()), (b.dev(), b.ino()));
        fs::OpenOptions::new()
            .write(true)
            .open(&src)
            .unwrap()
            .write_all(b"SOME CONTENT")
            .unwrap();
        assert_eq!(layout.verify_blob(&digest).unwrap(), 12);
    }

    #[test]
    fn read_blob_removes_a_corrupt_blob_but_not_one_of_another_size() {
        let (_tmp, layout) = layout();
        let digest = layout.put_blob(b"content").unwrap();
        let path = layout.blob_path(&digest);
        // Another size: the descriptor may be what is wrong.
        let err = layout.read_blob(&digest, Some(6)).unwrap_err();
        assert!(
            matches!(err, LayoutError::BlobSize { actual: 7, .. }),
            "{err}"
        );
        assert!(path.exists());
        // Another content of the same size: the blob is corrupt.
        fs::write(&path, b"CONTENT").unwrap();
        let err = layout.read_blob(&digest, Some(7)).unwrap_err();
        assert!(matches!(err, LayoutError::Corrupt { .. }), "{err}");
        assert!(!path.exists());
        let err = layout.read_blob(&digest, None).unwrap_err();
        assert!(matches!(err, LayoutError::BlobNotFound { .. }), "{err}");
        // Putting it again repairs it.
        assert_eq!(layout.put_blob(b"content").unwrap(), digest);
        assert_eq!(layout.read_blob(&digest, None).unwrap(), b"content");
    }

    /// Threads updating one index through their own handles lose no
    /// update, and what this module does not know is kept.
    #[test]
    fn update_index_loses_no_update_and_keeps_unknown_fields() {
        let (tmp, layout) = layout();
        let dir = tmp.path().join("layout");
        fs::write(
            dir.join("index.json"),
            r#"{"schemaVersion":2,"annotations":{"kept":"yes"},"manifests":[{"x":1}]}"#,
        )
        .unwrap();
        thread::scope(|s| {
            for t in 0..4 {
                let dir = &dir;
                s.spawn(move || {
                    let layout = OciLayout::open(dir).unwrap();
                    for i in 0..10 {
                        layout
                            .update_index(|index: &mut Index<Value>| {
                                index.manifests.push(json!({"t": t, "i": i}));
                            })
                            .unwrap();
                    }
                });
            }
        });
        let index: Index<Value> = layout.read_index().unwrap();
        assert_eq!(index.manifests.len(), 1 + 4 * 10);
        assert_eq!(index.manifests[0], json!({"x": 1}));
        assert_eq!(index.other["annotations"], json!({"kept": "yes"}));
        assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    }

    /// A new layout's files are not synced: a crash can leave them empty
    /// or zeros, which open as the empty layout they were, and the next
    /// change writes them whole. A file with anything else in it is not
    /// taken for one of those.
    #[test]
    fn a_new_layout_left_unwritten_by_a_crash_opens_empty() {
        let (tmp, _) = layout();
        let dir = tmp.path().join("layout");
        for unwritten in [&b""[..], &[0u8; 64][..]] {
            fs::write(dir.join("index.json"), unwritten).unwrap();
            fs::write(dir.join("oci-layout"), unwritten).unwrap();
            let layout = OciLayout::open(&dir).unwrap();
            let index: Index<Value> = layout.read_index().unwrap();
            assert!(index.manifests.is_empty());
            assert_eq!(
                fs::read_to_string(dir.join("oci-layout")).unwrap(),
                OCI_LAYOUT
            );
            layout
                .update_index(|index: &mut Index<Value>| index.manifests.push(json!({"x": 1})))
                .unwrap();
            let reopened = OciLayout::open(&dir).unwrap();
            let index: Index<Value> = reopened.read_index().unwrap();
            assert_eq!(index.manifests, vec![json!({"x": 1})]);
        }
        fs::write(dir.join("index.json"), b"\0\0{").unwrap();
        assert!(matches!(
            OciLayout::open(&dir),
            Err(LayoutError::Json { .. })
        ));
    }

    #[test]
    fn only_temporary_files_of_dead_writers_are_removed() {
        let (tmp, layout) = layout();
        let dir = tmp.path().join("layout");
        let blobs = dir.join("blobs/sha256");
        let digest = layout.put_blob(b"kept").unwrap();
        let hex = digest.trim_start_matches("sha256:");
        // A writer that died: its file is there, its lock free.
        let dead_blob = blobs.join(format!(".{hex}.dead01"));
        fs::write(&dead_blob, b"part").unwrap();
        let dead_index = dir.join(".index.json.dead02");
        fs::write(&dead_index, b"{").unwrap();
        // A writer still writing holds its lock.
        let live = locked_temp_file(&blobs, &format!(".{hex}.")).unwrap();
        let mut removed = layout.remove_dead_temp_files();
        removed.sort();
        assert_eq!(removed, [dead_index.clone(), dead_blob.clone()]);
        assert!(live.path().exists());
        assert!(!dead_blob.exists() && !dead_index.exists());
        assert!(blobs.join(hex).exists());
        assert!(dir.join("index.json").exists());
        drop(live);
        assert!(leftovers(&blobs).is_empty(), "{:?}", leftovers(&blobs));
    }
}
