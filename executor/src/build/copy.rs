//! COPY and ADD placement: Docker's rules for where each source lands
//! (destination directory or file, trailing slash, WORKDIR-relative
//! destinations, `--parents`), with `--chown` and `--chmod` applied, written
//! into a staging directory that holds exactly the new layer's content.
//!
//! The staging tree mirrors the image's paths: every file and directory the
//! copy creates, plus the parents of the destination with the metadata they
//! already have in the image (so the layer does not change them). Sources
//! are files on this machine: a prepared context, or another stage's or
//! image's root filesystem. Symlinks inside copied directories stay symlinks;
//! a top-level source that is a symlink is followed, as BuildKit does,
//! but only within `source_root`.
//!
//! What the image already has is read through a [`RootView`] (the stage's
//! layers, unmounted). A staging tree may leave the regular files out,
//! recording each one's source and metadata beside it ([`Staging`]): the
//! layer is then written straight from the sources, each read once, and
//! no file is made for them (on a busy ext4 disk, making an inode costs
//! more than copying a small file).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use executor_cache::reflink;
use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, UTIME_OMIT};

use crate::dockerfile::gopath;
use crate::image::layer::{self, EntryKind, LayerEntry, LayerError};
use crate::rootfs::RootView;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "when using {instruction} with more than one source file, the destination must be a directory and end with a /"
    )]
    NotADirectory { instruction: &'static str },
    #[error("cannot copy {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An owner the user namespace of a build without root does not map:
    /// see [`crate::sandbox::rootless`].
    #[error("cannot give {} the owner {uid}:{gid}\n{hint}", path.display())]
    Unmapped {
        path: PathBuf,
        uid: u32,
        gid: u32,
        hint: String,
        #[source]
        source: io::Error,
    },
    #[error("source {} leaves its root through a symlink", path.display())]
    Escape { path: PathBuf },
    #[error("cannot copy a directory onto the file {dest} of the image")]
    DirOntoFile { dest: String },
}

type Result<T> = std::result::Result<T, CopyError>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |source| CopyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One selected source.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file on this machine.
    pub path: PathBuf,
    /// Its path relative to its root (context or other filesystem), for
    /// `--parents`.
    pub rel: String,
    /// For a directory from the build context: what is below it, already
    /// filtered by `.dockerignore` and `--exclude`, parents before children.
    /// `None` copies everything below it.
    pub entries: Option<Vec<TreeEntry>>,
}

/// A path below a source directory.
#[derive(Debug, Clone)]
pub struct TreeEntry {
    /// Relative to the source directory, `/`-separated.
    pub sub: String,
    /// Where to read it.
    pub abs: PathBuf,
    /// Not following symlinks.
    pub metadata: fs::Metadata,
}

/// A regular file of a staging tree that is not there: where its content
/// is, and the metadata its copy would have had.
#[derive(Debug, Clone)]
pub struct Placeholder {
    pub source: PathBuf,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Whole seconds, as layers keep it.
    pub mtime: i64,
}

/// Where a copy writes the new layer's tree.
#[derive(Debug)]
pub struct Staging {
    pub dir: PathBuf,
    /// `Some`: regular files are not written; each is recorded here under
    /// the path it would have had in `dir`. `None`: files are copied.
    pub placeholders: Option<HashMap<PathBuf, Placeholder>>,
}

impl Staging {
    /// A staging tree of copies.
    #[must_use]
    pub fn copies(dir: PathBuf) -> Self {
        Self {
            dir,
            placeholders: None,
        }
    }

    /// A staging tree of placeholders.
    #[must_use]
    pub fn placeholders(dir: PathBuf) -> Self {
        Self {
            dir,
            placeholders: Some(HashMap::new()),
        }
    }

    /// The layer's entries: the tree's and the placeholders' (read from
    /// their sources when the layer is written; no xattrs, as a copy has
    /// none).
    pub fn entries(&self) -> std::result::Result<Vec<LayerEntry>, LayerError> {
        let mut entries = layer::layer_from_dir(&self.dir)?;
        for (path, file) in self.placeholders.iter().flatten() {
            let rel = path.strip_prefix(&self.dir).unwrap_or(path);
            entries.push(LayerEntry {
                mode: file.mode,
                uid: u64::from(file.uid),
                gid: u64::from(file.gid),
                mtime: file.mtime,
                ..LayerEntry::new(rel, EntryKind::File(file.source.clone()))
            });
        }
        Ok(entries)
    }

    /// Forgets the placeholders that something written into the tree
    /// since (an archive ADD extracted) replaced.
    pub fn drop_overwritten(&mut self) {
        if let Some(placeholders) = &mut self.placeholders {
            placeholders.retain(|path, _| fs::symlink_metadata(path).is_err());
        }
    }

    /// Where each placeholder's content is (none for copies).
    #[must_use]
    pub fn into_sources(self) -> HashMap<PathBuf, PathBuf> {
        self.placeholders
            .unwrap_or_default()
            .into_iter()
            .map(|(path, file)| (path, file.source))
            .collect()
    }
}

/// How a copy writes what it copies.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// "COPY" or "ADD", for messages.
    pub instruction: &'static str,
    /// `--chown`, resolved to numbers.
    pub chown: Option<(u32, u32)>,
    /// `--chmod`.
    pub chmod: Option<u32>,
    /// `--parents`: keep each source's directories below its root.
    pub parents: bool,
    /// The stage's WORKDIR, for relative destinations.
    pub workdir: String,
    /// Files copied from the build context belong to root unless `--chown`;
    /// from a stage or image they keep their owners.
    pub from_context: bool,
}

/// The absolute destination path in the image, and whether the user wrote it
/// as a directory (trailing `/`, or `.`).
#[must_use]
pub fn destination(dest: &str, workdir: &str) -> (String, bool) {
    let as_dir = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
    let absolute = if dest.starts_with('/') {
        gopath::clean(dest)
    } else {
        let base = if workdir.is_empty() { "/" } else { workdir };
        gopath::clean(&format!("{base}/{dest}"))
    };
    (absolute, as_dir)
}

/// Joins an absolute image path under a root directory on this machine.
#[must_use]
pub fn under(root: &Path, image_path: &str) -> PathBuf {
    let mut out = root.to_path_buf();
    for part in Path::new(image_path).components() {
        if let Component::Normal(p) = part {
            out.push(p);
        }
    }
    out
}

/// Resolves `image_path` inside the directory `root`, following symlinks as
/// if `root` were `/` (absolute targets are rooted, `..` stops at the
/// root). Returns the path on this machine of the final entry, not
/// following a final symlink unless `follow_last`.
#[must_use]
pub fn resolve_in_root(root: &Path, image_path: &str, follow_last: bool) -> PathBuf {
    under(
        root,
        &resolve_image_path(&RootView::dir(root), image_path, follow_last),
    )
}

/// `image_path` with every symlink in it (the last one only with
/// `follow_last`) replaced by its target inside `root`, as an image path.
/// Parts that do not exist are kept as written.
#[must_use]
pub fn resolve_image_path(root: &RootView<'_>, image_path: &str, follow_last: bool) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut todo: Vec<String> = image_path
        .split('/')
        .filter(|p| !p.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                parts.pop();
                continue;
            }
            _ => {}
        }
        let candidate = format!("/{}/{part}", parts.join("/"));
        let last = todo.is_empty();
        if (!last || follow_last) && hops < 255 {
            if let Some(target) = root.read_link(&candidate) {
                hops += 1;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    parts.clear();
                }
                todo.extend(
                    target
                        .split('/')
                        .filter(|p| !p.is_empty())
                        .rev()
                        .map(str::to_string),
                );
                continue;
            }
        }
        parts.push(part);
    }
    format!("/{}", parts.join("/"))
}

/// The metadata of what `image_path` leads to in `root`, following every
/// symlink; `None` when nothing is there.
#[must_use]
pub fn existing(root: &RootView<'_>, image_path: &str) -> Option<fs::Metadata> {
    root.find(&resolve_image_path(root, image_path, true))
        .map(|found| found.metadata)
}

/// Copies `sources` to `dest` as COPY/ADD does, writing the new content into
/// `staging` (the layer) while reading what the image already has from
/// `root`. Returns the image paths written.
pub fn copy(
    sources: &[Source],
    dest: &str,
    root: &RootView<'_>,
    staging: &mut Staging,
    opts: &Options,
) -> Result<Vec<String>> {
    let (dest_path, written_as_dir) = destination(dest, &opts.workdir);
    let dest_is_existing_dir = existing(root, &dest_path).is_some_and(|m| m.is_dir());
    let source_is_dir: Vec<bool> = sources.iter().map(|s| s.path.is_dir()).collect();
    let into_dir = written_as_dir
        || dest_is_existing_dir
        || opts.parents
        || source_is_dir.first().copied().unwrap_or(false) && sources.len() == 1;
    if sources.len() > 1 && !written_as_dir && !dest_is_existing_dir {
        return Err(CopyError::NotADirectory {
            instruction: opts.instruction,
        });
    }
    // The image's symlinks on the way are followed, as Docker does: `COPY f
    // /link/` writes into the link's target. A file destination that is a
    // symlink is replaced, not written through.
    let dest_path = resolve_image_path(root, &dest_path, into_dir);
    let mut written = Vec::new();
    let mut copier = Copier {
        root,
        staging: &staging.dir,
        placeholders: staging.placeholders.as_mut(),
        opts,
        written: &mut written,
        made: Made::default(),
    };
    for (source, &is_dir) in sources.iter().zip(&source_is_dir) {
        let rel_parent = if opts.parents {
            Path::new(&source.rel)
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            String::new()
        };
        if is_dir {
            // A directory's contents go into the destination (its own name
            // only with --parents).
            let target = if opts.parents {
                gopath::clean(&format!("{dest_path}/{}", source.rel))
            } else {
                dest_path.clone()
            };
            copier.ensure_dir(&target)?;
            match &source.entries {
                Some(entries) => copier.copy_listed(&source.path, entries, &target)?,
                None => copier.copy_tree(&source.path, &target)?,
            }
        } else {
            // The name as the source was written or matched: a symlink
            // named as a source is followed for its content but keeps its
            // own name, as in BuildKit.
            let name = Path::new(&source.rel)
                .file_name()
                .or_else(|| source.path.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let target = if into_dir {
                gopath::clean(&format!("{dest_path}/{rel_parent}/{name}"))
            } else {
                dest_path.clone()
            };
            let parent = Path::new(&target)
                .parent()
                .map_or_else(|| "/".to_string(), |p| p.to_string_lossy().into_owned());
            copier.ensure_dir(&parent)?;
            let meta = fs::metadata(&source.path).map_err(io_err(&source.path))?;
            copier.copy_entry(&source.path, &target, &meta, true)?;
        }
    }
    Ok(written)
}

/// Creates directory `image_dir` in `staging` as WORKDIR does (BuildKit's
/// mkdir with parents): directories the image has are recreated with their
/// metadata, missing ones are created 0755 and owned by `owner`, parents
/// included, where the image's symlinks lead. Returns the image paths
/// created.
pub fn make_dir(
    root: &RootView<'_>,
    staging: &Path,
    image_dir: &str,
    owner: (u32, u32),
) -> Result<Vec<String>> {
    let opts = Options {
        instruction: "WORKDIR",
        chown: Some(owner),
        ..Options::default()
    };
    let mut written = Vec::new();
    // Through the image's symlinks, as BuildKit's mkdir (RootPath): under a
    // linked directory (/var/run -> /run) the link's target gets it.
    let image_dir = resolve_image_path(root, image_dir, true);
    Copier {
        root,
        staging,
        placeholders: None,
        opts: &opts,
        written: &mut written,
        made: Made::default(),
    }
    .ensure_dir(&image_dir)?;
    Ok(written)
}

struct Copier<'a> {
    root: &'a RootView<'a>,
    staging: &'a Path,
    /// The files not copied, when they are not.
    placeholders: Option<&'a mut HashMap<PathBuf, Placeholder>>,
    opts: &'a Options,
    written: &'a mut Vec<String>,
    made: Made,
}

/// What a [`Copier`] made in the staging tree where nothing was, so that
/// it need not look there again: copying a tree of 10,000 files into new
/// directories, each file's parent and its own name were looked up (two
/// path walks each, a tenth of a second before the layer could start).
/// Nothing else writes to the staging tree while a copier runs; a removal
/// forgets it all.
#[derive(Default)]
struct Made {
    /// Directories made: what is in them is theirs, in `entries`.
    dirs: HashSet<PathBuf>,
    /// What was made in those directories (placeholders are not on disk).
    entries: HashSet<PathBuf>,
}

impl Made {
    /// Whether nothing is at `staged` in the staging tree, known without
    /// looking.
    fn knows_absent(&self, staged: &Path) -> bool {
        staged
            .parent()
            .is_some_and(|parent| self.dirs.contains(parent))
            && !self.entries.contains(staged)
    }

    /// `staged` was made; `dir`: a new directory.
    fn record(&mut self, staged: &Path, dir: bool) {
        if staged
            .parent()
            .is_some_and(|parent| self.dirs.contains(parent))
        {
            self.entries.insert(staged.to_path_buf());
        }
        if dir {
            self.dirs.insert(staged.to_path_buf());
        }
    }
}

impl Copier<'_> {
    /// The owner copied files get: `--chown`, root for the build context,
    /// their own otherwise (`None`).
    fn owner(&self) -> Option<(u32, u32)> {
        match (self.opts.chown, self.opts.from_context) {
            (Some(owner), _) => Some(owner),
            (None, true) => Some((0, 0)),
            (None, false) => None,
        }
    }

    /// Makes sure directory `image_dir` exists in the staging tree: existing
    /// image directories are recreated with their metadata; missing ones are
    /// created 0755 and owned by `--chown` (root without it), every one of
    /// them, parents included, as BuildKit's `MkdirAll` does.
    fn ensure_dir(&mut self, image_dir: &str) -> Result<()> {
        let mut current = String::new();
        for part in image_dir.split('/').filter(|p| !p.is_empty()) {
            current.push('/');
            current.push_str(part);
            let staged = under(self.staging, &current);
            if staged.is_dir() {
                continue;
            }
            if self
                .placeholders
                .as_deref()
                .is_some_and(|p| p.contains_key(&staged))
            {
                return Err(io_err(&staged)(io::ErrorKind::AlreadyExists.into()));
            }
            fs::create_dir_all(&staged).map_err(io_err(&staged))?;
            match existing(self.root, &current) {
                Some(meta) if meta.is_dir() => set_metadata(&staged, &meta, None, None)?,
                Some(_) => {
                    return Err(CopyError::DirOntoFile {
                        dest: current.clone(),
                    });
                }
                None => {
                    let (uid, gid) = self.opts.chown.unwrap_or((0, 0));
                    fs::set_permissions(&staged, fs::Permissions::from_mode(0o755))
                        .map_err(io_err(&staged))?;
                    set_owner(&staged, uid, gid)?;
                    self.written.push(current.clone());
                }
            }
        }
        Ok(())
    }

    fn copy_tree(&mut self, dir: &Path, image_dir: &str) -> Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .map_err(io_err(dir))?
            .collect::<io::Result<_>>()
            .map_err(io_err(dir))?;
        entries.sort_by_key(fs::DirEntry::file_name);
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let target = gopath::clean(&format!("{image_dir}/{name}"));
            let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
            self.copy_entry(&path, &target, &meta, false)?;
            if meta.is_dir() {
                self.copy_tree(&path, &target)?;
            }
        }
        // Directory times last: writing into them changed them.
        let meta = fs::symlink_metadata(dir).map_err(io_err(dir))?;
        let staged = under(self.staging, image_dir);
        set_times(&staged, &meta)?;
        Ok(())
    }

    /// Copies the listed entries of directory `dir` below `image_dir`.
    fn copy_listed(&mut self, dir: &Path, entries: &[TreeEntry], image_dir: &str) -> Result<()> {
        let mut dirs = Vec::new();
        for entry in entries {
            let target = gopath::clean(&format!("{image_dir}/{}", entry.sub));
            if let Some(parent) = Path::new(&target).parent() {
                let parent = parent.to_string_lossy();
                let staged = under(self.staging, &parent);
                if !self.made.dirs.contains(&staged) && !staged.is_dir() {
                    self.ensure_dir(&parent)?;
                }
            }
            self.copy_entry(&entry.abs, &target, &entry.metadata, false)?;
            if entry.metadata.is_dir() {
                dirs.push((target, entry.metadata.clone()));
            }
        }
        // Directory times last, deepest first: writing into them changed them.
        for (target, meta) in dirs.iter().rev() {
            set_times(&under(self.staging, target), meta)?;
        }
        let meta = fs::symlink_metadata(dir).map_err(io_err(dir))?;
        set_times(&under(self.staging, image_dir), &meta)
    }

    /// Copies one entry (file, symlink, directory shell, device) to
    /// `image_path` in the staging tree.
    fn copy_entry(
        &mut self,
        source: &Path,
        image_path: &str,
        meta: &fs::Metadata,
        top_level: bool,
    ) -> Result<()> {
        let staged = under(self.staging, image_path);
        let replaced = self
            .placeholders
            .as_deref_mut()
            .is_some_and(|p| p.remove(&staged).is_some());
        // Nothing was there.
        let mut new = true;
        if !replaced
            && !self.made.knows_absent(&staged)
            && let Ok(old) = fs::symlink_metadata(&staged)
        {
            new = false;
            if old.is_dir() && !meta.is_dir() {
                fs::remove_dir_all(&staged).map_err(io_err(&staged))?;
                if let Some(placeholders) = self.placeholders.as_deref_mut() {
                    placeholders.retain(|path, _| !path.starts_with(&staged));
                }
                self.made = Made::default();
            } else if !old.is_dir() {
                fs::remove_file(&staged).map_err(io_err(&staged))?;
                self.made = Made::default();
            }
        }
        let file_type = meta.file_type();
        if file_type.is_symlink() && !top_level {
            let target = fs::read_link(source).map_err(io_err(source))?;
            std::os::unix::fs::symlink(&target, &staged).map_err(io_err(&staged))?;
        } else if file_type.is_dir() {
            fs::create_dir_all(&staged).map_err(io_err(&staged))?;
        } else if file_type.is_file() || (file_type.is_symlink() && top_level) {
            let owner = self.owner();
            match self.placeholders.as_deref_mut() {
                // The layer reads the source itself.
                Some(placeholders) => {
                    let (uid, gid) = owner.unwrap_or((meta.uid(), meta.gid()));
                    let file = Placeholder {
                        source: source.to_path_buf(),
                        mode: self.opts.chmod.unwrap_or(meta.mode() & 0o7777),
                        uid,
                        gid,
                        mtime: meta.mtime(),
                    };
                    placeholders.insert(staged, file);
                    self.written.push(image_path.to_string());
                    return Ok(());
                }
                // Never a hard link: the staging tree becomes a layer in the
                // store, which must not change when the context file is
                // edited in place (nor may a RUN writing to the copy edit
                // the context).
                None => {
                    reflink::copy_file(source, &staged).map_err(io_err(source))?;
                }
            }
        } else {
            // Sockets, fifos and devices are not copied from a context; from
            // another filesystem they are rare: skip with a note.
            tracing::debug!(path = %source.display(), "skipping special file");
            return Ok(());
        }
        // A directory that was there may hold what this copier did not make.
        self.made.record(&staged, new && file_type.is_dir());
        set_metadata(&staged, meta, self.owner(), self.opts.chmod)?;
        self.written.push(image_path.to_string());
        Ok(())
    }
}

/// Gives `path` (not following a symlink) the owner `uid:gid`. Without
/// root, files can only be the caller's, and the caller stands for root:
/// RUN's user namespace maps it to root and layers are written with its
/// files as root's. So root's files are left the caller's; another owner
/// is an error (it needs root, or a subordinate range: see
/// [`crate::sandbox::rootless`]).
fn set_owner(path: &Path, uid: u32, gid: u32) -> Result<()> {
    let root = rustix::process::geteuid().is_root();
    if (uid, gid) == (0, 0) && !root {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|source| {
        let unmapped = matches!(source.raw_os_error(), Some(libc::EINVAL | libc::EPERM));
        match crate::sandbox::rootless::unmapped_hint().filter(|_| unmapped) {
            Some(hint) => CopyError::Unmapped {
                path: path.to_path_buf(),
                uid,
                gid,
                hint,
                source,
            },
            None => io_err(path)(source),
        }
    })
}

/// Copies owner, mode and times from `meta` onto `path` (not following a
/// symlink at `path`), with optional overrides.
fn set_metadata(
    path: &Path,
    meta: &fs::Metadata,
    owner: Option<(u32, u32)>,
    chmod: Option<u32>,
) -> Result<()> {
    let (uid, gid) = owner.unwrap_or((meta.uid(), meta.gid()));
    set_owner(path, uid, gid)?;
    let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        let mode = chmod.unwrap_or(meta.mode() & 0o7777);
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))?;
    }
    set_times(path, meta)
}

fn set_times(path: &Path, meta: &fs::Metadata) -> Result<()> {
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io_err(path)(e.into()))
}

/// Parses `--chmod`: octal (`0755`, `755`).
pub fn parse_chmod(value: &str) -> std::result::Result<u32, String> {
    u32::from_str_radix(value, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("invalid --chmod {value:?}: expected an octal mode such as 0755"))
}

/// Resolves `--chown` (`user[:group]`, names or numbers) with the image's
/// `/etc/passwd` and `/etc/group`, as BuildKit's file operations do
/// ([`crate::sandbox::user::file_owner`]). A layered root's two files are
/// read through it into a directory of their own under `scratch` first.
pub fn resolve_chown(
    value: &str,
    root: &RootView<'_>,
    scratch: &Path,
) -> std::result::Result<(u32, u32), String> {
    let owner =
        |dir: &Path| crate::sandbox::user::file_owner(dir, value).map_err(|e| e.to_string());
    if let Some(dir) = root.plain_dir() {
        return owner(dir);
    }
    let failed = |path: &Path, e: io::Error| format!("cannot read {}: {e}", path.display());
    let etc = tempfile::Builder::new()
        .prefix("etc-")
        .tempdir_in(scratch)
        .map_err(|e| failed(scratch, e))?;
    for name in ["passwd", "group"] {
        let image_path = resolve_image_path(root, &format!("/etc/{name}"), true);
        let content = root
            .read(&image_path)
            .map_err(|e| failed(Path::new(&image_path), e))?;
        if let Some(content) = content {
            let path = etc.path().join("etc").join(name);
            fs::create_dir_all(etc.path().join("etc"))
                .and_then(|()| fs::write(&path, content))
                .map_err(|e| failed(&path, e))?;
        }
    }
    owner(etc.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
        context: PathBuf,
        rootfs: PathBuf,
        staging: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let context = dir.path().join("context");
        let rootfs = dir.path().join("rootfs");
        let staging = dir.path().join("staging");
        for d in [&context, &rootfs, &staging] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(context.join("a.txt"), "a").unwrap();
        fs::create_dir_all(context.join("dir/sub")).unwrap();
        fs::write(context.join("dir/sub/b.txt"), "b").unwrap();
        std::os::unix::fs::symlink("sub/b.txt", context.join("dir/link")).unwrap();
        fs::create_dir_all(rootfs.join("existing")).unwrap();
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(rootfs.join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        std::os::unix::fs::symlink("/existing", rootfs.join("via-link")).unwrap();
        Fixture {
            dir,
            context,
            rootfs,
            staging,
        }
    }

    fn src(f: &Fixture, rel: &str) -> Source {
        Source {
            path: f.context.join(rel),
            rel: rel.to_string(),
            entries: None,
        }
    }

    fn copy_in(f: &Fixture, sources: &[Source], dest: &str, opts: &Options) -> Result<Vec<String>> {
        let root = RootView::dir(&f.rootfs);
        copy(
            sources,
            dest,
            &root,
            &mut Staging::copies(f.staging.clone()),
            opts,
        )
    }

    fn opts() -> Options {
        Options {
            instruction: "COPY",
            workdir: "/".to_string(),
            from_context: true,
            ..Options::default()
        }
    }

    #[test]
    fn file_to_file_and_into_dirs() {
        let f = fixture();
        copy_in(&f, &[src(&f, "a.txt")], "/new/name", &opts()).unwrap();
        assert_eq!(fs::read_to_string(f.staging.join("new/name")).unwrap(), "a");
        copy_in(&f, &[src(&f, "a.txt")], "/existing", &opts()).unwrap();
        assert!(f.staging.join("existing/a.txt").is_file());
        copy_in(&f, &[src(&f, "a.txt")], "/made/", &opts()).unwrap();
        assert!(f.staging.join("made/a.txt").is_file());
        // A symlinked directory in the image is followed inside the root:
        // the file lands in its target, and the layer leaves the link be.
        fs::remove_dir_all(f.staging.join("existing")).unwrap();
        copy_in(&f, &[src(&f, "a.txt")], "/via-link", &opts()).unwrap();
        assert!(f.staging.join("existing/a.txt").is_file());
        assert!(!f.staging.join("via-link").exists());
    }

    #[test]
    fn directory_contents_and_symlinks() {
        let f = fixture();
        let written = copy_in(&f, &[src(&f, "dir")], "/app", &opts()).unwrap();
        assert!(f.staging.join("app/sub/b.txt").is_file());
        assert!(!f.staging.join("app/dir").exists());
        let link = fs::read_link(f.staging.join("app/link")).unwrap();
        assert_eq!(link, Path::new("sub/b.txt"));
        assert!(
            written.contains(&"/app/sub/b.txt".to_string()),
            "{written:?}"
        );
    }

    #[test]
    fn listed_entries_limit_what_a_directory_copies() {
        let f = fixture();
        let keep = f.context.join("dir/sub");
        let entries = vec![
            TreeEntry {
                sub: "sub".to_string(),
                abs: keep.clone(),
                metadata: fs::symlink_metadata(&keep).unwrap(),
            },
            TreeEntry {
                sub: "sub/b.txt".to_string(),
                abs: keep.join("b.txt"),
                metadata: fs::symlink_metadata(keep.join("b.txt")).unwrap(),
            },
        ];
        let source = Source {
            entries: Some(entries),
            ..src(&f, "dir")
        };
        copy_in(&f, &[source], "/app", &opts()).unwrap();
        assert!(f.staging.join("app/sub/b.txt").is_file());
        assert!(
            !f.staging.join("app/link").exists(),
            "unlisted entries are not copied"
        );
    }

    #[test]
    fn relative_destination_uses_workdir() {
        let f = fixture();
        let o = Options {
            workdir: "/srv/app".to_string(),
            ..opts()
        };
        copy_in(&f, &[src(&f, "a.txt")], ".", &o).unwrap();
        assert!(f.staging.join("srv/app/a.txt").is_file());
    }

    #[test]
    fn several_sources_need_a_directory() {
        let f = fixture();
        let err = copy_in(
            &f,
            &[src(&f, "a.txt"), src(&f, "dir/sub/b.txt")],
            "/file",
            &opts(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("must be a directory and end with a /"),
            "{err}"
        );
    }

    #[test]
    fn parents_keep_directories() {
        let f = fixture();
        let o = Options {
            parents: true,
            ..opts()
        };
        copy_in(&f, &[src(&f, "dir/sub/b.txt")], "/out/", &o).unwrap();
        assert!(f.staging.join("out/dir/sub/b.txt").is_file());
    }

    #[test]
    fn chown_and_chmod() {
        let f = fixture();
        let owner = resolve_chown("app:staff", &RootView::dir(&f.rootfs), &f.staging).unwrap();
        assert_eq!(owner, (1000, 50));
        // A named user's group is its passwd group, as in BuildKit.
        assert_eq!(
            resolve_chown("app", &RootView::dir(&f.rootfs), &f.staging).unwrap(),
            (1000, 1001)
        );
        assert_eq!(
            resolve_chown("7:8", &RootView::dir(&f.rootfs), &f.staging).unwrap(),
            (7, 8)
        );
        assert!(
            resolve_chown("ghost", &RootView::dir(&f.rootfs), &f.staging)
                .unwrap_err()
                .contains("ghost")
        );
        let o = Options {
            chown: Some(owner),
            chmod: Some(parse_chmod("0640").unwrap()),
            ..opts()
        };
        copy_in(&f, &[src(&f, "a.txt")], "/x/", &o).unwrap();
        let meta = fs::metadata(f.staging.join("x/a.txt")).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (1000, 50, 0o640)
        );
        // The created destination directory belongs to the --chown user too.
        let meta = fs::metadata(f.staging.join("x")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1000, 50));
        assert!(parse_chmod("999").is_err());
    }

    #[test]
    fn copies_share_no_inode_with_the_context() {
        let f = fixture();
        let a_txt = f.context.join("a.txt");
        let before = fs::metadata(&a_txt).unwrap();
        let ino = |p: &Path| fs::symlink_metadata(p).unwrap().ino();

        // Owned as a copy from the context would be (root), no --chmod, one
        // name: still a file of its own (a hard link would be the context
        // file itself, in the store once the staging tree is a layer).
        copy_in(&f, &[src(&f, "a.txt")], "/x/", &opts()).unwrap();
        let staged = f.staging.join("x/a.txt");
        assert_ne!(ino(&staged), before.ino());
        let content = fs::read(&staged).unwrap();
        // Editing the context file in place leaves the copy.
        let mut edited = vec![b'!'; content.len()];
        edited.extend_from_slice(b" more");
        fs::write(&a_txt, &edited).unwrap();
        assert_eq!(fs::read(&staged).unwrap(), content);
        let after = fs::metadata(&a_txt).unwrap();
        assert_eq!(after.mode(), before.mode());

        // --chmod changes the copy's mode, not the context's.
        let chmod = Options {
            chmod: Some(0o600),
            ..opts()
        };
        copy_in(&f, &[src(&f, "a.txt")], "/chmod/", &chmod).unwrap();
        assert_eq!(
            fs::metadata(f.staging.join("chmod/a.txt")).unwrap().mode() & 0o7777,
            0o600
        );
        assert_eq!(fs::metadata(&a_txt).unwrap().mode(), before.mode());
    }

    #[test]
    fn a_followed_symlink_keeps_its_own_name() {
        let f = fixture();
        let source = Source {
            path: f.context.join("a.txt"),
            rel: "link-to-a".to_string(),
            entries: None,
        };
        copy_in(&f, &[source], "/d/", &opts()).unwrap();
        assert_eq!(
            fs::read_to_string(f.staging.join("d/link-to-a")).unwrap(),
            "a"
        );
        assert!(!f.staging.join("d/a.txt").exists());
    }

    #[test]
    fn created_parents_take_the_chown_owner() {
        let f = fixture();
        let o = Options {
            chown: Some((1000, 50)),
            ..opts()
        };
        copy_in(&f, &[src(&f, "a.txt")], "/p/q/name", &o).unwrap();
        for dir in ["p", "p/q"] {
            let meta = fs::metadata(f.staging.join(dir)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (1000, 50), "{dir}");
        }
    }

    #[test]
    fn make_dir_owns_what_it_creates_and_keeps_what_exists() {
        let f = fixture();
        fs::set_permissions(
            f.rootfs.join("existing"),
            fs::Permissions::from_mode(0o1777),
        )
        .unwrap();
        let created = make_dir(
            &RootView::dir(&f.rootfs),
            &f.staging,
            "/existing/a/b",
            (65534, 65534),
        )
        .unwrap();
        assert_eq!(created, ["/existing/a", "/existing/a/b"]);
        let meta = fs::metadata(f.staging.join("existing")).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o1777));
        for dir in ["existing/a", "existing/a/b"] {
            let meta = fs::metadata(f.staging.join(dir)).unwrap();
            assert_eq!(
                (meta.uid(), meta.gid(), meta.mode() & 0o7777),
                (65534, 65534, 0o755),
                "{dir}"
            );
        }
    }

    #[test]
    fn make_dir_goes_where_the_images_links_lead() {
        let f = fixture();
        let created =
            make_dir(&RootView::dir(&f.rootfs), &f.staging, "/via-link/w", (0, 0)).unwrap();
        assert_eq!(created, ["/existing/w"]);
        assert!(f.staging.join("existing/w").is_dir());
        assert!(
            !f.staging.join("via-link").exists(),
            "the link stays a link"
        );
    }

    #[test]
    fn existing_parents_keep_their_metadata() {
        let f = fixture();
        fs::set_permissions(f.rootfs.join("existing"), fs::Permissions::from_mode(0o700)).unwrap();
        copy_in(&f, &[src(&f, "a.txt")], "/existing/a", &opts()).unwrap();
        let meta = fs::metadata(f.staging.join("existing")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o700);
    }

    /// The root as two extracted layers: the fixture's root below, and a
    /// layer that replaces `/etc/group` and adds `/srv` above it.
    #[test]
    fn a_layered_root_is_read_without_a_mount() {
        let f = fixture();
        let top = f.dir.path().join("top");
        fs::create_dir_all(top.join("etc")).unwrap();
        fs::create_dir_all(top.join("srv")).unwrap();
        fs::set_permissions(top.join("srv"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::write(top.join("etc/group"), "root:x:0:\nops:x:77:\n").unwrap();
        let layers = [f.rootfs.clone(), top];
        let root = RootView::layers(&layers);
        // The passwd below, the group above.
        assert_eq!(resolve_chown("app:ops", &root, &f.staging), Ok((1000, 77)));
        assert!(resolve_chown("app:staff", &root, &f.staging).is_err());
        let o = Options {
            chown: Some((1000, 77)),
            ..opts()
        };
        let mut staging = Staging::copies(f.staging.clone());
        copy(&[src(&f, "a.txt")], "/via-link/", &root, &mut staging, &o).unwrap();
        copy(&[src(&f, "a.txt")], "/srv/new/", &root, &mut staging, &o).unwrap();
        // Through the lower layer's link; existing directories keep the
        // metadata of the layer that has them.
        assert!(f.staging.join("existing/a.txt").is_file());
        assert!(!f.staging.join("via-link").exists());
        let srv = fs::metadata(f.staging.join("srv")).unwrap();
        assert_eq!((srv.uid(), srv.mode() & 0o7777), (0, 0o750));
        let new = fs::metadata(f.staging.join("srv/new")).unwrap();
        assert_eq!((new.uid(), new.gid()), (1000, 77));
    }

    /// Placeholders give the same layer as copies, read from the sources.
    #[test]
    fn placeholders_write_the_layer_copies_would() {
        let f = fixture();
        let run = |staging: &mut Staging| {
            let root = RootView::dir(&f.rootfs);
            let o = Options {
                chmod: Some(0o640),
                ..opts()
            };
            copy(
                &[src(&f, "dir"), src(&f, "a.txt")],
                "/app/",
                &root,
                staging,
                &o,
            )
            .unwrap();
            let entries = staging.entries().unwrap();
            let mut out = Vec::new();
            let info = layer::write_layer(
                entries.clone(),
                layer::Compression::Gzip,
                None,
                1,
                &mut out,
                &layer::WriteOptions::default(),
            )
            .unwrap();
            (entries, info.digest)
        };
        let mut copies = Staging::copies(f.dir.path().join("copies"));
        let mut placeholders = Staging::placeholders(f.dir.path().join("placeholders"));
        for dir in [&copies.dir, &placeholders.dir] {
            fs::create_dir_all(dir).unwrap();
        }
        let (by_copy, by_copy_digest) = run(&mut copies);
        let (in_place, in_place_digest) = run(&mut placeholders);
        assert_eq!(in_place_digest, by_copy_digest);
        let placeholder = placeholders.dir.join("app/sub/b.txt");
        assert!(!placeholder.exists(), "no file is made");
        assert!(placeholders.dir.join("app/sub").is_dir());
        let b = in_place
            .iter()
            .find(|e| e.path == Path::new("app/sub/b.txt"))
            .unwrap();
        assert_eq!(b.kind, EntryKind::File(f.context.join("dir/sub/b.txt")));
        assert_eq!(b.mode, 0o640);
        assert_eq!(by_copy.len(), in_place.len());
        let sources = placeholders.into_sources();
        assert_eq!(sources[&placeholder], f.context.join("dir/sub/b.txt"));
        assert!(copies.into_sources().is_empty());
    }

    /// Later sources of one COPY replace what earlier ones put in the
    /// directories it made (`sub`, made by the first; not `app`, made as
    /// the destination): a file over a directory, a directory over a
    /// file, a symlink over a file, in both kinds of staging.
    #[test]
    fn later_sources_replace_what_earlier_ones_made() {
        let f = fixture();
        for (name, tree) in [
            (
                "one",
                &[
                    ("sub/x/inner.txt", "dir"),
                    ("sub/y", "file"),
                    ("sub/z", "file"),
                ][..],
            ),
            (
                "two",
                &[
                    ("sub/x", "file"),
                    ("sub/y/inner.txt", "dir"),
                    ("sub/z", "link"),
                ][..],
            ),
        ] {
            for (path, kind) in tree {
                let at = f.context.join(name).join(path);
                fs::create_dir_all(at.parent().unwrap()).unwrap();
                match *kind {
                    "link" => std::os::unix::fs::symlink("y", &at).unwrap(),
                    _ => fs::write(&at, format!("{name} {path}")).unwrap(),
                }
            }
        }
        let root = RootView::dir(&f.rootfs);
        for (label, mut staging) in [
            ("copies", Staging::copies(f.dir.path().join("copies"))),
            (
                "placeholders",
                Staging::placeholders(f.dir.path().join("placeholders")),
            ),
        ] {
            fs::create_dir_all(&staging.dir).unwrap();
            copy(
                &[src(&f, "one"), src(&f, "two")],
                "/app/",
                &root,
                &mut staging,
                &opts(),
            )
            .unwrap();
            let mut entries: Vec<_> = staging
                .entries()
                .unwrap()
                .into_iter()
                .map(|e| (e.path.display().to_string(), e.kind))
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let file = |rel: &str| match label {
                "copies" => EntryKind::File(staging.dir.join(rel)),
                _ => EntryKind::File(f.context.join(rel.replacen("app", "two", 1))),
            };
            assert_eq!(
                entries,
                [
                    ("app".to_string(), EntryKind::Dir),
                    ("app/sub".to_string(), EntryKind::Dir),
                    ("app/sub/x".to_string(), file("app/sub/x")),
                    ("app/sub/y".to_string(), EntryKind::Dir),
                    (
                        "app/sub/y/inner.txt".to_string(),
                        file("app/sub/y/inner.txt")
                    ),
                    ("app/sub/z".to_string(), EntryKind::Symlink("y".into())),
                ],
                "{label}"
            );
        }
    }

    /// A file written into the tree after (an archive ADD extracts) wins
    /// over the placeholder at its path.
    #[test]
    fn what_is_written_over_a_placeholder_replaces_it() {
        let f = fixture();
        let mut staging = Staging::placeholders(f.staging.clone());
        let root = RootView::dir(&f.rootfs);
        copy(&[src(&f, "a.txt")], "/x/", &root, &mut staging, &opts()).unwrap();
        fs::write(f.staging.join("x/a.txt"), "from the archive").unwrap();
        staging.drop_overwritten();
        let entries = staging.entries().unwrap();
        let a: Vec<_> = entries
            .iter()
            .filter(|e| e.path == Path::new("x/a.txt"))
            .collect();
        assert_eq!(a.len(), 1, "{entries:?}");
        assert_eq!(a[0].kind, EntryKind::File(f.staging.join("x/a.txt")));
    }

    #[test]
    fn resolve_in_root_stays_inside() {
        let f = fixture();
        std::os::unix::fs::symlink("../../../../etc", f.rootfs.join("up")).unwrap();
        let p = resolve_in_root(&f.rootfs, "/up/passwd", true);
        assert_eq!(p, f.rootfs.join("etc/passwd"));
        let p = resolve_in_root(&f.rootfs, "/../../etc/group", true);
        assert_eq!(p, f.rootfs.join("etc/group"));
    }
}
