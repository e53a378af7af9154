//! GitHub's push, pull_request, ping, create and delete fixtures, and
//! Gitea and Forgejo deliveries in the same shapes with their own headers.

use http::{HeaderValue, StatusCode};
use serde_json::Value;

use super::*;

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
fn gitea_pull_request_without_head_repo_is_a_fork_by_repo_id() {
    // Older Gitea sends only `repo_id` on the head and base branches.
    for (head_id, fork) in [(186_853_002, false), (7, true)] {
        let body = edited("github/pull_request/opened.payload.json", |v| {
            for side in ["head", "base"] {
                let side = v["pull_request"][side].as_object_mut().unwrap();
                side.remove("repo");
                side.insert("repo_id".into(), head_id.into());
            }
        });
        let headers = headers(&[
            ("x-gitea-event", "pull_request"),
            ("x-gitea-signature", &hex_signature(SECRET, &body)),
        ]);
        let trigger = run(receive(ForgeKind::Gitea, SECRET, &headers, &body));
        let pr = trigger.pull_request().unwrap();
        assert_eq!(pr.fork, fork, "head repo_id {head_id}");
        assert_eq!(pr.head_repository, None);
    }
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
