//! Globs for branch and tag filters (`on`), path filters and
//! `rules: changes`, through `globset` (ripgrep's) with these semantics:
//!
//! - `*` matches any characters except `/`, `?` one character except `/`;
//!   `release/*` matches `release/1.0` but not `release/1.0/hotfix`;
//! - `**` crosses `/` when it is a whole path component: `**/x`, `a/**`,
//!   `a/**/b` (zero or more directories); elsewhere it is a `*`;
//! - `[abc]`, `[a-z]`, `[!a]` are character classes, `{a,b}` alternatives,
//!   `\` escapes;
//! - a pattern matches the whole branch name, tag or path (relative to the
//!   repository root, `/`-separated), not a part of it.
//!
//! In a [`Filter`] (a list of patterns), a pattern starting with `!`
//! excludes: the last pattern that matches decides, and a list of only
//! exclusions starts from everything, as GitHub's `branches` and `paths`.

use std::fmt;

/// One glob pattern.
#[derive(Clone)]
pub struct Glob {
    text: String,
    matcher: globset::GlobMatcher,
}

/// A pattern that is not a valid glob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GlobError(String);

impl Glob {
    pub fn new(pattern: &str) -> Result<Self, GlobError> {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| GlobError(e.kind().to_string().to_lowercase()))?;
        Ok(Self {
            text: pattern.to_string(),
            matcher: glob.compile_matcher(),
        })
    }

    /// Whether the whole of `candidate` matches.
    #[must_use]
    pub fn is_match(&self, candidate: &str) -> bool {
        self.matcher.is_match(candidate)
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.text)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// An ordered list of globs, `!glob` excluding what it matches.
#[derive(Clone)]
pub struct Filter {
    patterns: Vec<(bool, Glob)>,
}

impl Filter {
    /// Builds a filter from patterns such as `["release/*", "!release/old"]`.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, GlobError> {
        let patterns = patterns
            .iter()
            .map(|p| Self::pattern(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// One pattern of a filter: `(included, glob)`.
    pub(crate) fn pattern(text: &str) -> Result<(bool, Glob), GlobError> {
        match text.strip_prefix('!') {
            Some(rest) => Ok((false, Glob::new(rest)?)),
            None => Ok((true, Glob::new(text)?)),
        }
    }

    pub(crate) fn from_patterns(patterns: Vec<(bool, Glob)>) -> Self {
        Self { patterns }
    }

    /// Whether `candidate` passes the filter.
    #[must_use]
    pub fn matches(&self, candidate: &str) -> bool {
        let mut included = self.patterns.iter().all(|(include, _)| !include);
        for (include, glob) in &self.patterns {
            if glob.is_match(candidate) {
                included = *include;
            }
        }
        included
    }

    /// Whether any of `candidates` passes the filter (a path filter against
    /// the files a change touched).
    #[must_use]
    pub fn matches_any<S: AsRef<str>>(&self, candidates: &[S]) -> bool {
        candidates.iter().any(|c| self.matches(c.as_ref()))
    }

    /// The patterns as written, `!` included.
    #[must_use]
    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|(include, g)| {
                if *include {
                    g.to_string()
                } else {
                    format!("!{g}")
                }
            })
            .collect()
    }
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Filter").field(&self.patterns()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_stops_at_slash_and_double_star_crosses() {
        let g = |p: &str| Glob::new(p).unwrap();
        assert!(g("release/*").is_match("release/1.0"));
        assert!(!g("release/*").is_match("release/1.0/hotfix"));
        assert!(g("release/**").is_match("release/1.0/hotfix"));
        assert!(g("*.md").is_match("README.md"));
        assert!(!g("*.md").is_match("docs/README.md"));
        assert!(g("**/*.md").is_match("docs/README.md"));
        assert!(g("**/*.md").is_match("README.md"));
        assert!(g("src/**/test_*.py").is_match("src/a/b/test_x.py"));
        assert!(g("src/**/test_*.py").is_match("src/test_x.py"));
        assert!(g("v[0-9]*").is_match("v1.2.3"));
        assert!(g("{main,master}").is_match("master"));
        assert!(!g("main").is_match("main2"));
        assert!(!g("ma?n").is_match("ma/n"));
    }

    #[test]
    fn filters_exclude_and_the_last_match_decides() {
        let f = Filter::new(&["release/**", "!release/old/**", "release/old/keep"]).unwrap();
        assert!(f.matches("release/1"));
        assert!(!f.matches("release/old/x"));
        assert!(f.matches("release/old/keep"));
        assert!(!f.matches("main"));
        let only_exclusions = Filter::new(&["!docs/**"]).unwrap();
        assert!(only_exclusions.matches("src/x"));
        assert!(!only_exclusions.matches("docs/x"));
        assert!(only_exclusions.matches_any(&["docs/a", "src/b"]));
        assert_eq!(f.patterns()[1], "!release/old/**");
    }

    #[test]
    fn invalid_globs_are_errors() {
        assert!(Glob::new("[a").is_err());
        assert!(Glob::new("{a,b").is_err());
    }
}
