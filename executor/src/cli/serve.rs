//! `executor serve`: the webhook server, its queue and API, with
//! `--runners N` runners in the process (0 for a server whose runs only
//! `executor runner` processes take). `--check-config` validates
//! `executor.toml` and prints its summary, secrets never shown. On SIGTERM
//! or SIGINT: `/readyz` fails, no run is handed out any more, runs in
//! progress have the grace period to finish, then their leases are
//! released; the server exits 0.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{ArgAction, Args};
use tokio_util::sync::CancellationToken;

use executor::build::IsolationMode;
use executor::error_chain;
use executor::server::config::{self, Config, Secret};
use executor::server::runner::{Machine, Worker, WorkerConfig};
use executor::server::service::{LocalRunner, Service};
use executor::server::store::Store;

use super::build::default_cache_dir;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file
    #[arg(long, env = "EXECUTOR_CONFIG", default_value = config::DEFAULT_FILE)]
    pub config: PathBuf,

    /// Check the configuration (and the secrets it refers to), print a
    /// summary without secrets, and exit
    #[arg(long, action = ArgAction::SetTrue)]
    pub check_config: bool,

    /// The data directory (SQLite database, run scratch), instead of the
    /// configuration's `data_dir`
    #[arg(long, env = "EXECUTOR_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// PostgreSQL (`postgres://user:password@host/db`) instead of SQLite,
    /// over the configuration's `database_url`
    #[arg(
        long,
        env = "EXECUTOR_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// Runners in this process (0: only `executor runner` processes run
    /// pipelines)
    #[arg(long, env = "EXECUTOR_RUNNERS", default_value_t = 1)]
    pub runners: usize,
}

/// This machine's runner settings from the configuration.
fn machine(config: &Config) -> anyhow::Result<Machine> {
    let cache_dir = match &config.runner.cache_dir {
        Some(dir) => dir.clone(),
        None => default_cache_dir()?,
    };
    Ok(Machine {
        cache_dir,
        work_dir: config
            .runner
            .work_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("work")),
        insecure_registries: config.runner.insecure_registries.clone(),
        jobs: config.runner.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        }),
        isolation: config.runner.isolation.unwrap_or(IsolationMode::Namespace),
    })
}

pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(&args.config)?;
    if let Some(dir) = &args.data_dir {
        config.data_dir.clone_from(dir);
    }
    if let Some(url) = &args.database_url {
        config.database_url = Some(Secret::new(url.clone()));
    }
    if args.check_config {
        print!("{}", config.summary());
        return Ok(ExitCode::SUCCESS);
    }
    let machine = machine(&config)?;
    if args.runners > 0 {
        machine
            .check_isolation("--runners", args.runners)
            .with_context(|| format!("{}: [runner]", config.path.display()))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(Arc::new(config), machine, args.runners))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: Arc<Config>, machine: Machine, runners: usize) -> anyhow::Result<()> {
    let store = Store::open(
        config.database_url.as_ref().map(Secret::expose),
        &config.data_dir,
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener
        .local_addr()
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let service = Arc::new(Service::new(Arc::clone(&config), store.clone()));
    tracing::info!(
        %address,
        database = store.backend_name(),
        runners,
        "executor serve listening"
    );

    // Expired leases go back to the queue.
    let requeue = {
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(service.config.queue.requeue_interval).await;
                if let Err(e) = service.requeue_expired().await {
                    tracing::warn!(
                        "cannot requeue expired leases: {}",
                        error_chain::one_line(&e)
                    );
                }
            }
        })
    };

    // Old logs and delivery ids go, hourly.
    let retention = {
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            loop {
                match service.apply_retention().await {
                    Ok((0, 0)) => {}
                    Ok((logs, deliveries)) => {
                        tracing::info!(
                            logs,
                            deliveries,
                            "retention: old logs and delivery ids deleted"
                        );
                    }
                    Err(e) => tracing::warn!("retention: {}", error_chain::one_line(&e)),
                }
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            }
        })
    };

    let stop_http = CancellationToken::new();
    let http = {
        let app = executor::server::http::router(Arc::clone(&service));
        let stop = stop_http.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };

    let shutdown = CancellationToken::new();
    let worker = (runners > 0).then(|| {
        let owner = format!(
            "local/{}-{}",
            rustix::system::uname().nodename().to_string_lossy(),
            std::process::id()
        );
        let worker = Worker::new(
            Arc::new(LocalRunner {
                service: Arc::clone(&service),
                owner,
            }),
            machine,
            WorkerConfig {
                concurrency: runners,
                once: false,
                grace: config.queue.grace,
            },
        );
        tokio::spawn(worker.run(shutdown.clone()))
    });

    let mut signals = super::signals::StopSignals::new().context("cannot listen to signals")?;
    let name = signals.next().await;
    tracing::info!("{name}: draining (grace {:?})", config.queue.grace);
    service.drain();
    shutdown.cancel();
    if let Some(worker) = worker {
        let _ = worker.await;
    }
    requeue.abort();
    retention.abort();
    stop_http.cancel();
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("HTTP server: {e}"),
        Err(e) => tracing::warn!("HTTP server task: {e}"),
    }
    service
        .flush_statuses(std::time::Duration::from_secs(5))
        .await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}
