//! Dockerfile word expansion: quote removal, escapes, `$VAR` / `${VAR…}`
//! substitution and word splitting, with exactly the semantics of BuildKit's
//! `frontend/dockerfile/shell` lexer (`lex.go`, Unix `equal_env_unix.go`),
//! including its wildcard patterns for `#`, `##`, `%`, `%%`, `/` and `//`
//! (the `pattern` submodule).
//! It owns only the expansion of one instruction argument against a set of
//! variables; it must not parse Dockerfile lines, decide which instructions
//! expand, or read the process environment. It is hand-written because no
//! crate reproduces BuildKit's exact (non-POSIX) behaviour: its special
//! parameters, its error cases, and its regex-based pattern matching.
//!
//! Deliberate differences, all on input that BuildKit mishandles: `${…}`
//! nested deeper than 64 levels, `//` results over 1 MiB and patterns over
//! 64 KiB are errors (BuildKit recurses and allocates without bound);
//! [`Lex::process_words`] keeps the text before a `${VAR<op>…}` in its word
//! (BuildKit's lexer shares one word buffer with the nested expansion and
//! loses it); with `skip_unset_env`, `${VAR//p/r}` is written back with `//`
//! (BuildKit writes `/`).

mod pattern;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::LazyLock;

use regex::Regex;

use pattern::{replace, trim_prefix, trim_suffix};

/// Deepest nesting of `${…}` inside `${…}` that is expanded; deeper input is
/// an error rather than a stack overflow. BuildKit (Go, growable stacks) has
/// no such limit; real Dockerfiles nest a handful of levels.
const MAX_NESTING: usize = 64;

/// What Go prints for `scanner.EOF` formatted as a character (`%c` of -1).
const EOF_CHAR: char = '\u{FFFD}';

/// Variables visible to expansion. Case-sensitive (Linux semantics).
pub trait Env {
    /// The value of `name`, or `None` when it is unset.
    fn get(&self, name: &str) -> Option<&str>;
}

impl<S: BuildHasher> Env for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

/// An ordered list of `(name, value)`; the last entry with a name wins.
impl Env for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// An ordered list of `(name, value)`; the last entry with a name wins.
impl Env for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

impl<T: Env + ?Sized> Env for &T {
    fn get(&self, name: &str) -> Option<&str> {
        (**self).get(name)
    }
}

/// No variables at all.
#[derive(Debug, Default, Clone, Copy)]
pub struct EmptyEnv;

impl Env for EmptyEnv {
    fn get(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// Variable names looked up during one expansion.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Matches {
    /// Names that were set (possibly to the empty string).
    pub matched: BTreeSet<String>,
    /// Names that were not set.
    pub unmatched: BTreeSet<String>,
}

/// Expansion error. `message` is BuildKit's text (e.g. `syntax error: bad
/// substitution`, or `VAR: message` for `${VAR:?message}`); BuildKit adds
/// `failed to process "<word>": ` in front, which is left to the caller.
/// `offset` is the byte offset in the input of the construct that failed: the
/// `$` of the substitution or the opening quote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ShellError {
    pub message: String,
    pub offset: usize,
}

impl ShellError {
    fn new(message: impl Into<String>, offset: usize) -> Self {
        Self {
            message: message.into(),
            offset,
        }
    }
}

type Result<T, E = ShellError> = std::result::Result<T, E>;

/// Word expander with BuildKit's options.
// The options are BuildKit's independent booleans, set one by one by callers.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone)]
pub struct Lex {
    /// The escape character: `\` or `` ` `` (the `# escape=` directive).
    pub escape: char,
    /// Keep quote characters in the output (BuildKit `RawQuotes`).
    pub raw_quotes: bool,
    /// Keep escape characters in the output (BuildKit `RawEscapes`).
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters (BuildKit `SkipProcessQuotes`).
    pub skip_process_quotes: bool,
    /// Leave `$VAR` text as written when VAR is unset (BuildKit `SkipUnsetEnv`).
    pub skip_unset_env: bool,
}

impl Lex {
    /// An expander with the given escape character and every option off.
    #[must_use]
    pub fn new(escape: char) -> Self {
        Self {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// One word: quotes removed, variables expanded, no field splitting
    /// (BuildKit `ProcessWord`).
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String> {
        Ok(self.process(word, env)?.result)
    }

    /// Like [`Lex::process_word`], also returning which variable names were
    /// looked up and found / not found (BuildKit `ProcessWordWithMatches`).
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &dyn Env,
    ) -> Result<(String, Matches)> {
        let processed = self.process(word, env)?;
        Ok((processed.result, processed.matches))
    }

    /// Expands `word` and splits the result on unquoted whitespace, the
    /// whitespace inside expanded variables included (BuildKit `ProcessWords`).
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>> {
        Ok(self.process(word, env)?.words)
    }

    fn process(&self, word: &str, env: &dyn Env) -> Result<Processed> {
        let mut shell_word = ShellWord {
            lex: self,
            env,
            scanner: Scanner::new(word),
            raw_escapes: self.raw_escapes,
            depth: 0,
            matches: Matches::default(),
        };
        let (result, words) = shell_word.process_stop_on(None, self.raw_escapes)?;
        Ok(Processed {
            result,
            words,
            matches: shell_word.matches,
        })
    }
}

struct Processed {
    result: String,
    words: Vec<String>,
    matches: Matches,
}

/// Character reader with the behaviour of Go's `text/scanner` as the lexer
/// uses it (`Peek`/`Next`): a byte-order mark at the very start is skipped.
struct Scanner<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn new(src: &'a str) -> Self {
        let pos = if src.starts_with('\u{FEFF}') {
            '\u{FEFF}'.len_utf8()
        } else {
            0
        };
        Self { src, pos }
    }

    fn peek(&self) -> Option<char> {
        self.src
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += ch.len_utf8();
        Some(ch)
    }
}

/// Word splitting alongside expansion (BuildKit `wordsStruct`).
#[derive(Default)]
struct Words {
    word: String,
    done: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if is_space(ch) {
            if self.in_word && !self.word.is_empty() {
                self.done.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, text: &str) {
        for ch in text.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, text: &str) {
        self.word.push_str(text);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.done.push(self.word);
        }
        self.done
    }
}

/// State of one expansion (BuildKit `shellWord`).
struct ShellWord<'a> {
    lex: &'a Lex,
    env: &'a dyn Env,
    scanner: Scanner<'a>,
    raw_escapes: bool,
    depth: usize,
    matches: Matches,
}

impl ShellWord<'_> {
    /// Processes up to `stop` (consumed) or the end of input when `stop` is
    /// `None`, with `raw_escapes` in force meanwhile.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>)> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let out = self.stop_on(stop);
        self.raw_escapes = saved;
        out
    }

    fn stop_on(&mut self, stop: Option<char>) -> Result<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.scanner.peek() {
            if stop == Some(ch) {
                self.scanner.next();
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                    words.add_string(&value);
                }
                '<' => {
                    let text = self.process_possible_heredoc();
                    result.push_str(&text);
                    words.add_raw_string(&text);
                }
                '\'' if !self.lex.skip_process_quotes => {
                    let text = self.process_single_quote()?;
                    result.push_str(&text);
                    words.add_raw_string(&text);
                }
                '"' if !self.lex.skip_process_quotes => {
                    let text = self.process_double_quote()?;
                    result.push_str(&text);
                    words.add_raw_string(&text);
                }
                _ => {
                    self.scanner.next();
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // The escape escapes the next character, except at the end.
                        let Some(escaped) = self.scanner.next() else {
                            break;
                        };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(ShellError::new(
                format!("unexpected end of statement while looking for matching {stop}"),
                self.scanner.pos,
            ));
        }
        Ok((result, words.finish()))
    }

    /// Like [`Self::process_stop_on`] for the parts of a `${…}`: an error at
    /// the end of input becomes `missing` at `start`.
    fn stop_on_or(
        &mut self,
        stop: char,
        raw_escapes: bool,
        missing: &str,
        start: usize,
    ) -> Result<String> {
        match self.process_stop_on(Some(stop), raw_escapes) {
            Ok((text, _)) => Ok(text),
            Err(_) if self.scanner.peek().is_none() => Err(ShellError::new(missing, start)),
            Err(err) => Err(err),
        }
    }

    /// Everything between single quotes is literal; a single quote cannot be
    /// escaped inside them.
    fn process_single_quote(&mut self) -> Result<String> {
        let start = self.scanner.pos;
        let mut result = String::new();
        if let Some(open) = self.scanner.next() {
            if self.lex.raw_quotes {
                result.push(open);
            }
        }
        loop {
            match self.scanner.next() {
                None => {
                    return Err(ShellError::new(
                        "unexpected end of statement while looking for matching single-quote",
                        start,
                    ));
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(ch) => result.push(ch),
            }
        }
    }

    /// Between double quotes only `$` expands, and the escape character
    /// escapes only `"`, `$` and itself; before anything else it is literal.
    fn process_double_quote(&mut self) -> Result<String> {
        let start = self.scanner.pos;
        let mut result = String::new();
        if let Some(open) = self.scanner.next() {
            if self.lex.raw_quotes {
                result.push(open);
            }
        }
        loop {
            let Some(ch) = self.scanner.peek() else {
                return Err(ShellError::new(
                    "unexpected end of statement while looking for matching double-quote",
                    start,
                ));
            };
            match ch {
                '"' => {
                    self.scanner.next();
                    if self.lex.raw_quotes {
                        result.push(ch);
                    }
                    return Ok(result);
                }
                '$' => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                _ => {
                    self.scanner.next();
                    let mut ch = ch;
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.scanner.peek() {
                            // An escape at the very end is dropped; the missing
                            // quote is reported on the next turn.
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.lex.escape => {
                                self.scanner.next();
                                ch = next;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    /// `<<` and the blanks after it stay one word, so that `<< EOF` reaches
    /// the heredoc detection as a single word.
    fn process_possible_heredoc(&mut self) -> String {
        self.scanner.next();
        if self.scanner.peek() != Some('<') {
            return "<".to_owned();
        }
        self.scanner.next();
        let mut text = String::from("<<");
        while let Some(ch @ ('\t' | '\r' | ' ')) = self.scanner.peek() {
            text.push(ch);
            self.scanner.next();
        }
        text
    }

    fn process_dollar(&mut self) -> Result<String> {
        let start = self.scanner.pos;
        self.scanner.next();

        if self.scanner.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.get_env(&name) {
                Some(value) => value,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }

        self.scanner.next();
        match self.scanner.peek() {
            None => return Err(ShellError::new("syntax error: missing '}'", start)),
            Some('{' | '}' | ':') => {
                return Err(ShellError::new("syntax error: bad substitution", start));
            }
            Some(_) => {}
        }
        if self.depth >= MAX_NESTING {
            return Err(ShellError::new(
                format!("syntax error: substitutions nested deeper than {MAX_NESTING} levels"),
                start,
            ));
        }
        self.depth += 1;
        let out = self.process_braced(start);
        self.depth -= 1;
        out
    }

    /// The rest of a `${…}` after the `{`.
    fn process_braced(&mut self, start: usize) -> Result<String> {
        let name = self.process_name();
        let ch = self.scanner.next();
        let mut chs = String::from(ch.unwrap_or(EOF_CHAR));
        match ch {
            Some('}') => Ok(match self.get_env(&name) {
                Some(value) => value,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let null_is_unset = ch == Some(':');
                let op = if null_is_unset {
                    // Whatever follows the colon is taken as the operator;
                    // anything unsupported fails once the word is read.
                    let op = self.scanner.next();
                    chs.push(op.unwrap_or(EOF_CHAR));
                    op
                } else {
                    ch
                };
                self.process_modifier(start, &name, op, &chs, null_is_unset)
            }
            Some('/') => self.process_replace(start, &name),
            _ => Err(unsupported_modifier(&chs, start)),
        }
    }

    /// `${name[:]-word}`, `+`, `?`, and `${name#pattern}`, `##`, `%`, `%%`.
    fn process_modifier(
        &mut self,
        start: usize,
        name: &str,
        op: Option<char>,
        chs: &str,
        null_is_unset: bool,
    ) -> Result<String> {
        let is_trim = matches!(op, Some('#' | '%'));
        if null_is_unset && is_trim {
            return Err(unsupported_modifier(chs, start));
        }
        // Patterns keep their escapes so that `\*` can mean a literal star.
        let word = self.stop_on_or('}', is_trim, "syntax error: missing '}'", start)?;

        let value = self.get_env(name);
        if value.is_none() && self.lex.skip_unset_env {
            return Ok(format!("${{{name}{chs}{word}}}"));
        }
        let set = value.is_some();
        let value = value.unwrap_or_default();
        let unset_or_null = !set || (null_is_unset && value.is_empty());

        match op {
            Some('-') => Ok(if unset_or_null { word } else { value }),
            Some('+') => Ok(if unset_or_null { String::new() } else { word }),
            Some('?') => {
                let default = if !set {
                    "is not allowed to be unset"
                } else if null_is_unset && value.is_empty() {
                    "is not allowed to be empty"
                } else {
                    return Ok(value);
                };
                let message = if word.is_empty() { default } else { &word };
                Err(ShellError::new(format!("{name}: {message}"), start))
            }
            Some(op @ ('#' | '%')) => {
                // `#`/`%` remove the shortest match, `##`/`%%` the longest.
                let (pattern, greedy) = match word.strip_prefix(op) {
                    Some(rest) => (rest, true),
                    None => (word.as_str(), false),
                };
                let trimmed = if op == '%' {
                    trim_suffix(pattern, &value, greedy)
                } else {
                    trim_prefix(pattern, &value, greedy)
                };
                trimmed.map_err(|message| ShellError::new(message, start))
            }
            _ => Err(unsupported_modifier(chs, start)),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`.
    fn process_replace(&mut self, start: usize, name: &str) -> Result<String> {
        let replace_all = self.scanner.peek() == Some('/');
        if replace_all {
            self.scanner.next();
        }
        let pattern = self.stop_on_or('/', true, "syntax error: missing '/' in ${}", start)?;
        let replacement = self.stop_on_or('}', true, "syntax error: missing '}'", start)?;

        let value = self.get_env(name);
        if value.is_none() && self.lex.skip_unset_env {
            // BuildKit writes a single `/` here even for `//`, which turns a
            // replace-all into a replace-first when the text is expanded
            // again; the operator is kept as written instead.
            let op = if replace_all { "//" } else { "/" };
            return Ok(format!("${{{name}{op}{pattern}/{replacement}}}"));
        }
        replace(
            &pattern,
            &value.unwrap_or_default(),
            &replacement,
            replace_all,
        )
        .map_err(|message| ShellError::new(message, start))
    }

    /// A name: a run of decimal digits, one special parameter character, or
    /// letters, digits and `_` (Unicode letters and digits, as in Go).
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.scanner.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(digit) = self.scanner.peek() {
                    if !is_digit(digit) {
                        break;
                    }
                    self.scanner.next();
                    name.push(digit);
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.scanner.next();
                return ch.to_string();
            }
            if !is_letter(ch) && !is_digit(ch) && ch != '_' {
                break;
            }
            self.scanner.next();
            name.push(ch);
        }
        name
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        if let Some(value) = self.env.get(name) {
            self.matches.matched.insert(name.to_owned());
            Some(value.to_owned())
        } else {
            self.matches.unmatched.insert(name.to_owned());
            None
        }
    }
}

fn unsupported_modifier(chs: &str, start: usize) -> ShellError {
    ShellError::new(
        format!("unsupported modifier ({chs}) in substitution"),
        start,
    )
}

/// Special parameters of POSIX sh; a Dockerfile never sets them.
fn is_special_param(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Go's `unicode.IsSpace`: the Unicode White_Space property.
fn is_space(ch: char) -> bool {
    ch.is_whitespace()
}

/// Go's `unicode.IsLetter`: general category L.
fn is_letter(ch: char) -> bool {
    static LETTER: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\A\p{L}\z").expect("constant regex is valid"));
    if ch.is_ascii() {
        ch.is_ascii_alphabetic()
    } else {
        LETTER.is_match(ch.encode_utf8(&mut [0; 4]))
    }
}

/// Go's `unicode.IsDigit`: general category Nd.
fn is_digit(ch: char) -> bool {
    static DIGIT: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\A\p{Nd}\z").expect("constant regex is valid"));
    if ch.is_ascii() {
        ch.is_ascii_digit()
    } else {
        DIGIT.is_match(ch.encode_utf8(&mut [0; 4]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn word(input: &str, pairs: &[(&str, &str)]) -> Result<String> {
        Lex::new('\\').process_word(input, &env(pairs))
    }

    pub(super) fn ok(input: &str, pairs: &[(&str, &str)]) -> String {
        word(input, pairs).unwrap_or_else(|e| panic!("{input:?}: {e}"))
    }

    pub(super) fn err(input: &str, pairs: &[(&str, &str)]) -> ShellError {
        match word(input, pairs) {
            Ok(out) => panic!("{input:?} expanded to {out:?}, expected an error"),
            Err(e) => e,
        }
    }

    pub(super) const SET: &[(&str, &str)] = &[("V", "value"), ("E", "")];

    #[test]
    fn plain_references() {
        assert_eq!(ok("a$V.b", SET), "avalue.b");
        assert_eq!(ok("a${V}b", SET), "avalueb");
        assert_eq!(ok("a$Vb", SET), "a");
        assert_eq!(ok("a$U-b", SET), "a-b");
        assert_eq!(ok("$", SET), "$");
        assert_eq!(ok("$.$ $", SET), "$.$ $");
        assert_eq!(ok("${한국}", &[("한국", "어")]), "어");
    }

    #[test]
    fn dash_and_plus() {
        assert_eq!(ok("${V:-d}|${E:-d}|${U:-d}", SET), "value|d|d");
        assert_eq!(ok("${V-d}|${E-d}|${U-d}", SET), "value||d");
        assert_eq!(ok("${V:+a}|${E:+a}|${U:+a}", SET), "a||");
        assert_eq!(ok("${V+a}|${E+a}|${U+a}", SET), "a|a|");
        assert_eq!(ok("${U:-${V}x}", SET), "valuex");
        assert_eq!(ok("${U:-a\\}b}", SET), "a}b");
        assert_eq!(ok("${U:-'}'}", SET), "}");
    }

    #[test]
    fn question_mark() {
        assert_eq!(ok("${V:?m}${V?m}${E?m}", SET), "valuevalue");
        assert_eq!(err("${U?}", SET).message, "U: is not allowed to be unset");
        assert_eq!(err("${E:?}", SET).message, "E: is not allowed to be empty");
        assert_eq!(err("${U:?no $V}", SET).message, "U: no value");
        let e = err("ab${E:?custom}", SET);
        assert_eq!((e.message.as_str(), e.offset), ("E: custom", 2));
    }

    #[test]
    fn special_and_positional_parameters() {
        assert_eq!(ok("$1x|${10}|${1:-d}", SET), "x||d");
        assert_eq!(ok("$@@|$#|${#:-d}|${?:+a}|$$|$0", SET), "@||d|||");
        assert_eq!(
            err("${#V}", SET).message,
            "unsupported modifier (V) in substitution"
        );
        let e = Lex::new('\\').process_word_with_matches("$@ $1", &EmptyEnv);
        let (_, matches) = e.expect("expands");
        assert_eq!(
            matches.unmatched,
            BTreeSet::from(["@".to_owned(), "1".to_owned()])
        );
    }

    #[test]
    fn syntax_errors() {
        const FOO: &[(&str, &str)] = &[("F", "foobarbaz")];
        assert_eq!(err("${}", SET).message, "syntax error: bad substitution");
        assert_eq!(err("${:}", SET).message, "syntax error: bad substitution");
        assert_eq!(err("${{a}", SET).message, "syntax error: bad substitution");
        assert_eq!(err("x${", SET).message, "syntax error: missing '}'");
        assert_eq!(err("${V:-x", SET).message, "syntax error: missing '}'");
        assert_eq!(
            err("${V", SET).message,
            "unsupported modifier (\u{FFFD}) in substitution"
        );
        assert_eq!(
            err("${V:YYY}", SET).message,
            "unsupported modifier (:Y) in substitution"
        );
        // `#` and `%` take no colon; a replacement needs its `/` and its `}`.
        assert_eq!(
            err("${V:#x}", SET).message,
            "unsupported modifier (:#) in substitution"
        );
        assert_eq!(
            err("${V:%x}", SET).message,
            "unsupported modifier (:%) in substitution"
        );
        assert_eq!(
            err("${F//x}", FOO).message,
            "syntax error: missing '/' in ${}"
        );
        assert_eq!(err("${F//x/y", FOO).message, "syntax error: missing '}'");
        assert_eq!(
            err("${V=x}", SET).message,
            "unsupported modifier (=) in substitution"
        );
        assert_eq!(
            err("${.}", SET).message,
            "unsupported modifier (.) in substitution"
        );
        let e = err("ab'cd", SET);
        assert_eq!(
            (e.message.as_str(), e.offset),
            (
                "unexpected end of statement while looking for matching single-quote",
                2
            )
        );
        let e = err("a\"b\\\"", SET);
        assert_eq!(
            (e.message.as_str(), e.offset),
            (
                "unexpected end of statement while looking for matching double-quote",
                1
            )
        );
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(
            ok(r#"'a\$V' "a\$V\"\\\x" a\$V\x\"#, SET),
            r#"a\$V a$V"\\x a$Vx"#
        );
        assert_eq!(ok(r#""'$V'" '"$V"'"#, SET), r#"'value' "$V""#);
        assert_eq!(ok(r"a\", SET), "a");
    }

    #[test]
    fn raw_quotes() {
        let mut lex = Lex::new('\\');
        lex.raw_quotes = true;
        assert_eq!(
            lex.process_word(r#"a'b c'"$V" "#, &env(SET)).as_deref(),
            Ok(r#"a'b c'"value" "#)
        );
    }

    #[test]
    fn raw_escapes() {
        let mut lex = Lex::new('\\');
        lex.raw_escapes = true;
        assert_eq!(
            lex.process_word(r"a\$V\ b", &env(SET)).as_deref(),
            Ok(r"a\$V\ b")
        );
        // In double quotes an escape before an ordinary character is kept
        // and, with raw escapes, written twice (as BuildKit does).
        assert_eq!(
            lex.process_word(r#""\$V\x""#, &env(SET)).as_deref(),
            Ok(r"\$V\\x")
        );
    }

    #[test]
    fn skip_process_quotes() {
        let mut lex = Lex::new('\\');
        lex.skip_process_quotes = true;
        assert_eq!(
            lex.process_word(r#"'$V' "$V" \'"#, &env(SET)).as_deref(),
            Ok(r#"'value' "value" '"#)
        );
    }

    #[test]
    fn skip_unset_env() {
        let mut lex = Lex::new('\\');
        lex.skip_unset_env = true;
        let e = env(SET);
        let cases = [
            ("$U $V", "$U value"),
            ("${U}", "${U}"),
            ("${U:-$V}", "${U:-value}"),
            ("${U?msg}", "${U?msg}"),
            ("${U:=x}", "${U:=x}"),
            ("${U#a*}", "${U#a*}"),
            ("${U//a/$V}", "${U//a/value}"),
            ("${U/a/b}", "${U/a/b}"),
            ("${E:-d}", "d"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                lex.process_word(input, &e).as_deref(),
                Ok(expected),
                "{input}"
            );
        }
        assert!(lex.process_word("${E:?}", &e).is_err());
    }

    #[test]
    fn backtick_escape() {
        let lex = Lex::new('`');
        let e = env(SET);
        assert_eq!(
            lex.process_word(r"C:\dir\$V", &e).as_deref(),
            Ok(r"C:\dir\value")
        );
        assert_eq!(lex.process_word("a`$V`'b`", &e).as_deref(), Ok("a$V'b"));
        assert_eq!(
            lex.process_word("\"`\"`$V`x\"", &e).as_deref(),
            Ok("\"$V`x")
        );
        assert_eq!(lex.process_word(r#""a\"b"#, &e).as_deref(), Ok(r"a\b"));
        assert_eq!(
            lex.process_word("x\"a`\"", &e).map_err(|e| e.offset),
            Err(1)
        );
    }

    #[test]
    fn words() {
        let lex = Lex::new('\\');
        let e = env(&[("S", " a  b "), ("E", "")]);
        let cases: &[(&str, &[&str])] = &[
            ("x${S}y", &["x", "a", "b", "y"]),
            ("x\"${S}\"y", &["x a  b y"]),
            ("  one\\ two  three ", &["one two", "three"]),
            ("'' a \"\" ", &["a"]),
            ("${E} ${E}", &[]),
            ("RUN << EOF x<y <<\t-X", &["RUN", "<< EOF", "x<y", "<<\t-X"]),
            // BuildKit would drop the `pre` (see the module documentation).
            ("pre${U:-p q}r", &["prep", "qr"]),
        ];
        for (input, expected) in cases {
            let got = lex
                .process_words(input, &e)
                .unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got, *expected, "{input}");
        }
        assert!(lex.process_words("a 'b", &e).is_err());
    }

    #[test]
    fn matches_are_reported() {
        let lex = Lex::new('\\');
        let e = env(&[("FOO", "x"), ("BAR", "")]);
        let (out, matches) = lex
            .process_word_with_matches("${FOO-a} ${BAR:-b} ${BAZ:+c} $BAZ", &e)
            .expect("expands");
        assert_eq!(out, "x b  ");
        assert_eq!(
            matches.matched,
            BTreeSet::from(["FOO".to_owned(), "BAR".to_owned()])
        );
        assert_eq!(matches.unmatched, BTreeSet::from(["BAZ".to_owned()]));
    }

    #[test]
    fn env_implementations() {
        let list = env(&[("A", "1"), ("B", "2"), ("A", "3")]);
        assert_eq!(Env::get(&list, "A"), Some("3"));
        assert_eq!(Env::get(list.as_slice(), "B"), Some("2"));
        let map: HashMap<String, String> = list.iter().cloned().collect();
        assert_eq!(Env::get(&map, "B"), Some("2"));
        let tree: BTreeMap<String, String> = list.iter().cloned().collect();
        assert_eq!(Env::get(&tree, "a"), None);
        assert_eq!(EmptyEnv.get("A"), None);
    }

    #[test]
    fn byte_order_mark_is_skipped_at_start_only() {
        assert_eq!(ok("\u{FEFF}a\u{FEFF}", SET), "a\u{FEFF}");
    }

    #[test]
    fn nesting_is_bounded() {
        let lex = Lex::new('\\');
        let nested = |depth: usize| format!("{}x{}", "${U:-".repeat(depth), "}".repeat(depth));
        assert_eq!(
            lex.process_word(&nested(MAX_NESTING), &EmptyEnv).as_deref(),
            Ok("x")
        );
        let e = lex.process_word(&nested(MAX_NESTING + 1), &EmptyEnv);
        assert!(e.is_err_and(|e| e.message.contains("nested")));
        let deep = "${U:-".repeat(100_000);
        assert!(lex.process_word(&deep, &EmptyEnv).is_err());
    }

    /// Pseudo-random inputs from characters that matter to the lexer: no
    /// input may panic, whatever the options.
    #[test]
    fn arbitrary_input_never_panics() {
        const ALPHABET: &[char] = &[
            '$',
            '{',
            '}',
            ':',
            '-',
            '+',
            '?',
            '#',
            '%',
            '/',
            '*',
            '\\',
            '`',
            '\'',
            '"',
            '<',
            ' ',
            'a',
            'V',
            '0',
            '1',
            '@',
            '.',
            '\n',
            '한',
            '\u{FEFF}',
            '\u{1F600}',
            '=',
        ];
        let e = env(&[("V", "a*b/c\\d한"), ("a", ""), ("E", "")]);
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000u32 {
            let len = usize::try_from(next() % 24).unwrap_or(0);
            let input: String = (0..len)
                .map(|_| ALPHABET[usize::try_from(next() % ALPHABET.len() as u64).unwrap_or(0)])
                .collect();
            let mut lex = Lex::new(if round % 2 == 0 { '\\' } else { '`' });
            lex.raw_quotes = round % 3 == 0;
            lex.raw_escapes = round % 5 == 0;
            lex.skip_process_quotes = round % 7 == 0;
            lex.skip_unset_env = round % 11 == 0;
            let _ = lex.process_word(&input, &e);
            let _ = lex.process_words(&input, &e);
        }
    }
}
