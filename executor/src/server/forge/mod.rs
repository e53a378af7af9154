//! Commit statuses back to the forge, per pipeline (context `executor`)
//! and per job (`executor/<job>`): the forge API clients of GitHub,
//! Gitea/Forgejo and GitLab ([`ForgeClient`]), and the [`Reporter`] that
//! queues, coalesces and retries them in the background so that a slow,
//! rate-limited or absent forge never fails or blocks a run. Tokens are
//! held in a [`Token`], which never prints.

mod client;
mod reporter;
#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use client::{ForgeClient, Sent, StatusError};
pub use reporter::{Reporter, ReporterConfig, ReporterStats};

/// The kinds of forge the server talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    GitHub,
    Gitea,
    Forgejo,
    GitLab,
}

impl ForgeKind {
    /// The name in configuration and logs: `github`, `gitea`, `forgejo`,
    /// `gitlab`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::Gitea => "gitea",
            Self::Forgejo => "forgejo",
            Self::GitLab => "gitlab",
        }
    }

    /// The API of the public instance, where there is one; self-hosted
    /// forges are configured with theirs (GitHub Enterprise
    /// `https://HOST/api/v3`, GitLab `https://HOST/api/v4`, Gitea and
    /// Forgejo `https://HOST/api/v1`).
    #[must_use]
    pub fn public_api_url(self) -> Option<&'static str> {
        match self {
            Self::GitHub => Some("https://api.github.com"),
            Self::GitLab => Some("https://gitlab.com/api/v4"),
            Self::Gitea | Self::Forgejo => None,
        }
    }
}

impl fmt::Display for ForgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API token. Its `Debug` never shows it, so it can sit in
/// configuration structs that are logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    #[must_use]
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the request header only.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The state of a pipeline or job, as shown on the commit. Each forge has
/// its own set: GitHub and Gitea show running as pending and canceled as
/// error; GitLab merges failure and error into failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusState {
    Pending,
    Running,
    Success,
    Failure,
    Error,
    Canceled,
}

/// The context (GitLab: name) of the whole pipeline's status.
pub const PIPELINE_CONTEXT: &str = "executor";

/// The context of a job's status: `executor/<job>`.
#[must_use]
pub fn job_context(job: &str) -> String {
    format!("{PIPELINE_CONTEXT}/{job}")
}

/// The longest description sent; GitHub refuses longer ones.
const MAX_DESCRIPTION_CHARS: usize = 140;

/// One status of one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    /// The commit, 40 (or 64) hexadecimal digits.
    pub sha: String,
    /// [`PIPELINE_CONTEXT`] or a [`job_context`].
    pub context: String,
    pub state: StatusState,
    /// A short text; cut to 140 characters when sent.
    pub description: Option<String>,
    /// The run's (or job's) page on the server.
    pub target_url: Option<String>,
    /// The branch or tag (GitLab's `ref`; GitHub and Gitea ignore it).
    pub git_ref: Option<String>,
    /// GitLab's pipeline to attach the status to, when the commit has
    /// several.
    pub pipeline_id: Option<u64>,
}

impl CommitStatus {
    /// A status with no description, link, ref or pipeline.
    #[must_use]
    pub fn new(sha: impl Into<String>, context: impl Into<String>, state: StatusState) -> Self {
        Self {
            sha: sha.into(),
            context: context.into(),
            state,
            description: None,
            target_url: None,
            git_ref: None,
            pipeline_id: None,
        }
    }

    fn description(&self) -> Option<String> {
        self.description
            .as_deref()
            .map(|d| d.chars().take(MAX_DESCRIPTION_CHARS).collect())
    }
}
