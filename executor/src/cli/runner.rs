//! `executor runner --server URL --token-file F`: runs pipelines claimed
//! from an `executor serve` over HTTP, `--concurrency` at once, reporting
//! jobs, logs and results under each claim's lease. On SIGTERM or SIGINT
//! it claims no more, lets runs in progress finish within `--grace`, then
//! releases their leases and exits 0.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Args};
use tokio_util::sync::CancellationToken;

use executor::server::config::Secret;
use executor::server::runner::http::HttpCoordinator;
use executor::server::runner::{Machine, Worker, WorkerConfig};

use super::build::{IsolationArg, default_cache_dir};

#[derive(Debug, Args)]
pub struct RunnerArgs {
    /// The server's URL (http://HOST:PORT)
    #[arg(long, env = "EXECUTOR_SERVER", value_name = "URL")]
    pub server: String,

    /// A file holding this runner's token
    #[arg(long, env = "EXECUTOR_RUNNER_TOKEN_FILE", value_name = "FILE")]
    pub token_file: PathBuf,

    /// Runs at once
    #[arg(long, env = "EXECUTOR_RUNNER_CONCURRENCY", default_value_t = 1)]
    pub concurrency: usize,

    /// Run one pipeline (per concurrency slot), then exit
    #[arg(long, action = ArgAction::SetTrue)]
    pub once: bool,

    /// The local image store
    #[arg(long, env = "EXECUTOR_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Where runs keep their logs and scratch (default: a temporary
    /// directory)
    #[arg(long, env = "EXECUTOR_RUNNER_WORK_DIR", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,

    /// A registry reached over plain HTTP (repeatable)
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,

    /// Jobs at once within one run (default: one per core)
    #[arg(long = "jobs", short = 'j', value_name = "N")]
    pub jobs: Option<usize>,

    /// Seconds runs in progress may go on after SIGTERM
    #[arg(long, default_value_t = 300)]
    pub grace: u64,

    /// How build jobs isolate RUN steps: `namespace` (fresh namespaces,
    /// several jobs at once); `in-place` (this container's own root, for a
    /// pod that grants nothing: needs --concurrency 1 and --jobs 1);
    /// `auto`: namespaces where they can be made, else in place
    #[arg(long, env = "EXECUTOR_RUNNER_ISOLATION", default_value = "namespace")]
    pub isolation: IsolationArg,
}

pub fn run(args: &RunnerArgs) -> anyhow::Result<ExitCode> {
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("cannot read the token file {}", args.token_file.display()))?;
    let token = Secret::new(token.trim());
    let cache_dir = match &args.cache_dir {
        Some(dir) => dir.clone(),
        None => default_cache_dir()?,
    };
    let scratch;
    let work_dir = if let Some(dir) = &args.work_dir {
        dir.clone()
    } else {
        scratch = tempfile::Builder::new()
            .prefix("executor-runner-")
            .tempdir()
            .context("cannot create a work directory")?;
        scratch.path().to_path_buf()
    };
    let machine = Machine {
        cache_dir,
        work_dir,
        insecure_registries: args.insecure_registries.clone(),
        jobs: args.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        }),
        isolation: args.isolation.into(),
    };
    machine.check_isolation("--concurrency", args.concurrency)?;
    let id = format!(
        "{}-{}",
        rustix::system::uname().nodename().to_string_lossy(),
        std::process::id()
    );
    let coordinator = HttpCoordinator::new(&args.server, token, id)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let config = WorkerConfig {
        concurrency: args.concurrency,
        once: args.once,
        grace: Duration::from_secs(args.grace),
    };
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let worker =
            tokio::spawn(Worker::new(Arc::new(coordinator), machine, config).run(shutdown.clone()));
        let signals = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                if let Some(mut signals) = super::signals::StopSignals::new() {
                    let name = signals.next().await;
                    tracing::info!("{name}: finishing the runs in progress, claiming no more");
                    shutdown.cancel();
                }
            })
        };
        let _ = worker.await;
        signals.abort();
    });
    Ok(ExitCode::SUCCESS)
}
