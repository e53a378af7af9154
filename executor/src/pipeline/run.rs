//! `executor run`: a whole pipeline on this machine. The commit is checked
//! out (the working tree as it is, or a fresh clone of one commit), the
//! pipeline read from it, each job's `rules` decided against the run's
//! variables, and the jobs run as their needs finish, up to `--jobs` at
//! once: build jobs through `executor build` (this same binary, in a child
//! process, so a job's log, timeout and Ctrl-C are those of one process
//! group), script jobs in their image through the sandbox
//! ([`super::script`]). A failed job skips the jobs that need it (unless
//! it may fail), retries as its `retry` asks, and the run ends with a
//! summary table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use pipeline_schema::{
    Build, Event, EventKind, Image, Job, JobKind, Pipeline, RetryWhen, Script, SecretSource, When,
};
use tokio::runtime::Handle;

use super::artifacts;
use super::checkout::Checkout;
use super::logs::{JobLog, RunId, RunLogs};
use super::script::{self, JobImage, ScriptJob, ScriptStatus};
use super::vars::{self, PipelineSource, Predefined, Variables};
use crate::image::digest::Digest;
use crate::image::store::{Store, remove_tree};
use crate::platform::Platform;
use crate::registry::RegistryOptions;
use crate::rootfs::remote::Remote;
use crate::sandbox::overlay::Overlay;

/// Why a run could not start (a job failing is not an error: it is in the
/// summary and the exit status).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Checkout(#[from] super::checkout::CheckoutError),
    /// The pipeline file is not valid: every error, one per line.
    #[error("{0}")]
    Pipeline(String),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Logs(#[from] super::logs::LogsError),
    #[error(transparent)]
    Store(#[from] crate::image::store::StoreError),
    #[error(transparent)]
    Image(#[from] crate::rootfs::images::ImageError),
    #[error("cannot use {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T, E = RunError> = std::result::Result<T, E>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `executor run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The pipeline file: relative to the clone with `--commit`, else as
    /// given (relative to the current directory).
    pub pipeline: PathBuf,
    /// `--repo`: the repository (a path or URL); the one around the
    /// current directory when absent.
    pub repo: Option<String>,
    /// `--commit`: clone this commit instead of using the working tree.
    pub commit: Option<String>,
    pub event: Option<PipelineSource>,
    pub branch: Option<String>,
    pub tag: Option<String>,
    /// `--var K=V`: win over every other variable.
    pub vars: Variables,
    /// `--job`: only these jobs and the jobs they need.
    pub only: Vec<String>,
    /// `--jobs`: jobs at once.
    pub parallel: usize,
    pub dry_run: bool,
    /// The local store (`--cache-dir`).
    pub store: PathBuf,
    pub platform: Platform,
    /// Registry settings for script jobs' images.
    pub registry: RegistryOptions,
    /// The same settings as `executor build` flags, for build jobs.
    pub build_flags: Vec<String>,
    /// Where `.executor/runs` is kept.
    pub logs_base: PathBuf,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    Succeeded,
    Failed { allowed: bool, reason: String },
    Skipped(String),
    Canceled,
}

impl JobStatus {
    fn label(&self) -> String {
        match self {
            Self::Succeeded => "succeeded".into(),
            Self::Failed {
                allowed: true,
                reason,
            } => format!("failed (allowed): {reason}"),
            Self::Failed { reason, .. } => format!("failed: {reason}"),
            Self::Skipped(reason) => format!("skipped: {reason}"),
            Self::Canceled => "canceled".into(),
        }
    }

    /// A failure its dependants see: not allowed, or never run because of
    /// one.
    fn blocks(&self) -> bool {
        matches!(self, Self::Failed { allowed: false, .. } | Self::Canceled)
            || matches!(self, Self::Skipped(r) if r.starts_with(UPSTREAM))
    }
}

const UPSTREAM: &str = "a job it needs failed";

/// One job's result in the summary.
#[derive(Debug, Clone)]
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
    fn not_run(job: &Job, status: JobStatus) -> Self {
        Self {
            name: job.name.clone(),
            status,
            seconds: 0.0,
            attempts: 0,
            image: None,
            digest: None,
        }
    }
}

/// The run's result.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub id: RunId,
    pub jobs: Vec<JobReport>,
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

    /// The summary table: job, status, duration, image.
    #[must_use]
    pub fn table(&self) -> String {
        let name_width = self
            .jobs
            .iter()
            .map(|j| j.name.chars().count())
            .max()
            .unwrap_or(3)
            .max(3);
        let statuses: Vec<String> = self
            .jobs
            .iter()
            .map(|job| {
                let status = job.status.label();
                if job.attempts > 1 {
                    format!("{status} ({} attempts)", job.attempts)
                } else {
                    status
                }
            })
            .collect();
        let status_width = statuses
            .iter()
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(6)
            .max(6);
        let mut out = format!(
            "{:name_width$}  {:status_width$}  {:>8}  IMAGE\n",
            "JOB", "STATUS", "DURATION"
        );
        for (job, status) in self.jobs.iter().zip(statuses) {
            let duration = if job.seconds > 0.0 {
                format!("{:.2}s", job.seconds)
            } else {
                "-".into()
            };
            let _ = writeln!(
                out,
                "{:name_width$}  {status:status_width$}  {duration:>8}  {}",
                job.name,
                job.image.as_deref().unwrap_or("")
            );
        }
        out
    }
}

/// Set by Ctrl-C ([`interrupt`]): no job starts, running ones are killed.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Process groups of the build jobs running, killed by [`interrupt`].
static CHILDREN: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Stops the run: no job starts any more, build jobs' processes and script
/// jobs' sandboxes are killed; the run then cleans up and reports.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
    crate::sandbox::kill_all();
    for &pgid in CHILDREN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        kill_group(pgid, libc::SIGTERM);
    }
}

fn kill_group(pgid: i32, signal: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
        let signal = rustix::process::Signal::from_named_raw(signal);
        if let Some(signal) = signal {
            let _ = rustix::process::kill_process_group(pid, signal);
        }
    }
}

/// The paths the commit changed (from its first parent, or, for a working
/// tree, the working tree against HEAD's parent: uncommitted changes
/// count). `None` when there is no parent to compare with (a root commit,
/// a shallow clone): `rules: changes` then match, as in GitLab.
fn changed_paths(checkout: &Checkout, working_tree: bool) -> Option<Vec<String>> {
    let repo = git2::Repository::open(&checkout.dir).ok()?;
    let oid = git2::Oid::from_str(&checkout.sha).ok()?;
    let commit = repo.find_commit(oid).ok()?;
    let parent = commit.parent(0).ok()?.tree().ok()?;
    let diff = if working_tree {
        let mut options = git2::DiffOptions::new();
        options.include_untracked(true).recurse_untracked_dirs(true);
        repo.diff_tree_to_workdir_with_index(Some(&parent), Some(&mut options))
            .ok()?
    } else {
        repo.diff_tree_to_tree(Some(&parent), Some(&commit.tree().ok()?), None)
            .ok()?
    };
    let mut paths = BTreeSet::new();
    for delta in diff.deltas() {
        for file in [delta.old_file(), delta.new_file()] {
            if let Some(path) = file.path().and_then(Path::to_str) {
                paths.insert(path.to_string());
            }
        }
    }
    Some(paths.into_iter().collect())
}

/// What the run decided for each job before anything runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Run(When),
    Skip(&'static str),
}

/// Runs the pipeline as `options` say. `Ok` with the report whether or not
/// jobs failed; an error when the run could not start.
///
/// A Ctrl-C ([`interrupt`]) that comes before the run starts cancels it:
/// the flag is never cleared (a process runs one pipeline).
pub fn run(options: &RunOptions, runtime: &Handle) -> Result<RunReport> {
    let store = Store::open(&options.store)?;
    let scratch_root = store.root().join("tmp");
    fs::create_dir_all(&scratch_root).map_err(io_at(&scratch_root))?;
    let scratch = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&scratch_root)
        .map_err(io_at(&scratch_root))?;

    let (checkout, pipeline_path, working_tree) = if let Some(rev) = &options.commit {
        let repo = match &options.repo {
            Some(repo) => repo.clone(),
            None => Checkout::working_tree(Path::new("."))?
                .dir
                .display()
                .to_string(),
        };
        let into = scratch.path().join("checkout");
        let checkout = Checkout::clone_commit(&repo, rev, &into)?;
        let pipeline = checkout.dir.join(&options.pipeline);
        (checkout, pipeline, false)
    } else {
        let pipeline = match &options.repo {
            Some(repo) => Path::new(repo).join(&options.pipeline),
            None => options.pipeline.clone(),
        };
        let dir = pipeline
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        (Checkout::working_tree(dir)?, pipeline, true)
    };
    // How the pipeline is named in what the run prints: a clone's path
    // means nothing once the run is over.
    let shown = match &options.commit {
        Some(rev) => format!("{} at {rev}", options.pipeline.display()),
        None => pipeline_path.display().to_string(),
    };
    if !pipeline_path.is_file() {
        return Err(RunError::Usage(format!(
            "{}: no pipeline file there\nhint: write one (executor schema prints its JSON Schema), or name it: executor run path/to/pipeline.yaml",
            pipeline_path.display()
        )));
    }
    // The project is the directory holding the pipeline file (the
    // repository's root, unless the pipeline lives further down, as the
    // examples do): build contexts, `rules: changes` paths and the checkout
    // jobs see are relative to it.
    let project_dir = pipeline_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .canonicalize()
        .map_err(io_at(&pipeline_path))?;
    let pipeline = Pipeline::load(&pipeline_path).map_err(|errors| {
        RunError::Pipeline(format!(
            "{errors}\n{}: {}",
            pipeline_path.display(),
            errors.summary()
        ))
    })?;

    let source = options.event.unwrap_or(if options.tag.is_some() {
        PipelineSource::Tag
    } else {
        PipelineSource::Push
    });
    let id = RunId::new();
    let mut predefined = Predefined::new(&checkout, id.as_str(), source);
    if let Some(branch) = &options.branch {
        predefined.branch = Some(branch.clone());
    }
    if let Some(tag) = &options.tag {
        predefined.tag = Some(tag.clone());
    }
    let changed = changed_paths(&checkout, working_tree).map(|paths| {
        let root = checkout
            .dir
            .canonicalize()
            .unwrap_or_else(|_| checkout.dir.clone());
        let prefix = project_dir.strip_prefix(&root).unwrap_or(Path::new(""));
        paths
            .into_iter()
            .filter_map(|p| {
                Path::new(&p)
                    .strip_prefix(prefix)
                    .ok()
                    .and_then(Path::to_str)
                    .map(str::to_string)
            })
            .collect::<Vec<_>>()
    });
    let kind = match source {
        PipelineSource::Push => EventKind::Push,
        PipelineSource::Tag => EventKind::Tag,
        PipelineSource::PullRequest => EventKind::PullRequest,
        PipelineSource::Manual => EventKind::Manual,
    };
    let git_ref = match source {
        PipelineSource::Tag => predefined.tag.clone(),
        _ => predefined.branch.clone(),
    };
    let event = Event {
        kind,
        git_ref: git_ref.as_deref(),
        changed_paths: changed.as_deref(),
    };
    let runs = pipeline.triggers().matches(&event);

    // Which jobs run: --job names and what they need, then rules.
    let jobs = pipeline.jobs();
    for name in &options.only {
        if pipeline.job(name).is_none() {
            return Err(RunError::Usage(format!(
                "--job {name}: {} has no such job (it has: {})",
                pipeline_path.display(),
                jobs.iter()
                    .map(|j| j.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let selected = selection(&pipeline, &options.only);
    let job_vars: Vec<Variables> = jobs
        .iter()
        .enumerate()
        .map(|(n, job)| variables(&predefined, job, n, &options.vars))
        .collect();
    let plans: Vec<Plan> = jobs
        .iter()
        .enumerate()
        .map(|(n, job)| {
            if !runs {
                return Plan::Skip("the pipeline does not run on this event");
            }
            if !selected.contains(&n) {
                return Plan::Skip("not selected with --job");
            }
            let lookup: BTreeMap<String, String> = job_vars[n].iter().cloned().collect();
            match job.decide(&lookup, changed.as_deref()) {
                When::Never => Plan::Skip("its rules exclude it"),
                When::Manual if !options.only.contains(&job.name) => {
                    Plan::Skip("manual: run it with --job")
                }
                When::Manual => Plan::Run(When::OnSuccess),
                when => Plan::Run(when),
            }
        })
        .collect();

    if options.dry_run {
        print_plan(&shown, &pipeline, &plans, &predefined, event);
        return Ok(RunReport {
            id,
            jobs: Vec::new(),
            interrupted: false,
        });
    }
    if !runs {
        println!(
            "{shown}: the pipeline does not run on {} {} (see its `on`)",
            source.as_str(),
            git_ref.as_deref().unwrap_or("")
        );
    }
    // The pipeline's order: needs first (what `executor logs` shows).
    let names: Vec<&str> = pipeline
        .dag()
        .order()
        .iter()
        .map(|&n| jobs[n].name.as_str())
        .collect();
    let logs = RunLogs::create(&options.logs_base, id.clone(), &names)?;
    println!("run {} of {shown} ({})", id.as_str(), &checkout.sha);
    let remote = Remote::from_options(options.registry.clone())?;
    let context = RunContext {
        options,
        pipeline: &pipeline,
        project_dir: &project_dir,
        predefined: &predefined,
        store: &store,
        remote: &remote,
        runtime,
        logs: &logs,
        scratch: scratch.path(),
        job_vars: &job_vars,
    };
    let reports = context.schedule(&plans);
    let interrupted = INTERRUPTED.load(Ordering::SeqCst);
    Ok(RunReport {
        id,
        jobs: reports,
        interrupted,
    })
}

/// The jobs `only` names and every job they depend on; all jobs when
/// `only` is empty.
fn selection(pipeline: &Pipeline, only: &[String]) -> BTreeSet<usize> {
    if only.is_empty() {
        return (0..pipeline.jobs().len()).collect();
    }
    let mut out = BTreeSet::new();
    let mut todo: Vec<usize> = only.iter().filter_map(|n| pipeline.job_index(n)).collect();
    while let Some(n) = todo.pop() {
        if out.insert(n) {
            todo.extend_from_slice(pipeline.dag().dependencies(n));
        }
    }
    out
}

/// A job's variables, lowest precedence first: predefined, the pipeline's
/// and the job's own (with its matrix values), `--var`; then expanded.
fn variables(predefined: &Predefined, job: &Job, n: usize, overrides: &Variables) -> Variables {
    let mut all = predefined.job(&job.name, &(n + 1).to_string());
    all.extend(job.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
    all.extend(overrides.iter().cloned());
    vars::expand_all(&all)
}

fn print_plan(
    shown: &str,
    pipeline: &Pipeline,
    plans: &[Plan],
    predefined: &Predefined,
    event: Event<'_>,
) {
    println!(
        "{shown} on {} {} ({}): {} jobs",
        event.kind.as_str(),
        event.git_ref.unwrap_or(""),
        predefined.sha.get(..8).unwrap_or(&predefined.sha),
        pipeline.jobs().len()
    );
    for &n in pipeline.dag().order() {
        let job = &pipeline.jobs()[n];
        let kind = match &job.kind {
            JobKind::Build(_) => "build",
            JobKind::Script(_) => "script",
        };
        let decision = match plans[n] {
            Plan::Run(When::OnSuccess) => "runs".to_string(),
            Plan::Run(when) => format!("runs ({})", when.as_str()),
            Plan::Skip(reason) => format!("skipped: {reason}"),
        };
        let needs = if job.depends_on.is_empty() {
            String::new()
        } else {
            format!(" after {}", job.depends_on.join(", "))
        };
        println!("  {} [{}, {kind}]{needs}: {decision}", job.name, job.stage);
    }
}

/// What every job of a run shares.
struct RunContext<'r> {
    options: &'r RunOptions,
    pipeline: &'r Pipeline,
    /// The directory holding the pipeline file, in the checkout.
    project_dir: &'r Path,
    predefined: &'r Predefined,
    store: &'r Store,
    remote: &'r Remote,
    runtime: &'r Handle,
    logs: &'r RunLogs,
    scratch: &'r Path,
    job_vars: &'r [Variables],
}

/// A job's view of the project: an overlay over it, or a copy.
struct JobTree {
    dir: PathBuf,
    overlay: Option<Overlay>,
}

impl JobTree {
    /// Unmounts the overlay, if any (its upper directory goes with the
    /// job's scratch directory).
    fn release(self) -> Result<(), String> {
        match self.overlay {
            Some(overlay) => overlay
                .unmount()
                .map_err(|e| format!("cannot unmount {}: {e}", self.dir.display())),
            None => Ok(()),
        }
    }
}

/// What a finished job hands to the jobs that need it.
#[derive(Debug, Clone, Default)]
struct Outputs {
    /// `EXECUTOR_<NAME>_IMAGE` and `_DIGEST` of a build job.
    variables: Variables,
    /// The image a script job `image: {job: NAME}` runs in.
    image: Option<JobImage>,
    /// Its artifacts' archive.
    artifacts: Option<PathBuf>,
}

/// How one attempt of a job ended.
enum Attempt {
    Succeeded(Outputs, Option<String>, Option<String>),
    Failed(RetryWhen, String),
}

impl RunContext<'_> {
    /// Starts each job when what it depends on has finished, up to
    /// `--jobs` at once, until none is left.
    fn schedule(&self, plans: &[Plan]) -> Vec<JobReport> {
        let jobs = self.pipeline.jobs();
        let dag = self.pipeline.dag();
        // A job's report, once it has ended (or will never run).
        let mut reports: Vec<Option<JobReport>> = vec![None; jobs.len()];
        let mut outputs: Vec<Outputs> = vec![Outputs::default(); jobs.len()];
        let mut running = BTreeSet::new();
        let (done, finished) = mpsc::channel::<(usize, JobReport, Outputs)>();
        let parallel = self.options.parallel.max(1);
        std::thread::scope(|scope| {
            loop {
                let interrupted = INTERRUPTED.load(Ordering::SeqCst);
                for &n in dag.order() {
                    if reports[n].is_some() || running.contains(&n) {
                        continue;
                    }
                    let deps = dag.dependencies(n);
                    if deps.iter().any(|&d| reports[d].is_none()) {
                        continue;
                    }
                    let upstream_failed = deps
                        .iter()
                        .any(|&d| reports[d].as_ref().is_some_and(|r| r.status.blocks()));
                    let verdict = match plans[n] {
                        _ if interrupted => Some(JobStatus::Canceled),
                        Plan::Skip(reason) => Some(JobStatus::Skipped(reason.to_string())),
                        Plan::Run(When::OnSuccess) if upstream_failed => {
                            Some(JobStatus::Skipped(UPSTREAM.to_string()))
                        }
                        Plan::Run(When::OnFailure) if !upstream_failed => Some(JobStatus::Skipped(
                            "on_failure, and nothing it needs failed".into(),
                        )),
                        Plan::Run(_) => None,
                    };
                    if let Some(verdict) = verdict {
                        reports[n] = Some(JobReport::not_run(&jobs[n], verdict));
                        continue;
                    }
                    if running.len() >= parallel {
                        continue;
                    }
                    running.insert(n);
                    let inputs: Vec<Outputs> = deps.iter().map(|&d| outputs[d].clone()).collect();
                    let done = done.clone();
                    scope.spawn(move || {
                        // A panic (a bug) fails the job instead of leaving
                        // the loop below waiting for it forever.
                        let (report, out) =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                self.run_job(n, &inputs)
                            }))
                            .unwrap_or_else(|_| {
                                let job = &self.pipeline.jobs()[n];
                                let status = JobStatus::Failed {
                                    allowed: false,
                                    reason: "an internal error (a bug: please report it)".into(),
                                };
                                (
                                    Self::report(job, Instant::now(), 1, status),
                                    Outputs::default(),
                                )
                            });
                        let _ = done.send((n, report, out));
                    });
                }
                if running.is_empty() && reports.iter().all(Option::is_some) {
                    break;
                }
                if running.is_empty() {
                    // Nothing runs and nothing can start: only possible if
                    // the graph were cyclic, which loading refuses.
                    for (report, job) in reports.iter_mut().zip(jobs) {
                        report.get_or_insert_with(|| JobReport::not_run(job, JobStatus::Canceled));
                    }
                    break;
                }
                let next = loop {
                    match finished.recv_timeout(Duration::from_millis(200)) {
                        Ok(next) => break Some(next),
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            // A job that was starting when Ctrl-C came
                            // (fetching its image, copying its checkout)
                            // starts its sandbox after `interrupt` killed
                            // the running ones: it is killed now.
                            if INTERRUPTED.load(Ordering::SeqCst) {
                                crate::sandbox::kill_all();
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break None,
                    }
                };
                let Some((n, report, out)) = next else {
                    break;
                };
                running.remove(&n);
                reports[n] = Some(report);
                outputs[n] = out;
            }
        });
        reports.into_iter().flatten().collect()
    }

    /// Runs job `n` (retrying as it asks) with the outputs of the jobs it
    /// depends on.
    fn run_job(&self, n: usize, inputs: &[Outputs]) -> (JobReport, Outputs) {
        let job = &self.pipeline.jobs()[n];
        let started = Instant::now();
        let mut vars = self.job_vars[n].clone();
        for input in inputs {
            vars.extend(input.variables.iter().cloned());
        }
        let (secrets, secret_error) = match resolve_secrets(job) {
            Ok(secrets) => (secrets, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let masks: Vec<String> = secrets.iter().map(|(_, v)| v.clone()).collect();
        let log = match self.logs.job(&job.name, &masks) {
            Ok(log) => log,
            Err(e) => {
                return (
                    Self::report(
                        job,
                        started,
                        1,
                        JobStatus::Failed {
                            allowed: job.allow_failure,
                            reason: e.to_string(),
                        },
                    ),
                    Outputs::default(),
                );
            }
        };
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            let attempt = match &secret_error {
                Some(e) => Attempt::Failed(RetryWhen::SystemFailure, e.clone()),
                None => self.attempt(n, job, &vars, &secrets, inputs, &log),
            };
            match attempt {
                Attempt::Failed(kind, reason)
                    if attempts <= job.retry.max
                        && job.retry.covers(kind)
                        && !INTERRUPTED.load(Ordering::SeqCst) =>
                {
                    log.line(&format!(
                        "job failed ({reason}); retrying (attempt {} of {})",
                        attempts + 1,
                        job.retry.max + 1
                    ));
                }
                other => break other,
            }
        };
        let (status, outputs, image, digest) = match outcome {
            Attempt::Succeeded(outputs, image, digest) => {
                log.line("job succeeded");
                (JobStatus::Succeeded, outputs, image, digest)
            }
            Attempt::Failed(_, reason) => {
                log.line(&format!("job failed: {reason}"));
                let status = if INTERRUPTED.load(Ordering::SeqCst) {
                    JobStatus::Canceled
                } else {
                    JobStatus::Failed {
                        allowed: job.allow_failure,
                        reason,
                    }
                };
                (status, Outputs::default(), None, None)
            }
        };
        if let Err(e) = log.finish() {
            tracing::warn!("cannot finish the log of {}: {e}", job.name);
        }
        let mut report = Self::report(job, started, attempts, status);
        report.image = image;
        report.digest = digest;
        (report, outputs)
    }

    fn report(job: &Job, started: Instant, attempts: u32, status: JobStatus) -> JobReport {
        JobReport {
            name: job.name.clone(),
            status,
            seconds: started.elapsed().as_secs_f64(),
            attempts,
            image: None,
            digest: None,
        }
    }

    fn attempt(
        &self,
        n: usize,
        job: &Job,
        vars: &Variables,
        secrets: &Variables,
        inputs: &[Outputs],
        log: &JobLog,
    ) -> Attempt {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Attempt::Failed(RetryWhen::SystemFailure, "interrupted".into());
        }
        // Every job works on a checkout of its own when it gets artifacts
        // or runs a script (which may write to it); a build job with no
        // artifacts to add reads the run's checkout.
        let archives: Vec<&PathBuf> = inputs.iter().filter_map(|i| i.artifacts.as_ref()).collect();
        let needs_copy = matches!(job.kind, JobKind::Script(_)) || !archives.is_empty();
        let job_dir = self.scratch.join(format!("job-{n}"));
        let tree = if needs_copy {
            match self.job_checkout(&job_dir, &archives) {
                Ok(tree) => Some(tree),
                Err(e) => return Attempt::Failed(RetryWhen::SystemFailure, e),
            }
        } else {
            None
        };
        let checkout_dir = tree
            .as_ref()
            .map_or_else(|| self.project_dir.to_path_buf(), |t| t.dir.clone());
        let attempt = match &job.kind {
            JobKind::Build(build) => {
                self.build_job(job, build, &checkout_dir, &job_dir, vars, secrets, log)
            }
            JobKind::Script(script) => {
                self.script_job(n, job, script, &checkout_dir, vars, secrets, inputs, log)
            }
        };
        if let Some(Err(e)) = tree.map(JobTree::release) {
            tracing::warn!("{e}");
        }
        if job_dir.exists()
            && let Err(e) = remove_tree(&job_dir)
        {
            tracing::warn!("cannot remove {}: {e}", job_dir.display());
        }
        attempt
    }

    /// The project as one job sees it (`.executor/` left out), with the
    /// artifacts of the jobs it needs restored over it: an overlay whose
    /// lower layer is the project, so a job costs nothing however large
    /// the working tree and never writes to it; a copy where overlays
    /// cannot be mounted (no mount namespace of our own, no privileges).
    fn job_checkout(&self, job_dir: &Path, archives: &[&PathBuf]) -> Result<JobTree, String> {
        if job_dir.exists() {
            remove_tree(job_dir).map_err(|e| format!("cannot clean {}: {e}", job_dir.display()))?;
        }
        let dir = job_dir.join("checkout");
        let (upper, work) = (job_dir.join("upper"), job_dir.join("work"));
        for d in [&dir, &upper, &work] {
            fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        let overlay = if crate::sandbox::has_private_mounts()
            && rustix::process::geteuid().is_root()
        {
            match Overlay::mount(&[self.project_dir.to_path_buf()], &upper, &work, &dir) {
                Ok(overlay) => Some(overlay),
                Err(e) => {
                    tracing::debug!(error = %e, "the project cannot be an overlay's lower layer; copying it");
                    None
                }
            }
        } else {
            None
        };
        if overlay.is_none() {
            crate::image::diff::copy_tree(self.project_dir, &dir)
                .map_err(|e| format!("cannot copy the checkout: {e}"))?;
        }
        let tree = JobTree { dir, overlay };
        // The run's own logs are being written there.
        let own = tree.dir.join(".executor");
        if own.exists() {
            remove_tree(&own).map_err(|e| format!("cannot clean {}: {e}", own.display()))?;
        }
        for archive in archives {
            artifacts::restore_artifacts(archive, &tree.dir)
                .map_err(|e| format!("cannot restore artifacts: {e}"))?;
        }
        Ok(tree)
    }

    #[allow(clippy::too_many_arguments)]
    fn script_job(
        &self,
        n: usize,
        job: &Job,
        script: &Script,
        checkout_dir: &Path,
        vars: &Variables,
        secrets: &Variables,
        inputs: &[Outputs],
        log: &JobLog,
    ) -> Attempt {
        let image = match &script.image {
            None => {
                return Attempt::Failed(
                    RetryWhen::SystemFailure,
                    "no image: give the job an `image`, or set `defaults.image`".into(),
                );
            }
            Some(Image::Reference(reference)) => JobImage::Reference(vars::expand(reference, vars)),
            Some(Image::Job(name)) => {
                let dependencies = self.pipeline.dag().dependencies(n);
                let found = dependencies
                    .iter()
                    .zip(inputs)
                    .find(|&(&d, _)| self.pipeline.jobs()[d].name == *name)
                    .and_then(|(_, out)| out.image.clone());
                match found {
                    Some(image) => image,
                    None => {
                        return Attempt::Failed(
                            RetryWhen::SystemFailure,
                            format!("the image of job {name} is not there: it did not succeed"),
                        );
                    }
                }
            }
        };
        let mut spec = ScriptJob::new(
            image.clone(),
            script.script.clone(),
            checkout_dir.to_path_buf(),
            &self.predefined.project_dir,
        );
        spec.platform = self.options.platform.clone();
        spec.before_script.clone_from(&script.before_script);
        spec.after_script.clone_from(&script.after_script);
        spec.variables.clone_from(vars);
        spec.secrets.clone_from(secrets);
        spec.timeout = Some(job.timeout);
        log.line(&format!("running in {image}"));
        let output = |chunk: &[u8]| log.write(chunk);
        match script::run_script(&spec, self.store, self.remote, self.runtime, &output) {
            Ok(outcome) => match outcome.script {
                ScriptStatus::Succeeded => {
                    let mut outputs = Outputs::default();
                    if !script.artifacts.is_empty() {
                        let into = self.scratch.join(format!("artifacts-{n}"));
                        match artifacts::collect_artifacts(checkout_dir, &script.artifacts, &into) {
                            Ok(paths) => {
                                // The list names the directories copied too.
                                let files = paths.iter().filter(|p| !into.join(p).is_dir()).count();
                                log.line(&format!("artifacts: {files} files kept"));
                                outputs.artifacts = Some(into);
                            }
                            Err(e) => {
                                return Attempt::Failed(
                                    RetryWhen::SystemFailure,
                                    format!("cannot keep artifacts: {e}"),
                                );
                            }
                        }
                    }
                    Attempt::Succeeded(outputs, None, None)
                }
                ScriptStatus::Failed(status) => {
                    Attempt::Failed(RetryWhen::ScriptFailure, format!("the script {status}"))
                }
                ScriptStatus::TimedOut(limit) => Attempt::Failed(
                    RetryWhen::Timeout,
                    format!(
                        "timed out after {}",
                        pipeline_schema::format_duration(limit)
                    ),
                ),
            },
            Err(e) => Attempt::Failed(RetryWhen::SystemFailure, with_causes(&e)),
        }
    }

    /// A build job: `executor build` in a child process of its own group,
    /// its output into the job's log, killed whole on timeout.
    #[allow(clippy::too_many_arguments)]
    fn build_job(
        &self,
        job: &Job,
        build: &Build,
        checkout_dir: &Path,
        job_dir: &Path,
        vars: &Variables,
        secrets: &Variables,
        log: &JobLog,
    ) -> Attempt {
        let expand = |s: &str| vars::expand(s, vars);
        if let Err(e) = fs::create_dir_all(job_dir) {
            return Attempt::Failed(
                RetryWhen::SystemFailure,
                format!("cannot create {}: {e}", job_dir.display()),
            );
        }
        let digest_file = job_dir.join("digest");
        let context = checkout_dir.join(expand(&build.context));
        // The Dockerfile is the context's: given as it is written,
        // `executor build` would first look for it from its own working
        // directory, the one `executor run` started in (the working tree,
        // whichever commit runs).
        let dockerfile = context.join(expand(&build.dockerfile));
        let mut args: Vec<String> = vec![
            "build".into(),
            "--context".into(),
            context.display().to_string(),
            "--dockerfile".into(),
            dockerfile.display().to_string(),
            "--cache-dir".into(),
            self.store.root().display().to_string(),
            "--digest-file".into(),
            digest_file.display().to_string(),
        ];
        args.extend(self.options.build_flags.iter().cloned());
        if let Some(target) = &build.target {
            args.extend(["--target".into(), expand(target)]);
        }
        for (k, v) in &build.args {
            args.extend(["--build-arg".into(), format!("{k}={}", expand(v))]);
        }
        for (k, v) in &build.labels {
            args.extend(["--label".into(), format!("{k}={}", expand(v))]);
        }
        let destinations: Vec<String> = build.destinations.iter().map(|d| expand(d)).collect();
        for d in &destinations {
            args.extend(["--destination".into(), d.clone()]);
        }
        if !build.pushes() {
            args.push("--no-push".into());
        }
        let platform = build
            .platform
            .as_ref()
            .map_or_else(|| self.options.platform.to_string(), |p| expand(p));
        args.extend(["--custom-platform".into(), platform]);
        if let Some(cache) = &build.cache {
            args.extend(["--cache".into(), "--cache-repo".into(), expand(&cache.repo)]);
            if let Some(ttl) = cache.ttl {
                args.extend(["--cache-ttl".into(), format!("{}s", ttl.as_secs().max(1))]);
            }
        }
        if build.reproducible {
            args.push("--reproducible".into());
        }
        let mut env: Vec<(String, String)> = Vec::new();
        for (i, (id, value)) in secrets.iter().enumerate() {
            let var = format!("EXECUTOR_JOB_SECRET_{i}");
            args.extend(["--secret".into(), format!("id={id},env={var}")]);
            env.push((var, value.clone()));
        }
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                return Attempt::Failed(
                    RetryWhen::SystemFailure,
                    format!("cannot find the executor binary: {e}"),
                );
            }
        };
        log.line(&format!("executor {}", args.join(" ")));
        let status = run_child(&exe, &args, &env, job.timeout, log);
        match status {
            ChildEnd::Exited(0) => {}
            ChildEnd::Exited(code) => {
                return Attempt::Failed(
                    RetryWhen::ScriptFailure,
                    format!("the build exited with status {code}"),
                );
            }
            ChildEnd::TimedOut => {
                return Attempt::Failed(
                    RetryWhen::Timeout,
                    format!(
                        "timed out after {}",
                        pipeline_schema::format_duration(job.timeout)
                    ),
                );
            }
            ChildEnd::Error(e) => return Attempt::Failed(RetryWhen::SystemFailure, e),
        }
        let digest = match fs::read_to_string(&digest_file)
            .map_err(|e| e.to_string())
            .and_then(|d| d.trim().parse::<Digest>().map_err(|e| e.to_string()))
        {
            Ok(d) => d,
            Err(e) => {
                return Attempt::Failed(
                    RetryWhen::SystemFailure,
                    format!("the build wrote no digest: {e}"),
                );
            }
        };
        // Pushed: others pull it by digest (its layers may be only in the
        // registry, taken from the cache); else it is in the local store.
        let (image_ref, image) = match destinations.first() {
            Some(destination) if build.pushes() => {
                let name = crate::registry::ImageReference::parse(destination)
                    .map_or_else(|_| destination.clone(), |r| r.name());
                let reference = format!("{name}@{digest}");
                (reference.clone(), JobImage::Reference(reference))
            }
            _ => (digest.to_string(), JobImage::Stored(digest.clone())),
        };
        let outputs = Outputs {
            variables: vec![
                (job.image_variable(), image_ref.clone()),
                (job.digest_variable(), digest.to_string()),
            ],
            image: Some(image),
            artifacts: None,
        };
        Attempt::Succeeded(outputs, Some(image_ref), Some(digest.to_string()))
    }
}

/// An error and its causes, `: `-separated (what the log shows of a job
/// that could not run).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let shown = cause.to_string();
        if !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        source = cause.source();
    }
    text
}

/// How a build job's process ended.
enum ChildEnd {
    Exited(i32),
    TimedOut,
    Error(String),
}

/// Runs `exe args` in a process group of its own with `env` added, each
/// output line into `log`; after `timeout` the group is sent SIGTERM, then
/// SIGKILL ten seconds later.
fn run_child(
    exe: &Path,
    args: &[String],
    env: &[(String, String)],
    timeout: Duration,
    log: &JobLog,
) -> ChildEnd {
    use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
    let mut command = Command::new(exe);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return ChildEnd::Error(format!("cannot start {}: {e}", exe.display())),
    };
    let pgid = i32::try_from(child.id()).unwrap_or(0);
    CHILDREN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(pgid);
    let streams = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn io::Read + Send>),
    ];
    let log = Arc::new(log);
    let started = Instant::now();
    let mut timed_out = false;
    let result = std::thread::scope(|scope| {
        for stream in streams.into_iter().flatten() {
            let log = Arc::clone(&log);
            scope.spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut line = Vec::new();
                while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                    log.write(&line);
                    line.clear();
                }
            });
        }
        let mut term_sent: Option<Instant> = None;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            if started.elapsed() >= timeout && term_sent.is_none() {
                timed_out = true;
                kill_group(pgid, libc::SIGTERM);
                term_sent = Some(Instant::now());
            }
            // Started after `interrupt` signalled the running builds.
            if INTERRUPTED.load(Ordering::SeqCst) && term_sent.is_none() {
                kill_group(pgid, libc::SIGTERM);
                term_sent = Some(Instant::now());
            }
            if term_sent.is_some_and(|t| t.elapsed() >= Duration::from_secs(10)) {
                kill_group(pgid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    CHILDREN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&pgid);
    match result {
        _ if timed_out => ChildEnd::TimedOut,
        Ok(status) => ChildEnd::Exited(
            status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        ),
        Err(e) => ChildEnd::Error(format!("cannot wait for the build: {e}")),
    }
}

/// The job's secrets, `(name, value)`, from this machine's environment or
/// files.
fn resolve_secrets(job: &Job) -> Result<Variables, String> {
    let mut out = Vec::new();
    let secrets = job
        .secrets
        .iter()
        .chain(job.build().map_or(&[][..], |b| b.secrets.as_slice()));
    for secret in secrets {
        let value = match &secret.source {
            SecretSource::Env(var) => std::env::var(var).map_err(|_| {
                format!(
                    "secret {}: the environment variable {var} is not set on this machine",
                    secret.name
                )
            })?,
            SecretSource::File(path) => fs::read_to_string(path).map_err(|e| {
                format!(
                    "secret {}: cannot read {}: {e}",
                    secret.name,
                    path.display()
                )
            })?,
        };
        out.push((secret.name.clone(), value));
    }
    Ok(out)
}

/// Prints the summary and the run's log directory.
pub fn print_summary(report: &RunReport, logs_base: &Path) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out);
    let _ = write!(out, "{}", report.table());
    let _ = writeln!(
        out,
        "logs: {} (executor logs {})",
        super::logs::runs_dir(logs_base)
            .join(report.id.as_str())
            .display(),
        report.id.as_str()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, status: JobStatus, attempts: u32) -> JobReport {
        JobReport {
            name: name.into(),
            status,
            seconds: 1.5,
            attempts,
            image: None,
            digest: None,
        }
    }

    #[test]
    fn the_summary_columns_line_up_with_attempts_and_wide_names() {
        let report = RunReport {
            id: RunId::at(0, 0),
            jobs: vec![
                job("retried", JobStatus::Succeeded, 3),
                job("été", JobStatus::Canceled, 1),
            ],
            interrupted: false,
        };
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines,
            [
                "JOB      STATUS                  DURATION  IMAGE",
                "retried  succeeded (3 attempts)     1.50s  ",
                "été      canceled                   1.50s  ",
            ]
        );
    }
}
