//! Copies of files that share no inode with their source: a reflink
//! (`FICLONE`, the file systems' copy-on-write clone: Btrfs, XFS, bcachefs)
//! where the file system offers it, and a plain byte copy otherwise.
//!
//! Why not a hard link: a hard link is the same file under a second name.
//! When one name is in a store (the image store's extracted layers and
//! blobs, a cache layout) and the other outside it (the build context, an
//! exported OCI layout), editing either file in place changes what the
//! other holds, and so what later builds on that store see. A reflink
//! shares only blocks, copied on write: the two files are independent.

use std::fs::File;
use std::io;
use std::path::Path;

/// Makes `dst` (created, or truncated when present) a copy of the file
/// `src`, by reflink when the file system can, by copying the bytes
/// otherwise. Returns the size copied. The copy's mode is the process's
/// default one (0666 less the umask): the caller sets the metadata it
/// wants.
pub fn copy_file(src: &Path, dst: &Path) -> io::Result<u64> {
    let from = File::open(src)?;
    let mut to = File::create(dst)?;
    copy_into(&from, &mut to)
}

/// Makes the empty file `to` a copy of `from` (both open), by reflink when
/// the file system can, by copying the bytes otherwise; returns the size.
pub fn copy_into(from: &File, to: &mut File) -> io::Result<u64> {
    if clone_into(from, to) {
        return Ok(to.metadata()?.len());
    }
    let mut reader = from;
    io::copy(&mut reader, to)
}

/// Clones `from` into `to` with `FICLONE`; false when the file system
/// cannot (not supported, another file system, not a regular file), which
/// leaves `to` as it was.
#[must_use]
pub fn clone_into(from: &File, to: &File) -> bool {
    // EOPNOTSUPP, EXDEV, EINVAL, ENOTTY...: the caller copies instead.
    rustix::fs::ioctl_ficlone(to, from).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write as _;
    use std::os::unix::fs::MetadataExt as _;

    fn same_inode(a: &Path, b: &Path) -> bool {
        let (a, b) = (fs::metadata(a).unwrap(), fs::metadata(b).unwrap());
        (a.dev(), a.ino()) == (b.dev(), b.ino())
    }

    #[test]
    fn the_copy_is_its_own_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        fs::write(&src, b"first").unwrap();
        assert_eq!(copy_file(&src, &dst).unwrap(), 5);
        assert!(!same_inode(&src, &dst));
        // Edited in place, the source changes; the copy does not.
        let mut f = fs::OpenOptions::new().write(true).open(&src).unwrap();
        f.write_all(b"EDITS").unwrap();
        drop(f);
        assert_eq!(fs::read(&dst).unwrap(), b"first");
    }

    #[test]
    fn copying_onto_a_file_replaces_its_content() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        fs::write(&src, b"ab").unwrap();
        fs::write(&dst, b"longer old content").unwrap();
        copy_file(&src, &dst).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), b"ab");
    }
}
