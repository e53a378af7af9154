//! `dockerfile check`: parse, type, plan and expand a Dockerfile without
//! building it, and report every error and warning with its position. The
//! report is plain data; the command layer renders it as text or JSON.

use serde::Serialize;

use super::error::Error;
use super::lint;
use super::parser;
use super::plan::{self, ExpandedStage, Options, Warning};

/// What `dockerfile check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The name the Dockerfile was read under.
    pub file: String,
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
    check_named("Dockerfile", text, opts)
}

/// Like [`check`], for a Dockerfile read under the name `file`.
#[must_use]
pub fn check_named(file: &str, text: &str, opts: &Options) -> Report {
    let mut report = Report {
        file: file.to_string(),
        target: None,
        stages: Vec::new(),
        warnings: Vec::new(),
        errors: Vec::new(),
    };
    let parsed = match parser::parse_named(file, text) {
        Ok(parsed) => parsed,
        Err(e) => {
            report.errors.push(e);
            return report;
        }
    };
    let (planned, errors) = plan::plan_lenient(parsed, opts);
    report.errors = errors;
    report.target = Some(planned.target).filter(|_| !planned.stages.is_empty());
    let expansion = plan::expand_all(&planned, opts);
    report.stages = expansion.stages;
    report.errors.extend(expansion.errors);
    match lint::Config::from_parsed(&planned.parsed) {
        Ok(config) => {
            let found = planned
                .warnings
                .iter()
                .cloned()
                .chain(expansion.warnings)
                .chain(lint::run(&planned))
                .filter(|w| config.enabled(w.rule));
            for w in found {
                if config.error {
                    report.errors.push(Error::new(
                        w.position,
                        format!("{} ({})", w.message, w.rule),
                    ));
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
