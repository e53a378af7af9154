//! Entries of a directory tree on disk: a prepared tree, or an overlayfs
//! upper directory whose whiteouts become OCI whiteouts. Hard links are
//! detected, symlinks are not followed, xattrs are read with the storage
//! layer's one reader ([`executor_cache::xattr`]).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{EntryKind, LayerEntry, LayerError, Result};

/// The entries for the tree under `dir` (not `dir` itself), sorted as
/// [`write_layer`] writes them.
///
/// Symlinks are not followed. A non-directory with several links inside
/// the tree is written once, at the path that sorts first, and as hard
/// links at the others. Xattrs are read without following symlinks,
/// except `security.selinux` (a host label) and overlayfs' own
/// `trusted.overlay.*` / `user.overlay.*`. Sockets are skipped.
pub fn layer_from_dir(dir: &Path) -> Result<Vec<LayerEntry>> {
    walk(dir, false)
}

/// Like [`layer_from_dir`] for the upper directory of an overlay mount:
/// its whiteouts (character devices 0:0) become [`EntryKind::Whiteout`]
/// and its opaque directories (`trusted.overlay.opaque` or
/// `user.overlay.opaque` set to `y`) get an [`EntryKind::OpaqueWhiteout`].
pub fn layer_from_overlay_upper(dir: &Path) -> Result<Vec<LayerEntry>> {
    walk(dir, true)
}

fn walk(root: &Path, overlay: bool) -> Result<Vec<LayerEntry>> {
    let mut entries = Vec::new();
    // Inodes with several links, by (dev, ino), with the paths found.
    let mut links: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let dir = root.join(&rel);
        let read_err = |source| LayerError::Read {
            path: dir.clone(),
            source,
        };
        let mut names = Vec::new();
        for child in fs::read_dir(&dir).map_err(read_err)? {
            names.push(child.map_err(read_err)?.file_name());
        }
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            let path = root.join(&rel);
            let meta = fs::symlink_metadata(&path).map_err(|source| LayerError::Read {
                path: path.clone(),
                source,
            })?;
            let Some((entry, opaque)) = entry_for(&path, rel.clone(), &meta, overlay)? else {
                continue;
            };
            if entry.kind == EntryKind::Dir {
                pending.push(rel.clone());
            } else if meta.nlink() > 1 && entry.kind != EntryKind::Whiteout {
                links
                    .entry((meta.dev(), meta.ino()))
                    .or_default()
                    .push(entries.len());
            }
            entries.push(entry);
            if opaque {
                let mut marker = LayerEntry::new(rel, EntryKind::OpaqueWhiteout);
                marker.mtime = meta.mtime();
                entries.push(marker);
            }
        }
    }
    for indexes in links.values() {
        let Some(&first) = indexes
            .iter()
            .min_by(|&&a, &&b| entries[a].path.cmp(&entries[b].path))
        else {
            continue;
        };
        let target = entries[first].path.clone();
        for &i in indexes {
            if i != first {
                entries[i].kind = EntryKind::Hardlink(target.clone());
            }
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

/// The entry for one file of a tree, and whether it is an opaque overlay
/// directory; `None` for files a layer cannot hold (sockets).
pub(crate) fn entry_for(
    path: &Path,
    rel: PathBuf,
    meta: &fs::Metadata,
    overlay: bool,
) -> Result<Option<(LayerEntry, bool)>> {
    let read_err = |source| LayerError::Read {
        path: path.to_owned(),
        source,
    };
    let ft = meta.file_type();
    let rdev = meta.rdev();
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    let mut xattrs = read_xattrs(path)?;
    let mut opaque = false;
    for ns in ["trusted.overlay.", "user.overlay."] {
        if overlay && ft.is_dir() {
            let key = format!("{ns}opaque");
            opaque |= xattrs.get(&key).is_some_and(|v| v == b"y");
        }
        xattrs.retain(|k, _| !k.starts_with(ns));
    }
    let kind = if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File(path.to_owned())
    } else if ft.is_symlink() {
        EntryKind::Symlink(fs::read_link(path).map_err(read_err)?)
    } else if ft.is_char_device() && overlay && rdev == 0 {
        EntryKind::Whiteout
    } else if ft.is_char_device() {
        EntryKind::CharDevice(major, minor)
    } else if ft.is_block_device() {
        EntryKind::BlockDevice(major, minor)
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else {
        tracing::debug!(path = %path.display(), "skipping a socket: layers cannot hold sockets");
        return Ok(None);
    };
    let entry = if kind == EntryKind::Whiteout {
        LayerEntry {
            mtime: meta.mtime(),
            ..LayerEntry::new(rel, kind)
        }
    } else {
        LayerEntry {
            path: rel,
            kind,
            mode: meta.mode() & 0o7777,
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
            mtime: meta.mtime(),
            xattrs,
        }
    };
    Ok(Some((entry, opaque)))
}

/// Every xattr of `path` a layer records ([`executor_cache::xattr::read_xattrs`]:
/// not following symlinks, without `security.selinux`).
pub(crate) fn read_xattrs(path: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    executor_cache::xattr::read_xattrs(path).map_err(|source| LayerError::Read {
        path: path.to_owned(),
        source,
    })
}
