//! Content hashes of file trees: what a COPY, an ADD or a bind mount's
//! source contributes to a cache key.
//!
//! A [`TreeHash`] covers each file's path, type, mode, owner, link target,
//! xattrs and content. It must never cover an mtime (touching a file must
//! not miss the cache), nor depend on the order files were found in. It
//! knows nothing of which files a step selects: `.dockerignore` and
//! `--exclude` are the engine's business.
//!
//! This is the one tree hash of the project: [`hash_dir`] hashes a whole
//! directory (what an `ADD <url>` fetched), and the executor's build
//! context feeds [`entry_at`]'s entries of each selected source into a
//! [`TreeHasher`] and combines the sources with [`selection_hash`], so a
//! COPY's key and a download's key read files the same way.

use std::collections::{BTreeMap, HashMap, hash_map};
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::key::{KeyEncoder, TreeHash};
use crate::xattr::read_xattrs;

/// The first bytes of a [`TreeHash`]'s encoding.
const TREE_VERSION: &str = "executor-cache-tree/1";
/// The first bytes of a [`selection_hash`]'s encoding.
const SELECTION_VERSION: &str = "executor-cache-selection/1";

/// The type of a [`TreeEntry`], with what the type needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File {
        content_sha256: [u8; 32],
    },
    Dir,
    Symlink {
        target: PathBuf,
    },
    /// A hard link to an earlier path of the same tree.
    Hardlink {
        target: PathBuf,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// One file of a tree. There is no mtime: it is not an input of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// Relative to the tree's root, `/`-separated.
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Permission bits, with setuid, setgid and sticky (`& 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Hashes a set of files fed in any order: [`TreeHasher::finish`] sorts
/// them by path, so the walk order of a file system does not matter.
#[derive(Debug, Clone, Default)]
pub struct TreeHasher {
    /// (path bytes, the entry's framed encoding).
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl TreeHasher {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, entry: &TreeEntry) {
        let path = entry.path.as_os_str().as_bytes().to_vec();
        let mut e = KeyEncoder::with_prefix("");
        e.bytes(&path);
        match &entry.kind {
            EntryKind::File { content_sha256 } => {
                e.str("file");
                e.digest(content_sha256);
            }
            EntryKind::Dir => e.str("dir"),
            EntryKind::Symlink { target } => {
                e.str("symlink");
                e.bytes(target.as_os_str().as_bytes());
            }
            EntryKind::Hardlink { target } => {
                e.str("hardlink");
                e.bytes(target.as_os_str().as_bytes());
            }
            EntryKind::CharDevice { major, minor } => {
                e.str("char-device");
                e.u64(u64::from(*major));
                e.u64(u64::from(*minor));
            }
            EntryKind::BlockDevice { major, minor } => {
                e.str("block-device");
                e.u64(u64::from(*major));
                e.u64(u64::from(*minor));
            }
            EntryKind::Fifo => e.str("fifo"),
        }
        e.u64(u64::from(entry.mode & 0o7777));
        e.u64(entry.uid);
        e.u64(entry.gid);
        let xattrs: Vec<(&String, &Vec<u8>)> = entry.xattrs.iter().collect();
        e.list(&xattrs, |e, (name, value)| {
            e.str(name);
            e.bytes(value);
        });
        self.entries.push((path, e.buf));
    }

    /// The hash of every entry added, sorted by path.
    #[must_use]
    pub fn finish(mut self) -> TreeHash {
        self.entries.sort_unstable();
        let mut e = KeyEncoder::with_prefix(TREE_VERSION);
        e.list(&self.entries, |e, (_, encoded)| {
            e.buf.extend_from_slice(encoded);
        });
        TreeHash::from_bytes(*e.finish().as_bytes())
    }
}

/// The [`TreeHash`] of everything under `dir`, `dir` itself included as
/// `.`. Symlinks are recorded, not followed; a file's content is hashed
/// as it streams; a file hard-linked to an earlier path (in sorted order)
/// is recorded as a [`EntryKind::Hardlink`] to it; sockets are left out
/// (no layer can hold one), and so are the xattrs [`read_xattrs`] leaves
/// out.
pub fn hash_dir(dir: &Path) -> io::Result<TreeHash> {
    let mut found = Vec::new();
    walk(dir, Path::new(""), &mut found)?;
    found.sort_by(|a, b| a.0.as_os_str().as_bytes().cmp(b.0.as_os_str().as_bytes()));
    let mut first_links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut hasher = TreeHasher::new();
    for (rel, meta) in found {
        let (full, path) = if rel.as_os_str().is_empty() {
            (dir.to_owned(), PathBuf::from("."))
        } else {
            (dir.join(&rel), rel)
        };
        if meta.file_type().is_socket() {
            continue;
        }
        let earlier = if !meta.is_dir() && meta.nlink() > 1 {
            match first_links.entry((meta.dev(), meta.ino())) {
                hash_map::Entry::Occupied(first) => Some(first.get().clone()),
                hash_map::Entry::Vacant(v) => {
                    v.insert(path.clone());
                    None
                }
            }
        } else {
            None
        };
        if let Some(entry) = entry_of(&full, &meta, path, earlier)? {
            hasher.add(&entry);
        }
    }
    Ok(hasher.finish())
}

/// The [`TreeEntry`] at `path` of the file `full` whose (not followed)
/// metadata is `meta`, owned as `meta` says (a caller presenting files
/// with another owner sets `uid` and `gid` after); `None` for a socket,
/// which no layer can hold. It sees one file, so never a
/// [`EntryKind::Hardlink`]: finding those is the walker's business.
pub fn entry_at(full: &Path, meta: &Metadata, path: PathBuf) -> io::Result<Option<TreeEntry>> {
    entry_of(full, meta, path, None)
}

/// [`entry_at`], or a [`EntryKind::Hardlink`] to `hardlink_to` when given
/// (whose content is then not read again).
fn entry_of(
    full: &Path,
    meta: &Metadata,
    path: PathBuf,
    hardlink_to: Option<PathBuf>,
) -> io::Result<Option<TreeEntry>> {
    let ft = meta.file_type();
    let device = || {
        let rdev = meta.rdev();
        (rustix::fs::major(rdev), rustix::fs::minor(rdev))
    };
    let kind = if let Some(target) = hardlink_to {
        EntryKind::Hardlink { target }
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink {
            target: fs::read_link(full)?,
        }
    } else if ft.is_file() {
        EntryKind::File {
            content_sha256: sha256_file(full)?,
        }
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_char_device() {
        let (major, minor) = device();
        EntryKind::CharDevice { major, minor }
    } else if ft.is_block_device() {
        let (major, minor) = device();
        EntryKind::BlockDevice { major, minor }
    } else {
        return Ok(None);
    };
    Ok(Some(TreeEntry {
        path,
        kind,
        mode: meta.mode() & 0o7777,
        uid: u64::from(meta.uid()),
        gid: u64::from(meta.gid()),
        xattrs: read_xattrs(full)?,
    }))
}

/// One source of a COPY as the build context selected it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedTree {
    /// Which of the step's source patterns selected it.
    pub pattern: u64,
    /// Its path in the context, as named or matched.
    pub path: String,
    /// The hash of the file or tree there, itself as `.`.
    pub tree: TreeHash,
}

/// The hash of a COPY's sources, in the order given (the order of the
/// patterns and of each wildcard's matches counts: it is the order they
/// are copied in).
#[must_use]
pub fn selection_hash(sources: &[SelectedTree]) -> TreeHash {
    let mut e = KeyEncoder::with_prefix(SELECTION_VERSION);
    e.list(sources, |e, source| {
        e.u64(source.pattern);
        e.str(&source.path);
        e.digest(source.tree.as_bytes());
    });
    TreeHash::from_bytes(*e.finish().as_bytes())
}

/// `dir/rel` and everything under it, not following symlinks.
fn walk(dir: &Path, rel: &Path, out: &mut Vec<(PathBuf, Metadata)>) -> io::Result<()> {
    let full = dir.join(rel);
    let meta = fs::symlink_metadata(&full)?;
    let is_dir = meta.is_dir();
    out.push((rel.to_owned(), meta));
    if is_dir {
        for child in fs::read_dir(&full)? {
            walk(dir, &rel.join(child?.file_name()), out)?;
        }
    }
    Ok(())
}

fn sha256_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(hasher.finalize().into()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::time::{Duration, SystemTime};

    fn entry(path: &str, kind: EntryKind) -> TreeEntry {
        TreeEntry {
            path: path.into(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            xattrs: BTreeMap::new(),
        }
    }

    fn file(path: &str, content: &[u8]) -> TreeEntry {
        entry(
            path,
            EntryKind::File {
                content_sha256: Sha256::digest(content).into(),
            },
        )
    }

    fn tree(entries: &[TreeEntry]) -> TreeHash {
        let mut h = TreeHasher::new();
        for e in entries {
            h.add(e);
        }
        h.finish()
    }

    #[test]
    fn tree_ignores_order() {
        let a = file("a", b"1");
        let b = file("b/c", b"2");
        let d = entry("b", EntryKind::Dir);
        assert_eq!(tree(&[a.clone(), b.clone(), d.clone()]), tree(&[b, d, a]));
    }

    #[test]
    fn tree_sees_every_attribute() {
        let base = {
            let mut e = file("a", b"1");
            e.xattrs.insert("user.x".into(), b"1".to_vec());
            e
        };
        let link = |target: &str| {
            entry(
                "l",
                EntryKind::Symlink {
                    target: target.into(),
                },
            )
        };
        let h = |e: TreeEntry| tree(&[e]);
        let reference = h(base.clone());
        let changed = [
            TreeEntry {
                mode: 0o755,
                ..base.clone()
            },
            TreeEntry {
                uid: 1,
                ..base.clone()
            },
            TreeEntry {
                gid: 1,
                ..base.clone()
            },
            TreeEntry {
                path: "b".into(),
                ..base.clone()
            },
            TreeEntry {
                kind: file("a", b"2").kind,
                ..base.clone()
            },
            TreeEntry {
                xattrs: BTreeMap::from([("user.x".into(), b"2".to_vec())]),
                ..base.clone()
            },
            TreeEntry {
                xattrs: BTreeMap::new(),
                ..base.clone()
            },
            TreeEntry {
                kind: EntryKind::Hardlink { target: "z".into() },
                ..base.clone()
            },
        ];
        for c in changed {
            assert_ne!(h(c.clone()), reference, "{c:?}");
        }
        assert_ne!(h(link("x")), h(link("y")));
        assert_ne!(
            h(entry("l", EntryKind::Hardlink { target: "x".into() })),
            h(link("x"))
        );
        assert_ne!(
            h(entry("d", EntryKind::CharDevice { major: 1, minor: 3 })),
            h(entry("d", EntryKind::BlockDevice { major: 1, minor: 3 }))
        );
        assert_ne!(tree(&[]), tree(&[entry("d", EntryKind::Dir)]));
    }

    fn set_mtime(path: &Path, secs: u64) {
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn hash_dir_ignores_mtime_and_sees_mode_content_and_links() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/a"), b"hello").unwrap();
        fs::write(root.join("b"), b"world").unwrap();
        symlink("sub/a", root.join("link")).unwrap();
        let first = hash_dir(root).unwrap();

        set_mtime(&root.join("sub/a"), 1_000_000);
        assert_eq!(hash_dir(root).unwrap(), first, "mtime changed the hash");

        fs::set_permissions(root.join("sub/a"), fs::Permissions::from_mode(0o600)).unwrap();
        let chmodded = hash_dir(root).unwrap();
        assert_ne!(chmodded, first, "chmod did not change the hash");

        fs::write(root.join("b"), b"World").unwrap();
        let edited = hash_dir(root).unwrap();
        assert_ne!(edited, chmodded, "new content did not change the hash");

        fs::remove_file(root.join("link")).unwrap();
        symlink("b", root.join("link")).unwrap();
        let relinked = hash_dir(root).unwrap();
        assert_ne!(relinked, edited, "new link target did not change the hash");

        fs::hard_link(root.join("b"), root.join("c")).unwrap();
        let linked = hash_dir(root).unwrap();
        fs::remove_file(root.join("c")).unwrap();
        fs::copy(root.join("b"), root.join("c")).unwrap();
        fs::set_permissions(root.join("c"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(root.join("b"), fs::Permissions::from_mode(0o644)).unwrap();
        assert_ne!(
            hash_dir(root).unwrap(),
            linked,
            "a hard link hashed as a copy"
        );
    }

    /// hash_dir records what a caller feeding TreeHasher by hand would: the
    /// root as `.`, a hard link as a link to the first path in sorted order.
    #[test]
    fn hash_dir_matches_hand_fed_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::write(root.join("b"), b"x").unwrap();
        fs::hard_link(root.join("b"), root.join("a")).unwrap();
        fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
        let meta = fs::metadata(root).unwrap();
        let (uid, gid) = (u64::from(meta.uid()), u64::from(meta.gid()));
        let owned = |mut e: TreeEntry, mode: u32| {
            e.uid = uid;
            e.gid = gid;
            e.mode = mode;
            e
        };
        let expected = tree(&[
            owned(entry(".", EntryKind::Dir), 0o755),
            owned(file("a", b"x"), 0o640),
            owned(
                entry("b", EntryKind::Hardlink { target: "a".into() }),
                0o640,
            ),
        ]);
        assert_eq!(hash_dir(root).unwrap(), expected);
    }

    /// The hashes of a fixed tree and selection. If this fails the
    /// encoding changed: every COPY's key changes with it, so bump the
    /// key's `VERSION` (or this module's versions) and update the literals
    /// on purpose.
    #[test]
    fn golden_tree_and_selection() {
        let mut link = entry("l", EntryKind::Symlink { target: "a".into() });
        link.xattrs.insert("user.k".into(), b"v".to_vec());
        let hash = tree(&[entry(".", EntryKind::Dir), file("a", b"1"), link]);
        assert_eq!(
            hash.to_string(),
            "sha256:14cf02659d18b1f346807b9625ff0ed8fff64ac51e989eac3877fca48bdc0b29"
        );
        let selection = selection_hash(&[SelectedTree {
            pattern: 1,
            path: "app".into(),
            tree: hash,
        }]);
        assert_eq!(
            selection.to_string(),
            "sha256:1fe0b294d047bdce2ab9ad7b759b86fc362cd62664f88fc986a0ecef1fa293bb"
        );
    }

    /// A selection is its sources in order: their patterns, paths and
    /// trees all count.
    #[test]
    fn selection_sees_order_patterns_and_paths() {
        let one = tree(&[file(".", b"1")]);
        let two = tree(&[file(".", b"2")]);
        let source = |pattern, path: &str, tree| SelectedTree {
            pattern,
            path: path.into(),
            tree,
        };
        let reference = selection_hash(&[source(0, "a", one), source(1, "b", two)]);
        for other in [
            selection_hash(&[source(1, "b", two), source(0, "a", one)]),
            selection_hash(&[source(0, "a", one), source(0, "b", two)]),
            selection_hash(&[source(0, "a", one), source(1, "c", two)]),
            selection_hash(&[source(0, "a", one), source(1, "b", one)]),
            selection_hash(&[source(0, "a", one)]),
            selection_hash(&[]),
        ] {
            assert_ne!(other, reference);
        }
    }
}
