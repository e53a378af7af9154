//! The subordinate id ranges `/etc/subuid` and `/etc/subgid` give a user
//! (shadow's `subuid(5)`): lines `OWNER:FIRST:COUNT`, where `OWNER` is a
//! user name or a numeric uid, any number of lines per user. Only reads
//! the files; `newuidmap` and `newgidmap` check the ranges again when they
//! write the maps (see `rootless.rs`).
//!
//! A line that names someone else is not looked at further (as shadow
//! skips lines it cannot parse); a malformed line that names the user is
//! an error naming the file and the line, since its range was meant to be
//! used. No maintained crate parses these files (the `subuid` name on
//! PyPI is Python; none on crates.io fits), hence this small parser.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A range of host ids: `count` ids from `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub first: u32,
    pub count: u32,
}

/// Why the ranges cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SubidError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}:{line}: malformed entry {text:?}: {reason}\nhint: an entry is NAME:FIRST:COUNT or UID:FIRST:COUNT, with FIRST and COUNT numbers, COUNT above 0 and FIRST + COUNT at most 4294967296",
        path.display()
    )]
    Malformed {
        path: PathBuf,
        line: usize,
        text: String,
        reason: &'static str,
    },
}

/// Who the ranges are for: the name (when the user has one) and the uid,
/// both of which an entry may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub name: Option<String>,
    pub uid: u32,
}

impl Owner {
    fn is(&self, field: &str) -> bool {
        self.name.as_deref() == Some(field) || field.parse::<u32>().is_ok_and(|id| id == self.uid)
    }
}

/// The ranges `path` gives `owner`, in file order, each once. A missing
/// file gives none.
pub fn ranges(path: &Path, owner: &Owner) -> Result<Vec<Range>, SubidError> {
    match fs::read(path) {
        Ok(bytes) => parse(&String::from_utf8_lossy(&bytes), path, owner),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(SubidError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn parse(text: &str, path: &Path, owner: &Owner) -> Result<Vec<Range>, SubidError> {
    let mut ranges: Vec<Range> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let entry = line.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = entry.split(':').collect();
        if !owner.is(fields[0]) {
            continue;
        }
        let malformed = |reason| SubidError::Malformed {
            path: path.to_path_buf(),
            line: index + 1,
            text: entry.to_owned(),
            reason,
        };
        let [_, first, count] = fields[..] else {
            return Err(malformed("not three fields"));
        };
        let first: u32 = first
            .parse()
            .map_err(|_| malformed("the first id is not a number"))?;
        let count: u32 = count
            .parse()
            .map_err(|_| malformed("the count is not a number"))?;
        if count == 0 {
            return Err(malformed("the count is 0"));
        }
        if u64::from(first) + u64::from(count) > 1 << 32 {
            return Err(malformed("the range goes past the last id"));
        }
        let range = Range { first, count };
        if !ranges.contains(&range) {
            ranges.push(range);
        }
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Owner {
        Owner {
            name: Some("alice".into()),
            uid: 1000,
        }
    }

    #[test]
    fn names_and_uids_with_several_ranges() {
        let text = "# comment\n\nbob:100000:65536\nalice:165536:65536\n 1000:300000:10 \nalice:165536:65536\n1001:400000:5\n";
        assert_eq!(
            parse(text, Path::new("/etc/subuid"), &alice()).unwrap(),
            [
                Range {
                    first: 165_536,
                    count: 65536
                },
                Range {
                    first: 300_000,
                    count: 10
                },
            ]
        );
        let nameless = Owner {
            name: None,
            uid: 1001,
        };
        assert_eq!(
            parse(text, Path::new("/etc/subuid"), &nameless).unwrap(),
            [Range {
                first: 400_000,
                count: 5
            }]
        );
        let nobody = Owner {
            name: Some("carol".into()),
            uid: 1002,
        };
        assert_eq!(parse(text, Path::new("/etc/subuid"), &nobody).unwrap(), []);
    }

    #[test]
    fn malformed_lines_of_the_user_name_the_file_and_line() {
        for (line, reason) in [
            ("alice:100000", "not three fields"),
            ("alice:100000:1:2", "not three fields"),
            ("alice:x:65536", "the first id is not a number"),
            ("alice:100000:-1", "the count is not a number"),
            ("1000:100000:0", "the count is 0"),
            ("alice:4294967295:2", "the range goes past the last id"),
        ] {
            let text = format!("bob:100000:65536\n{line}\n");
            let err = parse(&text, Path::new("/etc/subgid"), &alice()).unwrap_err();
            assert!(
                matches!(&err, SubidError::Malformed { line: 2, reason: r, .. } if *r == reason),
                "{line}: {err:?}"
            );
            assert!(
                err.to_string().starts_with(&format!(
                    "/etc/subgid:2: malformed entry {line:?}: {reason}\nhint: "
                )),
                "{err}"
            );
        }
        // Someone else's broken line is not ours to judge.
        let text = "bob:x\nmallory\nalice:100000:65536\n";
        assert_eq!(
            parse(text, Path::new("/etc/subuid"), &alice())
                .unwrap()
                .len(),
            1
        );
        // The last id can be in a range.
        let text = "alice:4294967295:1\n";
        assert_eq!(
            parse(text, Path::new("/etc/subuid"), &alice())
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_missing_file_gives_no_ranges() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ranges(&dir.path().join("subuid"), &alice()).unwrap(), []);
        let err = ranges(dir.path(), &alice()).unwrap_err();
        assert!(matches!(err, SubidError::Read { .. }), "{err:?}");
    }
}
