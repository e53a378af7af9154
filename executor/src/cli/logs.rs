//! `executor logs`: the logs `executor run` keeps for each run under
//! `.executor/runs/RUN_ID/` in the project directory.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use executor::pipeline::checkout::Checkout;
use executor::pipeline::logs::{self, LogsError, RunId};

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The run, by the id `executor run` printed; the latest run when
    /// absent (a job name alone means that job of the latest run)
    #[arg(value_name = "RUN_ID")]
    pub run: Option<String>,

    /// Only this job's log; every job's, each under a header, when absent
    #[arg(value_name = "JOB")]
    pub job: Option<String>,

    /// The project directory holding `.executor/runs`; by default the git
    /// working tree around the current directory, else the current
    /// directory
    #[arg(
        short = 'C',
        long = "dir",
        value_name = "DIR",
        env = "EXECUTOR_PROJECT_DIR"
    )]
    pub dir: Option<PathBuf>,
}

pub fn run(args: &LogsArgs) -> anyhow::Result<ExitCode> {
    let base = if let Some(dir) = &args.dir {
        dir.clone()
    } else {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        Checkout::working_tree(&cwd).map_or(cwd, |checkout| checkout.dir)
    };
    let (run, job) = match (&args.run, &args.job) {
        (None, _) => (logs::latest_run(&base)?, None),
        (Some(run), job) => match RunId::parse(run) {
            Ok(id) => (id, job.clone()),
            // `executor logs JOB`: that job of the latest run.
            Err(_) if job.is_none() => (logs::latest_run(&base)?, Some(run.clone())),
            Err(e) => return Err(e.into()),
        },
    };
    let jobs = logs::jobs(&base, &run)?;
    tracing::info!("run {run}");
    let mut out = std::io::stdout().lock();
    match job {
        Some(job) => {
            if !jobs.contains(&job) {
                return Err(LogsError::NoJob { run, job, jobs }.into());
            }
            print_log(&mut out, &base, &run, &job)?;
        }
        None => {
            for (n, job) in jobs.iter().enumerate() {
                if n > 0 {
                    writeln!(out)?;
                }
                writeln!(out, "==> {job} <==")?;
                print_log(&mut out, &base, &run, job)?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Writes a job's log to `out`, ending it with a newline if it lacks one.
fn print_log(
    out: &mut impl std::io::Write,
    base: &std::path::Path,
    run: &RunId,
    job: &str,
) -> anyhow::Result<()> {
    let path = logs::log_path(base, run, job);
    let log = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    out.write_all(&log)?;
    if !log.is_empty() && !log.ends_with(b"\n") {
        writeln!(out)?;
    }
    Ok(())
}
