//! `executor dockerfile ...`: Dockerfile tools that build nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};

use executor::dockerfile::check::{self, Report};
use executor::dockerfile::plan::{Base, Options};
use executor::platform::Platform;

#[derive(Debug, Args)]
pub struct DockerfileArgs {
    #[command(subcommand)]
    command: DockerfileCommand,
}

#[derive(Debug, Subcommand)]
enum DockerfileCommand {
    /// Parse, expand and plan a Dockerfile; print its stages, or every error
    /// as file:line:column: message (exit status 1)
    Check(CheckArgs),
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The Dockerfile to check (`-` reads standard input)
    #[arg(
        short = 'f',
        long = "file",
        visible_alias = "dockerfile",
        default_value = "Dockerfile"
    )]
    file: PathBuf,

    /// A build argument, KEY=VALUE; a bare KEY takes its value from the
    /// environment (repeatable)
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]", value_parser = super::dockerfile::build_arg)]
    build_args: Vec<String>,

    /// The stage to build; the last one when absent
    #[arg(long)]
    target: Option<String>,

    /// The platform the image is for (sets TARGETPLATFORM and friends)
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<Platform>,

    /// Output format
    #[arg(long, default_value = "text")]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Turns `--build-arg` values into a map; a bare name reads the environment,
/// and is left out when the environment does not have it (as docker does).
/// Checks one `--build-arg` value: `KEY=VALUE` or `KEY`, with a name.
pub fn build_arg(value: &str) -> Result<String, String> {
    let name = value.split_once('=').map_or(value, |(name, _)| name);
    if name.is_empty() {
        return Err(format!(
            "{value:?} has no name: give KEY=VALUE, or KEY to take the variable of that name"
        ));
    }
    Ok(value.to_owned())
}

pub fn build_args(raw: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for arg in raw {
        match arg.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(arg) {
                    out.insert(arg.clone(), v);
                }
            }
        }
    }
    out
}

pub fn run(args: DockerfileArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        DockerfileCommand::Check(args) => run_check(&args),
    }
}

fn run_check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let (name, text) = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the Dockerfile from standard input")?;
        ("<stdin>".to_string(), text)
    } else {
        let bytes = std::fs::read(&args.file)
            .with_context(|| format!("cannot read Dockerfile {}", args.file.display()))?;
        (
            args.file.display().to_string(),
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    };
    let host = Platform::host();
    let opts = Options {
        build_args: build_args(&args.build_args),
        target: args.target.clone(),
        build_platform: host.clone(),
        target_platform: args.platform.clone().unwrap_or(host),
    };
    let report = check::check_named(&name, &text, &opts);
    let mut stdout = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            let json = serde_json::json!({
                "valid": report.is_ok(),
                "report": report,
            });
            writeln!(stdout, "{}", serde_json::to_string_pretty(&json)?)?;
        }
        Format::Text => {
            let mut err = std::io::stderr().lock();
            for w in &report.warnings {
                writeln!(
                    err,
                    "{name}:{}: warning: {} ({})",
                    w.position, w.message, w.rule
                )?;
            }
            if report.is_ok() {
                write!(stdout, "{}", render_text(&report))?;
            } else {
                for e in &report.errors {
                    writeln!(err, "{}", e.render(&name))?;
                }
            }
        }
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let label = |i: usize| {
        report
            .stages
            .get(i)
            .and_then(|s| s.name.clone())
            .unwrap_or_else(|| i.to_string())
    };
    for stage in &report.stages {
        let base = match &stage.base {
            Base::Scratch => "scratch".to_string(),
            Base::Image(image) => format!("image {image}"),
            Base::Stage(i) => format!("stage {}", label(*i)),
        };
        let mut notes = Vec::new();
        if report.target == Some(stage.index) {
            notes.push("target".to_string());
        } else if !stage.needed {
            notes.push("not needed by the target".to_string());
        }
        if let Some(p) = &stage.platform {
            notes.push(format!("platform {p}"));
        }
        let deps: Vec<String> = stage.depends_on.iter().map(|&i| label(i)).collect();
        if !deps.is_empty() {
            notes.push(format!("needs {}", deps.join(", ")));
        }
        let _ = write!(out, "stage {}", stage.index);
        if let Some(name) = &stage.name {
            let _ = write!(out, " {name}");
        }
        let _ = write!(out, ": from {base}");
        if !notes.is_empty() {
            let _ = write!(out, " ({})", notes.join("; "));
        }
        out.push('\n');
        for instruction in &stage.instructions {
            let _ = writeln!(
                out,
                "  {:>4}  {}",
                instruction.start.line,
                instruction.display()
            );
        }
    }
    out
}
