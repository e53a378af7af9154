//! What a runner and the server say to each other, as JSON over HTTP for
//! `executor runner` and as the same values in process for `executor
//! serve --runners N`: the run a claim hands out ([`Assignment`]), the
//! runner's reports ([`JobReportWire`], [`LogChunk`], [`FinishRequest`])
//! and the server's answers. Every report carries the claim's
//! [`Lease`](crate::server::store::Lease), which fences it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::server::config::Secret;
use crate::server::store::{JobEvent, JobStatus, Lease, RunId, RunOutcome};

/// The paths of the runner protocol, under the server's URL.
pub mod paths {
    pub const CLAIM: &str = "/runner/claim";
    pub const HEARTBEAT: &str = "/runner/heartbeat";
    pub const EVENTS: &str = "/runner/events";
    pub const LOGS: &str = "/runner/logs";
    pub const FINISH: &str = "/runner/finish";
    pub const RELEASE: &str = "/runner/release";
}

/// The header naming the runner instance behind a token (its lease owner
/// is `TOKEN_NAME/ID`).
pub const RUNNER_ID_HEADER: &str = "x-executor-runner";

/// A claimed run and everything needed to run it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignment {
    pub lease: Lease,
    pub run_id: RunId,
    pub repository: String,
    /// Where to clone the commit from.
    pub clone_url: String,
    pub git_ref: String,
    pub commit_sha: String,
    /// The pipeline source: `push`, `tag`, `pull_request`, `manual`.
    pub source: String,
    /// The branch the run stands for (a pull request's target branch).
    pub branch: Option<String>,
    pub tag: Option<String>,
    /// The pipeline file in the repository.
    pub pipeline: String,
    /// The repository's secrets, by name; empty for a fork's run unless
    /// the repository allows them.
    pub secrets: BTreeMap<String, Secret>,
    /// Whether build jobs may push (false for a fork's run unless
    /// allowed).
    pub allow_push: bool,
    /// How often to renew the lease.
    pub heartbeat_ms: u64,
}

/// A heartbeat's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeatAnswer {
    /// Someone asked to cancel the run: stop it and finish it canceled.
    pub cancel_requested: bool,
}

/// A request that carries only the lease (heartbeat, release).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRequest {
    pub lease: Lease,
}

/// What happened to a job, on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEventWire {
    Queued {
        stage: String,
    },
    Started,
    Finished {
        status: JobStatus,
        image_digest: Option<String>,
    },
}

impl From<JobEventWire> for JobEvent {
    fn from(wire: JobEventWire) -> Self {
        match wire {
            JobEventWire::Queued { stage } => JobEvent::Queued { stage },
            JobEventWire::Started => JobEvent::Started,
            JobEventWire::Finished {
                status,
                image_digest,
            } => JobEvent::Finished {
                status,
                image_digest,
            },
        }
    }
}

/// A runner's report about one job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobReportWire {
    pub lease: Lease,
    pub job: String,
    #[serde(flatten)]
    pub event: JobEventWire,
}

/// Lines of a job's log, appended at `offset`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogChunk {
    pub lease: Lease,
    pub job: String,
    pub offset: i64,
    /// Lines, each ending in `\n`, secrets already masked by the run.
    pub data: String,
}

/// Where a job's log ends after an append.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct LogAnswer {
    pub end: i64,
}

/// A run's end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinishRequest {
    pub lease: Lease,
    pub outcome: RunOutcome,
    /// A short reason shown on the commit status (a run that could not
    /// start, a pipeline `on:` that excluded the event).
    pub description: Option<String>,
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}
