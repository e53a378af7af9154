//! Webhook deliveries from GitHub, Gitea, Forgejo and GitLab, turned into
//! one typed [`Trigger`], an [`Outcome::Ignored`] with its reason, or an
//! [`Error`] that says which HTTP status to answer (401 for a missing or
//! bad signature, 400 for a malformed delivery). These are pure functions
//! over the request's headers and exact body bytes: the signature is
//! checked over the raw bytes before any of them is parsed, and nothing
//! here does I/O, queues a run or knows the repository configuration. The
//! HTTP layer caps the body at [`MAX_BODY_BYTES`] before calling in.
//!
//! GitHub, Gitea and Forgejo send the same payload shapes (Gitea names a
//! pull request update `synchronized` where GitHub says `synchronize`);
//! [`github`] reads all three. GitLab's hooks are read by [`gitlab`].

mod github;
mod gitlab;
mod signature;
#[cfg(test)]
mod tests;

use std::fmt;

use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use signature::{github_signature, hex_signature};

use crate::server::forge::ForgeKind;

/// The largest webhook body the server accepts: 25 MB, GitHub's own cap
/// on payloads. The HTTP layer answers 413 past it without buffering the
/// body whole; this module never sees a longer one.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// The longest delivery id kept for deduplication; a longer header is
/// rejected as malformed rather than stored.
const MAX_DELIVERY_ID: usize = 200;

type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a delivery is refused; [`Error::status`] is the HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no webhook secret is configured for this {forge} hook")]
    NoSecret { forge: ForgeKind },
    #[error("missing {header} header")]
    MissingSignature { header: &'static str },
    #[error("the {header} header does not match the body and the hook's secret")]
    BadSignature { header: &'static str },
    #[error("missing {header} header")]
    MissingEvent { header: &'static str },
    #[error("invalid {header} header: {reason}")]
    InvalidHeader {
        header: &'static str,
        reason: &'static str,
    },
    #[error("malformed {forge} {event} payload")]
    Malformed {
        forge: ForgeKind,
        event: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid {forge} {event} payload: {reason}")]
    Invalid {
        forge: ForgeKind,
        event: String,
        reason: String,
    },
}

impl Error {
    /// The HTTP status to answer: 401 when the sender is not proven, 400
    /// when a proven sender sent something unreadable. Never a 5xx: GitLab
    /// disables hooks that keep failing.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoSecret { .. } | Self::MissingSignature { .. } | Self::BadSignature { .. } => {
                StatusCode::UNAUTHORIZED
            }
            Self::MissingEvent { .. }
            | Self::InvalidHeader { .. }
            | Self::Malformed { .. }
            | Self::Invalid { .. } => StatusCode::BAD_REQUEST,
        }
    }
}

/// What a verified delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Run the repository's pipeline at this commit.
    Run(Box<Trigger>),
    /// A genuine delivery that starts nothing: answer 200 with the reason.
    Ignored { reason: IgnoreReason },
}

impl Outcome {
    fn ignored(reason: IgnoreReason) -> Self {
        Self::Ignored { reason }
    }
}

/// Why a genuine delivery starts no run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoreReason {
    /// GitHub's ping when a hook is created.
    Ping,
    /// An event the server does not run pipelines for (issues, releases,
    /// create and delete: tags and branches come with their push event).
    UnsupportedEvent { event: String },
    /// A pull request action other than opened, reopened or new commits.
    UnsupportedAction { event: String, action: String },
    /// A merge request update without new commits (title, labels...).
    NoNewCommits,
    /// A branch or tag deleted.
    RefDeleted { git_ref: String },
    /// A push to a ref that is neither a branch nor a tag.
    UnsupportedRef { git_ref: String },
    /// `[skip ci]` or `[ci skip]` in the head commit message.
    SkipCi { marker: &'static str },
}

impl IgnoreReason {
    /// A short fixed name, for metrics labels.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::UnsupportedEvent { .. } => "unsupported_event",
            Self::UnsupportedAction { .. } => "unsupported_action",
            Self::NoNewCommits => "no_new_commits",
            Self::RefDeleted { .. } => "ref_deleted",
            Self::UnsupportedRef { .. } => "unsupported_ref",
            Self::SkipCi { .. } => "skip_ci",
        }
    }
}

impl fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ping => f.write_str("ping: the hook works"),
            Self::UnsupportedEvent { event } => write!(f, "event {event:?} runs no pipeline"),
            Self::UnsupportedAction { event, action } => {
                write!(f, "{event} action {action:?} runs no pipeline")
            }
            Self::NoNewCommits => f.write_str("merge request updated without new commits"),
            Self::RefDeleted { git_ref } => write!(f, "{git_ref} was deleted"),
            Self::UnsupportedRef { git_ref } => {
                write!(f, "{git_ref} is neither a branch nor a tag")
            }
            Self::SkipCi { marker } => write!(f, "{marker} in the commit message"),
        }
    }
}

/// A repository as a delivery names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    /// `owner/name` (GitLab: the full namespace path).
    pub full_name: String,
    /// The HTTPS clone URL.
    pub clone_url: String,
    /// The forge's numeric id (GitLab's project id, for its status API).
    pub id: Option<u64>,
}

/// What kind of change a trigger stands for, with what only that kind has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// Commits pushed to a branch.
    Push { branch: String },
    /// A tag pushed.
    Tag { tag: String },
    /// A pull (merge) request opened, reopened or given new commits.
    PullRequest(PullRequest),
}

/// What happened to a pull request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullRequestAction {
    Opened,
    Reopened,
    /// New commits pushed to its head (GitHub `synchronize`, Gitea
    /// `synchronized`, GitLab `update` with `oldrev`).
    Synchronized,
}

/// A pull (merge) request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// Its number (GitLab: the merge request's iid).
    pub number: u64,
    pub action: PullRequestAction,
    pub title: String,
    /// The branch it merges into.
    pub base_branch: String,
    /// That branch's commit when the forge says it.
    pub base_sha: Option<String>,
    /// The branch it merges from, in the head repository.
    pub head_branch: String,
    /// The repository the head branch lives in; `None` when the forge no
    /// longer knows it (a deleted fork).
    pub head_repository: Option<Repository>,
    /// Whether the head lives in another repository than the base: its
    /// pipeline then runs without secrets or pushes unless allowed.
    pub fork: bool,
}

/// A delivery that runs a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// The forge that sent it.
    pub forge: ForgeKind,
    /// The forge's id of this delivery, the same on redelivery; without
    /// one, `body-sha256:` and the hex digest of the body.
    pub delivery_id: String,
    /// The repository the pipeline belongs to (a pull request's base).
    pub repository: Repository,
    pub event: Event,
    /// The ref to fetch the commit from: `refs/heads/...`,
    /// `refs/tags/...`, `refs/pull/N/head` or `refs/merge-requests/N/head`.
    pub git_ref: String,
    /// The commit to run, 40 (or 64) hexadecimal digits.
    pub commit: String,
    /// The commit the ref pointed at before, when the forge says it.
    pub before: Option<String>,
    /// The head commit's message when the delivery carries it.
    pub message: Option<String>,
    /// Who caused the delivery (a login or username).
    pub sender: Option<String>,
}

impl Trigger {
    /// The event kind, as `pipeline.yaml`'s `on:` names it.
    #[must_use]
    pub fn kind(&self) -> pipeline_schema::EventKind {
        match self.event {
            Event::Push { .. } => pipeline_schema::EventKind::Push,
            Event::Tag { .. } => pipeline_schema::EventKind::Tag,
            Event::PullRequest(_) => pipeline_schema::EventKind::PullRequest,
        }
    }

    /// The event to match against the pipeline's `on:` triggers: the
    /// branch, the tag, or a pull request's target branch.
    #[must_use]
    pub fn pipeline_event(&self) -> pipeline_schema::Event<'_> {
        let git_ref = match &self.event {
            Event::Push { branch } => branch,
            Event::Tag { tag } => tag,
            Event::PullRequest(pr) => &pr.base_branch,
        };
        pipeline_schema::Event {
            kind: self.kind(),
            git_ref: Some(git_ref),
            changed_paths: None,
        }
    }

    /// The pull request, for pull request triggers.
    #[must_use]
    pub fn pull_request(&self) -> Option<&PullRequest> {
        match &self.event {
            Event::PullRequest(pr) => Some(pr),
            Event::Push { .. } | Event::Tag { .. } => None,
        }
    }
}

impl ForgeKind {
    /// The forge that sent a delivery, by its event header. Gitea also
    /// sends GitHub's headers and Forgejo also Gitea's, so the most
    /// specific one wins.
    #[must_use]
    pub fn detect(headers: &HeaderMap) -> Option<Self> {
        [
            ("x-forgejo-event", Self::Forgejo),
            ("x-gitea-event", Self::Gitea),
            ("x-gitlab-event", Self::GitLab),
            ("x-github-event", Self::GitHub),
        ]
        .into_iter()
        .find(|(name, _)| headers.contains_key(*name))
        .map(|(_, kind)| kind)
    }
}

/// Verifies a delivery from `forge` against the hook's `secret`, then
/// reads it: [`verify`] followed by [`parse`].
pub fn receive(
    forge: ForgeKind,
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Outcome> {
    verify(forge, secret, headers, body)?;
    parse(forge, headers, body)
}

/// Checks that the delivery was signed with `secret`: the HMAC-SHA256 of
/// the body (GitHub, Gitea, Forgejo) or the token (GitLab), compared in
/// constant time. An empty secret proves nothing and refuses everything.
pub fn verify(forge: ForgeKind, secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<()> {
    if secret.is_empty() {
        return Err(Error::NoSecret { forge });
    }
    match forge {
        ForgeKind::GitHub => {
            signature::verify_hmac(secret, headers, body, &[signature::GITHUB_SIGNATURE])
        }
        ForgeKind::Gitea => signature::verify_hmac(
            secret,
            headers,
            body,
            &[signature::GITEA_SIGNATURE, signature::GITHUB_SIGNATURE],
        ),
        ForgeKind::Forgejo => signature::verify_hmac(
            secret,
            headers,
            body,
            &[
                signature::FORGEJO_SIGNATURE,
                signature::GITEA_SIGNATURE,
                signature::GITHUB_SIGNATURE,
            ],
        ),
        ForgeKind::GitLab => signature::verify_token(secret, headers),
    }
}

/// Reads a delivery already verified with [`verify`].
pub fn parse(forge: ForgeKind, headers: &HeaderMap, body: &[u8]) -> Result<Outcome> {
    let outcome = match forge {
        ForgeKind::GitHub | ForgeKind::Gitea | ForgeKind::Forgejo => {
            github::parse(forge, headers, body)?
        }
        ForgeKind::GitLab => gitlab::parse(headers, body)?,
    };
    Ok(match outcome {
        Outcome::Run(trigger) => match skip_marker(&trigger) {
            Some(marker) => Outcome::ignored(IgnoreReason::SkipCi { marker }),
            None => Outcome::Run(trigger),
        },
        ignored @ Outcome::Ignored { .. } => ignored,
    })
}

/// The repository a delivery names, read without verifying it: only to
/// choose which configured hook secret to verify it with.
#[must_use]
pub fn repository_hint(forge: ForgeKind, body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Named {
        full_name: Option<String>,
        path_with_namespace: Option<String>,
    }
    #[derive(Deserialize)]
    struct Envelope {
        repository: Option<Named>,
        project: Option<Named>,
    }
    let envelope: Envelope = serde_json::from_slice(body).ok()?;
    let named = match forge {
        ForgeKind::GitLab => envelope.project?,
        ForgeKind::GitHub | ForgeKind::Gitea | ForgeKind::Forgejo => envelope.repository?,
    };
    named.full_name.or(named.path_with_namespace)
}

/// The markers that skip a run when in the head commit message (or, when
/// the delivery carries no message, a pull request's title); any case.
const SKIP_MARKERS: [&str; 2] = ["[skip ci]", "[ci skip]"];

fn skip_marker(trigger: &Trigger) -> Option<&'static str> {
    let text = trigger
        .message
        .as_deref()
        .or_else(|| trigger.pull_request().map(|pr| pr.title.as_str()))?
        .to_ascii_lowercase();
    SKIP_MARKERS
        .into_iter()
        .find(|marker| text.contains(marker))
}

/// A header's value as text; `None` when absent, an error when not ASCII.
fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<Option<&'h str>> {
    headers
        .get(name)
        .map(|value| {
            value.to_str().map_err(|_| Error::InvalidHeader {
                header: name,
                reason: "not visible ASCII",
            })
        })
        .transpose()
}

/// The event header's value, required.
fn event_header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str> {
    match header(headers, name)? {
        Some(event) if !event.trim().is_empty() => Ok(event.trim()),
        _ => Err(Error::MissingEvent { header: name }),
    }
}

/// The delivery id from the first of `names` present, else the body's
/// digest (the same body is the same delivery).
fn delivery_id(headers: &HeaderMap, names: &[&'static str], body: &[u8]) -> Result<String> {
    for name in names {
        if let Some(id) = header(headers, name)? {
            let id = id.trim();
            if id.is_empty() {
                continue;
            }
            if id.len() > MAX_DELIVERY_ID {
                return Err(Error::InvalidHeader {
                    header: name,
                    reason: "longer than 200 characters",
                });
            }
            return Ok(id.to_owned());
        }
    }
    Ok(format!("body-sha256:{}", hex::encode(Sha256::digest(body))))
}

/// The all-zero object id a forge sends for a ref that does not exist
/// (before a creation, after a deletion).
fn is_zero_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b == b'0')
}

/// Checks an object id from a payload: it goes to `git fetch`, so only
/// 40 (SHA-1) or 64 (SHA-256) hexadecimal digits pass.
fn object_id(forge: ForgeKind, event: &str, what: &str, id: &str) -> Result<String> {
    let ok = matches!(id.len(), 40 | 64) && id.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(Error::Invalid {
            forge,
            event: event.to_owned(),
            reason: format!("{what} {id:?} is not a hexadecimal object id"),
        })
    }
}

/// Checks a ref or branch name from a payload, which also goes to git.
fn ref_name(forge: ForgeKind, event: &str, what: &str, name: &str) -> Result<String> {
    let full = if name.starts_with("refs/") {
        name.to_owned()
    } else {
        format!("refs/heads/{name}")
    };
    if git2::Reference::is_valid_name(&full) {
        Ok(name.to_owned())
    } else {
        Err(Error::Invalid {
            forge,
            event: event.to_owned(),
            reason: format!("{what} {name:?} is not a valid git ref name"),
        })
    }
}

/// A commit as every forge's payload names it.
#[derive(Deserialize)]
struct Commit {
    id: String,
    message: String,
}

/// Decodes a payload as `T`, naming the forge and event on failure.
fn decode<'a, T: Deserialize<'a>>(forge: ForgeKind, event: &str, body: &'a [u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|source| Error::Malformed {
        forge,
        event: event.to_owned(),
        source,
    })
}
