//! An OCI image layout as a cache store (`--cache-repo oci:PATH`): the
//! `oci-layout` file, `index.json` and `blobs/sha256/`, as the OCI
//! image-spec lays them out.
//!
//! An entry is an OCI manifest ([`Entry::manifest`]) listed in `index.json`
//! under the ref name (`org.opencontainers.image.ref.name`) [`Key::tag`];
//! its config blob is the entry JSON, its layers the step's layer. Blobs
//! are written to a temporary file in their own directory and renamed into
//! place; `index.json` is rewritten the same way, and only under an
//! exclusive `flock` on `index.json.lock`, so several builds, threads or
//! processes, can share one layout: writers racing on a key write the same
//! content and one descriptor stays. A lookup never fails: whatever it
//! cannot use is [`Lookup::Invalid`]. This module never deletes a blob (a
//! replaced manifest stays, unreferenced), and knows nothing of registries.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::entry::{
    BlobRef, ENTRY_MEDIA_TYPE, Entry, EntryError, EntryLayer, Lookup, OCI_MANIFEST, check,
    error_chain, parse_manifest,
};
use crate::key::{Key, check_digest};

/// Content of the `oci-layout` file.
const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
const COPY_BUFFER: usize = 1 << 20;

/// A store that cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
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
        "{path} has image layout version {version:?}, expected \"1.0.0\"\nhint: give the cache a directory of its own"
    )]
    LayoutVersion { path: PathBuf, version: String },
    #[error("{path} has schemaVersion {found}, expected 2")]
    IndexVersion { path: PathBuf, found: u64 },
    #[error("cannot write the cache entry for {key}")]
    Entry {
        key: Key,
        #[source]
        source: EntryError,
    },
    #[error("the cache entry for {key} has a layer, but no layer file was given")]
    NoLayerFile { key: Key },
    #[error("the cache entry for {key} has no layer, but the layer file {path} was given")]
    NoLayer { key: Key, path: PathBuf },
    #[error("layer file {path} hashes to {actual}, the cache entry says {expected}")]
    LayerDigest {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("layer file {path} has {actual} bytes, the cache entry says {expected}")]
    LayerSize {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An OCI image layout holding cache entries (`--cache-repo oci:PATH`).
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

/// `index.json`: what this module reads and changes, the rest kept as is.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

/// A descriptor of `index.json`, its unknown fields kept as they are.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

impl Descriptor {
    fn ref_name(&self) -> Option<&str> {
        self.annotations
            .get(ANNOTATION_REF_NAME)
            .map(String::as_str)
    }
}

impl Layout {
    /// Opens the layout at `dir`, creating the directory, `oci-layout`,
    /// `index.json` and `blobs/sha256/` where missing; an existing
    /// `oci-layout` must say version 1.0.0 and an existing `index.json`
    /// must be an image index.
    pub fn open(dir: &Path) -> Result<Layout> {
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(|source| StoreError::Create {
            path: blobs.clone(),
            source,
        })?;
        let layout = Layout {
            dir: dir.to_owned(),
        };
        layout.check_version()?;
        let index = layout.index_path();
        if index.exists() {
            layout.read_index()?;
        } else {
            // Under the lock: another process may be creating it and
            // putting an entry in it right now.
            let _lock = layout.lock_index()?;
            if !index.exists() {
                layout.write_index(&Index {
                    schema_version: 2,
                    media_type: Some(OCI_INDEX.to_owned()),
                    manifests: Vec::new(),
                    other: Map::new(),
                })?;
            }
        }
        Ok(layout)
    }

    /// Looks `key` up: [`Lookup::Miss`] when `index.json` has no manifest
    /// of that ref name, [`Lookup::Invalid`] when the manifest, the entry
    /// or a layer blob is missing or does not match its descriptor (layer
    /// blobs by size only), else what [`check`] says.
    #[must_use]
    pub fn get(&self, key: &Key, now: i64, ttl: Duration) -> Lookup {
        self.lookup(key, now, ttl).unwrap_or_else(Lookup::Invalid)
    }

    /// Where the blob `digest` (`<alg>:<hex>`) is, or would be:
    /// `blobs/<alg>/<hex>`. The digest is not checked: give one that was.
    #[must_use]
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let blobs = self.dir.join("blobs");
        match digest.split_once(':') {
            Some((algorithm, hex)) => blobs.join(algorithm).join(hex),
            None => blobs.join(digest),
        }
    }

    /// Files `entry`: writes the layer blob (from `layer_blob`, which the
    /// entry must have a layer for: hard-linked when on the same file
    /// system, else copied; verified against the entry's layer either
    /// way), the entry JSON, the manifest, then `index.json`, replacing the
    /// ref name's old descriptor. A blob already present is kept.
    pub fn put(&self, entry: &Entry, layer_blob: Option<&Path>) -> Result<()> {
        self.put_with(entry, layer_blob, true)
    }

    fn put_with(&self, entry: &Entry, layer_blob: Option<&Path>, allow_link: bool) -> Result<()> {
        let key = entry.key;
        let entry_json = entry.to_json();
        // What is written must read back (digests, config).
        Entry::from_json(&entry_json).map_err(|source| StoreError::Entry { key, source })?;
        match (&entry.layer, layer_blob) {
            (Some(layer), Some(path)) => self.put_layer(layer, path, allow_link)?,
            (None, None) => {}
            (Some(_), None) => return Err(StoreError::NoLayerFile { key }),
            (None, Some(path)) => {
                return Err(StoreError::NoLayer {
                    key,
                    path: path.to_owned(),
                });
            }
        }
        let entry_blob = BlobRef {
            media_type: ENTRY_MEDIA_TYPE.to_owned(),
            digest: sha256_digest(&entry_json),
            size: entry_json.len() as u64,
        };
        self.put_blob(&entry_blob.digest, &entry_json)?;
        let manifest = entry.manifest(&entry_blob);
        let manifest_digest = sha256_digest(&manifest);
        self.put_blob(&manifest_digest, &manifest)?;

        let tag = key.tag();
        let _lock = self.lock_index()?;
        let mut index = self.read_index()?;
        index.manifests.retain(|d| d.ref_name() != Some(&tag));
        index.manifests.push(Descriptor {
            media_type: OCI_MANIFEST.to_owned(),
            digest: manifest_digest,
            size: manifest.len() as u64,
            artifact_type: Some(ENTRY_MEDIA_TYPE.to_owned()),
            annotations: BTreeMap::from([(ANNOTATION_REF_NAME.to_owned(), tag)]),
            other: Map::new(),
        });
        self.write_index(&index)
    }

    fn lookup(&self, key: &Key, now: i64, ttl: Duration) -> Result<Lookup, String> {
        let index = self.read_index().map_err(|e| error_chain(&e))?;
        let tag = key.tag();
        let Some(descriptor) = index.manifests.iter().find(|d| d.ref_name() == Some(&tag)) else {
            return Ok(Lookup::Miss);
        };
        if descriptor.media_type != OCI_MANIFEST {
            return Err(format!(
                "{} lists {tag} with media type {:?}, expected {OCI_MANIFEST}",
                self.index_path().display(),
                descriptor.media_type
            ));
        }
        let manifest = self.read_blob("manifest", &descriptor.digest, descriptor.size)?;
        let (entry_blob, layers) = parse_manifest(&manifest).map_err(|e| {
            format!(
                "manifest {} in {}: {}",
                descriptor.digest,
                self.dir.display(),
                error_chain(&e)
            )
        })?;
        let entry_json = self.read_blob("entry", &entry_blob.digest, entry_blob.size)?;
        let entry = match check(&entry_json, key, now, ttl) {
            Lookup::Hit(entry) => entry,
            Lookup::Invalid(reason) => {
                let path = self.blob_path(&entry_blob.digest);
                return Err(format!("entry blob {}: {reason}", path.display()));
            }
            other => return Ok(other),
        };
        let expected: Vec<BlobRef> = entry.layer.iter().map(BlobRef::from).collect();
        if layers != expected {
            return Err(format!(
                "manifest {} in {} lists other layers than its entry",
                descriptor.digest,
                self.dir.display()
            ));
        }
        for layer in &layers {
            let path = self.blob_path(&layer.digest);
            match fs::metadata(&path) {
                Ok(meta) if meta.is_file() && meta.len() == layer.size => {}
                Ok(meta) => {
                    return Err(format!(
                        "layer blob {} has {} bytes, expected {}",
                        path.display(),
                        meta.len(),
                        layer.size
                    ));
                }
                Err(err) => {
                    return Err(format!("cannot read layer blob {}: {err}", path.display()));
                }
            }
        }
        Ok(Lookup::Hit(entry))
    }

    /// The blob `digest` of `size` bytes, checked; `what` names it in the
    /// error.
    fn read_blob(&self, what: &str, digest: &str, size: u64) -> Result<Vec<u8>, String> {
        check_digest(digest).map_err(|e| format!("{what} blob: {e}"))?;
        let path = self.blob_path(digest);
        let mut data = Vec::new();
        File::open(&path)
            .and_then(|file| file.take(size.saturating_add(1)).read_to_end(&mut data))
            .map_err(|e| format!("cannot read {what} blob {}: {e}", path.display()))?;
        if data.len() as u64 != size {
            return Err(format!(
                "{what} blob {} is not {size} bytes long",
                path.display()
            ));
        }
        let actual = sha256_digest(&data);
        if actual != digest {
            return Err(format!("{what} blob {} hashes to {actual}", path.display()));
        }
        Ok(data)
    }

    /// Writes the blob `digest` holding `data`, unless it is present.
    fn put_blob(&self, digest: &str, data: &[u8]) -> Result<()> {
        let path = self.blob_path(digest);
        if fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == data.len() as u64) {
            return Ok(());
        }
        write_atomic(&path, data)
    }

    /// Writes the layer blob from the file `src`, unless it is present.
    fn put_layer(&self, layer: &EntryLayer, src: &Path, allow_link: bool) -> Result<()> {
        let dst = self.blob_path(&layer.digest);
        if fs::metadata(&dst).is_ok_and(|m| m.is_file() && m.len() == layer.size) {
            return Ok(());
        }
        let dir = dst.parent().unwrap_or(&self.dir);
        if allow_link {
            // A unique temporary name: threads of one process link too.
            static LINKS: AtomicU64 = AtomicU64::new(0);
            let tmp = dir.join(format!(
                ".{}.link-{}-{}",
                layer.digest.trim_start_matches("sha256:"),
                std::process::id(),
                LINKS.fetch_add(1, Ordering::Relaxed)
            ));
            if fs::hard_link(src, &tmp).is_ok() {
                let result = verify_layer(&tmp, src, layer).and_then(|()| {
                    fs::rename(&tmp, &dst).map_err(|source| StoreError::Write {
                        path: dst.clone(),
                        source,
                    })
                });
                if result.is_err() {
                    let _ = fs::remove_file(&tmp);
                }
                return result;
            }
            // Another file system, or not allowed to link: copy it.
        }
        let mut tmp = temp_file(&dst)?;
        let (digest, size) = copy_hashed(src, tmp.as_file_mut(), &dst)?;
        check_layer(src, layer, &digest, size)?;
        finish(tmp, &dst)
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    fn check_version(&self) -> Result<()> {
        #[derive(Deserialize)]
        struct OciLayout {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let path = self.dir.join("oci-layout");
        match fs::read(&path) {
            Ok(data) => {
                let layout: OciLayout =
                    serde_json::from_slice(&data).map_err(|source| StoreError::Json {
                        path: path.clone(),
                        what: "layout file",
                        source,
                    })?;
                if layout.version == "1.0.0" {
                    Ok(())
                } else {
                    Err(StoreError::LayoutVersion {
                        path,
                        version: layout.version,
                    })
                }
            }
            // Racing writers write the same bytes.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                write_atomic(&path, OCI_LAYOUT.as_bytes())
            }
            Err(source) => Err(StoreError::Read { path, source }),
        }
    }

    fn read_index(&self) -> Result<Index> {
        let path = self.index_path();
        let data = fs::read(&path).map_err(|source| StoreError::Read {
            path: path.clone(),
            source,
        })?;
        let index: Index = serde_json::from_slice(&data).map_err(|source| StoreError::Json {
            path: path.clone(),
            what: "image index",
            source,
        })?;
        if index.schema_version != 2 {
            return Err(StoreError::IndexVersion {
                path,
                found: index.schema_version,
            });
        }
        Ok(index)
    }

    /// Writes `index.json` through a temporary file and a rename; the
    /// caller holds the lock, or is creating the file.
    fn write_index(&self, index: &Index) -> Result<()> {
        let path = self.index_path();
        let mut data = serde_json::to_vec_pretty(index).map_err(|source| StoreError::Json {
            path: path.clone(),
            what: "image index",
            source,
        })?;
        data.push(b'\n');
        write_atomic(&path, &data)
    }

    /// Holds an exclusive `flock` on `index.json.lock` until dropped.
    /// `flock` locks belong to the open file description, so two threads of
    /// one process exclude each other as two processes do.
    fn lock_index(&self) -> Result<File> {
        let path = self.dir.join("index.json.lock");
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
}

/// Checks the layer file at `path` (a link to `src`) against `layer`.
fn verify_layer(path: &Path, src: &Path, layer: &EntryLayer) -> Result<()> {
    let (digest, size) = copy_hashed(path, &mut io::sink(), path)?;
    check_layer(src, layer, &digest, size)
}

fn check_layer(src: &Path, layer: &EntryLayer, digest: &str, size: u64) -> Result<()> {
    if size != layer.size {
        return Err(StoreError::LayerSize {
            path: src.to_owned(),
            expected: layer.size,
            actual: size,
        });
    }
    if digest != layer.digest {
        return Err(StoreError::LayerDigest {
            path: src.to_owned(),
            expected: layer.digest.clone(),
            actual: digest.to_owned(),
        });
    }
    Ok(())
}

/// Streams the file `src` into `dst` (the file at `dst_path`), returning
/// the sha256 digest and size of what passed.
fn copy_hashed(src: &Path, dst: &mut dyn Write, dst_path: &Path) -> Result<(String, u64)> {
    let read_err = |source| StoreError::Read {
        path: src.to_owned(),
        source,
    };
    let mut file = File::open(src).map_err(read_err)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])
            .map_err(|source| StoreError::Write {
                path: dst_path.to_owned(),
                source,
            })?;
        size += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

/// The digest of `bytes`, `sha256:<64 hex>`.
fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Writes `path` through a temporary file beside it and a rename, so a
/// reader sees the old content or the new, never part of it.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let mut tmp = temp_file(path)?;
    tmp.write_all(data).map_err(|source| StoreError::Write {
        path: path.to_owned(),
        source,
    })?;
    finish(tmp, path)
}

/// A temporary file in `path`'s directory, named after it.
fn temp_file(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)
        .map_err(|source| StoreError::Write {
            path: path.to_owned(),
            source,
        })
}

/// Syncs a written temporary file, makes it world-readable (a cache may be
/// shared) and renames it to `path`.
fn finish(tmp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    let write_err = |source| StoreError::Write {
        path: path.to_owned(),
        source,
    };
    let file = tmp.as_file();
    file.sync_data().map_err(write_err)?;
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;
    use std::thread;

    use oci_spec::image::{ImageIndex, ImageManifest, MediaType};
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_764_480_000;
    const TTL: Duration = Duration::from_secs(3600);
    /// Set when `racing_processes` runs `racing_threads` as its child: the
    /// layout to race in.
    const CHILD_LAYOUT: &str = "EXECUTOR_CACHE_TEST_RACE_LAYOUT";

    fn key(n: u8) -> Key {
        Key::from_bytes([n; 32])
    }

    /// A layer file holding `content` at `path`, and the entry layer
    /// describing it.
    fn layer_file(path: &Path, content: &[u8]) -> EntryLayer {
        fs::write(path, content).unwrap();
        EntryLayer {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            digest: sha256_digest(content),
            size: content.len() as u64,
            diff_id: sha256_digest(b"the uncompressed tar"),
        }
    }

    fn entry(key: Key, layer: Option<EntryLayer>) -> Entry {
        Entry {
            key,
            written: NOW,
            config: json!({"architecture": "amd64", "os": "linux"}),
            layer,
        }
    }

    fn invalid(lookup: Lookup) -> String {
        match lookup {
            Lookup::Invalid(reason) => reason,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    /// Checks that `dir` is an OCI image layout as the image-spec defines
    /// it, reading it with oci-spec's types: `oci-layout` version 1.0.0, an
    /// index of schema version 2 whose manifests, configs and layers are
    /// all present with their sizes and digests, and nothing in
    /// `blobs/sha256/` but blobs (no temporary file left). Returns the ref
    /// names, in index order.
    fn assert_valid_layout(dir: &Path) -> Vec<String> {
        let version: Value =
            serde_json::from_slice(&fs::read(dir.join("oci-layout")).unwrap()).unwrap();
        assert_eq!(version, json!({"imageLayoutVersion": "1.0.0"}));
        let index: ImageIndex =
            serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(index.schema_version(), 2);
        if let Some(media_type) = index.media_type() {
            assert_eq!(media_type, &MediaType::ImageIndex);
        }
        let blob = |d: &oci_spec::image::Descriptor| {
            let data = fs::read(dir.join("blobs/sha256").join(d.digest().digest())).unwrap();
            assert_eq!(data.len() as u64, d.size());
            assert_eq!(sha256_digest(&data), d.digest().to_string());
            data
        };
        let mut names = Vec::new();
        for descriptor in index.manifests() {
            assert_eq!(descriptor.media_type(), &MediaType::ImageManifest);
            let annotations = descriptor.annotations().as_ref().unwrap();
            names.push(annotations[ANNOTATION_REF_NAME].clone());
            let manifest: ImageManifest = serde_json::from_slice(&blob(descriptor)).unwrap();
            assert_eq!(manifest.schema_version(), 2);
            blob(manifest.config());
            for layer in manifest.layers() {
                blob(layer);
            }
        }
        for file in fs::read_dir(dir.join("blobs/sha256")).unwrap() {
            let name = file.unwrap().file_name().into_string().unwrap();
            assert!(Key::from_tag(&name).is_ok(), "{name} in blobs/sha256");
        }
        let mut top: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|f| f.unwrap().file_name().into_string().unwrap())
            .filter(|name| name != "index.json.lock")
            .collect();
        top.sort();
        assert_eq!(top, ["blobs", "index.json", "oci-layout"]);
        names
    }

    /// Files `entry_json` under `tag` as `put` would, whatever it holds,
    /// with a manifest listing `layer`; returns the entry blob's path.
    fn file_raw(
        layout: &Layout,
        tag: &str,
        entry_json: &[u8],
        layer: Option<EntryLayer>,
    ) -> PathBuf {
        let entry_blob = BlobRef {
            media_type: ENTRY_MEDIA_TYPE.into(),
            digest: sha256_digest(entry_json),
            size: entry_json.len() as u64,
        };
        layout.put_blob(&entry_blob.digest, entry_json).unwrap();
        let manifest = entry(key(0), layer).manifest(&entry_blob);
        let digest = sha256_digest(&manifest);
        layout.put_blob(&digest, &manifest).unwrap();
        let mut index = layout.read_index().unwrap();
        index.manifests.retain(|d| d.ref_name() != Some(tag));
        index.manifests.push(Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest,
            size: manifest.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::from([(ANNOTATION_REF_NAME.into(), tag.into())]),
            other: Map::new(),
        });
        layout.write_index(&index).unwrap();
        layout.blob_path(&entry_blob.digest)
    }

    /// The path of `key`'s manifest blob.
    fn manifest_path(layout: &Layout, key: &Key) -> PathBuf {
        let index = layout.read_index().unwrap();
        let tag = key.tag();
        let descriptor = index
            .manifests
            .iter()
            .find(|d| d.ref_name() == Some(&tag))
            .unwrap();
        layout.blob_path(&descriptor.digest)
    }

    #[test]
    fn open_creates_a_layout_and_checks_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        Layout::open(&dir).unwrap();
        assert!(assert_valid_layout(&dir).is_empty());
        assert_eq!(
            fs::read_to_string(dir.join("index.json")).unwrap(),
            "{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"application/vnd.oci.image.index.v1+json\",\n  \"manifests\": []\n}\n"
        );
        Layout::open(&dir).unwrap();

        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"2.0.0"}"#).unwrap();
        let err = Layout::open(&dir).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} has image layout version \"2.0.0\", expected \"1.0.0\"\nhint: give the cache a directory of its own",
                dir.join("oci-layout").display()
            )
        );
        fs::write(dir.join("oci-layout"), OCI_LAYOUT).unwrap();
        fs::write(dir.join("index.json"), "{").unwrap();
        let err = Layout::open(&dir).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot parse {} as an OCI image index",
                dir.join("index.json").display()
            )
        );
        fs::write(dir.join("index.json"), r#"{"schemaVersion":3}"#).unwrap();
        assert!(matches!(
            Layout::open(&dir),
            Err(StoreError::IndexVersion { found: 3, .. })
        ));
    }

    #[test]
    fn put_then_get() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layout");
        let layout = Layout::open(&dir).unwrap();
        let src = tmp.path().join("layer.tar.gz");
        let with_layer = entry(key(1), Some(layer_file(&src, b"a layer")));
        let without = entry(key(2), None);
        layout.put(&with_layer, Some(&src)).unwrap();
        layout.put(&without, None).unwrap();

        assert_eq!(
            layout.get(&key(1), NOW, TTL),
            Lookup::Hit(with_layer.clone())
        );
        assert_eq!(layout.get(&key(2), NOW, TTL), Lookup::Hit(without));
        assert_eq!(layout.get(&key(3), NOW, TTL), Lookup::Miss);
        assert_eq!(
            layout.get(&key(1), NOW + 3601, TTL),
            Lookup::Expired { written: NOW }
        );
        assert_eq!(assert_valid_layout(&dir), [key(1).tag(), key(2).tag()]);
        // The same file system: the layer is a hard link, not a copy.
        let blob = layout.blob_path(&with_layer.layer.as_ref().unwrap().digest);
        assert_eq!(
            fs::metadata(&blob).unwrap().ino(),
            fs::metadata(&src).unwrap().ino()
        );
        // Another handle on the same directory sees the entries.
        let again = Layout::open(&dir).unwrap();
        assert_eq!(again.get(&key(1), NOW, TTL), Lookup::Hit(with_layer));
    }

    #[test]
    fn put_copies_when_it_cannot_link() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layout");
        let layout = Layout::open(&dir).unwrap();
        let src = tmp.path().join("layer.tar.gz");
        let content = vec![7u8; 3 * COPY_BUFFER + 5];
        let entry = entry(key(1), Some(layer_file(&src, &content)));
        layout.put_with(&entry, Some(&src), false).unwrap();
        assert_eq!(layout.get(&key(1), NOW, TTL), Lookup::Hit(entry.clone()));
        let blob = layout.blob_path(&entry.layer.as_ref().unwrap().digest);
        assert_ne!(
            fs::metadata(&blob).unwrap().ino(),
            fs::metadata(&src).unwrap().ino()
        );
        assert_eq!(fs::read(&blob).unwrap(), content);
        assert_eq!(fs::metadata(&blob).unwrap().mode() & 0o777, 0o644);
        assert_valid_layout(&dir);
    }

    #[test]
    fn put_replaces_the_ref_name_and_keeps_the_rest_of_the_index() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layout");
        let layout = Layout::open(&dir).unwrap();
        // Another tool's image, with fields this module does not know.
        let other_manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
        let other_digest = sha256_digest(other_manifest);
        layout.put_blob(&other_digest, other_manifest).unwrap();
        layout.put_blob(&sha256_digest(b"{}"), b"{}").unwrap();
        let other = json!({
            "mediaType": OCI_MANIFEST,
            "digest": other_digest,
            "size": other_manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {ANNOTATION_REF_NAME: "app:1"},
        });
        fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "manifests": [other],
                "annotations": {"kept": "yes"},
            }))
            .unwrap(),
        )
        .unwrap();

        layout.put(&entry(key(1), None), None).unwrap();
        let newer = Entry {
            written: NOW + 10,
            ..entry(key(1), None)
        };
        layout.put(&newer, None).unwrap();
        assert_eq!(layout.get(&key(1), NOW + 10, TTL), Lookup::Hit(newer));
        assert_eq!(
            assert_valid_layout(&dir),
            ["app:1".to_owned(), key(1).tag()]
        );
        let index: Value =
            serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0], other);
        assert_eq!(index["annotations"], json!({"kept": "yes"}));
        assert_eq!(
            index["manifests"][1]["artifactType"],
            json!(ENTRY_MEDIA_TYPE)
        );
    }

    #[test]
    fn put_keeps_a_blob_already_present() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::open(&tmp.path().join("layout")).unwrap();
        let src = tmp.path().join("layer.tar.gz");
        let layer = layer_file(&src, b"a layer");
        layout
            .put(&entry(key(1), Some(layer.clone())), Some(&src))
            .unwrap();
        // Present: the file given is not even read.
        let gone = tmp.path().join("gone.tar.gz");
        layout
            .put(&entry(key(2), Some(layer.clone())), Some(&gone))
            .unwrap();
        assert_eq!(
            layout.get(&key(2), NOW, TTL),
            Lookup::Hit(entry(key(2), Some(layer)))
        );
    }

    #[test]
    fn put_refuses_a_layer_that_does_not_match() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layout");
        let layout = Layout::open(&dir).unwrap();
        let src = tmp.path().join("layer.tar.gz");
        let layer = layer_file(&src, b"a layer");

        for allow_link in [true, false] {
            fs::write(&src, b"b layer").unwrap();
            let err = layout
                .put_with(&entry(key(1), Some(layer.clone())), Some(&src), allow_link)
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "layer file {} hashes to {}, the cache entry says {}",
                    src.display(),
                    sha256_digest(b"b layer"),
                    layer.digest
                )
            );
            fs::write(&src, b"a longer layer").unwrap();
            let err = layout
                .put_with(&entry(key(1), Some(layer.clone())), Some(&src), allow_link)
                .unwrap_err();
            assert!(matches!(
                err,
                StoreError::LayerSize {
                    expected: 7,
                    actual: 14,
                    ..
                }
            ));
        }
        // Nothing was filed, and nothing is left behind.
        assert!(!layout.blob_path(&layer.digest).exists());
        assert_eq!(layout.get(&key(1), NOW, TTL), Lookup::Miss);
        assert!(assert_valid_layout(&dir).is_empty());

        let err = layout
            .put(&entry(key(1), Some(layer.clone())), None)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the cache entry for {} has a layer, but no layer file was given",
                key(1)
            )
        );
        let err = layout.put(&entry(key(1), None), Some(&src)).unwrap_err();
        assert!(matches!(err, StoreError::NoLayer { .. }));
        let bad = EntryLayer {
            digest: "sha256:../../../etc/passwd".into(),
            ..layer
        };
        let err = layout
            .put(&entry(key(1), Some(bad)), Some(&src))
            .unwrap_err();
        assert_eq!(
            error_chain(&err),
            format!(
                "cannot write the cache entry for {}: layer.digest is not a sha256 digest: \"sha256:../../../etc/passwd\" is not a sha256 digest: expected sha256:<64 lower-case hex digits>",
                key(1)
            )
        );
    }

    /// Every way a filed entry can be unusable is `Invalid`, never a panic
    /// or an error.
    #[test]
    fn get_reports_what_it_cannot_use() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layout");
        let layout = Layout::open(&dir).unwrap();
        let src = tmp.path().join("layer.tar.gz");
        let layer = layer_file(&src, b"a layer");
        let good = entry(key(1), Some(layer.clone()));
        let tag = key(1).tag();
        let put = || {
            fs::write(&src, b"a layer").unwrap();
            layout.put(&good, Some(&src)).unwrap();
            assert_eq!(layout.get(&key(1), NOW, TTL), Lookup::Hit(good.clone()));
        };
        let get = || invalid(layout.get(&key(1), NOW, TTL));
        let blob = layout.blob_path(&layer.digest);

        // The layer blob: missing, or of another size.
        put();
        fs::remove_file(&blob).unwrap();
        assert!(get().starts_with(&format!("cannot read layer blob {}: ", blob.display())));
        put();
        fs::remove_file(&blob).unwrap();
        fs::write(&blob, b"a layer, longer").unwrap();
        assert_eq!(
            get(),
            format!("layer blob {} has 15 bytes, expected 7", blob.display())
        );

        // The entry blob: another content of the same size.
        put();
        let entry_json = good.to_json();
        let entry_blob = layout.blob_path(&sha256_digest(&entry_json));
        let mut corrupt = entry_json.clone();
        corrupt[0] = b' ';
        fs::write(&entry_blob, &corrupt).unwrap();
        assert_eq!(
            get(),
            format!(
                "entry blob {} hashes to {}",
                entry_blob.display(),
                sha256_digest(&corrupt)
            )
        );
        fs::remove_file(&entry_blob).unwrap();

        // The manifest blob: missing, truncated, not a cache manifest.
        put();
        let manifest = manifest_path(&layout, &key(1));
        let manifest_json = fs::read(&manifest).unwrap();
        fs::write(&manifest, &manifest_json[1..]).unwrap();
        assert_eq!(
            get(),
            format!(
                "manifest blob {} is not {} bytes long",
                manifest.display(),
                manifest_json.len()
            )
        );
        fs::remove_file(&manifest).unwrap();
        assert!(get().starts_with(&format!(
            "cannot read manifest blob {}: ",
            manifest.display()
        )));

        // The entry JSON itself: not JSON, another version, a bad digest,
        // another key's entry.
        let raw = |json: &[u8], layer: Option<EntryLayer>| {
            let path = file_raw(&layout, &tag, json, layer);
            let reason = get();
            let prefix = format!("entry blob {}: ", path.display());
            assert!(reason.starts_with(&prefix), "{reason}");
            reason[prefix.len()..].to_owned()
        };
        assert!(raw(b"not json", None).starts_with("cannot parse the cache entry JSON: "));
        let mut v2: Value = serde_json::from_slice(&entry_json).unwrap();
        v2["version"] = json!(2);
        assert_eq!(
            raw(&serde_json::to_vec(&v2).unwrap(), Some(layer.clone())),
            "the cache entry has version 2, expected 1"
        );
        let mut bad_digest: Value = serde_json::from_slice(&entry_json).unwrap();
        bad_digest["layer"]["diffID"] = json!("sha256:0");
        assert!(
            raw(
                &serde_json::to_vec(&bad_digest).unwrap(),
                Some(layer.clone())
            )
            .starts_with("layer.diffID is not a sha256 digest: ")
        );
        let other_key = entry(key(2), Some(layer.clone())).to_json();
        assert_eq!(
            raw(&other_key, Some(layer.clone())),
            format!(
                "the entry filed under {} is the entry of {}",
                key(1),
                key(2)
            )
        );
        // A manifest whose layers are not its entry's.
        file_raw(&layout, &tag, &entry_json, None);
        assert!(
            get().ends_with(" lists other layers than its entry"),
            "{}",
            get()
        );

        // A corrupt index.
        fs::write(dir.join("index.json"), "[").unwrap();
        assert!(get().starts_with(&format!(
            "cannot parse {} as an OCI image index: ",
            dir.join("index.json").display()
        )));
    }

    /// A tool no one here wrote reads the layout: skopeo copies both kinds
    /// of entry to another layout byte for byte, and the copies hit.
    #[test]
    fn skopeo_copies_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layout");
        let layout = Layout::open(&dir).unwrap();
        let src = tmp.path().join("layer.tar.gz");
        let with_layer = entry(key(1), Some(layer_file(&src, b"a layer")));
        let without = entry(key(2), None);
        layout.put(&with_layer, Some(&src)).unwrap();
        layout.put(&without, None).unwrap();

        let copy_dir = tmp.path().join("copy");
        for key in [key(1), key(2)] {
            let from = format!("oci:{}:{}", dir.display(), key.tag());
            let to = format!("oci:{}:{}", copy_dir.display(), key.tag());
            let out = Command::new("skopeo")
                .args(["copy", "--quiet", &from, &to])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let copy = Layout::open(&copy_dir).unwrap();
        assert_eq!(copy.get(&key(1), NOW, TTL), Lookup::Hit(with_layer));
        assert_eq!(copy.get(&key(2), NOW, TTL), Lookup::Hit(without));
        for key in [key(1), key(2)] {
            assert_eq!(
                fs::read(manifest_path(&copy, &key)).unwrap(),
                fs::read(manifest_path(&layout, &key)).unwrap()
            );
        }
        assert_valid_layout(&copy_dir);
    }

    /// Puts the same three keys, and one of each thread's own, from
    /// `threads` threads at once, each opening the layout itself; returns
    /// every key put, all checked to hit.
    fn race(dir: &Path, threads: usize) -> Vec<Key> {
        let shared = [key(1), key(2), key(3)];
        let own = |i: usize| {
            let name = format!("{}-{i}", std::process::id());
            Key::from_bytes(Sha256::digest(name.as_bytes()).into())
        };
        let tmp = tempfile::tempdir().unwrap();
        thread::scope(|s| {
            for i in 0..threads {
                let tmp = tmp.path();
                s.spawn(move || {
                    let layout = Layout::open(dir).unwrap();
                    for key in shared.iter().copied().chain([own(i)]) {
                        let src = tmp.join(format!("{i}-{}", key.tag()));
                        let content = format!("the layer of {key}").repeat(1000);
                        let layer = layer_file(&src, content.as_bytes());
                        // Two entries without a layer, to race on the
                        // index alone.
                        if key == shared[2] {
                            layout.put(&entry(key, None), None).unwrap();
                        } else {
                            layout.put(&entry(key, Some(layer)), Some(&src)).unwrap();
                        }
                    }
                });
            }
        });
        let keys: Vec<Key> = shared.into_iter().chain((0..threads).map(own)).collect();
        let layout = Layout::open(dir).unwrap();
        for key in &keys {
            assert!(
                matches!(layout.get(key, NOW, TTL), Lookup::Hit(e) if e.key == *key),
                "{key}"
            );
        }
        keys
    }

    /// Racing puts in one process. Also the child of `racing_processes`,
    /// racing in its layout.
    #[test]
    fn racing_threads() {
        if let Some(dir) = std::env::var_os(CHILD_LAYOUT) {
            race(Path::new(&dir), 4);
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layout");
        let keys = race(&dir, 8);
        let names: BTreeSet<String> = assert_valid_layout(&dir).into_iter().collect();
        assert_eq!(names, keys.iter().map(Key::tag).collect());
    }

    /// Racing puts from three processes: this one and two runs of this
    /// test binary's `racing_threads`.
    #[test]
    fn racing_processes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layout");
        let children: Vec<_> = (0..2)
            .map(|_| {
                Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "layout::tests::racing_threads",
                        "--test-threads=1",
                    ])
                    .env(CHILD_LAYOUT, &dir)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        race(&dir, 4);
        for child in children {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Three shared keys, and four of each process's own.
        let names = assert_valid_layout(&dir);
        assert_eq!(names.len(), 3 + 3 * 4);
        assert_eq!(names.iter().collect::<BTreeSet<_>>().len(), names.len());
        let layout = Layout::open(&dir).unwrap();
        for name in &names {
            let key = Key::from_tag(name).unwrap();
            assert!(
                matches!(layout.get(&key, NOW, TTL), Lookup::Hit(_)),
                "{name}"
            );
        }
    }
}
