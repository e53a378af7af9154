//! `executor serve` and `executor runner` end to end (issue 13): the real
//! binary serving on 127.0.0.1, a repository on the tests' git HTTP
//! server, the busybox image in the tests' registry, and a recording forge
//! API on 127.0.0.1 that keeps every commit status the server sends.
//! Deliveries are the forges' own fixture payloads
//! (`shared/fixtures/webhooks`) with the repository, clone URL and commit
//! rewritten to the test's, signed by the test.
//!
//! What happened is read from the server's API, the statuses recorded and
//! the registry; never from timing (waits poll with a generous deadline).

use std::collections::BTreeMap;
use std::fs;
use std::process::{Child, Command};

use executor::server::webhook::github_signature;
use executor_e2e::forge::request;
use executor_e2e::server_bed::{
    API_TOKEN, Bed, DEPLOY_SECRET, HOOK_SECRET, REPO, RUNNER_TOKEN, fixture, wait_for,
};
use executor_e2e::{executor_bin, postgres_database};
use serde_json::json;

/// A signed GitHub push: 202 with the run, the run succeeds, the forge got
/// pending then success for `executor` and the job, linked to the run;
/// the same delivery again is one run; forged, unsigned, oversized and
/// malformed deliveries are refused with 4xx and queue nothing, and the
/// server keeps serving.
#[test]
fn github_push_runs_and_reports_statuses_and_refusals_queue_nothing() {
    let bed = Bed::new("  hello:\n    script: [echo hello from the server]\n");
    let (config, listen) = bed.config("executor.toml", "github", None, "data");
    let check = Command::new(executor_bin())
        .args(["serve", "--check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{summary}");
    assert!(
        summary.contains("repository acme/app (github)"),
        "{summary}"
    );
    for secret in [HOOK_SECRET, DEPLOY_SECRET, RUNNER_TOKEN, API_TOKEN] {
        assert!(!summary.contains(secret), "{summary}");
    }

    let server = bed.serve(&config, &listen, 1);
    let commit = bed.head();
    let body = bed.github_push(&commit);
    let answer = server.github("delivery-1", "push", &body, None);
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.json()["run_id"].as_i64().unwrap();

    let again = server.github("delivery-1", "push", &body, None);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["result"], "duplicate");
    assert_eq!(again.json()["run_id"], id);

    // Two identical deliveries at once: one run (of a commit the
    // repository does not have: it fails, on its own statuses).
    let twin = bed.github_push(&"c".repeat(40));
    let twins: Vec<u16> = std::thread::scope(|scope| {
        let posts: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| server.github("delivery-twin", "push", &twin, None).status))
            .collect();
        posts.into_iter().map(|p| p.join().unwrap()).collect()
    });
    let mut twins = twins;
    twins.sort_unstable();
    assert_eq!(twins, [200, 202]);

    let run = server.finished(id);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["commit_sha"], commit.as_str());
    let jobs = server.get(&format!("/api/runs/{id}/jobs")).json();
    assert_eq!(jobs[0]["name"], "hello");
    assert_eq!(jobs[0]["status"], "succeeded");
    let log = server.get(&format!("/api/runs/{id}/jobs/hello/log"));
    assert!(log.body.contains("hello from the server"), "{}", log.body);

    let target = format!("http://ci.example.test/runs/{id}");
    for context in ["executor", "executor/hello"] {
        let states = wait_for(&format!("the {context} status to succeed"), || {
            let states = bed.forge.states_for(&commit, context);
            (states.last().is_some_and(|(s, _)| s == "success")).then_some(states)
        });
        assert_eq!(states[0].0, "pending", "{context}: {states:?}");
        assert!(states.iter().all(|(_, url)| *url == target), "{states:?}");
    }
    assert!(
        bed.forge
            .paths()
            .iter()
            .all(|p| p.starts_with(&format!("/repos/{REPO}/statuses/"))),
        "{:?}",
        bed.forge.paths()
    );

    // Refusals.
    let forged = github_signature(b"not the secret", &body);
    let answer = server.github("delivery-2", "push", &body, Some(&forged));
    assert_eq!(answer.status, 401, "{}", answer.body);
    let answer = server.github("delivery-3", "push", &body, Some(""));
    assert_eq!(answer.status, 401, "{}", answer.body);
    let answer = server.github("delivery-4", "push", b"{not json", None);
    assert!(matches!(answer.status, 400 | 401), "{}", answer.body);
    // Signed, for a configured repository, but not a push payload.
    let malformed = serde_json::to_vec(&json!({"repository": {"full_name": REPO}})).unwrap();
    let answer = server.github("delivery-5", "push", &malformed, None);
    assert_eq!(answer.status, 400, "{}", answer.body);
    let huge = vec![b' '; 26 * 1024 * 1024];
    let answer = server.github("delivery-6", "push", &huge, None);
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert_eq!(server.runs().len(), 2);
    assert_eq!(server.get("/healthz").status, 200);
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("executor_webhooks_total{source=\"github\",result=\"queued\"} 2"),
        "{metrics}"
    );
    let openapi = server.get("/api/openapi.json").json();
    assert!(openapi["paths"].get("/api/runs/{id}/retry").is_some());
}

/// A GitLab push with its X-Gitlab-Token: queued, run, statuses sent to
/// GitLab's API path.
#[test]
fn gitlab_push_with_its_token_runs() {
    let bed = Bed::new("  hello:\n    script: [echo gitlab]\n");
    let (config, listen) = bed.config("executor.toml", "gitlab", None, "data");
    let server = bed.serve(&config, &listen, 1);
    let commit = bed.head();
    let mut payload = fixture("gitlab/HookPush.json");
    payload["ref"] = json!("refs/heads/main");
    payload["after"] = json!(commit);
    payload["checkout_sha"] = json!(commit);
    payload["project"]["path_with_namespace"] = json!(REPO);
    payload["project"]["git_http_url"] = json!(bed.git.url("app.git"));
    if let Some(commits) = payload["commits"].as_array_mut() {
        for c in commits {
            c["id"] = json!(commit);
            c["message"] = json!("change");
        }
    }
    let body = serde_json::to_vec(&payload).unwrap();
    let headers = [
        ("X-Gitlab-Event", "Push Hook"),
        ("X-Gitlab-Token", HOOK_SECRET),
        ("X-Gitlab-Event-UUID", "gitlab-delivery-1"),
        ("Content-Type", "application/json"),
    ];
    let answer = request(&server.host, "POST", "/hooks/gitlab", &headers, &body).unwrap();
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.json()["run_id"].as_i64().unwrap();
    assert_eq!(server.finished(id)["status"], "succeeded");
    let bad = [("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "wrong")];
    let answer = request(&server.host, "POST", "/hooks/gitlab", &bad, &body).unwrap();
    assert_eq!(answer.status, 401, "{}", answer.body);
    wait_for("GitLab's pipeline status to succeed", || {
        bed.forge
            .states("executor")
            .last()
            .is_some_and(|(s, _)| s == "success")
            .then_some(())
    });
    assert!(
        bed.forge
            .paths()
            .iter()
            .all(|p| p.starts_with("/projects/")),
        "{:?}",
        bed.forge.paths()
    );
}

/// A pull request from a fork: the job reading a secret fails (it is not
/// given), the build job builds without pushing; the same secret is
/// given to a push of the same commit.
#[test]
fn a_fork_pull_request_gets_no_secret_and_does_not_push() {
    let bed = Bed::new(
        "  secret:\n    allow_failure: false\n    secrets:\n      TOKEN: {env: DEPLOY_TOKEN}\n    script: ['test -n \"$TOKEN\"', 'echo token-read']\n",
    );
    // A build job pushing to the registry.
    let jobs = format!(
        "  secret:\n    secrets:\n      TOKEN: {{env: DEPLOY_TOKEN}}\n    script: ['test -n \"$TOKEN\"', 'echo token-read']\n  image:\n    build:\n      context: app\n      args: {{BASE: {host}/busybox:latest}}\n      destinations: [{host}/fork-pushed:latest]\n",
        host = bed.registry.host
    );
    let pipeline = format!(
        "version: 1\ndefaults:\n  image: {}/busybox:latest\njobs:\n{jobs}",
        bed.registry.host
    );
    executor_e2e::git_commit(
        &bed.work,
        &[
            ("pipeline.yaml", pipeline.as_str()),
            (
                "app/Dockerfile",
                "ARG BASE\nFROM $BASE\nRUN echo built > /built\n",
            ),
        ],
        "fork change",
    );
    bed.publish();
    let (config, listen) = bed.config("executor.toml", "github", None, "data");
    let server = bed.serve(&config, &listen, 1);
    let commit = bed.head();

    let mut payload = fixture("github/pull_request/opened.payload.json");
    payload["action"] = json!("opened");
    payload["repository"]["full_name"] = json!(REPO);
    payload["repository"]["clone_url"] = json!(bed.git.url("app.git"));
    payload["pull_request"]["head"]["sha"] = json!(commit);
    payload["pull_request"]["head"]["ref"] = json!("main");
    payload["pull_request"]["head"]["repo"]["full_name"] = json!("mallory/app");
    payload["pull_request"]["head"]["repo"]["id"] = json!(999_999);
    payload["pull_request"]["head"]["repo"]["clone_url"] = json!(bed.git.url("app.git"));
    payload["pull_request"]["base"]["ref"] = json!("main");
    payload["pull_request"]["base"]["repo"]["full_name"] = json!(REPO);
    payload["pull_request"]["title"] = json!("a change");
    let body = serde_json::to_vec(&payload).unwrap();
    let answer = server.github("fork-1", "pull_request", &body, None);
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.json()["run_id"].as_i64().unwrap();
    let run = server.finished(id);
    assert_eq!(run["fork"], true, "{run}");
    assert_eq!(run["status"], "failed", "{run}");
    let jobs: BTreeMap<String, String> = server
        .get(&format!("/api/runs/{id}/jobs"))
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["name"].as_str().unwrap().to_owned(),
                j["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(jobs["secret"], "failed", "{jobs:?}");
    assert_eq!(jobs["image"], "succeeded", "{jobs:?}");
    let log = server.get(&format!("/api/runs/{id}/jobs/secret/log")).body;
    assert!(
        !log.contains("token-read") && !log.contains(DEPLOY_SECRET),
        "{log}"
    );
    assert!(
        bed.registry.tags("fork-pushed").is_empty(),
        "a fork's build pushed"
    );

    // The same commit pushed to the repository itself gets the secret.
    let answer = server.github("push-1", "push", &bed.github_push(&commit), None);
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.json()["run_id"].as_i64().unwrap();
    assert_eq!(server.finished(id)["status"], "succeeded");
    let log = server.get(&format!("/api/runs/{id}/jobs/secret/log")).body;
    assert!(
        log.contains("token-read") && !log.contains(DEPLOY_SECRET),
        "{log}"
    );
    assert_eq!(bed.registry.tags("fork-pushed"), vec!["latest".to_owned()]);
}

/// `executor runner` killed with SIGKILL mid-run: the lease expires, the
/// run is requeued and a second runner completes it as attempt 2.
#[test]
fn a_runner_killed_mid_run_is_replaced_and_the_run_completes_as_attempt_2() {
    let bed = Bed::new("  slow:\n    script: [sleep 6, echo slept]\n");
    let (config, listen) = bed.config("executor.toml", "github", None, "data");
    let server = bed.serve(&config, &listen, 0);
    let mut first = bed.runner(&server);
    let answer = server.github("kill-1", "push", &bed.github_push(&bed.head()), None);
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.json()["run_id"].as_i64().unwrap();
    wait_for("the job to start on the first runner", || {
        let jobs = server.get(&format!("/api/runs/{id}/jobs")).json();
        (jobs[0]["status"] == "running").then_some(())
    });
    first.kill().unwrap();
    first.wait().unwrap();
    let _second = Killed(bed.runner(&server));
    let run = server.finished(id);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["attempt"], 2, "{run}");
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("executor_lease_expiries_total 1"),
        "{metrics}"
    );
}

/// SIGTERM: readiness fails at once, the running run finishes within the
/// grace period, the server exits 0.
#[test]
fn sigterm_drains_the_running_run_and_exits_0() {
    let bed = Bed::new("  slow:\n    script: [sleep 4, echo drained]\n");
    let (config, listen) = bed.config("executor.toml", "github", None, "data");
    let mut server = bed.serve(&config, &listen, 1);
    let answer = server.github("drain-1", "push", &bed.github_push(&bed.head()), None);
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.json()["run_id"].as_i64().unwrap();
    wait_for("the job to start", || {
        let jobs = server.get(&format!("/api/runs/{id}/jobs")).json();
        (jobs[0]["status"] == "running").then_some(())
    });
    server.signal("TERM");
    wait_for("/readyz to fail while draining", || {
        (server.get("/readyz").status == 503).then_some(())
    });
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    // The state is in the data dir: a new server shows the run finished.
    let server = bed.serve(&config, &listen, 0);
    assert_eq!(server.run(id)["status"], "succeeded");
}

/// Two `executor serve` replicas on one PostgreSQL database: the one that
/// answered 202 is killed with SIGKILL at once; the run completes once.
#[test]
fn two_replicas_on_postgres_complete_a_run_once_when_one_is_killed() {
    let bed = Bed::new("  hello:\n    script: [sleep 1, echo replicated]\n");
    let url = postgres_database();
    let (config_a, listen_a) = bed.config("a.toml", "github", Some(&url), "data-a");
    let (config_b, listen_b) = bed.config("b.toml", "github", Some(&url), "data-b");
    let a = bed.serve(&config_a, &listen_a, 1);
    let b = bed.serve(&config_b, &listen_b, 1);
    let answer = a.github("replica-1", "push", &bed.github_push(&bed.head()), None);
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.json()["run_id"].as_i64().unwrap();
    drop(a);
    let run = b.finished(id);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(b.runs().len(), 1);
    let again = b.github("replica-1", "push", &bed.github_push(&bed.head()), None);
    assert_eq!(again.json()["result"], "duplicate");
}

/// The JSON API: a run triggered by ref (API token required), its log
/// followed as server-sent events while it runs, cancelled, retried as a
/// new run, and the runs listed by status a page at a time.
#[test]
fn the_api_triggers_follows_cancels_retries_and_lists() {
    let bed = Bed::new("  slow:\n    script: ['echo started', 'sleep 60']\n");
    let (config, listen) = bed.config("executor.toml", "github", None, "data");
    let server = bed.serve(&config, &listen, 1);
    let body = serde_json::to_vec(&json!({"repository": REPO, "ref": "main"})).unwrap();
    let json = ("Content-Type", "application/json");
    let answer = request(&server.host, "POST", "/api/runs", &[json], &body).unwrap();
    assert_eq!(answer.status, 401, "{}", answer.body);
    let auth = format!("Bearer {API_TOKEN}");
    let write = [json, ("Authorization", auth.as_str())];
    let answer = request(&server.host, "POST", "/api/runs", &write, &body).unwrap();
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.json()["run_id"].as_i64().unwrap();
    assert_eq!(server.run(id)["commit_sha"], bed.head().as_str());
    assert_eq!(server.run(id)["event"], "manual");

    wait_for("the job to print", || {
        let log = server.get(&format!("/api/runs/{id}/jobs/slow/log")).body;
        log.contains("started").then_some(())
    });
    let host = server.host.clone();
    let follower = std::thread::spawn(move || {
        request(
            &host,
            "GET",
            &format!("/api/runs/{id}/jobs/slow/log?follow=1"),
            &[],
            b"",
        )
        .unwrap()
    });
    let answer = request(
        &server.host,
        "POST",
        &format!("/api/runs/{id}/cancel"),
        &write,
        b"",
    )
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["result"], "requested");
    let run = server.finished(id);
    assert_eq!(run["status"], "canceled", "{run}");
    let stream = follower.join().unwrap();
    assert_eq!(stream.status, 200);
    assert!(stream.body.contains("data: started"), "{}", stream.body);
    assert!(stream.body.contains("event: end"), "{}", stream.body);

    let answer = request(
        &server.host,
        "POST",
        &format!("/api/runs/{id}/retry"),
        &write,
        b"",
    )
    .unwrap();
    assert_eq!(answer.status, 202, "{}", answer.body);
    let retry = answer.json()["run_id"].as_i64().unwrap();
    assert_eq!(server.run(retry)["retry_of"], id);
    let answer = request(
        &server.host,
        "POST",
        &format!("/api/runs/{retry}/cancel"),
        &write,
        b"",
    )
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(server.finished(retry)["status"], "canceled");

    let page = server.get("/api/runs?status=canceled&limit=1").json();
    assert_eq!(page["runs"][0]["id"], retry, "{page}");
    let before = page["next_before"].as_i64().unwrap();
    let page = server
        .get(&format!(
            "/api/runs?status=canceled&limit=1&before={before}"
        ))
        .json();
    assert_eq!(page["runs"][0]["id"], id, "{page}");
    assert_eq!(server.get("/api/runs?status=paused").status, 400);
    assert_eq!(server.get("/api/runs/999").status, 404);
}

/// SIGTERM with a run that outlasts the grace period: the run is
/// cancelled, its lease released (queued again for another server), and
/// the server still exits 0.
#[test]
fn sigterm_past_the_grace_releases_the_lease_and_exits_0() {
    let bed = Bed::new("  endless:\n    script: ['echo started', 'sleep 120']\n");
    let (config, listen) = bed.config("executor.toml", "github", None, "data");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        text.replace("grace_seconds = 60", "grace_seconds = 1"),
    )
    .unwrap();
    let mut server = bed.serve(&config, &listen, 1);
    let answer = server.github("grace-1", "push", &bed.github_push(&bed.head()), None);
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.json()["run_id"].as_i64().unwrap();
    wait_for("the job to print", || {
        let log = server.get(&format!("/api/runs/{id}/jobs/endless/log")).body;
        log.contains("started").then_some(())
    });
    server.signal("TERM");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let server = bed.serve(&config, &listen, 0);
    let run = server.run(id);
    assert_eq!(run["status"], "queued", "{run}");
    assert_eq!(run["attempt"], 2, "{run}");
}

/// A push the pipeline's `on:` does not take (known only once the runner
/// read the pipeline from the commit): the run succeeds with its job
/// skipped, and the status says why.
#[test]
fn a_push_the_pipeline_does_not_run_on_finishes_not_triggered() {
    let bed = Bed::new("  hello:\n    script: [echo hi]\non:\n  push:\n    branches: [release]\n");
    let (config, listen) = bed.config("executor.toml", "github", None, "data");
    let server = bed.serve(&config, &listen, 1);
    let answer = server.github("on-1", "push", &bed.github_push(&bed.head()), None);
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.json()["run_id"].as_i64().unwrap();
    assert_eq!(server.finished(id)["status"], "succeeded");
    let jobs = server.get(&format!("/api/runs/{id}/jobs")).json();
    assert_eq!(jobs[0]["status"], "skipped", "{jobs}");
    let description = wait_for("the pipeline status to succeed", || {
        let statuses = bed.forge.statuses.lock().unwrap().clone();
        statuses
            .iter()
            .rev()
            .find(|(_, s)| s["context"] == "executor" && s["state"] == "success")
            .map(|(_, s)| s["description"].as_str().unwrap_or_default().to_owned())
    });
    assert_eq!(description, "the pipeline does not run on this event");
}

/// A runner stopped (SIGSTOP) past its lease and resumed: another runner
/// completed the run as attempt 2, and the stopped one's writes are
/// refused (it says its lease was lost); the recorded result stays
/// attempt 2's.
#[test]
fn a_runner_stopped_past_its_lease_is_fenced_when_it_resumes() {
    let bed = Bed::new("  slow:\n    script: [echo started, sleep 4, echo slept]\n");
    let (config, listen) = bed.config("executor.toml", "github", None, "data");
    let server = bed.serve(&config, &listen, 0);
    let log = bed.dir.path().join("stopped-runner.log");
    let stopped = Killed(
        bed.runner_command(&server)
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let answer = server.github("stop-1", "push", &bed.github_push(&bed.head()), None);
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.json()["run_id"].as_i64().unwrap();
    // Stopped once its script runs, not while it still prepares the job's
    // image: a runner stopped while it extracts a layer into the store the
    // runners share holds that layer's lock, and the second runner would
    // wait for it (a stopped holder, not the lease, would decide the test).
    wait_for("the job's script to start on the first runner", || {
        let log = server.get(&format!("/api/runs/{id}/jobs/slow/log")).body;
        log.contains("started").then_some(())
    });
    let signal = |name: &str| {
        let ok = Command::new("kill")
            .args([name, &stopped.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {name}");
    };
    signal("-STOP");
    let _second = Killed(bed.runner(&server));
    let run = server.finished(id);
    assert_eq!(
        (run["status"].clone(), run["attempt"].clone()),
        (json!("succeeded"), json!(2)),
        "{run}"
    );
    signal("-CONT");
    wait_for("the resumed runner to find its lease lost", || {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("lease lost")
            .then_some(())
    });
    let run = server.run(id);
    assert_eq!(
        (run["status"].clone(), run["attempt"].clone()),
        (json!("succeeded"), json!(2)),
        "{run}"
    );
    let jobs = server.get(&format!("/api/runs/{id}/jobs")).json();
    assert_eq!(
        (jobs[0]["attempt"].clone(), jobs[0]["status"].clone()),
        (json!(2), json!("succeeded"))
    );
}

/// A process killed when the test ends, passed or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
