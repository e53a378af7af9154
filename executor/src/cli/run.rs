//! `executor run [PIPELINE]`: a whole pipeline on this machine (see
//! `executor::pipeline::run`). Registry settings take `executor build`'s
//! flags and `EXECUTOR_*` variables, so a pipeline file never holds
//! machine-specific settings.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{ArgAction, Args};

use executor::pipeline::checkout::Checkout;
use executor::pipeline::run::{self, RunError, RunOptions};
use executor::pipeline::vars::PipelineSource;
use executor::pipeline::{CancellationToken, EventSink};
use executor::platform::Platform;
use executor::registry::{RegistryOptions, TransferOptions};

use super::build::{PullArgs, PushArgs, SecurityArgs, default_cache_dir, pairs};
use super::run_output::Terminal;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline file (in the clone with --commit)
    #[arg(default_value = pipeline_schema::DEFAULT_FILE)]
    pub pipeline: PathBuf,

    /// The repository: a path or a URL; the one around the current
    /// directory by default
    #[arg(long, env = "EXECUTOR_REPO", value_name = "PATH_OR_URL")]
    pub repo: Option<String>,

    /// Clone this commit (a sha, branch or tag) into a fresh directory and
    /// run its pipeline, as CI does; without it the working tree runs as it
    /// is
    #[arg(long, env = "EXECUTOR_COMMIT", value_name = "REV")]
    pub commit: Option<String>,

    /// The event the run stands for: push, tag, pull_request, manual
    /// (default: tag with --tag, else push)
    #[arg(long, env = "EXECUTOR_EVENT", value_name = "EVENT")]
    pub event: Option<String>,

    /// The branch the commit is on (default: the checkout's)
    #[arg(long, env = "EXECUTOR_BRANCH", value_name = "BRANCH")]
    pub branch: Option<String>,

    /// The tag the commit is (for tag pipelines)
    #[arg(long, env = "EXECUTOR_TAG", value_name = "TAG")]
    pub tag: Option<String>,

    /// A variable, KEY=VALUE, winning over the pipeline's (repeatable)
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,

    /// Run only this job and the jobs it needs (repeatable); also starts a
    /// manual job
    #[arg(long = "job", value_name = "NAME")]
    pub jobs: Vec<String>,

    /// Jobs at once (default: one per core)
    #[arg(long = "jobs", short = 'j', env = "EXECUTOR_JOBS", value_name = "N")]
    pub parallel: Option<usize>,

    /// Print which jobs would run, in order, and run none
    #[arg(long, action = ArgAction::SetTrue)]
    pub dry_run: bool,

    #[command(flatten)]
    pub security: SecurityArgs,

    #[command(flatten)]
    pub pull: PullArgs,

    #[command(flatten)]
    pub push: PushArgs,
}

impl RunArgs {
    fn options(&self) -> anyhow::Result<RunOptions> {
        let event = self
            .event
            .as_deref()
            .map(|e| {
                e.parse::<PipelineSource>().map_err(|_| {
                    anyhow::anyhow!(
                        "invalid --event {e:?}: expected push, tag, pull_request or manual"
                    )
                })
            })
            .transpose()?;
        let mut vars = Vec::new();
        for var in &self.vars {
            let Some((k, v)) = var.split_once('=') else {
                bail!("invalid --var {var:?}: expected KEY=VALUE");
            };
            vars.push((k.to_string(), v.to_string()));
        }
        let store = match &self.pull.cache_dir {
            Some(dir) => dir.clone(),
            None => default_cache_dir()?,
        };
        let p = &self.pull;
        let certificates = pairs(&p.registry_certificate, "--registry-certificate")?;
        let registry = RegistryOptions {
            insecure: p.insecure_registry.clone(),
            skip_tls_verify: p.skip_tls_verify_registry.clone(),
            certificates,
            mirrors: p.registry_mirror.clone(),
            pull: TransferOptions {
                insecure: p.insecure_pull,
                skip_tls_verify: p.skip_tls_verify_pull,
                retries: p.image_download_retry,
            },
            push: TransferOptions {
                insecure: self.push.insecure,
                skip_tls_verify: self.push.skip_tls_verify,
                retries: self.push.push_retry,
            },
            timeout: std::time::Duration::from_secs(p.registry_timeout),
            ..RegistryOptions::default()
        };
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let logs_base = Checkout::working_tree(&cwd).map_or(cwd, |checkout| checkout.dir);
        Ok(RunOptions {
            pipeline: self.pipeline.clone(),
            repo: self.repo.clone(),
            commit: self.commit.clone(),
            event,
            branch: self.branch.clone(),
            tag: self.tag.clone(),
            vars,
            only: self.jobs.clone(),
            parallel: self.parallel.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
            }),
            dry_run: self.dry_run,
            store,
            platform: p.custom_platform.clone().unwrap_or_else(Platform::host),
            registry,
            logs_base,
            secrets: None,
            allow_push: true,
            security: self.security.options()?,
            // Jobs run at once in this machine's root: never in place.
            isolation: executor::build::IsolationMode::Namespace,
        })
    }
}

/// Runs `executor run`: exit status 1 when a job that may not fail failed,
/// 130 on Ctrl-C.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let options = args.options()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let cancel = CancellationToken::new();
    let cancel_on_signal = cancel.clone();
    let signals = runtime.spawn(async move {
        let Some(mut signals) = super::signals::StopSignals::new() else {
            return;
        };
        let name = signals.next().await;
        tracing::warn!("{name}: stopping the run (again to quit at once)");
        cancel_on_signal.cancel();
        // A second signal: something hangs (a pull, a job ignoring
        // SIGTERM); quit now, killing what is left.
        signals.next().await;
        tracing::warn!("stopping at once");
        // This process runs this one pipeline: every sandbox in it is the
        // run's. Build jobs' processes had their SIGTERM; they get another
        // as this process ends (their parent-death signal).
        executor::sandbox::kill_all();
        std::process::exit(130);
    });
    let terminal: Arc<dyn EventSink> = Arc::new(Terminal::new(options.dry_run));
    let report = run::run(&options, runtime.handle(), &cancel, &terminal);
    signals.abort();
    let report = match report {
        Ok(report) => report,
        // Every error of the file, one per line (as `executor validate`
        // prints them), then how many.
        Err(RunError::Pipeline { path, errors }) => {
            let mut stderr = std::io::stderr().lock();
            writeln!(stderr, "error: {errors}")?;
            writeln!(stderr, "{}: {}", path.display(), errors.summary())?;
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    if options.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    Ok(if report.interrupted {
        ExitCode::from(130)
    } else if report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
