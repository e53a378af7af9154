//! Byte plumbing for blob transfers: digests computed while bytes pass,
//! the upload stream handed to oci-client (which keeps the reader's errors
//! apart from the network's and stops at the declared size), and a reader
//! that an upload can be retried with as long as nothing was read from it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use oci_client::errors::OciDistributionError;
use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::Digest as _;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::io::ReaderStream;

use super::idle::Activity;

/// A running digest of one of the algorithms OCI names.
pub(crate) enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algorithm: &DigestAlgorithm) -> Option<Self> {
        match algorithm {
            DigestAlgorithm::Sha256 => Some(Self::Sha256(sha2::Sha256::new())),
            DigestAlgorithm::Sha384 => Some(Self::Sha384(sha2::Sha384::new())),
            DigestAlgorithm::Sha512 => Some(Self::Sha512(sha2::Sha512::new())),
            _ => None,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha384(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    /// `algorithm:hex`.
    pub fn finish(self) -> String {
        match self {
            Self::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Self::Sha384(h) => format!("sha384:{}", hex::encode(h.finalize())),
            Self::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// The sha256 digest of `data`, `sha256:hex`.
pub(crate) fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// `data`'s digest in `like`'s algorithm (sha256 when it has none we know).
pub(crate) fn digest_like(like: &Digest, data: &[u8]) -> String {
    let mut h =
        Hasher::new(like.algorithm()).unwrap_or_else(|| Hasher::Sha256(sha2::Sha256::new()));
    h.update(data);
    h.finish()
}

/// What an upload stream saw; read after oci-client returns.
#[derive(Default)]
pub(crate) struct UploadState {
    activity: Activity,
    started: AtomicBool,
    sent: AtomicU64,
    overflow: AtomicBool,
    source_error: Mutex<Option<io::Error>>,
}

impl UploadState {
    /// Whether any byte (or read error) came out of the reader.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    /// When the connection last took bytes of the upload.
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// The reader gave more bytes than the blob's size.
    pub fn overflowed(&self) -> bool {
        self.overflow.load(Ordering::SeqCst)
    }

    /// The reader's own error, if it failed.
    pub fn take_source_error(&self) -> Option<io::Error> {
        self.source_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// `reader` as the body stream oci-client uploads, stopping with an error
/// once more than `size` bytes came out.
pub(crate) fn upload_stream<R>(
    reader: R,
    size: u64,
    state: Arc<UploadState>,
) -> impl Stream<Item = Result<Bytes, OciDistributionError>> + Send + 'static
where
    R: AsyncRead + Unpin + Send + 'static,
{
    // 64 KiB pieces: the idle timeout sees an upload move as the
    // connection takes each one.
    ReaderStream::with_capacity(reader, 64 << 10).map(move |item| {
        state.started.store(true, Ordering::SeqCst);
        state.activity.touch();
        match item {
            Ok(bytes) => {
                let len = bytes.len() as u64;
                let sent = state.sent.fetch_add(len, Ordering::SeqCst) + len;
                if sent > size {
                    state.overflow.store(true, Ordering::SeqCst);
                    return Err(OciDistributionError::IoError(io::Error::other(
                        "the blob is longer than its declared size",
                    )));
                }
                Ok(bytes)
            }
            Err(e) => {
                let text = e.to_string();
                *state
                    .source_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(e);
                Err(OciDistributionError::IoError(io::Error::other(text)))
            }
        }
    })
}

/// A reader shared between upload attempts, so that an attempt that failed
/// before reading anything can be made again with it.
pub(crate) struct SharedReader<R>(Arc<Mutex<R>>);

impl<R> SharedReader<R> {
    pub fn new(reader: R) -> Self {
        Self(Arc::new(Mutex::new(reader)))
    }
}

impl<R> Clone for SharedReader<R> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for SharedReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Pin::new(&mut *inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt as _;

    #[test]
    fn digests() {
        assert_eq!(
            sha256(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let like: Digest = "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
            .parse()
            .unwrap();
        assert_eq!(digest_like(&like, b""), like.to_string());
    }

    #[tokio::test]
    async fn upload_stream_stops_past_the_size() {
        let state = Arc::new(UploadState::default());
        let out: Result<Vec<Bytes>, _> = upload_stream(&b"hello world"[..], 5, Arc::clone(&state))
            .try_collect()
            .await;
        assert!(out.is_err());
        assert!(state.overflowed());
        assert!(state.started());

        let state = Arc::new(UploadState::default());
        let out: Vec<Bytes> = upload_stream(&b"hello"[..], 5, Arc::clone(&state))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(out.concat(), b"hello");
        assert_eq!(state.sent(), 5);
        assert!(!state.overflowed());
    }

    #[tokio::test]
    async fn shared_reader_keeps_unread_bytes() {
        use tokio::io::AsyncReadExt as _;
        let shared = SharedReader::new(&b"abc"[..]);
        let unused = Arc::new(UploadState::default());
        drop(upload_stream(shared.clone(), 3, Arc::clone(&unused)));
        assert!(!unused.started());
        let mut s = String::new();
        shared.clone().read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "abc");
    }
}
