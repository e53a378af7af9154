//! The content hash of a COPY/ADD selection, the input the build cache keys
//! on: exactly the selected files and what lies below the selected
//! directories; for each, its path, type, permission bits, owner, xattrs,
//! link target and content. Never times, inode numbers or anything else
//! that changes when the same tree is checked out again elsewhere.
//!
//! The encoding is the storage layer's one tree hash
//! ([`executor_cache::TreeHasher`], combined per source with
//! [`executor_cache::selection_hash`]), the same one an `ADD <url>`'s
//! download is hashed with: this module only walks the selection and
//! presents each file with the owner the context gives it. The xattrs a
//! layer leaves out (`security.selinux`, a property of the host, and names
//! that are not UTF-8) are left out here too.

use std::fmt;
use std::fs::Metadata;
use std::path::{Path, PathBuf};

use executor_cache::{SelectedTree, TreeHasher, entry_at, selection_hash};

use super::select::{Entry, Selected, Walk};
use super::{Error, Result};

/// A SHA-256 digest of a selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentDigest(pub [u8; 32]);

impl ContentDigest {
    /// The digest in lower-case hexadecimal, without the algorithm.
    #[must_use]
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

/// Hash `selected` (as [`Context::select`](super::Context::select) returns
/// it) and, for each selected directory, what `walk` yields below it
/// (normally `|s| context.walk(s, excludes)`).
pub fn content_hash<'a, W>(selected: &[Selected], mut walk: W) -> Result<ContentDigest>
where
    W: FnMut(&Selected) -> Result<Walk<'a>>,
{
    let mut sources = Vec::with_capacity(selected.len());
    for source in selected {
        let mut tree = TreeHasher::new();
        add(
            &mut tree,
            PathBuf::from("."),
            &source.abs,
            &source.metadata,
            (source.uid, source.gid),
        )?;
        if source.metadata.is_dir() {
            for entry in walk(source)? {
                let Entry {
                    sub,
                    abs,
                    metadata,
                    uid,
                    gid,
                    ..
                } = entry?;
                add(&mut tree, PathBuf::from(sub), &abs, &metadata, (uid, gid))?;
            }
        }
        sources.push(SelectedTree {
            pattern: source.pattern_index as u64,
            path: source.rel.clone(),
            tree: tree.finish(),
        });
    }
    Ok(ContentDigest(*selection_hash(&sources).as_bytes()))
}

/// Adds the file `abs` at `path`, owned as the context presents it. A
/// socket adds nothing: COPY cannot copy one.
fn add(
    tree: &mut TreeHasher,
    path: PathBuf,
    abs: &Path,
    meta: &Metadata,
    (uid, gid): (u32, u32),
) -> Result<()> {
    let entry = entry_at(abs, meta, path).map_err(|source| Error::Io {
        path: abs.to_owned(),
        source,
    })?;
    if let Some(mut entry) = entry {
        entry.uid = u64::from(uid);
        entry.gid = u64::from(gid);
        tree.add(&entry);
    }
    Ok(())
}

impl super::Context {
    /// [`content_hash`] of a selection from this context, walking selected
    /// directories with the same `excludes`.
    pub fn content_hash(
        &self,
        selected: &[Selected],
        excludes: &[String],
    ) -> Result<ContentDigest> {
        content_hash(selected, |source| self.walk(source, excludes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Context;
    use crate::dockerfile::dockerignore::DockerIgnore;
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::time::{Duration, SystemTime};

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("app/sub")).unwrap();
        fs::write(root.join("app/a.txt"), "alpha").unwrap();
        fs::write(root.join("app/sub/b.txt"), "beta").unwrap();
        fs::write(root.join("top.txt"), "top").unwrap();
        symlink("a.txt", root.join("app/link")).unwrap();
        dir
    }

    fn hash(root: &Path, sources: &[&str], excludes: &[&str], ignore: &str) -> ContentDigest {
        let ignore = (!ignore.is_empty()).then(|| DockerIgnore::parse(ignore).unwrap());
        let context = Context::from_dir(root, ignore).unwrap();
        let sources: Vec<String> = sources.iter().map(|s| (*s).to_owned()).collect();
        let excludes: Vec<String> = excludes.iter().map(|s| (*s).to_owned()).collect();
        let selected = context.select(&sources, &excludes).unwrap();
        context.content_hash(&selected, &excludes).unwrap()
    }

    fn set_mtime(path: &Path, secs: u64) {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        fs::File::open(path)
            .unwrap()
            .set_times(fs::FileTimes::new().set_modified(time))
            .unwrap();
    }

    #[test]
    fn stable_under_mtime_and_copies() {
        let one = tree();
        let before = hash(one.path(), &["app", "top.txt"], &[], "");
        assert_eq!(before, hash(one.path(), &["app", "top.txt"], &[], ""));
        set_mtime(&one.path().join("app/a.txt"), 1);
        set_mtime(&one.path().join("app/sub"), 2);
        set_mtime(&one.path().join("app"), 3);
        assert_eq!(before, hash(one.path(), &["app", "top.txt"], &[], ""));
        // The same tree elsewhere hashes the same.
        let two = tree();
        assert_eq!(before, hash(two.path(), &["app", "top.txt"], &[], ""));
        assert_eq!(before.to_string().len(), "sha256:".len() + 64);
        assert!(before.to_string().starts_with("sha256:"));
    }

    #[test]
    fn changes_with_content_mode_links_and_names() {
        let dir = tree();
        let root = dir.path();
        let base = hash(root, &["app"], &[], "");
        let mut seen = vec![base];
        let mut check = |label: &str| {
            let now = hash(root, &["app"], &[], "");
            assert!(!seen.contains(&now), "{label}: hash did not change");
            seen.push(now);
        };
        fs::write(root.join("app/a.txt"), "alphA").unwrap();
        check("content");
        fs::set_permissions(root.join("app/a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        check("file mode");
        fs::set_permissions(root.join("app/sub"), fs::Permissions::from_mode(0o700)).unwrap();
        check("directory mode");
        fs::remove_file(root.join("app/link")).unwrap();
        symlink("sub/b.txt", root.join("app/link")).unwrap();
        check("link target");
        fs::rename(root.join("app/sub/b.txt"), root.join("app/sub/c.txt")).unwrap();
        check("name");
        fs::write(root.join("app/sub/empty"), "").unwrap();
        check("new empty file");
        fs::create_dir(root.join("app/emptydir")).unwrap();
        check("new empty directory");
    }

    #[test]
    fn depends_on_the_selection_only() {
        let dir = tree();
        let root = dir.path();
        let app = hash(root, &["app"], &[], "");
        fs::write(root.join("top.txt"), "changed").unwrap();
        assert_eq!(app, hash(root, &["app"], &[], ""), "unselected file");
        fs::write(root.join("app/ignored.log"), "x").unwrap();
        assert_ne!(app, hash(root, &["app"], &[], ""));
        assert_eq!(
            app,
            hash(root, &["app"], &[], "*.log\n**/*.log"),
            "dockerignored"
        );
        assert_eq!(app, hash(root, &["app"], &["*.log"], ""), "excluded");
        // Order and grouping of sources count.
        assert_ne!(
            hash(root, &["app/a.txt", "top.txt"], &[], ""),
            hash(root, &["top.txt", "app/a.txt"], &[], "")
        );
        // Concatenation cannot collide: content moved across a file boundary.
        let other = tempfile::tempdir().unwrap();
        fs::write(other.path().join("x"), "ab").unwrap();
        fs::write(other.path().join("y"), "c").unwrap();
        let first = hash(other.path(), &["x", "y"], &[], "");
        fs::write(other.path().join("x"), "a").unwrap();
        fs::write(other.path().join("y"), "bc").unwrap();
        assert_ne!(first, hash(other.path(), &["x", "y"], &[], ""));
    }

    #[test]
    fn xattrs_count() {
        let dir = tree();
        let path = dir.path().join("top.txt");
        let before = hash(dir.path(), &["top.txt"], &[], "");
        rustix::fs::lsetxattr(&path, "user.test", b"1", rustix::fs::XattrFlags::empty()).unwrap();
        let with = hash(dir.path(), &["top.txt"], &[], "");
        assert_ne!(before, with);
        rustix::fs::lsetxattr(&path, "user.test", b"2", rustix::fs::XattrFlags::empty()).unwrap();
        assert_ne!(with, hash(dir.path(), &["top.txt"], &[], ""));
    }
}
