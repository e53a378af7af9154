//! [`RegistryClient`], its options, and what its operations share: one
//! oci-client and one reqwest client per host and settings (TLS, plain
//! HTTP), credentials, the auth challenge and tokens, manifest GETs and
//! retries. The operations are in `pull.rs` and `push.rs`.
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
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use oci_client::RegistryOperation;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::token_cache::{RegistryToken, RegistryTokenType};
use oci_spec::image::{Descriptor, Digest, ImageManifest};
use reqwest::header::{ACCEPT, CONTENT_TYPE, WWW_AUTHENTICATE};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use super::auth::{Credential, Keychain};
use super::backoff::Backoff;
use super::error::{Error, Result};
use super::manifest::ACCEPTED_MANIFESTS;
use super::reference::{ImageReference, parse_mirror};
use super::token::{Challenge, Token, fetch_token, parse_challenge, scope};
use super::transfer::{digest_like, sha256};

const USER_AGENT: &str = concat!("executor/", env!("CARGO_PKG_VERSION"));

/// The trusted roots of this machine (`SSL_CERT_FILE`, `SSL_CERT_DIR` or
/// the system store, as rustls-native-certs finds them), in DER, read once
/// per process; `None` when none could be read, and the clients then fall
/// back to reqwest's own platform verifier (which says why).
///
/// reqwest's platform verifier reads the whole store again for every client
/// it builds (each file of `/etc/ssl/certs` opened and parsed), and
/// oci-client builds two clients per host: that was a third of the CPU
/// time of a fully cached build. Sharing the roots keeps its verification
/// (webpki against the same store, as the platform verifier does on Linux).
fn native_roots() -> Option<&'static [Vec<u8>]> {
    static ROOTS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::debug!(%error, "reading the system's trusted certificates");
        }
        found
            .certs
            .iter()
            .map(|der| der.as_ref().to_vec())
            .collect()
    });
    Some(ROOTS.as_slice()).filter(|roots| !roots.is_empty())
}

/// Starts reading [`native_roots`] on a thread of its own, once per
/// process, so that the reading (milliseconds: every file of
/// `/etc/ssl/certs`) overlaps what a command does before its first request;
/// the first handshake waits for what is left of it. Started with the
/// client, unless its options name plain-HTTP registries (see
/// [`RegistryOptions::expects_tls`]): then with the first host that verifies
/// TLS, so that a build that talks only to plain-HTTP registries (a CI
/// job's own, a test's) reads none. The thread runs at the lowest
/// priority: on two cores the 5 ms of CPU they take came out of the pull
/// and the first steps; a handshake that does need them waits, and its
/// thread's core is then free for the reading.
fn preload_native_roots() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        if let Err(error) = std::thread::Builder::new()
            .name("native-roots".into())
            .spawn(|| {
                // This thread's nice value (Linux keeps one per thread).
                if let Err(error) = rustix::process::setpriority_process(None, 19) {
                    tracing::debug!(%error, "cannot lower the priority of reading the trusted roots");
                }
                native_roots();
            })
        {
            tracing::debug!(%error, "cannot start a thread to read the trusted roots; they are read when first needed");
        }
    });
}

/// [`RegistryOptions::timeout`] unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// Time allowed to open a connection (at most `timeout`).
    pub connect_timeout: Duration,
    /// The idle timeout (`--registry-timeout`): a request fails, and is
    /// retried, once nothing has moved for this long (see `idle.rs`).
    pub timeout: Duration,
}

impl RegistryOptions {
    /// Whether the registries are likely all reached over verified TLS: no
    /// plain-HTTP registry named, for one host or every transfer. Such a
    /// client reads the machine's roots from the start
    /// ([`preload_native_roots`]); one that names some reads them with its
    /// first host that needs them.
    #[must_use]
    pub fn expects_tls(&self) -> bool {
        self.insecure.is_empty() && !self.pull.insecure && !self.push.insecure
    }
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
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// An image manifest found for a reference and a platform, with its config.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The manifest, where it was found.
    pub manifest: ResolvedManifest,
    pub config: Vec<u8>,
}

impl ResolvedImage {
    /// The config's digest, as the manifest names it (the config was
    /// checked against it).
    #[must_use]
    pub fn config_digest(&self) -> &Digest {
        self.manifest.manifest.config().digest()
    }

    /// The image's layers, as the manifest lists them.
    #[must_use]
    pub fn layers(&self) -> &[Descriptor] {
        self.manifest.manifest.layers()
    }
}

/// An image manifest found for a reference, before its config is
/// fetched (see [`RegistryClient::resolve_manifest`]).
#[derive(Debug, Clone)]
pub struct ResolvedManifest {
    /// The reference asked for.
    pub reference: ImageReference,
    /// Where the manifest was found, pinned to its digest: pull its blobs
    /// from here.
    pub source: ImageReference,
    /// The digest of the image index the manifest was chosen from, if any.
    pub index_digest: Option<Digest>,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    /// The manifest exactly as served (its digest is `manifest_digest`).
    pub manifest_bytes: Vec<u8>,
    pub manifest: ImageManifest,
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
pub(super) enum Direction {
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
pub(super) struct Host {
    pub(super) name: String,
    /// `https://host[:port]` or `http://...`.
    pub(super) base: String,
    /// oci-client's client, made by [`Host::oci`]: see there.
    oci: LazyLock<std::result::Result<oci_client::Client, String>, OciInit>,
    pub(super) http: reqwest::Client,
    pub(super) challenge: tokio::sync::OnceCell<Challenge>,
    /// Bearer tokens by their space-separated scopes.
    pub(super) tokens: Mutex<HashMap<String, Token>>,
}

impl Host {
    /// oci-client's client for this host, made on first use (usually
    /// already made by the thread [`RegistryClient::host`] starts).
    ///
    /// Why not when the host is: oci-client's constructor also builds a
    /// default reqwest client it throws away, whose platform verifier reads
    /// and parses every file of the system's certificate store (`..Default`
    /// in its `TryFrom<ClientConfig>`; it has no constructor taking a
    /// client). That is milliseconds on the path of every build's first
    /// request. A caller that comes while the thread is still making it
    /// waits for it.
    pub(super) fn oci(&self) -> Result<&oci_client::Client> {
        LazyLock::force(&self.oci)
            .as_ref()
            .map_err(|message| Error::ClientSetup {
                host: self.name.clone(),
                source: message.clone().into(),
            })
    }
}

/// What makes a host's oci-client client, once: its error kept as text,
/// so that every caller that asks gets it.
type OciInit = Box<dyn FnOnce() -> std::result::Result<oci_client::Client, String> + Send>;

pub(super) enum Authorization {
    None,
    Basic(String, String),
    Bearer(String),
}

impl Authorization {
    pub(super) fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
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
        if options.expects_tls() {
            preload_native_roots();
        }
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

    // ---- hosts, auth, retries ---------------------------------------------

    pub(super) fn host(
        &self,
        reference: &ImageReference,
        direction: Direction,
    ) -> Result<Arc<Host>> {
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
        // oci-client's client, which pushes, is made meanwhile, off the
        // path of the first requests (the ping, manifests), which are our
        // own client's; pulls never use it.
        if matches!(direction, Direction::Push) {
            let warm = Arc::clone(&host);
            if let Err(error) = std::thread::Builder::new()
                .name("oci-client".into())
                .spawn(move || drop(warm.oci()))
            {
                tracing::debug!(%error, "cannot start a thread to make oci-client's client; it is made when first used");
            }
        }
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
        // A host reached over verified TLS will want the machine's roots
        // at its first handshake: they are read meanwhile, if they were not
        // from the start (see `RegistryOptions::expects_tls`).
        if !key.plain_http && !key.skip_verify {
            preload_native_roots();
        }
        let connect_timeout = self.connect_timeout();
        let mut http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(connect_timeout)
            .read_timeout(self.idle());
        let mut extra = Vec::new();
        let mut oci_certs = Vec::new();
        if let Some(pem) = &pem {
            extra = CertificateDer::pem_slice_iter(pem)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| setup(Box::new(e)))?;
            if extra.is_empty() {
                return Err(Error::Certificate {
                    host: key.host.clone(),
                    path: key.ca.clone().unwrap_or_default(),
                    source: io::Error::new(
                        io::ErrorKind::InvalidData,
                        "no PEM certificate in the file",
                    ),
                });
            }
            oci_certs = extra
                .iter()
                .map(|der| Certificate {
                    encoding: CertificateEncoding::Der,
                    data: der.to_vec(),
                })
                .collect();
        }
        // The machine's roots (see `native_roots`) plus the host's
        // certificate, read at the first handshake (see `tls.rs`): a
        // plain-HTTP host never waits for them.
        http = if key.skip_verify {
            http.tls_danger_accept_invalid_certs(true)
        } else {
            let tls =
                super::tls::client_config(native_roots, &extra).map_err(|e| setup(Box::new(e)))?;
            http.tls_backend_preconfigured(tls)
        };
        let http = http.build().map_err(|e| setup(Box::new(e)))?;
        let skip_verify = key.skip_verify;
        let protocol = if key.plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        // oci-client's client takes the roots when it is made (on a
        // thread, see `host`, or when first used), with the host's
        // certificate merged into them as `extra_root_certificates`.
        let make_oci = move || {
            let tls_certs_only = if skip_verify {
                Vec::new()
            } else {
                native_roots()
                    .unwrap_or_default()
                    .iter()
                    .map(|der| Certificate {
                        encoding: CertificateEncoding::Der,
                        data: der.clone(),
                    })
                    .collect()
            };
            let config = ClientConfig {
                protocol,
                accept_invalid_certificates: skip_verify,
                use_monolithic_push: true,
                extra_root_certificates: oci_certs,
                tls_certs_only,
                platform_resolver: None,
                connect_timeout: Some(connect_timeout),
                // No read_timeout: reqwest's would bound whole uploads;
                // oci-client calls are watched by `idle` instead.
                read_timeout: None,
                user_agent: USER_AGENT,
                ..ClientConfig::default()
            };
            oci_client::Client::try_from(config).map_err(|e| crate::error_chain::one_line(&e))
        };
        let scheme = if key.plain_http { "http" } else { "https" };
        Ok(Host {
            name: key.host.clone(),
            base: format!("{scheme}://{}", key.host),
            oci: LazyLock::new(Box::new(make_oci)),
            http,
            challenge: tokio::sync::OnceCell::new(),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    pub(super) async fn credential(&self, host: &str) -> Result<Credential> {
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
    pub(super) async fn challenge(&self, host: &Host) -> Result<Challenge> {
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

    pub(super) async fn authorize(&self, host: &Host, scopes: &[String]) -> Result<Authorization> {
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
    pub(super) async fn prepare_oci(
        &self,
        host: &Host,
        reference: &ImageReference,
        push: bool,
    ) -> Result<()> {
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
        let oci = host.oci()?;
        oci.store_auth_if_needed(&host.name, &stored).await;
        oci.tokens
            .insert(reference.oci(), RegistryOperation::Pull, token.clone())
            .await;
        if push {
            oci.tokens
                .insert(reference.oci(), RegistryOperation::Push, token)
                .await;
        }
        Ok(())
    }

    /// GETs a manifest; returns its bytes, `Content-Type` and digest
    /// (checked against the reference's digest when it has one).
    pub(super) async fn fetch_manifest(
        &self,
        host: &Host,
        reference: &ImageReference,
        direction: Direction,
    ) -> Result<(Vec<u8>, Option<String>, Digest)> {
        let context = format!("getting the manifest of {reference}");
        let shown = &context;
        let get = move |auth: Authorization| async move {
            let request = auth.apply(
                host.http
                    .get(manifest_url(host, reference))
                    .header(ACCEPT, ACCEPTED_MANIFESTS.join(", ")),
            );
            let (headers, body) = answer_ok(request, shown).await?;
            let content_type = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            Ok((body, content_type))
        };
        // The first request to a host: its auth challenge (`GET /v2/`) and
        // the manifest without auth are asked for side by side. A registry
        // that wants no auth has then answered both (the manifest's answer
        // is the one the GET after the challenge would have had), and that
        // round trip is saved; else the answer is dropped (a 401, whatever
        // it said) and the manifest asked for as the challenge says. Either
        // way it is a try of the retries, as long as the challenge is not
        // known.
        let fetched = self
            .retrying(direction, &context, || async {
                if host.challenge.get().is_none() {
                    let (challenge, anonymous) =
                        futures_util::future::join(self.challenge(host), get(Authorization::None))
                            .await;
                    if challenge? == Challenge::None {
                        return anonymous;
                    }
                }
                let auth = self
                    .authorize(host, &[scope(reference.repository(), false)])
                    .await?;
                get(auth).await
            })
            .await;
        let (body, content_type) = match fetched {
            Ok(found) => found,
            Err(e) => return Err(self.auth_failure(host, e).await),
        };
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

    /// The idle timeout of every request.
    pub(super) fn idle(&self) -> Duration {
        self.inner.options.timeout
    }

    fn connect_timeout(&self) -> Duration {
        self.inner.options.connect_timeout.min(self.idle())
    }

    /// A 401 told as what it means here: no credentials for the host in
    /// the docker config, or credentials the registry refused.
    pub(super) async fn auth_failure(&self, host: &Host, error: Error) -> Error {
        let context = match &error {
            Error::Registry {
                context, answer, ..
            } if answer.status == Some(401) => context.clone(),
            _ => return error,
        };
        let Ok(credential) = self.credential(&host.name).await else {
            return error;
        };
        let config = self.inner.keychain.describe();
        let host = host.name.clone();
        let user = match credential {
            Credential::Anonymous => {
                return Error::NoCredentials {
                    context,
                    host,
                    config,
                };
            }
            Credential::Basic { username, .. } => username,
            Credential::IdentityToken(_) => "its identity token".to_string(),
            Credential::RegistryToken(_) => "its registry token".to_string(),
        };
        Error::CredentialsRefused {
            context,
            host,
            user,
            config,
        }
    }

    pub(super) fn transfer(&self, direction: Direction) -> TransferOptions {
        match direction {
            Direction::Pull => self.inner.options.pull,
            Direction::Push => self.inner.options.push,
        }
    }

    pub(super) fn backoff(&self, direction: Direction) -> Backoff {
        let o = &self.inner.options;
        Backoff {
            retries: self.transfer(direction).retries,
            initial: o.retry_initial_delay,
            max: o.retry_max_delay,
        }
    }

    /// Sleeps before the next retry if `error` is worth one and retries
    /// are left; else gives `error` back.
    pub(super) async fn wait_or_fail(
        &self,
        direction: Direction,
        backoff: &Backoff,
        retry: &mut u32,
        context: &str,
        error: Error,
    ) -> Result<()> {
        match backoff.delay(*retry) {
            Some(delay) if error.is_retryable() => {
                *retry += 1;
                tracing::warn!(
                    error = %error.brief(),
                    retry = *retry,
                    of = backoff.retries,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "{context}: retrying"
                );
                tokio::time::sleep(delay).await;
                Ok(())
            }
            _ => Err(error.on_side(direction == Direction::Push)),
        }
    }

    pub(super) async fn retrying<T, F, Fut>(
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
                Err(e) => {
                    self.wait_or_fail(direction, &backoff, &mut retry, context, e)
                        .await?;
                }
            }
        }
    }
}

/// Sends `request` and takes its answer: the headers and body of a 200,
/// else the registry's error (with what its body says) about `context`.
pub(super) async fn answer_ok(
    request: reqwest::RequestBuilder,
    context: &str,
) -> Result<(reqwest::header::HeaderMap, bytes::Bytes)> {
    let response = request
        .send()
        .await
        .map_err(|e| Error::http(context.to_owned(), e))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|e| Error::http(context.to_owned(), e))?;
    if status != 200 {
        return Err(Error::registry(context.to_owned(), Some(status), &body));
    }
    Ok((headers, body))
}

pub(super) fn manifest_url(host: &Host, reference: &ImageReference) -> String {
    let target = reference.digest().or(reference.tag()).unwrap_or("latest");
    format!(
        "{}/v2/{}/manifests/{target}",
        host.base,
        reference.repository()
    )
}

pub(super) fn parse_url(url: &str) -> Result<reqwest::Url> {
    reqwest::Url::parse(url).map_err(|e| Error::Transport {
        context: format!("invalid registry URL {url}"),
        retryable: false,
        hint: None,
        source: Box::new(e),
    })
}

/// A `Location` or `Link` target made absolute against the host.
pub(super) fn absolute(host: &Host, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("{}/{}", host.base, location.trim_start_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
