//! Job artifacts, with GitLab CI's `artifacts.paths` semantics: after a
//! job, the files of its checkout that match its patterns are copied into
//! an archive directory; before a job that needs it, that directory is
//! copied over the needing job's checkout.
//!
//! Patterns are relative to the project directory and use GitLab's
//! doublestar globs: `*`, `?` and `[...]` within one path component (Go's
//! `filepath.Match`, as COPY uses), `**` for any number of components. A
//! pattern matching a directory takes everything below it. `.git` at the
//! top of the checkout is never an artifact. Symbolic links are copied as
//! links, never followed, and other special files are left out; restoring
//! replaces whatever is in the way (a symbolic link in the checkout is
//! replaced, never written through), so nothing lands outside the project
//! directory.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::context::gomatch;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(
        "invalid artifacts path {pattern:?}: {reason}\nhint: artifacts paths are relative to the project directory (`dist/`, `build/**/*.xml`)"
    )]
    Pattern {
        pattern: String,
        reason: &'static str,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T, E = ArtifactError> = std::result::Result<T, E>;

fn read_error(path: &Path) -> impl FnOnce(io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn write_error(path: &Path) -> impl FnOnce(io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// A pattern split into components, checked.
fn parse_pattern(pattern: &str) -> Result<Vec<String>> {
    let invalid = |reason| ArtifactError::Pattern {
        pattern: pattern.to_owned(),
        reason,
    };
    if pattern.starts_with('/') {
        return Err(invalid("it is absolute"));
    }
    let mut parts = Vec::new();
    for component in Path::new(pattern).components() {
        match component {
            Component::CurDir => {}
            Component::Normal(part) => {
                let part = part.to_str().ok_or_else(|| invalid("it is not UTF-8"))?;
                if part != "**" {
                    gomatch::check_pattern(part).map_err(invalid)?;
                }
                parts.push(part.to_owned());
            }
            Component::ParentDir => return Err(invalid("it leaves the project directory")),
            Component::RootDir | Component::Prefix(_) => return Err(invalid("it is absolute")),
        }
    }
    if parts.is_empty() {
        return Err(invalid("it names no file"));
    }
    Ok(parts)
}

/// Whether the path components `path` match the pattern components `pattern`.
fn matches(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| matches(rest, &path[skip..]))
        }
        Some((first, rest)) => path.split_first().is_some_and(|(name, below)| {
            gomatch::matches(first, name).unwrap_or(false) && matches(rest, below)
        }),
    }
}

/// Copies the files of `project` matching `patterns` into `into` (created
/// if missing), keeping their paths; returns those paths, relative, in
/// the order copied. A pattern matching nothing is not an error (GitLab
/// warns); the caller sees it in the list.
pub fn collect_artifacts(project: &Path, patterns: &[String], into: &Path) -> Result<Vec<PathBuf>> {
    let patterns = patterns
        .iter()
        .map(|p| parse_pattern(p))
        .collect::<Result<Vec<_>>>()?;
    fs::create_dir_all(into).map_err(write_error(into))?;
    let mut copied = Vec::new();
    collect(project, into, Path::new(""), &patterns, false, &mut copied)?;
    tracing::debug!(files = copied.len(), into = %into.display(), "artifacts collected");
    Ok(copied)
}

fn collect(
    project: &Path,
    into: &Path,
    rel: &Path,
    patterns: &[Vec<String>],
    all: bool,
    copied: &mut Vec<PathBuf>,
) -> Result<()> {
    let dir = project.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .map_err(read_error(&dir))?
        .collect::<io::Result<_>>()
        .map_err(read_error(&dir))?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name();
        if rel.as_os_str().is_empty() && name == ".git" {
            continue;
        }
        let path = rel.join(&name);
        let components: Vec<&str> = path
            .components()
            .filter_map(|c| c.as_os_str().to_str())
            .collect();
        let included = all || patterns.iter().any(|p| matches(p, &components));
        let source = entry.path();
        let kind = entry.file_type().map_err(read_error(&source))?;
        if kind.is_dir() {
            if included {
                let target = into.join(&path);
                fs::create_dir_all(&target).map_err(write_error(&target))?;
                copy_mode(&source, &target)?;
                copied.push(path.clone());
            }
            collect(project, into, &path, patterns, included, copied)?;
        } else if included && (kind.is_file() || kind.is_symlink()) {
            let target = into.join(&path);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(write_error(parent))?;
            }
            copy_entry(&source, &target, kind.is_symlink())?;
            copied.push(path);
        }
    }
    Ok(())
}

/// Copies the archive `archive` (made by [`collect_artifacts`]) over the
/// checkout `project`, replacing what is in the way; returns how many
/// entries were copied.
pub fn restore_artifacts(archive: &Path, project: &Path) -> Result<usize> {
    let mut count = 0;
    restore(archive, project, Path::new(""), &mut count)?;
    tracing::debug!(entries = count, project = %project.display(), "artifacts restored");
    Ok(count)
}

fn restore(archive: &Path, project: &Path, rel: &Path, count: &mut usize) -> Result<()> {
    let dir = archive.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .map_err(read_error(&dir))?
        .collect::<io::Result<_>>()
        .map_err(read_error(&dir))?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let path = rel.join(entry.file_name());
        let source = entry.path();
        let target = project.join(&path);
        let kind = entry.file_type().map_err(read_error(&source))?;
        let existing = fs::symlink_metadata(&target).ok();
        if kind.is_dir() {
            if existing.as_ref().is_some_and(|m| !m.is_dir()) {
                fs::remove_file(&target).map_err(write_error(&target))?;
            }
            fs::create_dir_all(&target).map_err(write_error(&target))?;
            copy_mode(&source, &target)?;
            *count += 1;
            restore(archive, project, &path, count)?;
        } else {
            match existing {
                Some(meta) if meta.is_dir() => {
                    fs::remove_dir_all(&target).map_err(write_error(&target))?;
                }
                Some(_) => fs::remove_file(&target).map_err(write_error(&target))?,
                None => {}
            }
            copy_entry(&source, &target, kind.is_symlink())?;
            *count += 1;
        }
    }
    Ok(())
}

/// Copies a regular file (contents and mode) or a symbolic link (as a
/// link) to `target`, which does not exist.
fn copy_entry(source: &Path, target: &Path, symlink: bool) -> Result<()> {
    if symlink {
        let link = fs::read_link(source).map_err(read_error(source))?;
        std::os::unix::fs::symlink(&link, target).map_err(write_error(target))
    } else {
        fs::copy(source, target).map_err(write_error(target))?;
        Ok(())
    }
}

fn copy_mode(source: &Path, target: &Path) -> Result<()> {
    let permissions = fs::metadata(source)
        .map_err(read_error(source))?
        .permissions();
    fs::set_permissions(target, permissions).map_err(write_error(target))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt as _, symlink};

    use super::*;

    fn pattern(p: &str) -> Vec<String> {
        parse_pattern(p).unwrap()
    }

    fn is_match(p: &str, path: &str) -> bool {
        let components: Vec<&str> = path.split('/').collect();
        matches(&pattern(p), &components)
    }

    #[test]
    fn patterns_are_doublestar_globs() {
        assert!(is_match("dist", "dist"));
        assert!(is_match("./dist/", "dist"));
        assert!(is_match("*.txt", "a.txt"));
        assert!(!is_match("*.txt", "sub/a.txt"));
        assert!(is_match("**/*.txt", "a.txt"));
        assert!(is_match("**/*.txt", "sub/deeper/a.txt"));
        assert!(is_match("build/**/report-?.xml", "build/x/y/report-1.xml"));
        assert!(is_match("build/**", "build/x"));
        assert!(is_match("[ab]*", "beta"));
        assert!(!is_match("[ab]*", "gamma"));
        for bad in ["/etc", "../up", "a/../../b", "", ".", "[unclosed"] {
            let err = parse_pattern(bad).unwrap_err();
            assert!(err.to_string().contains("hint: "), "{bad}: {err}");
        }
    }

    fn write(root: &Path, path: &str, content: &str) {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    #[test]
    fn matching_files_go_to_the_dependants_checkout() {
        let job = tempfile::tempdir().unwrap();
        let root = job.path();
        write(root, "dist/app", "binary");
        write(root, "dist/lib/x.so", "lib");
        write(root, "reports/unit/a.xml", "a");
        write(root, "reports/unit/a.txt", "not me");
        write(root, "notes.txt", "not me either");
        write(root, ".git/config", "never");
        fs::set_permissions(root.join("dist/app"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("/etc/passwd", root.join("dist/passwd")).unwrap();
        let archive = tempfile::tempdir().unwrap();
        let into = archive.path().join("job");
        let patterns = [
            "dist/".to_owned(),
            "reports/**/*.xml".to_owned(),
            "missing".to_owned(),
        ];
        let copied = collect_artifacts(root, &patterns, &into).unwrap();
        let copied: Vec<String> = copied.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            copied,
            [
                "dist",
                "dist/app",
                "dist/lib",
                "dist/lib/x.so",
                "dist/passwd",
                "reports/unit/a.xml"
            ]
        );
        assert!(!into.join(".git").exists());
        assert!(!into.join("reports/unit/a.txt").exists());

        let dependant = tempfile::tempdir().unwrap();
        let root = dependant.path();
        write(root, "src/main.c", "kept");
        write(root, "dist/app/old", "a directory in the way");
        // A link in the checkout must not carry the restore outside it.
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), root.join("reports")).unwrap();
        let restored = restore_artifacts(&into, root).unwrap();
        assert_eq!(restored, 8);
        assert_eq!(fs::read_to_string(root.join("dist/app")).unwrap(), "binary");
        assert_eq!(
            fs::metadata(root.join("dist/app"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        assert_eq!(
            fs::read_to_string(root.join("dist/lib/x.so")).unwrap(),
            "lib"
        );
        assert_eq!(
            fs::read_link(root.join("dist/passwd")).unwrap(),
            PathBuf::from("/etc/passwd")
        );
        assert!(fs::symlink_metadata(root.join("reports")).unwrap().is_dir());
        assert_eq!(
            fs::read_to_string(root.join("reports/unit/a.xml")).unwrap(),
            "a"
        );
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        assert_eq!(fs::read_to_string(root.join("src/main.c")).unwrap(), "kept");
    }
}
