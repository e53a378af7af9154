//! Go's `path.Clean`, the lexical path cleaning Docker's path rules are
//! written in (BuildKit's mount ids, patternmatcher's `.dockerignore` lines;
//! Go's `filepath.Clean` is the same function on Unix). It works on the
//! text alone, with `/` as the separator: it must not touch the file system
//! or resolve links.

/// Go's `path.Clean`: the shortest path equivalent to `path` by purely
/// lexical processing. Repeated slashes become one, `.` elements go, each
/// `..` removes the element before it (a `..` at the start of a rooted
/// path is dropped), a trailing slash goes unless the result is `/`, and an
/// empty result is `.`.
#[must_use]
pub fn clean(path: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::clean;

    /// Go's `cleantests` (src/path/path_test.go): (path, cleaned).
    const CLEAN: &[(&str, &str)] = &[
        // Already clean
        ("", "."),
        ("abc", "abc"),
        ("abc/def", "abc/def"),
        ("a/b/c", "a/b/c"),
        (".", "."),
        ("..", ".."),
        ("../..", "../.."),
        ("../../abc", "../../abc"),
        ("/abc", "/abc"),
        ("/", "/"),
        // Remove trailing slash
        ("abc/", "abc"),
        ("abc/def/", "abc/def"),
        ("a/b/c/", "a/b/c"),
        ("./", "."),
        ("../", ".."),
        ("../../", "../.."),
        ("/abc/", "/abc"),
        // Remove doubled slash
        ("abc//def//ghi", "abc/def/ghi"),
        ("//abc", "/abc"),
        ("///abc", "/abc"),
        ("//abc//", "/abc"),
        ("abc//", "abc"),
        // Remove . elements
        ("abc/./def", "abc/def"),
        ("/./abc/def", "/abc/def"),
        ("abc/.", "abc"),
        // Remove .. elements
        ("abc/def/ghi/../jkl", "abc/def/jkl"),
        ("abc/def/../ghi/../jkl", "abc/jkl"),
        ("abc/def/..", "abc"),
        ("abc/def/../..", "."),
        ("/abc/def/../..", "/"),
        ("abc/def/../../..", ".."),
        ("/abc/def/../../..", "/"),
        ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
        // Combinations
        ("abc/./../def", "def"),
        ("abc//./../def", "def"),
        ("abc/../../././../def", "../../def"),
    ];

    /// Go's `TestClean`: every path cleans to the expected result, and the
    /// result is already clean.
    #[test]
    fn go_clean_table() {
        for &(path, want) in CLEAN {
            assert_eq!(clean(path), want, "clean({path:?})");
            assert_eq!(clean(want), want, "clean({want:?})");
        }
    }

    #[test]
    fn mount_targets_and_ignore_lines() {
        assert_eq!(clean("/a/./b/../c/"), "/a/c");
        assert_eq!(clean("a/../../b"), "../b");
        assert_eq!(clean("/.."), "/");
        assert_eq!(clean("./a//b/../c/"), "a/c");
        assert_eq!(clean("!/abs/.."), "!");
    }
}
