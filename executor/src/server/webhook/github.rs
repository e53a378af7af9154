//! GitHub's `push`, `pull_request` and `ping` deliveries, and Gitea's and
//! Forgejo's, which have the same shapes: only the header names differ
//! (`X-Gitea-Event`, `X-Forgejo-Delivery`...) and Gitea calls new commits
//! on a pull request `synchronized`. Only the fields a run needs are read;
//! the rest of the payload is skipped unparsed.

use http::HeaderMap;
use serde::Deserialize;

use super::{
    Commit, Event, IgnoreReason, Outcome, PullRequest, PullRequestAction, Repository, Result,
    Trigger, decode, delivery_id, event_header, is_zero_id, object_id, ref_name,
};
use crate::server::forge::ForgeKind;

/// The event and delivery headers of each forge, most specific first.
fn header_names(forge: ForgeKind) -> (&'static str, &'static [&'static str]) {
    match forge {
        ForgeKind::Forgejo => (
            "x-forgejo-event",
            &[
                "x-forgejo-delivery",
                "x-gitea-delivery",
                "x-github-delivery",
            ],
        ),
        ForgeKind::Gitea => ("x-gitea-event", &["x-gitea-delivery", "x-github-delivery"]),
        ForgeKind::GitHub | ForgeKind::GitLab => ("x-github-event", &["x-github-delivery"]),
    }
}

#[derive(Deserialize)]
struct Repo {
    id: Option<u64>,
    full_name: String,
    clone_url: String,
}

impl From<Repo> for Repository {
    fn from(repo: Repo) -> Self {
        Self {
            full_name: repo.full_name,
            clone_url: repo.clone_url,
            id: repo.id,
        }
    }
}

#[derive(Deserialize)]
struct User {
    login: Option<String>,
    username: Option<String>,
}

impl User {
    fn name(self) -> Option<String> {
        self.login.or(self.username)
    }
}

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    head_commit: Option<Commit>,
    repository: Repo,
    sender: Option<User>,
}

#[derive(Deserialize)]
struct PullRequestEvent {
    action: String,
    number: u64,
    before: Option<String>,
    pull_request: PullRequestBody,
    repository: Repo,
    sender: Option<User>,
}

#[derive(Deserialize)]
struct PullRequestBody {
    title: String,
    head: Side,
    base: Side,
}

#[derive(Deserialize)]
struct Side {
    #[serde(rename = "ref")]
    branch: String,
    sha: String,
    repo: Option<Repo>,
    /// Gitea sends the repository's id, and older versions nothing more.
    repo_id: Option<u64>,
}

/// Reads a verified GitHub, Gitea or Forgejo delivery.
pub(super) fn parse(forge: ForgeKind, headers: &HeaderMap, body: &[u8]) -> Result<Outcome> {
    let (event_name, delivery_names) = header_names(forge);
    let event = event_header(headers, event_name)?;
    match event {
        "push" => {
            let delivery = delivery_id(headers, delivery_names, body)?;
            push(forge, delivery, decode(forge, event, body)?)
        }
        "pull_request" => {
            let delivery = delivery_id(headers, delivery_names, body)?;
            pull_request(forge, delivery, decode(forge, event, body)?)
        }
        "ping" => Ok(Outcome::ignored(IgnoreReason::Ping)),
        other => Ok(Outcome::ignored(IgnoreReason::UnsupportedEvent {
            event: other.to_owned(),
        })),
    }
}

fn push(forge: ForgeKind, delivery_id: String, push: Push) -> Result<Outcome> {
    const EVENT: &str = "push";
    let git_ref = ref_name(forge, EVENT, "ref", &push.git_ref)?;
    if push.deleted || is_zero_id(&push.after) {
        return Ok(Outcome::ignored(IgnoreReason::RefDeleted { git_ref }));
    }
    let event = if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        Event::Push {
            branch: branch.to_owned(),
        }
    } else if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        Event::Tag {
            tag: tag.to_owned(),
        }
    } else {
        return Ok(Outcome::ignored(IgnoreReason::UnsupportedRef { git_ref }));
    };
    // A tag's `after` may be the annotated tag object; the head commit is
    // the commit it tags.
    let (commit, message) = match push.head_commit {
        Some(head) => (head.id, Some(head.message)),
        None => (push.after, None),
    };
    let before = if is_zero_id(&push.before) {
        None
    } else {
        Some(object_id(forge, EVENT, "before", &push.before)?)
    };
    Ok(Outcome::Run(Box::new(Trigger {
        forge,
        delivery_id,
        repository: push.repository.into(),
        event,
        git_ref,
        commit: object_id(forge, EVENT, "head commit", &commit)?,
        before,
        message,
        sender: push.sender.and_then(User::name),
    })))
}

fn pull_request(forge: ForgeKind, delivery_id: String, event: PullRequestEvent) -> Result<Outcome> {
    const EVENT: &str = "pull_request";
    let action = match event.action.as_str() {
        "opened" => PullRequestAction::Opened,
        "reopened" => PullRequestAction::Reopened,
        // GitHub says synchronize, Gitea and Forgejo synchronized.
        "synchronize" | "synchronized" => PullRequestAction::Synchronized,
        _ => {
            return Ok(Outcome::ignored(IgnoreReason::UnsupportedAction {
                event: EVENT.to_owned(),
                action: event.action,
            }));
        }
    };
    let pr = event.pull_request;
    let base: Repository = event.repository.into();
    let head_repository: Option<Repository> = pr.head.repo.map(Into::into);
    let fork = match (&head_repository, pr.head.repo_id) {
        (Some(head), _) => !same_repository(head, &base),
        (None, Some(id)) if id != 0 => base.id != Some(id),
        // The head repository is gone (a deleted fork).
        _ => true,
    };
    let before = match event.before.as_deref() {
        Some(before) if action == PullRequestAction::Synchronized && !is_zero_id(before) => {
            Some(object_id(forge, EVENT, "before", before)?)
        }
        _ => None,
    };
    let pull_request = PullRequest {
        number: event.number,
        action,
        title: pr.title,
        base_branch: ref_name(forge, EVENT, "base branch", &pr.base.branch)?,
        base_sha: Some(object_id(forge, EVENT, "base sha", &pr.base.sha)?),
        head_branch: ref_name(forge, EVENT, "head branch", &pr.head.branch)?,
        head_repository,
        fork,
    };
    Ok(Outcome::Run(Box::new(Trigger {
        forge,
        delivery_id,
        repository: base,
        event: Event::PullRequest(pull_request),
        git_ref: format!("refs/pull/{}/head", event.number),
        commit: object_id(forge, EVENT, "head sha", &pr.head.sha)?,
        before,
        message: None,
        sender: event.sender.and_then(User::name),
    })))
}

/// Whether two repositories are one: by id when both have one (a renamed
/// repository keeps it), else by name, which the forges compare ignoring
/// case.
fn same_repository(a: &Repository, b: &Repository) -> bool {
    match (a.id, b.id) {
        (Some(a), Some(b)) => a == b,
        _ => a.full_name.eq_ignore_ascii_case(&b.full_name),
    }
}
