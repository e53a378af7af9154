//! What a run tells its caller while it goes, and what it ends with: a
//! run reports through an [`EventSink`] (the run's plan, its start, each
//! job queued, started, finished, every line of every job's log with its
//! stream, the run's end) and returns a [`RunReport`]. It never prints:
//! the CLI renders these events on the terminal, a server stores and
//! streams them. Events are sent from the run's threads, in the order
//! they happen for any one job.

use std::fmt;
use std::path::PathBuf;

use pipeline_schema::When;

use super::logs::RunId;

/// Which output of a job a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The job's standard output (a script job's stderr is joined to it).
    Stdout,
    /// A build job's standard error.
    Stderr,
    /// The runner's own line about the job (`running in IMAGE`, `job
    /// succeeded`).
    Runner,
}

/// What the run decided for a job before anything runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// It runs (`on_success`, `on_failure` or `always`).
    Run(When),
    /// It does not, and why.
    Skip(&'static str),
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Run(When::OnSuccess) => f.write_str("runs"),
            Self::Run(when) => write!(f, "runs ({})", when.as_str()),
            Self::Skip(reason) => write!(f, "skipped: {reason}"),
        }
    }
}

/// One job of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedJob {
    pub name: String,
    pub stage: String,
    /// `build` or `script`.
    pub kind: &'static str,
    /// The jobs it waits for.
    pub needs: Vec<String>,
    pub decision: Decision,
}

/// The jobs of a run, in the order they may run (needs first), and what
/// was decided for each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The pipeline, as the run names it (a path; with `--commit`, the
    /// file in that commit).
    pub pipeline: String,
    /// `push`, `tag`, `pull_request` or `manual`.
    pub event: &'static str,
    /// The branch or tag.
    pub git_ref: Option<String>,
    /// The commit.
    pub sha: String,
    pub jobs: Vec<PlannedJob>,
}

/// Something that happened in a run.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// What the run will do; the first event, sent by dry runs too.
    Planned(Plan),
    /// The pipeline's `on` excludes this event: its jobs are skipped.
    NotTriggered {
        pipeline: String,
        /// The pipeline source (`push`, `tag`, ...).
        event: &'static str,
        git_ref: Option<String>,
    },
    /// The run starts: its logs are kept under this id.
    RunStarted {
        id: RunId,
        pipeline: String,
        sha: String,
        /// Every job, in the plan's order.
        jobs: Vec<String>,
    },
    /// A job will run once what it needs has finished.
    JobQueued { job: String },
    /// An attempt of a job starts (1 for the first).
    JobStarted { job: String, attempt: u32 },
    /// A job has ended, run or not (skipped, canceled).
    JobFinished(JobReport),
    /// A line of a job's log, secrets masked, without its line end (a line
    /// that is not UTF-8 is shown with U+FFFD in place of its bad bytes).
    Log {
        job: String,
        stream: Stream,
        line: String,
    },
    /// The run is over.
    RunFinished {
        report: RunReport,
        /// The run's log directory.
        logs: PathBuf,
    },
}

/// Where a run's events go. Called from any of the run's threads.
pub trait EventSink: Send + Sync {
    fn event(&self, event: &RunEvent);
}

impl<F: Fn(&RunEvent) + Send + Sync> EventSink for F {
    fn event(&self, event: &RunEvent) {
        self(event);
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    Succeeded,
    Failed { allowed: bool, reason: String },
    Skipped(String),
    Canceled,
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Succeeded => f.write_str("succeeded"),
            Self::Failed {
                allowed: true,
                reason,
            } => write!(f, "failed (allowed): {reason}"),
            Self::Failed { reason, .. } => write!(f, "failed: {reason}"),
            Self::Skipped(reason) => write!(f, "skipped: {reason}"),
            Self::Canceled => f.write_str("canceled"),
        }
    }
}

impl JobStatus {
    /// A failure its dependants see: not allowed, or never run because of
    /// one.
    pub(super) fn blocks(&self) -> bool {
        matches!(self, Self::Failed { allowed: false, .. } | Self::Canceled)
            || matches!(self, Self::Skipped(r) if r.starts_with(UPSTREAM))
    }
}

/// Why a job that needs a failed one is skipped.
pub(super) const UPSTREAM: &str = "a job it needs failed";

/// One job's result.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    pub name: String,
    pub status: JobStatus,
    pub seconds: f64,
    pub attempts: u32,
    /// A build job's image: reference by digest (or the digest alone when
    /// it was not pushed).
    pub image: Option<String>,
    pub digest: Option<String>,
}

impl JobReport {
    /// A job that did not run: skipped, or canceled before it started.
    pub(super) fn not_run(name: &str, status: JobStatus) -> Self {
        Self {
            name: name.to_owned(),
            status,
            seconds: 0.0,
            attempts: 0,
            image: None,
            digest: None,
        }
    }
}

/// The run's result.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    pub id: RunId,
    /// Every job, in the pipeline's order.
    pub jobs: Vec<JobReport>,
    /// The run was cancelled.
    pub interrupted: bool,
}

impl RunReport {
    /// Whether every job that may not fail succeeded or was skipped.
    #[must_use]
    pub fn success(&self) -> bool {
        !self.interrupted
            && self.jobs.iter().all(|j| {
                !matches!(
                    j.status,
                    JobStatus::Failed { allowed: false, .. } | JobStatus::Canceled
                )
            })
    }
}
