//! The reporter and clients against a recording forge API on 127.0.0.1:
//! an axum server that records every call and answers from a script (a
//! slow call held until the test releases it, a 403 with `Retry-After`,
//! GitLab's same-state 400, 503s), which a real forge cannot be made to
//! do on demand. A forge that is down is a port nothing listens on.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use super::*;

const SHA: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

/// One call the forge received.
#[derive(Debug, Clone)]
struct Call {
    method: Method,
    /// The path as sent, percent-encoding kept.
    path: String,
    headers: HeaderMap,
    body: Value,
    at: Instant,
}

impl Call {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What the forge answers to the next call.
enum Reply {
    Answer {
        status: StatusCode,
        headers: Vec<(&'static str, &'static str)>,
        body: Value,
    },
    /// Holds the call until the semaphore has a permit, then 201.
    Hold(Arc<Semaphore>),
}

impl Reply {
    fn status(status: u16, body: Value) -> Self {
        Self::Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: Vec::new(),
            body,
        }
    }
}

struct Recorder {
    calls: Mutex<Vec<Call>>,
    /// Replies in order; 201 once they run out.
    script: Mutex<VecDeque<Reply>>,
    received: watch::Sender<usize>,
}

struct RecordingForge {
    url: String,
    recorder: Arc<Recorder>,
}

impl RecordingForge {
    async fn start(script: Vec<Reply>) -> Self {
        let recorder = Arc::new(Recorder {
            calls: Mutex::new(Vec::new()),
            script: Mutex::new(script.into()),
            received: watch::channel(0).0,
        });
        let app = Router::new()
            .fallback(record)
            .with_state(Arc::clone(&recorder));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}"),
            recorder,
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.recorder.calls.lock().unwrap().clone()
    }

    async fn wait_for_calls(&self, n: usize) {
        let mut rx = self.recorder.received.subscribe();
        rx.wait_for(|count| *count >= n).await.unwrap();
    }

    fn client(&self, kind: ForgeKind, api_path: &str, token: &str) -> Arc<ForgeClient> {
        let url = format!("{}{api_path}", self.url);
        Arc::new(ForgeClient::new(kind, &url, Token::new(token)).unwrap())
    }
}

async fn record(
    State(recorder): State<Arc<Recorder>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    recorder.calls.lock().unwrap().push(Call {
        method,
        path: uri.path().to_owned(),
        headers,
        body: body.clone(),
        at: Instant::now(),
    });
    recorder.received.send_modify(|n| *n += 1);
    let reply = recorder.script.lock().unwrap().pop_front();
    match reply {
        Some(Reply::Answer {
            status,
            headers,
            body,
        }) => {
            let mut map = HeaderMap::new();
            for (name, value) in headers {
                map.insert(name, HeaderValue::from_static(value));
            }
            (status, map, body.to_string()).into_response()
        }
        Some(Reply::Hold(gate)) => {
            let _permit = gate.acquire().await.unwrap();
            (StatusCode::CREATED, body.to_string()).into_response()
        }
        None => (StatusCode::CREATED, body.to_string()).into_response(),
    }
}

/// Quick retries, so tests of giving up do not wait long.
fn quick() -> ReporterConfig {
    ReporterConfig {
        concurrency: 4,
        max_attempts: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_secs(5),
    }
}

fn status(context: &str, state: StatusState) -> CommitStatus {
    CommitStatus {
        description: Some(format!("{context} is {state:?}")),
        target_url: Some("https://ci.example/runs/7".into()),
        git_ref: Some("main".into()),
        pipeline_id: Some(99),
        ..CommitStatus::new(SHA, context, state)
    }
}

fn find<'c>(calls: &'c [Call], path: &str, context: &str) -> &'c Call {
    calls
        .iter()
        .find(|c| c.path == path && (c.body["context"] == context || c.body["name"] == context))
        .unwrap_or_else(|| panic!("no call to {path} for {context}: {calls:#?}"))
}

#[tokio::test]
async fn statuses_reach_each_forge_with_its_path_body_and_auth() {
    let forge = RecordingForge::start(Vec::new()).await;
    let github = forge.client(ForgeKind::GitHub, "/api/v3", "gh-token");
    let gitea = forge.client(ForgeKind::Gitea, "/gitea/api/v1/", "gitea-token");
    let forgejo = forge.client(ForgeKind::Forgejo, "/forgejo/api/v1", "forgejo-token");
    let gitlab = forge.client(ForgeKind::GitLab, "/api/v4", "gl-token");
    let reporter = Reporter::spawn(quick());
    let build = job_context("build");
    reporter.report(&github, "octo/hello", status(&build, StatusState::Running));
    reporter.report(
        &github,
        "octo/hello",
        status(PIPELINE_CONTEXT, StatusState::Canceled),
    );
    reporter.report(&gitea, "team/app", status(&build, StatusState::Failure));
    reporter.report(&forgejo, "team/app", status(&build, StatusState::Success));
    reporter.report(
        &gitlab,
        "group/sub/app",
        status(&build, StatusState::Running),
    );
    reporter.report(&gitlab, "42", status(PIPELINE_CONTEXT, StatusState::Error));
    reporter.idle().await;
    let calls = forge.calls();
    assert_eq!(calls.len(), 6, "{calls:#?}");
    assert!(calls.iter().all(|c| c.method == Method::POST));
    assert!(
        calls
            .iter()
            .all(|c| c.header("content-type") == Some("application/json"))
    );

    let path = format!("/api/v3/repos/octo/hello/statuses/{SHA}");
    let job = find(&calls, &path, "executor/build");
    assert_eq!(
        job.body,
        json!({
            "state": "pending",
            "context": "executor/build",
            "description": "executor/build is Running",
            "target_url": "https://ci.example/runs/7",
        })
    );
    assert_eq!(job.header("authorization"), Some("Bearer gh-token"));
    assert_eq!(job.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(job.header("x-github-api-version"), Some("2022-11-28"));
    let pipeline = find(&calls, &path, "executor");
    assert_eq!(pipeline.body["state"], "error");

    let call = find(
        &calls,
        &format!("/gitea/api/v1/repos/team/app/statuses/{SHA}"),
        "executor/build",
    );
    assert_eq!(call.body["state"], "failure");
    assert_eq!(call.header("authorization"), Some("token gitea-token"));
    let call = find(
        &calls,
        &format!("/forgejo/api/v1/repos/team/app/statuses/{SHA}"),
        "executor/build",
    );
    assert_eq!(call.body["state"], "success");
    assert_eq!(call.header("authorization"), Some("token forgejo-token"));

    let call = find(
        &calls,
        &format!("/api/v4/projects/group%2Fsub%2Fapp/statuses/{SHA}"),
        "executor/build",
    );
    assert_eq!(
        call.body,
        json!({
            "state": "running",
            "name": "executor/build",
            "ref": "main",
            "pipeline_id": 99,
            "description": "executor/build is Running",
            "target_url": "https://ci.example/runs/7",
        })
    );
    assert_eq!(call.header("private-token"), Some("gl-token"));
    assert_eq!(call.header("authorization"), None);
    let call = find(
        &calls,
        &format!("/api/v4/projects/42/statuses/{SHA}"),
        "executor",
    );
    assert_eq!(call.body["state"], "failed");
    assert_eq!(
        reporter.stats(),
        ReporterStats {
            reported: 6,
            sent: 6,
            ..ReporterStats::default()
        }
    );
}

#[tokio::test]
async fn long_descriptions_are_cut_for_github() {
    let forge = RecordingForge::start(Vec::new()).await;
    let github = forge.client(ForgeKind::GitHub, "", "t");
    let mut long = status(PIPELINE_CONTEXT, StatusState::Failure);
    long.description = Some("é".repeat(500));
    github.set_status("o/r", &long).await.unwrap();
    let calls = forge.calls();
    let sent = calls[0].body["description"].as_str().unwrap();
    assert_eq!(sent.chars().count(), 140);
}

#[tokio::test]
async fn updates_to_one_context_while_the_forge_is_slow_coalesce_to_the_last() {
    let gate = Arc::new(Semaphore::new(0));
    let forge = RecordingForge::start(vec![Reply::Hold(Arc::clone(&gate))]).await;
    let github = forge.client(ForgeKind::GitHub, "", "t");
    let reporter = Reporter::spawn(quick());
    let build = job_context("build");
    reporter.report(&github, "o/r", status(&build, StatusState::Pending));
    // The first call is in flight and held.
    forge.wait_for_calls(1).await;
    for n in 0..20 {
        let mut update = status(&build, StatusState::Running);
        update.description = Some(format!("step {n}"));
        reporter.report(&github, "o/r", update);
    }
    let mut last = status(&build, StatusState::Success);
    last.description = Some("done".into());
    reporter.report(&github, "o/r", last);
    gate.add_permits(1);
    reporter.idle().await;

    let calls = forge.calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(calls[0].body["state"], "pending");
    assert_eq!(calls[1].body["state"], "success");
    assert_eq!(calls[1].body["description"], "done");
    let stats = reporter.stats();
    assert_eq!((stats.reported, stats.coalesced, stats.sent), (22, 20, 2));
}

#[tokio::test]
async fn a_403_with_retry_after_is_retried_after_the_delay() {
    let limited = Reply::Answer {
        status: StatusCode::FORBIDDEN,
        headers: vec![("retry-after", "1")],
        body: json!({"message": "You have exceeded a secondary rate limit."}),
    };
    let forge = RecordingForge::start(vec![limited]).await;
    let github = forge.client(ForgeKind::GitHub, "", "t");
    let reporter = Reporter::spawn(quick());
    reporter.report(
        &github,
        "o/r",
        status(PIPELINE_CONTEXT, StatusState::Success),
    );
    reporter.idle().await;

    let calls = forge.calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(calls[0].body, calls[1].body);
    let waited = calls[1].at - calls[0].at;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    let stats = reporter.stats();
    assert_eq!((stats.retried, stats.sent, stats.failed), (1, 1, 0));
}

#[tokio::test]
async fn gitlab_same_state_400_is_sent_and_not_retried() {
    let same = Reply::status(
        400,
        json!({"message": "Cannot transition status via :run from :running"}),
    );
    // The same answer for another state is a refusal: not retried either.
    let other = Reply::status(
        400,
        json!({"message": "Cannot transition status via :run from :success"}),
    );
    let forge = RecordingForge::start(vec![same, other]).await;
    let gitlab = forge.client(ForgeKind::GitLab, "/api/v4", "t");
    let reporter = Reporter::spawn(quick());
    reporter.report(&gitlab, "1", status(PIPELINE_CONTEXT, StatusState::Running));
    reporter.idle().await;
    assert_eq!(
        reporter.stats(),
        ReporterStats {
            reported: 1,
            sent: 1,
            ..ReporterStats::default()
        }
    );
    reporter.report(
        &gitlab,
        "1",
        status(&job_context("a"), StatusState::Running),
    );
    reporter.idle().await;
    assert_eq!(forge.calls().len(), 2);
    let stats = reporter.stats();
    assert_eq!((stats.sent, stats.failed, stats.retried), (1, 1, 0));

    let sent = gitlab
        .set_status("1", &status(PIPELINE_CONTEXT, StatusState::Running))
        .await
        .unwrap();
    assert!(!sent.same_state, "an ordinary 201 after the script");
}

#[tokio::test]
async fn a_forge_that_is_down_never_blocks_or_fails_the_caller() {
    // A port nothing listens on: connections are refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let down = Arc::new(ForgeClient::new(ForgeKind::GitHub, &url, Token::new("t")).unwrap());
    let reporter = Reporter::spawn(quick());
    // `report` is not async: it cannot wait on the forge.
    for n in 0..100 {
        let context = job_context(&format!("job{}", n % 10));
        reporter.report(&down, "o/r", status(&context, StatusState::Running));
    }
    reporter.idle().await;
    let stats = reporter.stats();
    assert_eq!(stats.reported, 100);
    assert_eq!(stats.sent, 0);
    // Ten keys, each tried max_attempts (3) times, then given up.
    assert_eq!(stats.failed, 10, "{stats:?}");
    assert_eq!(stats.retried, 20, "{stats:?}");
}

#[tokio::test]
async fn server_errors_and_timeouts_are_retried_then_sent() {
    let gate = Arc::new(Semaphore::new(0));
    let forge = RecordingForge::start(vec![
        Reply::status(503, json!({"message": "unavailable"})),
        // Never answered: the client's time limit ends it.
        Reply::Hold(Arc::clone(&gate)),
    ])
    .await;
    let slow = Arc::new(
        ForgeClient::new(ForgeKind::Gitea, &forge.url, Token::new("t"))
            .unwrap()
            .with_timeout(Duration::from_millis(200)),
    );
    let reporter = Reporter::spawn(quick());
    reporter.report(&slow, "o/r", status(PIPELINE_CONTEXT, StatusState::Success));
    reporter.idle().await;
    assert_eq!(forge.calls().len(), 3);
    let stats = reporter.stats();
    assert_eq!((stats.retried, stats.sent, stats.failed), (2, 1, 0));
    gate.add_permits(1);
}

#[tokio::test]
async fn a_refusal_is_not_retried() {
    let forge =
        RecordingForge::start(vec![Reply::status(404, json!({"message": "Not Found"}))]).await;
    let github = forge.client(ForgeKind::GitHub, "", "t");
    let err = github
        .set_status("o/r", &status(PIPELINE_CONTEXT, StatusState::Success))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StatusError::Refused { status: 404, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .ends_with("refused the status with 404: Not Found"),
        "{err}"
    );
    let reporter = Reporter::spawn(quick());
    forge
        .recorder
        .script
        .lock()
        .unwrap()
        .push_back(Reply::status(422, json!({"message": "Validation Failed"})));
    reporter.report(
        &github,
        "o/r",
        status(PIPELINE_CONTEXT, StatusState::Success),
    );
    reporter.idle().await;
    assert_eq!(forge.calls().len(), 2);
    assert_eq!(reporter.stats().failed, 1);
}

#[tokio::test]
async fn drain_gives_up_after_the_grace_period_on_a_hung_forge() {
    let gate = Arc::new(Semaphore::new(0));
    let forge = RecordingForge::start(vec![Reply::Hold(Arc::clone(&gate))]).await;
    let github = forge.client(ForgeKind::GitHub, "", "t");
    let reporter = Reporter::spawn(quick());
    reporter.report(
        &github,
        "o/r",
        status(PIPELINE_CONTEXT, StatusState::Success),
    );
    forge.wait_for_calls(1).await;
    // The call is held until the gate opens: the queue cannot drain.
    assert!(!reporter.drain(Duration::from_millis(100)).await);
    gate.add_permits(1);
    assert!(reporter.drain(Duration::from_secs(600)).await);
    assert_eq!(reporter.stats().sent, 1);
    assert!(format!("{reporter:?}").contains("sent: 1"));
}
