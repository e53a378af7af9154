//! Fuzzes webhook deliveries: the input is the body, received as each
//! forge's event the server handles (and one it does not) with the headers
//! that forge sends: signed with the hook's secret and checked as
//! `executor serve` does (`webhook::receive`), without a delivery id, and
//! with a wrong signature; then a trigger's event, pull request and the
//! repository hint are read. The bodies of `/work/shared/fixtures/webhooks/`
//! make a good seed corpus (see README.md). Nothing may panic or hang.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

use executor::server::forge::ForgeKind;
use executor::server::webhook::{
    self, Outcome, github_signature, hex_signature, receive, repository_hint,
};

const SECRET: &[u8] = b"fuzz secret";

/// Each forge's event header and the event names tried with it.
const EVENTS: [(ForgeKind, &str, &[&str]); 4] = [
    (
        ForgeKind::GitHub,
        "x-github-event",
        &["push", "pull_request", "ping", "create", "issues"],
    ),
    (
        ForgeKind::Gitea,
        "x-gitea-event",
        &["push", "pull_request", "create"],
    ),
    (
        ForgeKind::Forgejo,
        "x-forgejo-event",
        &["push", "pull_request"],
    ),
    (
        ForgeKind::GitLab,
        "x-gitlab-event",
        &[
            "Push Hook",
            "Tag Push Hook",
            "Merge Request Hook",
            "Note Hook",
        ],
    ),
];

fn header(headers: &mut HeaderMap, name: &'static str, value: &str) {
    headers.insert(
        HeaderName::from_static(name),
        HeaderValue::from_str(value).expect("header value"),
    );
}

/// The headers `forge` sends with `event` and `body`, signed.
fn signed(forge: ForgeKind, event_header: &'static str, event: &str, body: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    header(&mut headers, event_header, event);
    match forge {
        ForgeKind::GitHub => {
            header(
                &mut headers,
                "x-github-delivery",
                "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            );
            header(
                &mut headers,
                "x-hub-signature-256",
                &github_signature(SECRET, body),
            );
        }
        ForgeKind::Gitea | ForgeKind::Forgejo => {
            // Gitea also sends GitHub's headers.
            header(&mut headers, "x-github-event", event);
            header(&mut headers, "x-gitea-delivery", "5");
            header(
                &mut headers,
                "x-gitea-signature",
                &hex_signature(SECRET, body),
            );
            if forge == ForgeKind::Forgejo {
                header(&mut headers, "x-forgejo-delivery", "5");
                header(
                    &mut headers,
                    "x-forgejo-signature",
                    &hex_signature(SECRET, body),
                );
            }
        }
        ForgeKind::GitLab => {
            header(&mut headers, "x-gitlab-token", "fuzz secret");
            header(
                &mut headers,
                "x-gitlab-event-uuid",
                "9b6e0a4c-2a4b-4ff5-8f51-0b1c6b7b3c1e",
            );
        }
    }
    headers
}

fn look_at(outcome: &Outcome) {
    if let Outcome::Run(trigger) = outcome {
        let _ = trigger.kind();
        let _ = trigger.pipeline_event();
        let _ = trigger.pull_request();
    }
}

fuzz_target!(|body: &[u8]| {
    for (forge, event_header, events) in EVENTS {
        let _ = repository_hint(forge, body);
        for event in events {
            let mut headers = signed(forge, event_header, event, body);
            assert_eq!(ForgeKind::detect(&headers), Some(forge));
            match receive(forge, SECRET, &headers, body) {
                Ok(outcome) => look_at(&outcome),
                Err(error) => {
                    let _ = error.status();
                    let _ = error.to_string();
                }
            }
            for name in [
                "x-github-delivery",
                "x-gitea-delivery",
                "x-forgejo-delivery",
            ] {
                headers.remove(name);
            }
            headers.remove("x-gitlab-event-uuid");
            if let Ok(outcome) = webhook::parse(forge, &headers, body) {
                look_at(&outcome);
            }
        }
        let other: &[u8] = if body == b"one body" {
            b"another body"
        } else {
            b"one body"
        };
        let headers = signed(forge, event_header, events[0], other);
        assert!(
            receive(forge, SECRET, &headers, body).is_err() || forge == ForgeKind::GitLab,
            "a {forge:?} delivery signed for another body was accepted"
        );
    }
});
