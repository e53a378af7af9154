//! `executor validate [PIPELINE]`: loads a pipeline as `executor run` does
//! and prints every error (exit status 1), or that it is valid.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use pipeline_schema::Pipeline;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The pipeline file
    #[arg(default_value = pipeline_schema::DEFAULT_FILE)]
    pub pipeline: PathBuf,
}

pub fn run(args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let name = args.pipeline.display();
    match Pipeline::load(&args.pipeline) {
        Ok(pipeline) => {
            let jobs = pipeline.jobs().len();
            let noun = if jobs == 1 { "job" } else { "jobs" };
            writeln!(std::io::stdout(), "{name}: valid ({jobs} {noun})")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            let mut stderr = std::io::stderr().lock();
            writeln!(stderr, "{errors}")?;
            writeln!(stderr, "{name}: {}", errors.summary())?;
            Ok(ExitCode::FAILURE)
        }
    }
}
