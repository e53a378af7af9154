//! `pipeline.yaml`, version 1: the types, the parsing, the validation and
//! the JSON Schema of executor's pipelines. No execution: `executor run`
//! reads a pipeline from here and runs it.
//!
//! This first part holds the values a pipeline file is made of: durations,
//! the `if` expressions of rules, and branch, tag and path globs.

mod duration;
mod expr;
mod glob;

pub use duration::{DurationError, format_duration, parse_duration};
pub use expr::{Expr, ExprError, ExprErrorKind, Lookup};
pub use glob::{Filter, Glob, GlobError};
