//! Reading from registries: resolving a reference to a platform's image
//! manifest and its config, and streaming blobs into a caller's writer with
//! size and digest checks, resuming a dropped transfer with a range request.

use std::io;

use futures_util::StreamExt as _;
use oci_spec::image::{Descriptor, Digest};
use reqwest::header::RANGE;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use super::client::{Direction, Host, RegistryClient, ResolvedImage, ResolvedManifest};
use super::error::{Error, Result};
use super::idle::within;
use super::manifest::{Manifest, available_platforms, parse_manifest, select_platform};
use super::reference::ImageReference;
use super::token::scope;
use super::transfer::Hasher;
use crate::platform::Platform;

impl RegistryClient {
    // ---- resolve and pull ------------------------------------------------

    /// Finds the image manifest for `reference` (for an index or manifest
    /// list, the entry for `platform`) and its config. Docker Hub images
    /// are looked for on each mirror first.
    pub async fn resolve(
        &self,
        reference: &ImageReference,
        platform: &Platform,
    ) -> Result<ResolvedImage> {
        self.at_first_source(reference, |candidate| async move {
            self.resolve_at(reference, &candidate, platform).await
        })
        .await
    }

    /// The first half of [`RegistryClient::resolve`]: the image manifest
    /// for `platform`, without its config, so that its layers can be
    /// downloaded while [`RegistryClient::pull_config`] gets the config.
    pub async fn resolve_manifest(
        &self,
        reference: &ImageReference,
        platform: &Platform,
    ) -> Result<ResolvedManifest> {
        self.at_first_source(reference, |candidate| async move {
            self.manifest_at(reference, &candidate, platform).await
        })
        .await
    }

    /// `attempt` at each of `reference`'s mirrors in turn, then at its own
    /// registry: the first that succeeds.
    async fn at_first_source<T, F>(
        &self,
        reference: &ImageReference,
        attempt: impl Fn(ImageReference) -> F,
    ) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let mut candidates = reference.pull_candidates(&self.options().mirrors);
        let last = candidates.pop().unwrap_or_else(|| reference.clone());
        for mirror in candidates {
            let registry = mirror.registry().to_owned();
            match attempt(mirror).await {
                Ok(found) => return Ok(found),
                Err(e) => tracing::warn!(
                    mirror = registry,
                    error = %e,
                    "registry mirror failed; trying the next source"
                ),
            }
        }
        attempt(last).await
    }

    async fn resolve_at(
        &self,
        reference: &ImageReference,
        candidate: &ImageReference,
        platform: &Platform,
    ) -> Result<ResolvedImage> {
        let manifest = self.manifest_at(reference, candidate, platform).await?;
        self.pull_config(manifest).await
    }

    async fn manifest_at(
        &self,
        reference: &ImageReference,
        candidate: &ImageReference,
        platform: &Platform,
    ) -> Result<ResolvedManifest> {
        let host = self.host(candidate, Direction::Pull)?;
        let (bytes, content_type, digest) = self
            .fetch_manifest(&host, candidate, Direction::Pull)
            .await?;
        let (manifest, media_type) =
            parse_manifest(&candidate.to_string(), &bytes, content_type.as_deref())?;
        let (index_digest, manifest, media_type, bytes, digest) = match manifest {
            Manifest::Image(m) => (None, *m, media_type, bytes, digest),
            Manifest::Index(index) => {
                let entry =
                    select_platform(&index, platform).ok_or_else(|| Error::NoMatchingPlatform {
                        reference: candidate.to_string(),
                        platform: platform.to_string(),
                        available: available_platforms(&index),
                    })?;
                let child = candidate.with_digest(entry.digest().as_ref());
                let (bytes, content_type, child_digest) =
                    self.fetch_manifest(&host, &child, Direction::Pull).await?;
                let (manifest, media_type) =
                    parse_manifest(&child.to_string(), &bytes, content_type.as_deref())?;
                let Manifest::Image(m) = manifest else {
                    return Err(Error::UnsupportedManifest {
                        reference: child.to_string(),
                        media_type: format!("{media_type} (an index inside an index)"),
                    });
                };
                (Some(digest), *m, media_type, bytes, child_digest)
            }
        };
        Ok(ResolvedManifest {
            reference: reference.clone(),
            source: candidate.with_digest(digest.as_ref()),
            index_digest,
            manifest_digest: digest,
            manifest_media_type: media_type,
            manifest_bytes: bytes,
            manifest,
        })
    }

    /// The second half of [`RegistryClient::resolve`]: `manifest`'s config,
    /// from where the manifest was found.
    pub async fn pull_config(&self, manifest: ResolvedManifest) -> Result<ResolvedImage> {
        let host = self.host(&manifest.source, Direction::Pull)?;
        let config_descriptor = manifest.manifest.config().clone();
        let mut config = Vec::new();
        self.pull_blob_from(
            &host,
            &manifest.source,
            &config_descriptor,
            &mut config,
            &mut Progress::new(&config_descriptor)?,
        )
        .await?;
        Ok(ResolvedImage { manifest, config })
    }

    /// The manifest `reference` names, exactly as served, with its digest;
    /// `None` when the registry does not have it (404: no such tag, or no
    /// such repository yet). Unlike [`RegistryClient::resolve`] an index is
    /// not followed: the layer cache's entries are looked up with this.
    pub async fn get_manifest(
        &self,
        reference: &ImageReference,
    ) -> Result<Option<(Vec<u8>, Digest)>> {
        let host = self.host(reference, Direction::Pull)?;
        match self.fetch_manifest(&host, reference, Direction::Pull).await {
            Ok((bytes, _, digest)) => Ok(Some((bytes, digest))),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Streams the blob `descriptor` names from `reference`'s repository
    /// into `writer`, checking its size and digest (a mismatch is an error
    /// and `writer` then holds bad bytes: discard them). A dropped transfer
    /// resumes where it stopped. Returns the bytes written.
    pub async fn pull_blob<W>(
        &self,
        reference: &ImageReference,
        descriptor: &Descriptor,
        mut writer: W,
    ) -> Result<u64>
    where
        W: AsyncWrite + Unpin,
    {
        let mut progress = Progress::new(descriptor)?;
        let mut candidates = reference.pull_candidates(&self.options().mirrors);
        let last = candidates.pop().unwrap_or_else(|| reference.clone());
        for mirror in &candidates {
            let host = self.host(mirror, Direction::Pull)?;
            match self
                .pull_blob_from(&host, mirror, descriptor, &mut writer, &mut progress)
                .await
            {
                Ok(()) => return Ok(progress.written),
                Err(
                    e @ (Error::Sink { .. }
                    | Error::SizeMismatch { .. }
                    | Error::DigestMismatch { .. }),
                ) => {
                    return Err(e);
                }
                Err(e) => tracing::warn!(
                    mirror = mirror.registry(),
                    error = %e,
                    "registry mirror failed; trying the next source"
                ),
            }
        }
        let host = self.host(&last, Direction::Pull)?;
        self.pull_blob_from(&host, &last, descriptor, &mut writer, &mut progress)
            .await?;
        Ok(progress.written)
    }

    async fn pull_blob_from<W>(
        &self,
        host: &Host,
        reference: &ImageReference,
        descriptor: &Descriptor,
        writer: &mut W,
        progress: &mut Progress,
    ) -> Result<()>
    where
        W: AsyncWrite + Unpin,
    {
        let context = format!("pulling blob {} from {reference}", descriptor.digest());
        let backoff = self.backoff(Direction::Pull);
        let mut retry = 0;
        loop {
            let before = progress.written;
            match self
                .pull_blob_once(host, reference, descriptor, writer, progress, &context)
                .await
            {
                Ok(()) => break,
                Err(e) => {
                    // A try that moved the transfer on does not use up a retry.
                    if progress.written > before {
                        retry = 0;
                    }
                    let e = self.auth_failure(host, e).await;
                    self.wait_or_fail(Direction::Pull, &backoff, &mut retry, &context, e)
                        .await?;
                }
            }
        }
        writer.flush().await.map_err(|source| Error::Sink {
            context: context.clone(),
            source,
        })?;
        progress.verify(&context)
    }

    /// One try at the blob: a GET on the client of manifests (made with
    /// the host), from where the last try stopped (a range request). Not
    /// oci-client's client: that one is made on a thread of its own when
    /// the host is first used, and waits for the machine's roots (every
    /// file of `/etc/ssl/certs`), which a cold build's first pull would
    /// then wait for too. Redirects are followed as oci-client follows them
    /// (reqwest's policy, which drops the credentials on the way to
    /// another host).
    async fn pull_blob_once<W>(
        &self,
        host: &Host,
        reference: &ImageReference,
        descriptor: &Descriptor,
        writer: &mut W,
        progress: &mut Progress,
        context: &str,
    ) -> Result<()>
    where
        W: AsyncWrite + Unpin,
    {
        let auth = self
            .authorize(host, &[scope(reference.repository(), false)])
            .await?;
        let url = format!(
            "{}/v2/{}/blobs/{}",
            host.base,
            reference.repository(),
            descriptor.digest()
        );
        let mut request = auth.apply(host.http.get(url));
        if progress.written > 0 {
            request = request.header(RANGE, format!("bytes={}-", progress.written));
        }
        let response = within(self.idle(), context, async {
            request
                .send()
                .await
                .map_err(|e| Error::http(context.to_string(), e))
        })
        .await?;
        let skip = match response.status().as_u16() {
            // All of it: what we have already is skipped (a registry may
            // ignore the range).
            200 => progress.written,
            206 if progress.written > 0 => 0,
            status => {
                let body = response.bytes().await.unwrap_or_default();
                return Err(Error::registry(context.to_string(), Some(status), &body));
            }
        };
        let mut skip = usize::try_from(skip).unwrap_or(usize::MAX);
        let mut stream = response.bytes_stream();
        let idle = self.idle();
        // Each chunk within the idle timeout: a slow download that moves
        // goes on, a silent one is retried from where it stopped.
        while let Some(chunk) = within(idle, context, async { Ok(stream.next().await) }).await? {
            let mut chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => return Err(progress.stopped(context, Box::new(e))),
            };
            if skip > 0 {
                let n = skip.min(chunk.len());
                let _ = chunk.split_to(n);
                skip -= n;
            }
            progress.add(&chunk, context)?;
            writer
                .write_all(&chunk)
                .await
                .map_err(|source| Error::Sink {
                    context: context.to_string(),
                    source,
                })?;
        }
        if progress.written < progress.size {
            return Err(progress.stopped(
                context,
                Box::new(io::Error::from(io::ErrorKind::UnexpectedEof)),
            ));
        }
        Ok(())
    }
}

/// Counts and hashes a blob's bytes as they arrive, across resumed tries.
struct Progress {
    size: u64,
    written: u64,
    expected: Digest,
    hasher: Option<Hasher>,
}

impl Progress {
    fn new(descriptor: &Descriptor) -> Result<Self> {
        let expected = descriptor.digest().clone();
        let hasher = Hasher::new(expected.algorithm()).ok_or_else(|| Error::DigestMismatch {
            context: format!("pulling blob {expected}"),
            expected: expected.to_string(),
            actual: "a digest algorithm this client does not compute".to_string(),
        })?;
        Ok(Self {
            size: descriptor.size(),
            written: 0,
            expected,
            hasher: Some(hasher),
        })
    }

    /// A transfer cut short: retryable, it resumes where it stopped.
    fn stopped(&self, context: &str, source: Box<dyn std::error::Error + Send + Sync>) -> Error {
        Error::Transport {
            context: format!(
                "{context}: the transfer stopped after {} of {} bytes",
                self.written, self.size
            ),
            retryable: true,
            hint: None,
            source,
        }
    }

    fn add(&mut self, chunk: &[u8], context: &str) -> Result<()> {
        let len = chunk.len() as u64;
        if self.written + len > self.size {
            return Err(Error::SizeMismatch {
                context: context.to_string(),
                expected: self.size,
                actual: self.written + len,
            });
        }
        if let Some(h) = &mut self.hasher {
            h.update(chunk);
        }
        self.written += len;
        Ok(())
    }

    fn verify(&mut self, context: &str) -> Result<()> {
        if self.written != self.size {
            return Err(Error::SizeMismatch {
                context: context.to_string(),
                expected: self.size,
                actual: self.written,
            });
        }
        let actual = self.hasher.take().map(Hasher::finish).unwrap_or_default();
        if actual != self.expected.to_string() {
            return Err(Error::DigestMismatch {
                context: context.to_string(),
                expected: self.expected.to_string(),
                actual,
            });
        }
        Ok(())
    }
}
