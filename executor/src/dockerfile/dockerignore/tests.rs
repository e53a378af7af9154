//! Unit tests of `.dockerignore` reading and matching, many of them tables
//! taken from the projects Docker's behaviour comes from (Docker's docs,
//! moby/patternmatcher, Go's `filepath.Match`, tonistiigi/fsutil). The Go
//! regexp engine's own tests are in `goregex.rs`.

use super::*;

/// (lines of the ignore file, path, excluded?)
pub(super) type Case = (&'static [&'static str], &'static str, bool);

pub(super) fn ignore(lines: &[&str]) -> DockerIgnore {
    DockerIgnore::parse(&lines.join("\n")).unwrap_or_else(|e| panic!("{lines:?}: {e}"))
}

pub(super) fn check(cases: &[Case], excluded: impl Fn(&DockerIgnore, &str) -> bool) {
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
    let content =
        "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
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

/// fsutil's walk over `entries` (a trailing `/` marks a directory): the
/// paths it sends.
fn walk(ignore: &DockerIgnore, entries: &[&str]) -> Vec<String> {
    let mut entries: Vec<(&str, bool)> = entries
        .iter()
        .map(|e| e.strip_suffix('/').map_or((*e, false), |dir| (dir, true)))
        .collect();
    entries.sort_by(|a, b| a.0.split('/').cmp(b.0.split('/')));
    let below = |path: &str, dir: &str| path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'));
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
