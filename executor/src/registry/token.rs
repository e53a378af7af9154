//! The registry's auth challenge (`WWW-Authenticate` on `GET /v2/`) and the
//! token exchange of Docker's token protocol.
//!
//! Ours rather than oci-client's: oci-client asks for a token scoped to one
//! repository only (a cross-repository mount needs pull on the source and
//! push on the target in one token), does not exchange identity tokens
//! (OAuth2 refresh tokens) and drops the token endpoint's error.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::auth::Credential;
use super::error::{Error, Result};

/// How a registry asks to be authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `GET /v2/` answered 200: no authentication.
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Reads `WWW-Authenticate` header values; Bearer is preferred over Basic.
pub(crate) fn parse_challenge<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
    let mut basic = false;
    for value in values {
        let Ok(challenges) = http_auth::parse_challenges(value) else {
            continue;
        };
        for c in challenges {
            if c.scheme.eq_ignore_ascii_case("bearer") {
                let param = |name: &str| {
                    c.params
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.to_unescaped())
                };
                if let Some(realm) = param("realm") {
                    return Some(Challenge::Bearer {
                        realm,
                        service: param("service"),
                    });
                }
            } else if c.scheme.eq_ignore_ascii_case("basic") {
                basic = true;
            }
        }
    }
    basic.then_some(Challenge::Basic)
}

/// `repository:NAME:pull` or `repository:NAME:pull,push`.
pub(crate) fn scope(repository: &str, push: bool) -> String {
    format!(
        "repository:{repository}:{}",
        if push { "pull,push" } else { "pull" }
    )
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub value: String,
    pub expires: Instant,
}

impl Token {
    pub fn is_fresh(&self) -> bool {
        Instant::now() < self.expires
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Tokens without `expires_in` last 60 s (the protocol's default); a token
/// is renewed 10 s before it runs out.
fn lifetime(expires_in: Option<u64>) -> Duration {
    let secs = expires_in.filter(|s| *s > 0).unwrap_or(60);
    Duration::from_secs(secs.saturating_sub(10).max(1))
}

/// Gets a bearer token for `scopes` at the challenge's realm: a GET with
/// basic credentials (or none), or the OAuth2 refresh-token POST for an
/// identity token.
pub(crate) async fn fetch_token(
    http: &reqwest::Client,
    host: &str,
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
    credential: &Credential,
) -> Result<Token> {
    let context = || format!("getting a token for {} from {realm}", scopes.join(" "));
    let mut url = reqwest::Url::parse(realm).map_err(|e| Error::Transport {
        context: format!("registry {host} names an invalid token endpoint {realm:?}"),
        retryable: false,
        hint: None,
        source: Box::new(e),
    })?;
    let request = if let Credential::IdentityToken(refresh) = credential {
        let mut form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", refresh.clone()),
            ("client_id", "executor".to_string()),
            ("scope", scopes.join(" ")),
        ];
        if let Some(service) = service {
            form.push(("service", service.to_string()));
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        http.post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
    } else {
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = service {
                q.append_pair("service", service);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
            if let Credential::Basic { username, .. } = credential {
                q.append_pair("account", username);
            }
        }
        let request = http.get(url);
        match credential {
            Credential::Basic { username, password } => {
                request.basic_auth(username, Some(password))
            }
            _ => request,
        }
    };
    let response = request
        .send()
        .await
        .map_err(|e| Error::http(context(), e))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| Error::http(context(), e))?;
    if !status.is_success() {
        return Err(Error::registry(context(), Some(status.as_u16()), &body));
    }
    let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| Error::Transport {
        context: format!("{}: the answer is not a token", context()),
        retryable: false,
        hint: None,
        source: Box::new(e),
    })?;
    let value = parsed
        .token
        .filter(|t| !t.is_empty())
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Error::registry(context(), Some(status.as_u16()), b"no token in the answer")
        })?;
    Ok(Token {
        value,
        expires: Instant::now() + lifetime(parsed.expires_in),
    })
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge([
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
            ]),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
            })
        );
        assert_eq!(
            parse_challenge([r#"Basic realm="registry""#]),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge([r#"Basic realm="x""#, r#"bearer realm="https://t""#]),
            Some(Challenge::Bearer {
                realm: "https://t".into(),
                service: None
            })
        );
        assert_eq!(parse_challenge(["Negotiate"]), None);
        assert_eq!(parse_challenge(["%%%"]), None);
    }

    #[test]
    fn scopes_and_lifetimes() {
        assert_eq!(
            scope("library/busybox", false),
            "repository:library/busybox:pull"
        );
        assert_eq!(scope("a/b", true), "repository:a/b:pull,push");
        assert_eq!(lifetime(None), Duration::from_secs(50));
        assert_eq!(lifetime(Some(300)), Duration::from_secs(290));
        assert_eq!(lifetime(Some(5)), Duration::from_secs(1));
    }

    #[test]
    fn form_encoding() {
        assert_eq!(
            form_encode("repository:a/b:pull,push x"),
            "repository%3Aa%2Fb%3Apull%2Cpush+x"
        );
    }
}
