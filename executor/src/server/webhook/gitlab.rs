//! GitLab's `Push Hook`, `Tag Push Hook` and `Merge Request Hook`
//! deliveries. A merge request runs when opened, reopened, or updated with
//! new commits (an `update` carrying `oldrev`); a tag runs at its
//! `checkout_sha`, the commit (its `after` is the annotated tag object).
//! The body's `object_kind` must agree with the `X-Gitlab-Event` header.

use http::HeaderMap;
use serde::Deserialize;

use super::{
    Commit, Error, Event, IgnoreReason, Outcome, PullRequest, PullRequestAction, Repository,
    Result, Trigger, decode, delivery_id, event_header, is_zero_id, object_id, ref_name,
};
use crate::server::forge::ForgeKind;

const FORGE: ForgeKind = ForgeKind::GitLab;
const EVENT_HEADER: &str = "x-gitlab-event";
/// `Idempotency-Key` stays the same when GitLab retries a delivery.
const DELIVERY_HEADERS: &[&str] = &["idempotency-key", "x-gitlab-event-uuid"];

#[derive(Deserialize)]
struct Project {
    id: Option<u64>,
    path_with_namespace: String,
    git_http_url: String,
}

impl From<Project> for Repository {
    fn from(project: Project) -> Self {
        Self {
            full_name: project.path_with_namespace,
            clone_url: project.git_http_url,
            id: project.id,
        }
    }
}

#[derive(Deserialize)]
struct Push {
    object_kind: String,
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    checkout_sha: Option<String>,
    user_username: Option<String>,
    project: Project,
    #[serde(default)]
    commits: Vec<Commit>,
}

#[derive(Deserialize)]
struct MergeRequestEvent {
    object_kind: String,
    user: Option<User>,
    project: Project,
    object_attributes: MergeRequest,
}

#[derive(Deserialize)]
struct User {
    username: Option<String>,
}

#[derive(Deserialize)]
struct MergeRequest {
    iid: u64,
    action: Option<String>,
    oldrev: Option<String>,
    title: String,
    source_branch: String,
    target_branch: String,
    source_project_id: u64,
    target_project_id: u64,
    source: Option<Project>,
    last_commit: Commit,
}

/// Reads a verified GitLab delivery.
pub(super) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Outcome> {
    let event = event_header(headers, EVENT_HEADER)?;
    let expected_kind = match event {
        "Push Hook" => "push",
        "Tag Push Hook" => "tag_push",
        "Merge Request Hook" => "merge_request",
        other => {
            return Ok(Outcome::ignored(IgnoreReason::UnsupportedEvent {
                event: other.to_owned(),
            }));
        }
    };
    let delivery = delivery_id(headers, DELIVERY_HEADERS, body)?;
    if expected_kind == "merge_request" {
        let mr: MergeRequestEvent = decode(FORGE, event, body)?;
        check_kind(event, expected_kind, &mr.object_kind)?;
        merge_request(event, delivery, mr)
    } else {
        let push: Push = decode(FORGE, event, body)?;
        check_kind(event, expected_kind, &push.object_kind)?;
        self::push(event, delivery, push)
    }
}

fn check_kind(event: &str, expected: &str, found: &str) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::Invalid {
            forge: FORGE,
            event: event.to_owned(),
            reason: format!("object_kind {found:?} does not match the {event:?} header"),
        })
    }
}

fn push(event_name: &str, delivery_id: String, push: Push) -> Result<Outcome> {
    let git_ref = ref_name(FORGE, event_name, "ref", &push.git_ref)?;
    let checkout = push.checkout_sha.filter(|sha| !is_zero_id(sha));
    if is_zero_id(&push.after) {
        return Ok(Outcome::ignored(IgnoreReason::RefDeleted { git_ref }));
    }
    let event = match (event_name, &git_ref) {
        ("Push Hook", r) if r.starts_with("refs/heads/") => Event::Push {
            branch: r["refs/heads/".len()..].to_owned(),
        },
        ("Tag Push Hook", r) if r.starts_with("refs/tags/") => Event::Tag {
            tag: r["refs/tags/".len()..].to_owned(),
        },
        _ => return Ok(Outcome::ignored(IgnoreReason::UnsupportedRef { git_ref })),
    };
    let commit = object_id(
        FORGE,
        event_name,
        "checkout_sha",
        checkout.as_deref().unwrap_or(&push.after),
    )?;
    let message = push
        .commits
        .into_iter()
        .find(|c| c.id.eq_ignore_ascii_case(&commit))
        .map(|c| c.message);
    let before = if is_zero_id(&push.before) {
        None
    } else {
        Some(object_id(FORGE, event_name, "before", &push.before)?)
    };
    Ok(Outcome::Run(Box::new(Trigger {
        forge: FORGE,
        delivery_id,
        repository: push.project.into(),
        event,
        git_ref,
        commit,
        before,
        message,
        sender: push.user_username,
    })))
}

fn merge_request(
    event_name: &str,
    delivery_id: String,
    event: MergeRequestEvent,
) -> Result<Outcome> {
    let mr = event.object_attributes;
    let action = mr.action.unwrap_or_default();
    let (action, before) = match (action.as_str(), mr.oldrev) {
        ("open", _) => (PullRequestAction::Opened, None),
        ("reopen", _) => (PullRequestAction::Reopened, None),
        ("update", Some(oldrev)) => (PullRequestAction::Synchronized, Some(oldrev)),
        ("update", None) => return Ok(Outcome::ignored(IgnoreReason::NoNewCommits)),
        _ => {
            return Ok(Outcome::ignored(IgnoreReason::UnsupportedAction {
                event: event_name.to_owned(),
                action,
            }));
        }
    };
    let before = before
        .filter(|rev| !is_zero_id(rev))
        .map(|rev| object_id(FORGE, event_name, "oldrev", &rev))
        .transpose()?;
    let pull_request = PullRequest {
        number: mr.iid,
        action,
        title: mr.title,
        base_branch: ref_name(FORGE, event_name, "target branch", &mr.target_branch)?,
        base_sha: None,
        head_branch: ref_name(FORGE, event_name, "source branch", &mr.source_branch)?,
        head_repository: mr.source.map(Into::into),
        fork: mr.source_project_id != mr.target_project_id,
    };
    Ok(Outcome::Run(Box::new(Trigger {
        forge: FORGE,
        delivery_id,
        repository: event.project.into(),
        event: Event::PullRequest(pull_request),
        git_ref: format!("refs/merge-requests/{}/head", mr.iid),
        commit: object_id(FORGE, event_name, "last commit", &mr.last_commit.id)?,
        before,
        message: Some(mr.last_commit.message),
        sender: event.user.and_then(|u| u.username),
    })))
}
