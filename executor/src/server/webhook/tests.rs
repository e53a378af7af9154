//! The receiver against real deliveries: the GitHub (octokit) and GitLab
//! (Woodpecker) payload fixtures in `../shared/fixtures/webhooks/`, read
//! in place and signed here as the forge would; Gitea and Forgejo through
//! the GitHub shapes with their own headers. Then every way a delivery
//! can be wrong, and random bytes, none of which may panic.

use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;

use super::*;

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

fn hello_world() -> Repository {
    Repository {
        full_name: "Codertocat/Hello-World".into(),
        clone_url: "https://github.com/Codertocat/Hello-World.git".into(),
        id: Some(186_853_002),
    }
}

#[test]
fn github_push_fixtures() {
    for (name, body) in fixture_files("github/push") {
        let delivery = format!("push-{name}");
        let outcome = receive(
            ForgeKind::GitHub,
            SECRET,
            &github("push", &delivery, &body),
            &body,
        );
        if name.starts_with("with-new-branch") || name.starts_with("with-no-username") {
            let trigger = run(outcome);
            assert_eq!(
                trigger,
                Trigger {
                    forge: ForgeKind::GitHub,
                    delivery_id: delivery,
                    repository: hello_world(),
                    event: Event::Push {
                        branch: "master".into()
                    },
                    git_ref: "refs/heads/master".into(),
                    commit: "6113728f27ae82c7b1a177c8d03f9e96e0adf246".into(),
                    before: None,
                    message: Some("Initial commit".into()),
                    sender: Some("Codertocat".into()),
                },
                "{name}"
            );
        } else {
            // The others delete the tag simple-tag.
            assert_eq!(
                ignored(outcome),
                IgnoreReason::RefDeleted {
                    git_ref: "refs/tags/simple-tag".into()
                },
                "{name}"
            );
        }
    }
}

#[test]
fn github_tag_push_runs_at_the_head_commit() {
    let body = edited("github/push/with-new-branch.payload.json", |v| {
        v["ref"] = "refs/tags/v1.2.0".into();
        // An annotated tag: `after` is the tag object, not the commit.
        v["after"] = "1111111111111111111111111111111111111111".into();
    });
    let trigger = run(receive(
        ForgeKind::GitHub,
        SECRET,
        &github("push", "t", &body),
        &body,
    ));
    assert_eq!(
        trigger.event,
        Event::Tag {
            tag: "v1.2.0".into()
        }
    );
    assert_eq!(trigger.git_ref, "refs/tags/v1.2.0");
    assert_eq!(trigger.commit, "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
    assert_eq!(trigger.kind(), pipeline_schema::EventKind::Tag);
    assert_eq!(trigger.pipeline_event().git_ref, Some("v1.2.0"));
}

#[test]
fn github_branch_deletion_is_ignored() {
    let body = edited("github/push/with-new-branch.payload.json", |v| {
        v["deleted"] = true.into();
        v["before"] = v["after"].clone();
        v["after"] = "0000000000000000000000000000000000000000".into();
        v["head_commit"] = Value::Null;
    });
    let reason = ignored(receive(
        ForgeKind::GitHub,
        SECRET,
        &github("push", "d", &body),
        &body,
    ));
    assert_eq!(
        reason,
        IgnoreReason::RefDeleted {
            git_ref: "refs/heads/master".into()
        }
    );
    assert_eq!(reason.label(), "ref_deleted");
}

#[test]
fn github_pull_request_fixtures() {
    for (name, body) in fixture_files("github/pull_request") {
        let action = name.split('.').next().unwrap();
        let outcome = receive(
            ForgeKind::GitHub,
            SECRET,
            &github("pull_request", &name, &body),
            &body,
        );
        let expected = match action {
            "opened" => PullRequestAction::Opened,
            "reopened" => PullRequestAction::Reopened,
            "synchronize" => PullRequestAction::Synchronized,
            _ => {
                assert_eq!(
                    ignored(outcome),
                    IgnoreReason::UnsupportedAction {
                        event: "pull_request".into(),
                        action: action.into()
                    },
                    "{name}"
                );
                continue;
            }
        };
        let trigger = run(outcome);
        let before = (expected == PullRequestAction::Synchronized)
            .then(|| "f95f852bd8fca8fcc58a9a2d6c842781e32a215e".to_owned());
        assert_eq!(
            trigger,
            Trigger {
                forge: ForgeKind::GitHub,
                delivery_id: name.clone(),
                repository: hello_world(),
                event: Event::PullRequest(PullRequest {
                    number: 2,
                    action: expected,
                    title: "Update the README with new information.".into(),
                    base_branch: "master".into(),
                    base_sha: Some("f95f852bd8fca8fcc58a9a2d6c842781e32a215e".into()),
                    head_branch: "changes".into(),
                    head_repository: Some(hello_world()),
                    fork: false,
                }),
                git_ref: "refs/pull/2/head".into(),
                commit: "ec26c3e57ca3a959ca5aad62de7213c562f8c821".into(),
                before,
                message: None,
                sender: Some("Codertocat".into()),
            },
            "{name}"
        );
        assert_eq!(trigger.pipeline_event().git_ref, Some("master"), "{name}");
    }
}

#[test]
fn github_pull_request_from_a_fork_is_marked() {
    let body = edited("github/pull_request/opened.payload.json", |v| {
        let head = &mut v["pull_request"]["head"]["repo"];
        head["id"] = 42.into();
        head["full_name"] = "mallory/Hello-World".into();
        head["clone_url"] = "https://github.com/mallory/Hello-World.git".into();
    });
    let trigger = run(receive(
        ForgeKind::GitHub,
        SECRET,
        &github("pull_request", "f", &body),
        &body,
    ));
    let pr = trigger.pull_request().unwrap();
    assert!(pr.fork);
    assert_eq!(
        pr.head_repository.as_ref().unwrap().full_name,
        "mallory/Hello-World"
    );
    assert_eq!(trigger.repository, hello_world());
    // A deleted fork: GitHub sends no head repository at all.
    let body = edited("github/pull_request/opened.payload.json", |v| {
        v["pull_request"]["head"]["repo"] = Value::Null;
    });
    let trigger = run(receive(
        ForgeKind::GitHub,
        SECRET,
        &github("pull_request", "g", &body),
        &body,
    ));
    assert!(trigger.pull_request().unwrap().fork);
}

#[test]
fn github_ping_create_and_delete_are_ignored() {
    for (event, dir) in [
        ("ping", "github/ping"),
        ("create", "github/create"),
        ("delete", "github/delete"),
    ] {
        for (name, body) in fixture_files(dir) {
            let reason = ignored(receive(
                ForgeKind::GitHub,
                SECRET,
                &github(event, &name, &body),
                &body,
            ));
            let expected = if event == "ping" {
                IgnoreReason::Ping
            } else {
                IgnoreReason::UnsupportedEvent {
                    event: event.into(),
                }
            };
            assert_eq!(reason, expected, "{dir}/{name}");
        }
    }
}

#[test]
fn gitea_pull_request_synchronized_with_its_own_headers() {
    let body = edited("github/pull_request/synchronize.payload.json", |v| {
        v["action"] = "synchronized".into();
    });
    let signature = hex_signature(SECRET, &body);
    // Gitea sends GitHub's headers too; its own are the ones read.
    let headers = headers(&[
        ("x-github-event", "pull_request"),
        ("x-github-delivery", "github-id"),
        ("x-gitea-event", "pull_request"),
        ("x-gitea-delivery", "gitea-id"),
        ("x-gitea-signature", &signature),
    ]);
    assert_eq!(ForgeKind::detect(&headers), Some(ForgeKind::Gitea));
    let trigger = run(receive(ForgeKind::Gitea, SECRET, &headers, &body));
    assert_eq!(trigger.forge, ForgeKind::Gitea);
    assert_eq!(trigger.delivery_id, "gitea-id");
    assert_eq!(
        trigger.pull_request().unwrap().action,
        PullRequestAction::Synchronized
    );
}

#[test]
fn forgejo_push_with_its_own_headers() {
    let body = fixture("github/push/with-new-branch.payload.json");
    let signature = hex_signature(SECRET, &body);
    let headers = headers(&[
        ("x-forgejo-event", "push"),
        ("x-forgejo-delivery", "forgejo-id"),
        ("x-forgejo-signature", &signature),
        ("x-gitea-event", "push"),
        ("x-gitea-delivery", "forgejo-id"),
        ("x-gitea-signature", &signature),
        ("x-github-event", "push"),
    ]);
    assert_eq!(ForgeKind::detect(&headers), Some(ForgeKind::Forgejo));
    let trigger = run(receive(ForgeKind::Forgejo, SECRET, &headers, &body));
    assert_eq!(trigger.forge, ForgeKind::Forgejo);
    assert_eq!(trigger.delivery_id, "forgejo-id");
    assert_eq!(
        trigger.event,
        Event::Push {
            branch: "master".into()
        }
    );
    // Forgejo's header is the one checked: a forged one is not rescued.
    let mut forged = headers.clone();
    forged.insert(
        "x-forgejo-signature",
        HeaderValue::from_str(&"0".repeat(64)).unwrap(),
    );
    let err = rejected(receive(ForgeKind::Forgejo, SECRET, &forged, &body));
    assert_eq!(err.status(), StatusCode::UNAUTHORIZED, "{err}");
}

#[test]
fn gitlab_fixtures() {
    let woodpecker = Repository {
        full_name: "test/woodpecker".into(),
        clone_url: "http://10.40.8.5:3200/test/woodpecker.git".into(),
        id: Some(2),
    };
    let test_ci = Repository {
        full_name: "demoaccount2-commits-group/test_ci_tmp".into(),
        clone_url: "https://gitlab.com/demoaccount2-commits-group/test_ci_tmp.git".into(),
        id: Some(72_081_820),
    };
    for (name, body) in fixture_files("gitlab") {
        let kind: Value = serde_json::from_slice(&body).unwrap();
        let event = match kind["object_kind"].as_str().unwrap() {
            "push" => "Push Hook",
            "tag_push" => "Tag Push Hook",
            "merge_request" => "Merge Request Hook",
            "release" => "Release Hook",
            other => panic!("{name}: unexpected object_kind {other}"),
        };
        let uuid = format!("uuid-{name}");
        let outcome = receive(ForgeKind::GitLab, SECRET, &gitlab(event, &uuid), &body);
        let stem = name.trim_end_matches(".json");
        match stem {
            "HookPush" => assert_eq!(
                run(outcome),
                Trigger {
                    forge: ForgeKind::GitLab,
                    delivery_id: uuid,
                    repository: woodpecker.clone(),
                    event: Event::Push {
                        branch: "main".into()
                    },
                    git_ref: "refs/heads/main".into(),
                    commit: "16862e368d8ab812e48833b741dad720d6e2cb7f".into(),
                    before: Some("ffe8eb4f91d1fe6bc49f1e610e50e4b5767f0104".into()),
                    message: Some("Update main.go".into()),
                    sender: Some("test".into()),
                }
            ),
            "HookTag" => {
                let trigger = run(outcome);
                assert_eq!(trigger.event, Event::Tag { tag: "v22".into() });
                // checkout_sha, the commit; `after` is the tag object.
                assert_eq!(trigger.commit, "16862e368d8ab812e48833b741dad720d6e2cb7f");
                assert_eq!(trigger.before, None);
                assert_eq!(trigger.repository, woodpecker);
            }
            "HookPullRequestOpened" => assert_eq!(
                run(outcome),
                Trigger {
                    forge: ForgeKind::GitLab,
                    delivery_id: uuid,
                    repository: test_ci.clone(),
                    event: Event::PullRequest(PullRequest {
                        number: 3,
                        action: PullRequestAction::Opened,
                        title: "Edit README.md for more text to read".into(),
                        base_branch: "main".into(),
                        base_sha: None,
                        head_branch: "real6543-main-patch-42541".into(),
                        head_repository: Some(test_ci.clone()),
                        fork: false,
                    }),
                    git_ref: "refs/merge-requests/3/head".into(),
                    commit: "2f7670508b771e7e77839402be8b34b13787aba8".into(),
                    before: None,
                    message: Some("Edit README.md".into()),
                    sender: Some("real6543".into()),
                }
            ),
            "HookPullRequestReopened" => {
                let trigger = run(outcome);
                let pr = trigger.pull_request().unwrap();
                assert_eq!((pr.number, pr.action), (1, PullRequestAction::Reopened));
                assert_eq!(trigger.commit, "36b5813240a9d2daa29b05046d56a53e18f39a3e");
            }
            "HookPullRequestUpdated" => {
                let trigger = run(outcome);
                let pr = trigger.pull_request().unwrap();
                assert_eq!(pr.action, PullRequestAction::Synchronized);
                assert_eq!(
                    trigger.before.as_deref(),
                    Some("8b641937b7340066d882b9d8a8cc5b0573a207de")
                );
                assert_eq!(trigger.commit, "c136499ec574e1034b24c5d306de9acda3005367");
                assert_eq!(trigger.message.as_deref(), Some("Update folder/todo.txt"));
            }
            "WebhookReleaseBody" => assert_eq!(
                ignored(outcome),
                IgnoreReason::UnsupportedEvent {
                    event: "Release Hook".into()
                }
            ),
            // Updates without oldrev: title, labels, assignees, reviewers,
            // milestones.
            "HookPullRequestAssigned"
            | "HookPullRequestDemilestoned"
            | "HookPullRequestEdited"
            | "HookPullRequestLabelsAdded"
            | "HookPullRequestLabelsCleared"
            | "HookPullRequestLabelsUpdated"
            | "HookPullRequestMilestoned"
            | "HookPullRequestReviewRequestDel"
            | "HookPullRequestReviewRequested"
            | "HookPullRequestUnassigned"
            | "HookPullRequestWithoutChanges" => {
                assert_eq!(ignored(outcome), IgnoreReason::NoNewCommits, "{name}");
            }
            "HookPullRequestApproved"
            | "HookPullRequestClosed"
            | "HookPullRequestMerged"
            | "HookPullRequestUnapproved"
            | "HookPullRequestUnsupportedAction" => {
                let reason = ignored(outcome);
                assert!(
                    matches!(&reason, IgnoreReason::UnsupportedAction { event, .. } if event == "Merge Request Hook"),
                    "{name}: {reason:?}"
                );
            }
            other => panic!("fixture {other} has no expectation: add one"),
        }
    }
}

#[test]
fn gitlab_delivery_id_prefers_the_idempotency_key() {
    let body = fixture("gitlab/HookPush.json");
    let mut headers = gitlab("Push Hook", "event-uuid");
    headers.insert("idempotency-key", HeaderValue::from_static("idem-key"));
    assert_eq!(
        run(receive(ForgeKind::GitLab, SECRET, &headers, &body)).delivery_id,
        "idem-key"
    );
    // No id at all: the body's digest, the same for the same body.
    let headers = self::headers(&[
        ("x-gitlab-event", "Push Hook"),
        ("x-gitlab-token", std::str::from_utf8(SECRET).unwrap()),
    ]);
    let first = run(receive(ForgeKind::GitLab, SECRET, &headers, &body)).delivery_id;
    let second = run(receive(ForgeKind::GitLab, SECRET, &headers, &body)).delivery_id;
    assert!(first.starts_with("body-sha256:"), "{first}");
    assert_eq!(first, second);
}

#[test]
fn gitlab_branch_deletion_is_ignored() {
    let body = edited("gitlab/HookPush.json", |v| {
        v["after"] = "0000000000000000000000000000000000000000".into();
        v["checkout_sha"] = Value::Null;
        v["commits"] = Value::Array(vec![]);
    });
    assert_eq!(
        ignored(receive(
            ForgeKind::GitLab,
            SECRET,
            &gitlab("Push Hook", "x"),
            &body
        )),
        IgnoreReason::RefDeleted {
            git_ref: "refs/heads/main".into()
        }
    );
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
fn forged_missing_or_wrong_credentials_are_401() {
    let body = fixture("github/push/with-new-branch.payload.json");
    // Signed with another secret.
    let forged = headers(&[
        ("x-github-event", "push"),
        (
            "x-hub-signature-256",
            &github_signature(b"not the secret", &body),
        ),
    ]);
    let unsigned = headers(&[("x-github-event", "push")]);
    // Signed, then the body changed (a replay with another commit).
    let mut tampered = body.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    let cases = [
        ("forged", receive(ForgeKind::GitHub, SECRET, &forged, &body)),
        (
            "unsigned",
            receive(ForgeKind::GitHub, SECRET, &unsigned, &body),
        ),
        (
            "tampered",
            receive(
                ForgeKind::GitHub,
                SECRET,
                &github("push", "x", &body),
                &tampered,
            ),
        ),
        (
            "empty secret",
            receive(ForgeKind::GitHub, b"", &github("push", "x", &body), &body),
        ),
        (
            "gitea unsigned",
            receive(
                ForgeKind::Gitea,
                SECRET,
                &headers(&[("x-gitea-event", "push")]),
                &body,
            ),
        ),
    ];
    for (case, outcome) in cases {
        let err = rejected(outcome);
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED, "{case}: {err}");
    }
    let body = fixture("gitlab/HookPush.json");
    let wrong = headers(&[("x-gitlab-event", "Push Hook"), ("x-gitlab-token", "guess")]);
    let missing = headers(&[("x-gitlab-event", "Push Hook")]);
    for (case, headers) in [("wrong token", wrong), ("missing token", missing)] {
        let err = rejected(receive(ForgeKind::GitLab, SECRET, &headers, &body));
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED, "{case}: {err}");
    }
}

#[test]
fn malformed_deliveries_are_400() {
    let push = fixture("github/push/with-new-branch.payload.json");
    let truncated = push[..push.len() / 2].to_vec();
    let pr = fixture("github/pull_request/opened.payload.json");
    let bad_sha = edited("github/push/with-new-branch.payload.json", |v| {
        v["head_commit"]["id"] = "--upload-pack=touch /tmp/x".into();
    });
    let bad_ref = edited("github/push/with-new-branch.payload.json", |v| {
        v["ref"] = "refs/heads/a..b".into();
    });
    let github_cases: [(&str, &str, &[u8]); 6] = [
        ("not json", "push", b"{not json"),
        ("truncated", "push", &truncated),
        ("pull request body under a push header", "push", &pr),
        (
            "push body under a pull_request header",
            "pull_request",
            &push,
        ),
        ("shell in the commit id", "push", &bad_sha),
        ("invalid ref", "push", &bad_ref),
    ];
    for (case, event, body) in github_cases {
        let err = rejected(receive(
            ForgeKind::GitHub,
            SECRET,
            &github(event, "m", body),
            body,
        ));
        assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{case}: {err}");
    }
    // No event header at all.
    let headers = headers(&[("x-hub-signature-256", &github_signature(SECRET, &push))]);
    let err = rejected(receive(ForgeKind::GitHub, SECRET, &headers, &push));
    assert!(matches!(err, Error::MissingEvent { .. }), "{err:?}");
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);

    let mr = fixture("gitlab/HookPullRequestOpened.json");
    let tag = fixture("gitlab/HookTag.json");
    let gitlab_cases: [(&str, &str, &[u8]); 3] = [
        ("merge request under Push Hook", "Push Hook", &mr),
        ("tag push under Push Hook", "Push Hook", &tag),
        ("truncated", "Tag Push Hook", &tag[..tag.len() - 10]),
    ];
    for (case, event, body) in gitlab_cases {
        let err = rejected(receive(
            ForgeKind::GitLab,
            SECRET,
            &gitlab(event, "m"),
            body,
        ));
        assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{case}: {err}");
    }
    // The error names the payload and keeps serde's position as its cause.
    let err = rejected(receive(
        ForgeKind::GitHub,
        SECRET,
        &github("push", "m", &truncated),
        &truncated,
    ));
    assert_eq!(err.to_string(), "malformed github push payload");
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.contains("line"), "{cause}");
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

/// A small deterministic generator (xorshift64*), so a failure repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
}

#[test]
fn random_truncated_and_mangled_bodies_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let seeds: Vec<(ForgeKind, &str, Vec<u8>)> = vec![
        (
            ForgeKind::GitHub,
            "push",
            fixture("github/push/with-new-branch.payload.json"),
        ),
        (
            ForgeKind::GitHub,
            "pull_request",
            fixture("github/pull_request/synchronize.payload.json"),
        ),
        (
            ForgeKind::Gitea,
            "pull_request",
            fixture("github/pull_request/opened.payload.json"),
        ),
        (
            ForgeKind::GitLab,
            "Push Hook",
            fixture("gitlab/HookPush.json"),
        ),
        (
            ForgeKind::GitLab,
            "Tag Push Hook",
            fixture("gitlab/HookTag.json"),
        ),
        (
            ForgeKind::GitLab,
            "Merge Request Hook",
            fixture("gitlab/HookPullRequestUpdated.json"),
        ),
    ];
    let mut parsed = 0;
    for round in 0..400 {
        let (forge, event, seed) = &seeds[round % seeds.len()];
        let body: Vec<u8> = match rng.below(4) {
            // Truncated anywhere.
            0 => seed[..rng.below(seed.len() + 1)].to_vec(),
            // A few bytes changed.
            1 => {
                let mut body = seed.clone();
                for _ in 0..=rng.below(8) {
                    let at = rng.below(body.len());
                    body[at] = u8::try_from(rng.next() & 0xff).unwrap();
                }
                body
            }
            // Random bytes.
            2 => (0..rng.below(512))
                .map(|_| u8::try_from(rng.next() & 0xff).unwrap())
                .collect(),
            // Intact.
            _ => seed.clone(),
        };
        // Signed as the forge would, so the bytes reach the parser.
        let headers = match forge {
            ForgeKind::GitLab => gitlab(event, "fuzz"),
            ForgeKind::Gitea => self::headers(&[
                ("x-gitea-event", event),
                ("x-gitea-signature", &hex_signature(SECRET, &body)),
            ]),
            _ => github(event, "fuzz", &body),
        };
        match receive(*forge, SECRET, &headers, &body) {
            Ok(_) => parsed += 1,
            Err(err) => assert_eq!(
                err.status(),
                StatusCode::BAD_REQUEST,
                "round {round}: {err}"
            ),
        }
        // Unsigned, the same bytes are refused before being read.
        let unsigned = self::headers(&[("x-github-event", event)]);
        let err = rejected(receive(ForgeKind::GitHub, SECRET, &unsigned, &body));
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
    }
    // The intact quarter parses: the test reaches past the rejections.
    assert!(parsed >= 50, "only {parsed} of 400 deliveries parsed");
}

#[test]
fn body_limit_is_githubs() {
    assert_eq!(MAX_BODY_BYTES, 25 * 1024 * 1024);
}
