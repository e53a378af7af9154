//! Deliveries that must be refused (forged, unsigned, tampered,
//! malformed, under the wrong event header) with the right status, and
//! random, truncated and mangled bodies, none of which may panic.

use http::StatusCode;
use sha2::{Digest, Sha256};

use super::*;

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
            "truncated in transit",
            receive(
                ForgeKind::GitHub,
                SECRET,
                &github("push", "x", &body),
                &body[..body.len() - 1],
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

/// Deterministic noise, SHA-256 of a counter, so a failure repeats.
#[derive(Default)]
struct Noise {
    counter: u64,
    pool: Vec<u8>,
}

impl Noise {
    fn byte(&mut self) -> u8 {
        if self.pool.is_empty() {
            self.counter += 1;
            self.pool = Sha256::digest(self.counter.to_le_bytes()).to_vec();
        }
        self.pool.pop().unwrap_or_default()
    }

    fn below(&mut self, n: usize) -> usize {
        let value = u64::from_le_bytes(std::array::from_fn(|_| self.byte()));
        usize::try_from(value % n as u64).unwrap()
    }
}

#[test]
fn random_truncated_and_mangled_bodies_never_panic() {
    let mut rng = Noise::default();
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
                    body[at] = rng.byte();
                }
                body
            }
            // Random bytes.
            2 => (0..rng.below(512)).map(|_| rng.byte()).collect(),
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
