//! The server's logic between HTTP and the store: a webhook delivery
//! verified, read and queued (or refused, or ignored) with its answer; a
//! run claimed for a runner and handed out with what it needs; a runner's
//! reports written under its lease; commit statuses sent on every state
//! change; expired leases requeued. The HTTP handlers and the in-process
//! runners both call this, so a run is handled one way whoever runs it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde::Serialize;
use tokio::sync::Notify;

use super::config::{Config, Repository};
use super::forge::{self, CommitStatus, ForgeClient, ForgeKind, Reporter, StatusState, Token};
use super::metrics::Metrics;
use super::runner::protocol::{Assignment, FinishRequest, JobEventWire};
use super::runner::{Coordinator, RunnerError};
use super::store::{
    CancelOutcome, Delivery, Enqueued, Error as StoreError, JobEvent, JobStatus, Lease, LogRead,
    NewRun, Run, RunId, RunOutcome, Store,
};
use super::webhook::{self, Outcome};
use crate::error_chain;

/// How often a waiting claim looks at the queue again (other replicas'
/// runs; this server's wake it at once).
const CLAIM_POLL: Duration = Duration::from_millis(250);

/// How often a followed log is read again while nothing new came.
const FOLLOW_POLL: Duration = Duration::from_millis(300);

/// A webhook's answer: its status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookAnswer {
    #[serde(skip)]
    pub status: StatusCode,
    /// `queued`, `duplicate`, `ignored` or `rejected`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl HookAnswer {
    fn rejected(status: StatusCode, reason: String) -> Self {
        Self {
            status,
            result: "rejected",
            run_id: None,
            reason: Some(reason),
        }
    }
}

/// The server's state, shared by its handlers and runners.
pub struct Service {
    pub config: Arc<Config>,
    pub store: Store,
    pub metrics: Metrics,
    reporter: Reporter,
    /// Status clients by lower-case repository name.
    forges: HashMap<String, Arc<ForgeClient>>,
    /// Woken when a run is queued here.
    queued: Notify,
    draining: AtomicBool,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("store", &self.store.backend_name())
            .finish_non_exhaustive()
    }
}

impl Service {
    /// The service over `store`; forge clients for the repositories with a
    /// token (one that cannot be made is logged and sends nothing).
    ///
    /// # Panics
    /// Outside a Tokio runtime (the reporter's task).
    #[must_use]
    pub fn new(config: Arc<Config>, store: Store) -> Self {
        let mut forges = HashMap::new();
        for repo in &config.repositories {
            let (Some(token), Some(api)) = (&repo.forge_token, &repo.api_url) else {
                continue;
            };
            match ForgeClient::new(repo.forge, api, Token::new(token.expose())) {
                Ok(client) => {
                    forges.insert(repo.name.to_ascii_lowercase(), Arc::new(client));
                }
                Err(e) => tracing::warn!(
                    repository = %repo.name,
                    "statuses off: {}",
                    error_chain::one_line(&e)
                ),
            }
        }
        Self {
            config,
            store,
            metrics: Metrics::default(),
            reporter: Reporter::spawn(forge::ReporterConfig::default()),
            forges,
            queued: Notify::new(),
            draining: AtomicBool::new(false),
        }
    }

    /// Stops handing out runs (SIGTERM); `/readyz` answers 503 from now.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.queued.notify_waiters();
    }

    /// Wakes the claims waiting for work (a run was queued).
    pub fn wake(&self) {
        self.queued.notify_waiters();
    }

    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Waits up to `grace` for the statuses still to send.
    pub async fn flush_statuses(&self, grace: Duration) -> bool {
        self.reporter.drain(grace).await
    }

    // Webhooks.

    /// Answers a delivery to `/hooks/{forge}` (`forge` from the path, or
    /// detected from the headers).
    pub async fn webhook(
        &self,
        forge: Option<ForgeKind>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> HookAnswer {
        let Some(forge) = forge.or_else(|| ForgeKind::detect(headers)) else {
            self.metrics.webhook("unknown", "rejected");
            return HookAnswer::rejected(
                StatusCode::BAD_REQUEST,
                "no forge event header (X-GitHub-Event, X-Gitlab-Event, X-Gitea-Event)".into(),
            );
        };
        let answer = self.webhook_from(forge, headers, body).await;
        let result = match answer.status {
            StatusCode::UNAUTHORIZED => "unauthorized",
            _ => answer.result,
        };
        self.metrics.webhook(forge.as_str(), result);
        answer
    }

    async fn webhook_from(&self, forge: ForgeKind, headers: &HeaderMap, body: &[u8]) -> HookAnswer {
        // The repository picks the secret; unverified, it only chooses.
        let repo = webhook::repository_hint(forge, body)
            .and_then(|name| self.config.repository(&name))
            .filter(|repo| same_family(repo.forge, forge));
        let Some(repo) = repo else {
            // Unknown or unreadable: refused as unproven, like a bad
            // signature (an unknown sender learns nothing more).
            return HookAnswer::rejected(
                StatusCode::UNAUTHORIZED,
                "no configured repository for this delivery".into(),
            );
        };
        let outcome = match webhook::receive(
            forge,
            repo.webhook_secret.expose().as_bytes(),
            headers,
            body,
        ) {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::info!(repository = %repo.name, "webhook refused: {}", error_chain::one_line(&e));
                return HookAnswer::rejected(e.status(), e.to_string());
            }
        };
        let trigger = match outcome {
            Outcome::Run(trigger) => trigger,
            Outcome::Ignored { reason } => {
                return HookAnswer {
                    status: StatusCode::OK,
                    result: "ignored",
                    run_id: None,
                    reason: Some(reason.to_string()),
                };
            }
        };
        if !repo.events.contains(&trigger.kind()) {
            return HookAnswer {
                status: StatusCode::OK,
                result: "ignored",
                run_id: None,
                reason: Some(format!(
                    "{} events are not enabled for {}",
                    trigger.kind().as_str(),
                    repo.name
                )),
            };
        }
        let fork = trigger.pull_request().is_some_and(|pr| pr.fork);
        let new = NewRun {
            repository: repo.name.clone(),
            git_ref: trigger.git_ref.clone(),
            commit_sha: trigger.commit.clone(),
            event: trigger.kind().as_str().to_owned(),
            fork,
            trigger: serde_json::to_value(&*trigger).unwrap_or(serde_json::Value::Null),
        };
        let delivery = Delivery {
            source: format!("{forge}:{}", repo.name.to_ascii_lowercase()),
            id: trigger.delivery_id.clone(),
        };
        match self.store.enqueue(&new, Some(&delivery)).await {
            Ok(Enqueued::Created(id)) => {
                self.queued.notify_waiters();
                self.status(
                    repo,
                    &new.commit_sha,
                    &new.git_ref,
                    id,
                    None,
                    StatusState::Pending,
                    "queued",
                );
                HookAnswer {
                    status: StatusCode::ACCEPTED,
                    result: "queued",
                    run_id: Some(id),
                    reason: None,
                }
            }
            Ok(Enqueued::Duplicate(id)) => HookAnswer {
                status: StatusCode::OK,
                result: "duplicate",
                run_id: Some(id),
                reason: Some("this delivery was received before".into()),
            },
            Err(e) => {
                // The forge redelivers on a 503; the delivery was not kept.
                tracing::error!("cannot queue a run: {}", error_chain::one_line(&e));
                HookAnswer::rejected(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the queue is unavailable; retry later".into(),
                )
            }
        }
    }

    /// Queues a run of `repo` at `commit` (the API's trigger).
    pub async fn trigger(
        &self,
        repo: &Repository,
        git_ref: &str,
        commit: &str,
    ) -> Result<RunId, StoreError> {
        let new = NewRun {
            repository: repo.name.clone(),
            git_ref: git_ref.to_owned(),
            commit_sha: commit.to_owned(),
            event: "manual".to_owned(),
            fork: false,
            trigger: serde_json::json!({ "api": true }),
        };
        let id = self.store.enqueue(&new, None).await?.run_id();
        self.queued.notify_waiters();
        self.status(
            repo,
            commit,
            git_ref,
            id,
            None,
            StatusState::Pending,
            "queued",
        );
        Ok(id)
    }

    // Statuses.

    /// Sends a status for `run` (the pipeline's, or `job`'s).
    #[allow(clippy::too_many_arguments)]
    fn status(
        &self,
        repo: &Repository,
        sha: &str,
        git_ref: &str,
        run: RunId,
        job: Option<&str>,
        state: StatusState,
        description: &str,
    ) {
        let Some(client) = self.forges.get(&repo.name.to_ascii_lowercase()) else {
            return;
        };
        let context = job.map_or_else(|| forge::PIPELINE_CONTEXT.to_owned(), forge::job_context);
        let mut status = CommitStatus::new(sha, context, state);
        status.description = Some(description.to_owned());
        status.target_url = Some(format!("{}/runs/{run}", self.config.base_url));
        status.git_ref = Some(
            git_ref
                .strip_prefix("refs/heads/")
                .or_else(|| git_ref.strip_prefix("refs/tags/"))
                .unwrap_or(git_ref)
                .to_owned(),
        );
        self.reporter.report(client, &repo.name, status);
    }

    /// Sends a status for stored `run`.
    fn run_status(&self, run: &Run, job: Option<&str>, state: StatusState, description: &str) {
        if let Some(repo) = self.config.repository(&run.repository) {
            self.status(
                repo,
                &run.commit_sha,
                &run.git_ref,
                run.id,
                job,
                state,
                description,
            );
        }
    }

    async fn stored_run(&self, id: RunId) -> Option<Run> {
        self.store.run(id).await.ok().flatten()
    }

    // The runner side.

    /// Claims a run for `owner`, waiting up to the configured claim wait.
    pub async fn claim(&self, owner: &str) -> Result<Option<Assignment>, StoreError> {
        self.metrics.runner_seen(owner);
        let deadline = tokio::time::Instant::now() + self.config.queue.claim_wait;
        loop {
            if self.is_draining() {
                // Still a long poll: a runner asking again at once would
                // spin until the server is gone.
                tokio::time::sleep_until(deadline).await;
                return Ok(None);
            }
            let woken = self.queued.notified();
            if let Some(claim) = self.store.claim(owner, self.config.queue.lease).await? {
                if let Some(assignment) = self.assignment(&claim.run, claim.lease) {
                    self.run_status(&claim.run, None, StatusState::Running, "running");
                    return Ok(Some(assignment));
                }
                continue;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let _ = tokio::time::timeout((deadline - now).min(CLAIM_POLL), woken).await;
        }
    }

    /// What a runner needs for `run`; `None` (the run failed here) when
    /// its repository is no longer configured.
    fn assignment(&self, run: &Run, lease: Lease) -> Option<Assignment> {
        let Some(repo) = self.config.repository(&run.repository) else {
            tracing::warn!(run = run.id, repository = %run.repository, "repository no longer configured: run failed");
            let store = self.store.clone();
            tokio::spawn(async move { store.finish(&lease, RunOutcome::Failed).await });
            return None;
        };
        let trusted = !run.fork || repo.allow_secrets_for_forks;
        let base_branch = run
            .trigger
            .pointer("/event/base_branch")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let (branch, tag) = if let Some(tag) = run.git_ref.strip_prefix("refs/tags/") {
            (None, Some(tag.to_owned()))
        } else if let Some(branch) = run.git_ref.strip_prefix("refs/heads/") {
            (Some(branch.to_owned()), None)
        } else {
            (base_branch, None)
        };
        Some(Assignment {
            run_id: run.id,
            repository: run.repository.clone(),
            clone_url: repo.clone_url.clone(),
            git_ref: run.git_ref.clone(),
            commit_sha: run.commit_sha.clone(),
            source: run.event.clone(),
            branch,
            tag,
            pipeline: repo.pipeline.display().to_string(),
            secrets: if trusted {
                repo.secrets.clone()
            } else {
                std::collections::BTreeMap::new()
            },
            allow_push: trusted,
            heartbeat_ms: u64::try_from(self.config.queue.heartbeat.as_millis())
                .unwrap_or(u64::MAX),
            lease,
        })
    }

    pub async fn heartbeat(&self, lease: &Lease) -> Result<bool, StoreError> {
        self.metrics.runner_seen(&lease.owner);
        self.store
            .heartbeat(lease, self.config.queue.lease)
            .await
            .map(|beat| beat.cancel_requested)
    }

    pub async fn job_event(
        &self,
        lease: &Lease,
        job: &str,
        event: JobEvent,
    ) -> Result<(), StoreError> {
        self.store.record_job(lease, job, &event).await?;
        let Some(run) = self.stored_run(lease.run_id).await else {
            return Ok(());
        };
        let (state, description) = match &event {
            JobEvent::Queued { .. } => (StatusState::Pending, "queued"),
            JobEvent::Started => (StatusState::Running, "running"),
            JobEvent::Finished { status, .. } => {
                let jobs = self.store.jobs(run.id, Some(lease.attempt)).await;
                let ms = jobs
                    .ok()
                    .and_then(|jobs| jobs.into_iter().find(|j| j.name == job))
                    .and_then(|j| j.duration_ms);
                if let Some(ms) = ms {
                    self.metrics
                        .job_finished(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
                }
                match status {
                    JobStatus::Succeeded => (StatusState::Success, "succeeded"),
                    JobStatus::Skipped => (StatusState::Success, "skipped"),
                    JobStatus::Failed => (StatusState::Failure, "failed"),
                    JobStatus::Canceled | JobStatus::Queued | JobStatus::Running => {
                        (StatusState::Canceled, "canceled")
                    }
                }
            }
        };
        self.run_status(&run, Some(job), state, description);
        Ok(())
    }

    pub async fn log(
        &self,
        lease: &Lease,
        job: &str,
        offset: i64,
        data: &[u8],
    ) -> Result<i64, StoreError> {
        self.store.append_log(lease, job, offset, data).await
    }

    pub async fn finish(&self, request: &FinishRequest) -> Result<(), StoreError> {
        self.store.finish(&request.lease, request.outcome).await?;
        if let Some(run) = self.stored_run(request.lease.run_id).await {
            let (state, default) = match request.outcome {
                RunOutcome::Succeeded => (StatusState::Success, "succeeded"),
                RunOutcome::Failed => (StatusState::Failure, "failed"),
                RunOutcome::Canceled => (StatusState::Canceled, "canceled"),
            };
            let description = request.description.as_deref().unwrap_or(default);
            self.run_status(&run, None, state, description);
        }
        Ok(())
    }

    pub async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let run = self.store.release(lease).await?;
        self.queued.notify_waiters();
        self.run_status(&run, None, StatusState::Pending, "requeued");
        Ok(())
    }

    // Reads for the API and the runs pages.

    /// Job `job`'s log of `attempt` of run `id` from byte `from`, as it
    /// comes: every read that brought bytes, then one complete read (maybe
    /// empty) when no more will come; a store error ends it, and so does
    /// draining (without a complete read).
    pub fn follow_log(
        self: Arc<Self>,
        id: RunId,
        attempt: i64,
        job: String,
        from: i64,
    ) -> impl futures_util::Stream<Item = Result<LogRead, StoreError>> + Send + 'static {
        futures_util::stream::unfold((self, from, false), move |(service, offset, done)| {
            let job = job.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    let read = match service.store.read_log(id, attempt, &job, offset).await {
                        Ok(read) => read,
                        Err(e) => return Some((Err(e), (service, offset, true))),
                    };
                    if !read.data.is_empty() || read.complete {
                        let (next, complete) = (read.next_offset, read.complete);
                        return Some((Ok(read), (service, next, complete)));
                    }
                    if service.is_draining() {
                        // Not complete: a follower resumes elsewhere (the
                        // HTTP server waits for open streams to stop).
                        return None;
                    }
                    tokio::time::sleep(FOLLOW_POLL).await;
                }
            }
        })
    }

    /// Job `job`'s whole log of `attempt` of run `id`, as stored so far.
    pub async fn whole_log(
        &self,
        id: RunId,
        attempt: i64,
        job: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let read = self.store.read_log(id, attempt, job, offset).await?;
            if read.data.is_empty() {
                return Ok(out);
            }
            out.extend_from_slice(&read.data);
            offset = read.next_offset;
        }
    }

    /// Cancels run `id`: at once when queued, at its runner's next
    /// heartbeat when running.
    pub async fn cancel(&self, id: RunId) -> Result<CancelOutcome, StoreError> {
        self.store.cancel(id).await
    }

    /// Queues finished run `id` again as a new run; answers its id.
    pub async fn retry(&self, id: RunId) -> Result<RunId, StoreError> {
        let run_id = self.store.retry(id).await?;
        self.wake();
        Ok(run_id)
    }

    /// The runners heard from within a lease period (a claim or a
    /// heartbeat), with how long ago, most recent first.
    #[must_use]
    pub fn runners(&self) -> Vec<(String, Duration)> {
        let window = self.config.queue.lease + self.config.queue.claim_wait;
        self.metrics.runners(window)
    }

    /// Deletes the logs and delivery ids older than the retention.
    pub async fn apply_retention(&self) -> Result<(u64, u64), StoreError> {
        let now = self.store.clock().now_ms();
        let before =
            |age: Duration| now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
        let retention = self.config.retention;
        let logs = self
            .store
            .delete_logs_finished_before(before(retention.logs))
            .await?;
        let deliveries = self
            .store
            .forget_deliveries_before(before(retention.deliveries))
            .await?;
        Ok((logs, deliveries))
    }

    /// Requeues the runs whose lease expired; their statuses go back to
    /// pending (or to the end they met).
    pub async fn requeue_expired(&self) -> Result<usize, StoreError> {
        let runs = self
            .store
            .requeue_expired(self.config.queue.max_attempts)
            .await?;
        if !runs.is_empty() {
            self.metrics.leases_expired(runs.len() as u64);
            self.queued.notify_waiters();
        }
        for run in &runs {
            tracing::warn!(run = run.id, attempt = run.attempt, status = %run.status, "lease expired");
            let (state, description) = match run.status {
                super::store::RunStatus::Queued => {
                    (StatusState::Pending, "requeued: its runner was lost")
                }
                super::store::RunStatus::Canceled => (StatusState::Canceled, "canceled"),
                _ => (StatusState::Failure, "failed: its runners kept being lost"),
            };
            self.run_status(run, None, state, description);
        }
        Ok(runs.len())
    }
}

/// Whether a delivery from `sent` may be for a repository of kind
/// `configured` (Gitea and Forgejo send each other's headers).
fn same_family(configured: ForgeKind, sent: ForgeKind) -> bool {
    configured == sent
        || matches!(
            (configured, sent),
            (
                ForgeKind::Gitea | ForgeKind::Forgejo,
                ForgeKind::Gitea | ForgeKind::Forgejo
            )
        )
}

/// An in-process runner: the server's own [`Coordinator`], as runner
/// `owner`.
pub struct LocalRunner {
    pub service: Arc<Service>,
    pub owner: String,
}

fn runner_error(what: &'static str) -> impl FnOnce(StoreError) -> RunnerError {
    move |source| match source {
        StoreError::Fenced { run, attempt, .. } => RunnerError::Fenced { run, attempt },
        source => RunnerError::Store { what, source },
    }
}

impl Coordinator for LocalRunner {
    async fn claim(&self) -> Result<Option<Assignment>, RunnerError> {
        self.service
            .claim(&self.owner)
            .await
            .map_err(runner_error("claim"))
    }

    async fn heartbeat(&self, lease: &Lease) -> Result<bool, RunnerError> {
        self.service
            .heartbeat(lease)
            .await
            .map_err(runner_error("heartbeat"))
    }

    async fn job_event(
        &self,
        lease: &Lease,
        job: &str,
        event: JobEventWire,
    ) -> Result<(), RunnerError> {
        self.service
            .job_event(lease, job, event.into())
            .await
            .map_err(runner_error("job event"))
    }

    async fn log(
        &self,
        lease: &Lease,
        job: &str,
        offset: i64,
        data: String,
    ) -> Result<i64, RunnerError> {
        self.service
            .log(lease, job, offset, data.as_bytes())
            .await
            .map_err(runner_error("log"))
    }

    async fn finish(&self, request: FinishRequest) -> Result<(), RunnerError> {
        self.service
            .finish(&request)
            .await
            .map_err(runner_error("finish"))
    }

    async fn release(&self, lease: &Lease) -> Result<(), RunnerError> {
        self.service
            .release(lease)
            .await
            .map_err(runner_error("release"))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::server::webhook::github_signature;

    const CONFIG: &str = r#"
base_url = "http://ci.test"

[[repository]]
name = "acme/app"
clone_url = "http://git.test/app.git"
forge = "github"
webhook_secret = { file = "hook" }
events = ["push", "pull_request"]
secrets = { DEPLOY = { file = "deploy" } }
"#;

    async fn service(dir: &Path) -> Service {
        std::fs::write(dir.join("hook"), "s3cret").unwrap();
        std::fs::write(dir.join("deploy"), "deploy-value").unwrap();
        let config = Config::parse(&dir.join("executor.toml"), CONFIG).unwrap();
        let store = Store::open_sqlite(&dir.join("data")).await.unwrap();
        let store = store.with_clock(crate::server::store::Clock::manual(1_000_000));
        Service::new(Arc::new(config), store)
    }

    fn headers(event: &str, delivery: &str, body: &[u8], secret: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-github-event", event.parse().unwrap());
        headers.insert("x-github-delivery", delivery.parse().unwrap());
        let signature = github_signature(secret.as_bytes(), body);
        headers.insert("x-hub-signature-256", signature.parse().unwrap());
        headers
    }

    fn push(git_ref: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "ref": git_ref,
            "before": "0".repeat(40),
            "after": "a".repeat(40),
            "deleted": false,
            "head_commit": {"id": "a".repeat(40), "message": "change"},
            "repository": {"id": 1, "full_name": "acme/app", "clone_url": "http://git.test/app.git"},
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn deliveries_are_queued_once_ignored_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path()).await;
        let body = push("refs/heads/main");
        let queued = service
            .webhook(None, &headers("push", "d1", &body, "s3cret"), &body)
            .await;
        assert_eq!(
            (queued.status, queued.result),
            (StatusCode::ACCEPTED, "queued")
        );
        let again = service
            .webhook(None, &headers("push", "d1", &body, "s3cret"), &body)
            .await;
        assert_eq!((again.status, again.result), (StatusCode::OK, "duplicate"));
        assert_eq!(again.run_id, queued.run_id);

        let forged = service
            .webhook(None, &headers("push", "d2", &body, "wrong"), &body)
            .await;
        assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
        let tag = push("refs/tags/v1");
        let ignored = service
            .webhook(None, &headers("push", "d3", &tag, "s3cret"), &tag)
            .await;
        assert_eq!(
            (ignored.status, ignored.result),
            (StatusCode::OK, "ignored")
        );
        assert!(
            ignored
                .reason
                .unwrap()
                .contains("tag events are not enabled")
        );
        let other = body.clone();
        let other = String::from_utf8(other)
            .unwrap()
            .replace("acme/app", "acme/other");
        let unknown = service
            .webhook(
                None,
                &headers("push", "d4", other.as_bytes(), "s3cret"),
                other.as_bytes(),
            )
            .await;
        assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
        assert_eq!(service.store.counts().await.unwrap().queued, 1);
    }

    #[tokio::test]
    async fn a_fork_run_is_handed_out_without_secrets_or_push() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path()).await;
        for fork in [false, true] {
            let new = NewRun {
                repository: "acme/app".into(),
                git_ref: "refs/pull/7/head".into(),
                commit_sha: "b".repeat(40),
                event: "pull_request".into(),
                fork,
                trigger: serde_json::json!({"event": {"base_branch": "main"}}),
            };
            service.store.enqueue(&new, None).await.unwrap();
            let assignment = service.claim("runner/1").await.unwrap().unwrap();
            assert_eq!(assignment.allow_push, !fork);
            assert_eq!(assignment.secrets.contains_key("DEPLOY"), !fork);
            assert_eq!(assignment.branch.as_deref(), Some("main"));
            assert_eq!(assignment.source, "pull_request");
        }
    }

    #[tokio::test]
    async fn retention_deletes_old_logs_and_forgets_old_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path()).await;
        let body = push("refs/heads/main");
        let queued = service
            .webhook(None, &headers("push", "old", &body, "s3cret"), &body)
            .await;
        assert_eq!(queued.status, StatusCode::ACCEPTED);
        let assignment = service.claim("runner/1").await.unwrap().unwrap();
        let lease = assignment.lease;
        let queued_job = JobEvent::Queued {
            stage: "test".into(),
        };
        service.job_event(&lease, "job", queued_job).await.unwrap();
        service.log(&lease, "job", 0, b"line\n").await.unwrap();
        let finish = FinishRequest {
            lease: lease.clone(),
            outcome: RunOutcome::Succeeded,
            description: None,
        };
        service.finish(&finish).await.unwrap();
        assert_eq!(service.apply_retention().await.unwrap(), (0, 0));
        service
            .store
            .clock()
            .advance(Duration::from_secs(31 * 86_400));
        let (logs, deliveries) = service.apply_retention().await.unwrap();
        assert!(logs > 0 && deliveries == 1, "{logs} {deliveries}");
        // Forgotten: the same delivery id queues again.
        let again = service
            .webhook(None, &headers("push", "old", &body, "s3cret"), &body)
            .await;
        assert_eq!(again.status, StatusCode::ACCEPTED);
    }
}
