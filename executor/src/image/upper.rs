//! An overlay upper directory (or a RUN's changed root, in full mode)
//! made ready to be a layer: the sandbox's mount-point stubs removed, hard
//! links overlayfs left half-copied completed, overlayfs' bookkeeping
//! dropped; and a stage's layers squashed into one (`--single-snapshot`).
//! It works on directories only: mounting is `sandbox::overlay`'s, and
//! deciding what is a layer is the build engine's.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::layer::{self, EntryKind, LayerEntry};

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum UpperError {
    #[error("cannot prepare {} as a layer", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Layer(#[from] layer::LayerError),
}

type Result<T, E = UpperError> = std::result::Result<T, E>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> UpperError + '_ {
    move |source| UpperError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Removes the mount-point stubs the sandbox made under `root` (deepest
/// first): empty directories and empty files only; anything else was
/// written by the step and stays. A parent directory whose only change was
/// getting the stub gets its times back (`original` gives its metadata
/// before the step); in an overlay upper directory (`upper`), a parent left
/// empty that the lower layers have as it is is removed altogether.
pub fn remove_stubs(
    root: &Path,
    stubs: &[PathBuf],
    upper: bool,
    original: impl Fn(&Path) -> Option<fs::Metadata>,
) -> Result<()> {
    let stubs: Vec<&Path> = stubs
        .iter()
        .map(|s| s.strip_prefix("/").unwrap_or(s))
        .collect();
    let mut parents = std::collections::BTreeSet::new();
    for rel in stubs.iter().rev() {
        let path = root.join(rel);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let removed = if meta.is_dir() {
            fs::remove_dir(&path).is_ok()
        } else if meta.is_file() && meta.len() == 0 {
            fs::remove_file(&path).is_ok()
        } else {
            false
        };
        if removed {
            if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
                parents.insert(parent.to_path_buf());
            }
        }
    }
    // Deepest first, so a parent emptied by removing its child is seen.
    for parent in parents.iter().rev() {
        if stubs.contains(&parent.as_path()) {
            continue;
        }
        let path = root.join(parent);
        let (Ok(now), Some(before)) = (fs::symlink_metadata(&path), original(parent)) else {
            continue;
        };
        let same = now.is_dir()
            && before.is_dir()
            && now.mode() == before.mode()
            && now.uid() == before.uid()
            && now.gid() == before.gid();
        if !same {
            continue;
        }
        let empty = fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none());
        if upper && empty && !is_opaque(&path) {
            let _ = fs::remove_dir(&path);
        } else {
            restore_times(&path, &before)?;
        }
    }
    Ok(())
}

/// The overlayfs bookkeeping xattrs a copy-up leaves (`index=on`); dropped
/// from an upper directory before it becomes a lower one.
const BOOKKEEPING: [&str; 3] = [
    "trusted.overlay.origin",
    "trusted.overlay.nlink",
    "trusted.overlay.impure",
];

/// The xattrs that mark a directory opaque, as root's overlays and as
/// unprivileged ones (`userxattr`) write them.
const OPAQUE: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

fn has_xattr(path: &Path, name: &str) -> bool {
    let mut buf = [0u8; 256];
    !matches!(
        rustix::fs::lgetxattr(path, name, &mut buf),
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP)
    )
}

/// Which of overlayfs' marks `path` carries: its bookkeeping xattrs (in
/// [`BOOKKEEPING`]'s order) and whether it has an opaque marker's name
/// (its value says whether it is set: see [`is_opaque`]). One
/// `llistxattr`, where a `lgetxattr` per name cost five calls a directory
/// and four a file, in every RUN's upper directory; a list too long for
/// the buffer is asked for name by name.
fn overlay_marks(path: &Path) -> ([bool; 3], bool) {
    let mut buf = [0u8; 1024];
    match rustix::fs::llistxattr(path, &mut buf) {
        Ok(len) => {
            let names: Vec<&[u8]> = buf
                .get(..len)
                .unwrap_or_default()
                .split(|&byte| byte == 0)
                .filter(|name| !name.is_empty())
                .collect();
            let has = |key: &str| names.contains(&key.as_bytes());
            (BOOKKEEPING.map(has), OPAQUE.iter().any(|key| has(key)))
        }
        Err(rustix::io::Errno::NOTSUP) => ([false; 3], false),
        Err(_) => (
            BOOKKEEPING.map(|key| has_xattr(path, key)),
            OPAQUE.iter().any(|key| has_xattr(path, key)),
        ),
    }
}

/// Completes a RUN's upper directory where overlayfs leaves a hard link
/// half-written: with `index=on` a file copied up for one of its names is,
/// in the merged view, the file every name shows (as on any file system),
/// but only the names the RUN touched are in the upper directory. Every
/// other name of such a file that the merged view shows is linked in, so
/// the layer (and the snapshot mode `full`) agree with what the RUN saw.
/// Copies are told from new files by `trusted.overlay.origin`; the lower
/// layer holding the file is scanned for its names only then. The
/// bookkeeping xattrs, and opaque markers on directories no lower layer
/// has, are dropped on the way.
pub fn relink_copied_up(upper: &Path, lowers: &[PathBuf]) -> Result<()> {
    let mut copied = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let dir = upper.join(&rel);
        let (bookkeeping, opaque) = overlay_marks(&dir);
        for (key, present) in BOOKKEEPING.iter().zip(bookkeeping) {
            if present {
                let _ = rustix::fs::lremovexattr(&dir, *key);
            }
        }
        // overlayfs marks a directory made inside a merged one opaque even
        // when no lower layer has anything there to hide; such a marker
        // would only be noise in the layer.
        if !rel.as_os_str().is_empty()
            && opaque
            && is_opaque(&dir)
            && !lowers
                .iter()
                .any(|lower| fs::symlink_metadata(lower.join(&rel)).is_ok())
        {
            let _ = rustix::fs::lremovexattr(&dir, "trusted.overlay.opaque");
        }
        for entry in fs::read_dir(&dir).map_err(io_at(&dir))? {
            let entry = entry.map_err(io_at(&dir))?;
            let child = rel.join(entry.file_name());
            let path = upper.join(&child);
            let kind = entry.file_type().map_err(io_at(&path))?;
            if kind.is_dir() {
                pending.push(child);
            } else if !kind.is_symlink() {
                let (bookkeeping, _) = overlay_marks(&path);
                if kind.is_file() && bookkeeping[0] {
                    copied.push(child);
                }
                for (key, present) in BOOKKEEPING.iter().zip(bookkeeping) {
                    if present {
                        let _ = rustix::fs::lremovexattr(&path, *key);
                    }
                }
            }
        }
    }
    let mut names: BTreeMap<usize, std::collections::HashMap<u64, Vec<PathBuf>>> = BTreeMap::new();
    for rel in copied {
        let Some((index, meta)) = lowers
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, lower)| fs::symlink_metadata(lower.join(&rel)).ok().map(|m| (i, m)))
        else {
            continue;
        };
        if !meta.is_file() || meta.nlink() < 2 {
            continue;
        }
        let by_inode = match names.entry(index) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(linked_files(&lowers[index])?)
            }
        };
        let Some(aliases) = by_inode.get(&meta.ino()) else {
            continue;
        };
        for alias in aliases {
            if *alias == rel || !shows_through(alias, index, upper, lowers) {
                continue;
            }
            make_parents(upper, alias, lowers)?;
            let target = upper.join(alias);
            fs::hard_link(upper.join(&rel), &target).map_err(io_at(&target))?;
        }
    }
    Ok(())
}

/// Hard-linked files of the lower layers copied up whole into a fresh
/// upper directory before a step, for an overlay mounted without
/// `index=on` (in a user namespace, where `userxattr` rules the index
/// out). There overlayfs copies up only the name a step writes, which
/// splits it from the file's other names: a RUN appending to `/f` would
/// leave its link `/hl` with the old data. With every name such a file
/// shows in the merged view already in the upper directory, linked to one
/// copy, the step sees one file, as on any file system.
/// [`LinkedCopies::drop_unchanged`] takes out, after the step, the copies it
/// left as they were, so that they are no part of its layer.
#[derive(Debug, Default)]
pub struct LinkedCopies {
    copies: Vec<LinkedCopy>,
    /// The directories made in the upper directory for them, parents first,
    /// with their modification time once every copy was in place.
    dirs: Vec<(PathBuf, (i64, i64))>,
}

#[derive(Debug)]
struct LinkedCopy {
    /// The names (relative paths), the first one copied, the others linked.
    names: Vec<PathBuf>,
    /// The lower file's metadata: what "unchanged" is measured against.
    lower: fs::Metadata,
    /// The copy's inode.
    ino: u64,
}

/// The groups of names of one lower layer's hard-linked regular files
/// (see [`linked_files`]), kept per layer directory: extracted layers do
/// not change.
pub type LinkedNames = std::collections::HashMap<PathBuf, Vec<Vec<PathBuf>>>;

impl LinkedCopies {
    /// Copies into the empty `upper` every regular file of `lowers` that the
    /// merged view shows under two names or more, with all those names
    /// linked to the copy. `known` caches each layer's groups.
    pub fn copy_up(upper: &Path, lowers: &[PathBuf], known: &mut LinkedNames) -> Result<Self> {
        let mut this = Self::default();
        for (index, lower) in lowers.iter().enumerate() {
            if !known.contains_key(lower) {
                let groups = linked_files(lower)?.into_values().collect();
                known.insert(lower.clone(), groups);
            }
            for names in &known[lower] {
                let names: Vec<PathBuf> = names
                    .iter()
                    .filter(|name| shows_through(name, index, upper, lowers))
                    .cloned()
                    .collect();
                let Some(first) = names.first() else {
                    continue;
                };
                if names.len() < 2 {
                    continue;
                }
                for name in &names {
                    for dir in make_parents(upper, name, lowers)? {
                        this.dirs.push((dir, (0, 0)));
                    }
                }
                let source = lower.join(first);
                let lower_meta = fs::symlink_metadata(&source).map_err(io_at(&source))?;
                let copy = upper.join(first);
                copy_file(&source, &copy)?;
                for name in &names[1..] {
                    let link = upper.join(name);
                    fs::hard_link(&copy, &link).map_err(io_at(&link))?;
                }
                let ino = fs::symlink_metadata(&copy).map_err(io_at(&copy))?.ino();
                this.copies.push(LinkedCopy {
                    names,
                    lower: lower_meta,
                    ino,
                });
            }
        }
        for (dir, mtime) in &mut this.dirs {
            let path = upper.join(&*dir);
            let meta = fs::symlink_metadata(&path).map_err(io_at(&path))?;
            *mtime = (meta.mtime(), meta.mtime_nsec());
        }
        Ok(this)
    }

    /// After the step (the overlay unmounted): removes from `upper` each
    /// copy the step left as it was (content, mode, owner and times of the
    /// lower file, no name added), under every name still linked to it,
    /// then the directories made for the copies that the step did not
    /// touch: removed when left empty, given their times back otherwise.
    pub fn drop_unchanged(self, upper: &Path, lowers: &[PathBuf]) -> Result<()> {
        let mut untouched = Vec::new();
        for (dir, mtime) in self.dirs.iter().rev() {
            let path = upper.join(dir);
            if fs::symlink_metadata(&path)
                .is_ok_and(|meta| meta.is_dir() && (meta.mtime(), meta.mtime_nsec()) == *mtime)
            {
                untouched.push(dir);
            }
        }
        for copy in self.copies {
            let ours: Vec<PathBuf> = copy
                .names
                .iter()
                .map(|name| upper.join(name))
                .filter(|path| fs::symlink_metadata(path).is_ok_and(|m| m.ino() == copy.ino))
                .collect();
            let Some(first) = ours.first() else {
                continue;
            };
            let now = fs::symlink_metadata(first).map_err(io_at(first))?;
            let before = &copy.lower;
            let unchanged = now.nlink() == ours.len() as u64
                && now.len() == before.len()
                && (now.mtime(), now.mtime_nsec()) == (before.mtime(), before.mtime_nsec())
                && now.mode() == before.mode()
                && (now.uid(), now.gid()) == (before.uid(), before.gid());
            if unchanged {
                for path in &ours {
                    fs::remove_file(path).map_err(io_at(path))?;
                }
            }
        }
        // Deepest first (the list is parents first).
        for dir in untouched {
            let path = upper.join(dir);
            let empty = fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none());
            if empty && !is_opaque(&path) {
                fs::remove_dir(&path).map_err(io_at(&path))?;
            } else if let Some(meta) = lowers
                .iter()
                .rev()
                .find_map(|l| fs::symlink_metadata(l.join(dir)).ok())
            {
                restore_times(&path, &meta)?;
            }
        }
        Ok(())
    }
}

/// Copies the regular file `from` to `to` (which must not exist) with its
/// data, owner, mode, xattrs and times.
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let open_parent = |path: &Path| {
        let parent = path.parent().unwrap_or(Path::new("/"));
        rustix::fs::open(
            parent,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| io_at(parent)(e.into()))
    };
    let name = |path: &Path| {
        path.file_name()
            .map(|n| std::os::unix::ffi::OsStrExt::as_bytes(n).to_vec())
            .unwrap_or_default()
    };
    let (src, dst) = (open_parent(from)?, open_parent(to)?);
    let stat = rustix::fs::lstat(from).map_err(|e| io_at(from)(e.into()))?;
    super::diff::copy_node_at(
        std::os::fd::AsFd::as_fd(&src),
        &name(from),
        std::os::fd::AsFd::as_fd(&dst),
        &name(to),
        &stat,
        from,
        true,
    )
    .map_err(io_at(to))
}

/// The regular files of `dir` with several names, by inode.
fn linked_files(dir: &Path) -> Result<std::collections::HashMap<u64, Vec<PathBuf>>> {
    let mut out: std::collections::HashMap<u64, Vec<PathBuf>> = std::collections::HashMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let path = dir.join(&rel);
        for entry in fs::read_dir(&path).map_err(io_at(&path))? {
            let entry = entry.map_err(io_at(&path))?;
            let child = rel.join(entry.file_name());
            let meta = entry.metadata().map_err(io_at(&path))?;
            if meta.is_dir() {
                pending.push(child);
            } else if meta.is_file() && meta.nlink() > 1 {
                out.entry(meta.ino()).or_default().push(child);
            }
        }
    }
    Ok(out)
}

/// Whether `rel` of lower layer `index` is what the merged view shows: no
/// upper or higher entry at it, and nothing above hiding a parent (a
/// whiteout, a non-directory, an opaque directory).
fn shows_through(rel: &Path, index: usize, upper: &Path, lowers: &[PathBuf]) -> bool {
    let layers = std::iter::once(upper).chain(lowers[index + 1..].iter().map(PathBuf::as_path));
    for layer in layers {
        if fs::symlink_metadata(layer.join(rel)).is_ok() {
            return false;
        }
        for ancestor in rel.ancestors().skip(1) {
            if ancestor.as_os_str().is_empty() {
                break;
            }
            let path = layer.join(ancestor);
            match fs::symlink_metadata(&path) {
                Ok(meta) if !meta.is_dir() || is_opaque(&path) => return false,
                _ => {}
            }
        }
    }
    true
}

/// Creates the missing parents of `rel` in `upper` as copies of the merged
/// view's (the topmost lower layer holding each): mode, owner and times.
/// Returns the ones it made, parents first.
fn make_parents(upper: &Path, rel: &Path, lowers: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut missing: Vec<&Path> = rel
        .ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty() && !upper.join(a).exists())
        .collect();
    missing.reverse();
    let made = missing.iter().map(|dir| dir.to_path_buf()).collect();
    for dir in missing {
        let path = upper.join(dir);
        fs::create_dir(&path).map_err(io_at(&path))?;
        if let Some(meta) = lowers
            .iter()
            .rev()
            .find_map(|l| fs::symlink_metadata(l.join(dir)).ok())
        {
            std::os::unix::fs::lchown(&path, Some(meta.uid()), Some(meta.gid()))
                .map_err(io_at(&path))?;
            fs::set_permissions(
                &path,
                std::os::unix::fs::PermissionsExt::from_mode(meta.mode() & 0o7777),
            )
            .map_err(io_at(&path))?;
            restore_times(&path, &meta)?;
        }
    }
    Ok(made)
}

/// Makes an overlay whiteout (a character device 0:0) at `path`, as a
/// test's layer would have it.
#[cfg(test)]
pub(crate) fn whiteout(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
}

/// Whether `dir`, in an overlay upper directory (or an extracted layer),
/// hides the lower ones.
pub(crate) fn is_opaque(dir: &Path) -> bool {
    OPAQUE.iter().any(|key| {
        let mut buf = [0u8; 4];
        matches!(rustix::fs::lgetxattr(dir, *key, &mut buf), Ok(1) if buf[0] == b'y')
    })
}

fn restore_times(path: &Path, before: &fs::Metadata) -> Result<()> {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps};
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: before.atime(),
            tv_nsec: before.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: before.mtime(),
            tv_nsec: before.mtime_nsec(),
        },
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io_at(path)(e.into()))
}

/// The layers `dirs` (extracted, overlay form, bottom first) as one layer:
/// what `--single-snapshot` writes for a stage. Later layers win; a
/// whiteout or an opaque directory drops what earlier ones put below it.
pub fn squash(dirs: &[PathBuf]) -> Result<Vec<LayerEntry>> {
    // Each kept entry with the index of the layer it comes from.
    let mut merged: BTreeMap<PathBuf, (usize, LayerEntry)> = BTreeMap::new();
    let mut opaque: BTreeMap<PathBuf, LayerEntry> = BTreeMap::new();
    let drop_below = |merged: &mut BTreeMap<PathBuf, (usize, LayerEntry)>, path: &Path| {
        let below: Vec<PathBuf> = merged
            .range(path.to_path_buf()..)
            .map(|(p, _)| p.clone())
            .take_while(|p| p.starts_with(path))
            .filter(|p| p != path)
            .collect();
        for p in below {
            merged.remove(&p);
        }
    };
    for (layer_index, dir) in dirs.iter().enumerate() {
        for entry in layer::layer_from_overlay_upper(dir)? {
            match entry.kind {
                EntryKind::OpaqueWhiteout => {
                    drop_below(&mut merged, &entry.path);
                    opaque.insert(entry.path.clone(), entry);
                }
                EntryKind::Whiteout => {
                    drop_below(&mut merged, &entry.path);
                    opaque.retain(|p, _| !p.starts_with(&entry.path));
                    merged.insert(entry.path.clone(), (layer_index, entry));
                }
                _ => {
                    let replaced = merged.get(&entry.path).map(|(_, e)| e.kind.clone());
                    if entry.kind == EntryKind::Dir {
                        // A directory where an earlier layer deleted one: what
                        // was below stays hidden.
                        if replaced == Some(EntryKind::Whiteout) {
                            let mut marker =
                                LayerEntry::new(entry.path.clone(), EntryKind::OpaqueWhiteout);
                            marker.mtime = entry.mtime;
                            opaque.insert(entry.path.clone(), marker);
                        }
                    } else {
                        drop_below(&mut merged, &entry.path);
                        opaque.remove(&entry.path);
                    }
                    merged.insert(entry.path.clone(), (layer_index, entry));
                }
            }
        }
    }
    let sources: BTreeMap<PathBuf, usize> =
        merged.iter().map(|(p, (i, _))| (p.clone(), *i)).collect();
    let mut entries = Vec::with_capacity(merged.len() + opaque.len());
    for (path, (layer_index, mut entry)) in merged {
        if let EntryKind::Hardlink(target) = &entry.kind {
            if sources.get(target) != Some(&layer_index) {
                entry.kind = EntryKind::File(dirs[layer_index].join(&path));
            }
        }
        entries.push(entry);
    }
    entries.extend(opaque.into_values());
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sandbox::overlay::Overlay;

    /// `(path, kind)` of each entry, for assertions (also `rootfs::walk`'s).
    pub(crate) fn kinds(entries: &[LayerEntry]) -> Vec<(String, String)> {
        entries
            .iter()
            .map(|e| {
                let kind = match &e.kind {
                    EntryKind::File(_) => "file".to_string(),
                    EntryKind::Dir => "dir".to_string(),
                    EntryKind::Whiteout => "whiteout".to_string(),
                    EntryKind::OpaqueWhiteout => "opaque".to_string(),
                    EntryKind::Hardlink(t) => format!("link:{}", t.display()),
                    other => format!("{other:?}"),
                };
                (e.path.display().to_string(), kind)
            })
            .collect()
    }

    #[test]
    fn squash_keeps_the_top_of_each_path_and_drops_what_was_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            tmp.path().join("a"),
            tmp.path().join("b"),
            tmp.path().join("c"),
        );
        // a: adds /app/x, /app/y, /tmp/t; b: deletes /app/y and /tmp, replaces
        // /etc (from the base) with an opaque dir; c: re-creates /tmp,
        // links /app/z to /app/x of layer a.
        fs::create_dir_all(a.join("app")).unwrap();
        fs::create_dir_all(a.join("tmp")).unwrap();
        fs::write(a.join("app/x"), "x").unwrap();
        fs::write(a.join("app/y"), "y").unwrap();
        fs::write(a.join("tmp/t"), "t").unwrap();
        fs::create_dir_all(b.join("app")).unwrap();
        whiteout(&b.join("app/y"));
        whiteout(&b.join("tmp"));
        fs::create_dir_all(b.join("etc")).unwrap();
        rustix::fs::setxattr(
            b.join("etc").as_path(),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        fs::write(b.join("etc/new"), "n").unwrap();
        fs::create_dir_all(c.join("tmp")).unwrap();
        fs::create_dir_all(c.join("app")).unwrap();
        fs::write(c.join("app/z"), "z").unwrap();
        fs::hard_link(c.join("app/z"), c.join("app/z2")).unwrap();

        let entries = squash(&[a, b, c.clone()]).unwrap();
        assert_eq!(
            kinds(&entries),
            [
                ("app", "dir"),
                ("app/x", "file"),
                ("app/y", "whiteout"),
                ("app/z", "file"),
                ("app/z2", "link:app/z"),
                ("etc", "dir"),
                ("etc", "opaque"),
                ("etc/new", "file"),
                ("tmp", "dir"),
                ("tmp", "opaque"),
            ]
            .map(|(p, k)| (p.to_string(), k.to_string()))
        );
        // Layer c's file content comes from layer c.
        let z = entries
            .iter()
            .find(|e| e.path == Path::new("app/z"))
            .unwrap();
        assert_eq!(z.kind, EntryKind::File(c.join("app/z")));
    }

    #[test]
    fn stubs_leave_no_trace_in_an_upper_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let (lower, upper) = (tmp.path().join("lower"), tmp.path().join("upper"));
        fs::create_dir_all(lower.join("etc")).unwrap();
        // The sandbox made /etc/hosts and /proc; the step wrote /etc/app.
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::write(upper.join("etc/hosts"), "").unwrap();
        fs::create_dir_all(upper.join("proc")).unwrap();
        fs::create_dir_all(upper.join("run/secrets")).unwrap();
        fs::write(upper.join("run/secrets/token"), "").unwrap();
        let stubs: Vec<PathBuf> = [
            "etc/hosts",
            "proc",
            "run",
            "run/secrets",
            "run/secrets/token",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let lower_meta = |rel: &Path| fs::symlink_metadata(lower.join(rel)).ok();
        remove_stubs(&upper, &stubs, true, lower_meta).unwrap();
        // /etc only held the stub, and the lower layer has it as it is.
        assert!(fs::read_dir(&upper).unwrap().next().is_none());

        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::write(upper.join("etc/hosts"), "").unwrap();
        fs::write(upper.join("etc/app"), "written by the step").unwrap();
        remove_stubs(&upper, &stubs[..1], true, lower_meta).unwrap();
        assert!(!upper.join("etc/hosts").exists());
        assert!(upper.join("etc/app").exists());
    }

    #[test]
    fn a_copied_up_file_keeps_all_its_names_a_new_one_does_not() {
        use std::os::unix::fs::MetadataExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let lower = dir.join("lower");
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::create_dir_all(lower.join("usr/bin")).unwrap();
        fs::write(lower.join("usr/bin/tool"), "v1").unwrap();
        fs::hard_link(lower.join("usr/bin/tool"), lower.join("etc/tool-alias")).unwrap();
        fs::write(lower.join("g"), "old").unwrap();
        fs::hard_link(lower.join("g"), lower.join("g-alias")).unwrap();
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        for d in [&upper, &work, &merged] {
            fs::create_dir_all(d).unwrap();
        }
        let mount = Overlay::mount(std::slice::from_ref(&lower), &upper, &work, &merged).unwrap();
        // Written through one name: every name shows it (index=on).
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(merged.join("usr/bin/tool"))
            .unwrap();
        std::io::Write::write_all(&mut f, b"+v2").unwrap();
        drop(f);
        assert_eq!(
            fs::read_to_string(merged.join("etc/tool-alias")).unwrap(),
            "v1+v2"
        );
        // Replaced: the other name keeps the old file.
        fs::remove_file(merged.join("g")).unwrap();
        fs::write(merged.join("g"), "new").unwrap();
        mount.unmount().unwrap();

        relink_copied_up(&upper, std::slice::from_ref(&lower)).unwrap();
        let tool = fs::symlink_metadata(upper.join("usr/bin/tool")).unwrap();
        let alias = fs::symlink_metadata(upper.join("etc/tool-alias")).unwrap();
        assert_eq!(tool.ino(), alias.ino());
        assert_eq!(
            fs::read_to_string(upper.join("etc/tool-alias")).unwrap(),
            "v1+v2"
        );
        assert!(!upper.join("g-alias").exists());
        assert_eq!(fs::read_to_string(upper.join("g")).unwrap(), "new");
        assert!(!has_xattr(
            &upper.join("usr/bin/tool"),
            "trusted.overlay.origin"
        ));
        // The layer holds both names, linked.
        let entries = layer::layer_from_overlay_upper(&upper).unwrap();
        assert!(entries.iter().any(|e| e.path == Path::new("usr/bin/tool")
            && e.kind == EntryKind::Hardlink(PathBuf::from("etc/tool-alias"))));
    }

    /// What an overlay without `index=on` gets: linked lower files copied up
    /// whole, then taken out again where the step left them alone.
    #[test]
    fn linked_lower_files_are_copied_up_whole_and_dropped_when_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let (lower, top, upper) = (
            tmp.path().join("l"),
            tmp.path().join("t"),
            tmp.path().join("u"),
        );
        for dir in [&lower, &top, &upper] {
            fs::create_dir(dir).unwrap();
        }
        fs::create_dir_all(lower.join("usr/bin")).unwrap();
        fs::write(lower.join("usr/bin/gzip"), "gz").unwrap();
        fs::hard_link(lower.join("usr/bin/gzip"), lower.join("usr/bin/gunzip")).unwrap();
        fs::write(lower.join("a"), "a").unwrap();
        fs::hard_link(lower.join("a"), lower.join("b")).unwrap();
        fs::write(lower.join("single"), "1").unwrap();
        // A higher layer hides `b`: `a` alone shows, nothing to keep whole.
        fs::write(top.join("b"), "other").unwrap();
        let lowers = [lower.clone(), top.clone()];
        let mut known = LinkedNames::new();

        let copies = LinkedCopies::copy_up(&upper, &lowers, &mut known).unwrap();
        let gzip = fs::symlink_metadata(upper.join("usr/bin/gzip")).unwrap();
        let gunzip = fs::symlink_metadata(upper.join("usr/bin/gunzip")).unwrap();
        assert_eq!(gzip.ino(), gunzip.ino());
        assert_ne!(
            gzip.ino(),
            fs::symlink_metadata(lower.join("usr/bin/gzip"))
                .unwrap()
                .ino()
        );
        assert!(!upper.join("a").exists() && !upper.join("single").exists());
        // Left alone: the upper directory is empty again.
        copies.drop_unchanged(&upper, &lowers).unwrap();
        assert_eq!(fs::read_dir(&upper).unwrap().count(), 0);

        // Written through one name: both stay, linked, with the new data.
        let copies = LinkedCopies::copy_up(&upper, &lowers, &mut known).unwrap();
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(upper.join("usr/bin/gunzip"))
            .unwrap();
        std::io::Write::write_all(&mut file, b"+").unwrap();
        drop(file);
        copies.drop_unchanged(&upper, &lowers).unwrap();
        assert_eq!(
            fs::read_to_string(upper.join("usr/bin/gzip")).unwrap(),
            "gz+"
        );
        let entries = layer::layer_from_overlay_upper(&upper).unwrap();
        assert_eq!(
            kinds(&entries),
            [
                ("usr".into(), "dir".into()),
                ("usr/bin".into(), "dir".into()),
                ("usr/bin/gunzip".into(), "file".into()),
                ("usr/bin/gzip".into(), "link:usr/bin/gunzip".into()),
            ]
        );
        fs::remove_dir_all(upper.join("usr")).unwrap();

        // A name added to the copy: kept whole, as the step made it.
        let copies = LinkedCopies::copy_up(&upper, &lowers, &mut known).unwrap();
        fs::hard_link(upper.join("usr/bin/gzip"), upper.join("zcat")).unwrap();
        copies.drop_unchanged(&upper, &lowers).unwrap();
        assert_eq!(fs::symlink_metadata(upper.join("zcat")).unwrap().nlink(), 3);
    }
}
