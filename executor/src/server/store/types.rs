//! The values the store takes and answers: runs and their statuses, leases,
//! jobs, log reads, filters and counts; and the raw rows they are decoded
//! from (the same columns on both backends).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Error, Result};

/// A run's id: ascending in creation order.
pub type RunId = i64;

/// Defines a status enum with its stored names, its parser (an unknown
/// name is [`Error::Corrupt`]) and `Display`; `Queued` and `Running` are
/// its unfinished states.
macro_rules! stored_status {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            /// Every status.
            pub const ALL: &[$name] = &[$($name::$variant),+];

            /// The name stored in the database and shown by the API.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Whether it is over.
            #[must_use]
            pub fn is_finished(self) -> bool {
                !matches!(self, $name::Queued | $name::Running)
            }

            pub(super) fn parse(value: &str) -> Result<Self> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|status| status.as_str() == value)
                    .ok_or_else(|| Error::Corrupt {
                        what: $what,
                        value: value.to_owned(),
                    })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_status!(
    /// Where a run is.
    RunStatus, "run status", {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Canceled => "canceled",
    }
);

stored_status!(
    /// Where a job of one attempt is.
    JobStatus, "job status", {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Canceled => "canceled",
        Skipped => "skipped",
    }
);

/// What a webhook (or the API) asks to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRun {
    /// The repository's name in the server's configuration.
    pub repository: String,
    /// The full ref: `refs/heads/main`, `refs/tags/v1`, `refs/pull/7/head`.
    pub git_ref: String,
    pub commit_sha: String,
    /// `push`, `tag`, `pull_request`, `api` ...
    pub event: String,
    /// Whether the commit comes from a fork (no secrets, no push).
    pub fork: bool,
    /// What triggered it (sender, delivery, pull request number ...).
    pub trigger: serde_json::Value,
}

/// A webhook delivery's identity: at most one run per (source, id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The hook it came through (e.g. `github:owner/repo`).
    pub source: String,
    /// The forge's delivery id (`X-GitHub-Delivery`, GitLab's
    /// `Idempotency-Key` or event UUID).
    pub id: String,
}

/// What an enqueue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new run was queued.
    Created(RunId),
    /// The delivery was seen before: this is its run; nothing was created.
    Duplicate(RunId),
}

impl Enqueued {
    /// The run, new or existing.
    #[must_use]
    pub fn run_id(self) -> RunId {
        match self {
            Enqueued::Created(id) | Enqueued::Duplicate(id) => id,
        }
    }
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub repository: String,
    pub git_ref: String,
    pub commit_sha: String,
    pub event: String,
    pub fork: bool,
    pub trigger: serde_json::Value,
    pub status: RunStatus,
    /// Why the store ended the run itself (a cancel or the attempt limit
    /// met at a lost lease); `None` when its runner finished it.
    pub status_reason: Option<String>,
    /// 1 for the first claim; each requeue moves to the next.
    pub attempt: i64,
    pub created_at_ms: i64,
    /// When the current attempt was claimed.
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_expires_at_ms: Option<i64>,
    pub cancel_requested: bool,
    /// The run this one retries.
    pub retry_of: Option<RunId>,
}

/// The right to write for one attempt of a run: every runner write carries
/// it and is fenced by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub run_id: RunId,
    pub attempt: i64,
    /// The runner holding it.
    pub owner: String,
    pub expires_at_ms: i64,
}

/// A claimed run and its lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub run: Run,
    pub lease: Lease,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    pub expires_at_ms: i64,
    /// Someone asked to cancel the run: the runner stops it and finishes
    /// it as canceled.
    pub cancel_requested: bool,
}

/// How a run ended, as its runner reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    Succeeded,
    Failed,
    Canceled,
}

impl RunOutcome {
    /// The run's status once finished so.
    #[must_use]
    pub fn status(self) -> RunStatus {
        match self {
            RunOutcome::Succeeded => RunStatus::Succeeded,
            RunOutcome::Failed => RunStatus::Failed,
            RunOutcome::Canceled => RunStatus::Canceled,
        }
    }
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued: it is canceled now.
    Canceled,
    /// It is running: the runner learns it at its next heartbeat.
    Requested,
    /// It had already finished with this status.
    AlreadyFinished(RunStatus),
}

/// A runner's report about one job of its attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    /// The job is part of this attempt (sent for every job up front, in
    /// pipeline order: that order is the jobs' listing order).
    Queued {
        stage: String,
    },
    Started,
    Finished {
        status: JobStatus,
        /// The pushed image's digest, for build jobs.
        image_digest: Option<String>,
    },
}

/// A job of one attempt of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub run_id: RunId,
    pub attempt: i64,
    pub name: String,
    pub stage: String,
    pub status: JobStatus,
    pub queued_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub image_digest: Option<String>,
}

/// A piece of a job's log read from an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    pub data: Vec<u8>,
    /// Where the next read starts.
    pub next_offset: i64,
    /// No more will come: the job finished or its attempt is over.
    pub complete: bool,
}

/// Which runs to list: newest first, `limit` of them, older than `before`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub repository: Option<String>,
    /// A branch name (matches `refs/heads/<branch>`).
    pub branch: Option<String>,
    pub status: Option<RunStatus>,
    /// Only runs with a smaller id: the last id of the previous page.
    pub before: Option<RunId>,
    /// At most this many (0 means 50).
    pub limit: u32,
}

/// Runs by status, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub queued: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub canceled: i64,
}

impl Counts {
    /// The queue depth: runs waiting for a runner.
    #[must_use]
    pub fn depth(&self) -> i64 {
        self.queued
    }

    pub(super) fn add(&mut self, status: RunStatus, count: i64) {
        let slot = match status {
            RunStatus::Queued => &mut self.queued,
            RunStatus::Running => &mut self.running,
            RunStatus::Succeeded => &mut self.succeeded,
            RunStatus::Failed => &mut self.failed,
            RunStatus::Canceled => &mut self.canceled,
        };
        *slot += count;
    }
}

/// The columns of `runs` that [`RunRow`] decodes, in a `SELECT` or
/// `RETURNING` list.
pub(super) const RUN_COLUMNS: &str = "id, repository, git_ref, commit_sha, event, fork, \
    trigger_json, status, status_reason, attempt, created_at, started_at, finished_at, \
    lease_owner, lease_expires_at, cancel_requested, retry_of";

/// A `runs` row as the drivers decode it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct RunRow {
    id: i64,
    repository: String,
    git_ref: String,
    commit_sha: String,
    event: String,
    fork: bool,
    trigger_json: String,
    status: String,
    status_reason: Option<String>,
    attempt: i64,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    lease_owner: Option<String>,
    lease_expires_at: Option<i64>,
    cancel_requested: bool,
    retry_of: Option<i64>,
}

impl TryFrom<RunRow> for Run {
    type Error = Error;

    fn try_from(row: RunRow) -> Result<Self> {
        Ok(Run {
            trigger: serde_json::from_str(&row.trigger_json).map_err(|source| {
                Error::TriggerJson {
                    run: row.id,
                    source,
                }
            })?,
            status: RunStatus::parse(&row.status)?,
            status_reason: row.status_reason,
            id: row.id,
            repository: row.repository,
            git_ref: row.git_ref,
            commit_sha: row.commit_sha,
            event: row.event,
            fork: row.fork,
            attempt: row.attempt,
            created_at_ms: row.created_at,
            started_at_ms: row.started_at,
            finished_at_ms: row.finished_at,
            lease_owner: row.lease_owner,
            lease_expires_at_ms: row.lease_expires_at,
            cancel_requested: row.cancel_requested,
            retry_of: row.retry_of,
        })
    }
}

/// The columns of `jobs` that [`JobRow`] decodes.
pub(super) const JOB_COLUMNS: &str = "run_id, attempt, name, stage, status, queued_at, \
    started_at, finished_at, duration_ms, image_digest";

/// A `jobs` row as the drivers decode it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct JobRow {
    run_id: i64,
    attempt: i64,
    name: String,
    stage: String,
    status: String,
    queued_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    duration_ms: Option<i64>,
    image_digest: Option<String>,
}

impl TryFrom<JobRow> for Job {
    type Error = Error;

    fn try_from(row: JobRow) -> Result<Self> {
        Ok(Job {
            status: JobStatus::parse(&row.status)?,
            run_id: row.run_id,
            attempt: row.attempt,
            name: row.name,
            stage: row.stage,
            queued_at_ms: row.queued_at,
            started_at_ms: row.started_at,
            finished_at_ms: row.finished_at,
            duration_ms: row.duration_ms,
            image_digest: row.image_digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_stored_names() {
        for &status in RunStatus::ALL {
            assert_eq!(RunStatus::parse(status.as_str()).unwrap(), status);
        }
        for &status in JobStatus::ALL {
            assert_eq!(JobStatus::parse(status.as_str()).unwrap(), status);
        }
        assert!(JobStatus::Skipped.is_finished() && !RunStatus::Running.is_finished());
        assert!(matches!(
            RunStatus::parse("paused"),
            Err(Error::Corrupt {
                what: "run status",
                ..
            })
        ));
    }
}
