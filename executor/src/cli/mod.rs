//! The command line: clap types, one file per subcommand, and the step that
//! turns raw arguments into settings for the library. No engine logic here.

mod build;
mod cache;
mod dockerfile;
mod logging;
mod logs;
mod run;
mod run_output;
mod runner;
mod schema;
mod serve;
mod signals;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub use logging::init as init_logging;

/// Daemonless OCI image builds from Dockerfiles, and CI pipelines.
#[derive(Debug, Parser)]
#[command(
    name = "executor",
    version,
    about,
    long_about = None,
    propagate_version = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Log level: trace, debug, info, warn, error (kaniko's levels fatal and
    /// panic mean error)
    #[arg(
        short = 'v',
        long,
        global = true,
        env = "EXECUTOR_VERBOSITY",
        default_value = "info"
    )]
    pub verbosity: Verbosity,

    /// Log format on stderr
    #[arg(
        long,
        global = true,
        env = "EXECUTOR_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// kaniko compatibility: `executor --context . --destination REF` (no
    /// subcommand) builds, as `/kaniko/executor` does
    #[command(flatten)]
    pub kaniko: build::BuildArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile and push it, without a daemon
    Build(Box<build::BuildArgs>),
    /// Work with Dockerfiles without building them
    Dockerfile(dockerfile::DockerfileArgs),
    /// The local store's base images
    Cache(cache::CacheArgs),
    /// Run a pipeline (pipeline.yaml) on this machine: its build and script
    /// jobs, as their needs finish
    Run(Box<run::RunArgs>),
    /// Check a pipeline file; print every error as file:line:column, or that
    /// it is valid
    Validate(validate::ValidateArgs),
    /// Print the JSON Schema of pipeline.yaml, for editors
    Schema,
    /// Print a pipeline run's logs: every job's, or one job's
    Logs(logs::LogsArgs),
    /// Serve webhooks: queue pipeline runs, run them, send commit statuses,
    /// answer the JSON API
    Serve(serve::ServeArgs),
    /// Run pipelines claimed from an `executor serve` over HTTP
    Runner(runner::RunnerArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Verbosity {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    #[value(hide = true)]
    Fatal,
    #[value(hide = true)]
    Panic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    /// kaniko's name for coloured text
    Color,
    Json,
}

/// Runs the parsed command line; the exit code says how it went.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if cli.log_format != LogFormat::Json {
        executor::progress::enable();
    }
    match cli.command {
        Some(Command::Build(args)) => build::run(&args),
        Some(Command::Dockerfile(args)) => dockerfile::run(args),
        Some(Command::Cache(args)) => cache::run(&args),
        Some(Command::Run(args)) => run::run(&args),
        Some(Command::Validate(args)) => validate::run(&args),
        Some(Command::Schema) => schema::run(),
        Some(Command::Logs(args)) => logs::run(&args),
        Some(Command::Serve(args)) => serve::run(&args),
        Some(Command::Runner(args)) => runner::run(&args),
        None => build::run(&cli.kaniko),
    }
}
