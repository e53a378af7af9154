//! The content hash of a COPY/ADD selection, the input the build cache keys
//! on: a SHA-256 over exactly the selected files and what lies below the
//! selected directories, in walk order: for each, its path, type, permission
//! bits, owner, xattrs, link target and content. Never times, inode numbers
//! or anything else that changes when the same tree is checked out again
//! elsewhere. Every field is framed (a tag byte, fixed-width integers,
//! length-prefixed strings, file contents by their own SHA-256), so that no
//! two different inputs give the same byte stream. The `security.selinux`
//! xattr is left out: it is a property of the host, not of the context.

use std::fmt;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::select::{Entry, Selected, Walk};
use super::{Error, Result};

/// Version of the hashed byte stream; changing it changes every hash.
const FORMAT: &[u8] = b"executor context content hash v1";

/// Xattrs left out of the hash.
const HOST_XATTRS: &[&[u8]] = &[b"security.selinux"];

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
    let mut hasher = Framed(Sha256::new());
    hasher.bytes(FORMAT);
    hasher.u64(selected.len() as u64);
    for source in selected {
        hasher.tag(b'S');
        hasher.u64(source.pattern_index as u64);
        hasher.bytes(source.rel.as_bytes());
        hasher.file("", &source.abs, &source.metadata, source.uid, source.gid)?;
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
                hasher.tag(b'E');
                hasher.file(&sub, &abs, &metadata, uid, gid)?;
            }
        }
        hasher.tag(b'Z');
    }
    Ok(ContentDigest(hasher.0.finalize().into()))
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

/// A hasher whose every write is self-delimiting.
struct Framed(Sha256);

impl Framed {
    fn tag(&mut self, tag: u8) {
        self.0.update([tag]);
    }

    fn u64(&mut self, value: u64) {
        self.0.update(value.to_be_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.0.update(value.to_be_bytes());
    }

    fn bytes(&mut self, value: &[u8]) {
        self.u64(value.len() as u64);
        self.0.update(value);
    }

    /// One file: path, type, mode, owner, xattrs, then what its type has.
    fn file(&mut self, path: &str, abs: &Path, meta: &Metadata, uid: u32, gid: u32) -> Result<()> {
        let io_error = |source| Error::Io {
            path: abs.to_owned(),
            source,
        };
        let kind = meta.file_type();
        let type_byte = if kind.is_file() {
            b'f'
        } else if kind.is_dir() {
            b'd'
        } else if kind.is_symlink() {
            b'l'
        } else if kind.is_char_device() {
            b'c'
        } else if kind.is_block_device() {
            b'b'
        } else if kind.is_fifo() {
            b'p'
        } else {
            b's'
        };
        self.bytes(path.as_bytes());
        self.tag(type_byte);
        self.u32(meta.mode() & 0o7777);
        self.u32(uid);
        self.u32(gid);
        let xattrs: Vec<_> = xattrs(abs)
            .map_err(io_error)?
            .into_iter()
            .filter(|(name, _)| !HOST_XATTRS.contains(&name.as_slice()))
            .collect();
        self.u64(xattrs.len() as u64);
        for (name, value) in &xattrs {
            self.bytes(name);
            self.bytes(value);
        }
        match type_byte {
            b'f' => {
                let (length, digest) = file_digest(abs).map_err(io_error)?;
                self.u64(length);
                self.0.update(digest);
            }
            b'l' => {
                let target = std::fs::read_link(abs).map_err(io_error)?;
                self.bytes(target.as_os_str().as_bytes());
            }
            b'c' | b'b' => self.u64(meta.rdev()),
            _ => {}
        }
        Ok(())
    }
}

/// Length and SHA-256 of a file's content, read in a stream.
fn file_digest(path: &Path) -> io::Result<(u64, [u8; 32])> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 256 * 1024];
    let mut length = 0u64;
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        length += n as u64;
    }
    Ok((length, hasher.finalize().into()))
}

/// The extended attributes of `path` (not following a symlink), sorted by
/// name. A file system without xattrs has none.
pub fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = loop {
        let size = match rustix::fs::llistxattr_query(path) {
            Ok(size) => size,
            Err(e) if e == rustix::io::Errno::NOTSUP => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut names = vec![0; size];
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(len) => {
                names.truncate(len);
                break names;
            }
            // Grew in between: ask again.
            Err(e) if e == rustix::io::Errno::RANGE => {}
            Err(e) => return Err(e.into()),
        }
    };
    let mut xattrs = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name_str = std::ffi::OsStr::from_bytes(name);
        let value = loop {
            let size = match rustix::fs::lgetxattr_query(path, name_str) {
                Ok(size) => size,
                Err(e) if e == rustix::io::Errno::NODATA => break None,
                Err(e) => return Err(e.into()),
            };
            let mut value = vec![0; size];
            match rustix::fs::lgetxattr(path, name_str, &mut value[..]) {
                Ok(len) => {
                    value.truncate(len);
                    break Some(value);
                }
                Err(e) if e == rustix::io::Errno::RANGE => {}
                Err(e) if e == rustix::io::Errno::NODATA => break None,
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(value) = value {
            xattrs.push((name.to_vec(), value));
        }
    }
    xattrs.sort();
    Ok(xattrs)
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
        assert_eq!(
            xattrs(&path).unwrap(),
            vec![(b"user.test".to_vec(), b"1".to_vec())]
        );
        assert_ne!(before, hash(dir.path(), &["top.txt"], &[], ""));
    }
}
