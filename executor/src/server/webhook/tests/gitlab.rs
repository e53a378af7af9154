//! Every GitLab fixture (push, tag push, merge request actions, a
//! release), GitLab's delivery ids and branch deletion.

use http::HeaderValue;
use serde_json::Value;

use super::*;

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
