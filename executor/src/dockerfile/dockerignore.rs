//! `.dockerignore`: which ignore file applies to a build, how its lines become
//! patterns, and whether a context-relative path is excluded. It reproduces
//! what Docker's BuildKit client does (moby/patternmatcher's `ignorefile` and
//! `patternmatcher`, driven by tonistiigi/fsutil's walker); it must not walk
//! the context itself or read any file but the ignore file. It is hand-written
//! because no crate has Docker's exact matcher semantics: Docker rewrites each
//! glob character by character into a Go regular expression, and the quirks of
//! that rewrite and of Go's regexp syntax (escapes such as `\d`, POSIX classes,
//! `\Q`, a `*` inside `[...]`) are part of what users see. So this module
//! carries the rewrite, a parser for the Go regexp syntax the rewrite can
//! produce, and a Pike VM to run it in time linear in the path length.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

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
        let cleaned = clean(path);
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
        let cleaned = clean(dir);
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
            let cleaned = clean(rest);
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

/// Go's `filepath.Clean` on Unix.
fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_owned()
    } else {
        joined
    }
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
        let cleaned = clean(line);
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

/// The part of Go's regexp syntax (Perl flags, as `regexp.Compile` uses) that
/// patternmatcher's rewrite can produce, and a Pike VM to run it. `.` does not
/// match `\n`; negated classes do; `^`/`$` are text anchors; `\b` is ASCII.
mod goregex {
    use regex_syntax::hir::{Class, HirKind};

    const MAX_RUNE: u32 = 0x0010_FFFF;
    /// Go's limit on nesting.
    const MAX_HEIGHT: usize = 1000;

    type Ranges = Vec<(u32, u32)>;
    type Parsed<'a, T> = Result<(T, &'a str), String>;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Look {
        Begin,
        End,
        WordBoundary,
        NotWordBoundary,
    }

    #[derive(Debug, Clone, Copy)]
    enum Rep {
        Star,
        Plus,
        Quest,
    }

    #[derive(Debug)]
    enum Node {
        /// A rune; may be a surrogate from `\x{d800}`, which matches nothing.
        Lit(u32),
        Class(Ranges),
        AnyNotNl,
        Look(Look),
        Concat(Vec<Node>, usize),
        Repeat(Rep, Box<Node>, usize),
    }

    impl Node {
        fn height(&self) -> usize {
            match self {
                Node::Concat(_, height) | Node::Repeat(_, _, height) => *height,
                _ => 1,
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Inst {
        Match,
        Char(u32, usize),
        Class(Box<[(u32, u32)]>, usize),
        AnyNotNl(usize),
        Split(usize, usize),
        Look(Look, usize),
    }

    /// A compiled expression. Instruction 0 is `Match`.
    #[derive(Debug, Clone)]
    pub(super) struct Program {
        insts: Vec<Inst>,
        start: usize,
    }

    impl Program {
        pub(super) fn new(source: &str) -> Result<Self, String> {
            let mut parser = Parser {
                rest: source,
                depth: 0,
            };
            let node = parser.concat()?;
            if !parser.rest.is_empty() {
                return Err("unexpected ) in expression".to_owned());
            }
            let mut insts = vec![Inst::Match];
            let start = emit(node, &mut insts, 0);
            Ok(Self { insts, start })
        }

        /// Go's `MatchString` (an unanchored search) on `text[..end]` for
        /// each of `ends`, in one pass over `text`.
        pub(super) fn match_prefixes(&self, text: &str, ends: &[usize]) -> Vec<bool> {
            let mut out = vec![false; ends.len()];
            let mut set = StateSet::new(self.insts.len());
            let mut stack = Vec::new();
            let mut seeds: Vec<usize> = Vec::new();
            let mut next_seeds: Vec<usize> = Vec::new();
            let mut prev = None;
            let mut pos = 0;
            let mut end_index = 0;
            while end_index < ends.len() {
                let next = text[pos..].chars().next();
                while end_index < ends.len() && ends[end_index] == pos {
                    // As if the text stopped here.
                    self.closure(
                        &mut set,
                        &mut stack,
                        &seeds,
                        Context {
                            pos,
                            prev,
                            next: None,
                        },
                    );
                    out[end_index] = set.contains(0);
                    end_index += 1;
                }
                let Some(c) = next else { break };
                self.closure(
                    &mut set,
                    &mut stack,
                    &seeds,
                    Context {
                        pos,
                        prev,
                        next: Some(c),
                    },
                );
                if set.contains(0) {
                    // A match that ends here is inside every longer prefix.
                    out[end_index..].fill(true);
                    break;
                }
                next_seeds.clear();
                let rune = u32::from(c);
                for &state in &set.dense {
                    match &self.insts[state] {
                        Inst::Char(r, next) if *r == rune => next_seeds.push(*next),
                        Inst::Class(ranges, next) if contains(ranges, rune) => {
                            next_seeds.push(*next);
                        }
                        Inst::AnyNotNl(next) if c != '\n' => next_seeds.push(*next),
                        _ => {}
                    }
                }
                std::mem::swap(&mut seeds, &mut next_seeds);
                prev = Some(c);
                pos += c.len_utf8();
            }
            out
        }

        /// The states reachable from `seeds` and a fresh thread at the start
        /// without consuming input, given what surrounds the position.
        fn closure(
            &self,
            set: &mut StateSet,
            stack: &mut Vec<usize>,
            seeds: &[usize],
            at: Context,
        ) {
            set.clear();
            for &seed in seeds.iter().chain(std::iter::once(&self.start)) {
                stack.push(seed);
                while let Some(state) = stack.pop() {
                    if !set.insert(state) {
                        continue;
                    }
                    match self.insts[state] {
                        Inst::Split(a, b) => {
                            stack.push(b);
                            stack.push(a);
                        }
                        Inst::Look(look, next) if at.holds(look) => stack.push(next),
                        _ => {}
                    }
                }
            }
        }
    }

    #[derive(Clone, Copy)]
    struct Context {
        pos: usize,
        prev: Option<char>,
        next: Option<char>,
    }

    impl Context {
        fn holds(self, look: Look) -> bool {
            let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            match look {
                Look::Begin => self.pos == 0,
                Look::End => self.next.is_none(),
                Look::WordBoundary => word(self.prev) != word(self.next),
                Look::NotWordBoundary => word(self.prev) == word(self.next),
            }
        }
    }

    /// A sparse set of states: O(1) insert, membership and clear.
    struct StateSet {
        dense: Vec<usize>,
        sparse: Vec<usize>,
    }

    impl StateSet {
        fn new(size: usize) -> Self {
            Self {
                dense: Vec::with_capacity(size),
                sparse: vec![0; size],
            }
        }

        fn contains(&self, state: usize) -> bool {
            self.dense.get(self.sparse[state]) == Some(&state)
        }

        fn insert(&mut self, state: usize) -> bool {
            if self.contains(state) {
                return false;
            }
            self.sparse[state] = self.dense.len();
            self.dense.push(state);
            true
        }

        fn clear(&mut self) {
            self.dense.clear();
        }
    }

    fn contains(ranges: &[(u32, u32)], rune: u32) -> bool {
        let i = ranges.partition_point(|&(_, hi)| hi < rune);
        ranges.get(i).is_some_and(|&(lo, _)| lo <= rune)
    }

    /// Emit `node` followed by `next`; returns its entry state.
    fn emit(node: Node, insts: &mut Vec<Inst>, next: usize) -> usize {
        fn push(insts: &mut Vec<Inst>, inst: Inst) -> usize {
            insts.push(inst);
            insts.len() - 1
        }
        match node {
            Node::Lit(rune) => push(insts, Inst::Char(rune, next)),
            Node::Class(ranges) => push(insts, Inst::Class(ranges.into_boxed_slice(), next)),
            Node::AnyNotNl => push(insts, Inst::AnyNotNl(next)),
            Node::Look(look) => push(insts, Inst::Look(look, next)),
            Node::Concat(items, _) => items
                .into_iter()
                .rev()
                .fold(next, |next, item| emit(item, insts, next)),
            Node::Repeat(Rep::Quest, sub, _) => {
                let body = emit(*sub, insts, next);
                push(insts, Inst::Split(body, next))
            }
            Node::Repeat(rep, sub, _) => {
                let split = push(insts, Inst::Split(0, next));
                let body = emit(*sub, insts, split);
                insts[split] = Inst::Split(body, next);
                if matches!(rep, Rep::Plus) {
                    body
                } else {
                    split
                }
            }
        }
    }

    struct Parser<'a> {
        rest: &'a str,
        depth: usize,
    }

    impl<'a> Parser<'a> {
        /// A sequence, up to the end or an unmatched `)`.
        fn concat(&mut self) -> Result<Node, String> {
            let mut items: Vec<Node> = Vec::new();
            let mut last_repeat = false;
            while let Some(c) = self.rest.chars().next() {
                let mut repeat = false;
                match c {
                    ')' => break,
                    '(' => {
                        if self.rest[1..].starts_with('?') {
                            return Err("unsupported group flags in expression".to_owned());
                        }
                        if self.depth >= MAX_HEIGHT {
                            return Err("expression nests too deeply".to_owned());
                        }
                        self.rest = &self.rest[1..];
                        self.depth += 1;
                        let group = self.concat()?;
                        self.depth -= 1;
                        self.rest = self
                            .rest
                            .strip_prefix(')')
                            .ok_or_else(|| "missing closing ) in expression".to_owned())?;
                        items.push(group);
                    }
                    '|' | '{' => {
                        return Err(format!("unsupported operator {c:?} in expression"));
                    }
                    '*' | '+' | '?' => {
                        let rep = match c {
                            '*' => Rep::Star,
                            '+' => Rep::Plus,
                            _ => Rep::Quest,
                        };
                        self.rest = &self.rest[1..];
                        // Non-greedy: the same set of matches.
                        self.rest = self.rest.strip_prefix('?').unwrap_or(self.rest);
                        if last_repeat {
                            return Err("invalid nested repetition operator".to_owned());
                        }
                        let sub = items
                            .pop()
                            .ok_or_else(|| "missing argument to repetition operator".to_owned())?;
                        let height = sub.height() + 1;
                        if height > MAX_HEIGHT {
                            return Err("expression nests too deeply".to_owned());
                        }
                        items.push(Node::Repeat(rep, Box::new(sub), height));
                        repeat = true;
                    }
                    '[' => {
                        let (ranges, rest) = class(self.rest)?;
                        self.rest = rest;
                        items.push(Node::Class(ranges));
                    }
                    '.' | '^' | '$' => {
                        self.rest = &self.rest[1..];
                        items.push(match c {
                            '.' => Node::AnyNotNl,
                            '^' => Node::Look(Look::Begin),
                            _ => Node::Look(Look::End),
                        });
                    }
                    '\\' => self.escape(&mut items)?,
                    _ => {
                        self.rest = &self.rest[c.len_utf8()..];
                        items.push(Node::Lit(u32::from(c)));
                    }
                }
                last_repeat = repeat;
            }
            let height = 1 + items.iter().map(Node::height).max().unwrap_or(0);
            if height > MAX_HEIGHT {
                return Err("expression nests too deeply".to_owned());
            }
            Ok(Node::Concat(items, height))
        }

        /// A backslash sequence outside brackets.
        fn escape(&mut self, items: &mut Vec<Node>) -> Result<(), String> {
            let t: &'a str = self.rest;
            let look = match t[1..].chars().next() {
                Some('A') => Some(Look::Begin),
                Some('z') => Some(Look::End),
                Some('b') => Some(Look::WordBoundary),
                Some('B') => Some(Look::NotWordBoundary),
                Some('C') => return Err("invalid escape sequence `\\C`".to_owned()),
                Some('Q') => {
                    // Literal text up to `\E` or the end of the expression.
                    let (literal, rest) = t[2..].split_once("\\E").unwrap_or((&t[2..], ""));
                    items.extend(literal.chars().map(|c| Node::Lit(u32::from(c))));
                    self.rest = rest;
                    return Ok(());
                }
                Some('p' | 'P') => {
                    let (ranges, rest) = unicode_class(t)?;
                    items.push(Node::Class(ranges));
                    self.rest = rest;
                    return Ok(());
                }
                _ => None,
            };
            if let Some(look) = look {
                self.rest = &t[2..];
                items.push(Node::Look(look));
            } else if let Some(ranges) = perl_class(t) {
                self.rest = &t[2..];
                items.push(Node::Class(ranges));
            } else {
                let (rune, rest) = parse_escape(t)?;
                self.rest = rest;
                items.push(Node::Lit(rune));
            }
            Ok(())
        }
    }

    /// Go's `parseClass`; `s` starts with `[`.
    fn class(s: &str) -> Parsed<'_, Ranges> {
        let mut t = &s[1..];
        let negated = t.starts_with('^');
        if negated {
            t = &t[1..];
        }
        let mut ranges = Vec::new();
        let mut first = true;
        // `]` right after `[` or `[^` is a literal.
        while t.is_empty() || !t.starts_with(']') || first {
            first = false;
            if t.len() > 2 && t.starts_with("[:") {
                if let Some(i) = t[2..].find(":]") {
                    let name = &t[..i + 4];
                    let group = posix_class(name)
                        .ok_or_else(|| format!("invalid character class range `{name}`"))?;
                    ranges.extend(group);
                    t = &t[i + 4..];
                    continue;
                }
            }
            if t.starts_with("\\p") || t.starts_with("\\P") {
                let (group, rest) = unicode_class(t)?;
                ranges.extend(group);
                t = rest;
                continue;
            }
            if let Some(group) = perl_class(t) {
                ranges.extend(group);
                t = &t[2..];
                continue;
            }
            let (lo, rest) = class_char(t)?;
            t = rest;
            let mut hi = lo;
            // `[a-]` is `a` or `-`.
            if t.len() >= 2 && t.starts_with('-') && !t[1..].starts_with(']') {
                let (end, rest) = class_char(&t[1..])?;
                if end < lo {
                    return Err("invalid character class range".to_owned());
                }
                hi = end;
                t = rest;
            }
            ranges.push((lo, hi));
        }
        let ranges = normalize(ranges);
        Ok((if negated { negate(&ranges) } else { ranges }, &t[1..]))
    }

    fn class_char(t: &str) -> Parsed<'_, u32> {
        match t.chars().next() {
            None => Err("missing closing ] in expression".to_owned()),
            Some('\\') => parse_escape(t),
            Some(c) => Ok((u32::from(c), &t[c.len_utf8()..])),
        }
    }

    /// Go's `parseEscape`; `s` starts with `\`.
    fn parse_escape(s: &str) -> Parsed<'_, u32> {
        let invalid = || {
            format!(
                "invalid escape sequence `{}`",
                s.chars().take(2).collect::<String>()
            )
        };
        let t = &s[1..];
        let Some(c) = t.chars().next() else {
            return Err("trailing backslash at end of expression".to_owned());
        };
        let mut t = &t[c.len_utf8()..];
        let octal = |t: &str| t.bytes().next().filter(|b| (b'0'..=b'7').contains(b));
        match c {
            // A lone ``..`` would be a backreference, which Go rejects.
            '0'..='7' if c == '0' || octal(t).is_some() => {
                let mut rune = u32::from(c) - u32::from('0');
                for _ in 0..2 {
                    let Some(digit) = octal(t) else { break };
                    rune = rune * 8 + u32::from(digit - b'0');
                    t = &t[1..];
                }
                Ok((rune, t))
            }
            'x' => {
                let mut chars = t.chars();
                match chars.next() {
                    Some('{') => {
                        let mut rune: u32 = 0;
                        let mut digits = 0;
                        loop {
                            match chars.next() {
                                Some('}') if digits > 0 => break,
                                Some(d) => {
                                    let value = d.to_digit(16).ok_or_else(invalid)?;
                                    rune = rune * 16 + value;
                                    if rune > MAX_RUNE {
                                        return Err(invalid());
                                    }
                                    digits += 1;
                                }
                                None => return Err(invalid()),
                            }
                        }
                        Ok((rune, chars.as_str()))
                    }
                    Some(hi) => {
                        let lo = chars.next().ok_or_else(invalid)?;
                        let value = hi.to_digit(16).zip(lo.to_digit(16)).ok_or_else(invalid)?;
                        Ok((value.0 * 16 + value.1, chars.as_str()))
                    }
                    None => Err(invalid()),
                }
            }
            'a' => Ok((7, t)),
            'f' => Ok((12, t)),
            'n' => Ok((10, t)),
            'r' => Ok((13, t)),
            't' => Ok((9, t)),
            'v' => Ok((11, t)),
            // Escaped punctuation is itself.
            c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok((u32::from(c), t)),
            _ => Err(invalid()),
        }
    }

    /// `\d \D \s \S \w \W`.
    fn perl_class(t: &str) -> Option<Ranges> {
        let rest = t.strip_prefix('\\')?;
        let ranges: &[(u8, u8)] = match rest.as_bytes().first()?.to_ascii_lowercase() {
            b'd' => &[(b'0', b'9')],
            b's' => &[(b'\t', b'\n'), (b'\x0c', b'\r'), (b' ', b' ')],
            b'w' => &[(b'0', b'9'), (b'A', b'Z'), (b'_', b'_'), (b'a', b'z')],
            _ => return None,
        };
        let ranges = widen(ranges);
        Some(if rest.as_bytes()[0].is_ascii_uppercase() {
            negate(&ranges)
        } else {
            ranges
        })
    }

    /// `[:alpha:]` and friends, `[:^alpha:]` for the complement.
    fn posix_class(name: &str) -> Option<Ranges> {
        let inner = name.strip_prefix("[:")?.strip_suffix(":]")?;
        let (negated, inner) = match inner.strip_prefix('^') {
            Some(rest) => (true, rest),
            None => (false, inner),
        };
        let ranges: &[(u8, u8)] = match inner {
            "alnum" => &[(b'0', b'9'), (b'A', b'Z'), (b'a', b'z')],
            "alpha" => &[(b'A', b'Z'), (b'a', b'z')],
            "ascii" => &[(0, 0x7f)],
            "blank" => &[(b'\t', b'\t'), (b' ', b' ')],
            "cntrl" => &[(0, 0x1f), (0x7f, 0x7f)],
            "digit" => &[(b'0', b'9')],
            "graph" => &[(b'!', b'~')],
            "lower" => &[(b'a', b'z')],
            "print" => &[(b' ', b'~')],
            "punct" => &[(b'!', b'/'), (b':', b'@'), (b'[', b'`'), (b'{', b'~')],
            "space" => &[(b'\t', b'\r'), (b' ', b' ')],
            "upper" => &[(b'A', b'Z')],
            "word" => &[(b'0', b'9'), (b'A', b'Z'), (b'_', b'_'), (b'a', b'z')],
            "xdigit" => &[(b'0', b'9'), (b'A', b'F'), (b'a', b'f')],
            _ => return None,
        };
        let ranges = widen(ranges);
        Some(if negated { negate(&ranges) } else { ranges })
    }

    /// `\pL`, `\p{Greek}`, `\PL`, `\p{^Greek}`; `s` starts with `\p` or `\P`.
    fn unicode_class(s: &str) -> Parsed<'_, Ranges> {
        let mut negated = s.as_bytes()[1] == b'P';
        let t = &s[2..];
        let bad = |seq: &str| format!("invalid character class range `{seq}`");
        let (name, rest) = match t.chars().next() {
            None => return Err(bad(s)),
            Some('{') => {
                let end = s.find('}').ok_or_else(|| bad(s))?;
                (&s[3..end], &s[end + 1..])
            }
            Some(c) => t.split_at(c.len_utf8()),
        };
        let name = match name.strip_prefix('^') {
            Some(rest) => {
                negated = !negated;
                rest
            }
            None => name,
        };
        let seq = &s[..s.len() - rest.len()];
        let ranges = unicode_table(name).ok_or_else(|| bad(seq))?;
        Ok((if negated { negate(&ranges) } else { ranges }, rest))
    }

    /// The code points of a Unicode general category or script, from
    /// regex-syntax's tables.
    fn unicode_table(name: &str) -> Option<Ranges> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return None;
        }
        let hir = regex_syntax::ParserBuilder::new()
            .build()
            .parse(&format!("\\p{{{name}}}"))
            .ok()?;
        match hir.kind() {
            HirKind::Class(Class::Unicode(class)) => Some(
                class
                    .ranges()
                    .iter()
                    .map(|r| (u32::from(r.start()), u32::from(r.end())))
                    .collect(),
            ),
            HirKind::Class(Class::Bytes(class)) if class.ranges().is_empty() => Some(Vec::new()),
            HirKind::Literal(literal) => {
                let text = std::str::from_utf8(&literal.0).ok()?;
                let mut chars = text.chars();
                let c = u32::from(chars.next()?);
                chars.next().is_none().then_some(vec![(c, c)])
            }
            _ => None,
        }
    }

    fn widen(ranges: &[(u8, u8)]) -> Ranges {
        ranges
            .iter()
            .map(|&(lo, hi)| (u32::from(lo), u32::from(hi)))
            .collect()
    }

    /// Sorted, with overlapping and adjacent ranges merged.
    fn normalize(mut ranges: Ranges) -> Ranges {
        ranges.sort_unstable();
        let mut out: Ranges = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match out.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        out
    }

    fn negate(ranges: &[(u32, u32)]) -> Ranges {
        let mut out = Vec::with_capacity(ranges.len() + 1);
        let mut next = 0;
        for &(lo, hi) in &normalize(ranges.to_vec()) {
            if lo > next {
                out.push((next, lo - 1));
            }
            next = hi.saturating_add(1);
        }
        if next <= MAX_RUNE {
            out.push((next, MAX_RUNE));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (lines of the ignore file, path, excluded?)
    type Case = (&'static [&'static str], &'static str, bool);

    fn ignore(lines: &[&str]) -> DockerIgnore {
        DockerIgnore::parse(&lines.join("\n")).unwrap_or_else(|e| panic!("{lines:?}: {e}"))
    }

    fn check(cases: &[Case], excluded: impl Fn(&DockerIgnore, &str) -> bool) {
        let failures: Vec<String> = cases
            .iter()
            .filter_map(|&(lines, path, want)| {
                let got = excluded(&ignore(lines), path);
                (got != want).then(|| format!("{lines:?} on {path:?}: excluded {got}, want {want}"))
            })
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    // The examples of the ".dockerignore files" section of Docker's build
    // context reference (docker/docs, content/manuals/build/concepts/context.md).
    const DOCS: &[Case] = &[
        (
            &["# comment", "*/temp*", "*/*/temp*", "temp?"],
            "somedir/temporary.txt",
            true,
        ),
        (
            &["# comment", "*/temp*", "*/*/temp*", "temp?"],
            "somedir/temp",
            true,
        ),
        (
            &["# comment", "*/temp*", "*/*/temp*", "temp?"],
            "somedir/temp/inside",
            true,
        ),
        (
            &["# comment", "*/temp*", "*/*/temp*", "temp?"],
            "somedir/subdir/temporary.txt",
            true,
        ),
        (
            &["# comment", "*/temp*", "*/*/temp*", "temp?"],
            "tempa",
            true,
        ),
        (
            &["# comment", "*/temp*", "*/*/temp*", "temp?"],
            "tempb",
            true,
        ),
        (
            &["# comment", "*/temp*", "*/*/temp*", "temp?"],
            "temp",
            false,
        ),
        (
            &["# comment", "*/temp*", "*/*/temp*", "temp?"],
            "tempab",
            false,
        ),
        (
            &["# comment", "*/temp*", "*/*/temp*", "temp?"],
            "temporary.txt",
            false,
        ),
        (
            &["# comment", "*/temp*", "*/*/temp*", "temp?"],
            "a/b/c/temp",
            false,
        ),
        (
            &["# comment", "*/temp*", "*/*/temp*", "temp?"],
            "# comment",
            false,
        ),
        (&["#/this/is/a/comment"], "this/is/a/comment", false),
        (&["/foo/bar/"], "foo/bar", true),
        (&["/foo/bar"], "foo/bar", true),
        (&["foo/bar/"], "foo/bar", true),
        (&["foo/bar"], "foo/bar", true),
        (&["foo/bar"], "foo/bar/baz", true),
        (&["foo/bar"], "foo", false),
        (&["foo/bar"], "bar", false),
        (&["foo/bar"], "x/foo/bar", false),
        // "For historical reasons, the pattern `.` is ignored."
        (&["."], "file", false),
        (&["."], "dir/file", false),
        (&["**/*.go"], "main.go", true),
        (&["**/*.go"], "a/b/main.go", true),
        (&["**/*.go"], "main.go.txt", false),
        (&["*.md", "!README.md"], "CHANGES.md", true),
        (&["*.md", "!README.md"], "README.md", false),
        (&["*.md", "!README.md"], "docs/guide.md", false),
        (
            &["*.md", "!README*.md", "README-secret.md"],
            "README-secret.md",
            true,
        ),
        (
            &["*.md", "!README*.md", "README-secret.md"],
            "README-public.md",
            false,
        ),
        (
            &["*.md", "!README*.md", "README-secret.md"],
            "CHANGES.md",
            true,
        ),
        (
            &["*.md", "README-secret.md", "!README*.md"],
            "README-secret.md",
            false,
        ),
        (
            &["*.md", "README-secret.md", "!README*.md"],
            "CHANGES.md",
            true,
        ),
        // "specify which files to include": `*` then exceptions.
        (&["*", "!src", "!go.mod"], "src/main.go", false),
        (&["*", "!src", "!go.mod"], "go.mod", false),
        (&["*", "!src", "!go.mod"], "vendor/x/y.go", true),
        (&["*", "!src", "!go.mod"], "Makefile", true),
    ];

    #[test]
    fn docs_examples() {
        check(DOCS, DockerIgnore::is_excluded);
    }

    // moby/patternmatcher patternmatcher_test.go, TestMatches: each pattern
    // alone, checked the way its MatchesUsingParentResults subtest walks the
    // text (every leading part, no cleaning).
    const PATTERNMATCHER: &[(&str, &str, bool)] = &[
        ("**", "file", true),
        ("**", "file/", true),
        ("**/", "file", true),
        ("**/", "file/", true),
        ("**", "/", true),
        ("**/", "/", true),
        ("**", "dir/file", true),
        ("**/", "dir/file", true),
        ("**", "dir/file/", true),
        ("**/", "dir/file/", true),
        ("**/**", "dir/file", true),
        ("**/**", "dir/file/", true),
        ("dir/**", "dir/file", true),
        ("dir/**", "dir/file/", true),
        ("dir/**", "dir/dir2/file", true),
        ("dir/**", "dir/dir2/file/", true),
        ("**/dir", "dir", true),
        ("**/dir", "dir/file", true),
        ("**/dir2/*", "dir/dir2/file", true),
        ("**/dir2/*", "dir/dir2/file/", true),
        ("**/dir2/**", "dir/dir2/dir3/file", true),
        ("**/dir2/**", "dir/dir2/dir3/file/", true),
        ("**file", "file", true),
        ("**file", "dir/file", true),
        ("**/file", "dir/file", true),
        ("**file", "dir/dir/file", true),
        ("**/file", "dir/dir/file", true),
        ("**/file*", "dir/dir/file", true),
        ("**/file*", "dir/dir/file.txt", true),
        ("**/file*txt", "dir/dir/file.txt", true),
        ("**/file*.txt", "dir/dir/file.txt", true),
        ("**/file*.txt*", "dir/dir/file.txt", true),
        ("**/**/*.txt", "dir/dir/file.txt", true),
        ("**/**/*.txt2", "dir/dir/file.txt", false),
        ("**/*.txt", "file.txt", true),
        ("**/**/*.txt", "file.txt", true),
        ("a**/*.txt", "a/file.txt", true),
        ("a**/*.txt", "a/dir/file.txt", true),
        ("a**/*.txt", "a/dir/dir/file.txt", true),
        ("a/*.txt", "a/dir/file.txt", false),
        ("a/*.txt", "a/file.txt", true),
        ("a/*.txt**", "a/file.txt", true),
        ("a[b-d]e", "ae", false),
        ("a[b-d]e", "ace", true),
        ("a[b-d]e", "aae", false),
        ("a[^b-d]e", "aze", true),
        (".*", ".foo", true),
        (".*", "foo", false),
        ("abc.def", "abcdef", false),
        ("abc.def", "abc.def", true),
        ("abc.def", "abcZdef", false),
        ("abc?def", "abcZdef", true),
        ("abc?def", "abcdef", false),
        ("a\\\\", "a\\", true),
        ("**/foo/bar", "foo/bar", true),
        ("**/foo/bar", "dir/foo/bar", true),
        ("**/foo/bar", "dir/dir2/foo/bar", true),
        ("abc/**", "abc", false),
        ("abc/**", "abc/def", true),
        ("abc/**", "abc/def/ghi", true),
        ("**/.foo", ".foo", true),
        ("**/.foo", "bar.foo", false),
        ("a(b)c/def", "a(b)c/def", true),
        ("a(b)c/def", "a(b)c/xyz", false),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
        (
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            true,
        ),
        (
            "dist/*.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            true,
        ),
        ("a\\*b", "a*b", true),
    ];

    // The same file's multiPatternTests.
    const PATTERNMATCHER_MULTI: &[Case] = &[
        (&["**", "!util/docker/web"], "util/docker/web/foo", false),
        (
            &["**", "!util/docker/web", "util/docker/web/foo"],
            "util/docker/web/foo",
            true,
        ),
        (
            &[
                "**",
                "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            ],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            false,
        ),
        (
            &["**", "!dist/*.whl"],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            false,
        ),
        // TestPatternMatches*, TestExclusionPatternMatches*.
        (&["*"], "fileutils.go", true),
        (&["*.go"], "fileutils.go", true),
        (&["!fileutils.go", "*.go"], "fileutils.go", true),
        (&["docs", "!docs/README.md"], "docs/README.md", false),
        (&["docs/", "!docs/README.md"], "docs/README.md", false),
        (&["docs/*", "!docs/README.md"], "docs/README.md", false),
        (&["*.go", "!fileutils.go"], "fileutils.go", false),
        (&["*.go"], ".", false),
        (&[], "any/path/there", false),
    ];

    #[test]
    fn patternmatcher_matches() {
        let single: Vec<Case> = PATTERNMATCHER
            .iter()
            .map(|&(pattern, text, want)| {
                let lines: &'static [&'static str] = Box::leak(Box::new([pattern]));
                (lines, text, want)
            })
            .collect();
        check(&single, DockerIgnore::excluded_raw);
        check(PATTERNMATCHER_MULTI, DockerIgnore::is_excluded);
    }

    // patternmatcher_test.go's matchTests, "stolen from go's filepath Match
    // tests": (pattern, path, excluded), or a syntax error when `None`.
    const FILEPATH_MATCH: &[(&str, &str, Option<bool>)] = &[
        ("abc", "abc", Some(true)),
        ("*", "abc", Some(true)),
        ("*c", "abc", Some(true)),
        ("a*", "a", Some(true)),
        ("a*", "abc", Some(true)),
        ("a*", "ab/c", Some(true)),
        ("a*/b", "abc/b", Some(true)),
        ("a*/b", "a/c/b", Some(false)),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", Some(true)),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Some(true)),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Some(false)),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Some(false)),
        ("a*b?c*x", "abxbbxdbxebxczzx", Some(true)),
        ("a*b?c*x", "abxbbxdbxebxczzy", Some(false)),
        ("ab[c]", "abc", Some(true)),
        ("ab[b-d]", "abc", Some(true)),
        ("ab[e-g]", "abc", Some(false)),
        ("ab[^c]", "abc", Some(false)),
        ("ab[^b-d]", "abc", Some(false)),
        ("ab[^e-g]", "abc", Some(true)),
        ("a\\*b", "a*b", Some(true)),
        ("a\\*b", "ab", Some(false)),
        ("a?b", "a☺b", Some(true)),
        ("a[^a]b", "a☺b", Some(true)),
        ("a???b", "a☺b", Some(false)),
        ("a[^a][^a][^a]b", "a☺b", Some(false)),
        ("[a-ζ]*", "α", Some(true)),
        ("*[a-ζ]", "A", Some(false)),
        ("a?b", "a/b", Some(false)),
        ("a*b", "a/b", Some(false)),
        ("[\\]a]", "]", Some(true)),
        ("[\\-]", "-", Some(true)),
        ("[x\\-]", "x", Some(true)),
        ("[x\\-]", "-", Some(true)),
        ("[x\\-]", "z", Some(false)),
        ("[\\-x]", "x", Some(true)),
        ("[\\-x]", "-", Some(true)),
        ("[\\-x]", "a", Some(false)),
        ("[]a]", "]", None),
        ("[-]", "-", None),
        ("[x-]", "x", None),
        ("[x-]", "-", None),
        ("[x-]", "z", None),
        ("[-x]", "x", None),
        ("[-x]", "-", None),
        ("[-x]", "a", None),
        ("\\", "a", None),
        ("[a-b-c]", "a", None),
        ("[", "a", None),
        ("[^", "a", None),
        ("[^bc", "a", None),
        ("a[", "a", None),
        ("a[", "ab", None),
        ("*x", "xxx", Some(true)),
    ];

    #[test]
    fn filepath_match() {
        for &(pattern, path, want) in FILEPATH_MATCH {
            match (DockerIgnore::parse(pattern), want) {
                (Ok(ignore), Some(want)) => {
                    assert_eq!(ignore.is_excluded(path), want, "{pattern:?} on {path:?}");
                }
                (Err(IgnoreError::Pattern { line: 1, .. }), None) => {}
                (got, want) => panic!("{pattern:?} on {path:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    // patternmatcher_test.go's compileTests: the match type and, for regexp
    // patterns, the Go regexp patternmatcher builds on Unix.
    const COMPILE: &[(&str, &str)] = &[
        ("*", "^[^/]*$"),
        ("file*", "^file[^/]*$"),
        ("*file", "^[^/]*file$"),
        ("a*/b", "^a[^/]*/b$"),
        ("**", "suffix"),
        ("**/**", "^(.*/)?.*$"),
        ("dir/**", "prefix"),
        ("**/dir", "suffix"),
        ("**/dir2/*", "^(.*/)?dir2/[^/]*$"),
        ("**/dir2/**", "^(.*/)?dir2/.*$"),
        ("**file", "suffix"),
        ("**/file*txt", "^(.*/)?file[^/]*txt$"),
        ("**/**/*.txt", "^(.*/)?(.*/)?[^/]*\\.txt$"),
        ("a[b-d]e", "^a[b-d]e$"),
        (".*", "^\\.[^/]*$"),
        ("abc.def", "exact"),
        ("abc?def", "^abc[^/]def$"),
        ("**/foo/bar", "suffix"),
        ("a(b)c/def", "exact"),
        ("a.|)$(}+{bc", "exact"),
        (
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            "exact",
        ),
    ];

    #[test]
    fn compiled_match_types() {
        for &(pattern, want) in COMPILE {
            let compiled = Pattern::new(pattern).unwrap().unwrap();
            let got = match &compiled.matcher {
                Matcher::Exact => "exact",
                Matcher::Prefix => "prefix",
                Matcher::Suffix => "suffix",
                Matcher::Regex { source, .. } => source.as_str(),
            };
            assert_eq!(got, want, "{pattern:?}");
        }
    }

    // moby/patternmatcher ignorefile/ignorefile_test.go, TestReadAll.
    #[test]
    fn ignorefile_read_all() {
        let content = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
        let got: Vec<String> = read_all(content).into_iter().map(|l| l.pattern).collect();
        let want = [
            "test1",
            "test2",
            "a/file/here",
            "lastfile",
            "!inverted/abs/path",
            "!",
            "!",
        ];
        assert_eq!(got, want);
        // patternmatcher then rejects the bare `!` on line 8.
        let err = DockerIgnore::parse(content).unwrap_err();
        assert!(
            matches!(err, IgnoreError::Pattern { line: 8, .. }),
            "{err:?}"
        );
        assert!(read_all("").is_empty());
    }

    // patternmatcher_test.go, TestCleanPatterns*.
    #[test]
    fn cleaned_patterns() {
        assert_eq!(ignore(&["docs", "config"]).patterns(), ["docs", "config"]);
        assert_eq!(
            ignore(&["docs", "config", ""]).patterns(),
            ["docs", "config"]
        );
        assert_eq!(
            ignore(&["docs", "!docs/README.md"]).patterns(),
            ["docs", "!docs/README.md"]
        );
        assert_eq!(
            ignore(&["docs", "  !docs/README.md"]).patterns(),
            ["docs", "!docs/README.md"]
        );
        assert_eq!(
            ignore(&["docs", "!docs/README.md  "]).patterns(),
            ["docs", "!docs/README.md"]
        );
        assert!(DockerIgnore::parse("!").is_err());
    }

    // How ignorefile.ReadAll and patternmatcher.New read lines: BOM, CRLF,
    // comments only in column 1, Unicode white space, `! x`, path cleaning,
    // and the second trim after cleaning.
    #[test]
    fn line_handling() {
        let cases: &[(&str, &[&str])] = &[
            ("\u{feff}*.md\n", &["*.md"]),
            ("a\r\nb\r\n", &["a", "b"]),
            ("  # not a comment", &["# not a comment"]),
            ("\u{a0}foo\u{a0}\t", &["foo"]),
            ("! README.md", &["!README.md"]),
            ("!\t/abs/path/", &["!abs/path"]),
            ("./a//b/../c/", &["a/c"]),
            ("/", &["/"]),
            ("../outside", &["../outside"]),
            ("a /.", &["a"]),
            ("!!bang", &["!!bang"]),
        ];
        for &(text, want) in cases {
            let got = DockerIgnore::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(got.patterns(), want, "{text:?}");
        }
        assert!(
            ignore(&["# not a comment".trim_start()])
                .patterns()
                .is_empty()
        );
        assert!(ignore(&["  # not a comment"]).is_excluded("# not a comment"));
        assert!(ignore(&["!!bang", "*"]).is_excluded("!bang"));
        assert!(!ignore(&["*", "!!bang"]).is_excluded("!bang"));
        // `/` alone stays `/` and matches nothing.
        assert!(!ignore(&["/"]).is_excluded("a"));
    }

    // Lines Docker rejects, with the line number and the line as written.
    #[test]
    fn bad_patterns() {
        let cases: &[(&str, usize, &str)] = &[
            ("[", 1, "["),
            ("ok\n\n  [a  ", 3, "[a"),
            ("!", 1, "!"),
            ("# c\n! ", 2, "!"),
            // Cleaned to `!`.
            ("!/", 1, "!/"),
            ("foo\\", 1, "foo\\"),
            ("[]a]", 1, "[]a]"),
            ("a[", 1, "a["),
            ("[^", 1, "[^"),
            // Valid globs whose Go regexp does not compile (Docker fails the
            // build on the first path the pattern is tried on).
            ("[z-a]", 1, "[z-a]"),
            ("\\q", 1, "\\q"),
            ("x\\é", 1, "x\\é"),
            ("\\p{Greek}", 1, "\\p{Greek}"),
            ("[[:nope:]]", 1, "[[:nope:]]"),
            ("\\1", 1, "\\1"),
            ("\\C", 1, "\\C"),
            ("\\xz", 1, "\\xz"),
            // `[a-*]` becomes `[a-[^/]*]`: the range a-[ is backwards.
            ("[a-*]", 1, "[a-*]"),
            // `{` is escaped, so `\x{41}` reaches Go as `\x\{41\}`.
            ("\\x{41}", 1, "\\x{41}"),
        ];
        for &(text, want_line, want_pattern) in cases {
            match DockerIgnore::parse(text) {
                Err(IgnoreError::Pattern {
                    line,
                    pattern,
                    reason,
                }) => {
                    assert_eq!(
                        (line, pattern.as_str()),
                        (want_line, want_pattern),
                        "{text:?}"
                    );
                    assert!(!reason.is_empty());
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let err = DockerIgnore::parse("ok\n\n[a").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 3: invalid pattern \"[a\": unterminated character class"
        );
    }

    // Behaviour that follows from patternmatcher rewriting globs into Go
    // regexps character by character, blind to brackets.
    const GO_REGEXP_QUIRKS: &[Case] = &[
        // `[*]` becomes `[[^/]*]`: the class {'[','^','/'}, starred, then `]`.
        (&["[*]"], "]", true),
        (&["[*]"], "[]", true),
        (&["[*]"], "*", false),
        // `a*[*-b]` becomes `^a[^/]*[[^/]*-b]$`.
        (&["a*[*-b]"], "ax-b]", true),
        (&["a*[*-b]"], "a*", false),
        // `\Q` quotes the rest of the regexp, `$` included.
        (&["a\\Qb*"], "ab[^/]*$/more", true),
        (&["a\\Qb*"], "abc", false),
        // Perl, POSIX and Unicode classes, hex escapes, word boundaries.
        (&["file\\d"], "file7", true),
        (&["file\\d"], "filed", false),
        (&["[[:digit:]].txt"], "7.txt", true),
        (&["[[:digit:]].txt"], "d].txt", false),
        (&["[[:^alpha:]]"], "7", true),
        (&["[[:^alpha:]]"], "a", false),
        (&["\\pL*"], "é-x", true),
        (&["\\pL*"], "1abc", false),
        (&["\\PN"], "x", true),
        (&["\\PN"], "7", false),
        (&["[\\s]"], " ", true),
        (&["\\x41"], "A", true),
        (&["\\x41"], "x41", false),
        (&["\\101"], "A", true),
        (&["foo\\b*"], "foo.txt", true),
        (&["foo\\b*"], "foo", true),
        (&["foo\\b*"], "foobar", false),
        // A literal `^` is an anchor once the pattern needs a regexp.
        (&["a^b"], "a^b", true),
        (&["a^b*"], "a^b", false),
        (&["a^b*"], "a^bc", false),
        // `.` in `(.*/)?` stops at a newline; negated classes and the
        // suffix fast path do not.
        (&["a/**/b"], "a/xy/b", true),
        (&["a/**/b"], "a/x\ny/b", false),
        (&["a?b"], "a\nb", true),
        (&["**/b"], "x\ny/b", true),
        // A leading `**` with nothing regexp-worthy after it is a plain suffix
        // test; elsewhere `**` becomes `(.*/)?`, which must end at a `/`.
        (&["**.txt"], "dir/notes.txt", true),
        (&["x/**c"], "x/ab/c", true),
        (&["x/**c"], "x/c", true),
        (&["x/**c"], "x/abc", false),
        (&["a**"], "abc/d", true),
    ];

    #[test]
    fn go_regexp_quirks() {
        check(GO_REGEXP_QUIRKS, DockerIgnore::is_excluded);
    }

    /// fsutil's walk over `entries` (a trailing `/` marks a directory): the
    /// paths it sends.
    fn walk(ignore: &DockerIgnore, entries: &[&str]) -> Vec<String> {
        let mut entries: Vec<(&str, bool)> = entries
            .iter()
            .map(|e| e.strip_suffix('/').map_or((*e, false), |dir| (dir, true)))
            .collect();
        entries.sort_by(|a, b| a.0.split('/').cmp(b.0.split('/')));
        let below =
            |path: &str, dir: &str| path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'));
        let mut sent = Vec::new();
        let mut skipped: Vec<&str> = Vec::new();
        let mut pending: Vec<&str> = Vec::new();
        for (path, is_dir) in entries {
            if skipped.iter().any(|dir| below(path, dir)) {
                continue;
            }
            pending.retain(|dir| below(path, dir));
            if ignore.is_excluded(path) {
                if is_dir && ignore.may_include_below(path) {
                    pending.push(path);
                } else if is_dir {
                    skipped.push(path);
                }
                continue;
            }
            sent.extend(pending.drain(..).map(str::to_owned));
            sent.push(path.to_owned());
        }
        sent
    }

    // tonistiigi/fsutil filter_test.go (TestWalkerExclude,
    // TestWalkerPermissionDenied), the walker BuildKit's client uses, and the
    // places where its parent-result chaining differs from matching each
    // path on its own.
    #[test]
    fn fsutil_walker() {
        let tree = ["bar", "foo/", "foo2", "foo/bar2"];
        assert_eq!(
            walk(&ignore(&["foo*", "!foo/bar2"]), &tree),
            ["bar", "foo", "foo/bar2"]
        );
        let tree = ["foo/", "foo/bar/"];
        assert_eq!(walk(&ignore(&["**/bar", "!foo/bar/baz"]), &tree), ["foo"]);

        let tree = [
            "docs/",
            "docs/README.md",
            "docs/guide.md",
            "src/",
            "src/main.rs",
        ];
        let docs = ignore(&["docs", "!docs/README.md"]);
        assert_eq!(
            walk(&docs, &tree),
            ["docs", "docs/README.md", "src", "src/main.rs"]
        );
        assert!(docs.is_excluded("docs"));
        assert!(docs.is_excluded("docs/guide.md"));
        assert!(!docs.is_excluded("docs/README.md"));

        // An exception is only consulted while the path is excluded, and is
        // not carried to children from a parent it was skipped on: `a` is
        // not excluded when `!a` is tried, so `a/b/c` stays excluded.
        let chained = ignore(&["a/b/*", "!a"]);
        assert!(chained.is_excluded("a/b/c"));
        assert!(!chained.is_excluded("a/x"));
        assert_eq!(
            walk(&chained, &["a/", "a/b/", "a/b/c", "a/x"]),
            ["a", "a/b", "a/x"]
        );
    }

    #[test]
    fn may_include_below() {
        let none = ignore(&["node_modules", "*.log"]);
        assert!(!none.may_include_below("node_modules"));

        let literal = ignore(&["node_modules", "!node_modules/keep/**", "!other/x"]);
        assert!(literal.may_include_below("node_modules"));
        assert!(literal.may_include_below("node_modules/keep"));
        assert!(!literal.may_include_below("node_modules/drop"));
        assert!(!literal.may_include_below("node"));
        assert!(literal.may_include_below("other"));
        assert!(!literal.may_include_below("other/x/../y"));

        // Any glob in an exception (past a trailing `/*` or `/**`) makes
        // fsutil descend into every excluded directory.
        let glob = ignore(&["vendor", "!**/*.md"]);
        assert!(glob.may_include_below("vendor"));
        assert!(glob.may_include_below("anything/else"));
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "executor-dockerignore-{}-{name}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, path: &str, text: &str) -> PathBuf {
            let path = self.0.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    // BuildKit's dockerui frontend: `<Dockerfile>.dockerignore` beside the
    // Dockerfile wins over `<context>/.dockerignore`.
    #[test]
    fn load_for_build_precedence() {
        let tmp = TempDir::new("precedence");
        let ctx = tmp.0.join("ctx");
        let dockerfile = tmp.write("ctx/docker/build.Dockerfile", "FROM scratch\n");
        fs::create_dir_all(&ctx).unwrap();
        assert!(load_for_build(&ctx, &dockerfile).unwrap().is_none());

        let root = tmp.write("ctx/.dockerignore", "*.md\n");
        let (path, got) = load_for_build(&ctx, &dockerfile).unwrap().unwrap();
        assert_eq!(path, root);
        assert_eq!(got.patterns(), ["*.md"]);

        let specific = tmp.write("ctx/docker/build.Dockerfile.dockerignore", "node_modules\n");
        let (path, got) = load_for_build(&ctx, &dockerfile).unwrap().unwrap();
        assert_eq!(path, specific);
        assert_eq!(got.patterns(), ["node_modules"]);
        assert!(!got.is_excluded("README.md"));

        // Another Dockerfile in the same directory has no specific file.
        let other = tmp.write("ctx/docker/lint.Dockerfile", "FROM scratch\n");
        assert_eq!(load_for_build(&ctx, &other).unwrap().unwrap().0, root);

        // An empty specific file still wins, and excludes nothing.
        tmp.write("ctx/docker/build.Dockerfile.dockerignore", "");
        let (path, got) = load_for_build(&ctx, &dockerfile).unwrap().unwrap();
        assert_eq!(path, specific);
        assert!(got.patterns().is_empty());
    }

    #[test]
    fn load_for_build_edge_cases() {
        let tmp = TempDir::new("edges");
        let dockerfile = tmp.write("Dockerfile", "FROM scratch\n");
        // A directory named .dockerignore is no ignore file.
        fs::create_dir_all(tmp.0.join(".dockerignore")).unwrap();
        assert!(load_for_build(&tmp.0, &dockerfile).unwrap().is_none());
        fs::remove_dir_all(tmp.0.join(".dockerignore")).unwrap();

        // Invalid UTF-8 is read lossily rather than rejected.
        fs::write(tmp.0.join(".dockerignore"), b"caf\xe9\n*.tmp\n").unwrap();
        let (_, got) = load_for_build(&tmp.0, &dockerfile).unwrap().unwrap();
        assert_eq!(got.patterns(), ["caf\u{fffd}", "*.tmp"]);

        // A bad line names the file, the line and the pattern.
        let path = tmp.write("Dockerfile.dockerignore", "ok\n[oops\n");
        let err = load_for_build(&tmp.0, &dockerfile).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("invalid ignore file {}", path.display())
        );
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert_eq!(
            source,
            "line 2: invalid pattern \"[oops\": unterminated character class"
        );
    }

    /// xorshift64*, so the generated inputs are the same on every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let n = u64::try_from(n).unwrap();
            usize::try_from(self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n).unwrap()
        }

        fn string(&mut self, alphabet: &[&str], max: usize) -> String {
            (0..self.below(max + 1))
                .map(|_| alphabet[self.below(alphabet.len())])
                .collect()
        }
    }

    // Random patterns built from the characters that matter, against random
    // paths: never a panic, and the one-pass prefix matcher agrees with
    // matching each prefix on its own.
    #[test]
    fn random_patterns_agree_with_prefix_by_prefix_matching() {
        const PATTERN: &[&str] = &[
            "*",
            "**",
            "?",
            "[",
            "]",
            "^",
            "-",
            "\\",
            "/",
            ".",
            "a",
            "b",
            "!",
            "$",
            "(",
            ")",
            "{",
            "|",
            "Q",
            "E",
            "d",
            "p",
            "x",
            "4",
            ":",
            "é",
            " ",
            "\n",
            "\r",
            "#",
            "[:alpha:]",
            "\\Q",
        ];
        const PATH: &[&str] = &[
            "a", "b", "/", ".", "ab", "é", "[", "]", "^", "$", "-", "\n", "_", "4", "Q",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut compiled = 0;
        for _ in 0..4000 {
            let text = rng.string(PATTERN, 14);
            let Ok(ignore) = DockerIgnore::parse(&text) else {
                continue;
            };
            compiled += 1;
            for _ in 0..8 {
                let path = rng.string(PATH, 10);
                let _ = ignore.is_excluded(&path);
                let _ = ignore.may_include_below(&path);
                let ends: Vec<usize> = path
                    .match_indices('/')
                    .map(|(i, _)| i)
                    .chain([path.len()])
                    .collect();
                for pattern in &ignore.patterns {
                    let together = pattern.match_prefixes(&path, &ends);
                    let apart: Vec<bool> = ends
                        .iter()
                        .map(|&end| pattern.match_prefixes(&path[..end], &[end])[0])
                        .collect();
                    assert_eq!(together, apart, "{:?} on {path:?}", pattern.cleaned);
                }
            }
        }
        assert!(compiled > 1000, "only {compiled} random files parsed");
    }

    // Patterns that make backtracking matchers exponential, on long and deep
    // paths: the Pike VM is linear in the path for each pattern.
    #[test]
    fn matching_time_is_bounded() {
        let started = std::time::Instant::now();
        let ignore = ignore(&[
            "*a*a*a*a*a*a*a*a*a*b",
            "**/a*a*a*a*a*a*a*a*a*b/**",
            "!**/x",
            "**/**/**/**/c",
        ]);
        let long = "a".repeat(20_000);
        assert!(!ignore.is_excluded(&long));
        let deep = vec!["aaaa"; 4000].join("/");
        assert!(!ignore.is_excluded(&deep));
        assert!(ignore.is_excluded(&format!("{deep}/c")));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }
}
