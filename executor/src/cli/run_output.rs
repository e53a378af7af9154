//! What `executor run` shows on the terminal, rendered from the run's
//! events ([`executor::pipeline::events`]): a dry run's plan, the run's
//! first line, every job's log lines prefixed by its name (padded to the
//! longest, coloured on a terminal), and the summary table. The library
//! prints nothing; this is the only place the run's progress is written.

use std::fmt::Write as _;
use std::io::{self, IsTerminal as _, Write as _};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use executor::pipeline::events::{EventSink, Plan, RunEvent, RunReport};

/// The colours job names cycle through (ANSI: cyan, yellow, green,
/// magenta, blue, red, bright variants).
const COLOURS: [&str; 12] = [
    "36", "33", "32", "35", "34", "31", "96", "93", "92", "95", "94", "91",
];

/// Renders a run's events on stdout.
pub struct Terminal {
    /// Whether the plan is shown (`--dry-run`).
    show_plan: bool,
    /// Job names coloured: stdout is a terminal and `NO_COLOR` is not set.
    colour: bool,
    /// Job names are padded to this width (the longest).
    width: Mutex<usize>,
}

impl Terminal {
    pub fn new(show_plan: bool) -> Self {
        Self {
            show_plan,
            colour: io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            width: Mutex::new(0),
        }
    }

    /// What `event` shows, if anything.
    fn render(&self, event: &RunEvent) -> Option<String> {
        match event {
            RunEvent::Planned(plan) if self.show_plan => Some(plan_text(plan)),
            RunEvent::NotTriggered {
                pipeline,
                event,
                git_ref,
            } => Some(format!(
                "{pipeline}: the pipeline does not run on {event} {} (see its `on`)\n",
                git_ref.as_deref().unwrap_or("")
            )),
            RunEvent::RunStarted {
                id,
                pipeline,
                sha,
                jobs,
            } => {
                *self.width.lock().unwrap_or_else(PoisonError::into_inner) = jobs
                    .iter()
                    .map(|name| name.chars().count())
                    .max()
                    .unwrap_or(0);
                Some(format!("run {id} of {pipeline} ({sha})\n"))
            }
            RunEvent::Log { job, line, .. } => {
                let width = *self.width.lock().unwrap_or_else(PoisonError::into_inner);
                Some(log_line(job, line, width, self.colour))
            }
            RunEvent::RunFinished { report, logs } => Some(summary(report, logs)),
            _ => None,
        }
    }
}

impl EventSink for Terminal {
    fn event(&self, event: &RunEvent) {
        if let Some(text) = self.render(event) {
            // One write per event, so lines of jobs running at once never
            // mix; the terminal going away must not stop the run (the logs
            // have everything).
            let mut out = io::stdout().lock();
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        }
    }
}

/// A job's colour, from a stable hash of its name (FNV-1a), so a job keeps
/// its colour from run to run.
fn colour_of(name: &str) -> &'static str {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let index = usize::try_from(hash % COLOURS.len() as u64).unwrap_or(0);
    COLOURS[index]
}

/// `JOB | LINE`, the name padded to `width`.
fn log_line(job: &str, line: &str, width: usize, colour: bool) -> String {
    let padded = format!("{job:<width$}");
    let line = line.strip_suffix('\r').unwrap_or(line);
    if colour {
        format!("\x1b[{}m{padded}\x1b[0m | {line}\n", colour_of(job))
    } else {
        format!("{padded} | {line}\n")
    }
}

/// A dry run's plan: the pipeline and event, then each job with what was
/// decided for it.
fn plan_text(plan: &Plan) -> String {
    let mut out = format!(
        "{} on {} {} ({}): {} jobs\n",
        plan.pipeline,
        plan.event,
        plan.git_ref.as_deref().unwrap_or(""),
        plan.sha.get(..8).unwrap_or(&plan.sha),
        plan.jobs.len()
    );
    for job in &plan.jobs {
        let needs = if job.needs.is_empty() {
            String::new()
        } else {
            format!(" after {}", job.needs.join(", "))
        };
        let _ = writeln!(
            out,
            "  {} [{}, {}]{needs}: {}",
            job.name, job.stage, job.kind, job.decision
        );
    }
    out
}

/// The summary: a blank line, the table, and where the logs are.
fn summary(report: &RunReport, logs: &Path) -> String {
    format!(
        "\n{}logs: {} (executor logs {})\n",
        table(report),
        logs.display(),
        report.id
    )
}

/// The summary table: job, status, duration, image.
fn table(report: &RunReport) -> String {
    let name_width = report
        .jobs
        .iter()
        .map(|j| j.name.chars().count())
        .max()
        .unwrap_or(3)
        .max(3);
    let statuses: Vec<String> = report
        .jobs
        .iter()
        .map(|job| {
            if job.attempts > 1 {
                format!("{} ({} attempts)", job.status, job.attempts)
            } else {
                job.status.to_string()
            }
        })
        .collect();
    let status_width = statuses
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!(
        "{:name_width$}  {:status_width$}  {:>8}  IMAGE\n",
        "JOB", "STATUS", "DURATION"
    );
    for (job, status) in report.jobs.iter().zip(statuses) {
        let duration = if job.seconds > 0.0 {
            format!("{:.2}s", job.seconds)
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            "{:name_width$}  {status:status_width$}  {duration:>8}  {}",
            job.name,
            job.image.as_deref().unwrap_or("")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use executor::pipeline::events::{JobReport, JobStatus};
    use executor::pipeline::logs::RunId;

    fn job(name: &str, status: JobStatus, attempts: u32) -> JobReport {
        JobReport {
            name: name.into(),
            status,
            seconds: 1.5,
            attempts,
            image: None,
            digest: None,
        }
    }

    #[test]
    fn the_summary_columns_line_up_with_attempts_and_wide_names() {
        let report = RunReport {
            id: RunId::at(0, 0),
            jobs: vec![
                job("retried", JobStatus::Succeeded, 3),
                job("été", JobStatus::Canceled, 1),
            ],
            interrupted: false,
        };
        let table = table(&report);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines,
            [
                "JOB      STATUS                  DURATION  IMAGE",
                "retried  succeeded (3 attempts)     1.50s  ",
                "été      canceled                   1.50s  ",
            ]
        );
    }

    #[test]
    fn job_names_are_padded_and_coloured_on_a_terminal() {
        assert_eq!(log_line("a", "x\r", 4, false), "a    | x\n");
        let coloured = log_line("a", "x", 1, true);
        assert!(coloured.starts_with("\x1b["), "{coloured:?}");
        assert!(coloured.ends_with("a\x1b[0m | x\n"), "{coloured:?}");
        // A job keeps its colour.
        assert_eq!(coloured, log_line("a", "x", 1, true));
    }
}
