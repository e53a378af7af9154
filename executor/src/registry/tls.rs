//! TLS for the registry client of manifests and blobs: certificates are
//! verified against the machine's roots (and a host's
//! `--registry-certificate`), which are read when the first handshake
//! needs them rather than when the client is made.
//!
//! Reading them means every file of `/etc/ssl/certs` (milliseconds; see
//! `client.rs`'s `native_roots`). reqwest's `tls_certs_only` takes them as
//! the client is built, so the first request to any host waited for them,
//! a plain-HTTP one too (a local registry, `--insecure-registry`), where
//! TLS is used at most after a redirect to HTTPS. This verifier is
//! rustls' own WebPKI verifier, made on first use: the same checks, later.

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A rustls client configuration whose server certificates are checked
/// against `roots()` plus `extra` (a host's own certificates, checked now:
/// one rustls cannot take is an error here), `roots` called on the first
/// handshake.
pub(super) fn client_config(
    roots: fn() -> Option<&'static [Vec<u8>]>,
    extra: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut own = RootCertStore::empty();
    for cert in extra {
        own.add(cert.clone())?;
    }
    let verifier = LazyRoots {
        roots,
        extra: own,
        provider: Arc::clone(&provider),
        verifier: OnceLock::new(),
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// WebPKI verification against roots read on first use (see the module).
struct LazyRoots {
    roots: fn() -> Option<&'static [Vec<u8>]>,
    /// The host's own certificates, the machine's roots added to them.
    extra: RootCertStore,
    provider: Arc<CryptoProvider>,
    verifier: OnceLock<Result<Arc<WebPkiServerVerifier>, String>>,
}

impl std::fmt::Debug for LazyRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyRoots")
            .field("extra", &self.extra.len())
            .field("loaded", &self.verifier.get().is_some())
            .finish_non_exhaustive()
    }
}

impl LazyRoots {
    fn verifier(&self) -> Result<&WebPkiServerVerifier, rustls::Error> {
        let made = self.verifier.get_or_init(|| {
            let mut store = self.extra.clone();
            // As reqwest's `tls_certs_only` did: a root rustls cannot
            // parse is left out, not an error.
            let machine = (self.roots)().unwrap_or_default();
            store.add_parsable_certificates(
                machine
                    .iter()
                    .map(|der| CertificateDer::from(der.as_slice()).into_owned()),
            );
            if store.is_empty() {
                return Err(
                    "no trusted root certificate found on this machine (SSL_CERT_FILE, SSL_CERT_DIR or the system store)"
                        .to_string(),
                );
            }
            WebPkiServerVerifier::builder_with_provider(
                Arc::new(store),
                Arc::clone(&self.provider),
            )
            .build()
            .map_err(|e| e.to_string())
        });
        match made {
            Ok(verifier) => Ok(verifier),
            Err(message) => Err(rustls::Error::General(message.clone())),
        }
    }
}

impl ServerCertVerifier for LazyRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    // The handshake's signatures need no roots: checked as the WebPKI
    // verifier checks them, with the provider's algorithms.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
