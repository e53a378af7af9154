//! Extraction of a `tar://` build context (plain tar or gzip, from a file or
//! standard input) into a fresh directory. It is strict on purpose: only
//! regular files, directories, symlinks whose target stays in the tree, and
//! hard links to files extracted before are accepted, every path must be
//! relative without `..`, and nothing is ever written through a symlink (a
//! parent that is not a real directory is an error), so no entry can land
//! outside the directory. Anything else (devices, fifos, absolute or
//! escaping paths or link targets) rejects the whole archive.
//!
//! Ownership and xattrs are not restored: Docker presents context files as
//! owned by root anyway. Layer extraction (`image::apply`) has to handle
//! every entry type confined to a root; once it exists this extractor may
//! become a thin strict mode over it.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::Error;

/// Extract the tar (or gzip-compressed tar) read from `reader` into `dest`,
/// an existing empty directory. `name` names the archive in errors.
pub(crate) fn extract(reader: impl Read, dest: &Path, name: &str) -> Result<(), Error> {
    let read_error = |source| Error::ArchiveRead {
        archive: name.to_owned(),
        source,
    };
    let mut reader = BufReader::new(reader);
    let gzip = reader
        .fill_buf()
        .map_err(read_error)?
        .starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut extractor = Extractor {
        dest,
        name,
        files: HashSet::new(),
        dirs: Vec::new(),
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        extractor.entry(entry)?;
    }
    extractor.finish()
}

struct Extractor<'a> {
    dest: &'a Path,
    name: &'a str,
    /// Regular files extracted so far (relative), the only hard link targets.
    files: HashSet<PathBuf>,
    /// Directories with their final mode and mtime, applied at the end so
    /// that a read-only directory does not stop later entries.
    dirs: Vec<(PathBuf, u32, u64)>,
}

impl Extractor<'_> {
    fn reject(&self, entry: &Path, reason: impl Into<String>) -> Error {
        Error::ArchiveEntry {
            archive: self.name.to_owned(),
            entry: entry.display().to_string(),
            reason: reason.into(),
        }
    }

    fn io(&self, entry: &Path, source: io::Error) -> Error {
        Error::ArchiveWrite {
            archive: self.name.to_owned(),
            entry: entry.display().to_string(),
            source,
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), Error> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let shown = Path::new(OsStr::from_bytes(&raw)).to_owned();
        let rel = relative(&raw).map_err(|reason| self.reject(&shown, reason))?;
        let mode = entry.header().mode().map_err(|e| self.io(&shown, e))? & 0o7777;
        let mtime = entry.header().mtime().unwrap_or(0);
        if rel.as_os_str().is_empty() {
            // "./": the root itself.
            return if kind.is_dir() {
                Ok(())
            } else {
                Err(self.reject(&shown, "only a directory may name the archive root"))
            };
        }
        self.make_parents(&rel, &shown)?;
        let path = self.dest.join(&rel);
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.clear(&path, &shown)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| self.io(&shown, e))?;
                io::copy(&mut entry, &mut file).map_err(|e| self.io(&shown, e))?;
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .and_then(|()| file.set_times(times(mtime)))
                    .map_err(|e| self.io(&shown, e))?;
                self.files.insert(rel);
            }
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&path) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => {
                        return Err(self.reject(&shown, "a directory would replace a file or link"));
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        fs::create_dir(&path).map_err(|e| self.io(&shown, e))?;
                    }
                    Err(e) => return Err(self.io(&shown, e)),
                }
                self.dirs.retain(|(dir, _, _)| *dir != rel);
                self.dirs.push((rel, mode, mtime));
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(std::borrow::Cow::into_owned)
                    .unwrap_or_default();
                check_link_target(&rel, &target).map_err(|reason| self.reject(&shown, reason))?;
                self.clear(&path, &shown)?;
                symlink(OsStr::from_bytes(&target), &path).map_err(|e| self.io(&shown, e))?;
                self.files.remove(&rel);
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(std::borrow::Cow::into_owned)
                    .unwrap_or_default();
                let target = relative(&target)
                    .map_err(|reason| self.reject(&shown, format!("hard link target: {reason}")))?;
                if !self.files.contains(&target) {
                    return Err(self.reject(
                        &shown,
                        format!(
                            "hard link to {}, which is not a regular file earlier in the archive",
                            target.display()
                        ),
                    ));
                }
                if target == rel {
                    return Ok(());
                }
                self.clear(&path, &shown)?;
                fs::hard_link(self.dest.join(&target), &path).map_err(|e| self.io(&shown, e))?;
                self.files.insert(rel);
            }
            other => {
                return Err(self.reject(
                    &shown,
                    format!(
                        "unsupported entry type {other:?} (only files, directories and links \
                         are allowed in a build context)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Create the missing parents of `rel`; every existing one must be a
    /// real directory, never a symlink.
    fn make_parents(&mut self, rel: &Path, shown: &Path) -> Result<(), Error> {
        let mut current = PathBuf::new();
        let components: Vec<_> = rel.components().collect();
        for component in &components[..components.len().saturating_sub(1)] {
            current.push(component);
            let path = self.dest.join(&current);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) => {
                    let what = if meta.is_symlink() {
                        "a symlink"
                    } else {
                        "not a directory"
                    };
                    return Err(
                        self.reject(shown, format!("its parent {} is {what}", current.display()))
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&path).map_err(|e| self.io(shown, e))?;
                    self.dirs.push((current.clone(), 0o755, 0));
                }
                Err(e) => return Err(self.io(shown, e)),
            }
        }
        Ok(())
    }

    /// Remove what is at `path` so a file or link can take its place; a
    /// directory is never replaced.
    fn clear(&self, path: &Path, shown: &Path) -> Result<(), Error> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => {
                Err(self.reject(shown, "a file or link would replace a directory"))
            }
            Ok(_) => fs::remove_file(path).map_err(|e| self.io(shown, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(shown, e)),
        }
    }

    fn finish(mut self) -> Result<(), Error> {
        // Deepest first, so that making a parent read-only comes last.
        self.dirs
            .sort_by_key(|(dir, _, _)| std::cmp::Reverse(dir.components().count()));
        for (dir, mode, mtime) in &self.dirs {
            let path = self.dest.join(dir);
            let apply = || -> io::Result<()> {
                File::open(&path)?.set_times(times(*mtime))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode))
            };
            apply().map_err(|e| self.io(dir, e))?;
        }
        Ok(())
    }
}

fn times(mtime: u64) -> FileTimes {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(mtime);
    FileTimes::new().set_modified(time).set_accessed(time)
}

/// An archive path as a relative path of normal components: `./` and empty
/// components are dropped; absolute paths and `..` are refused.
fn relative(raw: &[u8]) -> Result<PathBuf, String> {
    if raw.starts_with(b"/") {
        return Err("absolute path".to_owned());
    }
    if raw.contains(&0) {
        return Err("NUL byte in path".to_owned());
    }
    let mut rel = PathBuf::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("path contains '..'".to_owned()),
            _ => rel.push(OsStr::from_bytes(part)),
        }
    }
    Ok(rel)
}

/// A symlink at `rel` may point to `target` only if the target is relative
/// and, read from the link's directory, never climbs above the root.
fn check_link_target(rel: &Path, target: &[u8]) -> Result<(), String> {
    if target.is_empty() {
        return Err("symlink with an empty target".to_owned());
    }
    let shown = String::from_utf8_lossy(target);
    if target.starts_with(b"/") {
        return Err(format!("symlink to the absolute path {shown:?}"));
    }
    let mut depth = rel.components().count() - 1;
    for component in Path::new(OsStr::from_bytes(target)).components() {
        match component {
            Component::ParentDir => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("symlink to {shown:?} leaves the archive"))?;
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A tar built header by header, so that tests can write entries the
    /// `tar` crate's builder would refuse.
    struct RawTar(Vec<u8>);

    impl RawTar {
        fn new() -> Self {
            Self(Vec::new())
        }

        fn entry(mut self, path: &str, kind: tar::EntryType, link: &str, data: &[u8]) -> Self {
            let mut header = tar::Header::new_gnu();
            {
                let name = &mut header.as_old_mut().name;
                name[..path.len()].copy_from_slice(path.as_bytes());
                let linkname = &mut header.as_old_mut().linkname;
                linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            header.set_entry_type(kind);
            header.set_size(data.len() as u64);
            header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            header.set_mtime(1_700_000_000);
            header.set_cksum();
            self.0.extend_from_slice(header.as_bytes());
            self.0.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            self.0.extend(std::iter::repeat_n(0, pad));
            self
        }

        fn file(self, path: &str, data: &[u8]) -> Self {
            self.entry(path, tar::EntryType::Regular, "", data)
        }

        fn dir(self, path: &str) -> Self {
            self.entry(path, tar::EntryType::Directory, "", b"")
        }

        fn symlink(self, path: &str, target: &str) -> Self {
            self.entry(path, tar::EntryType::Symlink, target, b"")
        }

        fn hardlink(self, path: &str, target: &str) -> Self {
            self.entry(path, tar::EntryType::Link, target, b"")
        }

        fn finish(mut self) -> Vec<u8> {
            self.0.extend(std::iter::repeat_n(0, 1024));
            self.0
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn extract_bytes(bytes: &[u8]) -> (tempfile::TempDir, Result<(), Error>) {
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("ctx");
        fs::create_dir(&dest).unwrap();
        let result = extract(bytes, &dest, "test.tar");
        (outer, result)
    }

    #[test]
    fn extracts_plain_and_gzip_archives() {
        let tar = RawTar::new()
            .dir("./")
            .dir("./app/")
            .file("./app/main.go", b"package main\n")
            .file("implicit/parent/file.txt", b"x")
            .symlink("app/link", "main.go")
            .symlink("implicit/up", "../app")
            .hardlink("app/hard", "app/main.go")
            .finish();
        for bytes in [tar.clone(), gzip(&tar)] {
            let (outer, result) = extract_bytes(&bytes);
            result.unwrap();
            let root = outer.path().join("ctx");
            assert_eq!(
                fs::read(root.join("app/main.go")).unwrap(),
                b"package main\n"
            );
            assert_eq!(
                fs::read(root.join("implicit/parent/file.txt")).unwrap(),
                b"x"
            );
            assert_eq!(
                fs::read_link(root.join("app/link")).unwrap(),
                Path::new("main.go")
            );
            assert_eq!(
                fs::read_link(root.join("implicit/up")).unwrap(),
                Path::new("../app")
            );
            assert_eq!(fs::read(root.join("app/hard")).unwrap(), b"package main\n");
            let meta = fs::metadata(root.join("app/main.go")).unwrap();
            assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
            assert_eq!(
                meta.modified().unwrap(),
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
            );
        }
    }

    #[test]
    fn rejects_malicious_archives() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "dotdot",
                RawTar::new().file("../evil", b"x").finish(),
                "'..'",
            ),
            (
                "nested dotdot",
                RawTar::new().file("a/../../evil", b"x").finish(),
                "'..'",
            ),
            (
                "absolute",
                RawTar::new().file("/etc/evil", b"x").finish(),
                "absolute path",
            ),
            (
                "absolute symlink",
                RawTar::new().symlink("etc", "/etc").finish(),
                "absolute path",
            ),
            (
                "escaping symlink",
                RawTar::new()
                    .dir("a/")
                    .symlink("a/up", "../../outside")
                    .finish(),
                "leaves the archive",
            ),
            (
                "symlink then file",
                RawTar::new()
                    .symlink("sub", "dir")
                    .dir("dir/")
                    .file("sub/file", b"x")
                    .finish(),
                "parent sub is a symlink",
            ),
            (
                "hard link outside",
                RawTar::new()
                    .hardlink("passwd", "../../etc/passwd")
                    .finish(),
                "hard link target",
            ),
            (
                "hard link to absolute",
                RawTar::new().hardlink("passwd", "/etc/passwd").finish(),
                "hard link target: absolute path",
            ),
            (
                "hard link to unknown",
                RawTar::new().hardlink("x", "not/there").finish(),
                "not a regular file earlier",
            ),
            (
                "device",
                RawTar::new()
                    .entry("null", tar::EntryType::Char, "", b"")
                    .finish(),
                "unsupported entry type",
            ),
            (
                "fifo",
                RawTar::new()
                    .entry("pipe", tar::EntryType::Fifo, "", b"")
                    .finish(),
                "unsupported entry type",
            ),
            (
                "file over dir",
                RawTar::new()
                    .dir("d/")
                    .file("d/f", b"x")
                    .file("d", b"y")
                    .finish(),
                "would replace a directory",
            ),
        ];
        for (name, bytes, message) in cases {
            let (outer, result) = extract_bytes(&bytes);
            let err = result.expect_err(name).to_string();
            assert!(err.contains(message), "{name}: {err}");
            assert!(err.contains("test.tar"), "{name}: {err}");
            // Nothing was written outside the destination.
            let names: Vec<_> = fs::read_dir(outer.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["ctx"], "{name}");
        }
    }

    #[test]
    fn truncated_archive_is_an_error() {
        let tar = RawTar::new().file("a", &[7; 2000]).finish();
        let (_outer, result) = extract_bytes(&tar[..1000]);
        let err = result.unwrap_err();
        assert!(
            matches!(err, Error::ArchiveRead { .. } | Error::ArchiveWrite { .. }),
            "{err}"
        );
    }
}
