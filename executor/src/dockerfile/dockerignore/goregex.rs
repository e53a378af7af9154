//! The part of Go's regexp syntax (Perl flags, as `regexp.Compile` uses) that
//! patternmatcher's rewrite can produce, and a Pike VM to run it in time
//! linear in the text. `.` does not match `\n`; negated classes do; `^`/`$`
//! are text anchors; `\b` is ASCII. It owns only compiling and running one
//! expression; it must not know about globs, ignore files or paths (the
//! rewrite from a glob is the parent module's).

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
            let at = |next| Context { pos, prev, next };
            while end_index < ends.len() && ends[end_index] == pos {
                // As if the text stopped here.
                self.closure(&mut set, &mut stack, &seeds, at(None));
                out[end_index] = set.contains(0);
                end_index += 1;
            }
            let Some(c) = next else { break };
            self.closure(&mut set, &mut stack, &seeds, at(Some(c)));
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
    fn closure(&self, set: &mut StateSet, stack: &mut Vec<usize>, seeds: &[usize], at: Context) {
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

#[cfg(test)]
mod tests {
    use super::super::DockerIgnore;
    use super::super::tests::{Case, check, ignore};

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
