//! `.dockerignore`: which ignore file applies to a build, how its lines become
//! patterns, and whether a context-relative path is excluded. It reproduces
//! what Docker's BuildKit client does (moby/patternmatcher's `ignorefile` and
//! `patternmatcher`, driven by tonistiigi/fsutil's walker); it must not walk
//! the context itself or read any file but the ignore file. It is hand-written
//! because no crate has Docker's exact matcher semantics: Docker rewrites each
//! glob character by character into a Go regular expression, and the quirks of
//! that rewrite and of Go's regexp syntax (escapes such as `\d`, POSIX classes,
//! `\Q`, a `*` inside `[...]`) are part of what users see. So this module
//! carries the rewrite, and its `goregex` submodule a parser for the Go regexp
//! syntax the rewrite can produce and a Pike VM to run it in time linear in
//! the path length.

mod goregex;

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::gopath;

/// Name of the ignore file at the root of a build context.
pub const DOCKERIGNORE: &str = ".dockerignore";

/// Errors from reading or parsing an ignore file.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    /// A line Docker would reject as well.
    #[error("line {line}: invalid pattern {pattern:?}: {reason}")]
    Pattern {
        /// 1-based line number.
        line: usize,
        /// The line, trimmed, as written.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The ignore file exists but could not be read.
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The ignore file at `path` has an invalid line.
    #[error("invalid ignore file {}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: Box<IgnoreError>,
    },
}

pub type Result<T, E = IgnoreError> = std::result::Result<T, E>;

/// The parsed patterns of one ignore file, in order.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

impl DockerIgnore {
    /// Parse the text of a .dockerignore file.
    pub fn parse(text: &str) -> Result<Self> {
        let mut patterns = Vec::new();
        for line in read_all(text) {
            let pattern = Pattern::new(&line.pattern).map_err(|reason| IgnoreError::Pattern {
                line: line.number,
                pattern: line.text.to_owned(),
                reason,
            })?;
            patterns.extend(pattern);
        }
        Ok(Self { patterns })
    }

    /// Is this context-relative path (forward slashes, no leading "./" or "/")
    /// excluded from the context?
    ///
    /// This is the verdict BuildKit's walker reaches for the path: each
    /// pattern is tried on every leading part of the path in turn (`a`,
    /// `a/b`, `a/b/c`), and a pattern that matched a parent directory keeps
    /// matching below it. A directory that is excluded is still sent when
    /// something below it is not; that is the walker's business (see
    /// [`DockerIgnore::may_include_below`]). The root is never excluded.
    #[must_use]
    pub fn is_excluded(&self, path: &str) -> bool {
        let cleaned = gopath::clean(path);
        let relative = cleaned.strip_prefix('/').unwrap_or(&cleaned);
        if relative.is_empty() || relative == "." {
            return false;
        }
        self.excluded_raw(relative)
    }

    /// While walking the context: if directory `dir` is excluded, could some
    /// path below it still be re-included by an exception? (so the walker
    /// knows whether to descend)
    ///
    /// Mirrors fsutil: with no exceptions, never; when some exception has
    /// glob characters other than a trailing `/*` or `/**`, always; else only
    /// when an exception names a path inside `dir`.
    #[must_use]
    pub fn may_include_below(&self, dir: &str) -> bool {
        let mut exceptions = self.patterns.iter().filter(|p| p.exception).peekable();
        if exceptions.peek().is_none() {
            return false;
        }
        let literal: Vec<&str> = exceptions
            .map(|p| without_trailing_glob(&p.cleaned))
            .collect();
        if literal
            .iter()
            .any(|p| p.contains(['*', '[', ']', '?', '^', '\\']))
        {
            return true;
        }
        let cleaned = gopath::clean(dir);
        let dir = cleaned.strip_prefix('/').unwrap_or(&cleaned);
        if dir.is_empty() || dir == "." {
            return true;
        }
        literal.iter().any(|p| {
            p.strip_prefix(dir)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// The cleaned patterns, in order, as strings (with leading '!' for
    /// exceptions).
    #[must_use]
    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| {
                if p.exception {
                    format!("!{}", p.cleaned)
                } else {
                    p.cleaned.clone()
                }
            })
            .collect()
    }

    /// The walker's verdict for `path`, taken as given (no cleaning): the
    /// chain of patternmatcher's `MatchesUsingParentResults` over every
    /// leading part of the path.
    fn excluded_raw(&self, path: &str) -> bool {
        let count = self.patterns.len();
        if count == 0 {
            return false;
        }
        let ends: Vec<usize> = path
            .match_indices('/')
            .map(|(i, _)| i)
            .chain(std::iter::once(path.len()))
            .collect();
        // Row i: does pattern i match path[..ends[d]], for each depth d.
        // Computed on first use: most patterns are never consulted.
        let mut table: Vec<Option<Vec<bool>>> = vec![None; count];
        let mut parent: Vec<bool> = Vec::new();
        let mut current = vec![false; count];
        let mut matched = false;
        for depth in 0..ends.len() {
            matched = false;
            for (i, pattern) in self.patterns.iter().enumerate() {
                let mut hit = parent.get(i).copied().unwrap_or(false);
                if !hit {
                    // An exclusion cannot change an excluded verdict, nor an
                    // exception an included one: patternmatcher skips them,
                    // and a skipped pattern does not count as matched below.
                    if pattern.exception != matched {
                        current[i] = false;
                        continue;
                    }
                    let row = table[i].get_or_insert_with(|| pattern.match_prefixes(path, &ends));
                    hit = row[depth];
                }
                current[i] = hit;
                if hit {
                    matched = !pattern.exception;
                }
            }
            std::mem::swap(&mut parent, &mut current);
            current.resize(count, false);
        }
        matched
    }
}

/// Which ignore file applies for a build: `<dockerfile path>.dockerignore`
/// next to the Dockerfile if that file exists, else `<context>/.dockerignore`,
/// else none. Returns the path read and the parsed matcher.
///
/// An empty Dockerfile-specific file still wins (it excludes nothing). A
/// candidate that is a directory counts as absent, as BuildKit's failed read
/// does. Invalid UTF-8 is read lossily.
pub fn load_for_build(
    context_dir: &Path,
    dockerfile: &Path,
) -> Result<Option<(PathBuf, DockerIgnore)>> {
    let mut specific = OsString::from(dockerfile.as_os_str());
    specific.push(".dockerignore");
    for candidate in [PathBuf::from(specific), context_dir.join(DOCKERIGNORE)] {
        let Some(bytes) = read_if_present(&candidate)? else {
            continue;
        };
        let ignore = DockerIgnore::parse(&String::from_utf8_lossy(&bytes)).map_err(|source| {
            IgnoreError::File {
                path: candidate.clone(),
                source: Box::new(source),
            }
        })?;
        tracing::debug!(
            path = %candidate.display(),
            patterns = ignore.patterns.len(),
            "using ignore file"
        );
        return Ok(Some((candidate, ignore)));
    }
    Ok(None)
}

fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::IsADirectory
                    | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(IgnoreError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// One line of the file after `ignorefile.ReadAll`.
struct Line<'a> {
    number: usize,
    /// The line as written, trimmed, for error messages.
    text: &'a str,
    pattern: String,
}

/// `ignorefile.ReadAll`: strip a UTF-8 BOM, skip lines starting with `#` (in
/// column 1, before trimming), trim, skip blank lines, trim again after a
/// leading `!`, clean the path and drop one leading `/`.
fn read_all(text: &str) -> Vec<Line<'_>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.starts_with('#') {
            continue;
        }
        // Rust's and Go's notions of white space are both Unicode White_Space.
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        let (invert, rest) = match trimmed.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, trimmed),
        };
        let mut pattern = String::new();
        if invert {
            pattern.push('!');
        }
        if !rest.is_empty() {
            let cleaned = gopath::clean(rest);
            match cleaned.strip_prefix('/') {
                Some(relative) if !relative.is_empty() => pattern.push_str(relative),
                _ => pattern.push_str(&cleaned),
            }
        }
        lines.push(Line {
            number: index + 1,
            text: trimmed,
            pattern,
        });
    }
    lines
}

/// fsutil's `patternWithoutTrailingGlob`.
fn without_trailing_glob(pattern: &str) -> &str {
    let pattern = pattern.strip_suffix("/**").unwrap_or(pattern);
    pattern.strip_suffix("/*").unwrap_or(pattern)
}

#[derive(Debug, Clone)]
struct Pattern {
    /// As patternmatcher keeps it: cleaned, without the leading `!`.
    cleaned: String,
    exception: bool,
    matcher: Matcher,
}

/// patternmatcher's match types. Only `Regex` runs the rewritten expression.
#[derive(Debug, Clone)]
enum Matcher {
    /// No glob characters: the path must equal the pattern.
    Exact,
    /// `literal**`: the path must start with the pattern less its `**`.
    Prefix,
    /// A leading `**` and nothing after it that needs a regexp.
    Suffix,
    Regex {
        /// The Go regexp patternmatcher builds, kept for tests and debugging.
        #[cfg_attr(not(test), allow(dead_code))]
        source: String,
        program: goregex::Program,
    },
}

impl Pattern {
    /// `patternmatcher.New` for one line: `None` for a line that is blank
    /// after trimming.
    fn new(line: &str) -> std::result::Result<Option<Self>, String> {
        let line = line.trim();
        if line.is_empty() {
            return Ok(None);
        }
        let cleaned = gopath::clean(line);
        let (exception, cleaned) = match cleaned.strip_prefix('!') {
            Some("") => return Err("`!` must be followed by a pattern".to_owned()),
            Some(rest) => (true, rest.to_owned()),
            None => (false, cleaned),
        };
        check_glob_syntax(&cleaned)?;
        let matcher = translate(&cleaned)?;
        Ok(Some(Self {
            cleaned,
            exception,
            matcher,
        }))
    }

    /// Whether this pattern matches `path[..end]`, for each of `ends`
    /// (ascending byte offsets at char boundaries of `path`).
    fn match_prefixes(&self, path: &str, ends: &[usize]) -> Vec<bool> {
        let pattern = self.cleaned.as_bytes();
        let bytes = path.as_bytes();
        match &self.matcher {
            Matcher::Exact => ends.iter().map(|&end| &bytes[..end] == pattern).collect(),
            Matcher::Prefix => {
                // Go slices bytes here; so do we.
                let prefix = &pattern[..pattern.len().saturating_sub(2)];
                ends.iter()
                    .map(|&end| bytes[..end].starts_with(prefix))
                    .collect()
            }
            Matcher::Suffix => {
                let suffix = pattern.get(2..).unwrap_or_default();
                ends.iter()
                    .map(|&end| {
                        let head = &bytes[..end];
                        // `**/foo` also matches `foo` itself.
                        head.ends_with(suffix)
                            || suffix
                                .split_first()
                                .is_some_and(|(first, rest)| *first == b'/' && head == rest)
                    })
                    .collect()
            }
            Matcher::Regex { program, .. } => program.match_prefixes(path, ends),
        }
    }
}

/// The syntax check Go's `filepath.Match(pattern, ".")` performs (on Unix),
/// which patternmatcher runs on every pattern: every chunk between unbracketed
/// stars is checked, whatever the match result.
fn check_glob_syntax(pattern: &str) -> std::result::Result<(), String> {
    let mut rest = pattern.as_bytes();
    while !rest.is_empty() {
        while let [b'*', tail @ ..] = rest {
            rest = tail;
        }
        // scanChunk: up to the next star outside brackets.
        let mut in_range = false;
        let mut i = 0;
        while i < rest.len() {
            match rest[i] {
                b'\\' if i + 1 < rest.len() => i += 1,
                b'[' => in_range = true,
                b']' => in_range = false,
                b'*' if !in_range => break,
                _ => {}
            }
            i += 1;
        }
        let (chunk, tail) = rest.split_at(i);
        check_chunk(chunk)?;
        rest = tail;
    }
    Ok(())
}

/// The error half of Go's `matchChunk`.
fn check_chunk(mut chunk: &[u8]) -> std::result::Result<(), String> {
    while let Some((&first, tail)) = chunk.split_first() {
        chunk = tail;
        match first {
            b'[' => {
                if let [b'^', tail @ ..] = chunk {
                    chunk = tail;
                }
                let mut ranges = 0;
                loop {
                    if let [b']', tail @ ..] = chunk {
                        if ranges > 0 {
                            chunk = tail;
                            break;
                        }
                    }
                    chunk = class_escape(chunk)?;
                    if let [b'-', tail @ ..] = chunk {
                        chunk = class_escape(tail)?;
                    }
                    ranges += 1;
                }
            }
            b'\\' => match chunk.split_first() {
                Some((_, tail)) => chunk = tail,
                None => return Err("trailing backslash".to_owned()),
            },
            _ => {}
        }
    }
    Ok(())
}

/// Go's `getEsc`: one (possibly escaped) character of a bracket expression,
/// which must not be the last thing in the pattern.
fn class_escape(chunk: &[u8]) -> std::result::Result<&[u8], String> {
    let mut chunk = match chunk.first() {
        None => return Err("unterminated character class".to_owned()),
        Some(b'-' | b']') => return Err("bad range in character class".to_owned()),
        Some(_) => chunk,
    };
    if let [b'\\', tail @ ..] = chunk {
        if tail.is_empty() {
            return Err("unterminated character class".to_owned());
        }
        chunk = tail;
    }
    let width = match chunk[0] {
        0..0x80 => 1,
        0x80..0xe0 => 2,
        0xe0..0xf0 => 3,
        _ => 4,
    };
    let rest = &chunk[width.min(chunk.len())..];
    if rest.is_empty() {
        return Err("unterminated character class".to_owned());
    }
    Ok(rest)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

/// patternmatcher's `compile`: rewrite the glob into a Go regexp, one
/// character at a time and blind to brackets, and decide the match type.
fn translate(pattern: &str) -> std::result::Result<Matcher, String> {
    // Go's text/scanner drops a BOM at the very start.
    let body = pattern.strip_prefix('\u{feff}').unwrap_or(pattern);
    let mut chars = body.chars().peekable();
    let mut source = String::from("^");
    let mut kind = Kind::Exact;
    let mut first = true;
    while let Some(ch) = chars.next() {
        match ch {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // `**/` counts as `**`.
                chars.next_if_eq(&'/');
                if chars.peek().is_none() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        source.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    // Any number of directories, including none.
                    source.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                source.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                source.push_str("[^/]");
                kind = Kind::Regex;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                source.push('\\');
                source.push(ch);
            }
            '\\' => {
                source.push('\\');
                if let Some(next) = chars.next() {
                    source.push(next);
                    kind = Kind::Regex;
                }
            }
            '[' | ']' => {
                source.push(ch);
                kind = Kind::Regex;
            }
            _ => source.push(ch),
        }
        first = false;
    }
    Ok(match kind {
        Kind::Exact => Matcher::Exact,
        Kind::Prefix => Matcher::Prefix,
        Kind::Suffix => Matcher::Suffix,
        Kind::Regex => {
            source.push('$');
            let program = goregex::Program::new(&source)?;
            Matcher::Regex { source, program }
        }
    })
}

#[cfg(test)]
mod tests;
