//! Errors and source positions shared by every stage of the Dockerfile
//! frontend: the parser, the typed instructions, word expansion and the
//! stage planner. An error always carries where it happened (1-based line and
//! column) so the command layer can print `file:line:column: message`.

use std::fmt;

use serde::Serialize;

/// A 1-based position in the Dockerfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    #[must_use]
    pub const fn new(line: usize, column: usize) -> Self {
        Self { line, column }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A range of source lines, as BuildKit reports it for an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Span {
    pub start: Position,
    pub end_line: usize,
}

impl Span {
    #[must_use]
    pub const fn new(start: Position, end_line: usize) -> Self {
        Self { start, end_line }
    }
}

/// One problem found in a Dockerfile: what is wrong, where, and optionally how
/// to fix it (printed on its own `hint:` line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub position: Position,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Error {
    pub fn new(position: Position, message: impl Into<String>) -> Self {
        Self {
            position,
            message: message.into(),
            hint: None,
        }
    }

    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Formats the error as `file:line:column: message`, plus a `hint:` line
    /// when there is one.
    #[must_use]
    pub fn render(&self, file: &str) -> String {
        let mut out = format!("{file}:{}: {}", self.position, self.message);
        if let Some(hint) = &self.hint {
            out.push_str("\nhint: ");
            out.push_str(hint);
        }
        out
    }
}

/// Several errors at once: `dockerfile check` reports every problem it can
/// find, not only the first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Errors(pub Vec<Error>);

impl From<Error> for Errors {
    fn from(e: Error) -> Self {
        Self(vec![e])
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
