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

use std::ffi::OsString;
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

/// Parses the process's arguments. The global options (`-v`/`--verbosity`,
/// `--log-format`) may come before the subcommand as the help says
/// (`executor -v debug build ...`): clap refuses any option there since
/// the top level also takes kaniko's flags without a subcommand
/// (`args_conflicts_with_subcommands`), so they are moved after it first.
pub fn parse() -> Cli {
    use clap::CommandFactory as _;
    let subcommands: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    Cli::parse_from(hoist_globals(std::env::args_os().collect(), &subcommands))
}

/// `args` with the global options found before a subcommand moved just
/// after it; unchanged when no subcommand follows them.
fn hoist_globals(args: Vec<OsString>, subcommands: &[String]) -> Vec<OsString> {
    const WITH_VALUE: [&str; 3] = ["-v", "--verbosity", "--log-format"];
    let mut globals = Vec::new();
    let mut i = 1;
    while let Some(arg) = args.get(i).and_then(|a| a.to_str()) {
        if WITH_VALUE.contains(&arg) {
            let Some(value) = args.get(i + 1) else {
                break;
            };
            globals.extend([args[i].clone(), value.clone()]);
            i += 2;
        } else if arg.starts_with("--verbosity=")
            || arg.starts_with("--log-format=")
            || (arg.starts_with("-v") && arg.len() > 2 && !arg.starts_with("--"))
        {
            globals.push(args[i].clone());
            i += 1;
        } else {
            break;
        }
    }
    let is_subcommand = args
        .get(i)
        .and_then(|a| a.to_str())
        .is_some_and(|a| subcommands.iter().any(|s| s == a));
    if globals.is_empty() || !is_subcommand {
        return args;
    }
    let mut out = vec![args[0].clone(), args[i].clone()];
    out.extend(globals);
    out.extend(args[i + 1..].iter().cloned());
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hoisted(args: &[&str]) -> Vec<String> {
        let subcommands = ["build".to_owned(), "run".to_owned()];
        hoist_globals(args.iter().map(OsString::from).collect(), &subcommands)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn global_options_before_a_subcommand_move_after_it() {
        assert_eq!(
            hoisted(&[
                "executor",
                "-v",
                "debug",
                "--log-format=json",
                "build",
                "--no-push"
            ]),
            [
                "executor",
                "build",
                "-v",
                "debug",
                "--log-format=json",
                "--no-push"
            ]
        );
        assert_eq!(
            hoisted(&["executor", "-vdebug", "run"]),
            ["executor", "run", "-vdebug"]
        );
        // kaniko's form (no subcommand) and subcommand-first are kept.
        for args in [
            &["executor", "-v", "debug", "--context", "."][..],
            &["executor", "build", "-v", "debug"],
            &["executor", "--verbosity"],
        ] {
            assert_eq!(hoisted(args), args);
        }
    }
}
