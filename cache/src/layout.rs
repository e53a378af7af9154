//! The cache's entry store in an OCI image layout (`--cache-repo
//! oci:PATH`), on the layout that [`crate::oci_layout`] reads and writes.
//!
//! An entry is an OCI manifest ([`Entry::manifest`]) listed in `index.json`
//! under the ref name (`org.opencontainers.image.ref.name`) [`Key::tag`];
//! its config blob is the entry JSON, its layers the step's layer. The
//! layout's own rules (blobs checked before they appear, `index.json`
//! changed only under its lock) make one layout safe to share between
//! builds, threads and processes: writers racing on a key write the same
//! content and one descriptor stays. A lookup never fails: whatever it
//! cannot use is [`Lookup::Invalid`]. This module never deletes a blob it
//! can read (a replaced manifest stays, unreferenced), and knows nothing of
//! registries.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::entry::{
    BlobRef, ENTRY_MEDIA_TYPE, Entry, EntryError, Lookup, OCI_MANIFEST, check, error_chain,
    parse_manifest,
};
use crate::key::{Key, check_digest};
use crate::oci_layout::{ANNOTATION_REF_NAME, Index, LayoutError, OciLayout};

/// A store that cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
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
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An OCI image layout holding cache entries (`--cache-repo oci:PATH`).
#[derive(Debug, Clone)]
pub struct Layout {
    layout: OciLayout,
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
    /// Opens the layout at `dir`, creating it where missing
    /// ([`OciLayout::open`]).
    pub fn open(dir: &Path) -> Result<Layout> {
        Ok(Layout {
            layout: OciLayout::open(dir)?,
        })
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
        self.layout.blob_path(digest)
    }

    /// Files `entry`: writes the layer blob (from `layer_blob`, which the
    /// entry must have a layer for: cloned where the file system can, else
    /// copied, never hard-linked; verified against the entry's layer
    /// either way), the entry JSON, the manifest, then `index.json`, replacing the
    /// ref name's old descriptor. A blob already present is kept.
    pub fn put(&self, entry: &Entry, layer_blob: Option<&Path>) -> Result<()> {
        let key = entry.key;
        let entry_json = entry.to_json();
        // What is written must read back (digests, config).
        Entry::from_json(&entry_json).map_err(|source| StoreError::Entry { key, source })?;
        match (&entry.layer, layer_blob) {
            (Some(layer), Some(path)) => {
                self.layout.put_blob_file(path, &layer.digest, layer.size)?;
            }
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
            digest: self.layout.put_blob(&entry_json)?,
            size: entry_json.len() as u64,
        };
        let manifest = entry.manifest(&entry_blob, &entry_json);
        let manifest_digest = self.layout.put_blob(&manifest)?;

        let tag = key.tag();
        self.layout.update_index(|index: &mut Index<Descriptor>| {
            index.manifests.retain(|d| d.ref_name() != Some(&tag));
            index.manifests.push(Descriptor {
                media_type: OCI_MANIFEST.to_owned(),
                digest: manifest_digest,
                size: manifest.len() as u64,
                artifact_type: Some(ENTRY_MEDIA_TYPE.to_owned()),
                annotations: BTreeMap::from([(ANNOTATION_REF_NAME.to_owned(), tag)]),
                other: Map::new(),
            });
        })?;
        Ok(())
    }

    fn lookup(&self, key: &Key, now: i64, ttl: Duration) -> Result<Lookup, String> {
        let index: Index<Descriptor> = self.layout.read_index().map_err(|e| error_chain(&e))?;
        let tag = key.tag();
        let Some(descriptor) = index.manifests.iter().find(|d| d.ref_name() == Some(&tag)) else {
            return Ok(Lookup::Miss);
        };
        let dir = self.layout.dir().display();
        if descriptor.media_type != OCI_MANIFEST {
            return Err(format!(
                "{dir}/index.json lists {tag} with media type {:?}, expected {OCI_MANIFEST}",
                descriptor.media_type
            ));
        }
        let manifest = self.read_blob("manifest", &descriptor.digest, descriptor.size)?;
        let parsed = parse_manifest(&manifest).map_err(|e| {
            format!(
                "manifest {} in {dir}: {}",
                descriptor.digest,
                error_chain(&e)
            )
        })?;
        // The blob is read even when the manifest embeds it: a file read
        // costs no round trip, and it keeps the blob's own check (a corrupt
        // blob is reported and removed).
        let (entry_blob, layers) = (parsed.entry, parsed.layers);
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
                "manifest {} in {dir} lists other layers than its entry",
                descriptor.digest,
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
    /// reason it cannot be used.
    fn read_blob(&self, what: &str, digest: &str, size: u64) -> Result<Vec<u8>, String> {
        check_digest(digest).map_err(|e| format!("{what}: {e}"))?;
        self.layout
            .read_blob(digest, Some(size))
            .map_err(|e| format!("{what}: {}", error_chain(&e)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;
    use std::thread;

    use oci_spec::image::{ImageIndex, ImageManifest, MediaType};
    use serde_json::json;

    use sha2::{Digest as _, Sha256};

    use super::*;
    use crate::entry::EntryLayer;
    use crate::oci_layout::sha256_digest;

    /// Size of the buffer blobs are copied through.
    const COPY_BUFFER: usize = 1 << 20;

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
        layout.layout.put_blob(entry_json).unwrap();
        let manifest = entry(key(0), layer).manifest(&entry_blob, entry_json);
        let digest = layout.layout.put_blob(&manifest).unwrap();
        layout
            .layout
            .update_index(|index: &mut Index<Descriptor>| {
                index.manifests.retain(|d| d.ref_name() != Some(tag));
                index.manifests.push(Descriptor {
                    media_type: OCI_MANIFEST.into(),
                    digest,
                    size: manifest.len() as u64,
                    artifact_type: None,
                    annotations: BTreeMap::from([(ANNOTATION_REF_NAME.into(), tag.into())]),
                    other: Map::new(),
                });
            })
            .unwrap();
        layout.blob_path(&entry_blob.digest)
    }

    /// The path of `key`'s manifest blob.
    fn manifest_path(layout: &Layout, key: &Key) -> PathBuf {
        let index: Index<Descriptor> = layout.layout.read_index().unwrap();
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
            "{\n  \"manifests\": [],\n  \"mediaType\": \"application/vnd.oci.image.index.v1+json\",\n  \"schemaVersion\": 2\n}\n"
        );
        Layout::open(&dir).unwrap();

        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"2.0.0"}"#).unwrap();
        let err = Layout::open(&dir).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} has image layout version \"2.0.0\", expected \"1.0.0\"\nhint: use a directory of its own for this layout",
                dir.join("oci-layout").display()
            )
        );
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
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
            Err(StoreError::Layout(LayoutError::IndexVersion {
                found: 3,
                ..
            }))
        ));
    }

    /// A layout at `tmp/layout` holding two entries, `key(1)` with a
    /// layer (from `tmp/layer.tar.gz`) and `key(2)` without.
    fn two_entries(tmp: &Path) -> (PathBuf, Layout, Entry, Entry) {
        let dir = tmp.join("layout");
        let layout = Layout::open(&dir).unwrap();
        let src = tmp.join("layer.tar.gz");
        let with_layer = entry(key(1), Some(layer_file(&src, b"a layer")));
        let without = entry(key(2), None);
        layout.put(&with_layer, Some(&src)).unwrap();
        layout.put(&without, None).unwrap();
        (dir, layout, with_layer, without)
    }

    #[test]
    fn put_then_get() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, layout, with_layer, without) = two_entries(tmp.path());
        let src = tmp.path().join("layer.tar.gz");

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
        // The same file system: the layer is still a file of its own (a
        // clone or a copy), never a hard link to the source.
        let blob = layout.blob_path(&with_layer.layer.as_ref().unwrap().digest);
        assert_ne!(
            fs::metadata(&blob).unwrap().ino(),
            fs::metadata(&src).unwrap().ino()
        );
        // Another handle on the same directory sees the entries.
        let again = Layout::open(&dir).unwrap();
        assert_eq!(again.get(&key(1), NOW, TTL), Lookup::Hit(with_layer));
    }

    #[test]
    fn put_copies_a_large_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layout");
        let layout = Layout::open(&dir).unwrap();
        let src = tmp.path().join("layer.tar.gz");
        let content = vec![7u8; 3 * COPY_BUFFER + 5];
        let entry = entry(key(1), Some(layer_file(&src, &content)));
        layout.put(&entry, Some(&src)).unwrap();
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
        layout.layout.put_blob(other_manifest).unwrap();
        layout.layout.put_blob(b"{}").unwrap();
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

        {
            fs::write(&src, b"b layer").unwrap();
            let err = layout
                .put(&entry(key(1), Some(layer.clone())), Some(&src))
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "{} hashes to {}, expected {}",
                    src.display(),
                    sha256_digest(b"b layer"),
                    layer.digest
                )
            );
            fs::write(&src, b"a longer layer").unwrap();
            let err = layout
                .put(&entry(key(1), Some(layer.clone())), Some(&src))
                .unwrap_err();
            assert!(matches!(
                err,
                StoreError::Layout(LayoutError::SourceSize {
                    expected: 7,
                    actual: 14,
                    ..
                })
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
                "entry: blob {} at {} is corrupt (its content hashes to {}); it was removed",
                sha256_digest(&entry_json),
                entry_blob.display(),
                sha256_digest(&corrupt)
            )
        );
        assert!(!entry_blob.exists());

        // The manifest blob: missing, truncated, not a cache manifest.
        put();
        let manifest = manifest_path(&layout, &key(1));
        let manifest_json = fs::read(&manifest).unwrap();
        fs::write(&manifest, &manifest_json[1..]).unwrap();
        assert_eq!(
            get(),
            format!(
                "manifest: blob {} has {} bytes, expected {}",
                manifest.display(),
                manifest_json.len() - 1,
                manifest_json.len()
            )
        );
        fs::remove_file(&manifest).unwrap();
        assert_eq!(
            get(),
            format!(
                "manifest: blob sha256:{} is not in the OCI layout at {}",
                manifest.file_name().unwrap().to_str().unwrap(),
                dir.display()
            )
        );

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
        let (dir, layout, with_layer, without) = two_entries(tmp.path());
        let copy_dir = tmp.path().join("copy");
        for key in [key(1), key(2)] {
            let from = format!("oci:{}:{}", dir.display(), key.tag());
            let to = format!("oci:{}:{}", copy_dir.display(), key.tag());
            // skopeo's own complaint, if any, goes to the test's stderr.
            let status = Command::new("skopeo")
                .args(["copy", "--quiet", &from, &to])
                .status()
                .unwrap();
            assert!(status.success(), "skopeo copy {from} {to}: {status}");
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
