//! The registries an image comes from and goes to: images fetched into the
//! local store (blobs already there, verified, are not downloaded again),
//! and a built image pushed to each destination (blobs in parallel, each mounted from
//! the repository it came from when the registry allows, uploaded when not;
//! the manifest last). A blob mounted ahead of the push ([`Remote::mount_ahead`],
//! by the layer cache's lookups) is not asked for again.

use std::collections::HashSet;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::future::try_join_all;
use indicatif::ProgressBar;
use oci_spec::image::{Descriptor, ImageManifest};

use super::config::ImageConfig;
use super::images::{self, ImageError, ImageSource, LayerRef};
use crate::image::digest::Digest;
use crate::image::store::{BlobWriter, Store};
use crate::platform::Platform;
use crate::progress;
use crate::registry::{ImageReference, OCI_MANIFEST, RegistryClient, RegistryOptions};

type Result<T, E = ImageError> = std::result::Result<T, E>;

/// The registries one build talks to.
pub struct Remote {
    client: RegistryClient,
    /// Blob bytes received and sent (retries count again: bytes moved).
    downloaded: Arc<AtomicU64>,
    uploaded: Arc<AtomicU64>,
    /// `(repository, digest)` of the blobs mounted ahead of the push.
    mounted: Mutex<HashSet<(String, String)>>,
}

impl Remote {
    /// A client with these options and the credentials found from the
    /// environment.
    pub fn from_options(options: RegistryOptions) -> Result<Self> {
        let client = RegistryClient::from_env(options)?;
        Ok(Self {
            client,
            downloaded: Arc::default(),
            uploaded: Arc::default(),
            mounted: Mutex::default(),
        })
    }

    /// Mounts blob `digest` from `from` into `destination`'s repository
    /// before the push that will need it there, and remembers it, so that
    /// the push does not ask again. `false` when the registry did not mount
    /// it: it may not have the blob, or not mount (the caller then asks
    /// otherwise), or the two are on different registries.
    ///
    /// The layer cache's lookups use it as their check that a hit's layer
    /// is still in the cache repository: one request where a HEAD now and a
    /// mount at the push would be two. A build that fails after it leaves
    /// the blob in the destination's repository with no manifest pointing
    /// at it, which a registry's garbage collection removes.
    pub async fn mount_ahead(
        &self,
        destination: &ImageReference,
        from: &ImageReference,
        digest: &oci_spec::image::Digest,
    ) -> Result<bool> {
        if destination.name() == from.name() {
            return Ok(false);
        }
        let mounted = self.client.mount_blob(destination, from, digest).await?;
        if mounted {
            self.mounted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert((destination.name(), digest.to_string()));
        }
        Ok(mounted)
    }

    fn mounted_ahead(
        &self,
        destination: &ImageReference,
        digest: &oci_spec::image::Digest,
    ) -> bool {
        self.mounted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&(destination.name(), digest.to_string()))
    }

    /// Resolves `reference` for `platform` and makes sure its config and
    /// layers are in `store`. A layer already stored (hashed when it was
    /// written) is used when its size is right, and fetched again when not.
    pub async fn fetch(
        &self,
        reference: &ImageReference,
        platform: &Platform,
        store: &Store,
    ) -> Result<ImageSource> {
        let image = self.resolve(reference, platform, store).await?;
        self.ensure_layers(&image.layers, store).await?;
        tracing::debug!(image = %reference, digest = %image.digest, "base image ready");
        Ok(image)
    }

    /// Resolves `reference` for `platform` into its manifest digest, config
    /// and layer list, storing the manifest and config but downloading no
    /// layer: a build whose steps all come from the cache never needs them
    /// ([`Remote::ensure_layers`] fetches them when a step does).
    pub async fn resolve(
        &self,
        reference: &ImageReference,
        platform: &Platform,
        store: &Store,
    ) -> Result<ImageSource> {
        let resolved = self.client.resolve(reference, platform).await?;
        stored_image(reference, &resolved, store)
    }

    /// The layers of `manifest` that `store` lacks, each once.
    fn absent_layers(manifest: &ImageManifest, store: &Store) -> Vec<Descriptor> {
        let mut seen = HashSet::new();
        manifest
            .layers()
            .iter()
            .filter(|layer| {
                images::descriptor_digest(layer)
                    .is_ok_and(|digest| !store.has_blob(&digest) && seen.insert(digest))
            })
            .cloned()
            .collect()
    }

    /// Makes sure every layer of `layers` is in `store`, downloading those
    /// that are not from the repository each came from. A layer with no
    /// source was written by this machine and must be stored already.
    pub async fn ensure_layers(&self, layers: &[LayerRef], store: &Store) -> Result<()> {
        let downloads = layers.iter().map(|layer| async move {
            if let Some(source) = &layer.source {
                let diff_id = layer.diff_id.parse().ok();
                return self
                    .fetch_blob(source, &layer.descriptor, diff_id, store)
                    .await;
            }
            let digest = images::descriptor_digest(&layer.descriptor)?;
            if store.has_blob(&digest) {
                Ok(())
            } else {
                Err(nowhere(&digest))
            }
        });
        try_join_all(downloads).await?;
        Ok(())
    }

    /// The registry client, for calls of the layer cache.
    #[must_use]
    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// Downloads the blob `descriptor` from `source` unless the store has
    /// it sound (see [`Store::has_sound_blob`]; `diff_id` is its layer's).
    async fn fetch_blob(
        &self,
        source: &ImageReference,
        descriptor: &Descriptor,
        diff_id: Option<Digest>,
        store: &Store,
    ) -> Result<()> {
        let digest = Digest::try_from(descriptor.digest()).map_err(|_| ImageError::Digest {
            value: descriptor.digest().to_string(),
        })?;
        if store.has_sound_blob(&digest, descriptor.size(), diff_id.as_ref()) {
            return Ok(());
        }
        let mut writer = store.blob_writer_with(digest.algorithm())?;
        writer.expect_size(descriptor.size());
        let bar = progress::bar(
            progress::blob_label("pull", &digest.to_string()),
            descriptor.size(),
        );
        let pulled = self
            .client
            .pull_blob(
                source,
                descriptor,
                SyncBlobWriter(&mut writer, bar.as_ref(), &self.downloaded),
            )
            .await;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        pulled?;
        writer.commit(Some(&digest))?;
        Ok(())
    }

    /// Blob bytes downloaded and uploaded so far.
    #[must_use]
    pub fn transferred(&self) -> (u64, u64) {
        (
            self.downloaded.load(Ordering::Relaxed),
            self.uploaded.load(Ordering::Relaxed),
        )
    }

    /// Pushes the image whose manifest is `manifest` (config and layers
    /// already in `store`) to `tags`, which all name one repository: the
    /// blobs go there once, then the manifest under each tag. Every blob is
    /// in the repository before any manifest is sent.
    pub async fn push(
        &self,
        tags: &[&ImageReference],
        store: &Store,
        manifest: &[u8],
        config: &Descriptor,
        layers: &[LayerRef],
    ) -> Result<()> {
        let Some(repository) = tags.first() else {
            return Ok(());
        };
        let config_push = self.push_blob(repository, store, config, None);
        // A layer the image holds twice is uploaded once.
        let layer_pushes = layers
            .iter()
            .enumerate()
            .filter(|(i, l)| !layers[..*i].iter().any(|e| e.descriptor == l.descriptor))
            .map(|(_, l)| self.push_blob(repository, store, &l.descriptor, l.source.as_ref()));
        futures_util::future::try_join(config_push, try_join_all(layer_pushes)).await?;
        // Every blob was just uploaded, mounted or found there.
        let present: Vec<String> = std::iter::once(config)
            .chain(layers.iter().map(|l| &l.descriptor))
            .map(|d| d.digest().to_string())
            .collect();
        for tag in tags {
            self.client
                .push_manifest_with(tag, manifest, OCI_MANIFEST, &present)
                .await?;
        }
        Ok(())
    }

    /// Puts one blob of `store` in `destination`'s repository: mounted
    /// from `from` when the registry allows, else uploaded.
    pub async fn push_blob(
        &self,
        destination: &ImageReference,
        store: &Store,
        descriptor: &Descriptor,
        from: Option<&ImageReference>,
    ) -> Result<()> {
        let digest = Digest::try_from(descriptor.digest()).map_err(|_| ImageError::Digest {
            value: descriptor.digest().to_string(),
        })?;
        if self.mounted_ahead(destination, descriptor.digest()) {
            return Ok(());
        }
        if let Some(from) = from
            && from.name() != destination.name()
        {
            match self
                .client
                .mount_blob(destination, from, descriptor.digest())
                .await
            {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                // A mount is an optimisation: on any failure, upload.
                Err(e) => tracing::debug!(%digest, error = %e, "blob mount failed; uploading"),
            }
        }
        if !store.has_blob(&digest) {
            // A layer taken from the cache without being downloaded, which
            // could not be mounted (another registry): the destination may
            // have it already; if not, it is downloaded, then uploaded.
            if self
                .client
                .blob_exists(destination, descriptor.digest())
                .await?
            {
                return Ok(());
            }
            let Some(from) = from else {
                return Err(nowhere(&digest));
            };
            self.fetch_blob(from, descriptor, None, store).await?;
        }
        let path = store.blob_path(&digest);
        let bar = progress::bar(
            progress::blob_label("push", &digest.to_string()),
            descriptor.size(),
        );
        let pushed = self
            .client
            .push_blob_with(destination, descriptor.digest(), descriptor.size(), || {
                let path = path.clone();
                let bar = bar.clone();
                let uploaded = Arc::clone(&self.uploaded);
                async move {
                    let file = tokio::fs::File::open(path).await?;
                    if let Some(bar) = &bar {
                        bar.set_position(0);
                    }
                    Ok(CountingReader(file, bar, uploaded))
                }
            })
            .await;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        pushed?;
        Ok(())
    }
}

/// The image `resolved` describes (`reference` in messages), its manifest
/// and config stored in `store`; its config must list a diffID per layer.
fn stored_image(
    reference: &ImageReference,
    resolved: &crate::registry::ResolvedImage,
    store: &Store,
) -> Result<ImageSource> {
    let config = ImageConfig::from_json(&resolved.config).map_err(|source| ImageError::Config {
        reference: reference.to_string(),
        digest: resolved.config_digest().to_string(),
        source,
    })?;
    if config.rootfs.diff_ids.len() != resolved.layers().len() {
        return Err(ImageError::Image {
            reference: reference.to_string(),
            message: format!(
                "the manifest lists {} layers but the config {} diff IDs",
                resolved.layers().len(),
                config.rootfs.diff_ids.len()
            ),
        });
    }
    store.put_bytes(&resolved.manifest.manifest_bytes)?;
    store.put_bytes(&resolved.config)?;
    let source = &resolved.manifest.source;
    let layers = resolved
        .layers()
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(descriptor, diff_id)| LayerRef {
            descriptor: descriptor.clone(),
            diff_id: diff_id.clone(),
            source: Some(source.clone()),
        })
        .collect();
    Ok(ImageSource {
        config,
        layers,
        digest: resolved.manifest.manifest_digest.to_string(),
    })
}

/// A layer with no source that the local store does not have either.
fn nowhere(digest: &Digest) -> ImageError {
    ImageError::Image {
        reference: digest.to_string(),
        message: "the layer is neither in the local store nor in a registry".to_string(),
    }
}

/// The store's blob writer as the `AsyncWrite` the registry client streams
/// into. Writes go to a buffered local temporary file, so doing them inline
/// blocks the task no longer than a page-cache copy.
/// Moves the transfer's bar, if there is one.
struct SyncBlobWriter<'a>(&'a mut BlobWriter, Option<&'a ProgressBar>, &'a AtomicU64);

impl tokio::io::AsyncWrite for SyncBlobWriter<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = this.0.write(buf);
        if let Ok(n) = &written {
            this.2.fetch_add(*n as u64, Ordering::Relaxed);
            if let Some(bar) = this.1 {
                bar.inc(*n as u64);
            }
        }
        Poll::Ready(written)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().0.flush())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().0.flush())
    }
}

/// A blob file being uploaded, moving the transfer's bar as it is read.
struct CountingReader(tokio::fs::File, Option<ProgressBar>, Arc<AtomicU64>);

impl tokio::io::AsyncRead for CountingReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.0).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let n = (buf.filled().len() - before) as u64;
            this.2.fetch_add(n, Ordering::Relaxed);
            if let Some(bar) = &this.1 {
                bar.inc(n);
            }
        }
        polled
    }
}

/// Where images come from, for a caller that blocks (the build engine runs
/// each stage on a thread of its own): [`Remote`] on a runtime
/// ([`BlockingRemote`]), or a fake in tests.
pub trait ImageFetcher: Send + Sync {
    /// `reference` for `platform`: its manifest digest, config and layer
    /// list, with the manifest and config stored but no layer downloaded.
    fn resolve(
        &self,
        reference: &ImageReference,
        platform: &Platform,
        store: &Store,
    ) -> Result<ImageSource>;

    /// Makes sure every layer of `layers` is in `store`.
    fn ensure_layers(&self, layers: &[LayerRef], store: &Store) -> Result<()>;

    /// [`ImageFetcher::resolve`], then [`ImageFetcher::ensure_layers`]:
    /// for a stage that needs its base's files.
    fn fetch(
        &self,
        reference: &ImageReference,
        platform: &Platform,
        store: &Store,
    ) -> Result<ImageSource> {
        let image = self.resolve(reference, platform, store)?;
        self.ensure_layers(&image.layers, store)?;
        Ok(image)
    }
}

/// [`Remote`] as an [`ImageFetcher`]: each call runs on `runtime` and
/// blocks the calling thread (so never call it from async code).
pub struct BlockingRemote {
    remote: Arc<Remote>,
    runtime: tokio::runtime::Handle,
}

impl BlockingRemote {
    #[must_use]
    pub fn new(remote: Arc<Remote>, runtime: tokio::runtime::Handle) -> Self {
        Self { remote, runtime }
    }
}

impl ImageFetcher for BlockingRemote {
    fn resolve(
        &self,
        reference: &ImageReference,
        platform: &Platform,
        store: &Store,
    ) -> Result<ImageSource> {
        self.runtime
            .block_on(self.remote.resolve(reference, platform, store))
    }

    fn ensure_layers(&self, layers: &[LayerRef], store: &Store) -> Result<()> {
        self.runtime
            .block_on(self.remote.ensure_layers(layers, store))
    }

    /// The layers the store lacks download while the config is fetched
    /// and stored with the manifest (on a thread of its own: the layers,
    /// the longer wait, are asked for first): their digests are in the
    /// manifest, and a stage that needs its base's files needs them all.
    fn fetch(
        &self,
        reference: &ImageReference,
        platform: &Platform,
        store: &Store,
    ) -> Result<ImageSource> {
        let remote = &self.remote;
        let manifest = self
            .runtime
            .block_on(remote.client.resolve_manifest(reference, platform))?;
        let source = manifest.source.clone();
        let absent = Remote::absent_layers(&manifest.manifest, store);
        let image = std::thread::scope(|scope| {
            let stored = scope.spawn(|| {
                self.runtime
                    .block_on(remote.client.pull_config(manifest))
                    .map_err(ImageError::from)
                    .and_then(|resolved| stored_image(reference, &resolved, store))
            });
            let downloaded = self.runtime.block_on(try_join_all(
                absent
                    .iter()
                    .map(|layer| remote.fetch_blob(&source, layer, None, store)),
            ));
            let stored = stored
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            downloaded.and(stored)
        })?;
        // The layers the store had are checked (or fetched again) now
        // that their diffIDs are known.
        self.runtime
            .block_on(remote.ensure_layers(&image.layers, store))?;
        tracing::debug!(image = %reference, digest = %image.digest, "base image ready");
        Ok(image)
    }
}
