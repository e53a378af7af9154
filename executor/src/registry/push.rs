//! Writing to registries: blob existence checks, cross-repository mounts,
//! streamed blob uploads, manifest pushes that check every referenced blob
//! first, tags.

use std::future::Future;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use oci_spec::image::Digest;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, HeaderValue, LOCATION};
use tokio::io::AsyncRead;

use super::client::{
    Authorization, BlobPush, Direction, Host, RegistryClient, absolute, answer_ok, manifest_url,
    parse_url,
};
use super::error::{Error, Result};
use super::idle::{watched, within};
use super::manifest::{ACCEPTED_MANIFESTS, parse_manifest, references};
use super::reference::ImageReference;
use super::token::scope;
use super::transfer::{SharedReader, UploadState, sha256, upload_stream};

impl RegistryClient {
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
            within(self.idle(), &context, async {
                host.oci()?
                    .blob_exists(reference.oci(), digest.as_ref())
                    .await
                    .map_err(|e| Error::oci(context.clone(), e))
            })
            .await
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

    /// Checks, before anything is built, that the credentials in use may
    /// push to `reference`'s repository, as kaniko's CheckPushPermissions
    /// does: a token with push scope (on registries with tokens), then an
    /// upload session opened and cancelled at once. A 401 says whether the
    /// docker config had no credentials for the host or the registry
    /// refused them ([`Error::NoCredentials`], [`Error::CredentialsRefused`]).
    pub async fn check_push(&self, reference: &ImageReference) -> Result<()> {
        let host = self.host(reference, Direction::Push)?;
        let context = format!("checking push access to {}", reference.name());
        let checked = self
            .retrying(Direction::Push, &context, || async {
                let auth = self
                    .authorize(&host, &[scope(reference.repository(), true)])
                    .await?;
                let url = format!("{}/v2/{}/blobs/uploads/", host.base, reference.repository());
                let response = auth
                    .apply(host.http.post(&url).header(CONTENT_LENGTH, 0))
                    .send()
                    .await
                    .map_err(|e| Error::http(context.clone(), e))?;
                let status = response.status().as_u16();
                match status {
                    202 => {
                        // The session opened: access is proven. It is
                        // closed in the background, off the build's path (a
                        // session left open when the process ends expires
                        // on the registry, as an interrupted push's does).
                        if let Some(request) = cancel_request(&host, &auth, &response) {
                            tokio::spawn(send_cancel(request));
                        }
                        Ok(())
                    }
                    201 => Ok(()),
                    _ => {
                        let body = response.bytes().await.unwrap_or_default();
                        Err(Error::registry(context.clone(), Some(status), &body))
                    }
                }
            })
            .await;
        match checked {
            Ok(()) => {
                tracing::debug!(repository = reference.name(), "push access checked");
                Ok(())
            }
            Err(e) => Err(self.auth_failure(&host, e).await),
        }
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
                    cancel_upload(&host, &auth, &response).await;
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
            let upload = async {
                self.prepare_oci(&host, reference, true).await?;
                if chunked {
                    host.oci()?
                        .push_blob_stream_chunked(reference.oci(), stream)
                        .await
                        .map(|r| Some(r.blob_digest))
                        .map_err(|e| Error::oci(context.clone(), e))
                } else {
                    host.oci()?
                        .push_blob_stream(reference.oci(), stream, &digest_text, Some(size))
                        .await
                        .map(|_| None)
                        .map_err(|e| Error::oci(context.clone(), e))
                }
            };
            let result = watched(self.idle(), state.activity(), &context, upload).await;
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
                return Err(self.auth_failure(&host, error).await);
            }
            let error = self.auth_failure(&host, error).await;
            self.wait_or_fail(Direction::Push, &backoff, &mut retry, &context, error)
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
        self.push_manifest_with(reference, bytes, media_type, &[])
            .await
    }

    /// [`RegistryClient::push_manifest`], not checking again the blobs in
    /// `present`: digests this client has just uploaded or mounted into the
    /// repository (the registry said so), which an image push of many
    /// layers would otherwise ask about once more each.
    pub async fn push_manifest_with(
        &self,
        reference: &ImageReference,
        bytes: &[u8],
        media_type: &str,
        present: &[String],
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
        let blob_checks = blobs
            .iter()
            .filter(|b| !present.iter().any(|p| p == b.digest().as_ref()))
            .map(|b| async {
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
        let pushed = self
            .retrying(Direction::Push, &context, || async {
                self.prepare_oci(&host, &target, true).await?;
                within(self.idle(), &context, async {
                    host.oci()?
                        .push_manifest_raw(target.oci(), body.clone(), content_type.clone())
                        .await
                        .map_err(|e| Error::oci(context.clone(), e))
                })
                .await
            })
            .await;
        if let Err(e) = pushed {
            return Err(self.auth_failure(&host, e).await);
        }
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
                    let (headers, body) =
                        answer_ok(auth.apply(host.http.get(&url)), &context).await?;
                    let next = headers
                        .get(reqwest::header::LINK)
                        .and_then(|l| l.to_str().ok())
                        .and_then(next_link);
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
}

/// Cancels the upload session a `202 Accepted` answer opened (its
/// `Location`), best effort: a registry that will not is left to expire it.
/// Credentials go only to the registry's own host.
async fn cancel_upload(host: &Host, auth: &Authorization, response: &reqwest::Response) {
    if let Some(request) = cancel_request(host, auth, response) {
        send_cancel(request).await;
    }
}

/// Sends a [`cancel_request`]; a failure is only logged (the registry
/// expires the session).
async fn send_cancel(request: reqwest::RequestBuilder) {
    if let Err(e) = request.send().await {
        tracing::debug!(error = %e, "cancelling an upload session");
    }
}

/// The DELETE that closes the upload session `response` opened.
fn cancel_request(
    host: &Host,
    auth: &Authorization,
    response: &reqwest::Response,
) -> Option<reqwest::RequestBuilder> {
    let location = response.headers().get(LOCATION)?.to_str().ok()?;
    let url = absolute(host, location);
    let request = host.http.delete(&url);
    Some(if url.starts_with(&host.base) {
        auth.apply(request)
    } else {
        request
    })
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
}
