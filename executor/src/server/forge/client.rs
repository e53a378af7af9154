//! One forge API endpoint with its token, and the one call the server
//! makes to it: set a commit status. GitHub and Gitea/Forgejo take `POST
//! /repos/{owner}/{repo}/statuses/{sha}`, GitLab `POST
//! /projects/{id}/statuses/{sha}`. The answer is sorted into what the
//! [`Reporter`](super::Reporter) needs to decide: sent, retry later
//! (transport errors, 5xx, rate limits with their delay), or give up (a
//! refusal). A GitLab 400 "Cannot transition status via :run from
//! :running" means the status already is in that state: sent.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, StatusCode};
use reqwest::Url;
use serde::Serialize;

use super::{CommitStatus, ForgeKind, StatusState, Token};

/// How long one status call may take, connection included.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// How much of an error answer's body goes into the error.
const MAX_MESSAGE_CHARS: usize = 300;

/// Why a status was not set.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("invalid {kind} API URL {url:?}")]
    ApiUrl {
        kind: ForgeKind,
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("{kind} API URL {url:?} cannot take a path")]
    ApiUrlBase { kind: ForgeKind, url: String },
    #[error("cannot build the HTTP client for {url}")]
    Client {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot reach {url}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} is rate limited for {retry_after:?}")]
    RateLimited { url: String, retry_after: Duration },
    #[error("{url} answered {status}: {message}")]
    Unavailable {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url} refused the status with {status}: {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
}

/// What the reporter does after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Never: the forge will refuse it again.
    Never,
    /// After the forge's own delay.
    After(Duration),
    /// After the reporter's backoff.
    Backoff,
}

impl StatusError {
    pub(super) fn retry(&self) -> Retry {
        match self {
            Self::Transport { .. } | Self::Unavailable { .. } => Retry::Backoff,
            Self::RateLimited { retry_after, .. } => Retry::After(*retry_after),
            Self::ApiUrl { .. }
            | Self::ApiUrlBase { .. }
            | Self::Client { .. }
            | Self::Refused { .. } => Retry::Never,
        }
    }
}

/// A status the forge accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// GitLab said the status already was in that state.
    pub same_state: bool,
    /// The forge said its rate limit is spent: wait this long before the
    /// next call.
    pub pause: Option<Duration>,
}

/// A forge API: its kind, base URL and token.
#[derive(Debug, Clone)]
pub struct ForgeClient {
    kind: ForgeKind,
    api_url: Url,
    token: Token,
    timeout: Duration,
    http: reqwest::Client,
}

#[derive(Serialize)]
struct GitHubBody<'a> {
    state: &'static str,
    context: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_url: Option<&'a str>,
}

#[derive(Serialize)]
struct GitLabBody<'a> {
    state: &'static str,
    name: &'a str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    git_ref: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_url: Option<&'a str>,
}

impl ForgeClient {
    /// A client of the API at `api_url` (without a trailing `/statuses`
    /// path: `https://api.github.com`, `https://HOST/api/v4`...).
    pub fn new(kind: ForgeKind, api_url: &str, token: Token) -> Result<Self, StatusError> {
        let mut parsed = Url::parse(api_url).map_err(|source| StatusError::ApiUrl {
            kind,
            url: api_url.to_owned(),
            source,
        })?;
        if parsed.cannot_be_a_base() {
            return Err(StatusError::ApiUrlBase {
                kind,
                url: api_url.to_owned(),
            });
        }
        // Joined segment by segment later: drop a trailing slash here.
        if parsed.path().ends_with('/') {
            let trimmed = parsed.path().trim_end_matches('/').to_owned();
            parsed.set_path(&trimmed);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("executor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| StatusError::Client {
                url: api_url.to_owned(),
                source,
            })?;
        Ok(Self {
            kind,
            api_url: parsed,
            token,
            timeout: DEFAULT_TIMEOUT,
            http,
        })
    }

    /// The same client with another time limit per call.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    #[must_use]
    pub fn kind(&self) -> ForgeKind {
        self.kind
    }

    #[must_use]
    pub fn api_url(&self) -> &Url {
        &self.api_url
    }

    /// Sets `status` on a commit of `repository`: `owner/name` on GitHub
    /// and Gitea/Forgejo; the numeric project id or the full path on
    /// GitLab.
    pub async fn set_status(
        &self,
        repository: &str,
        status: &CommitStatus,
    ) -> Result<Sent, StatusError> {
        let url = self.status_url(repository, &status.sha);
        let description = status.description();
        let body = match self.kind {
            ForgeKind::GitHub | ForgeKind::Gitea | ForgeKind::Forgejo => {
                serde_json::to_vec(&GitHubBody {
                    state: github_state(status.state),
                    context: &status.context,
                    description,
                    target_url: status.target_url.as_deref(),
                })
            }
            ForgeKind::GitLab => serde_json::to_vec(&GitLabBody {
                state: gitlab_state(status.state),
                name: &status.context,
                git_ref: status.git_ref.as_deref(),
                pipeline_id: status.pipeline_id,
                description,
                target_url: status.target_url.as_deref(),
            }),
        }
        // Serialising a struct of strings and numbers cannot fail.
        .unwrap_or_default();
        let response = self
            .http
            .post(url.clone())
            .headers(self.headers())
            .timeout(self.timeout)
            .body(body)
            .send()
            .await
            .map_err(|source| StatusError::Transport {
                url: url.to_string(),
                source,
            })?;
        let code = response.status();
        let headers = response.headers().clone();
        if code.is_success() {
            return Ok(Sent {
                same_state: false,
                pause: spent_rate_limit(&headers),
            });
        }
        let text = response.text().await.unwrap_or_default();
        let message = error_message(&text);
        let url = url.to_string();
        if let Some(retry_after) = rate_limited(code, &headers) {
            return Err(StatusError::RateLimited { url, retry_after });
        }
        if self.kind == ForgeKind::GitLab
            && code == StatusCode::BAD_REQUEST
            && is_same_state(&message, gitlab_state(status.state))
        {
            return Ok(Sent {
                same_state: true,
                pause: spent_rate_limit(&headers),
            });
        }
        let status = code.as_u16();
        if code.is_server_error() || code == StatusCode::REQUEST_TIMEOUT {
            Err(StatusError::Unavailable {
                url,
                status,
                message,
            })
        } else {
            Err(StatusError::Refused {
                url,
                status,
                message,
            })
        }
    }

    fn status_url(&self, repository: &str, sha: &str) -> Url {
        let mut url = self.api_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            match self.kind {
                ForgeKind::GitHub | ForgeKind::Gitea | ForgeKind::Forgejo => {
                    segments.push("repos");
                    segments.extend(repository.split('/'));
                }
                // One segment: `push` encodes the path's slashes as %2F.
                ForgeKind::GitLab => {
                    segments.push("projects");
                    segments.push(repository);
                }
            }
            segments.push("statuses");
            segments.push(sha);
        }
        url
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let (name, value) = match self.kind {
            ForgeKind::GitHub => {
                headers.insert(
                    http::header::ACCEPT,
                    HeaderValue::from_static("application/vnd.github+json"),
                );
                headers.insert(
                    "x-github-api-version",
                    HeaderValue::from_static("2022-11-28"),
                );
                (
                    http::header::AUTHORIZATION,
                    format!("Bearer {}", self.token.expose()),
                )
            }
            ForgeKind::Gitea | ForgeKind::Forgejo => (
                http::header::AUTHORIZATION,
                format!("token {}", self.token.expose()),
            ),
            ForgeKind::GitLab => (
                http::header::HeaderName::from_static("private-token"),
                self.token.expose().to_owned(),
            ),
        };
        // A token that is no header value sends no credentials: the forge
        // then refuses the call, which the reporter logs.
        if let Ok(mut value) = HeaderValue::from_str(&value) {
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers
    }
}

fn github_state(state: StatusState) -> &'static str {
    match state {
        StatusState::Pending | StatusState::Running => "pending",
        StatusState::Success => "success",
        StatusState::Failure => "failure",
        StatusState::Error | StatusState::Canceled => "error",
    }
}

fn gitlab_state(state: StatusState) -> &'static str {
    match state {
        StatusState::Pending => "pending",
        StatusState::Running => "running",
        StatusState::Success => "success",
        StatusState::Failure | StatusState::Error => "failed",
        StatusState::Canceled => "canceled",
    }
}

/// GitLab's answer when the status already is `state`: "Cannot
/// transition status via :run from :running".
fn is_same_state(message: &str, state: &str) -> bool {
    message
        .split_once("Cannot transition status via :")
        .and_then(|(_, rest)| rest.split_once(" from :"))
        .is_some_and(|(_, from)| {
            let from: String = from
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            from == state
        })
}

/// The error text of an answer: its JSON `message` when it has one
/// (GitHub, Gitea, GitLab), else the start of the body.
fn error_message(body: &str) -> String {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|value| match value.get("message")? {
            serde_json::Value::String(text) => Some(text.clone()),
            other => Some(other.to_string()),
        })
        .unwrap_or_else(|| body.trim().to_owned());
    message.chars().take(MAX_MESSAGE_CHARS).collect()
}

/// How long to wait when the answer is a rate limit: 429, or 403 with
/// `Retry-After` or a spent `x-ratelimit-remaining` (GitHub's secondary
/// and primary limits).
fn rate_limited(code: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    let limited = code == StatusCode::TOO_MANY_REQUESTS
        || (code == StatusCode::FORBIDDEN
            && (headers.contains_key(http::header::RETRY_AFTER) || remaining(headers) == Some(0)));
    if !limited {
        return None;
    }
    Some(
        retry_after(headers)
            .or_else(|| reset_in(headers))
            .unwrap_or(Duration::from_secs(60)),
    )
}

/// The wait before the next call when a successful answer says the rate
/// limit is spent.
fn spent_rate_limit(headers: &HeaderMap) -> Option<Duration> {
    (remaining(headers) == Some(0))
        .then(|| reset_in(headers))
        .flatten()
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

fn remaining(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, "x-ratelimit-remaining")?.parse().ok()
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = header_str(headers, http::header::RETRY_AFTER.as_str())?;
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// `x-ratelimit-reset` (Unix seconds) as a wait from now.
fn reset_in(headers: &HeaderMap) -> Option<Duration> {
    let reset: u64 = header_str(headers, "x-ratelimit-reset")?.parse().ok()?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(reset);
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn same_state_only_when_gitlab_names_the_state_sent() {
        let msg = "Cannot transition status via :run from :running";
        assert!(is_same_state(msg, "running"));
        assert!(!is_same_state(msg, "success"));
        let msg = "Cannot transition status via :run from :success (Reasons: ...)";
        assert!(!is_same_state(msg, "running"));
        assert!(is_same_state(msg, "success"));
        assert!(!is_same_state("404 Project Not Found", "running"));
    }

    #[test]
    fn rate_limits_are_read_from_the_headers() {
        let none = HeaderMap::new();
        assert_eq!(rate_limited(StatusCode::FORBIDDEN, &none), None);
        let after = headers(&[("retry-after", "7")]);
        assert_eq!(
            rate_limited(StatusCode::FORBIDDEN, &after),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            rate_limited(StatusCode::TOO_MANY_REQUESTS, &after),
            Some(Duration::from_secs(7))
        );
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let reset = (now + 3600).to_string();
        let spent = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &reset),
        ]);
        let wait = rate_limited(StatusCode::FORBIDDEN, &spent).unwrap();
        assert!(wait > Duration::from_secs(3000) && wait <= Duration::from_secs(3600));
        assert!(spent_rate_limit(&spent).is_some());
        let left = headers(&[
            ("x-ratelimit-remaining", "10"),
            ("x-ratelimit-reset", &reset),
        ]);
        assert_eq!(rate_limited(StatusCode::FORBIDDEN, &left), None);
        assert_eq!(spent_rate_limit(&left), None);
    }

    #[test]
    fn gitlab_project_paths_are_one_segment() {
        let client = ForgeClient::new(
            ForgeKind::GitLab,
            "https://gl.example/api/v4/",
            Token::new("t"),
        )
        .unwrap();
        let url = client.status_url("group/sub/project", "abc");
        assert_eq!(
            url.as_str(),
            "https://gl.example/api/v4/projects/group%2Fsub%2Fproject/statuses/abc"
        );
        let client = ForgeClient::new(
            ForgeKind::GitHub,
            "https://ghe.example/api/v3",
            Token::new("t"),
        )
        .unwrap();
        let url = client.status_url("owner/repo", "abc");
        assert_eq!(
            url.as_str(),
            "https://ghe.example/api/v3/repos/owner/repo/statuses/abc"
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let client = ForgeClient::new(
            ForgeKind::GitHub,
            "https://api.github.com",
            Token::new("ghp_s3cr3t"),
        )
        .unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("ghp_s3cr3t"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
