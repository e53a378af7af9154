//! `pipeline.yaml`, version 1: the types, the parsing (with
//! `file:line:column` and a key path on every error), the validation and
//! the JSON Schema of executor's pipelines. No execution: `executor run`
//! reads a [`Pipeline`] from here and runs it.
//!
//! ```no_run
//! use pipeline_schema::{Pipeline, image_variable};
//!
//! let pipeline = match Pipeline::load("pipeline.yaml") {
//!     Ok(p) => p,
//!     Err(errors) => {
//!         eprintln!("{errors}"); // every error, one per line (plus hints)
//!         std::process::exit(1);
//!     }
//! };
//! for job in pipeline.topological_order() {
//!     println!("{} (stage {}) after {:?}", job.name, job.stage, job.depends_on);
//! }
//! ```
//!
//! How a file becomes a [`Pipeline`]:
//!
//! 1. `yaml`: the text becomes a tree of nodes marked with file, line and
//!    column, anchors, aliases and merge keys (`<<`) applied, duplicate keys
//!    refused (see that module for why not serde);
//! 2. `load`: `include`d files (relative to the including file) are read the
//!    same way and merged under the including one; the top level is read;
//! 3. `resolve`: `extends` merges jobs on the tree (GitLab's deep merge, the
//!    job's keys winning), each job is read into its type (`spec`), and
//!    `parallel: matrix` is expanded;
//! 4. `validate`: references between jobs and stages are checked, the
//!    dependency graph must have no cycle, and the resolved [`Job`]s and
//!    their [`Dag`] are put together.
//!
//! Every step collects errors instead of stopping, so [`Pipeline::load`]
//! returns all of them ([`Errors`]), in file order.
//!
//! The runner also gets the evaluators it needs at run time: [`Job::decide`]
//! for `rules` ([`Expr`] for one `if`), [`Triggers::matches`] for `on`, and
//! [`Glob`] / [`Filter`] for branch, tag and path globs.

// A library reports to its caller (errors, events, tracing); only the
// binary prints. Tests may.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

mod decode;
mod duration;
mod error;
mod expr;
mod glob;
mod load;
mod model;
mod resolve;
mod spec;
mod suggest;
mod validate;
mod yaml;

use std::path::Path;

pub use duration::{DurationError, format_duration, parse_duration};
pub use error::{Error, ErrorKind, Errors, Location};
pub use expr::{Expr, ExprError, ExprErrorKind, Lookup};
pub use glob::{Filter, Glob, GlobError};
pub use model::{
    Build, Cache, DEFAULT_STAGE, DEFAULT_STAGES, DEFAULT_TIMEOUT, Dag, Event, EventKind, Image,
    Job, JobKind, Pipeline, RefFilter, Retry, RetryWhen, Rule, Script, Secret, SecretSource,
    Triggers, UnknownEvent, When, digest_variable, image_variable,
};

/// The `pipeline.yaml` a command uses when it is given none.
pub const DEFAULT_FILE: &str = "pipeline.yaml";

impl Pipeline {
    /// Reads, checks and resolves the pipeline file at `path` and the files
    /// it includes; every error found when it is not valid.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Errors> {
        load::load(path.as_ref(), None)
    }

    /// As [`Pipeline::load`], with the file's content given: `path` names it
    /// in errors and is where `include` paths start from.
    pub fn parse(path: impl AsRef<Path>, text: &str) -> Result<Self, Errors> {
        load::load(path.as_ref(), Some(text))
    }
}

/// The JSON Schema of `pipeline.yaml` (draft 2020-12), pretty-printed with
/// a final newline: what `executor schema` prints and
/// `pipeline-schema/pipeline.schema.json` holds.
#[must_use]
pub fn json_schema() -> String {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<spec::PipelineSpec>();
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
