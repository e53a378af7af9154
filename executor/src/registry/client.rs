//! [`RegistryClient`]: resolve, pull, check, mount and push against OCI
//! distribution registries, with per-host TLS and plain-HTTP settings,
//! Docker config credentials, bearer tokens and retries.
//!
//! oci-client does the blob transfers (HEAD, ranged and verified GETs,
//! streamed monolithic and chunked uploads) and manifest pushes. Our own
//! reqwest calls do what it lacks:
//! - the `/v2/` ping and token exchange ([`super::token`]): tokens are put
//!   into oci-client's token cache before each call, so oci-client never
//!   authenticates on its own;
//! - manifest GETs, because oci-client's raw manifest pull drops the
//!   `Content-Type` and its auth-taking calls cost an extra `/v2/` request
//!   per call on registries without auth;
//! - cross-repository mounts: oci-client's mount asks for a token scoped to
//!   the target only (the registry then refuses to read the source) and
//!   treats the registry's "mount refused, upload started" as an error;
//! - manifest HEADs (every blob and manifest is checked before a manifest
//!   is pushed) and tag listing.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use oci_client::RegistryOperation;
use oci_client::client::{
    BlobResponse, Certificate, CertificateEncoding, ClientConfig, ClientProtocol,
};
use oci_client::secrets::RegistryAuth;
use oci_client::token_cache::{RegistryToken, RegistryTokenType};
use oci_spec::image::{Descriptor, Digest, ImageManifest};
use reqwest::header::{
    ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION, WWW_AUTHENTICATE,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};

use super::auth::{Credential, Keychain};
use super::backoff::Backoff;
use super::error::{Error, Result};
use super::manifest::{
    ACCEPTED_MANIFESTS, Manifest, available_platforms, parse_manifest, references, select_platform,
};
use super::reference::{ImageReference, parse_mirror};
use super::token::{Challenge, Token, fetch_token, parse_challenge, scope};
use super::transfer::{Hasher, SharedReader, UploadState, digest_like, sha256, upload_stream};
use crate::platform::Platform;

const USER_AGENT: &str = concat!("executor/", env!("CARGO_PKG_VERSION"));

/// How to reach registries. Host lists take `host[:port]` as written in
/// image references (`docker.io` or `index.docker.io` for Docker Hub).
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Hosts reached over plain HTTP for pulls and pushes
    /// (`--insecure-registry`).
    pub insecure: Vec<String>,
    /// Hosts whose TLS certificate is not verified
    /// (`--skip-tls-verify-registry`).
    pub skip_tls_verify: Vec<String>,
    /// An extra trusted CA (PEM, one or more certificates) per host
    /// (`--registry-certificate HOST=PATH`).
    pub certificates: Vec<(String, PathBuf)>,
    /// Pull-through mirrors tried in order for Docker Hub images before
    /// Docker Hub itself (`--registry-mirror`).
    pub mirrors: Vec<String>,
    /// Settings for every pull (`--insecure-pull`, `--skip-tls-verify-pull`,
    /// `--image-download-retry`).
    pub pull: TransferOptions,
    /// Settings for every push (`--insecure`, `--skip-tls-verify`,
    /// `--push-retry`).
    pub push: TransferOptions,
    /// The first wait between retries; it doubles up to `retry_max_delay`.
    pub retry_initial_delay: Duration,
    pub retry_max_delay: Duration,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
}

/// Settings that apply to all pulls or all pushes, whatever the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferOptions {
    /// Plain HTTP to every registry.
    pub insecure: bool,
    /// No certificate verification for any registry.
    pub skip_tls_verify: bool,
    /// Retries of a failed request.
    pub retries: u32,
}

impl Default for TransferOptions {
    fn default() -> Self {
        Self {
            insecure: false,
            skip_tls_verify: false,
            retries: Backoff::default().retries,
        }
    }
}

impl Default for RegistryOptions {
    fn default() -> Self {
        let backoff = Backoff::default();
        Self {
            insecure: Vec::new(),
            skip_tls_verify: Vec::new(),
            certificates: Vec::new(),
            mirrors: Vec::new(),
            pull: TransferOptions::default(),
            push: TransferOptions::default(),
            retry_initial_delay: backoff.initial,
            retry_max_delay: backoff.max,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

/// An image manifest found for a reference and a platform, with its config.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The reference asked for.
    pub reference: ImageReference,
    /// Where the manifest was found (a mirror, or the reference's own
    /// registry), pinned to the manifest's digest: pull its blobs from here.
    pub source: ImageReference,
    /// The digest of the image index the manifest was chosen from, if any.
    pub index_digest: Option<Digest>,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    /// The manifest exactly as served (its digest is `manifest_digest`).
    pub manifest_bytes: Vec<u8>,
    pub manifest: ImageManifest,
    pub config_digest: Digest,
    pub config: Vec<u8>,
    pub layers: Vec<Descriptor>,
}

/// What [`RegistryClient::push_blob`] had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPush {
    /// The repository already had the blob.
    Existed,
    Uploaded,
}

/// A registry client; cheap to clone, and safe to use from parallel tasks.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    options: RegistryOptions,
    keychain: Keychain,
    hosts: Mutex<HashMap<HostKey, Arc<Host>>>,
    credentials: tokio::sync::Mutex<HashMap<String, Credential>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Pull,
    Push,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HostKey {
    host: String,
    plain_http: bool,
    skip_verify: bool,
    ca: Option<PathBuf>,
}

/// One registry host with one set of connection settings.
struct Host {
    name: String,
    /// `https://host[:port]` or `http://...`.
    base: String,
    oci: oci_client::Client,
    http: reqwest::Client,
    challenge: tokio::sync::OnceCell<Challenge>,
    /// Bearer tokens by their space-separated scopes.
    tokens: Mutex<HashMap<String, Token>>,
}

enum Authorization {
    None,
    Basic(String, String),
    Bearer(String),
}

impl Authorization {
    fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Self::None => request,
            Self::Basic(u, p) => request.basic_auth(u, Some(p)),
            Self::Bearer(t) => request.bearer_auth(t),
        }
    }
}

impl RegistryClient {
    /// A client with these options and credentials. Mirrors are checked
    /// (see [`parse_mirror`]); certificate files are read when their host is
    /// first used.
    pub fn new(mut options: RegistryOptions, keychain: Keychain) -> Result<Self> {
        options.mirrors = options
            .mirrors
            .iter()
            .map(|m| parse_mirror(m))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                options,
                keychain,
                hosts: Mutex::new(HashMap::new()),
                credentials: tokio::sync::Mutex::new(HashMap::new()),
            }),
        })
    }

    /// A client whose credentials come from the Docker config found from
    /// the environment ([`Keychain::from_env`]).
    pub fn from_env(options: RegistryOptions) -> Result<Self> {
        Self::new(options, Keychain::from_env()?)
    }

    #[must_use]
    pub fn options(&self) -> &RegistryOptions {
        &self.inner.options
    }

    // ---- resolve and pull ------------------------------------------------

    /// Finds the image manifest for `reference` (for an index or manifest
    /// list, the entry for `platform`) and its config. Docker Hub images
    /// are looked for on each mirror first.
    pub async fn resolve(
        &self,
        reference: &ImageReference,
        platform: &Platform,
    ) -> Result<ResolvedImage> {
        let mut candidates = reference.pull_candidates(&self.inner.options.mirrors);
        let last = candidates.pop().unwrap_or_else(|| reference.clone());
        for mirror in &candidates {
            match self.resolve_at(reference, mirror, platform).await {
                Ok(found) => return Ok(found),
                Err(e) => tracing::warn!(
                    mirror = mirror.registry(),
                    error = %e,
                    "registry mirror failed; trying the next source"
                ),
            }
        }
        self.resolve_at(reference, &last, platform).await
    }

    async fn resolve_at(
        &self,
        reference: &ImageReference,
        candidate: &ImageReference,
        platform: &Platform,
    ) -> Result<ResolvedImage> {
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
        let source = candidate.with_digest(digest.as_ref());
        let config_descriptor = manifest.config().clone();
        let mut config = Vec::new();
        self.pull_blob_from(
            &host,
            &source,
            &config_descriptor,
            &mut config,
            &mut Progress::new(&config_descriptor)?,
        )
        .await?;
        Ok(ResolvedImage {
            reference: reference.clone(),
            source,
            index_digest,
            manifest_digest: digest,
            manifest_media_type: media_type,
            manifest_bytes: bytes,
            config_digest: config_descriptor.digest().clone(),
            config,
            layers: manifest.layers().clone(),
            manifest,
        })
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
        let mut candidates = reference.pull_candidates(&self.inner.options.mirrors);
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
                    self.wait_or_fail(&backoff, &mut retry, &context, e).await?;
                }
            }
        }
        writer.flush().await.map_err(|source| Error::Sink {
            context: context.clone(),
            source,
        })?;
        progress.verify(&context)
    }

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
        self.prepare_oci(host, reference, false).await?;
        let digest = descriptor.digest().to_string();
        let oci_err = |e| Error::oci(context.to_string(), e);
        let mut skip = 0;
        let mut stream = if progress.written == 0 {
            host.oci
                .pull_blob_stream(reference.oci(), digest.as_str())
                .await
                .map_err(oci_err)?
                .stream
        } else {
            match host
                .oci
                .pull_blob_stream_partial(reference.oci(), digest.as_str(), progress.written, None)
                .await
                .map_err(oci_err)?
            {
                // The registry ignored the range: skip what we have.
                BlobResponse::Full(s) => {
                    skip = progress.written;
                    s.stream
                }
                BlobResponse::Partial(s) => s.stream,
            }
        };
        while let Some(chunk) = stream.next().await {
            let mut chunk = match chunk {
                Ok(chunk) => chunk,
                // oci-client's own digest check fails at the end of a bad
                // blob; ours says so with the digests.
                Err(_) if progress.written == progress.size => break,
                Err(e) => {
                    return Err(Error::Transport {
                        context: format!(
                            "{context}: the transfer stopped after {} of {} bytes",
                            progress.written, progress.size
                        ),
                        retryable: true,
                        hint: None,
                        source: Box::new(e),
                    });
                }
            };
            if skip > 0 {
                let n = usize::try_from(skip).unwrap_or(usize::MAX).min(chunk.len());
                let _ = chunk.split_to(n);
                skip -= n as u64;
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
            return Err(Error::Transport {
                context: format!(
                    "{context}: the transfer stopped after {} of {} bytes",
                    progress.written, progress.size
                ),
                retryable: true,
                hint: None,
                source: Box::new(io::Error::from(io::ErrorKind::UnexpectedEof)),
            });
        }
        Ok(())
    }

    // ---- checks ----------------------------------------------------------

    /// Whether `reference`'s repository has the blob `digest`.
    pub async fn blob_exists(&self, reference: &ImageReference, digest: &Digest) -> Result<bool> {
        let host = self.host(reference, Direction::Push)?;
        self.blob_exists_at(&host, reference, digest).await
    }

    async fn blob_exists_at(
        &self,
        host: &Host,
        reference: &ImageReference,
        digest: &Digest,
    ) -> Result<bool> {
        let context = format!("checking for blob {digest} in {}", reference.name());
        self.retrying(Direction::Push, &context, || async {
            self.prepare_oci(host, reference, false).await?;
            host.oci
                .blob_exists(reference.oci(), digest.as_ref())
                .await
                .map_err(|e| Error::oci(context.clone(), e))
        })
        .await
    }

    async fn manifest_exists_at(&self, host: &Host, reference: &ImageReference) -> Result<bool> {
        let context = format!("checking for manifest {reference}");
        self.retrying(Direction::Push, &context, || async {
            let auth = self
                .authorize(host, &[scope(reference.repository(), false)])
                .await?;
            let url = manifest_url(host, reference);
            let response = auth
                .apply(
                    host.http
                        .head(&url)
                        .header(ACCEPT, ACCEPTED_MANIFESTS.join(", ")),
                )
                .send()
                .await
                .map_err(|e| Error::http(context.clone(), e))?;
            match response.status().as_u16() {
                200 => Ok(true),
                404 => Ok(false),
                s => Err(Error::registry(context.clone(), Some(s), b"")),
            }
        })
        .await
    }

    // ---- push ------------------------------------------------------------

    /// Mounts blob `digest` from repository `from` into `target` on the same
    /// registry, with one token for pull on `from` and push on `target`.
    /// `false` when the registry will not (the caller then uploads), or when
    /// the two are on different registries.
    pub async fn mount_blob(
        &self,
        target: &ImageReference,
        from: &ImageReference,
        digest: &Digest,
    ) -> Result<bool> {
        if target.host() != from.host() {
            return Ok(false);
        }
        let host = self.host(target, Direction::Push)?;
        let context = format!(
            "mounting blob {digest} from {} into {}",
            from.name(),
            target.name()
        );
        self.retrying(Direction::Push, &context, || async {
            let auth = self
                .authorize(
                    &host,
                    &[scope(target.repository(), true), scope(from.repository(), false)],
                )
                .await?;
            let mut url = parse_url(&format!("{}/v2/{}/blobs/uploads/", host.base, target.repository()))?;
            url.query_pairs_mut()
                .append_pair("mount", digest.as_ref())
                .append_pair("from", from.repository());
            let response = auth
                .apply(host.http.post(url).header(CONTENT_LENGTH, 0))
                .send()
                .await
                .map_err(|e| Error::http(context.clone(), e))?;
            let status = response.status().as_u16();
            match status {
                201 => {
                    tracing::debug!(%digest, from = from.repository(), to = target.repository(), "blob mounted");
                    Ok(true)
                }
                202 => {
                    // Refused, and an upload session was opened instead: close it.
                    if let Some(location) = response.headers().get(LOCATION).and_then(|l| l.to_str().ok()) {
                        let url = absolute(&host, location);
                        let request = host.http.delete(&url);
                        let request = if url.starts_with(&host.base) { auth.apply(request) } else { request };
                        let _ = request.send().await;
                    }
                    tracing::debug!(%digest, from = from.repository(), "mount refused by the registry");
                    Ok(false)
                }
                401 | 403 | 404 => {
                    tracing::debug!(%digest, status, "mount not allowed");
                    Ok(false)
                }
                _ => {
                    let body = response.bytes().await.unwrap_or_default();
                    Err(Error::registry(context.clone(), Some(status), &body))
                }
            }
        })
        .await
    }

    /// Uploads a blob of `size` bytes with digest `digest` from `reader`
    /// into `reference`'s repository, unless it is there already. Streamed
    /// in one PUT. A failed upload is tried again only if it failed before
    /// reading from `reader`; [`Self::push_blob_with`] can reopen the data.
    pub async fn push_blob<R>(
        &self,
        reference: &ImageReference,
        digest: &Digest,
        size: u64,
        reader: R,
    ) -> Result<BlobPush>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let shared = SharedReader::new(reader);
        self.push_blob_inner(reference, digest, size, false, move || {
            let reader = shared.clone();
            async move { Ok(reader) }
        })
        .await
    }

    /// [`Self::push_blob`] with data that `open` can produce again (a file
    /// in the local store): every retry reopens it, and a registry that
    /// refuses a single-PUT upload gets a chunked one.
    pub async fn push_blob_with<F, Fut, R>(
        &self,
        reference: &ImageReference,
        digest: &Digest,
        size: u64,
        open: F,
    ) -> Result<BlobPush>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = io::Result<R>>,
        R: AsyncRead + Unpin + Send + 'static,
    {
        self.push_blob_inner(reference, digest, size, true, open)
            .await
    }

    async fn push_blob_inner<F, Fut, R>(
        &self,
        reference: &ImageReference,
        digest: &Digest,
        size: u64,
        replayable: bool,
        mut open: F,
    ) -> Result<BlobPush>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = io::Result<R>>,
        R: AsyncRead + Unpin + Send + 'static,
    {
        let host = self.host(reference, Direction::Push)?;
        if self.blob_exists_at(&host, reference, digest).await? {
            tracing::debug!(%digest, repository = reference.repository(), "blob exists; not uploading");
            return Ok(BlobPush::Existed);
        }
        let context = format!("pushing blob {digest} to {}", reference.name());
        let backoff = self.backoff(Direction::Push);
        let digest_text = digest.to_string();
        let mut retry = 0;
        let mut chunked = false;
        loop {
            let reader = open().await.map_err(|source| Error::Source {
                context: context.clone(),
                source,
            })?;
            let state = Arc::new(UploadState::default());
            let stream = upload_stream(reader, size, Arc::clone(&state));
            let result = match self.prepare_oci(&host, reference, true).await {
                Err(e) => Err(e),
                Ok(()) if chunked => host
                    .oci
                    .push_blob_stream_chunked(reference.oci(), stream)
                    .await
                    .map(|r| Some(r.blob_digest))
                    .map_err(|e| Error::oci(context.clone(), e)),
                Ok(()) => host
                    .oci
                    .push_blob_stream(reference.oci(), stream, &digest_text, Some(size))
                    .await
                    .map(|_| None)
                    .map_err(|e| Error::oci(context.clone(), e)),
            };
            if let Some(source) = state.take_source_error() {
                return Err(Error::Source { context, source });
            }
            if state.overflowed() || (result.is_ok() && state.sent() != size) {
                return Err(Error::SizeMismatch {
                    context,
                    expected: size,
                    actual: state.sent(),
                });
            }
            let error = match result {
                Ok(Some(actual)) if actual != digest_text => {
                    return Err(Error::DigestMismatch {
                        context,
                        expected: digest_text,
                        actual,
                    });
                }
                Ok(_) => {
                    tracing::debug!(%digest, size, repository = reference.repository(), "blob uploaded");
                    return Ok(BlobPush::Uploaded);
                }
                Err(e) => e,
            };
            if replayable && !chunked && refuses_monolithic(&error) {
                tracing::debug!(error = %error, "single-PUT upload refused; uploading in chunks");
                chunked = true;
                continue;
            }
            if state.started() && !replayable {
                return Err(error);
            }
            self.wait_or_fail(&backoff, &mut retry, &context, error)
                .await?;
        }
    }

    /// Pushes a manifest (an image manifest or an index) as `reference`'s
    /// tag (or by digest when it has none) and returns its digest. Every
    /// blob and manifest it refers to must already be in the repository:
    /// each is checked first, so a registry never holds a manifest whose
    /// blobs are missing.
    pub async fn push_manifest(
        &self,
        reference: &ImageReference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest> {
        let computed = sha256(bytes);
        let context = format!("pushing manifest {reference}");
        if let Some(pinned) = reference.digest()
            && pinned != computed
        {
            return Err(Error::DigestMismatch {
                context,
                expected: pinned.to_string(),
                actual: computed,
            });
        }
        let (manifest, _) = parse_manifest(&reference.to_string(), bytes, Some(media_type))?;
        let host = self.host(reference, Direction::Push)?;
        let (blobs, manifests) = references(&manifest);
        let blob_checks = blobs.iter().map(|b| async {
            let found = self.blob_exists_at(&host, reference, b.digest()).await?;
            Ok::<_, Error>((found, b.digest().to_string()))
        });
        let manifest_checks = manifests.iter().map(|m| async {
            let child = reference.with_digest(m.digest().as_ref());
            let found = self.manifest_exists_at(&host, &child).await?;
            Ok::<_, Error>((found, m.digest().to_string()))
        });
        let mut checks = futures_util::future::try_join_all(blob_checks).await?;
        checks.extend(futures_util::future::try_join_all(manifest_checks).await?);
        if let Some((_, digest)) = checks.into_iter().find(|(found, _)| !found) {
            return Err(Error::MissingBlob {
                reference: reference.to_string(),
                digest,
            });
        }
        let target = match reference.tag() {
            Some(tag) => reference.with_tag(tag),
            None => reference.with_digest(&computed),
        };
        let content_type = HeaderValue::from_str(media_type).map_err(|e| Error::Transport {
            context: format!("{context}: invalid media type {media_type:?}"),
            retryable: false,
            hint: None,
            source: Box::new(e),
        })?;
        let body = Bytes::copy_from_slice(bytes);
        self.retrying(Direction::Push, &context, || async {
            self.prepare_oci(&host, &target, true).await?;
            host.oci
                .push_manifest_raw(target.oci(), body.clone(), content_type.clone())
                .await
                .map_err(|e| Error::oci(context.clone(), e))
        })
        .await?;
        tracing::debug!(reference = %target, digest = %computed, "manifest pushed");
        computed.parse().map_err(|e| Error::Transport {
            context,
            retryable: false,
            hint: None,
            source: Box::new(e),
        })
    }

    /// Tags the manifest `source` names (by tag or digest) as `tag` in the
    /// same repository; returns the manifest's digest.
    pub async fn tag(&self, source: &ImageReference, tag: &str) -> Result<Digest> {
        let target = ImageReference::parse(&format!("{}:{tag}", source.name()))?;
        let host = self.host(source, Direction::Push)?;
        let (bytes, content_type, _) = self.fetch_manifest(&host, source, Direction::Push).await?;
        let (_, media_type) = parse_manifest(&source.to_string(), &bytes, content_type.as_deref())?;
        self.push_manifest(&target, &bytes, &media_type).await
    }

    /// The tags of `reference`'s repository.
    pub async fn list_tags(&self, reference: &ImageReference) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let host = self.host(reference, Direction::Pull)?;
        let context = format!("listing the tags of {}", reference.name());
        let mut url = format!("{}/v2/{}/tags/list", host.base, reference.repository());
        let mut out = Vec::new();
        // Follow `Link: <...>; rel="next"` pages, within reason.
        for _ in 0..1000 {
            let (body, next) = self
                .retrying(Direction::Pull, &context, || async {
                    let auth = self
                        .authorize(&host, &[scope(reference.repository(), false)])
                        .await?;
                    let response = auth
                        .apply(host.http.get(&url))
                        .send()
                        .await
                        .map_err(|e| Error::http(context.clone(), e))?;
                    let status = response.status().as_u16();
                    let next = response
                        .headers()
                        .get(reqwest::header::LINK)
                        .and_then(|l| l.to_str().ok())
                        .and_then(next_link);
                    let body = response
                        .bytes()
                        .await
                        .map_err(|e| Error::http(context.clone(), e))?;
                    if status != 200 {
                        return Err(Error::registry(context.clone(), Some(status), &body));
                    }
                    Ok((body, next))
                })
                .await?;
            let tags: Tags = serde_json::from_slice(&body).map_err(|e| Error::Transport {
                context: format!("{context}: the answer is not a tag list"),
                retryable: false,
                hint: None,
                source: Box::new(e),
            })?;
            out.extend(tags.tags.unwrap_or_default());
            match next {
                Some(next) => url = absolute(&host, &next),
                None => break,
            }
        }
        Ok(out)
    }

    // ---- hosts, auth, retries ---------------------------------------------

    fn host(&self, reference: &ImageReference, direction: Direction) -> Result<Arc<Host>> {
        let o = &self.inner.options;
        let name = reference.host();
        let named = |h: &String| h == name || h == reference.registry();
        let side = self.transfer(direction);
        let key = HostKey {
            host: name.to_string(),
            plain_http: side.insecure || o.insecure.iter().any(named),
            skip_verify: side.skip_tls_verify || o.skip_tls_verify.iter().any(named),
            ca: o
                .certificates
                .iter()
                .find(|(h, _)| named(h))
                .map(|(_, p)| p.clone()),
        };
        let mut hosts = self
            .inner
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(host) = hosts.get(&key) {
            return Ok(Arc::clone(host));
        }
        let host = Arc::new(self.build_host(&key)?);
        hosts.insert(key, Arc::clone(&host));
        Ok(host)
    }

    fn build_host(&self, key: &HostKey) -> Result<Host> {
        let setup = |source: Box<dyn std::error::Error + Send + Sync>| Error::ClientSetup {
            host: key.host.clone(),
            source,
        };
        let pem = match &key.ca {
            Some(path) => Some(std::fs::read(path).map_err(|source| Error::Certificate {
                host: key.host.clone(),
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let mut http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(self.inner.options.connect_timeout)
            .danger_accept_invalid_certs(key.skip_verify);
        let mut oci_certs = Vec::new();
        if let Some(pem) = &pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| setup(Box::new(e)))?;
            if certs.is_empty() {
                return Err(Error::Certificate {
                    host: key.host.clone(),
                    path: key.ca.clone().unwrap_or_default(),
                    source: io::Error::new(
                        io::ErrorKind::InvalidData,
                        "no PEM certificate in the file",
                    ),
                });
            }
            http = http.tls_certs_merge(certs);
            oci_certs = split_pem(pem)
                .into_iter()
                .map(|data| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data,
                })
                .collect();
        }
        let http = http.build().map_err(|e| setup(Box::new(e)))?;
        let config = ClientConfig {
            protocol: if key.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: key.skip_verify,
            use_monolithic_push: true,
            extra_root_certificates: oci_certs,
            platform_resolver: None,
            connect_timeout: Some(self.inner.options.connect_timeout),
            user_agent: USER_AGENT,
            ..ClientConfig::default()
        };
        let oci = oci_client::Client::try_from(config).map_err(|e| setup(Box::new(e)))?;
        let scheme = if key.plain_http { "http" } else { "https" };
        Ok(Host {
            name: key.host.clone(),
            base: format!("{scheme}://{}", key.host),
            oci,
            http,
            challenge: tokio::sync::OnceCell::new(),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    async fn credential(&self, host: &str) -> Result<Credential> {
        let mut cache = self.inner.credentials.lock().await;
        if let Some(c) = cache.get(host) {
            return Ok(c.clone());
        }
        let credential = self.inner.keychain.credential(host).await?;
        tracing::debug!(host, ?credential, "registry credential");
        cache.insert(host.to_string(), credential.clone());
        Ok(credential)
    }

    /// How `host` wants to be authenticated, from `GET /v2/` (asked once).
    async fn challenge(&self, host: &Host) -> Result<Challenge> {
        host.challenge
            .get_or_try_init(|| async {
                let url = format!("{}/v2/", host.base);
                let context = format!("contacting registry {} at {url}", host.name);
                let response = host
                    .http
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| Error::http(context.clone(), e))?;
                let status = response.status();
                if status.is_success() {
                    return Ok(Challenge::None);
                }
                let values: Vec<String> = response
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_string))
                    .collect();
                if status == reqwest::StatusCode::UNAUTHORIZED
                    && let Some(c) = parse_challenge(values.iter().map(String::as_str))
                {
                    return Ok(c);
                }
                let body = response.bytes().await.unwrap_or_default();
                Err(Error::registry(context, Some(status.as_u16()), &body))
            })
            .await
            .cloned()
    }

    async fn authorize(&self, host: &Host, scopes: &[String]) -> Result<Authorization> {
        let challenge = self.challenge(host).await?;
        if challenge == Challenge::None {
            return Ok(Authorization::None);
        }
        let credential = self.credential(&host.name).await?;
        Ok(match (challenge, credential) {
            (_, Credential::RegistryToken(token)) => Authorization::Bearer(token),
            (Challenge::Basic, Credential::Basic { username, password }) => {
                Authorization::Basic(username, password)
            }
            (Challenge::Bearer { realm, service }, credential) => {
                let key = scopes.join(" ");
                let cached = host
                    .tokens
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&key)
                    .filter(|t| t.is_fresh())
                    .cloned();
                let token = if let Some(t) = cached {
                    t
                } else {
                    {
                        let t = fetch_token(
                            &host.http,
                            &host.name,
                            &realm,
                            service.as_deref(),
                            scopes,
                            &credential,
                        )
                        .await?;
                        host.tokens
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(key, t.clone());
                        t
                    }
                };
                Authorization::Bearer(token.value)
            }
            // A Basic challenge without credentials: go unauthenticated and
            // let the registry's 401 say so.
            (Challenge::Basic | Challenge::None, _) => Authorization::None,
        })
    }

    /// Puts our authorization for `reference` into oci-client's token
    /// cache, for the pull operation and (with `push`) the push one.
    async fn prepare_oci(&self, host: &Host, reference: &ImageReference, push: bool) -> Result<()> {
        let auth = self
            .authorize(host, &[scope(reference.repository(), push)])
            .await?;
        let (stored, token) = match auth {
            Authorization::None => return Ok(()),
            Authorization::Basic(u, p) => (
                RegistryAuth::Basic(u.clone(), p.clone()),
                RegistryTokenType::Basic(u, p),
            ),
            Authorization::Bearer(t) => (
                RegistryAuth::Anonymous,
                RegistryTokenType::Bearer(RegistryToken::Token { token: t }),
            ),
        };
        // oci-client only looks in its token cache for a registry it has
        // credentials for.
        host.oci.store_auth_if_needed(&host.name, &stored).await;
        host.oci
            .tokens
            .insert(reference.oci(), RegistryOperation::Pull, token.clone())
            .await;
        if push {
            host.oci
                .tokens
                .insert(reference.oci(), RegistryOperation::Push, token)
                .await;
        }
        Ok(())
    }

    /// GETs a manifest; returns its bytes, `Content-Type` and digest
    /// (checked against the reference's digest when it has one).
    async fn fetch_manifest(
        &self,
        host: &Host,
        reference: &ImageReference,
        direction: Direction,
    ) -> Result<(Vec<u8>, Option<String>, Digest)> {
        let context = format!("getting the manifest of {reference}");
        let (body, content_type) = self
            .retrying(direction, &context, || async {
                let auth = self
                    .authorize(host, &[scope(reference.repository(), false)])
                    .await?;
                let response = auth
                    .apply(
                        host.http
                            .get(manifest_url(host, reference))
                            .header(ACCEPT, ACCEPTED_MANIFESTS.join(", ")),
                    )
                    .send()
                    .await
                    .map_err(|e| Error::http(context.clone(), e))?;
                let status = response.status().as_u16();
                let content_type = response
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = response
                    .bytes()
                    .await
                    .map_err(|e| Error::http(context.clone(), e))?;
                if status != 200 {
                    return Err(Error::registry(context.clone(), Some(status), &body));
                }
                Ok((body, content_type))
            })
            .await?;
        let digest_text = match reference.digest() {
            Some(pinned) => {
                let pinned: Digest = pinned.parse().map_err(|e| Error::Transport {
                    context: context.clone(),
                    retryable: false,
                    hint: None,
                    source: Box::new(e),
                })?;
                let actual = digest_like(&pinned, &body);
                if actual != pinned.to_string() {
                    return Err(Error::DigestMismatch {
                        context,
                        expected: pinned.to_string(),
                        actual,
                    });
                }
                actual
            }
            None => sha256(&body),
        };
        let digest = digest_text.parse().map_err(|e| Error::Transport {
            context,
            retryable: false,
            hint: None,
            source: Box::new(e),
        })?;
        Ok((body.to_vec(), content_type, digest))
    }

    fn transfer(&self, direction: Direction) -> TransferOptions {
        match direction {
            Direction::Pull => self.inner.options.pull,
            Direction::Push => self.inner.options.push,
        }
    }

    fn backoff(&self, direction: Direction) -> Backoff {
        let o = &self.inner.options;
        Backoff {
            retries: self.transfer(direction).retries,
            initial: o.retry_initial_delay,
            max: o.retry_max_delay,
        }
    }

    /// Sleeps before the next retry if `error` is worth one and retries
    /// are left; else gives `error` back.
    async fn wait_or_fail(
        &self,
        backoff: &Backoff,
        retry: &mut u32,
        context: &str,
        error: Error,
    ) -> Result<()> {
        match backoff.delay(*retry) {
            Some(delay) if error.is_retryable() => {
                *retry += 1;
                tracing::warn!(
                    error = %error,
                    retry = *retry,
                    of = backoff.retries,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "{context}: retrying"
                );
                tokio::time::sleep(delay).await;
                Ok(())
            }
            _ => Err(error),
        }
    }

    async fn retrying<T, F, Fut>(
        &self,
        direction: Direction,
        context: &str,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let backoff = self.backoff(direction);
        let mut retry = 0;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) => self.wait_or_fail(&backoff, &mut retry, context, e).await?,
            }
        }
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

/// Whether an upload failed because the registry does not take a blob in
/// one PUT (so a chunked upload may work).
fn refuses_monolithic(error: &Error) -> bool {
    match error {
        Error::Registry { answer, .. } => {
            matches!(answer.status, Some(405 | 411 | 413 | 416))
                || answer.has_code("BLOB_UPLOAD_INVALID")
                || answer.has_code("SIZE_INVALID")
        }
        _ => false,
    }
}

fn manifest_url(host: &Host, reference: &ImageReference) -> String {
    let target = reference.digest().or(reference.tag()).unwrap_or("latest");
    format!(
        "{}/v2/{}/manifests/{target}",
        host.base,
        reference.repository()
    )
}

fn parse_url(url: &str) -> Result<reqwest::Url> {
    reqwest::Url::parse(url).map_err(|e| Error::Transport {
        context: format!("invalid registry URL {url}"),
        retryable: false,
        hint: None,
        source: Box::new(e),
    })
}

/// A `Location` or `Link` target made absolute against the host.
fn absolute(host: &Host, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("{}/{}", host.base, location.trim_start_matches('/'))
    }
}

/// The target of `rel="next"` in a `Link` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// The `-----BEGIN CERTIFICATE-----` blocks of a PEM file, each on its own.
fn split_pem(pem: &[u8]) -> Vec<Vec<u8>> {
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(end) = rest[start..].find(END) else {
            break;
        };
        let stop = start + end + END.len();
        out.push(format!("{}\n", &rest[start..stop]).into_bytes());
        rest = &rest[stop..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        assert_eq!(
            next_link(r#"</v2/app/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/app/tags/list?n=2&last=b")
        );
        assert_eq!(next_link(r#"<x>; rel="prev""#), None);
    }

    #[test]
    fn pem_bundles_split() {
        let one = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----";
        let bundle = format!("junk\n{one}\n{one}\n");
        let parts = split_pem(bundle.as_bytes());
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], format!("{one}\n").into_bytes());
    }

    #[test]
    fn monolithic_refusals() {
        assert!(refuses_monolithic(&Error::registry(
            "x".into(),
            Some(405),
            b""
        )));
        assert!(!refuses_monolithic(&Error::registry(
            "x".into(),
            Some(400),
            br#"{"errors":[{"code":"DIGEST_INVALID"}]}"#
        )));
    }

    #[test]
    fn host_settings_follow_direction_and_lists() {
        let options = RegistryOptions {
            insecure: vec!["plain.example:5000".into()],
            pull: TransferOptions {
                insecure: true,
                ..TransferOptions::default()
            },
            skip_tls_verify: vec!["docker.io".into()],
            certificates: vec![("ca.example".into(), PathBuf::from("/nonexistent/ca.pem"))],
            ..RegistryOptions::default()
        };
        let client = RegistryClient::new(options, Keychain::anonymous()).unwrap();
        let r = |s: &str| ImageReference::parse(s).unwrap();
        let plain = client
            .host(&r("plain.example:5000/a"), Direction::Push)
            .unwrap();
        assert_eq!(plain.base, "http://plain.example:5000");
        let pull = client.host(&r("other.example/a"), Direction::Pull).unwrap();
        assert_eq!(pull.base, "http://other.example");
        let push = client.host(&r("other.example/a"), Direction::Push).unwrap();
        assert_eq!(push.base, "https://other.example");
        let hub = client.host(&r("busybox"), Direction::Push).unwrap();
        assert_eq!(hub.base, "https://index.docker.io");
        let e = client
            .host(&r("ca.example/a"), Direction::Push)
            .err()
            .expect("a missing CA file is an error");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        assert!(e.to_string().contains("ca.example"), "{e}");
    }

    #[test]
    fn bad_mirrors_are_refused() {
        let options = RegistryOptions {
            mirrors: vec!["mirror.example/path".into()],
            ..RegistryOptions::default()
        };
        let e = RegistryClient::new(options, Keychain::anonymous())
            .err()
            .expect("a mirror with a path is refused");
        assert!(e.to_string().contains("mirror.example/path"), "{e}");
    }
}
