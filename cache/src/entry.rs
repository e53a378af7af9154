//! Cache entries: what a build step produced (its image config and its
//! layer), as the JSON every store keeps and as the OCI manifest that files
//! it in a registry or an OCI layout.
//!
//! An entry is versioned JSON ([`Entry::to_json`]). In a registry or a
//! layout it is the config blob of an OCI image manifest
//! ([`Entry::manifest`]) whose layers are the step's layer, if it made one.
//! Reading is strict and never panics: the version, the key and every
//! digest are checked, and whatever cannot be read is an [`EntryError`],
//! which a lookup ([`check`]) reports as [`Lookup::Invalid`] so that the
//! build logs it and treats it as a miss. This module does no I/O: the
//! stores fetch the bytes and hand them here.

use std::error::Error;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::key::{Key, ParseDigestError, check_digest};

/// The media type of an entry's JSON: a cache manifest's config and its
/// `artifactType`.
pub const ENTRY_MEDIA_TYPE: &str = "application/vnd.executor.cache.step.v1+json";
/// The media type of an OCI image manifest, which files an entry.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The only entry format this crate reads and writes; bump it when the
/// meaning of a field changes, so that old entries become invalid.
const ENTRY_VERSION: u64 = 1;
/// An entry JSON up to this size is also embedded in its manifest (the
/// config descriptor's `data`, OCI image-spec 1.1), so that a lookup reads
/// the manifest alone: one round trip to the registry instead of two.
/// Entries are an image config and a descriptor, a few KiB; registries
/// take manifests of 4 MiB, and a larger entry is only referenced.
pub const MAX_EMBEDDED_ENTRY: usize = 256 << 10;

/// An entry or a manifest that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("cannot parse the cache entry JSON")]
    Json(#[source] serde_json::Error),
    #[error("the cache entry has version {found}, expected {ENTRY_VERSION}")]
    Version {
        /// The `version` found, as JSON.
        found: String,
    },
    #[error("the cache entry's config is not a JSON object")]
    Config,
    #[error("{field} is not a sha256 digest")]
    Digest {
        /// Where the digest was found: `layer.digest`, `config.digest`, ...
        field: String,
        #[source]
        source: ParseDigestError,
    },
    #[error("cannot parse the cache manifest JSON")]
    ManifestJson(#[source] serde_json::Error),
    #[error("the manifest has schemaVersion {found}, expected 2")]
    SchemaVersion { found: u64 },
    #[error("the manifest has media type {found:?}, expected {OCI_MANIFEST}")]
    MediaType { found: String },
    #[error(
        "the manifest's config has media type {found:?}, expected {ENTRY_MEDIA_TYPE}: it is not a cache entry"
    )]
    ConfigMediaType { found: String },
    #[error("the manifest's config data is not base64")]
    DataEncoding(#[source] base64::DecodeError),
    #[error("the manifest's config data is not the blob its descriptor names ({reason})")]
    DataMismatch { reason: String },
}

/// What a build step produced, filed under its key.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key the entry was written for.
    pub key: Key,
    /// Unix seconds when the entry was written: its age for the TTL.
    pub written: i64,
    /// The full image config JSON after the step.
    pub config: Value,
    /// The layer the step added; `None` for a step that changes only the
    /// config.
    pub layer: Option<EntryLayer>,
}

/// The layer of an [`Entry`]: its descriptor and its diffID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryLayer {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The compressed blob's digest, `sha256:<64 hex>`.
    pub digest: String,
    /// The compressed blob's size in bytes.
    pub size: u64,
    /// The digest of the uncompressed tar, as the image config's
    /// `rootfs.diff_ids` lists it.
    #[serde(rename = "diffID")]
    pub diff_id: String,
}

/// A blob descriptor as a manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:<64 hex>`.
    pub digest: String,
    pub size: u64,
}

impl From<&EntryLayer> for BlobRef {
    /// The layer's descriptor, as an entry's manifest lists it.
    fn from(layer: &EntryLayer) -> Self {
        BlobRef {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: layer.size,
        }
    }
}

/// An entry as written: `version` first, then the fields in order.
#[derive(Serialize)]
struct EntryOut<'a> {
    version: u64,
    key: &'a Key,
    written: i64,
    config: &'a Value,
    layer: Option<&'a EntryLayer>,
}

/// An entry as read, before its checks.
#[derive(Deserialize)]
struct EntryIn {
    version: Value,
    key: Key,
    written: i64,
    config: Value,
    layer: Option<EntryLayer>,
}

impl EntryIn {
    fn check(self) -> Result<Entry, EntryError> {
        check_version(&self.version)?;
        if !self.config.is_object() {
            return Err(EntryError::Config);
        }
        if let Some(layer) = &self.layer {
            digest_field("layer.digest", &layer.digest)?;
            digest_field("layer.diffID", &layer.diff_id)?;
        }
        Ok(Entry {
            key: self.key,
            written: self.written,
            config: self.config,
            layer: self.layer,
        })
    }
}

fn check_version(version: &Value) -> Result<(), EntryError> {
    if version.as_u64() == Some(ENTRY_VERSION) {
        Ok(())
    } else {
        Err(EntryError::Version {
            found: version.to_string(),
        })
    }
}

fn digest_field(field: &str, digest: &str) -> Result<(), EntryError> {
    check_digest(digest).map_err(|source| EntryError::Digest {
        field: field.to_owned(),
        source,
    })
}

/// As [`Entry::to_json`] writes it, with `"version": 1`.
impl Serialize for Entry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        EntryOut {
            version: ENTRY_VERSION,
            key: &self.key,
            written: self.written,
            config: &self.config,
            layer: self.layer.as_ref(),
        }
        .serialize(s)
    }
}

/// With the checks of [`Entry::from_json`].
impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        EntryIn::deserialize(d)?
            .check()
            .map_err(|e| serde::de::Error::custom(error_chain(&e)))
    }
}

impl Entry {
    /// The entry's JSON: compact, fields in a fixed order (`version`,
    /// `key`, `written`, `config`, `layer`), so one entry always gives the
    /// same bytes.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an entry has only string map keys")
    }

    /// Reads an entry's JSON, checking its version, that its config is an
    /// object and that its digests are `sha256:<64 hex>`. Unknown fields
    /// are ignored.
    pub fn from_json(bytes: &[u8]) -> Result<Entry, EntryError> {
        // The version first: a later version may not parse as this one.
        #[derive(Deserialize)]
        struct Version {
            version: Value,
        }
        let Version { version } = serde_json::from_slice(bytes).map_err(EntryError::Json)?;
        check_version(&version)?;
        serde_json::from_slice::<EntryIn>(bytes)
            .map_err(EntryError::Json)?
            .check()
    }

    /// The manifest filing this entry, whose config is the entry JSON
    /// `entry_json` (the blob `entry_blob`), embedded as the descriptor's
    /// `data` when it is at most [`MAX_EMBEDDED_ENTRY`] bytes, and whose
    /// layers are the entry's layer or none. Its
    /// `org.opencontainers.image.created` annotation is `written`.
    #[must_use]
    pub fn manifest(&self, entry_blob: &BlobRef, entry_json: &[u8]) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Manifest<'a> {
            schema_version: u32,
            media_type: &'a str,
            artifact_type: &'a str,
            config: Config<'a>,
            layers: Vec<BlobRef>,
            annotations: Annotations,
        }
        #[derive(Serialize)]
        struct Config<'a> {
            #[serde(flatten)]
            blob: &'a BlobRef,
            #[serde(skip_serializing_if = "Option::is_none")]
            data: Option<String>,
        }
        #[derive(Serialize)]
        struct Annotations {
            #[serde(rename = "org.opencontainers.image.created")]
            created: String,
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: OCI_MANIFEST,
            artifact_type: ENTRY_MEDIA_TYPE,
            config: Config {
                blob: entry_blob,
                data: (entry_json.len() <= MAX_EMBEDDED_ENTRY)
                    .then(|| base64::engine::general_purpose::STANDARD.encode(entry_json)),
            },
            layers: self.layer.iter().map(BlobRef::from).collect(),
            annotations: Annotations {
                created: crate::time::rfc3339(self.written),
            },
        };
        serde_json::to_vec(&manifest).expect("a manifest has only string map keys")
    }

    /// Whether the entry is older than `ttl` at `now` (Unix seconds):
    /// `written + ttl < now`.
    #[must_use]
    pub fn is_expired(&self, now: i64, ttl: Duration) -> bool {
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        self.written.saturating_add(ttl) < now
    }
}

/// What a cache manifest names: the entry blob, its bytes when the
/// manifest embeds them, and the layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheManifest {
    pub entry: BlobRef,
    /// The entry JSON from the config descriptor's `data`, checked against
    /// its size and digest; `None` when the manifest does not embed it
    /// (written before it did, or too large): fetch the blob.
    pub entry_json: Option<Vec<u8>>,
    pub layers: Vec<BlobRef>,
}

/// What a cache manifest names; error when it is not one: not an OCI
/// image manifest of schema version 2, a config that is not an entry
/// ([`ENTRY_MEDIA_TYPE`]), a digest that is not `sha256:<64 hex>`, or
/// embedded config data that is not the blob its descriptor names.
pub fn parse_manifest(bytes: &[u8]) -> Result<CacheManifest, EntryError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Manifest {
        schema_version: u64,
        media_type: String,
        config: Config,
        layers: Vec<BlobRef>,
    }
    #[derive(Deserialize)]
    struct Config {
        #[serde(flatten)]
        blob: BlobRef,
        data: Option<String>,
    }
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(EntryError::ManifestJson)?;
    if manifest.schema_version != 2 {
        return Err(EntryError::SchemaVersion {
            found: manifest.schema_version,
        });
    }
    if manifest.media_type != OCI_MANIFEST {
        return Err(EntryError::MediaType {
            found: manifest.media_type,
        });
    }
    let entry = manifest.config.blob;
    if entry.media_type != ENTRY_MEDIA_TYPE {
        return Err(EntryError::ConfigMediaType {
            found: entry.media_type,
        });
    }
    digest_field("config.digest", &entry.digest)?;
    for (i, layer) in manifest.layers.iter().enumerate() {
        digest_field(&format!("layers[{i}].digest"), &layer.digest)?;
    }
    let entry_json = manifest
        .config
        .data
        .map(|data| embedded(&entry, &data))
        .transpose()?;
    Ok(CacheManifest {
        entry,
        entry_json,
        layers: manifest.layers,
    })
}

/// The bytes of a descriptor's `data`, which must be the blob it names:
/// "the decoded data MUST be identical to the referenced content and
/// SHOULD be verified against the digest and size fields" (image-spec).
fn embedded(blob: &BlobRef, data: &str) -> Result<Vec<u8>, EntryError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(EntryError::DataEncoding)?;
    if bytes.len() as u64 != blob.size {
        return Err(EntryError::DataMismatch {
            reason: format!("{} bytes, the descriptor says {}", bytes.len(), blob.size),
        });
    }
    let digest = crate::oci_layout::sha256_digest(&bytes);
    if digest != blob.digest {
        return Err(EntryError::DataMismatch {
            reason: format!("its digest is {digest}"),
        });
    }
    Ok(bytes)
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// A usable entry for the key.
    Hit(Entry),
    /// No entry for the key.
    Miss,
    /// An entry older than the TTL, written at `written` (Unix seconds).
    Expired { written: i64 },
    /// An entry that cannot be used, and why (one line, lower case); the
    /// build logs it and treats it as a miss.
    Invalid(String),
}

/// Checks a fetched entry against the key it was filed under and the TTL:
/// [`Lookup::Invalid`] when it does not parse ([`Entry::from_json`]) or is
/// another key's entry, [`Lookup::Expired`] when `written + ttl < now`,
/// [`Lookup::Hit`] otherwise.
#[must_use]
pub fn check(entry_json: &[u8], key: &Key, now: i64, ttl: Duration) -> Lookup {
    let entry = match Entry::from_json(entry_json) {
        Ok(entry) => entry,
        Err(err) => return Lookup::Invalid(error_chain(&err)),
    };
    if entry.key != *key {
        return Lookup::Invalid(format!(
            "the entry filed under {key} is the entry of {}",
            entry.key
        ));
    }
    if entry.is_expired(now, ttl) {
        return Lookup::Expired {
            written: entry.written,
        };
    }
    Lookup::Hit(entry)
}

/// An error and its sources on one line, separated by `: `.
pub(crate) fn error_chain(err: &dyn Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        out.push_str(": ");
        out.push_str(&err.to_string());
        source = err.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(byte: u8) -> Key {
        Key::from_bytes([byte; 32])
    }

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn entry() -> Entry {
        Entry {
            key: key(0x11),
            written: 1_764_480_000,
            config: json!({
                "architecture": "amd64",
                "config": {"Env": ["PATH=/usr/bin:/bin"]},
                "os": "linux",
                "rootfs": {"diff_ids": [digest('d')], "type": "layers"},
            }),
            layer: Some(EntryLayer {
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                digest: digest('a'),
                size: 123,
                diff_id: digest('d'),
            }),
        }
    }

    fn entry_blob() -> BlobRef {
        BlobRef {
            media_type: ENTRY_MEDIA_TYPE.into(),
            digest: digest('e'),
            size: 456,
        }
    }

    fn invalid(lookup: Lookup) -> String {
        match lookup {
            Lookup::Invalid(reason) => reason,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    /// The entry format. If this fails, entries written by earlier builds
    /// no longer read as they did: bump `ENTRY_VERSION` and update the
    /// literal on purpose.
    #[test]
    fn golden_entry_json() {
        let a = "a".repeat(64);
        let d = "d".repeat(64);
        let k = "11".repeat(32);
        assert_eq!(
            String::from_utf8(entry().to_json()).unwrap(),
            format!(
                r#"{{"version":1,"key":"sha256:{k}","written":1764480000,"config":{{"architecture":"amd64","config":{{"Env":["PATH=/usr/bin:/bin"]}},"os":"linux","rootfs":{{"diff_ids":["sha256:{d}"],"type":"layers"}}}},"layer":{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{a}","size":123,"diffID":"sha256:{d}"}}}}"#
            )
        );
        let no_layer = Entry {
            config: json!({}),
            layer: None,
            ..entry()
        };
        assert_eq!(
            String::from_utf8(no_layer.to_json()).unwrap(),
            format!(
                r#"{{"version":1,"key":"sha256:{k}","written":1764480000,"config":{{}},"layer":null}}"#
            )
        );
    }

    /// The manifest filing an entry, as registries and layouts hold it.
    #[test]
    fn golden_manifest() {
        let a = "a".repeat(64);
        let e = "e".repeat(64);
        assert_eq!(
            String::from_utf8(entry().manifest(&entry_blob(), b"{}")).unwrap(),
            format!(
                concat!(
                    r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#,
                    r#""artifactType":"application/vnd.executor.cache.step.v1+json","#,
                    r#""config":{{"mediaType":"application/vnd.executor.cache.step.v1+json","digest":"sha256:{e}","size":456,"data":"e30="}},"#,
                    r#""layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{a}","size":123}}],"#,
                    r#""annotations":{{"org.opencontainers.image.created":"2025-11-30T05:20:00Z"}}}}"#
                ),
                e = e,
                a = a
            )
        );
        let no_layer = Entry {
            layer: None,
            ..entry()
        };
        let manifest: Value =
            serde_json::from_slice(&no_layer.manifest(&entry_blob(), b"{}")).unwrap();
        assert_eq!(manifest["layers"], json!([]));
        // An entry too large to embed is only referenced.
        let large = vec![b' '; MAX_EMBEDDED_ENTRY + 1];
        let manifest: Value =
            serde_json::from_slice(&entry().manifest(&entry_blob(), &large)).unwrap();
        assert_eq!(manifest["config"].get("data"), None);
    }

    #[test]
    fn json_round_trips() {
        for entry in [
            entry(),
            Entry {
                layer: None,
                written: -5,
                ..entry()
            },
        ] {
            let json = entry.to_json();
            assert_eq!(Entry::from_json(&json).unwrap(), entry);
            // serde gives the same bytes and the same checks.
            assert_eq!(serde_json::to_vec(&entry).unwrap(), json);
            assert_eq!(serde_json::from_slice::<Entry>(&json).unwrap(), entry);
        }
        let mut with_extra: Value = serde_json::from_slice(&entry().to_json()).unwrap();
        with_extra["later"] = json!("ignored");
        assert_eq!(
            Entry::from_json(&serde_json::to_vec(&with_extra).unwrap()).unwrap(),
            entry()
        );
    }

    /// The blob reference of `json`, as a writer makes it.
    fn blob_of(json: &[u8]) -> BlobRef {
        BlobRef {
            media_type: ENTRY_MEDIA_TYPE.into(),
            digest: crate::oci_layout::sha256_digest(json),
            size: json.len() as u64,
        }
    }

    #[test]
    fn manifest_round_trips() {
        let json = entry().to_json();
        let parsed = parse_manifest(&entry().manifest(&blob_of(&json), &json)).unwrap();
        assert_eq!(parsed.entry, blob_of(&json));
        assert_eq!(parsed.entry_json.as_deref(), Some(json.as_slice()));
        assert_eq!(
            parsed.layers,
            vec![BlobRef::from(entry().layer.as_ref().unwrap())]
        );
        let no_layer = Entry {
            layer: None,
            ..entry()
        };
        let json = no_layer.to_json();
        let parsed = parse_manifest(&no_layer.manifest(&blob_of(&json), &json)).unwrap();
        assert_eq!(parsed.entry, blob_of(&json));
        assert!(parsed.layers.is_empty());
        // Manifests written before entries were embedded name the blob only.
        let mut old: Value =
            serde_json::from_slice(&entry().manifest(&blob_of(&json), &json)).unwrap();
        old["config"].as_object_mut().unwrap().remove("data");
        let parsed = parse_manifest(&serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(parsed.entry, blob_of(&json));
        assert_eq!(parsed.entry_json, None);
    }

    /// `entry()`'s JSON with `change` applied.
    fn altered(change: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut value: Value = serde_json::from_slice(&entry().to_json()).unwrap();
        change(&mut value);
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn from_json_rejects_what_it_cannot_use() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{".to_vec(), "cannot parse the cache entry JSON"),
            (b"[]".to_vec(), "cannot parse the cache entry JSON"),
            (
                altered(|v| {
                    v.as_object_mut().unwrap().remove("version").unwrap();
                }),
                "cannot parse the cache entry JSON",
            ),
            (
                altered(|v| v["version"] = json!(2)),
                "the cache entry has version 2, expected 1",
            ),
            (
                altered(|v| v["version"] = json!("1")),
                "the cache entry has version \"1\", expected 1",
            ),
            (
                altered(|v| v["key"] = json!("sha256:xyz")),
                "cannot parse the cache entry JSON",
            ),
            (
                altered(|v| v["config"] = json!(null)),
                "the cache entry's config is not a JSON object",
            ),
            (
                altered(|v| v["layer"]["digest"] = json!("sha256:ABC")),
                "layer.digest is not a sha256 digest",
            ),
            (
                altered(|v| v["layer"]["diffID"] = json!(format!("sha512:{}", "d".repeat(64)))),
                "layer.diffID is not a sha256 digest",
            ),
            (
                altered(|v| v["layer"]["size"] = json!(-1)),
                "cannot parse the cache entry JSON",
            ),
        ];
        for (json, message) in cases {
            let err = Entry::from_json(&json).unwrap_err();
            assert_eq!(
                err.to_string(),
                message,
                "{}",
                String::from_utf8_lossy(&json)
            );
            // serde's path refuses it too.
            assert!(serde_json::from_slice::<Entry>(&json).is_err());
        }
        // The causes are kept as sources, not lost.
        let err = Entry::from_json(&altered(|v| v["layer"]["digest"] = json!("x"))).unwrap_err();
        assert_eq!(
            error_chain(&err),
            "layer.digest is not a sha256 digest: \"x\" is not a sha256 digest: expected sha256:<64 lower-case hex digits>"
        );
    }

    #[test]
    fn parse_manifest_rejects_what_is_not_a_cache_manifest() {
        let manifest = |change: &dyn Fn(&mut Value)| {
            let mut value: Value =
                serde_json::from_slice(&entry().manifest(&entry_blob(), b"{}")).unwrap();
            change(&mut value);
            serde_json::to_vec(&value).unwrap()
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json".to_vec(), "cannot parse the cache manifest JSON"),
            (
                manifest(&|v| v["schemaVersion"] = json!(1)),
                "the manifest has schemaVersion 1, expected 2",
            ),
            (
                manifest(&|v| {
                    v["mediaType"] = json!("application/vnd.oci.image.index.v1+json");
                }),
                "the manifest has media type \"application/vnd.oci.image.index.v1+json\", expected application/vnd.oci.image.manifest.v1+json",
            ),
            (
                manifest(&|v| {
                    v["config"]["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
                }),
                "the manifest's config has media type \"application/vnd.oci.image.config.v1+json\", expected application/vnd.executor.cache.step.v1+json: it is not a cache entry",
            ),
            (
                manifest(&|v| v["config"]["digest"] = json!("sha256:")),
                "config.digest is not a sha256 digest",
            ),
            (
                manifest(&|v| v["layers"][0]["digest"] = json!("sha256:../../etc/passwd")),
                "layers[0].digest is not a sha256 digest",
            ),
            (
                manifest(&|v| {
                    v.as_object_mut().unwrap().remove("layers");
                }),
                "cannot parse the cache manifest JSON",
            ),
            (
                manifest(&|v| v["config"]["data"] = json!("not base64!")),
                "the manifest's config data is not base64",
            ),
            (
                // "{}" is two bytes; the descriptor says 456.
                manifest(&|_| {}),
                "the manifest's config data is not the blob its descriptor names (2 bytes, the descriptor says 456)",
            ),
            (
                manifest(&|v| v["config"]["size"] = json!(2)),
                "the manifest's config data is not the blob its descriptor names (its digest is sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a)",
            ),
        ];
        for (json, message) in cases {
            let err = parse_manifest(&json).unwrap_err();
            assert_eq!(
                err.to_string(),
                message,
                "{}",
                String::from_utf8_lossy(&json)
            );
        }
    }

    #[test]
    fn check_hits_misses_and_expires() {
        let ttl = Duration::from_secs(3600);
        let written = entry().written;
        let json = entry().to_json();
        assert_eq!(check(&json, &key(0x11), written, ttl), Lookup::Hit(entry()));
        assert_eq!(
            check(&json, &key(0x11), written + 3600, ttl),
            Lookup::Hit(entry())
        );
        assert_eq!(
            check(&json, &key(0x11), written + 3601, ttl),
            Lookup::Expired { written }
        );
        // A clock behind the writer's is not an error.
        assert_eq!(check(&json, &key(0x11), 0, ttl), Lookup::Hit(entry()));
        assert_eq!(
            invalid(check(&json, &key(0x22), written, ttl)),
            format!(
                "the entry filed under {} is the entry of {}",
                key(0x22),
                key(0x11)
            )
        );
        assert_eq!(
            invalid(check(b"{}", &key(0x11), written, ttl)),
            "cannot parse the cache entry JSON: missing field `version` at line 1 column 2"
        );
        assert_eq!(
            invalid(check(
                &altered(|v| v["version"] = json!(0)),
                &key(0x11),
                written,
                ttl
            )),
            "the cache entry has version 0, expected 1"
        );
        let bad_digest = altered(|v| v["layer"]["digest"] = json!("sha256:1"));
        assert!(invalid(check(&bad_digest, &key(0x11), written, ttl)).starts_with("layer.digest"));
    }

    #[test]
    fn expiry_never_overflows() {
        let old = Entry {
            written: i64::MIN,
            ..entry()
        };
        assert!(!old.is_expired(i64::MIN, Duration::MAX));
        assert!(old.is_expired(i64::MAX, Duration::from_secs(1)));
        let new = Entry {
            written: i64::MAX,
            ..entry()
        };
        assert!(!new.is_expired(i64::MAX, Duration::MAX));
        assert!(!new.is_expired(i64::MAX, Duration::ZERO));
    }
}
