//! The resolved pipeline the runner reads: jobs after `include`, `extends`,
//! `defaults` and matrix expansion, every reference checked, with the DAG
//! they run in. Nothing here knows where a value was written; that is the
//! loader's business.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::expr::{Expr, Lookup};
use crate::glob::Filter;

/// The timeout of a job that sets none, nor `defaults.timeout` (GitLab's).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// The stages of a pipeline that declares none (GitLab's).
pub const DEFAULT_STAGES: [&str; 3] = ["build", "test", "deploy"];
/// The stage of a job that names none.
pub const DEFAULT_STAGE: &str = "test";

/// A loaded, valid pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub(crate) path: PathBuf,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) variables: BTreeMap<String, String>,
    pub(crate) stages: Vec<String>,
    pub(crate) triggers: Triggers,
    pub(crate) jobs: Vec<Job>,
    pub(crate) dag: Dag,
}

impl Pipeline {
    /// The pipeline file it was loaded from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every file read: the pipeline file, then the included ones.
    #[must_use]
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The top-level `variables` (each job's [`Job::variables`] already
    /// holds them).
    #[must_use]
    pub fn variables(&self) -> &BTreeMap<String, String> {
        &self.variables
    }

    /// The stages in order (declared, or [`DEFAULT_STAGES`]).
    #[must_use]
    pub fn stages(&self) -> &[String] {
        &self.stages
    }

    /// The events that run the pipeline (`on`).
    #[must_use]
    pub fn triggers(&self) -> &Triggers {
        &self.triggers
    }

    /// The jobs that can run (templates left out, matrices expanded), in
    /// file order; [`Dag`] indices point into this slice.
    #[must_use]
    pub fn jobs(&self) -> &[Job] {
        &self.jobs
    }

    /// The job named `name` (an expanded name for a matrix job).
    #[must_use]
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// The index of the job named `name` in [`Pipeline::jobs`].
    #[must_use]
    pub fn job_index(&self, name: &str) -> Option<usize> {
        self.jobs.iter().position(|j| j.name == name)
    }

    /// The jobs' dependency graph.
    #[must_use]
    pub fn dag(&self) -> &Dag {
        &self.dag
    }

    /// The jobs in an order where each comes after its dependencies.
    pub fn topological_order(&self) -> impl Iterator<Item = &Job> {
        self.dag.order.iter().map(|&i| &self.jobs[i])
    }
}

/// The jobs' dependency graph, by index into [`Pipeline::jobs`]. It has no
/// cycle (loading refuses one).
#[derive(Debug, Clone, Default)]
pub struct Dag {
    pub(crate) order: Vec<usize>,
    pub(crate) dependencies: Vec<Vec<usize>>,
    pub(crate) dependants: Vec<Vec<usize>>,
}

impl Dag {
    /// Every job once, each after its dependencies; among jobs that are
    /// ready together, earlier stages first, then file order.
    #[must_use]
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// The jobs `job` waits for ([`Job::depends_on`], as indices).
    #[must_use]
    pub fn dependencies(&self, job: usize) -> &[usize] {
        self.dependencies.get(job).map_or(&[], Vec::as_slice)
    }

    /// The jobs that wait for `job`.
    #[must_use]
    pub fn dependants(&self, job: usize) -> &[usize] {
        self.dependants.get(job).map_or(&[], Vec::as_slice)
    }
}

/// One job, resolved.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its unique name; for a matrix job `NAME: [value, ...]`.
    pub name: String,
    /// The name in the file (equal to `name` outside matrices).
    pub base_name: String,
    /// The matrix variables of this instance, in the order written (also in
    /// `variables`).
    pub matrix: Vec<(String, String)>,
    pub stage: String,
    /// `needs` as written, with matrix jobs expanded to all their
    /// instances; `None` when the job has no `needs`.
    pub needs: Option<Vec<String>>,
    /// What it waits for: `needs`, or without it every job of the earlier
    /// stages.
    pub depends_on: Vec<String>,
    /// The pipeline's variables, then the job's, then its matrix values;
    /// values are as written (`$OTHER` is not expanded here).
    pub variables: BTreeMap<String, String>,
    /// Its rules; see [`Job::decide`].
    pub rules: Vec<Rule>,
    pub allow_failure: bool,
    pub timeout: Duration,
    pub retry: Retry,
    /// Secrets exposed as environment variables (script jobs).
    pub secrets: Vec<Secret>,
    pub kind: JobKind,
}

impl Job {
    /// Whether and how the job runs, from its rules: the `when` of the first
    /// rule whose `if` holds and whose `changes` match (`changed` is the
    /// list of changed paths, `None` when unknown: `changes` then match);
    /// [`When::Never`] when rules exist and none matches; `on_success`
    /// without rules.
    pub fn decide(&self, vars: &impl Lookup, changed: Option<&[String]>) -> When {
        if self.rules.is_empty() {
            return When::OnSuccess;
        }
        self.rules
            .iter()
            .find(|r| r.matches(vars, changed))
            .map_or(When::Never, |r| r.when)
    }

    /// The build, for a build job.
    #[must_use]
    pub fn build(&self) -> Option<&Build> {
        match &self.kind {
            JobKind::Build(b) => Some(b),
            JobKind::Script(_) => None,
        }
    }

    /// The script, for a script job.
    #[must_use]
    pub fn script(&self) -> Option<&Script> {
        match &self.kind {
            JobKind::Script(s) => Some(s),
            JobKind::Build(_) => None,
        }
    }

    /// `EXECUTOR_<NAME>_IMAGE`: see [`image_variable`].
    #[must_use]
    pub fn image_variable(&self) -> String {
        image_variable(&self.name)
    }

    /// `EXECUTOR_<NAME>_DIGEST`: see [`digest_variable`].
    #[must_use]
    pub fn digest_variable(&self) -> String {
        digest_variable(&self.name)
    }
}

/// What a job does.
#[derive(Debug, Clone)]
pub enum JobKind {
    Build(Build),
    Script(Script),
}

/// An image build.
#[derive(Debug, Clone)]
pub struct Build {
    /// The context directory, relative to the repository root (`.`).
    pub context: String,
    /// The Dockerfile, relative to the context (`Dockerfile`).
    pub dockerfile: String,
    pub target: Option<String>,
    /// Build arguments; values as written (variables not expanded).
    pub args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Tags, as written (variables not expanded).
    pub destinations: Vec<String>,
    /// `push:` as written (default true); see [`Build::pushes`].
    pub push: bool,
    pub platform: Option<String>,
    pub cache: Option<Cache>,
    /// Build secrets, by id.
    pub secrets: Vec<Secret>,
    pub reproducible: bool,
}

impl Build {
    /// Whether the image goes to a registry: `push` and at least one
    /// destination; otherwise it stays in the local store.
    #[must_use]
    pub fn pushes(&self) -> bool {
        self.push && !self.destinations.is_empty()
    }
}

/// The registry layer cache of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    pub repo: String,
    pub ttl: Option<Duration>,
}

/// Commands in an image.
#[derive(Debug, Clone)]
pub struct Script {
    /// The image (the job's, else `defaults.image`); `None` leaves the
    /// choice to the runner.
    pub image: Option<Image>,
    pub before_script: Vec<String>,
    pub script: Vec<String>,
    pub after_script: Vec<String>,
    /// Paths and globs handed to the jobs that need this one.
    pub artifacts: Vec<String>,
}

/// The image of a script job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// An image reference, as written (variables not expanded).
    Reference(String),
    /// The image the build job of this (expanded) name made; it is one of
    /// the job's `needs`.
    Job(String),
}

/// A secret: the variable (or build secret id) it becomes, and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub name: String,
    pub source: SecretSource,
}

/// Where a secret's value is read, on the machine running the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file's whole content.
    File(PathBuf),
}

/// How a failed job is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first run (0: none).
    pub max: u32,
    /// The failures that are retried.
    pub when: Vec<RetryWhen>,
}

impl Retry {
    /// Whether a run that failed this way is retried (given attempts left).
    #[must_use]
    pub fn covers(&self, failure: RetryWhen) -> bool {
        self.when
            .iter()
            .any(|w| *w == RetryWhen::Always || *w == failure)
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max: 0,
            when: vec![RetryWhen::Always],
        }
    }
}

/// A kind of failure, for `retry: when`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryWhen {
    /// Any failure.
    Always,
    /// The commands exited non-zero, or the build failed.
    ScriptFailure,
    /// The job ran out of time.
    Timeout,
    /// The job could not run: an image pull, the sandbox, the machine.
    SystemFailure,
}

/// `when:` of a rule: whether and how a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum When {
    /// When its dependencies succeeded (the default).
    OnSuccess,
    /// When one of its dependencies failed.
    OnFailure,
    /// Whatever its dependencies did.
    Always,
    /// Not at all.
    Never,
    /// When started by hand.
    Manual,
}

impl When {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            When::OnSuccess => "on_success",
            When::OnFailure => "on_failure",
            When::Always => "always",
            When::Never => "never",
            When::Manual => "manual",
        }
    }
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule of a job.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `if:`; `None` holds.
    pub condition: Option<Expr>,
    /// `changes:`; `None` matches.
    pub changes: Option<Filter>,
    pub when: When,
}

impl Rule {
    /// Whether the rule applies: its `if` holds and one of the `changed`
    /// paths matches its `changes` (any, when `changed` is `None`).
    pub fn matches(&self, vars: &impl Lookup, changed: Option<&[String]>) -> bool {
        self.condition.as_ref().is_none_or(|c| c.evaluate(vars))
            && match (&self.changes, changed) {
                (Some(filter), Some(paths)) => filter.matches_any(paths),
                _ => true,
            }
    }
}

/// The events that run the pipeline (`on`). Without `on`, every event does.
#[derive(Debug, Clone)]
pub struct Triggers {
    /// A push to a branch; `refs` filters the branch.
    pub push: Option<RefFilter>,
    /// A tag; `refs` filters the tag.
    pub tag: Option<RefFilter>,
    /// A pull request; `refs` filters its target branch.
    pub pull_request: Option<RefFilter>,
    /// A run started by hand.
    pub manual: bool,
}

impl Triggers {
    /// Every event, no filter.
    #[must_use]
    pub fn all() -> Self {
        Self {
            push: Some(RefFilter::default()),
            tag: Some(RefFilter::default()),
            pull_request: Some(RefFilter::default()),
            manual: true,
        }
    }

    /// Whether `event` runs the pipeline.
    #[must_use]
    pub fn matches(&self, event: &Event<'_>) -> bool {
        let filter = match event.kind {
            EventKind::Manual => return self.manual,
            EventKind::Push => &self.push,
            EventKind::Tag => &self.tag,
            EventKind::PullRequest => &self.pull_request,
        };
        filter.as_ref().is_some_and(|f| f.matches(event))
    }
}

/// Filters of one event kind; `None` lets everything through.
#[derive(Debug, Clone, Default)]
pub struct RefFilter {
    /// Branch (or tag) globs.
    pub refs: Option<Filter>,
    /// Changed path globs.
    pub paths: Option<Filter>,
}

impl RefFilter {
    fn matches(&self, event: &Event<'_>) -> bool {
        let ref_ok = match (&self.refs, event.git_ref) {
            (None, _) => true,
            (Some(f), Some(r)) => f.matches(r),
            (Some(_), None) => false,
        };
        let paths_ok = match (&self.paths, event.changed_paths) {
            (Some(f), Some(paths)) => f.matches_any(paths),
            _ => true,
        };
        ref_ok && paths_ok
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Push,
    Tag,
    PullRequest,
    Manual,
}

impl EventKind {
    /// The name, as in `CI_PIPELINE_SOURCE` and `--event`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Push => "push",
            EventKind::Tag => "tag",
            EventKind::PullRequest => "pull_request",
            EventKind::Manual => "manual",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event name that is not one of push, tag, pull_request, manual.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event `{0}`, expected push, tag, pull_request or manual")]
pub struct UnknownEvent(pub String);

impl FromStr for EventKind {
    type Err = UnknownEvent;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "push" => Ok(EventKind::Push),
            "tag" => Ok(EventKind::Tag),
            "pull_request" => Ok(EventKind::PullRequest),
            "manual" => Ok(EventKind::Manual),
            other => Err(UnknownEvent(other.to_string())),
        }
    }
}

/// An event to match against [`Triggers`].
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub kind: EventKind,
    /// The branch (push), tag (tag) or target branch (pull request).
    pub git_ref: Option<&'a str>,
    /// The paths the change touched, relative to the repository root;
    /// `None` when unknown (path filters then match).
    pub changed_paths: Option<&'a [String]>,
}

/// `EXECUTOR_<NAME>_IMAGE`, the variable holding the image a build job
/// made (its reference by digest) for the jobs that need it: NAME is the
/// job name upper-cased, every character other than `A-Z` and `0-9`
/// becoming `_`.
#[must_use]
pub fn image_variable(job: &str) -> String {
    format!("EXECUTOR_{}_IMAGE", variable_part(job))
}

/// `EXECUTOR_<NAME>_DIGEST`, the variable holding the digest of the image
/// a build job made; NAME as in [`image_variable`].
#[must_use]
pub fn digest_variable(job: &str) -> String {
    format!("EXECUTOR_{}_DIGEST", variable_part(job))
}

fn variable_part(job: &str) -> String {
    job.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_variables_upper_case_and_underscore() {
        assert_eq!(image_variable("build-app"), "EXECUTOR_BUILD_APP_IMAGE");
        assert_eq!(digest_variable("base.img"), "EXECUTOR_BASE_IMG_DIGEST");
        assert_eq!(
            image_variable("build: [linux/amd64]"),
            "EXECUTOR_BUILD___LINUX_AMD64__IMAGE"
        );
    }

    #[test]
    fn triggers_filter_refs_and_paths() {
        let push = RefFilter {
            refs: Some(Filter::new(&["main", "release/*"]).unwrap()),
            paths: Some(Filter::new(&["src/**"]).unwrap()),
        };
        let t = Triggers {
            push: Some(push),
            tag: None,
            pull_request: Some(RefFilter::default()),
            manual: false,
        };
        let changed = vec!["src/main.rs".to_string()];
        let docs = vec!["docs/a.md".to_string()];
        let ev = |kind, git_ref, changed_paths| Event {
            kind,
            git_ref,
            changed_paths,
        };
        assert!(t.matches(&ev(EventKind::Push, Some("main"), Some(&changed))));
        assert!(t.matches(&ev(EventKind::Push, Some("release/1"), None)));
        assert!(!t.matches(&ev(EventKind::Push, Some("release/1/x"), None)));
        assert!(!t.matches(&ev(EventKind::Push, Some("main"), Some(&docs))));
        assert!(!t.matches(&ev(EventKind::Tag, Some("v1"), None)));
        assert!(t.matches(&ev(EventKind::PullRequest, Some("x"), None)));
        assert!(!t.matches(&ev(EventKind::Manual, None, None)));
        assert!(Triggers::all().matches(&ev(EventKind::Manual, None, None)));
    }

    #[test]
    fn retry_covers() {
        let r = Retry {
            max: 2,
            when: vec![RetryWhen::Timeout],
        };
        assert!(r.covers(RetryWhen::Timeout));
        assert!(!r.covers(RetryWhen::ScriptFailure));
        assert!(Retry::default().covers(RetryWhen::SystemFailure));
    }

    #[test]
    fn event_names_round_trip() {
        for kind in [
            EventKind::Push,
            EventKind::Tag,
            EventKind::PullRequest,
            EventKind::Manual,
        ] {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
        }
        assert!("merge".parse::<EventKind>().is_err());
    }
}
