//! A run's jobs, run: each starts when what it needs has finished, up to
//! `--jobs` at once, on a checkout of its own (an overlay over the
//! project, or a copy) with the artifacts of the jobs it needs restored
//! over it; build jobs through [`super::build_job`], script jobs in their
//! image through the sandbox ([`super::script`]). A failed job skips the
//! jobs that need it (unless it may fail) and retries as its `retry` asks;
//! each job watches a child of the run's cancellation token, and every
//! job's start, end and log lines go to the run's event sink.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use pipeline_schema::{Image, Job, JobKind, Pipeline, Script, SecretSource, When};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::artifacts;
use super::events::{Decision, EventSink, JobReport, JobStatus, RunEvent, UPSTREAM};
use super::failure::{JobFailure, SecretError};
use super::logs::{JobLog, RunLogs};
use super::run::RunOptions;
use super::script::{self, JobImage, ScriptJob, ScriptStatus};
use super::vars::{self, Predefined, Variables};
use crate::error_chain::one_line;
use crate::image::store::{Store, remove_tree};
use crate::rootfs::remote::Remote;
use crate::sandbox::overlay::Overlay;

/// What every job of a run shares.
pub(super) struct RunContext<'r> {
    pub(super) options: &'r RunOptions,
    pub(super) pipeline: &'r Pipeline,
    /// The directory holding the pipeline file, in the checkout.
    pub(super) project_dir: &'r Path,
    pub(super) predefined: &'r Predefined,
    pub(super) store: &'r Store,
    pub(super) remote: &'r Remote,
    /// Script jobs' seccomp filter and no_new_privs.
    pub(super) security: &'r crate::sandbox::Security,
    pub(super) runtime: &'r Handle,
    pub(super) logs: &'r RunLogs,
    pub(super) scratch: &'r Path,
    pub(super) job_vars: &'r [Variables],
    /// The run's: each job watches a child of it.
    pub(super) cancel: &'r CancellationToken,
    pub(super) events: &'r dyn EventSink,
}

/// A job's view of the project: an overlay over it, or a copy.
struct JobTree {
    dir: PathBuf,
    overlay: Option<Overlay>,
}

impl JobTree {
    /// Unmounts the overlay, if any (its upper directory goes with the
    /// job's scratch directory).
    fn release(self) -> Result<(), crate::sandbox::overlay::OverlayError> {
        match self.overlay {
            Some(overlay) => overlay.unmount(),
            None => Ok(()),
        }
    }
}

/// What a finished job hands to the jobs that need it.
#[derive(Debug, Clone, Default)]
pub(super) struct Outputs {
    /// `EXECUTOR_<NAME>_IMAGE` and `_DIGEST` of a build job.
    pub(super) variables: Variables,
    /// The image a script job `image: {job: NAME}` runs in.
    pub(super) image: Option<JobImage>,
    /// Its artifacts' archive.
    pub(super) artifacts: Option<PathBuf>,
}

/// One attempt of a job: what it works with.
pub(super) struct JobAttempt<'a> {
    /// The job's index in the pipeline.
    pub(super) n: usize,
    pub(super) job: &'a Job,
    /// Its variables, expanded, with those of the jobs it needs.
    pub(super) vars: &'a Variables,
    /// Its secrets, `(name, value)`.
    pub(super) secrets: &'a Variables,
    /// What the jobs it needs handed on, in its dependencies' order.
    pub(super) inputs: &'a [Outputs],
    pub(super) log: &'a JobLog,
    pub(super) cancel: &'a CancellationToken,
}

/// How one attempt of a job ended.
pub(super) enum Attempt {
    Succeeded(Outputs, Option<String>, Option<String>),
    Failed(JobFailure),
}

impl RunContext<'_> {
    /// Starts each job when what it depends on has finished, up to
    /// `--jobs` at once, until none is left.
    pub(super) fn schedule(&self, plans: &[Decision]) -> Vec<JobReport> {
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
                let interrupted = self.cancel.is_cancelled();
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
                        Decision::Skip(reason) => Some(JobStatus::Skipped(reason.to_string())),
                        Decision::Run(When::OnSuccess) if upstream_failed => {
                            Some(JobStatus::Skipped(UPSTREAM.to_string()))
                        }
                        Decision::Run(When::OnFailure) if !upstream_failed => Some(
                            JobStatus::Skipped("on_failure, and nothing it needs failed".into()),
                        ),
                        Decision::Run(_) => None,
                    };
                    if let Some(verdict) = verdict {
                        let report = JobReport::not_run(&jobs[n].name, verdict);
                        self.events.event(&RunEvent::JobFinished(report.clone()));
                        reports[n] = Some(report);
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
                        report.get_or_insert_with(|| {
                            let report = JobReport::not_run(&job.name, JobStatus::Canceled);
                            self.events.event(&RunEvent::JobFinished(report.clone()));
                            report
                        });
                    }
                    break;
                }
                // Each job watches its own token: a cancelled run's jobs end
                // by themselves, and report.
                let Ok((n, report, out)) = finished.recv() else {
                    break;
                };
                running.remove(&n);
                self.events.event(&RunEvent::JobFinished(report.clone()));
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
        let cancel = self.cancel.child_token();
        let mut vars = self.job_vars[n].clone();
        for input in inputs {
            vars.extend(input.variables.iter().cloned());
        }
        let (secrets, secret_error) = match resolve_secrets(job, self.options.secrets.as_ref()) {
            Ok(secrets) => (secrets, None),
            Err(e) => (Vec::new(), Some(Arc::new(e))),
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
                            reason: one_line(&e),
                        },
                    ),
                    Outputs::default(),
                );
            }
        };
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            self.events.event(&RunEvent::JobStarted {
                job: job.name.clone(),
                attempt: attempts,
            });
            let attempt = match &secret_error {
                Some(e) => Attempt::Failed(JobFailure::Secret(Arc::clone(e))),
                None => self.attempt(&JobAttempt {
                    n,
                    job,
                    vars: &vars,
                    secrets: &secrets,
                    inputs,
                    log: &log,
                    cancel: &cancel,
                }),
            };
            match attempt {
                Attempt::Failed(failure)
                    if attempts <= job.retry.max
                        && job.retry.covers(failure.kind())
                        && !cancel.is_cancelled() =>
                {
                    log.line(&format!(
                        "job failed ({}); retrying (attempt {} of {})",
                        one_line(&failure),
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
            Attempt::Failed(failure) => {
                let reason = one_line(&failure);
                log.line(&format!("job failed: {reason}"));
                let status = if cancel.is_cancelled() {
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
            tracing::warn!("job {}: {}", job.name, one_line(&e));
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

    fn attempt(&self, attempt: &JobAttempt<'_>) -> Attempt {
        let JobAttempt {
            n,
            job,
            inputs,
            cancel,
            ..
        } = *attempt;
        if cancel.is_cancelled() {
            return Attempt::Failed(JobFailure::Canceled);
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
                Err(e) => return Attempt::Failed(e),
            }
        } else {
            None
        };
        let checkout_dir = tree
            .as_ref()
            .map_or_else(|| self.project_dir.to_path_buf(), |t| t.dir.clone());
        let ended = match &job.kind {
            JobKind::Build(build) => self
                .build_job(attempt, build, &checkout_dir, &job_dir)
                .unwrap_or_else(Attempt::Failed),
            JobKind::Script(script) => self.script_job(attempt, script, &checkout_dir),
        };
        if let Some(Err(e)) = tree.map(JobTree::release) {
            tracing::warn!("{}", one_line(&e));
        }
        if job_dir.exists()
            && let Err(e) = remove_tree(&job_dir)
        {
            tracing::warn!("cannot remove {}: {e}", job_dir.display());
        }
        ended
    }

    /// The project as one job sees it (`.executor/` left out), with the
    /// artifacts of the jobs it needs restored over it: an overlay whose
    /// lower layer is the project, so a job costs nothing however large
    /// the working tree and never writes to it; a copy where overlays
    /// cannot be mounted (no mount namespace of our own, no privileges).
    fn job_checkout(&self, job_dir: &Path, archives: &[&PathBuf]) -> Result<JobTree, JobFailure> {
        let clean = |path: &Path| {
            remove_tree(path).map_err(|source| JobFailure::Clean {
                path: path.to_path_buf(),
                source,
            })
        };
        if job_dir.exists() {
            clean(job_dir)?;
        }
        let dir = job_dir.join("checkout");
        let (upper, work) = (job_dir.join("upper"), job_dir.join("work"));
        for d in [&dir, &upper, &work] {
            fs::create_dir_all(d).map_err(|source| JobFailure::CreateDir {
                path: d.clone(),
                source,
            })?;
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
                .map_err(JobFailure::CopyCheckout)?;
        }
        let tree = JobTree { dir, overlay };
        // The run's own logs are being written there.
        let own = tree.dir.join(".executor");
        if own.exists() {
            clean(&own)?;
        }
        for archive in archives {
            artifacts::restore_artifacts(archive, &tree.dir)
                .map_err(JobFailure::RestoreArtifacts)?;
        }
        Ok(tree)
    }

    /// A script job: its scripts in its image, through the sandbox; its
    /// artifacts kept for the jobs that need it.
    fn script_job(
        &self,
        attempt: &JobAttempt<'_>,
        script: &Script,
        checkout_dir: &Path,
    ) -> Attempt {
        let JobAttempt {
            n,
            job,
            vars,
            secrets,
            inputs,
            log,
            cancel,
        } = *attempt;
        let image = match &script.image {
            None => return Attempt::Failed(JobFailure::NoImage),
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
                    None => return Attempt::Failed(JobFailure::NoJobImage(name.clone())),
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
        spec.cancel = cancel.clone();
        spec.security = self.security.clone();
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
                            Err(e) => return Attempt::Failed(JobFailure::KeepArtifacts(e)),
                        }
                    }
                    Attempt::Succeeded(outputs, None, None)
                }
                ScriptStatus::Failed(status) => Attempt::Failed(JobFailure::ScriptFailed(status)),
                ScriptStatus::TimedOut(limit) => Attempt::Failed(JobFailure::TimedOut(limit)),
            },
            Err(e) => Attempt::Failed(JobFailure::Script(e)),
        }
    }
}

/// The job's secrets, `(name, value)`, from this machine's environment or
/// files, or only from `given` when the run is given its secrets.
fn resolve_secrets(
    job: &Job,
    given: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<Variables, SecretError> {
    let mut out = Vec::new();
    let secrets = job
        .secrets
        .iter()
        .chain(job.build().map_or(&[][..], |b| b.secrets.as_slice()));
    for secret in secrets {
        let value = match (&secret.source, given) {
            (SecretSource::Env(var), Some(given)) => {
                given
                    .get(var)
                    .cloned()
                    .ok_or_else(|| SecretError::NotGiven {
                        name: secret.name.clone(),
                        var: var.clone(),
                    })?
            }
            (SecretSource::File(_), Some(_)) => {
                return Err(SecretError::NoFiles {
                    name: secret.name.clone(),
                });
            }
            (SecretSource::Env(var), None) => {
                std::env::var(var).map_err(|_| SecretError::Unset {
                    name: secret.name.clone(),
                    var: var.clone(),
                })?
            }
            (SecretSource::File(path), None) => {
                fs::read_to_string(path).map_err(|source| SecretError::Read {
                    name: secret.name.clone(),
                    path: path.clone(),
                    source,
                })?
            }
        };
        out.push((secret.name.clone(), value));
    }
    Ok(out)
}
