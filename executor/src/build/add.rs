//! ADD's sources beyond the build context: URLs downloaded to a file (as
//! Docker does: streamed, checked against `--checksum`, mode 0600, mtime
//! from `Last-Modified`), git URLs cloned at a ref (BuildKit: the tree
//! without `.git` unless `--keep-git-dir`), and which local files are
//! archives to extract (by content, as Docker does: gzip, bzip2, xz, zstd,
//! plain tar). Extraction itself is layer apply's, confined to the
//! destination. This file does not place files in the image: `copy.rs` does.

use std::fs;
use std::io::{self, Read, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use sha2::Digest as _;
use tokio::runtime::Handle;

use super::copy::Source;
use crate::context::{self, GitOptions, GitSource};

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("cannot download {url}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot download {url}: the server answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("invalid --checksum {value:?}: expected ALGORITHM:HEX with sha256, sha384 or sha512")]
    BadChecksum { value: String },
    #[error("checksum mismatch for {url}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("--checksum is not supported for the git source {url}")]
    ChecksumOnGit { url: String },
    #[error("invalid git source {url}")]
    GitUrl {
        url: String,
        #[source]
        source: context::SourceError,
    },
    #[error("cannot fetch the git source {url}")]
    Git {
        url: String,
        #[source]
        source: context::Error,
    },
    #[error("the git source {url} has no directory {dir:?}")]
    GitSubdir { url: String, dir: String },
    #[error("cannot write {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T, E = AddError> = std::result::Result<T, E>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> AddError + '_ {
    move |source| AddError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Is this ADD source a URL to download (http or https, not a git URL)?
#[must_use]
pub fn is_url(source: &str) -> bool {
    let lower = source.to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://")) && !is_git_url(source)
}

/// Is this ADD source a git repository (BuildKit's rules): `git://`,
/// `ssh://`, `git@HOST:PATH`, or an http(s) URL whose path ends in `.git`?
#[must_use]
pub fn is_git_url(source: &str) -> bool {
    let lower = source.to_ascii_lowercase();
    if lower.starts_with("git://") || lower.starts_with("ssh://") || lower.starts_with("git@") {
        return true;
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let repo = lower.split(['#', '?']).next().unwrap_or_default();
        return Path::new(repo.trim_end_matches('/'))
            .extension()
            .is_some_and(|e| e == "git");
    }
    false
}

/// Is this ADD source fetched from elsewhere rather than read from the
/// context?
#[must_use]
pub fn is_remote(source: &str) -> bool {
    is_url(source) || is_git_url(source)
}

/// Is this local file an archive ADD extracts? Decided by content, not
/// name, as Docker does: after gzip, bzip2, xz or zstd decompression (or
/// none), the file starts with a valid tar header (ustar, GNU or v7: the
/// header checksum is what tells). A compressed file that is not a tar is
/// copied as it is.
#[must_use]
pub fn is_local_archive(path: &Path) -> bool {
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    let Ok(mut reader) = crate::image::apply::decompress(io::BufReader::new(file)) else {
        return false;
    };
    let mut head = [0u8; 512];
    let mut read = 0;
    while read < head.len() {
        match reader.read(&mut head[read..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    read == head.len() && is_tar_header(&head)
}

/// A tar header block: a name, and a checksum field that matches the
/// block's bytes (summed with the field itself as spaces, unsigned or
/// signed as old tars did).
fn is_tar_header(block: &[u8; 512]) -> bool {
    if block[0] == 0 {
        return false;
    }
    let field = &block[148..156];
    let digits: String = field
        .iter()
        .map(|&b| b as char)
        .take_while(|c| *c != '\0')
        .collect();
    let Ok(stored) = u32::from_str_radix(digits.trim(), 8) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0u32, 0i32);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u32::from(b);
        signed += i32::from(i8::from_ne_bytes([b]));
    }
    stored == unsigned || i32::try_from(stored).is_ok_and(|s| s == signed)
}

/// Fetches one remote ADD source into a new directory below `dir`: a URL
/// is downloaded to a file, a git URL cloned to a directory.
pub fn fetch(
    source: &str,
    checksum: Option<&str>,
    keep_git_dir: bool,
    dir: &Path,
    runtime: &Handle,
) -> Result<Source> {
    let into = tempfile::Builder::new()
        .prefix("remote-")
        .tempdir_in(dir)
        .map_err(io_at(dir))?
        .keep();
    if is_git_url(source) {
        if checksum.is_some() {
            return Err(AddError::ChecksumOnGit {
                url: source.to_owned(),
            });
        }
        let path = clone(source, keep_git_dir, &into)?;
        return Ok(Source {
            path,
            rel: String::new(),
            entries: None,
        });
    }
    let path = runtime.block_on(download(source, checksum, &into))?;
    Ok(Source {
        rel: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path,
        entries: None,
    })
}

/// The checksum `--checksum` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

fn parse_checksum(value: &str) -> Result<(Algorithm, String)> {
    let bad = || AddError::BadChecksum {
        value: value.to_owned(),
    };
    let (algorithm, hex_part) = value.split_once(':').ok_or_else(bad)?;
    let (algorithm, len) = match algorithm {
        "sha256" => (Algorithm::Sha256, 64),
        "sha384" => (Algorithm::Sha384, 96),
        "sha512" => (Algorithm::Sha512, 128),
        _ => return Err(bad()),
    };
    if hex_part.len() != len || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok((algorithm, hex_part.to_ascii_lowercase()))
}

/// Hashes what is written, in the algorithm `--checksum` names.
enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Self::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => Self::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => Self::Sha512(sha2::Sha512::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha384(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            Self::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Self::Sha384(h) => format!("sha384:{}", hex::encode(h.finalize())),
            Self::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// The file name a download gets: the URL path's last segment.
fn file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let path = path.split_once("://").map_or(path, |(_, rest)| rest);
    path.split_once('/')
        .map(|(_, p)| p)
        .unwrap_or_default()
        .rsplit('/')
        .find(|s| !s.is_empty() && *s != "." && *s != "..")
        .unwrap_or("download")
        .to_owned()
}

/// Downloads `url` into `dir`, named after the URL's last path segment:
/// streamed to the file and hashed on the way, checked against `checksum`
/// when given, mode 0600, mtime from `Last-Modified` when the server sends
/// it (as Docker does).
pub async fn download(url: &str, checksum: Option<&str>, dir: &Path) -> Result<PathBuf> {
    let expected = checksum.map(parse_checksum).transpose()?;
    let request = |source| AddError::Request {
        url: url.to_owned(),
        source,
    };
    let mut response = reqwest::get(url).await.map_err(request)?;
    if !response.status().is_success() {
        return Err(AddError::Status {
            url: url.to_owned(),
            status: response.status(),
        });
    }
    let modified = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let path = dir.join(file_name(url));
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_at(&path))?;
    let mut out = io::BufWriter::new(file);
    let mut hasher = Hasher::new(expected.as_ref().map_or(Algorithm::Sha256, |(a, _)| *a));
    let mut size = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(request)? {
        hasher.update(&chunk);
        out.write_all(&chunk).map_err(io_at(&path))?;
        size += chunk.len() as u64;
    }
    let file = out.into_inner().map_err(|e| io_at(&path)(e.into_error()))?;
    let actual = hasher.finish();
    if let Some((_, hex_part)) = &expected
        && !actual.ends_with(hex_part.as_str())
    {
        drop(file);
        let _ = fs::remove_file(&path);
        return Err(AddError::ChecksumMismatch {
            url: url.to_owned(),
            expected: checksum.unwrap_or_default().to_owned(),
            actual,
        });
    }
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_at(&path))?;
    if let Some(modified) = modified {
        file.set_modified(modified).map_err(io_at(&path))?;
    }
    tracing::debug!(%url, size, digest = %actual, "downloaded");
    Ok(path)
}

/// Clones a git URL into `dir/checkout`; returns the directory ADD copies
/// (the checkout, or its `#REF:DIR` directory). With `keep_git_dir` the
/// repository is the checkout's `.git`, else it lives beside the checkout.
fn clone(url: &str, keep_git_dir: bool, dir: &Path) -> Result<PathBuf> {
    let source = GitSource::from_url(url).map_err(|source| AddError::GitUrl {
        url: url.to_owned(),
        source,
    })?;
    let options = GitOptions::default()
        .with_env()
        .map_err(|source| AddError::GitUrl {
            url: url.to_owned(),
            source,
        })?;
    let worktree = dir.join("checkout");
    let gitdir = if keep_git_dir {
        worktree.join(".git")
    } else {
        dir.join("repository")
    };
    let commit =
        context::Context::clone_git(&source, &options, &gitdir, &worktree).map_err(|source| {
            AddError::Git {
                url: url.to_owned(),
                source,
            }
        })?;
    tracing::debug!(%url, %commit, "cloned ADD git source");
    let Some(sub) = &source.subdir else {
        return Ok(worktree);
    };
    let mut path = worktree.clone();
    for part in sub.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return Err(AddError::GitSubdir {
                url: url.to_owned(),
                dir: sub.clone(),
            });
        }
        path.push(part);
    }
    // A symlink must not lead the copy out of the checkout.
    let real = fs::canonicalize(&path).ok();
    let root = fs::canonicalize(&worktree).map_err(io_at(&worktree))?;
    match real {
        Some(real) if real.starts_with(&root) && real.is_dir() => Ok(real),
        _ => Err(AddError::GitSubdir {
            url: url.to_owned(),
            dir: sub.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_urls_are_told_from_downloads() {
        for git in [
            "https://github.com/moby/buildkit.git#v0.10.1",
            "http://127.0.0.1:8080/repo.git",
            "git://127.0.0.1/repo#main",
            "git@github.com:moby/buildkit.git",
            "ssh://git@host/repo",
        ] {
            assert!(is_git_url(git), "{git}");
            assert!(!is_url(git), "{git}");
            assert!(is_remote(git), "{git}");
        }
        for url in [
            "https://example.com/file.tar.gz",
            "http://127.0.0.1/a.git.tar",
        ] {
            assert!(is_url(url), "{url}");
            assert!(!is_git_url(url), "{url}");
        }
        assert!(!is_remote("src/app.git"));
    }

    #[test]
    fn download_names_come_from_the_url_path() {
        assert_eq!(file_name("https://h/a/b/c.tar.gz?x=1#f"), "c.tar.gz");
        assert_eq!(file_name("https://h/a/"), "a");
        assert_eq!(file_name("https://h"), "download");
        assert_eq!(file_name("https://h/.."), "download");
    }

    #[test]
    fn checksums_are_checked_for_shape() {
        assert!(parse_checksum(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(parse_checksum(&format!("sha512:{}", "A".repeat(128))).is_ok());
        for bad in [
            "sha256:abc",
            "md5:00",
            "nocolon",
            &format!("sha1:{}", "a".repeat(40)),
        ] {
            assert!(
                matches!(parse_checksum(bad), Err(AddError::BadChecksum { .. })),
                "{bad}"
            );
        }
    }

    fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, data).unwrap();
        path
    }

    #[test]
    fn archives_are_recognised_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let tar = {
            let mut builder = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_gnu();
            header.set_size(5);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, "hello", &b"hello"[..])
                .unwrap();
            builder.into_inner().unwrap()
        };
        let v7 = {
            let mut header = tar::Header::new_old();
            header.as_old_mut().name[..5].copy_from_slice(b"hello");
            header.set_size(0);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_cksum();
            let mut out = header.as_bytes().to_vec();
            out.extend_from_slice(&[0; 1024]);
            out
        };
        assert!(is_local_archive(&write_file(dir.path(), "plain.tar", &tar)));
        assert!(is_local_archive(&write_file(dir.path(), "v7.tar", &v7)));
        let write = |name: &str, data: &[u8]| write_file(dir.path(), name, data);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        assert!(is_local_archive(&write("x.bin", &gz.finish().unwrap())));
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&tar).unwrap();
        assert!(is_local_archive(&write("b", &bz.finish().unwrap())));
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&tar).unwrap();
        assert!(is_local_archive(&write("x", &xz.finish().unwrap())));
        assert!(is_local_archive(&write(
            "z",
            &zstd::encode_all(&tar[..], 3).unwrap()
        )));
        assert!(!is_local_archive(&write("a.tar.gz", b"not an archive")));
        assert!(!is_local_archive(&write("bzh", b"BZh is a word")));
        // Compressed, but not a tar: copied as it is (Docker's rule).
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&[b'x'; 2000]).unwrap();
        assert!(!is_local_archive(&write("text.gz", &gz.finish().unwrap())));
    }
}
