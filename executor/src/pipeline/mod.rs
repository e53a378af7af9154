//! Pipeline runs: the runner's building blocks, independent of the
//! `pipeline.yaml` types (the `pipeline-schema` crate owns those, and the
//! run's planner drives these): the commit a run works on ([`checkout`]),
//! GitLab's predefined variables and `$VAR` expansion ([`vars`]), what a
//! run reports to its caller instead of printing ([`events`]), a run's
//! logs on disk and as events, with secrets masked ([`logs`]), a script job
//! run in its image through the sandbox ([`script`]), and the artifacts
//! jobs hand to the jobs that need them ([`artifacts`]). Nothing here
//! speaks HTTP.

pub mod artifacts;
pub mod build_job;
pub mod checkout;
mod child;
pub mod events;
pub mod failure;
pub mod logs;
pub mod run;
mod schedule;
pub mod script;
pub mod vars;

// The build settings a run is started with (how its jobs are isolated and
// confined), re-exported so the server names them through the pipeline.
pub use crate::build::{IsolationMode, SecurityOptions};
pub use artifacts::{ArtifactError, collect_artifacts, restore_artifacts};
pub use checkout::{Checkout, CheckoutError, GitRef};
pub use events::{EventSink, JobReport, JobStatus, RunEvent, RunReport, Stream};
pub use logs::{JobLog, LogsError, RunId, RunLogs};
pub use script::{JobImage, JobOutcome, ScriptError, ScriptJob, ScriptStatus, run_script};
/// What stops a run, or one job of it (each job's token is a child of its
/// run's).
pub use tokio_util::sync::CancellationToken;
pub use vars::{PipelineSource, Predefined, Variables, expand, expand_all};
