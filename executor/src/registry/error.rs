//! The registry module's error: every variant names the image reference (or
//! registry host) it concerns; registry answers keep the registry's own error
//! code and message.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use oci_client::errors::OciDistributionError;
use serde::Deserialize;

use super::auth::AuthError;
use super::reference::ReferenceError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The registry (or its token endpoint) answered with an error status.
    #[error("{context}: {answer}{}", hint_line(.hint.as_deref()))]
    Registry {
        context: String,
        answer: RegistryAnswer,
        hint: Option<String>,
    },
    /// The request did not get an answer (connection refused or dropped,
    /// TLS, timeout), or oci-client failed in a way that carries no status.
    #[error("{context}{}", hint_line(.hint.as_deref()))]
    Transport {
        context: String,
        retryable: bool,
        hint: Option<String>,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Nothing moved for the idle timeout (`--registry-timeout`): no
    /// answer, no byte of a download, no byte of an upload taken.
    #[error("{context}: the registry sent or took nothing for {} s", .idle.as_secs())]
    Timeout { context: String, idle: Duration },
    /// An https request met a server that does not speak TLS (most likely
    /// a plain-HTTP registry). Never retried: it will not change.
    #[error(
        "{context}: {host} does not speak TLS (it answered the TLS handshake with something else)\nhint: if {host} serves plain HTTP, pass --insecure-registry {host}{}",
        insecure_flag(*.push)
    )]
    NotTls {
        context: String,
        host: String,
        /// Whether the request was part of a push (`Some(true)`) or a pull,
        /// for the flag the hint names; `None` when not known.
        push: Option<bool>,
        #[source]
        source: reqwest::Error,
    },
    /// The registry wants credentials and the docker config has none for it.
    #[error(
        "{context}: registry {host} asks for credentials and none for {host} were found in {config}\nhint: add them with `docker login {host}` (or an `auths` entry for {host}), or point DOCKER_CONFIG at the directory of the config.json that has them"
    )]
    NoCredentials {
        context: String,
        host: String,
        /// The docker config read, or the places searched when none exists.
        config: String,
    },
    /// The registry refused the credentials the docker config has for it.
    #[error(
        "{context}: registry {host} refused the credentials for {host} as {user} (from {config})\nhint: check the password or token of {user} for {host} in {config}, or log in again with `docker login {host}`"
    )]
    CredentialsRefused {
        context: String,
        host: String,
        /// The user name, or what kind of token was presented.
        user: String,
        config: String,
    },
    #[error(
        "{reference}: the image index has no manifest for platform {platform} (it has: {available})"
    )]
    NoMatchingPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("{reference}: unsupported manifest type {media_type}")]
    UnsupportedManifest {
        reference: String,
        media_type: String,
    },
    #[error("{reference}: the manifest is not valid JSON of its type")]
    InvalidManifest {
        reference: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{context}: got {actual} bytes, the descriptor says {expected}")]
    SizeMismatch {
        context: String,
        expected: u64,
        actual: u64,
    },
    #[error("{context}: the content's digest is {actual}, expected {expected}")]
    DigestMismatch {
        context: String,
        expected: String,
        actual: String,
    },
    #[error(
        "pushing manifest {reference}: the registry does not have blob {digest} it refers to\nhint: push every blob before the manifest"
    )]
    MissingBlob { reference: String, digest: String },
    #[error("{context}: reading the blob to upload")]
    Source {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: writing the downloaded blob")]
    Sink {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the CA certificate {path} given for registry {host}")]
    Certificate {
        host: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up an HTTP client for registry {host}")]
    ClientSetup {
        host: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn hint_line(hint: Option<&str>) -> String {
    hint.map(|h| format!("\nhint: {h}")).unwrap_or_default()
}

/// kaniko's flags for plain HTTP: `--insecure` for pushes only,
/// `--insecure-pull` for pulls.
fn insecure_flag(push: Option<bool>) -> &'static str {
    match push {
        Some(true) => " (or --insecure for every push)",
        Some(false) => " (or --insecure-pull for every pull)",
        None => " (or --insecure for every push, --insecure-pull for every pull)",
    }
}

/// What a registry said: the HTTP status and the error codes and messages
/// of its JSON error body (or the body's text when it has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryAnswer {
    pub status: Option<u16>,
    pub errors: Vec<(String, String)>,
    pub text: String,
}

impl RegistryAnswer {
    #[must_use]
    pub fn new(status: Option<u16>, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Envelope {
            errors: Vec<Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let errors = serde_json::from_slice::<Envelope>(body)
            .map(|e| e.errors.into_iter().map(|e| (e.code, e.message)).collect())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(body)
            .trim()
            .chars()
            .take(500)
            .collect();
        Self {
            status,
            errors,
            text,
        }
    }

    /// Whether the registry named this error code (`BLOB_UNKNOWN`, ...).
    #[must_use]
    pub fn has_code(&self, code: &str) -> bool {
        self.errors
            .iter()
            .any(|(c, _)| c.eq_ignore_ascii_case(code))
    }
}

impl fmt::Display for RegistryAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the registry answered")?;
        if let Some(status) = self.status {
            let reason = reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            write!(f, " {status} {reason}")?;
        }
        if self.errors.is_empty() {
            if !self.text.is_empty() {
                write!(f, ": {}", self.text)?;
            }
        } else {
            for (i, (code, message)) in self.errors.iter().enumerate() {
                f.write_str(if i == 0 { ": " } else { "; " })?;
                write!(f, "{code}")?;
                if !message.is_empty() {
                    write!(f, " ({message})")?;
                }
            }
        }
        Ok(())
    }
}

impl Error {
    /// Whether trying again may help: 429, 5xx, and requests that got no
    /// answer (refused or dropped connections, timeouts), but not TLS
    /// certificate failures.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Registry { answer, .. } => {
                answer.status.is_some_and(retryable_status) || answer.has_code("TOOMANYREQUESTS")
            }
            Self::Transport { retryable, .. } => *retryable,
            Self::Timeout { .. } => true,
            _ => false,
        }
    }

    /// The HTTP status the registry answered with, if it answered.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Registry { answer, .. } => answer.status,
            _ => None,
        }
    }

    /// The message and its causes on one line, without the hint: what a
    /// warning about a retry says.
    #[must_use]
    pub fn brief(&self) -> String {
        let mut messages = crate::error_chain::messages(self);
        if let Some(first) = messages.first_mut()
            && let Some((message, _hint)) = first.split_once("\nhint: ")
        {
            *first = message.to_string();
        }
        messages.join(": ")
    }

    /// Names the plain-HTTP flag of the side (push or pull) a failed
    /// request was on.
    #[must_use]
    pub(crate) fn on_side(self, is_push: bool) -> Self {
        match self {
            Self::NotTls {
                context,
                host,
                push: None,
                source,
            } => Self::NotTls {
                context,
                host,
                push: Some(is_push),
                source,
            },
            other => other,
        }
    }

    pub(crate) fn registry(context: String, status: Option<u16>, body: &[u8]) -> Self {
        let hint = match status {
            Some(401) => Some(
                "check the credentials for this registry in docker config.json \
                 ($DOCKER_CONFIG, ~/.docker or /kaniko/.docker)"
                    .to_string(),
            ),
            Some(403) => Some("the credentials in use have no access to this repository".into()),
            _ => None,
        };
        Self::Registry {
            context,
            answer: RegistryAnswer::new(status, body),
            hint,
        }
    }

    pub(crate) fn http(context: String, source: reqwest::Error) -> Self {
        if let Some(status) = source.status() {
            return Self::registry(context, Some(status.as_u16()), b"");
        }
        match tls_failure(&source) {
            Some(TlsFailure::NotTls) => {
                let url = source.url();
                let host = url.and_then(reqwest::Url::host_str).unwrap_or("HOST");
                let port = url
                    .and_then(reqwest::Url::port)
                    .map(|p| format!(":{p}"))
                    .unwrap_or_default();
                Self::NotTls {
                    context,
                    host: format!("{host}{port}"),
                    push: None,
                    source,
                }
            }
            Some(TlsFailure::Certificate) => Self::Transport {
                context,
                retryable: false,
                hint: Some(tls_hint()),
                source: Box::new(source),
            },
            None => Self::Transport {
                context,
                retryable: source.is_connect()
                    || source.is_timeout()
                    || source.is_request()
                    || source.is_body()
                    || source.is_decode(),
                hint: None,
                source: Box::new(source),
            },
        }
    }

    /// Translates an oci-client error, keeping the registry's code.
    pub(crate) fn oci(context: String, source: OciDistributionError) -> Self {
        match source {
            OciDistributionError::RegistryError { envelope, .. } => {
                let body = serde_json::to_vec(&envelope).unwrap_or_default();
                let answer = RegistryAnswer::new(None, &body);
                let status = if answer.has_code("TOOMANYREQUESTS") {
                    Some(429)
                } else if answer.has_code("UNAUTHORIZED") {
                    Some(401)
                } else if answer.has_code("DENIED") {
                    Some(403)
                } else {
                    None
                };
                Self::registry(context, status, &body)
            }
            OciDistributionError::ServerError { code, message, .. } => {
                Self::registry(context, Some(code), message.as_bytes())
            }
            OciDistributionError::UnauthorizedError { .. } => {
                Self::registry(context, Some(401), b"")
            }
            OciDistributionError::RequestError(e) => Self::http(context, e),
            OciDistributionError::IoError(e) => Self::Transport {
                context,
                retryable: true,
                hint: None,
                source: Box::new(e),
            },
            other => Self::Transport {
                context,
                retryable: false,
                hint: None,
                source: Box::new(other),
            },
        }
    }
}

pub(crate) fn retryable_status(status: u16) -> bool {
    status == 429 || status == 408 || (500..=599).contains(&status) && status != 501
}

fn tls_hint() -> String {
    "trust the registry's CA with --registry-certificate HOST=PATH, or for a registry you \
     trust, skip verification with --skip-tls-verify-registry HOST"
        .to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsFailure {
    /// The server's certificate is not trusted (or not valid for it).
    Certificate,
    /// The server did not answer in TLS at all.
    NotTls,
}

/// What went wrong in TLS, if anything: rustls's error found in `e`'s
/// chain (an `io::Error` hides its inner error from `source()`, so each one
/// is opened too).
fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        // io::Errors nest (hyper's around tokio-rustls's): open each.
        let mut inner = err;
        while let Some(wrapped) = inner
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            inner = wrapped;
        }
        match inner.downcast_ref::<rustls::Error>() {
            Some(
                rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::UnsupportedNameType,
            ) => return Some(TlsFailure::Certificate),
            Some(rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. }) => {
                return Some(TlsFailure::NotTls);
            }
            _ => {}
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_keep_codes_and_messages() {
        let body = br#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:ab"}]}"#;
        let e = Error::registry("pushing manifest r:1".into(), Some(400), body);
        assert_eq!(
            e.to_string(),
            "pushing manifest r:1: the registry answered 400 Bad Request: MANIFEST_BLOB_UNKNOWN (blob unknown to registry)"
        );
        assert!(!e.is_retryable());
        let e = Error::registry("pulling r".into(), Some(401), b"");
        assert!(
            e.to_string().contains("\nhint: check the credentials"),
            "{e}"
        );
        let e = Error::registry("pulling r".into(), Some(503), b"<html>down</html>");
        assert!(e.is_retryable());
        assert!(
            e.to_string()
                .ends_with("503 Service Unavailable: <html>down</html>"),
            "{e}"
        );
        let e = Error::registry(
            "pulling r".into(),
            None,
            br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#,
        );
        assert!(e.is_retryable());
    }

    #[test]
    fn retryable_statuses() {
        for s in [429, 408, 500, 502, 503, 504] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 405, 501] {
            assert!(!retryable_status(s), "{s}");
        }
    }

    #[tokio::test]
    async fn a_plain_http_server_reached_over_https_is_not_tls_and_not_retried() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        });
        let e = reqwest::Client::new()
            .get(format!("https://127.0.0.1:{port}/v2/"))
            .send()
            .await
            .unwrap_err();
        let e = Error::http("pulling x".into(), e).on_side(false);
        assert!(matches!(e, Error::NotTls { .. }), "{e:?}");
        assert!(!e.is_retryable());
        let text = e.to_string();
        assert_eq!(
            text,
            format!(
                "pulling x: 127.0.0.1:{port} does not speak TLS (it answered the TLS handshake with something else)\nhint: if 127.0.0.1:{port} serves plain HTTP, pass --insecure-registry 127.0.0.1:{port} (or --insecure-pull for every pull)"
            )
        );
        // The warning of a retry has the cause, not the hint.
        assert!(
            e.brief()
                .ends_with("received corrupt message of type InvalidContentType"),
            "{}",
            e.brief()
        );
        assert!(!e.brief().contains("hint"), "{}", e.brief());
    }
}
