//! Build contexts: where the files a build may read come from (a directory
//! used in place, a tar or tar.gz extracted into a temporary directory, a git
//! commit cloned with git2), which of them the build sees (`.dockerignore`,
//! `--context-sub-path`), which ones a COPY or ADD selects, and a content hash
//! of a selection for the build cache. It knows nothing of images, layers or
//! registries, and never reads a file outside the context on behalf of the
//! Dockerfile: sources are resolved inside the context root, and a symlink
//! that leads out of it is an error.

mod archive;
pub(crate) mod git;
pub(crate) mod gomatch;
pub mod hash;
pub mod select;
pub mod source;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::dockerfile::dockerignore::{self, DockerIgnore, IgnoreError};
use crate::dockerfile::gopath;

pub use hash::{ContentDigest, content_hash};
pub use select::{Entry, Selected, Walk};
pub use source::{
    ContextSource, GitCredentials, GitLocation, GitOptions, GitSource, PullMethod, SourceError,
};

const SUB_PATH: &str = "--context-sub-path";

/// The Dockerfile name used when `--dockerfile` is not given.
pub const DEFAULT_DOCKERFILE: &str = "Dockerfile";

/// Errors from preparing a context and selecting files in it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("build context directory {} cannot be used", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("build context {} is not a directory", path.display())]
    NotADir { path: PathBuf },
    #[error("failed to read build context archive {archive}")]
    ArchiveRead {
        archive: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to extract {entry:?} from build context archive {archive}")]
    ArchiveWrite {
        archive: String,
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("refusing build context archive {archive}: entry {entry:?}: {reason}")]
    ArchiveEntry {
        archive: String,
        entry: String,
        reason: String,
    },
    #[error("failed to create a temporary directory for the build context in {}", dir.display())]
    TempDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("git context {url}: {action} failed{hint}")]
    Git {
        url: String,
        action: String,
        hint: &'static str,
        #[source]
        source: git2::Error,
    },
    #[error("git context {url}: {reason}")]
    GitRef { url: String, reason: String },
    #[error("invalid {what} {sub_path:?}: {reason}")]
    SubPath {
        /// `--context-sub-path`, or the directory of a git context.
        what: &'static str,
        sub_path: String,
        reason: String,
    },
    #[error(
        "no Dockerfile at {} (looked at {})\nhint: give the Dockerfile's path with --dockerfile, relative to the context or to the current directory",
        dockerfile.display(),
        looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and ")
    )]
    DockerfileNotFound {
        dockerfile: PathBuf,
        looked: Vec<PathBuf>,
    },
    #[error(transparent)]
    Ignore(#[from] IgnoreError),
    #[error("invalid --exclude pattern")]
    Exclude(#[source] IgnoreError),
    #[error("forbidden path outside the build context: {pattern}")]
    OutsideContext { pattern: String },
    #[error(
        "file not found in build context or excluded by .dockerignore: stat {pattern}: file does not exist"
    )]
    NotFound { pattern: String },
    #[error(
        "no source files were specified: {} matched no file in the build context",
        patterns.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(", ")
    )]
    NoSourceFiles { patterns: Vec<String> },
    #[error("source {pattern:?}: too many levels of symbolic links")]
    SymlinkLoop { pattern: String },
    #[error("invalid source pattern {pattern:?}: {reason}")]
    BadPattern { pattern: String, reason: String },
    #[error("file name {} in the build context is not valid UTF-8", path.display())]
    NonUtf8 { path: PathBuf },
    #[error("failed to read {} in the build context", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to prepare a context besides its source.
#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    /// `--context-sub-path`: the context is this directory of the source.
    pub sub_path: Option<PathBuf>,
    /// `--dockerfile`; `None` is `Dockerfile`.
    pub dockerfile: Option<PathBuf>,
    /// `--git` and the git settings from the environment.
    pub git: GitOptions,
    /// Where extracted and cloned contexts go (default: the system's
    /// temporary directory).
    pub scratch_dir: Option<PathBuf>,
}

/// A build context ready to be read: its root directory, the Dockerfile and
/// the `.dockerignore` that applies. A context extracted or cloned into a
/// temporary directory removes it when dropped.
#[derive(Debug)]
pub struct Context {
    root: PathBuf,
    dockerfile: PathBuf,
    ignore: Option<(PathBuf, DockerIgnore)>,
    commit: Option<String>,
    /// A root file system (a stage's) rather than a build context: links
    /// resolve inside it as Docker resolves them (an absolute target from
    /// its root, `..` stopping there) and files keep their owners.
    rootfs: bool,
    _scratch: Option<Scratch>,
}

impl Context {
    /// Materialize `source` and resolve the Dockerfile and `.dockerignore`.
    ///
    /// The Dockerfile path follows kaniko: for a directory context, a
    /// relative `--dockerfile` names a file relative to the current directory
    /// if one exists there, else relative to the context (after
    /// `--context-sub-path`). For tar and git contexts a relative path is
    /// always inside the context (a file of the same name in the current
    /// directory must not win over the repository's). An absolute path is
    /// used as given.
    pub fn prepare(source: &ContextSource, options: &PrepareOptions) -> Result<Self> {
        let (base, scratch, commit, subdir) = match source {
            ContextSource::Dir(dir) => {
                let meta = fs::metadata(dir).map_err(|source| Error::Dir {
                    path: dir.clone(),
                    source,
                })?;
                if !meta.is_dir() {
                    return Err(Error::NotADir { path: dir.clone() });
                }
                let base = fs::canonicalize(dir).map_err(|source| Error::Dir {
                    path: dir.clone(),
                    source,
                })?;
                (base, None, None, None)
            }
            ContextSource::Tar(path) => {
                let scratch = Scratch::new(options)?;
                let file = fs::File::open(path).map_err(|source| Error::ArchiveRead {
                    archive: path.display().to_string(),
                    source,
                })?;
                let base = scratch.subdir("context")?;
                archive::extract(file, &base, &path.display().to_string())?;
                (base, Some(scratch), None, None)
            }
            ContextSource::TarStdin => {
                let scratch = Scratch::new(options)?;
                let base = scratch.subdir("context")?;
                archive::extract(io::stdin().lock(), &base, "<stdin>")?;
                (base, Some(scratch), None, None)
            }
            ContextSource::Git(git_source) => {
                let scratch = Scratch::new(options)?;
                let base = scratch.subdir("context")?;
                let gitdir = scratch.path().join("repository");
                let commit = git::clone(git_source, &options.git, &gitdir, &base)?;
                (base, Some(scratch), Some(commit), git_source.subdir.clone())
            }
        };
        let sub_path = match &options.sub_path {
            None => None,
            Some(sub) => Some(sub.to_str().ok_or_else(|| Error::SubPath {
                what: SUB_PATH,
                sub_path: sub.display().to_string(),
                reason: "not valid UTF-8".to_owned(),
            })?),
        };
        let mut root = base.clone();
        if let Some(dir) = &subdir {
            root = sub_dir(&base, &root, dir, "git context directory")?;
        }
        if let Some(sub) = sub_path {
            root = sub_dir(&base, &root, sub, SUB_PATH)?;
        }
        let remote = scratch.is_some();
        let dockerfile = resolve_dockerfile(
            &root,
            options
                .dockerfile
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_DOCKERFILE)),
            remote,
        )?;
        let ignore = dockerignore::load_for_build(&root, &dockerfile)?;
        tracing::debug!(
            root = %root.display(),
            dockerfile = %dockerfile.display(),
            dockerignore = ?ignore.as_ref().map(|(p, _)| p),
            "prepared build context"
        );
        Ok(Self {
            root,
            dockerfile,
            ignore,
            commit,
            rootfs: false,
            _scratch: scratch,
        })
    }

    /// Clones `source` at the commit it names into `worktree` (no `.git`
    /// there unless `gitdir` is `worktree/.git`), keeping the repository in
    /// `gitdir`; returns the commit id. The same fetch git contexts use, for
    /// ADD's git sources.
    pub fn clone_git(
        source: &GitSource,
        options: &GitOptions,
        gitdir: &Path,
        worktree: &Path,
    ) -> Result<String> {
        git::clone(source, options, gitdir, worktree)
    }

    /// A directory context with no Dockerfile: for callers that select
    /// files from a directory with `.dockerignore` rules of their own.
    pub fn from_dir(dir: &Path, ignore: Option<DockerIgnore>) -> Result<Self> {
        let root = fs::canonicalize(dir).map_err(|source| Error::Dir {
            path: dir.to_owned(),
            source,
        })?;
        if !root.is_dir() {
            return Err(Error::NotADir {
                path: dir.to_owned(),
            });
        }
        Ok(Self {
            dockerfile: root.join(DEFAULT_DOCKERFILE),
            root,
            ignore: ignore.map(|i| (PathBuf::new(), i)),
            commit: None,
            rootfs: false,
            _scratch: None,
        })
    }

    /// A root file system to select from, for `COPY --from`: the same
    /// selection rules, except that a source's `..` stops at `dir` as in
    /// Docker (instead of being an error), and files keep their owners
    /// (`Selected::uid` and `gid`) instead of root.
    pub fn from_rootfs(dir: &Path) -> Result<Self> {
        let mut context = Self::from_dir(dir, None)?;
        context.rootfs = true;
        Ok(context)
    }

    /// The context's root directory (absolute, symlinks resolved).
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The Dockerfile to build (absolute).
    #[must_use]
    pub fn dockerfile(&self) -> &Path {
        &self.dockerfile
    }

    /// The `.dockerignore` in force and the file it came from.
    #[must_use]
    pub fn dockerignore(&self) -> Option<(&Path, &DockerIgnore)> {
        self.ignore
            .as_ref()
            .map(|(path, ignore)| (path.as_path(), ignore))
    }

    /// The commit checked out, for a git context.
    #[must_use]
    pub fn commit(&self) -> Option<&str> {
        self.commit.as_deref()
    }

    fn ignore(&self) -> Option<&DockerIgnore> {
        self.ignore.as_ref().map(|(_, ignore)| ignore)
    }
}

/// `root/sub`, which must be a directory inside `base`.
fn sub_dir(base: &Path, root: &Path, sub: &str, what: &'static str) -> Result<PathBuf> {
    let error = |reason: &str| Error::SubPath {
        what,
        sub_path: sub.to_owned(),
        reason: reason.to_owned(),
    };
    let cleaned = gopath::clean(sub);
    if cleaned.starts_with('/') {
        return Err(error("must be relative to the context"));
    }
    if cleaned == ".." || cleaned.starts_with("../") {
        return Err(error("leaves the context"));
    }
    let joined = root.join(&cleaned);
    let resolved = fs::canonicalize(&joined).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => error("no such directory in the context"),
        _ => Error::Dir {
            path: joined.clone(),
            source,
        },
    })?;
    if !resolved.starts_with(base) {
        return Err(error("leaves the context (through a symlink)"));
    }
    if !resolved.is_dir() {
        return Err(error("not a directory"));
    }
    Ok(resolved)
}

fn resolve_dockerfile(root: &Path, dockerfile: &Path, remote: bool) -> Result<PathBuf> {
    if dockerfile.is_absolute() {
        return if dockerfile.is_file() {
            Ok(dockerfile.to_owned())
        } else {
            Err(Error::DockerfileNotFound {
                dockerfile: dockerfile.to_owned(),
                looked: vec![dockerfile.to_owned()],
            })
        };
    }
    let mut looked = Vec::new();
    if !remote {
        if dockerfile.is_file() {
            return std::path::absolute(dockerfile).map_err(|source| Error::Io {
                path: dockerfile.to_owned(),
                source,
            });
        }
        looked.push(dockerfile.to_owned());
    }
    // Inside the context, following symlinks with the context as `/`.
    let rel = dockerfile.to_str().map(gopath::clean);
    let in_context = rel
        .as_deref()
        .filter(|rel| *rel != ".." && !rel.starts_with("../"))
        .and_then(|rel| select::resolve_in_root(root, rel).ok().flatten())
        .map(|resolved| root.join(resolved))
        .filter(|path| path.is_file());
    looked.push(root.join(dockerfile));
    in_context.ok_or_else(|| Error::DockerfileNotFound {
        dockerfile: dockerfile.to_owned(),
        looked,
    })
}

/// A temporary directory for an extracted or cloned context. Removing it
/// first makes every directory in it writable again, since a context may
/// hold read-only directories.
#[derive(Debug)]
struct Scratch {
    path: PathBuf,
    temp: Option<tempfile::TempDir>,
}

impl Scratch {
    fn new(options: &PrepareOptions) -> Result<Self> {
        let dir = options
            .scratch_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let temp = tempfile::Builder::new()
            .prefix("executor-context-")
            .tempdir_in(&dir)
            .map_err(|source| Error::TempDir { dir, source })?;
        Ok(Self {
            path: temp.path().to_owned(),
            temp: Some(temp),
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn subdir(&self, name: &str) -> Result<PathBuf> {
        let path = self.path.join(name);
        fs::create_dir(&path).map_err(|source| Error::TempDir {
            dir: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            make_writable(temp.path());
            if let Err(error) = temp.close() {
                tracing::warn!(%error, "failed to remove a temporary build context");
            }
        }
    }
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&entry.path());
            }
        }
    }
}

/// `rel` (forward slashes, relative, no `..`) as a path under `root`.
fn join_rel(root: &Path, rel: &str) -> PathBuf {
    if rel == "." || rel.is_empty() {
        root.to_owned()
    } else {
        root.join(rel)
    }
}

#[cfg(test)]
mod tests;
