//! The server's queue and state store on both backends: every test body
//! runs once against SQLite in a temp dir and once against PostgreSQL (a
//! database of its own on the cluster this binary starts), with a manual
//! clock so lease expiry is a step, not a wait.

use std::collections::HashMap;
use std::time::Duration;

use executor::server::store::{
    CancelOutcome, Clock, Delivery, Enqueued, Error, JobEvent, JobStatus, Lease, NewRun, RunFilter,
    RunOutcome, RunStatus, Store,
};
use tokio::task::JoinSet;

/// The manual clock's start (2026-01-01 in Unix milliseconds).
const START: i64 = 1_767_225_600_000;
const LEASE: Duration = Duration::from_secs(60);
const MAX_ATTEMPTS: i64 = 3;

/// Defines `mod $name { fn sqlite(); fn postgres(); }`, each running
/// `$body` with `$store` open on that backend.
macro_rules! on_both {
    ($name:ident, |$store:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let dir = tempfile::tempdir().expect("temp dir");
                let $store = Store::open_sqlite(dir.path())
                    .await
                    .expect("open SQLite")
                    .with_clock(Clock::manual(START));
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let url = tokio::task::spawn_blocking(executor_e2e::postgres_database)
                    .await
                    .expect("a PostgreSQL database");
                let $store = Store::open_postgres(&url)
                    .await
                    .expect("open PostgreSQL")
                    .with_clock(Clock::manual(START));
                $body
            }
        }
    };
}

fn new_run(repository: &str, branch: &str) -> NewRun {
    NewRun {
        repository: repository.to_owned(),
        git_ref: format!("refs/heads/{branch}"),
        commit_sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
        event: "push".to_owned(),
        fork: false,
        trigger: serde_json::json!({"sender": "octocat", "delivery": "d-1"}),
    }
}

async fn enqueue(store: &Store, repository: &str, branch: &str) -> i64 {
    store
        .enqueue(&new_run(repository, branch), None)
        .await
        .expect("enqueue")
        .run_id()
}

async fn claim(store: &Store, owner: &str) -> Lease {
    store
        .claim(owner, LEASE)
        .await
        .expect("claim")
        .expect("a queued run")
        .lease
}

fn assert_fenced<T: std::fmt::Debug>(result: Result<T, Error>, lease: &Lease) {
    match result {
        Err(Error::Fenced { run, attempt, .. }) => {
            assert_eq!((run, attempt), (lease.run_id, lease.attempt));
        }
        other => panic!("expected Fenced for {lease:?}, got {other:?}"),
    }
}

on_both!(duplicate_deliveries_at_once_make_one_run, |store| {
    let delivery = Delivery {
        source: "github:acme/app".to_owned(),
        id: "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned(),
    };
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let (store, delivery) = (store.clone(), delivery.clone());
        tasks.spawn(async move {
            store
                .enqueue(&new_run("acme/app", "main"), Some(&delivery))
                .await
                .expect("enqueue")
        });
    }
    let answers = tasks.join_all().await;
    let created: Vec<_> = answers
        .iter()
        .filter(|answer| matches!(answer, Enqueued::Created(_)))
        .collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    let id = created[0].run_id();
    assert!(
        answers.iter().all(|answer| answer.run_id() == id),
        "{answers:?}"
    );
    let runs = store.list_runs(&RunFilter::default()).await.expect("list");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].trigger["sender"], "octocat");

    // the same id from another hook is another delivery
    let other = Delivery {
        source: "gitlab:acme/app".to_owned(),
        ..delivery.clone()
    };
    let again = store
        .enqueue(&new_run("acme/app", "main"), Some(&other))
        .await
        .expect("enqueue");
    assert!(
        matches!(again, Enqueued::Created(new) if new != id),
        "{again:?}"
    );
});

on_both!(four_claimers_claim_each_of_500_runs_once, |store| {
    for _ in 0..500 {
        enqueue(&store, "acme/app", "main").await;
    }
    let mut claimers = JoinSet::new();
    for runner in 0..4 {
        let store = store.clone();
        claimers.spawn(async move {
            let owner = format!("runner-{runner}");
            let mut claimed = Vec::new();
            while let Some(claim) = store.claim(&owner, LEASE).await.expect("claim") {
                assert_eq!(claim.run.attempt, 1);
                store
                    .finish(&claim.lease, RunOutcome::Succeeded)
                    .await
                    .expect("finish");
                claimed.push(claim.run.id);
            }
            claimed
        });
    }
    let mut claims_per_run: HashMap<i64, u32> = HashMap::new();
    for id in claimers.join_all().await.into_iter().flatten() {
        *claims_per_run.entry(id).or_default() += 1;
    }
    assert_eq!(claims_per_run.len(), 500);
    let twice: Vec<_> = claims_per_run.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "claimed more than once: {twice:?}");
    let counts = store.counts().await.expect("counts");
    assert_eq!((counts.succeeded, counts.depth()), (500, 0), "{counts:?}");
});

on_both!(
    an_expired_lease_is_requeued_and_its_attempt_fenced,
    |store| {
        let id = enqueue(&store, "acme/app", "main").await;
        let old = claim(&store, "runner-a").await;
        assert_eq!((old.run_id, old.attempt), (id, 1));
        let build = JobEvent::Queued {
            stage: "build".to_owned(),
        };
        store
            .record_job(&old, "image", &build)
            .await
            .expect("queued");
        store
            .record_job(&old, "image", &JobEvent::Started)
            .await
            .expect("started");
        store
            .append_log(&old, "image", 0, b"step 1\n")
            .await
            .expect("log");
        let beat = store.heartbeat(&old, LEASE).await.expect("heartbeat");
        assert!(!beat.cancel_requested);

        // runner-a stops past its lease: its writes are refused from then on
        store.clock().advance(LEASE + Duration::from_secs(1));
        assert_fenced(store.heartbeat(&old, LEASE).await, &old);
        let requeued = store.requeue_expired(MAX_ATTEMPTS).await.expect("requeue");
        assert_eq!(requeued.len(), 1);
        assert_eq!(
            (requeued[0].status, requeued[0].attempt),
            (RunStatus::Queued, 2)
        );

        let new = claim(&store, "runner-b").await;
        assert_eq!((new.run_id, new.attempt), (id, 2));
        store
            .record_job(&new, "image", &build)
            .await
            .expect("queued");
        store
            .record_job(&new, "image", &JobEvent::Started)
            .await
            .expect("started");

        // runner-a resumes: every write of attempt 1 is fenced
        assert_fenced(store.heartbeat(&old, LEASE).await, &old);
        assert_fenced(
            store.record_job(&old, "image", &JobEvent::Started).await,
            &old,
        );
        assert_fenced(store.append_log(&old, "image", 7, b"step 2\n").await, &old);
        assert_fenced(store.finish(&old, RunOutcome::Failed).await, &old);
        assert_fenced(store.release(&old).await, &old);

        let done = JobEvent::Finished {
            status: JobStatus::Succeeded,
            image_digest: Some("sha256:abc".to_owned()),
        };
        store
            .record_job(&new, "image", &done)
            .await
            .expect("finished");
        store
            .finish(&new, RunOutcome::Succeeded)
            .await
            .expect("finish");
        assert_fenced(store.finish(&old, RunOutcome::Failed).await, &old);

        let run = store.run(id).await.expect("run").expect("exists");
        assert_eq!((run.status, run.attempt), (RunStatus::Succeeded, 2));
        assert_eq!(run.lease_owner, None);
        let jobs = store.jobs(id, None).await.expect("jobs");
        let states: Vec<_> = jobs.iter().map(|job| (job.attempt, job.status)).collect();
        assert_eq!(
            states,
            [(1, JobStatus::Canceled), (2, JobStatus::Succeeded)]
        );
        assert_eq!(jobs[1].image_digest.as_deref(), Some("sha256:abc"));
        // the old attempt's log is what it wrote before losing the lease
        let log = store.read_log(id, 1, "image", 0).await.expect("log");
        assert_eq!(
            (log.data.as_slice(), log.complete),
            (&b"step 1\n"[..], true)
        );
        // a finished run is no longer requeued
        store.clock().advance(LEASE * 2);
        assert!(
            store
                .requeue_expired(MAX_ATTEMPTS)
                .await
                .expect("requeue")
                .is_empty()
        );
    }
);

on_both!(
    a_run_that_loses_every_lease_fails_at_the_attempt_limit,
    |store| {
        let id = enqueue(&store, "acme/app", "main").await;
        for attempt in 1..=MAX_ATTEMPTS {
            let lease = claim(&store, "runner-a").await;
            assert_eq!((lease.run_id, lease.attempt), (id, attempt));
            store.clock().advance(LEASE * 2);
            let given_up = store.requeue_expired(MAX_ATTEMPTS).await.expect("requeue");
            assert_eq!(given_up.len(), 1);
        }
        let run = store.run(id).await.expect("run").expect("exists");
        assert_eq!((run.status, run.attempt), (RunStatus::Failed, MAX_ATTEMPTS));
        let reason = run.status_reason.unwrap_or_default();
        assert!(reason.starts_with("failed:"), "{reason}");
        assert!(
            store
                .claim("runner-a", LEASE)
                .await
                .expect("claim")
                .is_none()
        );
    }
);

on_both!(a_released_lease_is_requeued_at_once, |store| {
    let id = enqueue(&store, "acme/app", "main").await;
    let old = claim(&store, "runner-a").await;
    let run = store.release(&old).await.expect("release");
    assert_eq!(
        (run.status, run.attempt, run.lease_owner),
        (RunStatus::Queued, 2, None)
    );
    assert_fenced(store.heartbeat(&old, LEASE).await, &old);
    let new = claim(&store, "runner-b").await;
    assert_eq!((new.run_id, new.attempt), (id, 2));
});

on_both!(cancel_of_queued_and_running_runs, |store| {
    let queued = enqueue(&store, "acme/app", "main").await;
    let running = enqueue(&store, "acme/app", "main").await;
    assert_eq!(
        store.cancel(queued).await.expect("cancel"),
        CancelOutcome::Canceled
    );
    let run = store.run(queued).await.expect("run").expect("exists");
    assert_eq!(run.status, RunStatus::Canceled);
    assert!(run.finished_at_ms.is_some());

    // the canceled run is never claimed
    let lease = claim(&store, "runner-a").await;
    assert_eq!(lease.run_id, running);
    assert!(
        store
            .claim("runner-a", LEASE)
            .await
            .expect("claim")
            .is_none()
    );
    store
        .record_job(
            &lease,
            "test",
            &JobEvent::Queued {
                stage: "test".to_owned(),
            },
        )
        .await
        .expect("queued");

    assert_eq!(
        store.cancel(running).await.expect("cancel"),
        CancelOutcome::Requested
    );
    assert_eq!(
        store
            .run(running)
            .await
            .expect("run")
            .expect("exists")
            .status,
        RunStatus::Running
    );
    let beat = store.heartbeat(&lease, LEASE).await.expect("heartbeat");
    assert!(beat.cancel_requested);
    store
        .finish(&lease, RunOutcome::Canceled)
        .await
        .expect("finish");
    assert_eq!(
        store.cancel(running).await.expect("cancel"),
        CancelOutcome::AlreadyFinished(RunStatus::Canceled)
    );
    let jobs = store.jobs(running, Some(1)).await.expect("jobs");
    assert_eq!(jobs[0].status, JobStatus::Canceled);
    assert!(matches!(
        store.cancel(running + 100).await,
        Err(Error::NotFound(_))
    ));
});

on_both!(
    a_canceled_run_whose_lease_expires_is_not_requeued,
    |store| {
        let id = enqueue(&store, "acme/app", "main").await;
        let lease = claim(&store, "runner-a").await;
        assert_eq!(
            store.cancel(id).await.expect("cancel"),
            CancelOutcome::Requested
        );
        store.clock().advance(LEASE * 2);
        let given_up = store.requeue_expired(MAX_ATTEMPTS).await.expect("requeue");
        assert_eq!(
            (given_up[0].status, given_up[0].attempt),
            (RunStatus::Canceled, 1)
        );
        assert!(
            store
                .claim("runner-b", LEASE)
                .await
                .expect("claim")
                .is_none()
        );
        assert_fenced(store.finish(&lease, RunOutcome::Succeeded).await, &lease);
    }
);

on_both!(log_chunks_read_in_order_and_from_an_offset, |store| {
    let id = enqueue(&store, "acme/app", "main").await;
    let lease = claim(&store, "runner-a").await;
    let queued = JobEvent::Queued {
        stage: "test".to_owned(),
    };
    store
        .record_job(&lease, "unit", &queued)
        .await
        .expect("queued");
    assert_eq!(
        store
            .append_log(&lease, "unit", 0, b"hello ")
            .await
            .expect("append"),
        6
    );
    assert_eq!(
        store
            .append_log(&lease, "unit", 6, b"world")
            .await
            .expect("append"),
        11
    );
    // a resent chunk (its answer was lost) is accepted once
    assert_eq!(
        store
            .append_log(&lease, "unit", 6, b"world")
            .await
            .expect("resend"),
        11
    );
    match store.append_log(&lease, "unit", 3, b"xx").await {
        Err(Error::LogOffset { expected, got, .. }) => assert_eq!((expected, got), (11, 3)),
        other => panic!("expected LogOffset, got {other:?}"),
    }
    match store.append_log(&lease, "unit", 20, b"gap").await {
        Err(Error::LogOffset { expected, got, .. }) => assert_eq!((expected, got), (11, 20)),
        other => panic!("expected LogOffset, got {other:?}"),
    }

    let all = store.read_log(id, 1, "unit", 0).await.expect("read");
    assert_eq!(all.data, b"hello world");
    assert_eq!((all.next_offset, all.complete), (11, false));
    let tail = store.read_log(id, 1, "unit", 8).await.expect("read");
    assert_eq!((tail.data.as_slice(), tail.next_offset), (&b"rld"[..], 11));
    let nothing_new = store.read_log(id, 1, "unit", 11).await.expect("read");
    assert!(nothing_new.data.is_empty() && !nothing_new.complete);

    store
        .append_log(&lease, "unit", 11, b"!\n")
        .await
        .expect("append");
    let finished = JobEvent::Finished {
        status: JobStatus::Failed,
        image_digest: None,
    };
    store
        .record_job(&lease, "unit", &finished)
        .await
        .expect("finished");
    let rest = store.read_log(id, 1, "unit", 11).await.expect("read");
    assert_eq!((rest.data.as_slice(), rest.next_offset), (&b"!\n"[..], 13));
    assert!(rest.complete);
    // another job's log is its own
    let other = store.read_log(id, 1, "lint", 0).await.expect("read");
    assert!(other.data.is_empty());
    assert!(matches!(
        store.read_log(id + 100, 1, "unit", 0).await,
        Err(Error::NotFound(_))
    ));
});

on_both!(
    retention_deletes_logs_of_runs_finished_before_a_time,
    |store| {
        let old = enqueue(&store, "acme/app", "main").await;
        let recent = enqueue(&store, "acme/app", "main").await;
        let running = enqueue(&store, "acme/app", "main").await;
        let mut leases = Vec::new();
        for _ in 0..3 {
            let lease = claim(&store, "runner-a").await;
            store
                .append_log(&lease, "job", 0, b"output")
                .await
                .expect("log");
            leases.push(lease);
        }
        store
            .finish(&leases[0], RunOutcome::Succeeded)
            .await
            .expect("finish");
        store.clock().advance(Duration::from_secs(10));
        let horizon = store.clock().now_ms();
        store
            .finish(&leases[1], RunOutcome::Failed)
            .await
            .expect("finish");

        assert_eq!(
            store
                .delete_logs_finished_before(horizon)
                .await
                .expect("retention"),
            1
        );
        assert!(
            store
                .read_log(old, 1, "job", 0)
                .await
                .expect("read")
                .data
                .is_empty()
        );
        assert_eq!(
            store
                .read_log(recent, 1, "job", 0)
                .await
                .expect("read")
                .data,
            b"output"
        );
        assert_eq!(
            store
                .read_log(running, 1, "job", 0)
                .await
                .expect("read")
                .data,
            b"output"
        );
        // the run itself stays
        assert!(store.run(old).await.expect("run").is_some());
    }
);

on_both!(runs_list_filtered_newest_first_in_pages, |store| {
    let main_a = enqueue(&store, "acme/app", "main").await;
    let dev_a = enqueue(&store, "acme/app", "dev").await;
    let main_b = enqueue(&store, "acme/lib", "main").await;
    let main_a2 = enqueue(&store, "acme/app", "main").await;
    store.cancel(main_a).await.expect("cancel");

    let ids =
        |runs: Vec<executor::server::store::Run>| runs.iter().map(|r| r.id).collect::<Vec<_>>();
    let all = store.list_runs(&RunFilter::default()).await.expect("list");
    assert_eq!(ids(all), [main_a2, main_b, dev_a, main_a]);
    let app = RunFilter {
        repository: Some("acme/app".to_owned()),
        ..RunFilter::default()
    };
    assert_eq!(
        ids(store.list_runs(&app).await.expect("list")),
        [main_a2, dev_a, main_a]
    );
    let app_main = RunFilter {
        branch: Some("main".to_owned()),
        ..app.clone()
    };
    assert_eq!(
        ids(store.list_runs(&app_main).await.expect("list")),
        [main_a2, main_a]
    );
    let canceled = RunFilter {
        status: Some(RunStatus::Canceled),
        ..RunFilter::default()
    };
    assert_eq!(
        ids(store.list_runs(&canceled).await.expect("list")),
        [main_a]
    );

    let first = RunFilter {
        limit: 2,
        ..RunFilter::default()
    };
    let page = ids(store.list_runs(&first).await.expect("list"));
    assert_eq!(page, [main_a2, main_b]);
    let second = RunFilter {
        before: page.last().copied(),
        ..first
    };
    assert_eq!(
        ids(store.list_runs(&second).await.expect("list")),
        [dev_a, main_a]
    );

    let counts = store.counts().await.expect("counts");
    assert_eq!((counts.queued, counts.canceled, counts.depth()), (3, 1, 3));
});

on_both!(jobs_keep_their_order_and_durations, |store| {
    let id = enqueue(&store, "acme/app", "main").await;
    let lease = claim(&store, "runner-a").await;
    for (job, stage) in [("lint", "test"), ("unit", "test"), ("image", "build")] {
        let queued = JobEvent::Queued {
            stage: stage.to_owned(),
        };
        store
            .record_job(&lease, job, &queued)
            .await
            .expect("queued");
        // resent: no second row
        store
            .record_job(&lease, job, &queued)
            .await
            .expect("queued again");
    }
    store
        .record_job(&lease, "unit", &JobEvent::Started)
        .await
        .expect("started");
    store.clock().advance(Duration::from_millis(4_250));
    let passed = JobEvent::Finished {
        status: JobStatus::Succeeded,
        image_digest: None,
    };
    store
        .record_job(&lease, "unit", &passed)
        .await
        .expect("finished");
    match store.record_job(&lease, "deploy", &JobEvent::Started).await {
        Err(Error::UnknownJob { job, .. }) => assert_eq!(job, "deploy"),
        other => panic!("expected UnknownJob, got {other:?}"),
    }
    let not_final = JobEvent::Finished {
        status: JobStatus::Running,
        image_digest: None,
    };
    assert!(matches!(
        store.record_job(&lease, "lint", &not_final).await,
        Err(Error::UnfinishedStatus { .. })
    ));

    let jobs = store.jobs(id, Some(1)).await.expect("jobs");
    let names: Vec<_> = jobs.iter().map(|job| job.name.as_str()).collect();
    assert_eq!(names, ["lint", "unit", "image"]);
    assert_eq!(jobs[2].stage, "build");
    assert_eq!(
        (jobs[1].status, jobs[1].duration_ms),
        (JobStatus::Succeeded, Some(4_250))
    );
    assert_eq!(jobs[0].status, JobStatus::Queued);
});

on_both!(a_finished_run_is_retried_as_a_new_run, |store| {
    let id = enqueue(&store, "acme/app", "main").await;
    assert!(matches!(
        store.retry(id).await,
        Err(Error::NotFinished {
            status: RunStatus::Queued,
            ..
        })
    ));
    let lease = claim(&store, "runner-a").await;
    store
        .finish(&lease, RunOutcome::Failed)
        .await
        .expect("finish");
    let retry = store.retry(id).await.expect("retry");
    assert_ne!(retry, id);
    let run = store.run(retry).await.expect("run").expect("exists");
    assert_eq!(
        (run.status, run.attempt, run.retry_of),
        (RunStatus::Queued, 1, Some(id))
    );
    assert_eq!(run.git_ref, "refs/heads/main");
    assert_eq!(
        store.run(id).await.expect("run").expect("exists").status,
        RunStatus::Failed
    );
    assert!(matches!(
        store.retry(id + 100).await,
        Err(Error::NotFound(_))
    ));
});

on_both!(runner_tokens_are_checked_against_their_hashes, |store| {
    store
        .set_runner_token("runner-a", "token-a")
        .await
        .expect("set");
    store
        .set_runner_token("runner-b", "token-b")
        .await
        .expect("set");
    assert_eq!(
        store
            .verify_runner_token("token-b")
            .await
            .expect("verify")
            .as_deref(),
        Some("runner-b")
    );
    assert_eq!(
        store.verify_runner_token("token-c").await.expect("verify"),
        None
    );
    store
        .set_runner_token("runner-a", "rotated")
        .await
        .expect("rotate");
    assert_eq!(
        store.verify_runner_token("token-a").await.expect("verify"),
        None
    );
    assert_eq!(
        store
            .verify_runner_token("rotated")
            .await
            .expect("verify")
            .as_deref(),
        Some("runner-a")
    );
    assert!(store.remove_runner_token("runner-a").await.expect("remove"));
    assert!(!store.remove_runner_token("runner-a").await.expect("remove"));
    assert_eq!(
        store.verify_runner_token("rotated").await.expect("verify"),
        None
    );
    assert!(matches!(
        store.set_runner_token("", "x").await,
        Err(Error::EmptyTokenName(_))
    ));
});

/// SQLite keeps the queue in a WAL-mode file in the data dir, there again
/// after reopening.
#[tokio::test]
async fn sqlite_store_is_a_wal_file_that_survives_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(None, dir.path()).await.expect("open");
    let id = enqueue(&store, "acme/app", "main").await;
    assert!(dir.path().join("executor.db-wal").exists());
    store.close().await;
    let again = Store::open(None, dir.path()).await.expect("reopen");
    let run = again.run(id).await.expect("run").expect("kept");
    assert_eq!(
        (run.status, run.repository.as_str()),
        (RunStatus::Queued, "acme/app")
    );
}

/// A database URL of another kind is refused, naming it.
#[tokio::test]
async fn a_database_url_that_is_not_postgres_is_refused() {
    let err = Store::open(
        Some("mysql://ci:s3cret@db/x"),
        std::path::Path::new("/nonexistent"),
    )
    .await
    .expect_err("not PostgreSQL");
    assert!(
        matches!(&err, Error::UnsupportedUrl(url) if url == "mysql://ci:***@db/x"),
        "{err:?}"
    );
}

/// A database URL that cannot be reached is named, password hidden.
#[tokio::test]
async fn an_unreachable_database_is_named_without_its_password() {
    let url = format!(
        "postgres://ci:s3cret@127.0.0.1:{}/none",
        executor_e2e::free_port()
    );
    let err = Store::open(Some(&url), std::path::Path::new("/nonexistent"))
        .await
        .expect_err("nothing listens there");
    let message = err.to_string();
    assert!(message.contains("postgres://ci:***@127.0.0.1"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
}

/// Two server replicas on one PostgreSQL database: they start at once
/// (the migrations run once, under sqlx's advisory lock), queue through
/// either, and every run is claimed once across both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_postgres_database_share_the_queue() {
    let url = tokio::task::spawn_blocking(executor_e2e::postgres_database)
        .await
        .expect("a PostgreSQL database");
    let (a, b) = tokio::join!(Store::open_postgres(&url), Store::open_postgres(&url));
    let replicas = [a.expect("open replica a"), b.expect("open replica b")];
    for n in 0..200 {
        enqueue(&replicas[n % 2], "acme/app", "main").await;
    }
    let mut claimers = JoinSet::new();
    for (n, replica) in replicas.iter().enumerate() {
        for runner in 0..2 {
            let store = replica.clone();
            claimers.spawn(async move {
                let owner = format!("replica-{n}-runner-{runner}");
                let mut claimed = Vec::new();
                while let Some(claim) = store.claim(&owner, LEASE).await.expect("claim") {
                    store
                        .finish(&claim.lease, RunOutcome::Succeeded)
                        .await
                        .expect("finish");
                    claimed.push(claim.run.id);
                }
                claimed
            });
        }
    }
    let mut claimed: Vec<i64> = claimers.join_all().await.into_iter().flatten().collect();
    claimed.sort_unstable();
    let before = claimed.len();
    claimed.dedup();
    assert_eq!((before, claimed.len()), (200, 200));
    let counts = replicas[1].counts().await.expect("counts");
    assert_eq!((counts.succeeded, counts.depth()), (200, 0), "{counts:?}");
}
