//! Proof that a delivery comes from the forge: the HMAC-SHA256 of the raw
//! body under the hook's secret (GitHub's `X-Hub-Signature-256` as
//! `sha256=<hex>`, Gitea's and Forgejo's own headers as bare hex), or
//! GitLab's `X-Gitlab-Token` holding the secret itself. Every comparison
//! is constant-time; nothing here parses the body.

use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{Error, Result, header};

pub(super) const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
pub(super) const GITEA_SIGNATURE: &str = "x-gitea-signature";
pub(super) const FORGEJO_SIGNATURE: &str = "x-forgejo-signature";
const GITLAB_TOKEN: &str = "x-gitlab-token";

fn mac(secret: &[u8], body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length: new_from_slice cannot fail for it.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body);
    mac
}

/// The bare hex HMAC-SHA256 of `body` under `secret`, as Gitea and
/// Forgejo send it; for tests and for signing example deliveries.
#[must_use]
pub fn hex_signature(secret: &[u8], body: &[u8]) -> String {
    hex::encode(mac(secret, body).finalize().into_bytes())
}

/// The `X-Hub-Signature-256` value GitHub sends for `body`.
#[must_use]
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex_signature(secret, body))
}

/// Checks the first of `names` the request carries; a bad value there is
/// not rescued by a good one in a later header.
pub(super) fn verify_hmac(
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    names: &[&'static str],
) -> Result<()> {
    let mut found = None;
    for name in names {
        if let Some(value) =
            header(headers, name).map_err(|_| Error::BadSignature { header: name })?
        {
            found = Some((*name, value));
            break;
        }
    }
    let Some((name, value)) = found else {
        return Err(Error::MissingSignature { header: names[0] });
    };
    let hex_digest = if name == GITHUB_SIGNATURE {
        value
            .trim()
            .strip_prefix("sha256=")
            .ok_or(Error::BadSignature { header: name })?
    } else {
        value.trim()
    };
    let tag = hex::decode(hex_digest).map_err(|_| Error::BadSignature { header: name })?;
    mac(secret, body)
        .verify_slice(&tag)
        .map_err(|_| Error::BadSignature { header: name })
}

/// Checks GitLab's `X-Gitlab-Token` against the secret.
pub(super) fn verify_token(secret: &[u8], headers: &HeaderMap) -> Result<()> {
    let Some(token) = headers.get(GITLAB_TOKEN) else {
        return Err(Error::MissingSignature {
            header: GITLAB_TOKEN,
        });
    };
    // ct_eq on slices of different lengths is false without comparing
    // bytes: the length of the secret is not hidden, its bytes are.
    if bool::from(token.as_bytes().ct_eq(secret)) {
        Ok(())
    } else {
        Err(Error::BadSignature {
            header: GITLAB_TOKEN,
        })
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    /// GitHub's documented test values ("Validating webhook deliveries").
    const DOC_SECRET: &[u8] = b"It's a Secret to Everybody";
    const DOC_PAYLOAD: &[u8] = b"Hello, World!";
    const DOC_SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn github_documented_test_vector() {
        assert_eq!(github_signature(DOC_SECRET, DOC_PAYLOAD), DOC_SIGNATURE);
        let headers = with(GITHUB_SIGNATURE, DOC_SIGNATURE);
        verify_hmac(DOC_SECRET, &headers, DOC_PAYLOAD, &[GITHUB_SIGNATURE]).unwrap();
    }

    #[test]
    fn github_signature_over_other_bytes_or_secret_is_refused() {
        let headers = with(GITHUB_SIGNATURE, DOC_SIGNATURE);
        let err = verify_hmac(DOC_SECRET, &headers, b"Hello, World?", &[GITHUB_SIGNATURE]);
        assert!(matches!(err, Err(Error::BadSignature { .. })), "{err:?}");
        let err = verify_hmac(
            b"another secret",
            &headers,
            DOC_PAYLOAD,
            &[GITHUB_SIGNATURE],
        );
        assert!(matches!(err, Err(Error::BadSignature { .. })), "{err:?}");
    }

    #[test]
    fn github_signature_needs_its_prefix_and_hex() {
        let bare = DOC_SIGNATURE.trim_start_matches("sha256=");
        for value in [bare, "sha1=757107ea", "sha256=zz", "sha256=", ""] {
            let headers = with(GITHUB_SIGNATURE, value);
            let err = verify_hmac(DOC_SECRET, &headers, DOC_PAYLOAD, &[GITHUB_SIGNATURE]);
            assert!(
                matches!(err, Err(Error::BadSignature { .. })),
                "{value:?}: {err:?}"
            );
        }
    }

    #[test]
    fn gitea_signature_is_bare_hex_and_checked_first() {
        let good = hex_signature(DOC_SECRET, DOC_PAYLOAD);
        let names = [GITEA_SIGNATURE, GITHUB_SIGNATURE];
        verify_hmac(
            DOC_SECRET,
            &with(GITEA_SIGNATURE, &good),
            DOC_PAYLOAD,
            &names,
        )
        .unwrap();
        // A bad Gitea signature is not rescued by a good GitHub one.
        let mut headers = with(GITEA_SIGNATURE, &"0".repeat(64));
        headers.insert(GITHUB_SIGNATURE, HeaderValue::from_static(DOC_SIGNATURE));
        let err = verify_hmac(DOC_SECRET, &headers, DOC_PAYLOAD, &names);
        assert!(
            matches!(
                err,
                Err(Error::BadSignature {
                    header: GITEA_SIGNATURE
                })
            ),
            "{err:?}"
        );
        // Without its own header, the GitHub one sent alongside counts.
        let headers = with(GITHUB_SIGNATURE, DOC_SIGNATURE);
        verify_hmac(DOC_SECRET, &headers, DOC_PAYLOAD, &names).unwrap();
    }

    #[test]
    fn missing_signature_names_the_expected_header() {
        let err = verify_hmac(
            DOC_SECRET,
            &HeaderMap::new(),
            DOC_PAYLOAD,
            &[FORGEJO_SIGNATURE],
        );
        assert!(
            matches!(
                err,
                Err(Error::MissingSignature {
                    header: FORGEJO_SIGNATURE
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn gitlab_token_must_equal_the_secret() {
        verify_token(b"s3cret", &with(GITLAB_TOKEN, "s3cret")).unwrap();
        for wrong in ["s3cre", "s3cret2", "S3CRET", ""] {
            let err = verify_token(b"s3cret", &with(GITLAB_TOKEN, wrong));
            assert!(
                matches!(err, Err(Error::BadSignature { .. })),
                "{wrong:?}: {err:?}"
            );
        }
        let err = verify_token(b"s3cret", &HeaderMap::new());
        assert!(
            matches!(err, Err(Error::MissingSignature { .. })),
            "{err:?}"
        );
    }
}
