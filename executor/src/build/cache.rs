//! The layer cache as a build uses it (`--cache`): where entries are looked
//! up and written, and how a hit becomes a step's result.
//!
//! The keys and the stores' formats are the `executor-cache` crate's. This
//! module puts them together with the build's registry client and local
//! store: the local store (`--cache-dir`) is asked first, then the cache
//! repository, a registry repository (`--cache-repo REPO`, by default the
//! destination's repository followed by `/cache`, as kaniko does) or an OCI
//! image layout (`--cache-repo oci:PATH`). The registry side is here rather
//! than in the cache crate because it needs executor's registry client
//! (oci-client extended with docker config.json auth, mounts and retries,
//! in `registry/`).
//!
//! Nothing here fails a build: an entry that cannot be read, whose blob is
//! gone, or that is corrupt is a miss with a warning, and an entry that
//! cannot be written is a warning.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use executor_cache::{
    BlobRef, ENTRY_MEDIA_TYPE, Entry, EntryLayer, Key, Layout, LocalEntries, Lookup, OCI_MANIFEST,
};
use oci_spec::image::{Descriptor, MediaType};

use crate::image::digest::Digest;
use crate::image::store::Store;
use crate::registry::ImageReference;
use crate::rootfs::config::ImageConfig;
use crate::rootfs::images::{self, LayerRef};
use crate::rootfs::remote::Remote;

/// An entry blob larger than this is not read (a corrupt manifest could
/// claim anything): entries are an image config and one descriptor.
const MAX_ENTRY_BYTES: u64 = 16 << 20;

/// What `--cache` and the flags that go with it asked for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[allow(clippy::struct_excessive_bools)]
pub struct CacheSettings {
    /// Where entries are shared; `None`: only the local store.
    pub repo: Option<CacheRepo>,
    /// Entries older than this are misses (`--cache-ttl`).
    pub ttl: Duration,
    /// COPY and ADD steps are cached (`--cache-copy-layers`).
    pub copy_layers: bool,
    /// RUN steps are cached (`--cache-run-layers`).
    pub run_layers: bool,
    /// Entries are written to the cache repository (false with
    /// `--no-push-cache`).
    pub push: bool,
}

/// A failure of the cache crate's storage (local entries, an OCI layout)
/// or of an entry's manifest.
type StorageError = Box<dyn std::error::Error + Send + Sync>;

/// Why a cache entry cannot be used (a miss) or written: a warning, never
/// a build failure.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The cache crate's verdict on the entry.
    #[error("{0}")]
    Invalid(String),
    #[error("its image config is not valid")]
    Config(#[source] serde_json::Error),
    #[error("cannot encode the image config")]
    Encode(#[source] serde_json::Error),
    #[error("its layer digest {0:?} is not valid")]
    LayerDigest(String),
    #[error("its entry digest {0:?} is not valid")]
    EntryDigest(String),
    #[error("its entry blob is {0} bytes, more than an entry can be")]
    TooBig(u64),
    #[error("its layer blob {0} is missing from the registry")]
    MissingLayer(String),
    #[error("its manifest's layers are not its entry's layer")]
    LayersDiffer,
    #[error("its manifest is not valid")]
    Manifest(#[source] StorageError),
    #[error("cannot copy its layer {}", path.display())]
    Import {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write it to the local cache")]
    Local(#[source] StorageError),
    #[error("cannot write it to the cache layout")]
    Layout(#[source] StorageError),
    #[error(transparent)]
    Image(#[from] crate::rootfs::ImageError),
    #[error(transparent)]
    Registry(#[from] crate::registry::Error),
    #[error(transparent)]
    Store(#[from] crate::image::store::StoreError),
}

/// Why the cache cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the local cache in {}", dir.display())]
    Local {
        dir: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot open the cache layout {}", path.display())]
    Layout {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A cache repository.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CacheRepo {
    /// A registry repository; entries are tagged with their keys.
    Registry(ImageReference),
    /// An OCI image layout directory (`oci:PATH`).
    Layout(PathBuf),
}

impl CacheRepo {
    /// `REGISTRY/REPO` or `oci:PATH`. A tag or digest is refused: the
    /// cache's tags are its keys.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("oci:") {
            if path.is_empty() {
                return Err("oci: needs a directory: oci:PATH".to_string());
            }
            return Ok(Self::Layout(PathBuf::from(path)));
        }
        let reference = ImageReference::parse(text).map_err(|e| e.to_string())?;
        let bare = text.rsplit('/').next().unwrap_or(text);
        if reference.digest().is_some() || bare.contains(':') {
            return Err(
                "a cache repository takes no tag or digest: its tags are cache keys".to_string(),
            );
        }
        Ok(Self::Registry(reference))
    }

    /// kaniko's default: `DESTINATION_REPO/cache`.
    #[must_use]
    pub fn default_for(destination: &ImageReference) -> Self {
        Self::Registry(destination.with_repository(&format!("{}/cache", destination.repository())))
    }
}

impl std::fmt::Display for CacheRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Registry(reference) => f.write_str(&reference.name()),
            Self::Layout(path) => write!(f, "oci:{}", path.display()),
        }
    }
}

/// Where the shared entries are.
enum Shared {
    Registry(ImageReference),
    Layout(Layout),
}

/// A step found in the cache.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The image config after the step.
    pub config: ImageConfig,
    /// The step's layer, if it wrote one. A layer from the registry is not
    /// downloaded: its `source` names the cache repository.
    pub layer: Option<LayerRef>,
}

/// The cache of one build.
pub struct Cache {
    pub settings: CacheSettings,
    local: LocalEntries,
    shared: Option<Shared>,
    /// The repository the image is pushed to, if it is: a registry hit's
    /// layer is mounted there as it is looked up (see `check_layer`).
    push_to: Option<ImageReference>,
    /// The time entries are written at and judged against, fixed for the
    /// build.
    now: i64,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Cache {
    /// The cache as `settings` describe it, with its local entries in
    /// `store`, for a build pushed to `push_to` (its first destination,
    /// when it pushes). An OCI layout is created when missing.
    pub fn open(
        settings: &CacheSettings,
        store: &Store,
        push_to: Option<ImageReference>,
    ) -> Result<Self, OpenError> {
        let dir = store.root().join("cache-entries");
        let local = LocalEntries::open(&dir).map_err(|e| OpenError::Local {
            dir: dir.clone(),
            source: Box::new(e),
        })?;
        let shared = match &settings.repo {
            None => None,
            Some(CacheRepo::Registry(reference)) => Some(Shared::Registry(reference.clone())),
            Some(CacheRepo::Layout(path)) => {
                Some(Shared::Layout(Layout::open(path).map_err(|e| {
                    OpenError::Layout {
                        path: path.clone(),
                        source: Box::new(e),
                    }
                })?))
            }
        };
        Ok(Self {
            settings: settings.clone(),
            local,
            shared,
            push_to,
            now: unix_now(),
        })
    }

    /// Looks up every key at once (a miss does not stop the lookups after
    /// it); `None` keys (steps that are not cached) are misses.
    pub async fn lookup_all(
        &self,
        keys: &[Option<Key>],
        registry: &Remote,
        store: &Store,
    ) -> Vec<Option<Hit>> {
        let lookups = keys.iter().map(|key| async move {
            match key {
                Some(key) => self.lookup(key, registry, store).await,
                None => None,
            }
        });
        futures_util::future::join_all(lookups).await
    }

    async fn lookup(&self, key: &Key, registry: &Remote, store: &Store) -> Option<Hit> {
        let ttl = self.settings.ttl;
        match self.local.get(key, self.now, ttl) {
            Lookup::Hit(entry) => {
                if let Some(hit) = local_hit(&entry, store) {
                    tracing::debug!(key = %key.tag(), "cache hit in the local store");
                    return Some(hit);
                }
            }
            Lookup::Invalid(reason) => tracing::warn!(
                "cache entry {} in the local store cannot be used (a miss): {reason}",
                key.tag()
            ),
            Lookup::Expired { .. } | Lookup::Miss => {}
        }
        let hit = match self.shared.as_ref()? {
            Shared::Registry(repo) => {
                let lookup = RegistryLookup {
                    repo,
                    push_to: self.push_to.as_ref(),
                    registry,
                    now: self.now,
                    ttl,
                };
                lookup.run(key).await
            }
            Shared::Layout(layout) => match layout.get(key, self.now, ttl) {
                Lookup::Hit(entry) => layout_hit(layout, &entry, store),
                Lookup::Invalid(reason) => Err(EntryError::Invalid(reason)),
                Lookup::Expired { written } => {
                    tracing::info!(
                        "cache entry {} expired (written at {}): a miss",
                        key.tag(),
                        super::config::rfc3339(written)
                    );
                    Ok(None)
                }
                Lookup::Miss => Ok(None),
            },
        };
        match hit {
            Ok(hit) => hit,
            Err(error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "cache entry {} in {} cannot be used (a miss)",
                    key.tag(),
                    self.settings
                        .repo
                        .as_ref()
                        .map_or(String::new(), ToString::to_string)
                );
                None
            }
        }
    }

    /// Files the result of the step keyed `key`: the config after it and
    /// its layer (already in `store`), in the local store and, unless
    /// `--no-push-cache`, in the cache repository. Failures are warnings.
    pub async fn save(
        &self,
        key: Key,
        config: &ImageConfig,
        layer: Option<&LayerRef>,
        registry: &Remote,
        store: &Store,
    ) {
        if let Err(error) = self.try_save(key, config, layer, registry, store).await {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "cannot write cache entry {}",
                key.tag()
            );
        }
    }

    async fn try_save(
        &self,
        key: Key,
        config: &ImageConfig,
        layer: Option<&LayerRef>,
        registry: &Remote,
        store: &Store,
    ) -> Result<(), EntryError> {
        let config = config
            .to_json()
            .and_then(|bytes| serde_json::from_slice(&bytes))
            .map_err(EntryError::Encode)?;
        let entry = Entry {
            key,
            written: self.now,
            config,
            layer: layer.map(|l| EntryLayer {
                media_type: l.descriptor.media_type().to_string(),
                digest: l.descriptor.digest().to_string(),
                size: l.descriptor.size(),
                diff_id: l.diff_id.clone(),
            }),
        };
        self.local
            .put(&entry)
            .map_err(|e| EntryError::Local(e.into()))?;
        if !self.settings.push {
            return Ok(());
        }
        match &self.shared {
            None => Ok(()),
            Some(Shared::Layout(layout)) => {
                let blob = layer
                    .map(|l| images::descriptor_digest(&l.descriptor).map(|d| store.blob_path(&d)))
                    .transpose()?;
                layout
                    .put(&entry, blob.as_deref())
                    .map_err(|e| EntryError::Layout(e.into()))
            }
            Some(Shared::Registry(repo)) => {
                let json = entry.to_json();
                let digest = store.put_bytes(&json)?;
                let entry_blob = BlobRef {
                    media_type: ENTRY_MEDIA_TYPE.to_string(),
                    digest: digest.to_string(),
                    size: json.len() as u64,
                };
                let descriptor = Descriptor::new(
                    MediaType::Other(ENTRY_MEDIA_TYPE.to_string()),
                    entry_blob.size,
                    oci_spec::image::Digest::from(&digest),
                );
                let entry_push = registry.push_blob(repo, store, &descriptor, None);
                let layer_push = async {
                    match layer {
                        Some(l) => {
                            registry
                                .push_blob(repo, store, &l.descriptor, l.source.as_ref())
                                .await
                        }
                        None => Ok(()),
                    }
                };
                futures_util::future::try_join(entry_push, layer_push).await?;
                let manifest = entry.manifest(&entry_blob, &json);
                // Both blobs were just pushed (or found there).
                let present: Vec<String> = std::iter::once(entry_blob.digest.clone())
                    .chain(layer.map(|l| l.descriptor.digest().to_string()))
                    .collect();
                registry
                    .client()
                    .push_manifest_with(
                        &repo.with_tag(&key.tag()),
                        &manifest,
                        OCI_MANIFEST,
                        &present,
                    )
                    .await?;
                Ok(())
            }
        }
    }
}

/// The config an entry holds.
fn entry_config(entry: &Entry) -> Result<ImageConfig, EntryError> {
    serde_json::from_value(entry.config.clone()).map_err(EntryError::Config)
}

fn layer_ref(layer: &EntryLayer, source: Option<ImageReference>) -> Result<LayerRef, EntryError> {
    let digest: Digest = layer
        .digest
        .parse()
        .map_err(|_| EntryError::LayerDigest(layer.digest.clone()))?;
    Ok(LayerRef {
        descriptor: Descriptor::new(
            MediaType::from(layer.media_type.as_str()),
            layer.size,
            oci_spec::image::Digest::from(&digest),
        ),
        diff_id: layer.diff_id.clone(),
        source,
    })
}

/// A local entry is a hit when its layer is in the store with its size.
fn local_hit(entry: &Entry, store: &Store) -> Option<Hit> {
    let config = entry_config(entry).ok()?;
    let layer = match &entry.layer {
        None => None,
        Some(layer) => {
            let layer = layer_ref(layer, None).ok()?;
            let digest = images::descriptor_digest(&layer.descriptor).ok()?;
            let size = fs::metadata(store.blob_path(&digest)).ok()?.len();
            if size != layer.descriptor.size() {
                return None;
            }
            Some(layer)
        }
    };
    Some(Hit { config, layer })
}

/// An entry of an OCI layout: its layer joins the local store (a hard link
/// when the layout shares its file system, else a verified copy).
fn layout_hit(layout: &Layout, entry: &Entry, store: &Store) -> Result<Option<Hit>, EntryError> {
    let config = entry_config(entry)?;
    let layer = match &entry.layer {
        None => None,
        Some(layer) => {
            let layer = layer_ref(layer, None)?;
            let digest = images::descriptor_digest(&layer.descriptor)?;
            if !store.has_blob(&digest) {
                let from = layout.blob_path(layer.descriptor.digest().as_ref());
                import_blob(&from, &digest, store)
                    .map_err(|source| EntryError::Import { path: from, source })?;
            }
            Some(layer)
        }
    };
    Ok(Some(Hit { config, layer }))
}

fn import_blob(from: &std::path::Path, digest: &Digest, store: &Store) -> io::Result<()> {
    let mut writer = store
        .blob_writer_with(digest.algorithm())
        .map_err(io::Error::other)?;
    let mut file = fs::File::open(from)?;
    io::copy(&mut file, &mut writer)?;
    io::Write::flush(&mut writer)?;
    writer.commit(Some(digest)).map_err(io::Error::other)?;
    Ok(())
}

/// A lookup in the registry repository `repo`.
struct RegistryLookup<'a> {
    repo: &'a ImageReference,
    push_to: Option<&'a ImageReference>,
    registry: &'a Remote,
    now: i64,
    ttl: Duration,
}

impl RegistryLookup<'_> {
    /// Looks `key` up: its manifest, its entry (embedded in the manifest,
    /// else its blob, read and checked), and the presence of its layer
    /// blob, which is not downloaded (see [`Self::check_layer`]).
    async fn run(&self, key: &Key) -> Result<Option<Hit>, EntryError> {
        let reference = self.repo.with_tag(&key.tag());
        let client = self.registry.client();
        let Some((manifest, _)) = client.get_manifest(&reference).await? else {
            return Ok(None);
        };
        let executor_cache::CacheManifest {
            entry: entry_blob,
            entry_json,
            layers,
        } = executor_cache::parse_manifest(&manifest)
            .map_err(|e| EntryError::Manifest(e.into()))?;
        if entry_blob.size > MAX_ENTRY_BYTES {
            return Err(EntryError::TooBig(entry_blob.size));
        }
        let digest: Digest = entry_blob
            .digest
            .parse()
            .map_err(|_| EntryError::EntryDigest(entry_blob.digest.clone()))?;
        let descriptor = Descriptor::new(
            MediaType::Other(entry_blob.media_type.clone()),
            entry_blob.size,
            oci_spec::image::Digest::from(&digest),
        );
        // An entry the manifest does not embed (written by an older
        // executor, or too large) is read while the layers its manifest
        // lists are checked for: two round trips after the manifest's, not
        // three.
        let read_entry = async {
            if let Some(json) = entry_json {
                return Ok(json);
            }
            let mut json = Vec::new();
            client
                .pull_blob(&reference, &descriptor, &mut json)
                .await
                .map(|_| json)
                .map_err(EntryError::from)
        };
        let check_layers =
            futures_util::future::try_join_all(layers.iter().map(|layer| self.check_layer(layer)));
        let (json, _) = futures_util::future::try_join(read_entry, check_layers).await?;
        let entry = match executor_cache::check(&json, key, self.now, self.ttl) {
            Lookup::Hit(entry) => entry,
            Lookup::Miss => return Ok(None),
            Lookup::Expired { written } => {
                tracing::info!(
                    "cache entry {} expired (written at {}): a miss",
                    key.tag(),
                    super::config::rfc3339(written)
                );
                return Ok(None);
            }
            Lookup::Invalid(reason) => return Err(EntryError::Invalid(reason)),
        };
        let config = entry_config(&entry)?;
        let listed: Vec<BlobRef> = entry.layer.iter().map(BlobRef::from).collect();
        if listed != layers {
            return Err(EntryError::LayersDiffer);
        }
        let layer = entry
            .layer
            .as_ref()
            .map(|layer| layer_ref(layer, Some(self.repo.clone())))
            .transpose()?;
        Ok(Some(Hit { config, layer }))
    }

    /// That the layer blob `layer` is in the cache repository, without
    /// downloading it. A build that pushes mounts it into the destination's
    /// repository now ([`Remote::mount_ahead`]): the push needs it there,
    /// and a mount the registry makes is the answer, in one request. A HEAD
    /// asks when there is nothing to mount into, or the registry did not
    /// mount (it may not mount at all).
    async fn check_layer(&self, layer: &BlobRef) -> Result<(), EntryError> {
        let digest: oci_spec::image::Digest = layer
            .digest
            .parse()
            .map_err(|_| EntryError::LayerDigest(layer.digest.clone()))?;
        if let Some(destination) = self.push_to {
            match self
                .registry
                .mount_ahead(destination, self.repo, &digest)
                .await
            {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(error) => {
                    tracing::debug!(%digest, error = &error as &dyn std::error::Error, "mounting a cache hit's layer ahead of the push failed; asking whether the cache has it");
                }
            }
        }
        if self
            .registry
            .client()
            .blob_exists(self.repo, &digest)
            .await?
        {
            Ok(())
        } else {
            Err(EntryError::MissingLayer(layer.digest.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_repo_parses_a_repository_or_a_layout() {
        assert_eq!(
            CacheRepo::parse("oci:/tmp/cache"),
            Ok(CacheRepo::Layout(PathBuf::from("/tmp/cache")))
        );
        let CacheRepo::Registry(reference) =
            CacheRepo::parse("registry.example:5000/team/app/cache").unwrap()
        else {
            panic!("a registry repository");
        };
        assert_eq!(reference.name(), "registry.example:5000/team/app/cache");
        for bad in [
            "oci:",
            "registry.example/app:tag",
            "registry.example/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "UPPER/case",
        ] {
            assert!(CacheRepo::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn the_default_cache_repo_is_the_destination_repository_plus_cache() {
        let destination = ImageReference::parse("registry.example:5000/team/app:1.0").unwrap();
        assert_eq!(
            CacheRepo::default_for(&destination).to_string(),
            "registry.example:5000/team/app/cache"
        );
    }
}
