//! Paths inside a root filesystem, resolved from the host as if the root
//! were `/`: symlinks are followed, but an absolute link or a `..` never
//! leaves the root. Used for mount targets (stopping at the mount points
//! planned so far: below them only the mounted file system can answer),
//! `/etc/passwd` and mount-point stubs; it never mounts anything.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed before giving up, as the kernel's MAXSYMLINKS.
const MAX_LINKS: u32 = 40;

/// A path inside a root: the part that exists and the components that do not.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// The existing part, relative to the root, symlinks resolved.
    pub inner: PathBuf,
    /// Components below `inner` that do not exist yet.
    pub missing: Vec<OsString>,
}

fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|component| match component {
        Component::Normal(name) => Some(name.to_owned()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

/// Resolves `path` (taken as absolute inside `root`) under `root`.
pub(crate) fn resolve(root: &Path, path: &Path) -> io::Result<Resolved> {
    match walk(root, path, &[])? {
        Walk::Root(resolved) => Ok(resolved),
        Walk::Mount { .. } => unreachable!("no mount points to stop at"),
    }
}

/// Where a path led.
#[derive(Debug)]
enum Walk {
    Root(Resolved),
    /// It reached `mount_points[index]`; `below` are the components left
    /// (no `..`), which only the mounted file system can resolve.
    Mount {
        index: usize,
        below: Vec<OsString>,
    },
}

/// Resolves `path` under `root`, stopping at the first of `mount_points`
/// (paths relative to the root, symlinks resolved) it reaches.
fn walk(root: &Path, path: &Path, mount_points: &[PathBuf]) -> io::Result<Walk> {
    let mut inner = PathBuf::new();
    let mut pending: VecDeque<OsString> = components(path).collect();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            inner.pop();
            continue;
        }
        let candidate = inner.join(&name);
        let host = root.join(&candidate);
        match fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = fs::read_link(&host)?;
                if target.is_absolute() {
                    inner = PathBuf::new();
                }
                let target: Vec<OsString> = components(&target).collect();
                for name in target.into_iter().rev() {
                    pending.push_front(name);
                }
            }
            Ok(_) => {
                inner = candidate;
                if let Some(index) = mount_points.iter().rposition(|point| *point == inner) {
                    let below: Vec<OsString> = pending.into_iter().collect();
                    if below.iter().any(|name| name == "..") {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "a path below an earlier mount must not contain '..'",
                        ));
                    }
                    return Ok(Walk::Mount { index, below });
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let mut missing = vec![name];
                for name in pending {
                    if name != ".." {
                        missing.push(name);
                    } else if missing.pop().is_none() {
                        inner.pop();
                    }
                }
                return Ok(Walk::Root(Resolved { inner, missing }));
            }
            Err(err) => return Err(err),
        }
    }
    Ok(Walk::Root(Resolved {
        inner,
        missing: Vec::new(),
    }))
}

/// What a mount target must be when the sandbox has to create it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
}

/// A mount target.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// In the root itself: the path relative to the root, now existing.
    Root(PathBuf),
    /// Below `mount_points[index]`: `below` is created by pid 1 once that
    /// mount is in place (a tmpfs starts empty, a bind shows its source).
    Mount { index: usize, below: Vec<OsString> },
}

/// Resolves `path` inside `root` and, unless it lies below one of
/// `mount_points` (relative to the root, symlinks resolved), creates what
/// is missing (parent directories, then a directory or an empty file),
/// appending each created path (relative to the root) to `stubs`.
pub(crate) fn ensure(
    root: &Path,
    path: &Path,
    kind: Kind,
    mount_points: &[PathBuf],
    stubs: &mut Vec<PathBuf>,
) -> io::Result<Target> {
    let resolved = match walk(root, path, mount_points)? {
        Walk::Root(resolved) => resolved,
        Walk::Mount { index, below } => return Ok(Target::Mount { index, below }),
    };
    let mut relative = resolved.inner;
    let count = resolved.missing.len();
    for (index, name) in resolved.missing.into_iter().enumerate() {
        relative.push(name);
        let host = root.join(&relative);
        if index + 1 == count && kind == Kind::File {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&host)?;
        } else {
            fs::DirBuilder::new().mode(0o755).create(&host)?;
        }
        stubs.push(relative.clone());
    }
    Ok(Target::Root(relative))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn absolute_symlinks_stay_in_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/etc/../../../etc", root.join("link")).unwrap();
        let resolved = resolve(root, Path::new("/link/passwd")).unwrap();
        assert_eq!(resolved.inner, Path::new("etc"));
        assert_eq!(resolved.missing, vec![OsString::from("passwd")]);
    }

    #[test]
    fn ensure_creates_parents_and_reports_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        symlink("../run/x/resolv.conf", {
            fs::create_dir(root.join("etc")).unwrap();
            root.join("etc/resolv.conf")
        })
        .unwrap();
        let mut stubs = Vec::new();
        let target = ensure(
            root,
            Path::new("/etc/resolv.conf"),
            Kind::File,
            &[],
            &mut stubs,
        );
        assert_eq!(
            target.unwrap(),
            Target::Root(PathBuf::from("run/x/resolv.conf"))
        );
        assert!(root.join("run/x/resolv.conf").is_file());
        assert_eq!(
            stubs,
            vec![
                PathBuf::from("run"),
                PathBuf::from("run/x"),
                PathBuf::from("run/x/resolv.conf")
            ]
        );
        let again = ensure(
            root,
            Path::new("/etc/resolv.conf"),
            Kind::File,
            &[],
            &mut stubs,
        );
        assert_eq!(
            again.unwrap(),
            Target::Root(PathBuf::from("run/x/resolv.conf"))
        );
        assert_eq!(stubs.len(), 3);
    }

    #[test]
    fn paths_below_a_mount_point_are_left_to_the_mount() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("run/lock")).unwrap();
        fs::create_dir_all(root.join("var")).unwrap();
        symlink("../run", root.join("var/run")).unwrap();
        let points = [PathBuf::from("dev"), PathBuf::from("run")];
        let mut stubs = Vec::new();
        let target = ensure(
            root,
            Path::new("/var/run/lock/x"),
            Kind::File,
            &points,
            &mut stubs,
        );
        assert_eq!(
            target.unwrap(),
            Target::Mount {
                index: 1,
                below: vec![OsString::from("lock"), OsString::from("x")]
            }
        );
        // The mount point itself is a target in the mount, with nothing below.
        let target = ensure(root, Path::new("/run"), Kind::Dir, &points, &mut stubs);
        assert_eq!(
            target.unwrap(),
            Target::Mount {
                index: 1,
                below: Vec::new()
            }
        );
        assert!(stubs.is_empty());
        assert!(!root.join("run/lock/x").exists());
        let err = ensure(
            root,
            Path::new("/run/a/../b"),
            Kind::Dir,
            &points,
            &mut stubs,
        );
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
