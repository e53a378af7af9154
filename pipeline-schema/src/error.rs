//! Errors of loading a pipeline. Every error says where (`file:line:column`
//! and the key path, `jobs.test.needs[1]`), what (an [`ErrorKind`]), and,
//! when there is one, how to fix it (a `hint:` line, for example the nearest
//! valid name of a misspelt key or job).

use std::fmt;
use std::path::PathBuf;

use crate::duration::DurationError;
use crate::expr::ExprError;

/// A place in a pipeline file: 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One problem in a pipeline.
///
/// Its `Display` is the whole report a user reads:
/// `file:line:column: key.path: message: cause`, then a `hint:` line with a
/// remedy and a `note:` line naming the alias the value was reached through,
/// when there are such. `source()` is `None` because the causes are already
/// in that text.
#[derive(Debug)]
pub struct Error {
    /// Where the offending text is; `None` only when there is no text to
    /// point at (the pipeline file itself cannot be read).
    pub location: Option<Location>,
    /// The key path of the offending value, `jobs.test.needs[1]`; empty for
    /// the document itself.
    pub path: String,
    pub kind: ErrorKind,
    /// A remedy, such as `did you mean `needs`?`.
    pub hint: Option<String>,
    /// The alias (`*name`) through which the offending text, written at its
    /// anchor, was used here.
    pub via: Option<Location>,
}

impl Error {
    pub(crate) fn new(location: Option<Location>, path: String, kind: ErrorKind) -> Self {
        Self {
            location,
            path,
            kind,
            hint: None,
            via: None,
        }
    }

    #[must_use]
    pub(crate) fn with_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(location) = &self.location {
            write!(f, "{location}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.kind)?;
        let mut cause = std::error::Error::source(&self.kind);
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        if let Some(via) = &self.via {
            write!(f, "\nnote: used through the alias at {via}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Every error found in a pipeline, in file order: loading does not stop at
/// the first one.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<Error>);

impl Errors {
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Error> {
        self.0.iter()
    }

    /// The line `executor validate` prints after the errors:
    /// `invalid (3 errors)`.
    #[must_use]
    pub fn summary(&self) -> String {
        match self.0.len() {
            1 => "invalid (1 error)".to_string(),
            n => format!("invalid ({n} errors)"),
        }
    }
}

impl IntoIterator for Errors {
    type Item = Error;
    type IntoIter = std::vec::IntoIter<Error>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Errors {
    type Item = &'a Error;
    type IntoIter = std::slice::Iter<'a, Error>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

/// What is wrong. Messages are lower case and name the offending value;
/// causes (an I/O error, a duration's or an expression's syntax error) are
/// attached as sources.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    // Reading and YAML.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is too large: a pipeline, its included files counted, is at most {max} bytes",
        path.display()
    )]
    PipelineTooLarge { path: PathBuf, max: u64 },
    #[error("the pipeline has {count} jobs, more than {max}")]
    TooManyJobs { count: usize, max: usize },
    #[error("invalid YAML: {0}")]
    Syntax(String),
    #[error("a pipeline file holds one YAML document, this one holds more")]
    MultipleDocuments,
    #[error("unsupported tag `{0}`")]
    Tag(String),
    #[error("aliases expand to more than {0} nodes")]
    TooLarge(usize),
    #[error("lists and mappings nest deeper than {0} levels")]
    TooDeep(usize),
    #[error("a key must be a string, found {0}")]
    KeyType(&'static str),
    #[error("duplicate key `{0}`")]
    DuplicateKey(String),
    #[error("`<<` merges a mapping or a list of mappings, found {0}")]
    Merge(&'static str),

    // Shape.
    #[error("unknown key `{0}`")]
    UnknownKey(String),
    #[error("missing key `{0}`")]
    MissingKey(&'static str),
    #[error("expected {expected}, found {found}")]
    Type {
        expected: &'static str,
        found: &'static str,
    },
    #[error("invalid value `{value}`, expected one of {expected}")]
    Choice { value: String, expected: String },
    #[error("unsupported version `{0}`")]
    Version(String),
    #[error("{0} out of range, expected {1}")]
    Range(String, &'static str),
    #[error("invalid duration `{value}`")]
    Duration {
        value: String,
        #[source]
        source: DurationError,
    },
    #[error("invalid expression `{text}`")]
    Expression {
        text: String,
        #[source]
        source: ExprError,
    },
    #[error("invalid glob `{pattern}`: {reason}")]
    Glob { pattern: String, reason: String },
    #[error("invalid variable name `{0}`")]
    VariableName(String),
    #[error("invalid job name `{0}`")]
    JobName(String),
    #[error("`{0}` must be a relative path inside the repository")]
    OutsidePath(String),
    #[error("a secret comes from exactly one of `env` or `file`")]
    SecretSource,
    #[error("{0} must not be empty")]
    Empty(&'static str),

    // Files.
    #[error("`include` forms a cycle: {0}")]
    IncludeCycle(String),
    #[error("`include` nests deeper than {0} files")]
    IncludeDepth(usize),

    // References and the graph.
    #[error("unknown job `{0}`")]
    UnknownJob(String),
    #[error("unknown stage `{0}`")]
    UnknownStage(String),
    #[error("`{0}` is listed twice")]
    Repeated(String),
    #[error("`{0}` is a template (its name starts with `.`) and never runs")]
    Template(String),
    #[error("`extends` forms a cycle: {0}")]
    ExtendsCycle(String),
    #[error("`extends` nests deeper than {0} levels")]
    ExtendsDepth(usize),
    #[error("`needs` forms a cycle: {0}")]
    Cycle(String),
    #[error("job `{0}` has both `build` and `script`")]
    BothKinds(String),
    #[error("job `{0}` has neither `build` nor `script`")]
    NeitherKind(String),
    #[error("`{key}` is for script jobs, and `{job}` is a build job")]
    ScriptOnly { key: &'static str, job: String },
    #[error("`image: {{job: {0}}}` names a job that is not a build job")]
    NotBuildJob(String),
    #[error("`image: {{job: {0}}}` names a job that is not in this job's `needs`")]
    ImageNotNeeded(String),
    #[error("`image: {{job: {job}}}` is ambiguous: `{job}` is a matrix of {count} jobs")]
    AmbiguousImage { job: String, count: usize },
    #[error("jobs `{first}` and `{second}` both publish `{variable}`")]
    OutputClash {
        first: String,
        second: String,
        variable: String,
    },

    // Matrices.
    #[error("the matrix expands to {0} jobs, more than {max}", max = crate::resolve::MAX_MATRIX_JOBS)]
    MatrixTooLarge(usize),
    #[error("the matrix gives `{0}` twice")]
    MatrixRepeated(String),
}
