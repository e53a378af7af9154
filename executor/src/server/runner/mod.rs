//! Runners: claim a queued run, clone its commit, run its pipeline with the
//! pipeline library and report back, fenced by the claim's lease. One code
//! path ([`execute`]) runs every run; what it talks to is a
//! [`Coordinator`]: the server itself for `executor serve --runners N`
//! ([`crate::server::service::Service`]), or the server over HTTP for
//! `executor runner` ([`http::HttpCoordinator`]). The pipeline's `on:` is
//! applied here, as the pipeline file is only known once the commit is
//! cloned: a run whose pipeline does not run on its event finishes
//! succeeded with every job skipped ("not triggered").

pub mod http;
pub mod protocol;
mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error_chain;
use crate::pipeline::IsolationMode;
use crate::pipeline::run::{RunOptions, run};
use crate::pipeline::vars::PipelineSource;
use crate::pipeline::{EventSink, JobStatus as PipelineJobStatus, RunEvent};
use crate::platform::Platform;
use crate::registry::RegistryOptions;
use crate::server::store::{JobStatus, RunOutcome};
use protocol::{Assignment, FinishRequest, JobEventWire};

pub use worker::{Worker, WorkerConfig};

/// Why a runner's call to its server failed.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The lease is lost: another attempt owns the run now.
    #[error("run {run} attempt {attempt}: the lease was lost (fenced)")]
    Fenced { run: i64, attempt: i64 },
    #[error("server call {what} failed")]
    Store {
        what: &'static str,
        #[source]
        source: crate::server::store::Error,
    },
    #[error("{url}: request failed")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: the server answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("the runner's work directory {}", path.display())]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = RunnerError> = std::result::Result<T, E>;

/// The server as a runner sees it.
pub trait Coordinator: Send + Sync + 'static {
    /// A queued run for this runner, waiting a little for one; `None` when
    /// none came.
    fn claim(&self) -> impl Future<Output = Result<Option<Assignment>>> + Send;
    /// Renews the lease; answers whether the run was cancelled.
    fn heartbeat(
        &self,
        lease: &crate::server::store::Lease,
    ) -> impl Future<Output = Result<bool>> + Send;
    fn job_event(
        &self,
        lease: &crate::server::store::Lease,
        job: &str,
        event: JobEventWire,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Appends `data` at `offset` of the job's log.
    fn log(
        &self,
        lease: &crate::server::store::Lease,
        job: &str,
        offset: i64,
        data: String,
    ) -> impl Future<Output = Result<i64>> + Send;
    fn finish(&self, request: FinishRequest) -> impl Future<Output = Result<()>> + Send;
    /// Gives the run back to the queue (a draining runner past its grace).
    fn release(
        &self,
        lease: &crate::server::store::Lease,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// This machine's settings for the runs it executes.
#[derive(Debug, Clone)]
pub struct Machine {
    /// The local image store.
    pub cache_dir: PathBuf,
    /// Where each run's logs and scratch go (a directory per run).
    pub work_dir: PathBuf,
    pub insecure_registries: Vec<String>,
    /// Jobs at once in one run.
    pub jobs: usize,
    /// How build jobs isolate RUN steps (in place: one run and one job at
    /// a time, see [`Machine::check_isolation`]).
    pub isolation: IsolationMode,
}

/// A machine that cannot build in place as asked.
#[derive(Debug, thiserror::Error)]
#[error(
    "in-place isolation builds in this container's own root, one build at a time: {setting} must be 1, not {value}"
)]
pub struct InPlaceError {
    /// The setting that asks for more (`--concurrency`, `jobs`...).
    pub setting: &'static str,
    pub value: usize,
}

impl Machine {
    /// In place, builds share the container's root: refuses more than one
    /// run at a time (`runs`, the setting `runs_setting` gave) and more
    /// than one job at a time within a run.
    pub fn check_isolation(
        &self,
        runs_setting: &'static str,
        runs: usize,
    ) -> Result<(), InPlaceError> {
        if self.isolation != IsolationMode::InPlace {
            return Ok(());
        }
        for (setting, value) in [(runs_setting, runs), ("jobs", self.jobs)] {
            if value > 1 {
                return Err(InPlaceError { setting, value });
            }
        }
        Ok(())
    }
}

/// What a runner forwards from the run's threads to the server, in order.
enum Forward {
    Job(String, JobEventWire),
    Log(String, String),
}

/// The run's event sink: turns pipeline events into forwards.
struct Forwarder {
    tx: mpsc::UnboundedSender<Forward>,
    stages: Mutex<BTreeMap<String, String>>,
    /// The jobs reported queued so far.
    queued: Mutex<BTreeSet<String>>,
    not_triggered: Mutex<bool>,
}

impl Forwarder {
    fn stage(&self, job: &str) -> String {
        self.stages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(job)
            .cloned()
            .unwrap_or_default()
    }

    /// Marks `job` queued; whether it was already.
    fn queued(&self, job: &str) -> bool {
        !self
            .queued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job.to_owned())
    }
}

impl EventSink for Forwarder {
    fn event(&self, event: &RunEvent) {
        let forward = match event {
            RunEvent::Planned(plan) => {
                let mut stages = self.stages.lock().unwrap_or_else(PoisonError::into_inner);
                for job in &plan.jobs {
                    stages.insert(job.name.clone(), job.stage.clone());
                }
                return;
            }
            RunEvent::NotTriggered { .. } => {
                *self
                    .not_triggered
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = true;
                return;
            }
            RunEvent::JobQueued { job } => {
                self.queued(job);
                Forward::Job(
                    job.clone(),
                    JobEventWire::Queued {
                        stage: self.stage(job),
                    },
                )
            }
            RunEvent::JobStarted { job, attempt } if *attempt == 1 => {
                Forward::Job(job.clone(), JobEventWire::Started)
            }
            RunEvent::JobFinished(report) => {
                // A job skipped before it was queued (its rules, the
                // pipeline's `on:`) is listed all the same.
                if !self.queued(&report.name) {
                    let stage = self.stage(&report.name);
                    let _ = self.tx.send(Forward::Job(
                        report.name.clone(),
                        JobEventWire::Queued { stage },
                    ));
                }
                let status = match report.status {
                    PipelineJobStatus::Succeeded => JobStatus::Succeeded,
                    PipelineJobStatus::Failed { .. } => JobStatus::Failed,
                    PipelineJobStatus::Skipped(_) => JobStatus::Skipped,
                    PipelineJobStatus::Canceled => JobStatus::Canceled,
                };
                Forward::Job(
                    report.name.clone(),
                    JobEventWire::Finished {
                        status,
                        // The pushed image by digest (the page's copy
                        // button), or the digest alone when not pushed.
                        image_digest: report.image.clone().or_else(|| report.digest.clone()),
                    },
                )
            }
            RunEvent::Log { job, line, .. } => Forward::Log(job.clone(), format!("{line}\n")),
            RunEvent::JobStarted { .. }
            | RunEvent::RunStarted { .. }
            | RunEvent::RunFinished { .. } => {
                return;
            }
        };
        // The receiver is gone only when the run was abandoned.
        let _ = self.tx.send(forward);
    }
}

/// The most log bytes sent in one chunk.
const MAX_CHUNK: usize = 256 * 1024;

/// Sends the forwards in order until the run's sink is dropped. Stops at
/// the first fenced answer (the run belongs to another attempt now);
/// other failures are logged and the next forward is tried.
async fn forward<C: Coordinator>(
    coordinator: Arc<C>,
    lease: crate::server::store::Lease,
    mut rx: mpsc::UnboundedReceiver<Forward>,
    fenced: CancellationToken,
) {
    let mut offsets: BTreeMap<String, i64> = BTreeMap::new();
    let mut pending: Option<Forward> = None;
    loop {
        let next = match pending.take() {
            Some(next) => next,
            None => match rx.recv().await {
                Some(next) => next,
                None => return,
            },
        };
        let result = match next {
            Forward::Job(job, event) => coordinator.job_event(&lease, &job, event).await,
            Forward::Log(job, mut data) => {
                // Lines of the same job waiting behind go in one chunk.
                while data.len() < MAX_CHUNK {
                    match rx.try_recv() {
                        Ok(Forward::Log(same, line)) if same == job => data.push_str(&line),
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let offset = offsets.get(&job).copied().unwrap_or(0);
                let length = i64::try_from(data.len()).unwrap_or(i64::MAX);
                let sent = coordinator.log(&lease, &job, offset, data).await;
                if sent.is_ok() {
                    offsets.insert(job, offset + length);
                }
                sent.map(|_| ())
            }
        };
        match result {
            Ok(()) => {}
            Err(RunnerError::Fenced { .. }) => {
                fenced.cancel();
                return;
            }
            Err(e) => tracing::warn!(
                run = lease.run_id,
                "cannot report to the server: {}",
                error_chain::one_line(&e)
            ),
        }
    }
}

/// How a run's execution ended, for the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Finished(RunOutcome),
    /// Past the grace period: the lease was given back.
    Released,
    /// The lease was lost: nothing was reported.
    Fenced,
}

/// Executes `assignment`: clones its commit, runs its pipeline, forwards
/// its events and logs, renews the lease meanwhile, and finishes the run
/// (or releases it when `abort` fires, past a shutdown's grace).
pub async fn execute<C: Coordinator>(
    coordinator: Arc<C>,
    assignment: Assignment,
    machine: &Machine,
    abort: CancellationToken,
) -> Result<Ended> {
    let lease = assignment.lease.clone();
    let run_id = assignment.run_id;
    let cancel = CancellationToken::new();
    let fenced = CancellationToken::new();
    let canceled_by_user = CancellationToken::new();

    // The heartbeat: renews the lease, learns of cancels.
    let beat = {
        let coordinator = Arc::clone(&coordinator);
        let lease = lease.clone();
        let (cancel, fenced, canceled_by_user) =
            (cancel.clone(), fenced.clone(), canceled_by_user.clone());
        let every = Duration::from_millis(assignment.heartbeat_ms.max(50));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match coordinator.heartbeat(&lease).await {
                    Ok(true) => {
                        canceled_by_user.cancel();
                        cancel.cancel();
                    }
                    Ok(false) => {}
                    Err(RunnerError::Fenced { .. }) => {
                        fenced.cancel();
                        cancel.cancel();
                        return;
                    }
                    Err(e) => tracing::warn!(
                        run = lease.run_id,
                        "heartbeat failed: {}",
                        error_chain::one_line(&e)
                    ),
                }
            }
        })
    };
    let abort_watch = {
        let (abort, cancel) = (abort.clone(), cancel.clone());
        tokio::spawn(async move {
            abort.cancelled().await;
            cancel.cancel();
        })
    };

    let (tx, rx) = mpsc::unbounded_channel();
    let forwarder = tokio::spawn(forward(
        Arc::clone(&coordinator),
        lease.clone(),
        rx,
        fenced.clone(),
    ));
    let sink = Arc::new(Forwarder {
        tx,
        stages: Mutex::new(BTreeMap::new()),
        queued: Mutex::new(BTreeSet::new()),
        not_triggered: Mutex::new(false),
    });

    let work = machine
        .work_dir
        .join(format!("run-{run_id}-{}", lease.attempt));
    std::fs::create_dir_all(&work).map_err(|source| RunnerError::WorkDir {
        path: work.clone(),
        source,
    })?;
    let options = options(&assignment, machine, &work);
    let result = {
        let sink: Arc<dyn EventSink> = Arc::clone(&sink) as Arc<dyn EventSink>;
        let cancel = cancel.clone();
        tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Handle::current();
            run(&options, &runtime, &cancel, &sink)
        })
        .await
    };
    let not_triggered = *sink
        .not_triggered
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    drop(sink);
    let _ = forwarder.await;
    beat.abort();
    abort_watch.abort();
    let _ = std::fs::remove_dir_all(&work);

    if fenced.is_cancelled() {
        tracing::warn!(run = run_id, "lease lost: the run's result is dropped");
        return Ok(Ended::Fenced);
    }
    if abort.is_cancelled() && !canceled_by_user.is_cancelled() {
        return match coordinator.release(&lease).await {
            Ok(()) | Err(RunnerError::Fenced { .. }) => Ok(Ended::Released),
            Err(e) => Err(e),
        };
    }
    let (outcome, description) = match result {
        Ok(Ok(report)) if report.interrupted => (RunOutcome::Canceled, None),
        Ok(Ok(report)) if report.success() => (
            RunOutcome::Succeeded,
            not_triggered.then(|| "the pipeline does not run on this event".to_owned()),
        ),
        Ok(Ok(_)) => (RunOutcome::Failed, None),
        Ok(Err(e)) => {
            let reason = error_chain::one_line(&e);
            tracing::warn!(run = run_id, "the run could not start: {reason}");
            (RunOutcome::Failed, Some(reason))
        }
        Err(join) => {
            tracing::error!(run = run_id, "the run panicked: {join}");
            (RunOutcome::Failed, Some("the runner failed".to_owned()))
        }
    };
    match coordinator
        .finish(FinishRequest {
            lease,
            outcome,
            description,
        })
        .await
    {
        Ok(()) => Ok(Ended::Finished(outcome)),
        Err(RunnerError::Fenced { .. }) => Ok(Ended::Fenced),
        Err(e) => Err(e),
    }
}

/// The pipeline library's options for `assignment` on this machine.
fn options(assignment: &Assignment, machine: &Machine, work: &std::path::Path) -> RunOptions {
    RunOptions {
        pipeline: PathBuf::from(&assignment.pipeline),
        repo: Some(assignment.clone_url.clone()),
        commit: Some(assignment.commit_sha.clone()),
        event: assignment.source.parse::<PipelineSource>().ok(),
        branch: assignment.branch.clone(),
        tag: assignment.tag.clone(),
        vars: Vec::new(),
        only: Vec::new(),
        parallel: machine.jobs.max(1),
        dry_run: false,
        store: machine.cache_dir.clone(),
        platform: Platform::host(),
        registry: RegistryOptions {
            insecure: machine.insecure_registries.clone(),
            ..RegistryOptions::default()
        },
        logs_base: work.to_path_buf(),
        secrets: Some(
            assignment
                .secrets
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect(),
        ),
        allow_push: assignment.allow_push,
        // Docker's default profile: a runner's flag may change it later.
        security: crate::pipeline::SecurityOptions::default(),
        isolation: machine.isolation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::JobReport;
    use crate::pipeline::events::{Decision, Plan, PlannedJob};

    #[test]
    fn in_place_takes_one_run_and_one_job_at_a_time() {
        let machine = |isolation, jobs| Machine {
            cache_dir: PathBuf::from("/store"),
            work_dir: PathBuf::from("/work"),
            insecure_registries: Vec::new(),
            jobs,
            isolation,
        };
        assert!(
            machine(IsolationMode::InPlace, 1)
                .check_isolation("--concurrency", 1)
                .is_ok()
        );
        assert!(
            machine(IsolationMode::Namespace, 8)
                .check_isolation("--concurrency", 4)
                .is_ok()
        );
        let err = machine(IsolationMode::InPlace, 1)
            .check_isolation("--concurrency", 2)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "in-place isolation builds in this container's own root, one build at a time: --concurrency must be 1, not 2"
        );
        let err = machine(IsolationMode::InPlace, 4)
            .check_isolation("--runners", 1)
            .unwrap_err();
        assert!(err.to_string().ends_with("jobs must be 1, not 4"), "{err}");
    }

    fn forwards(events: &[RunEvent]) -> Vec<String> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sink = Forwarder {
            tx,
            stages: Mutex::new(BTreeMap::new()),
            queued: Mutex::new(BTreeSet::new()),
            not_triggered: Mutex::new(false),
        };
        for event in events {
            sink.event(event);
        }
        drop(sink);
        let mut out = Vec::new();
        while let Ok(forward) = rx.try_recv() {
            out.push(match forward {
                Forward::Job(job, event) => format!("{job} {event:?}"),
                Forward::Log(job, line) => format!("{job} log {line:?}"),
            });
        }
        out
    }

    fn planned(name: &str, stage: &str) -> PlannedJob {
        PlannedJob {
            name: name.into(),
            stage: stage.into(),
            kind: "script",
            needs: Vec::new(),
            decision: Decision::Skip("test"),
        }
    }

    fn finished(name: &str, status: PipelineJobStatus) -> RunEvent {
        RunEvent::JobFinished(JobReport {
            name: name.into(),
            status,
            seconds: 1.0,
            attempts: 1,
            image: None,
            digest: None,
        })
    }

    #[test]
    fn events_become_job_reports_and_log_lines_in_order() {
        let plan = RunEvent::Planned(Plan {
            pipeline: "pipeline.yaml".into(),
            event: "push",
            git_ref: Some("main".into()),
            sha: "a".repeat(40),
            jobs: vec![planned("build", "build"), planned("lint", "test")],
        });
        let out = forwards(&[
            plan,
            RunEvent::JobQueued {
                job: "build".into(),
            },
            RunEvent::JobStarted {
                job: "build".into(),
                attempt: 1,
            },
            RunEvent::Log {
                job: "build".into(),
                stream: crate::pipeline::Stream::Stdout,
                line: "compiling".into(),
            },
            // A retry's start is not a new start.
            RunEvent::JobStarted {
                job: "build".into(),
                attempt: 2,
            },
            finished("build", PipelineJobStatus::Succeeded),
            // Skipped by its rules: never queued, listed all the same.
            finished(
                "lint",
                PipelineJobStatus::Skipped("its rules exclude it".into()),
            ),
        ]);
        assert_eq!(
            out,
            [
                "build Queued { stage: \"build\" }",
                "build Started",
                "build log \"compiling\\n\"",
                "build Finished { status: Succeeded, image_digest: None }",
                "lint Queued { stage: \"test\" }",
                "lint Finished { status: Skipped, image_digest: None }",
            ]
        );
    }
}
