//! The wildcard patterns of `${VAR#pattern}`, `##`, `%`, `%%`, `/` and `//`:
//! BuildKit's `convertShellPatternToRegex` rewrite of a pattern into a
//! regex, trimming the shortest or longest prefix or suffix, and Go's
//! `Regexp.ReplaceAllString` for replace-all. It owns only what happens to a
//! value once the lexer has read the pattern and the replacement; it must
//! not read the input word or look up variables. Errors are BuildKit's
//! message text, which the lexer places at the `$` of the substitution.

use regex::Regex;

use super::{EOF_CHAR, Scanner, is_digit, is_letter};

/// Largest result of one `${VAR//pattern/replacement}`. Nested replace-all
/// substitutions multiply sizes, so a short input could otherwise ask for
/// gigabytes; BuildKit would try and run out of memory. The replacement
/// text read for all matches together is bounded to a multiple of it too.
/// (Linux refuses a single environment string over 128 KiB anyway.)
const MAX_REPLACE_BYTES: usize = 1 << 20;

/// Longest wildcard pattern compiled: compiling takes time in proportion, and
/// a pattern can itself be the result of a replace-all.
const MAX_PATTERN_BYTES: usize = 64 << 10;

/// Converts a wildcard pattern (`?` one character, `*` the shortest or, when
/// `greedy`, the longest run; no bracket expressions) to a regex, as
/// BuildKit's `convertShellPatternToRegex`. `\*`, `\?` and `\\` are literal;
/// `\}` and `\/` are the literal `}` and `/`; any other escape is an error.
fn shell_pattern_to_regex(pattern: &str, greedy: bool, anchored: bool) -> Result<Regex, String> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(format!("pattern longer than {MAX_PATTERN_BYTES} bytes"));
    }
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut scanner = Scanner::new(pattern);
    let mut buf = [0; 4];
    while let Some(tok) = scanner.next() {
        let literal = match tok {
            '*' => {
                out.push_str(star);
                continue;
            }
            '?' => {
                out.push('.');
                continue;
            }
            '\\' => {
                if matches!(scanner.peek(), Some('}' | '/')) {
                    continue;
                }
                match scanner.next() {
                    Some(escaped @ ('*' | '?' | '\\')) => escaped,
                    other => {
                        return Err(format!("invalid escape '\\{}'", other.unwrap_or(EOF_CHAR)));
                    }
                }
            }
            other => other,
        };
        out.push_str(&regex::escape(literal.encode_utf8(&mut buf)));
    }
    Regex::new(&out).map_err(|err| err.to_string())
}

fn invalid_pattern(pattern: &str, err: &str) -> String {
    if pattern.len() > MAX_PATTERN_BYTES {
        return format!("invalid pattern in substitution: {err}");
    }
    format!("invalid pattern ({pattern}) in substitution: {err}")
}

/// `${value#pattern}` / `${value##pattern}`.
pub(super) fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let re =
        shell_pattern_to_regex(pattern, greedy, true).map_err(|e| invalid_pattern(pattern, &e))?;
    Ok(match re.find(value) {
        Some(found) => value[found.end()..].to_owned(),
        None => value.to_owned(),
    })
}

/// `${value%pattern}` / `${value%%pattern}`. A regex cannot find the shortest
/// rightmost match, so both pattern and value are reversed and the prefix is
/// trimmed instead (an error names the reversed pattern, as BuildKit does).
pub(super) fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern without separating an escape from the character it
/// escapes: `a\*c` becomes `c\*a`.
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = chars.clone();
    let len = chars.len();
    let mut i = 0;
    while i < len {
        let out_idx = len - 1 - i;
        if chars[i] == '\\' && i + 1 < len {
            out[out_idx - 1] = '\\';
            out[out_idx] = chars[i + 1];
            i += 2;
        } else {
            out[out_idx] = chars[i];
            i += 1;
        }
    }
    out.into_iter().collect()
}

/// Replaces the first match (literally) or, for `//`, every match; the latter
/// is Go's `Regexp.ReplaceAllString`, so `$0` / `${0}` in the replacement
/// stand for the match, `$$` for `$`, and other `$name` references for nothing.
pub(super) fn replace(
    pattern: &str,
    value: &str,
    replacement: &str,
    replace_all: bool,
) -> Result<String, String> {
    let re =
        shell_pattern_to_regex(pattern, true, false).map_err(|e| invalid_pattern(pattern, &e))?;
    if replace_all {
        return replace_all_go(&re, value, replacement).ok_or_else(|| {
            format!("substitution result too large (limit {MAX_REPLACE_BYTES} bytes)")
        });
    }
    Ok(match re.find(value) {
        Some(found) => format!(
            "{}{replacement}{}",
            &value[..found.start()],
            &value[found.end()..]
        ),
        None => value.to_owned(),
    })
}

/// Go's `replaceAll` loop: an empty match right after a match is not
/// replaced, and the search always advances by at least one character.
/// `None` when the result would exceed [`MAX_REPLACE_BYTES`], or the
/// replacement was expanded so often that reading it would take too long.
fn replace_all_go(re: &Regex, src: &str, template: &str) -> Option<String> {
    let mut out = String::new();
    let mut template_read = 0;
    let mut last_end = 0;
    let mut search = 0;
    while search <= src.len() {
        let Some(found) = re.find_at(src, search) else {
            break;
        };
        out.push_str(src.get(last_end..found.start()).unwrap_or_default());
        if found.end() > last_end || found.start() == 0 {
            expand_template(&mut out, template, found.as_str());
            template_read += template.len();
        }
        if out.len() > MAX_REPLACE_BYTES || template_read > 4 * MAX_REPLACE_BYTES {
            return None;
        }
        last_end = found.end();
        let width = src
            .get(search..)
            .and_then(|rest| rest.chars().next())
            .map_or(0, char::len_utf8);
        if search + width > found.end() {
            search += width;
        } else if search + 1 > found.end() {
            search += 1;
        } else {
            search = found.end();
        }
    }
    out.push_str(src.get(last_end..).unwrap_or_default());
    (out.len() <= MAX_REPLACE_BYTES).then_some(out)
}

/// Go's `Regexp.expand` for a regex whose only group is the whole match.
fn expand_template(out: &mut String, mut template: &str, whole: &str) {
    while let Some(dollar) = template.find('$') {
        out.push_str(&template[..dollar]);
        template = &template[dollar + 1..];
        if let Some(rest) = template.strip_prefix('$') {
            out.push('$');
            template = rest;
            continue;
        }
        match group_reference(template) {
            Some((is_whole, rest)) => {
                if is_whole {
                    out.push_str(whole);
                }
                template = rest;
            }
            // Malformed: the `$` is kept as text.
            None => out.push('$'),
        }
    }
    out.push_str(template);
}

/// Parses `name` or `{name}` after a `$` (Go's `extract`): whether it names
/// group 0, and the rest of the template. `None` when malformed.
fn group_reference(text: &str) -> Option<(bool, &str)> {
    let (braced, body) = match text.strip_prefix('{') {
        Some(body) => (true, body),
        None => (false, text),
    };
    let len = body
        .char_indices()
        .find(|&(_, ch)| !is_letter(ch) && !is_digit(ch) && ch != '_')
        .map_or(body.len(), |(idx, _)| idx);
    if len == 0 {
        return None;
    }
    let (name, rest) = body.split_at(len);
    let rest = if braced {
        rest.strip_prefix('}')?
    } else {
        rest
    };
    // Group numbers are ASCII digits without leading zeros; only 0 exists.
    Some((name == "0", rest))
}

#[cfg(test)]
mod tests {
    use super::super::Lex;
    use super::super::tests::{SET, env, err, ok};
    use super::*;

    #[test]
    fn trim_prefix_and_suffix() {
        let path = &[("P", "/usr/local/bin/tool.tar.gz")];
        assert_eq!(ok("${P#*/}", path), "usr/local/bin/tool.tar.gz");
        assert_eq!(ok("${P##*/}", path), "tool.tar.gz");
        assert_eq!(ok("${P%.*}", path), "/usr/local/bin/tool.tar");
        assert_eq!(ok("${P%%.*}", path), "/usr/local/bin/tool");
        assert_eq!(ok("${P#nomatch}", path), "/usr/local/bin/tool.tar.gz");
        assert_eq!(ok("${P#/usr?}", path), "local/bin/tool.tar.gz");
        assert_eq!(ok("${P%}${P#}", &[("P", "ab")]), "abab");
        assert_eq!(ok("${F%%\\**}", &[("F", "xx**")]), "xx");
        assert_eq!(ok("${F%%\\**\\*}", &[("F", "a***yy*")]), "a");
        assert_eq!(ok("${F#?\\?}", &[("F", "???y")]), "?y");
        assert_eq!(
            ok(r"${F#()[]{\}^$.\*\?|\\}", &[("F", r"()[]{}^$.*?|\x")]),
            "x"
        );
        assert_eq!(ok("${U#x}|${U%x}", SET), "|");
        // `.` (so `?` and `*`) does not match a newline, as in Go.
        assert_eq!(ok("${N#*}|${N##*}", &[("N", "a\nb")]), "a\nb|\nb");
        assert_eq!(ok("${K%%?}", &[("K", "한국어")]), "한국");
    }

    #[test]
    fn trim_errors() {
        assert_eq!(
            err(r"${V#\x}", SET).message,
            r"invalid pattern (\x) in substitution: invalid escape '\x'"
        );
        // `%` reverses the pattern, and the message names the reversed one.
        assert_eq!(
            err(r"${V%a\b}", SET).message,
            r"invalid pattern (\ba) in substitution: invalid escape '\b'"
        );
    }

    #[test]
    fn replace_first_and_all() {
        let foo = &[("F", "foobarbaz")];
        assert_eq!(ok("${F/ba/fo}", foo), "fooforbaz");
        assert_eq!(ok("${F//ba/fo}", foo), "fooforfoz");
        assert_eq!(ok("${F/b*/X}", foo), "fooX");
        assert_eq!(ok("${F//?a/-}", foo), "foo-r-z");
        assert_eq!(ok("${F/zz/y}", foo), "foobarbaz");
        assert_eq!(ok(r"${F//\//\/}", &[("F", "/tmp/x")]), r"\/tmp\/x");
        let url = &[("U", "http://a.de"), ("N", "http://"), ("R", "https://")];
        assert_eq!(ok("${U/$N/$R}", url), "https://a.de");
        let paths = &[("F", "/a/foo/b/c.txt"), ("N", "/?/"), ("R", "/")];
        assert_eq!(
            ok("${F/$N/$R} - ${F//$N/$R}", paths),
            "/foo/b/c.txt - /foo/c.txt"
        );
        // Empty pattern: Go inserts the replacement before every character.
        assert_eq!(ok("${F/$E/ww}", &[("F", "xy"), ("E", "")]), "wwxy");
        assert_eq!(ok("${F//$E/-}", &[("F", "xy"), ("E", "")]), "-x-y-");
        assert_eq!(ok("${F///}", &[("F", "xxyy")]), "xxyy");
        // Replace-all goes through Go's template expansion: `$0` is the match.
        assert_eq!(ok("${F//a/'<$0$1$$>'}", &[("F", "bab")]), "b<a$>b");
        assert_eq!(ok("${F/a/'<$0>'}", &[("F", "bab")]), "b<$0>b");
    }

    #[test]
    fn replace_all_growth_is_bounded() {
        let e = env(&[("X", "0123456789")]);
        let mut input = String::from("y");
        for _ in 0..12 {
            input = format!("${{X//$E/{input}}}");
        }
        let out = Lex::new('\\').process_word(&input, &e);
        assert!(out.is_err_and(|e| e.message.contains("too large")));
    }

    #[test]
    fn long_patterns_are_refused() {
        let e = env(&[("X", "abc")]);
        let lex = Lex::new('\\');
        let fits = format!("${{X#{}}}", "a".repeat(MAX_PATTERN_BYTES));
        assert_eq!(lex.process_word(&fits, &e).as_deref(), Ok("abc"));
        let long = format!("${{X/{}/y}}", "?".repeat(MAX_PATTERN_BYTES + 1));
        let out = lex.process_word(&long, &e);
        assert!(out.is_err_and(
            |e| e.message == "invalid pattern in substitution: pattern longer than 65536 bytes"
        ));
    }
}
