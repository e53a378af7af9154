//! `dockerfile check`: parse, type, plan and expand a Dockerfile without
//! building it, and report every error and warning with its position. The
//! report is plain data; the command layer renders it as text or JSON.

use serde::Serialize;

use super::error::Error;
use super::lint;
use super::plan::{self, ExpandedStage, Options, Warning};

/// What `dockerfile check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The target stage's index, when planning got that far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<usize>,
    pub stages: Vec<ExpandedStage>,
    pub warnings: Vec<Warning>,
    pub errors: Vec<Error>,
}

impl Report {
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks Dockerfile `text` with the given build options.
#[must_use]
pub fn check(text: &str, opts: &Options) -> Report {
    let mut report = Report {
        target: None,
        stages: Vec::new(),
        warnings: Vec::new(),
        errors: Vec::new(),
    };
    let planned = match plan::plan(text, opts) {
        Ok(p) => p,
        Err(errors) => {
            report.errors = errors.0;
            return report;
        }
    };
    report.target = Some(planned.target);
    match plan::expand_all(&planned, opts) {
        Ok(stages) => report.stages = stages,
        Err(errors) => report.errors = errors.0,
    }
    match lint::Config::from_parsed(&planned.parsed) {
        Ok(config) => {
            let found = planned
                .warnings
                .iter()
                .cloned()
                .chain(lint::run(&planned))
                .filter(|w| config.enabled(w.rule));
            for w in found {
                if config.error {
                    report
                        .errors
                        .push(Error::new(w.position, format!("{} ({})", w.message, w.rule)));
                } else {
                    report.warnings.push(w);
                }
            }
        }
        Err(e) => report.errors.push(e),
    }
    report.warnings.sort_by_key(|w| w.position);
    report.errors.sort_by_key(|e| e.position);
    report
}
