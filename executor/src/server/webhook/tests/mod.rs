//! The receiver against real deliveries: the GitHub (octokit) and GitLab
//! (Woodpecker) payload fixtures in `../shared/fixtures/webhooks/`, read
//! in place and signed here as the forge would; Gitea and Forgejo through
//! the GitHub shapes with their own headers. Then every way a delivery
//! can be wrong, and random bytes, none of which may panic.

use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderValue};
use serde_json::Value;

use super::*;

mod github;
mod gitlab;
mod rejections;

const SECRET: &[u8] = b"webhook test secret";

fn fixtures() -> PathBuf {
    let dir = std::env::var_os("EXECUTOR_WEBHOOK_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/webhooks"),
        PathBuf::from,
    );
    assert!(
        dir.join("github").is_dir(),
        "webhook fixtures not found at {}\nhint: set EXECUTOR_WEBHOOK_FIXTURES or lay out ../shared next to the project root",
        dir.display()
    );
    dir
}

/// The fixture files of one directory, sorted, as (file name, bytes).
fn fixture_files(dir: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fixtures().join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let body = std::fs::read(&path).unwrap();
            (name, body)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn fixture(path: &str) -> Vec<u8> {
    let path = fixtures().join(path);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn edited(path: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(&fixture(path)).unwrap();
    edit(&mut value);
    serde_json::to_vec(&value).unwrap()
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

/// The headers GitHub sends for `body`.
fn github(event: &str, delivery: &str, body: &[u8]) -> HeaderMap {
    headers(&[
        ("x-github-event", event),
        ("x-github-delivery", delivery),
        ("x-hub-signature-256", &github_signature(SECRET, body)),
    ])
}

/// The headers GitLab sends for a delivery.
fn gitlab(event: &str, uuid: &str) -> HeaderMap {
    headers(&[
        ("x-gitlab-event", event),
        ("x-gitlab-event-uuid", uuid),
        ("x-gitlab-token", std::str::from_utf8(SECRET).unwrap()),
    ])
}

fn run(outcome: Result<Outcome>) -> Trigger {
    match outcome {
        Ok(Outcome::Run(trigger)) => *trigger,
        other => panic!("expected a run, got {other:?}"),
    }
}

fn ignored(outcome: Result<Outcome>) -> IgnoreReason {
    match outcome {
        Ok(Outcome::Ignored { reason }) => reason,
        other => panic!("expected an ignored delivery, got {other:?}"),
    }
}

fn rejected(outcome: Result<Outcome>) -> Error {
    match outcome {
        Err(error) => error,
        Ok(other) => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn skip_ci_markers_in_the_head_commit_are_honoured() {
    for message in ["docs only [skip ci]", "[CI SKIP] typo", "wip\n\n[skip ci]"] {
        let body = edited("github/push/with-new-branch.payload.json", |v| {
            v["head_commit"]["message"] = message.into();
        });
        let reason = ignored(receive(
            ForgeKind::GitHub,
            SECRET,
            &github("push", "s", &body),
            &body,
        ));
        assert!(
            matches!(reason, IgnoreReason::SkipCi { .. }),
            "{message:?}: {reason:?}"
        );
    }
    let body = edited("gitlab/HookPullRequestOpened.json", |v| {
        v["object_attributes"]["last_commit"]["message"] = "Edit README [ci skip]".into();
    });
    let reason = ignored(receive(
        ForgeKind::GitLab,
        SECRET,
        &gitlab("Merge Request Hook", "s"),
        &body,
    ));
    assert_eq!(
        reason,
        IgnoreReason::SkipCi {
            marker: "[ci skip]"
        }
    );
    assert_eq!(reason.to_string(), "[ci skip] in the commit message");
    // "skip ci" without brackets is just words.
    let body = edited("github/push/with-new-branch.payload.json", |v| {
        v["head_commit"]["message"] = "do not skip ci here".into();
    });
    run(receive(
        ForgeKind::GitHub,
        SECRET,
        &github("push", "s", &body),
        &body,
    ));
}

#[test]
fn unknown_events_are_ignored_not_rejected() {
    let body = br#"{"action":"opened","issue":{}}"#;
    let reason = ignored(receive(
        ForgeKind::GitHub,
        SECRET,
        &github("issues", "i", body),
        body,
    ));
    assert_eq!(
        reason,
        IgnoreReason::UnsupportedEvent {
            event: "issues".into()
        }
    );
    let reason = ignored(receive(
        ForgeKind::GitLab,
        SECRET,
        &gitlab("Note Hook", "n"),
        body,
    ));
    assert_eq!(reason.label(), "unsupported_event");
}

#[test]
fn forge_is_detected_from_the_event_header() {
    let cases = [
        ("x-github-event", Some(ForgeKind::GitHub)),
        ("x-gitlab-event", Some(ForgeKind::GitLab)),
        ("x-gitea-event", Some(ForgeKind::Gitea)),
        ("x-forgejo-event", Some(ForgeKind::Forgejo)),
        ("x-other-event", None),
    ];
    for (name, expected) in cases {
        assert_eq!(
            ForgeKind::detect(&headers(&[(name, "push")])),
            expected,
            "{name}"
        );
    }
}

#[test]
fn repository_hint_reads_the_name_without_trusting_it() {
    let body = fixture("github/push/with-new-branch.payload.json");
    assert_eq!(
        repository_hint(ForgeKind::GitHub, &body).as_deref(),
        Some("Codertocat/Hello-World")
    );
    let body = fixture("gitlab/HookPush.json");
    assert_eq!(
        repository_hint(ForgeKind::GitLab, &body).as_deref(),
        Some("test/woodpecker")
    );
    assert_eq!(repository_hint(ForgeKind::GitHub, b"{\"repo"), None);
}

#[test]
fn body_limit_is_githubs() {
    assert_eq!(MAX_BODY_BYTES, 25 * 1024 * 1024);
}

#[test]
fn triggers_round_trip_through_json_for_the_queue() {
    let body = fixture("github/pull_request/synchronize.payload.json");
    let trigger = run(receive(
        ForgeKind::GitHub,
        SECRET,
        &github("pull_request", "rt", &body),
        &body,
    ));
    let json = serde_json::to_value(&trigger).unwrap();
    assert_eq!(json["forge"], "github");
    assert_eq!(json["event"]["kind"], "pull_request");
    assert_eq!(json["event"]["action"], "synchronized");
    let back: Trigger = serde_json::from_value(json).unwrap();
    assert_eq!(back, trigger);
}
