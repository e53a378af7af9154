//! `executor run`: a whole pipeline on this machine, planned. The commit is
//! checked out (the working tree as it is, or a fresh clone of one commit),
//! the pipeline read from it, which jobs run decided (`--job`, the
//! pipeline's `on`, each job's `rules` against the run's variables and
//! changed paths), and the run handed to the scheduler (`schedule.rs`), which runs
//! the jobs as their needs finish. Everything the run has to say goes to
//! its [`EventSink`]; it prints nothing. A [`CancellationToken`] stops it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pipeline_schema::{Event, EventKind, Job, JobKind, Pipeline, When};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::checkout::Checkout;
use super::events::{Decision, EventSink, Plan, PlannedJob, RunEvent};
pub use super::events::{JobReport, JobStatus, RunReport};
use super::logs::{RunId, RunLogs};
use super::schedule::RunContext;
use super::vars::{self, PipelineSource, Predefined, Variables};
use crate::build::IsolationMode;
use crate::image::store::Store;
use crate::platform::Platform;
use crate::registry::RegistryOptions;
use crate::rootfs::remote::Remote;

/// Why a run could not start (a job failing is not an error: it is in the
/// summary and the exit status).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Checkout(#[from] super::checkout::CheckoutError),
    /// `--security-opt seccomp=PATH` cannot be used.
    #[error(transparent)]
    Seccomp(#[from] crate::sandbox::SeccompError),
    /// The pipeline file is not valid: its errors, one per line, are the
    /// source.
    #[error("{}: {}", path.display(), errors.summary())]
    Pipeline {
        path: PathBuf,
        #[source]
        errors: pipeline_schema::Errors,
    },
    #[error(
        "{}: no pipeline file there\nhint: write one (executor schema prints its JSON Schema), or name it: executor run path/to/pipeline.yaml",
        path.display()
    )]
    NoPipeline { path: PathBuf },
    #[error("--job {job}: {} has no such job (it has: {})", path.display(), jobs.join(", "))]
    UnknownJob {
        job: String,
        path: PathBuf,
        jobs: Vec<String>,
    },
    #[error(transparent)]
    Logs(#[from] super::logs::LogsError),
    #[error(transparent)]
    Store(#[from] crate::image::store::StoreError),
    #[error(transparent)]
    Image(#[from] crate::rootfs::images::ImageError),
    #[error("cannot use {}", path.display())]
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
    /// Registry settings, for script jobs' images and build jobs.
    pub registry: RegistryOptions,
    /// Where `.executor/runs` is kept.
    pub logs_base: PathBuf,
    /// The secrets' values when the run is given them (a server's
    /// repository secrets; none for a fork's run): a job's `secrets: -
    /// env: VAR` reads VAR from here and `file:` secrets are refused.
    /// `None`: from this machine's environment and files.
    pub secrets: Option<BTreeMap<String, String>>,
    /// Whether build jobs push their destinations (false for a fork's
    /// run: they build and push nothing).
    pub allow_push: bool,
    /// `--security-opt`: the seccomp profile and no_new_privs of script
    /// jobs and of build jobs' RUN steps.
    pub security: crate::build::SecurityOptions,
    /// How build jobs isolate RUN steps: namespaces for `executor run`
    /// (jobs share this machine's root); in place only for a runner pod
    /// that runs one job at a time.
    pub isolation: IsolationMode,
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

/// Runs the pipeline as `options` say. `Ok` with the report whether or not
/// jobs failed; an error when the run could not start.
///
/// `cancel` stops the run (Ctrl-C in the CLI; a server cancels one run of
/// many): no job starts any more, build jobs' processes get SIGTERM (then
/// SIGKILL ten seconds later), script jobs' sandboxes are killed, and the
/// run cleans up and reports the jobs as canceled. Cancelled before the
/// run starts, it runs nothing. Other runs in the process are not touched.
pub fn run(
    options: &RunOptions,
    runtime: &Handle,
    cancel: &CancellationToken,
    events: &Arc<dyn EventSink>,
) -> Result<RunReport> {
    let security = options.security.resolve()?;
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
            Some(repo) => {
                if !Path::new(repo).exists() {
                    return Err(super::checkout::CheckoutError::NoSuchPath {
                        path: PathBuf::from(repo),
                    }
                    .into());
                }
                Path::new(repo).join(&options.pipeline)
            }
            None => options.pipeline.clone(),
        };
        // Said before anything else: outside a repository too.
        if !pipeline.is_file() {
            return Err(RunError::NoPipeline { path: pipeline });
        }
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
        return Err(RunError::NoPipeline {
            path: pipeline_path,
        });
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
    let pipeline = Pipeline::load(&pipeline_path).map_err(|errors| RunError::Pipeline {
        path: pipeline_path.clone(),
        errors,
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
            return Err(RunError::UnknownJob {
                job: name.clone(),
                path: pipeline_path,
                jobs: jobs.iter().map(|j| j.name.clone()).collect(),
            });
        }
    }
    let selected = selection(&pipeline, &options.only);
    let job_vars: Vec<Variables> = jobs
        .iter()
        .enumerate()
        .map(|(n, job)| variables(&predefined, job, n, &options.vars))
        .collect();
    let plans: Vec<Decision> = jobs
        .iter()
        .enumerate()
        .map(|(n, job)| {
            if !runs {
                return Decision::Skip("the pipeline does not run on this event");
            }
            if !selected.contains(&n) {
                return Decision::Skip("not selected with --job");
            }
            let lookup: BTreeMap<String, String> = job_vars[n].iter().cloned().collect();
            match job.decide(&lookup, changed.as_deref()) {
                When::Never => Decision::Skip("its rules exclude it"),
                When::Manual if !options.only.contains(&job.name) => {
                    Decision::Skip("manual: run it with --job")
                }
                When::Manual => Decision::Run(When::OnSuccess),
                when => Decision::Run(when),
            }
        })
        .collect();

    events.event(&RunEvent::Planned(plan(
        &shown,
        &pipeline,
        &plans,
        &predefined,
        event,
    )));
    if options.dry_run {
        return Ok(RunReport {
            id,
            jobs: Vec::new(),
            interrupted: false,
        });
    }
    if !runs {
        events.event(&RunEvent::NotTriggered {
            pipeline: shown.clone(),
            event: source.as_str(),
            git_ref: git_ref.clone(),
        });
    }
    // The pipeline's order: needs first (what `executor logs` shows).
    let names: Vec<&str> = pipeline
        .dag()
        .order()
        .iter()
        .map(|&n| jobs[n].name.as_str())
        .collect();
    let logs = RunLogs::create(&options.logs_base, id.clone(), &names, Arc::clone(events))?;
    events.event(&RunEvent::RunStarted {
        id: id.clone(),
        pipeline: shown.clone(),
        sha: checkout.sha.clone(),
        jobs: names.iter().map(|&n| n.to_owned()).collect(),
    });
    for &n in pipeline.dag().order() {
        if matches!(plans[n], Decision::Run(_)) {
            events.event(&RunEvent::JobQueued {
                job: jobs[n].name.clone(),
            });
        }
    }
    let remote = Remote::from_options(options.registry.clone())?;
    let context = RunContext {
        options,
        pipeline: &pipeline,
        project_dir: &project_dir,
        predefined: &predefined,
        store: &store,
        remote: &remote,
        security: &security,
        runtime,
        logs: &logs,
        scratch: scratch.path(),
        job_vars: &job_vars,
        cancel,
        events: events.as_ref(),
    };
    let reports = context.schedule(&plans);
    let report = RunReport {
        id,
        jobs: reports,
        interrupted: cancel.is_cancelled(),
    };
    events.event(&RunEvent::RunFinished {
        report: report.clone(),
        logs: logs.dir().to_path_buf(),
    });
    Ok(report)
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

/// The plan of a run: every job in the pipeline's order, with what was
/// decided for it.
fn plan(
    shown: &str,
    pipeline: &Pipeline,
    decisions: &[Decision],
    predefined: &Predefined,
    event: Event<'_>,
) -> Plan {
    let jobs = pipeline
        .dag()
        .order()
        .iter()
        .map(|&n| {
            let job = &pipeline.jobs()[n];
            PlannedJob {
                name: job.name.clone(),
                stage: job.stage.clone(),
                kind: match &job.kind {
                    JobKind::Build(_) => "build",
                    JobKind::Script(_) => "script",
                },
                needs: job.depends_on.clone(),
                decision: decisions[n],
            }
        })
        .collect();
    Plan {
        pipeline: shown.to_owned(),
        event: event.kind.as_str(),
        git_ref: event.git_ref.map(str::to_owned),
        sha: predefined.sha.clone(),
        jobs,
    }
}
