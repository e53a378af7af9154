//! An error and its causes as text: the one renderer of an error chain.
//! The binary prints it (`error: ...`, then a `caused by: ...` line per
//! cause); a pipeline job that fails keeps it on one line, in its log and
//! in the run's summary. Error types never format their cause into their
//! own message (it is their `source`), so the chain is where the whole
//! story is told.

use std::error::Error;

/// The message of `error` and of each of its causes, outermost first. A
/// cause whose message the ones before it already hold (an error of
/// another crate that formats its cause) is left out.
#[must_use]
pub fn messages(error: &(dyn Error + 'static)) -> Vec<String> {
    let mut out: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let shown = cause.to_string();
        if !out.iter().any(|m| m.contains(&shown)) {
            out.push(shown);
        }
        source = cause.source();
    }
    out
}

/// [`messages`] on one line, `: `-separated.
#[must_use]
pub fn one_line(error: &(dyn Error + 'static)) -> String {
    messages(error).join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read the settings {path}")]
    struct Outer {
        path: &'static str,
        #[source]
        source: Middle,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("bad line 3: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn each_cause_is_told_once_outermost_first() {
        let error = Outer {
            path: "/s.json",
            source: Middle(std::io::Error::other("truncated")),
        };
        // `Middle` formats its cause: it is not told again.
        assert_eq!(
            messages(&error),
            ["cannot read the settings /s.json", "bad line 3: truncated"]
        );
        assert_eq!(
            one_line(&error),
            "cannot read the settings /s.json: bad line 3: truncated"
        );
    }
}
