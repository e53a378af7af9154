//! Reading a file's extended attributes, as a layer records them: the one
//! reader both the tree hash (what a cache key sees of a file) and the
//! executor's layer writer (what a layer holds of it) use, so the two can
//! never disagree on which xattrs a file has.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use rustix::io::Errno;

/// Xattrs that belong to the host, not to the file: never read.
const HOST_XATTRS: &[&str] = &["security.selinux"];

/// Every xattr of `path` (not following symlinks), by name, but those of
/// the host (`security.selinux`) and those whose names are not UTF-8 (a
/// layer's PAX records cannot hold them). None where the file system has
/// no xattrs.
pub fn read_xattrs(path: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut list = Vec::new();
    loop {
        let len = match rustix::fs::llistxattr_query(path) {
            Ok(0) | Err(Errno::NOTSUP) => return Ok(out),
            Ok(len) => len,
            Err(e) => return Err(e.into()),
        };
        list.resize(len, 0);
        match rustix::fs::llistxattr(path, &mut list[..]) {
            Ok(n) => {
                list.truncate(n);
                break;
            }
            // The list grew in between: ask again.
            Err(Errno::RANGE) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if HOST_XATTRS.contains(&name) {
            continue;
        }
        if let Some(value) = read_xattr(path, name)? {
            out.insert(name.to_owned(), value);
        }
    }
    Ok(out)
}

/// One xattr's value (not following symlinks); `None` if it is not there
/// (or disappeared meanwhile).
pub fn read_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    loop {
        let len = match rustix::fs::lgetxattr_query(path, name) {
            Ok(len) => len,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut value = vec![0u8; len];
        match rustix::fs::lgetxattr(path, name, &mut value[..]) {
            Ok(n) => {
                value.truncate(n);
                return Ok(Some(value));
            }
            // The value grew in between: ask again.
            Err(Errno::RANGE) => {}
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_xattrs_and_none_where_there_are_none() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        assert_eq!(read_xattrs(&path).unwrap(), BTreeMap::new());
        assert_eq!(read_xattr(&path, "user.a").unwrap(), None);
        rustix::fs::lsetxattr(&path, "user.b", b"2", rustix::fs::XattrFlags::empty()).unwrap();
        rustix::fs::lsetxattr(&path, "user.a", b"", rustix::fs::XattrFlags::empty()).unwrap();
        assert_eq!(
            read_xattrs(&path).unwrap(),
            BTreeMap::from([
                ("user.a".to_owned(), Vec::new()),
                ("user.b".to_owned(), b"2".to_vec()),
            ])
        );
        assert_eq!(read_xattr(&path, "user.b").unwrap(), Some(b"2".to_vec()));
        let missing = tmp.path().join("missing");
        assert!(read_xattrs(&missing).is_err());
    }
}
