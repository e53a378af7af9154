//! Go's `filepath.Match` (Unix), the wildcard syntax of COPY and ADD
//! sources that BuildKit's copier (fsutil) hands to Go: `*` is any run of
//! non-`/` characters, `?` one non-`/` character, `[...]` a class (`^`
//! negates, `a-z` ranges; a class may match `/`), `\` quotes the next
//! character. Hand-written because the glob crates differ from Go in these
//! details (escapes inside classes, the errors for malformed patterns).
//! It matches text only; it must not touch the file system.

/// Go's `filepath.Match` on Unix: `*` is any run of non-`/` characters,
/// `?` one non-`/` character, `[...]` a class (`^` negates, `a-z` ranges),
/// `\` quotes the next character. An error for a malformed pattern.
pub(crate) fn matches(mut pattern: &str, mut name: &str) -> Result<bool, &'static str> {
    'chunks: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing '*' matches the rest unless it has a '/'.
            return Ok(!name.contains('/'));
        }
        match match_chunk(chunk, name)? {
            Some(rest) if rest.is_empty() || !pattern.is_empty() => {
                name = rest;
                continue;
            }
            _ => {}
        }
        if star {
            for (i, c) in name.char_indices() {
                if c == '/' {
                    break;
                }
                if let Some(rest) = match_chunk(chunk, &name[i + c.len_utf8()..])? {
                    // The last chunk must use up the name.
                    if pattern.is_empty() && !rest.is_empty() {
                        continue;
                    }
                    name = rest;
                    continue 'chunks;
                }
            }
        }
        check_pattern(pattern)?;
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Whether a pattern is well formed (what `filepath.Match` would report).
pub(crate) fn check_pattern(mut pattern: &str) -> Result<(), &'static str> {
    while !pattern.is_empty() {
        let (_, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        match_chunk(chunk, "")?;
    }
    Ok(())
}

/// Leading stars, then the chunk up to the next unbracketed star.
fn scan_chunk(pattern: &str) -> (bool, &str, &str) {
    let trimmed = pattern.trim_start_matches('*');
    let star = trimmed.len() != pattern.len();
    let bytes = trimmed.as_bytes();
    let mut in_range = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if i + 1 < bytes.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &trimmed[..i], &trimmed[i..])
}

/// Match `chunk` (no unbracketed stars) at the start of `s`: the rest of
/// `s` on a match. Goes on checking the chunk's syntax after a mismatch.
fn match_chunk<'a>(mut chunk: &str, mut s: &'a str) -> Result<Option<&'a str>, &'static str> {
    let mut failed = false;
    while let Some(first) = chunk.chars().next() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match first {
            '[' => {
                let mut r = '\0';
                if !failed {
                    r = s.chars().next().unwrap_or('\0');
                    s = &s[r.len_utf8()..];
                }
                chunk = &chunk[1..];
                let negated = chunk.starts_with('^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if chunk.starts_with(']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = class_char(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if let Some(rest) = chunk.strip_prefix('-') {
                        let (h, rest) = class_char(rest)?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            '?' => {
                if !failed {
                    let c = s.chars().next().unwrap_or('\0');
                    if c == '/' {
                        failed = true;
                    }
                    s = &s[c.len_utf8()..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                let mut literal = first;
                if first == '\\' {
                    chunk = &chunk[1..];
                    literal = chunk.chars().next().ok_or("trailing backslash")?;
                }
                if !failed {
                    let c = s.chars().next().unwrap_or('\0');
                    if c != literal {
                        failed = true;
                    }
                    s = &s[c.len_utf8()..];
                }
                chunk = &chunk[literal.len_utf8()..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// Go's `getEsc`: one class character, possibly escaped; the class must go
/// on after it.
fn class_char(chunk: &str) -> Result<(char, &str), &'static str> {
    let mut chunk = match chunk.chars().next() {
        None | Some('-' | ']') => return Err("bad range in character class"),
        Some(_) => chunk,
    };
    if let Some(rest) = chunk.strip_prefix('\\') {
        if rest.is_empty() {
            return Err("unterminated character class");
        }
        chunk = rest;
    }
    let c = chunk.chars().next().ok_or("unterminated character class")?;
    let rest = &chunk[c.len_utf8()..];
    if rest.is_empty() {
        return Err("unterminated character class");
    }
    Ok((c, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's `matchTests` (src/path/filepath/match_test.go), Unix rows:
    /// (pattern, name, match, error).
    const GO_MATCH: &[(&str, &str, bool, bool)] = &[
        ("abc", "abc", true, false),
        ("*", "abc", true, false),
        ("*c", "abc", true, false),
        ("a*", "a", true, false),
        ("a*", "abc", true, false),
        ("a*", "ab/c", false, false),
        ("a*/b", "abc/b", true, false),
        ("a*/b", "a/c/b", false, false),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", true, false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true, false),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false, false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false, false),
        ("a*b?c*x", "abxbbxdbxebxczzx", true, false),
        ("a*b?c*x", "abxbbxdbxebxczzy", false, false),
        ("ab[c]", "abc", true, false),
        ("ab[b-d]", "abc", true, false),
        ("ab[e-g]", "abc", false, false),
        ("ab[^c]", "abc", false, false),
        ("ab[^b-d]", "abc", false, false),
        ("ab[^e-g]", "abc", true, false),
        ("a\\*b", "a*b", true, false),
        ("a\\*b", "ab", false, false),
        ("a?b", "a☺b", true, false),
        ("a[^a]b", "a☺b", true, false),
        ("a???b", "a☺b", false, false),
        ("a[^a][^a][^a]b", "a☺b", false, false),
        ("[a-ζ]*", "α", true, false),
        ("*[a-ζ]", "A", false, false),
        ("a?b", "a/b", false, false),
        ("a*b", "a/b", false, false),
        ("[\\]a]", "]", true, false),
        ("[\\-]", "-", true, false),
        ("[x\\-]", "x", true, false),
        ("[x\\-]", "-", true, false),
        ("[x\\-]", "z", false, false),
        ("[\\-x]", "x", true, false),
        ("[\\-x]", "-", true, false),
        ("[\\-x]", "a", false, false),
        ("[]a]", "]", false, true),
        ("[-]", "-", false, true),
        ("[x-]", "x", false, true),
        ("[x-]", "-", false, true),
        ("[x-]", "z", false, true),
        ("[-x]", "x", false, true),
        ("[-x]", "-", false, true),
        ("[-x]", "a", false, true),
        ("\\", "a", false, true),
        ("[a-b-c]", "a", false, true),
        ("[", "a", false, true),
        ("[^", "a", false, true),
        ("[^bc", "a", false, true),
        ("a[", "a", false, true),
        ("a[", "ab", false, true),
        ("a[", "x", false, true),
        ("a/b[", "x", false, true),
        ("*x", "xxx", true, false),
    ];

    #[test]
    fn go_filepath_match() {
        for &(pattern, name, matched, error) in GO_MATCH {
            let result = matches(pattern, name);
            if error {
                assert!(result.is_err(), "{pattern} {name}: {result:?}");
            } else {
                assert_eq!(result, Ok(matched), "{pattern} {name}");
            }
        }
    }
}
