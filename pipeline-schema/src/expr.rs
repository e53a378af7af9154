//! `rules: - if:` expressions, GitLab's syntax: parsing (with the column of
//! an error inside the expression) and evaluation against variables.
//!
//! ```text
//! expr     = and ("||" and)*
//! and      = primary ("&&" primary)*
//! primary  = "(" expr ")" | operand [("==" | "!=") operand | ("=~" | "!~") pattern]
//! operand  = $NAME | ${NAME} | "string" | 'string' | null
//! pattern  = /regex/flags | $NAME          (flags: i, m, s)
//! ```
//!
//! Semantics, as in GitLab: an undefined variable is `null`; `$VAR` alone
//! is true when the variable is defined and not empty (a string literal when
//! not empty, `null` never); `==` and `!=` compare strings, `null` equal
//! only to `null` (a variable defined empty is `""`, not `null`); `=~` is
//! true when the regular expression matches somewhere in the value (use `^`
//! and `$` to anchor it), and false for `null`; `!~` is its negation. A
//! pattern in a variable (`$VAR =~ $PATTERN`) holds `/regex/flags` and is
//! compiled when evaluated; one that does not compile matches nothing.
//! Strings have no escapes. `&&` binds tighter than `||`. Regular
//! expressions use the `regex` crate's syntax (RE2's, as GitLab).

use std::fmt;

use regex::{Regex, RegexBuilder};

/// Nesting deeper than this (parentheses) is refused, so that no input
/// exhausts the stack.
const MAX_DEPTH: usize = 64;
/// The compiled size limit of one regular expression.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A parsed `if` expression.
#[derive(Clone)]
pub struct Expr {
    text: String,
    root: Ast,
}

/// Variable values an expression is evaluated against.
pub trait Lookup {
    /// The value of the variable `name`, `None` when it is not defined.
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl<S: std::hash::BuildHasher> Lookup for std::collections::HashMap<String, String, S> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Lookup for std::collections::BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl<L: Lookup + ?Sized> Lookup for &L {
    fn lookup(&self, name: &str) -> Option<&str> {
        (**self).lookup(name)
    }
}

/// Why an expression did not parse, and where: `column` counts characters
/// of the expression from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at column {column}: {kind}")]
pub struct ExprError {
    pub column: usize,
    pub kind: ExprErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExprErrorKind {
    #[error("empty expression")]
    Empty,
    #[error("unterminated string")]
    UnterminatedString,
    #[error("unterminated regular expression")]
    UnterminatedRegex,
    #[error("unknown regular expression flag `{0}` (one of i, m, s)")]
    RegexFlag(char),
    #[error("invalid regular expression: {0}")]
    Regex(String),
    #[error("unexpected character `{0}`")]
    Char(char),
    #[error("`$` must be followed by a variable name")]
    VariableName,
    #[error("expected {expected}, found {found}")]
    Expected {
        expected: &'static str,
        found: String,
    },
    #[error("a regular expression only goes on the right of `=~` or `!~`")]
    MisplacedRegex,
    #[error("nested deeper than {MAX_DEPTH} parentheses")]
    TooDeep,
}

#[derive(Debug, Clone)]
enum Ast {
    Or(Box<Ast>, Box<Ast>),
    And(Box<Ast>, Box<Ast>),
    Equals {
        left: Operand,
        right: Operand,
        negate: bool,
    },
    Matches {
        left: Operand,
        pattern: Pattern,
        negate: bool,
    },
    Truthy(Operand),
}

#[derive(Debug, Clone)]
enum Operand {
    Variable(String),
    String(String),
    Null,
}

#[derive(Debug, Clone)]
enum Pattern {
    Literal(Regex),
    Variable(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Variable(String),
    String(String),
    Null,
    Regex(String, String),
    Eq,
    Ne,
    Match,
    NoMatch,
    And,
    Or,
    Open,
    Close,
    End,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Variable(v) => format!("`${v}`"),
            Token::String(s) => format!("the string \"{s}\""),
            Token::Null => "`null`".to_string(),
            Token::Regex(p, f) => format!("`/{p}/{f}`"),
            Token::Eq => "`==`".to_string(),
            Token::Ne => "`!=`".to_string(),
            Token::Match => "`=~`".to_string(),
            Token::NoMatch => "`!~`".to_string(),
            Token::And => "`&&`".to_string(),
            Token::Or => "`||`".to_string(),
            Token::Open => "`(`".to_string(),
            Token::Close => "`)`".to_string(),
            Token::End => "the end of the expression".to_string(),
        }
    }
}

fn err(column: usize, kind: ExprErrorKind) -> ExprError {
    ExprError { column, kind }
}

/// Splits an expression into tokens, each with its 1-based column.
fn tokens(text: &str) -> Result<Vec<(Token, usize)>, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        let two = |next: char| chars.get(i + 1) == Some(&next);
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let token = match c {
            '(' => {
                i += 1;
                Token::Open
            }
            ')' => {
                i += 1;
                Token::Close
            }
            '=' if two('=') => {
                i += 2;
                Token::Eq
            }
            '=' if two('~') => {
                i += 2;
                Token::Match
            }
            '!' if two('=') => {
                i += 2;
                Token::Ne
            }
            '!' if two('~') => {
                i += 2;
                Token::NoMatch
            }
            '&' if two('&') => {
                i += 2;
                Token::And
            }
            '|' if two('|') => {
                i += 2;
                Token::Or
            }
            '"' | '\'' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&d| d == c)
                    .ok_or_else(|| err(column, ExprErrorKind::UnterminatedString))?;
                let s: String = chars[i + 1..i + 1 + end].iter().collect();
                i += end + 2;
                Token::String(s)
            }
            '$' => {
                let braced = two('{');
                let start = i + 1 + usize::from(braced);
                let mut end = start;
                while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_')
                {
                    end += 1;
                }
                if end == start || chars[start].is_ascii_digit() {
                    return Err(err(column, ExprErrorKind::VariableName));
                }
                let name: String = chars[start..end].iter().collect();
                if braced {
                    if chars.get(end) != Some(&'}') {
                        return Err(err(
                            end + 1,
                            ExprErrorKind::Char(chars.get(end).copied().unwrap_or(' ')),
                        ));
                    }
                    end += 1;
                }
                i = end;
                Token::Variable(name)
            }
            '/' => {
                let mut pattern = String::new();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return Err(err(column, ExprErrorKind::UnterminatedRegex)),
                        Some('\\') if chars.get(j + 1) == Some(&'/') => {
                            pattern.push('/');
                            j += 2;
                        }
                        Some('\\') => {
                            pattern.push('\\');
                            if let Some(&n) = chars.get(j + 1) {
                                pattern.push(n);
                            }
                            j += 2;
                        }
                        Some('/') => break,
                        Some(&other) => {
                            pattern.push(other);
                            j += 1;
                        }
                    }
                }
                j += 1;
                let mut flags = String::new();
                while let Some(&f) = chars.get(j) {
                    if !f.is_ascii_alphabetic() {
                        break;
                    }
                    if !matches!(f, 'i' | 'm' | 's') {
                        return Err(err(j + 1, ExprErrorKind::RegexFlag(f)));
                    }
                    flags.push(f);
                    j += 1;
                }
                i = j;
                Token::Regex(pattern, flags)
            }
            c if c.is_ascii_alphabetic() => {
                let mut end = i;
                while end < chars.len() && chars[end].is_ascii_alphanumeric() {
                    end += 1;
                }
                let word: String = chars[i..end].iter().collect();
                if word != "null" {
                    return Err(err(
                        column,
                        ExprErrorKind::Expected {
                            expected: "a variable, a quoted string or `null`",
                            found: format!("`{word}`"),
                        },
                    ));
                }
                i = end;
                Token::Null
            }
            other => return Err(err(column, ExprErrorKind::Char(other))),
        };
        out.push((token, column));
    }
    out.push((Token::End, chars.len() + 1));
    Ok(out)
}

fn compile(pattern: &str, flags: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .case_insensitive(flags.contains('i'))
        .multi_line(flags.contains('m'))
        .dot_matches_new_line(flags.contains('s'))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            // The regex crate's syntax errors draw the pattern over several
            // lines; its last line says what is wrong.
            let text = e.to_string();
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            last.trim().trim_start_matches("error: ").to_string()
        })
}

struct ParseState {
    tokens: Vec<(Token, usize)>,
    pos: usize,
    depth: usize,
}

impl ParseState {
    fn peek(&self) -> &(Token, usize) {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> (Token, usize) {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn or(&mut self) -> Result<Ast, ExprError> {
        let mut left = self.and()?;
        while self.peek().0 == Token::Or {
            self.next();
            let right = self.and()?;
            left = Ast::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Ast, ExprError> {
        let mut left = self.primary()?;
        while self.peek().0 == Token::And {
            self.next();
            let right = self.primary()?;
            left = Ast::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Ast, ExprError> {
        let (token, column) = self.next();
        if token == Token::Open {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(err(column, ExprErrorKind::TooDeep));
            }
            let inner = self.or()?;
            self.depth -= 1;
            let (close, column) = self.next();
            if close != Token::Close {
                return Err(err(
                    column,
                    ExprErrorKind::Expected {
                        expected: "`)`",
                        found: close.describe(),
                    },
                ));
            }
            return Ok(inner);
        }
        let left = operand(token, column, "a variable, a quoted string, `null` or `(`")?;
        let (op, _) = self.peek().clone();
        match op {
            Token::Eq | Token::Ne => {
                self.next();
                let (token, column) = self.next();
                let right = operand(token, column, "a variable, a quoted string or `null`")?;
                Ok(Ast::Equals {
                    left,
                    right,
                    negate: op == Token::Ne,
                })
            }
            Token::Match | Token::NoMatch => {
                self.next();
                let (token, column) = self.next();
                let pattern = match token {
                    Token::Regex(p, f) => Pattern::Literal(
                        compile(&p, &f).map_err(|e| err(column, ExprErrorKind::Regex(e)))?,
                    ),
                    Token::Variable(v) => Pattern::Variable(v),
                    other => {
                        return Err(err(
                            column,
                            ExprErrorKind::Expected {
                                expected: "a regular expression `/.../` or a variable",
                                found: other.describe(),
                            },
                        ));
                    }
                };
                Ok(Ast::Matches {
                    left,
                    pattern,
                    negate: op == Token::NoMatch,
                })
            }
            _ => Ok(Ast::Truthy(left)),
        }
    }
}

fn operand(token: Token, column: usize, expected: &'static str) -> Result<Operand, ExprError> {
    match token {
        Token::Variable(v) => Ok(Operand::Variable(v)),
        Token::String(s) => Ok(Operand::String(s)),
        Token::Null => Ok(Operand::Null),
        Token::Regex(..) => Err(err(column, ExprErrorKind::MisplacedRegex)),
        other => Err(err(
            column,
            ExprErrorKind::Expected {
                expected,
                found: other.describe(),
            },
        )),
    }
}

impl Expr {
    /// Parses an expression such as `$CI_COMMIT_BRANCH == "main" && $DEPLOY`.
    pub fn parse(text: &str) -> Result<Self, ExprError> {
        let tokens = tokens(text)?;
        if tokens.len() == 1 {
            return Err(err(1, ExprErrorKind::Empty));
        }
        let mut state = ParseState {
            tokens,
            pos: 0,
            depth: 0,
        };
        let root = state.or()?;
        let (token, column) = state.next();
        if token != Token::End {
            return Err(err(
                column,
                ExprErrorKind::Expected {
                    expected: "`&&`, `||` or the end of the expression",
                    found: token.describe(),
                },
            ));
        }
        Ok(Self {
            text: text.to_string(),
            root,
        })
    }

    /// The expression as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Evaluates the expression with these variables.
    pub fn evaluate(&self, vars: &impl Lookup) -> bool {
        eval(&self.root, vars)
    }
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expr({:?})", self.text)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn value<'a>(operand: &'a Operand, vars: &'a impl Lookup) -> Option<&'a str> {
    match operand {
        Operand::Variable(name) => vars.lookup(name),
        Operand::String(s) => Some(s),
        Operand::Null => None,
    }
}

fn eval(ast: &Ast, vars: &impl Lookup) -> bool {
    match ast {
        Ast::Or(a, b) => eval(a, vars) || eval(b, vars),
        Ast::And(a, b) => eval(a, vars) && eval(b, vars),
        Ast::Truthy(operand) => value(operand, vars).is_some_and(|v| !v.is_empty()),
        Ast::Equals {
            left,
            right,
            negate,
        } => (value(left, vars) == value(right, vars)) != *negate,
        Ast::Matches {
            left,
            pattern,
            negate,
        } => {
            let matched = value(left, vars).is_some_and(|v| match pattern {
                Pattern::Literal(re) => re.is_match(v),
                Pattern::Variable(name) => vars
                    .lookup(name)
                    .and_then(variable_pattern)
                    .is_some_and(|re| re.is_match(v)),
            });
            matched != *negate
        }
    }
}

/// A `/regex/flags` held in a variable.
fn variable_pattern(text: &str) -> Option<Regex> {
    let rest = text.strip_prefix('/')?;
    let end = rest.rfind('/')?;
    let flags = &rest[end + 1..];
    if !flags.chars().all(|f| matches!(f, 'i' | 'm' | 's')) {
        return None;
    }
    compile(&rest[..end], flags).ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    fn eval_with(text: &str, pairs: &[(&str, &str)]) -> bool {
        Expr::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .evaluate(&vars(pairs))
    }

    #[test]
    fn evaluates_like_gitlab() {
        let main = [("BRANCH", "main"), ("EMPTY", ""), ("TAG", "v1.2.3")];
        let cases = [
            ("$BRANCH == \"main\"", true),
            ("$BRANCH != 'main'", false),
            ("${BRANCH} == $BRANCH", true),
            ("$BRANCH", true),
            ("$EMPTY", false),
            ("$UNSET", false),
            ("$UNSET == null", true),
            ("$EMPTY == null", false),
            ("$EMPTY == ''", true),
            ("null == null", true),
            ("$TAG =~ /^v[0-9]+\\.[0-9]+/", true),
            ("$TAG =~ /^V1/i", true),
            ("$TAG =~ /^V1/", false),
            ("$TAG !~ /^v/", false),
            ("$UNSET =~ /.*/", false),
            ("$UNSET !~ /.*/", true),
            ("$BRANCH == 'x' || $TAG && $BRANCH == 'main'", true),
            ("($BRANCH == 'x' || $TAG) && $BRANCH == 'x'", false),
            ("$BRANCH =~ $PATTERN", true),
            ("$BRANCH =~ $BAD", false),
            ("'/a/b' =~ /\\/b$/", true),
        ];
        let mut with_patterns = main.to_vec();
        with_patterns.push(("PATTERN", "/^MA/i"));
        with_patterns.push(("BAD", "/(/"));
        for (text, expected) in cases {
            assert_eq!(eval_with(text, &with_patterns), expected, "{text}");
        }
    }

    #[test]
    fn errors_name_their_column() {
        let cases = [
            ("", 1, "empty expression"),
            (
                "$A ==",
                6,
                "expected a variable, a quoted string or `null`, found the end of the expression",
            ),
            ("$A == 'x", 7, "unterminated string"),
            ("$A = 'x'", 4, "unexpected character `=`"),
            (
                "$A == main",
                7,
                "expected a variable, a quoted string or `null`, found `main`",
            ),
            (
                "($A == 'x'",
                11,
                "expected `)`, found the end of the expression",
            ),
            (
                "$A 'x'",
                4,
                "expected `&&`, `||` or the end of the expression, found the string \"x\"",
            ),
            (
                "$A =~ 'x'",
                7,
                "expected a regular expression `/.../` or a variable, found the string \"x\"",
            ),
            ("$A =~ /(/", 7, "invalid regular expression: unclosed group"),
            (
                "$A =~ /x/g",
                10,
                "unknown regular expression flag `g` (one of i, m, s)",
            ),
            (
                "/x/ == $A",
                1,
                "a regular expression only goes on the right of `=~` or `!~`",
            ),
            ("$1 == ''", 1, "`$` must be followed by a variable name"),
            (
                "$A && || $B",
                7,
                "expected a variable, a quoted string, `null` or `(`, found `||`",
            ),
        ];
        for (text, column, message) in cases {
            let e = Expr::parse(text).expect_err(text);
            assert_eq!(
                (e.column, e.kind.to_string().as_str()),
                (column, message),
                "{text}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = format!("{}$A{}", "(".repeat(10_000), ")".repeat(10_000));
        let e = Expr::parse(&text).unwrap_err();
        assert_eq!(e.kind, ExprErrorKind::TooDeep);
    }
}
