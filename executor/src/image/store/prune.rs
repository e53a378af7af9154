//! Store upkeep (`executor cache prune`): what the store holds, item by
//! item (base and layer blobs, extracted layers, cache mounts, local cache
//! entries), each with its size and when it was last used, and the removal
//! of the least recently used ones down to a size or past an age.
//!
//! "Last used" is recorded by the store itself when it hands an item out
//! ([`mark_used`]: a blob found or opened, a layer directory found, a cache
//! mount mounted, a local cache entry hit), so `noatime` and `relatime`
//! mounts do not matter: a file's access time, set to now; a directory's is
//! the modification time of a marker beside it (`.<name>.used`), since
//! reading a directory, as prune itself does to size it, moves its access
//! time.
//!
//! Nothing a running build uses is removed: every [`Store::open`] holds a
//! shared `flock` on `<root>/.in-use.lock` for as long as the store handle
//! lives (a build, `executor run`, `cache warm`); prune takes it exclusive
//! and refuses to run while anyone holds it. A removed blob that a stored
//! image reference (`index.json`) reaches drops that reference too: the
//! next build resolves the image again and downloads what is missing,
//! rather than finding an image with a hole in it.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use executor_cache::oci_layout::Index;
use oci_spec::image::Descriptor;
use rustix::fs::{FlockOperation, flock};

use super::{IN_USE_LOCK, Store, StoreError, remove_tree};

/// What kind of item of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ItemKind {
    Blob,
    Layer,
    CacheMount,
    CacheEntry,
}

impl std::fmt::Display for ItemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ItemKind::Blob => "blob",
            ItemKind::Layer => "extracted layer",
            ItemKind::CacheMount => "cache mount",
            ItemKind::CacheEntry => "cache entry",
        })
    }
}

/// One removable item of the store.
#[derive(Debug, Clone)]
pub struct Item {
    pub kind: ItemKind,
    pub path: PathBuf,
    /// Bytes of its files.
    pub size: u64,
    pub last_used: SystemTime,
}

/// What to prune.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Remove least recently used items until the store holds no more.
    pub max_size: Option<u64>,
    /// Remove items not used for this long.
    pub older_than: Option<Duration>,
    /// Say what would go; remove nothing.
    pub dry_run: bool,
}

/// What a prune did (or, dry, would do).
#[derive(Debug)]
pub struct PruneReport {
    pub size_before: u64,
    pub size_after: u64,
    /// The items removed, least recently used first.
    pub removed: Vec<Item>,
    /// Image references dropped because a blob they reach went.
    pub dropped_refs: Vec<String>,
}

/// Why the store cannot be pruned.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(
        "the store {} is in use (a build, executor run or cache warm is running on it)\nhint: prune when nothing runs on this --cache-dir",
        root.display()
    )]
    InUse { root: PathBuf },
    #[error("cannot lock {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Records that `path` (a file or a directory) is used now. Failures are
/// ignored: it is bookkeeping.
pub fn mark_used(path: &Path) {
    if path.is_dir() {
        let marker = used_marker(path);
        if File::create(&marker)
            .and_then(|f| f.set_modified(SystemTime::now()))
            .is_err()
        {
            tracing::trace!(path = %marker.display(), "cannot record a use");
        }
        return;
    }
    executor_cache::oci_layout::mark_accessed(path);
}

/// Prunes the store at `root` as `options` say.
///
/// # Errors
/// [`PruneError::InUse`] while a process has the store open; I/O errors
/// naming the path.
pub fn prune(root: &Path, options: &PruneOptions) -> std::result::Result<PruneReport, PruneError> {
    let lock_path = root.join(IN_USE_LOCK);
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| PruneError::Lock {
            path: lock_path.clone(),
            source,
        })?;
    match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            return Err(PruneError::InUse {
                root: root.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(PruneError::Lock {
                path: lock_path,
                source: e.into(),
            });
        }
    }
    let store = Store::open_unlocked(root)?;
    let mut items = store.items()?;
    let size_before: u64 = items.iter().map(|i| i.size).sum();
    items.sort_by_key(|i| (i.last_used, i.kind, i.path.clone()));
    let now = SystemTime::now();
    let mut size = size_before;
    let mut removed = Vec::new();
    for item in items {
        let old = options
            .older_than
            .is_some_and(|age| now.duration_since(item.last_used).unwrap_or_default() > age);
        let over = options.max_size.is_some_and(|max| size > max);
        if !(old || over) {
            continue;
        }
        size -= item.size;
        removed.push(item);
    }
    let blobs: BTreeSet<String> = removed
        .iter()
        .filter(|i| i.kind == ItemKind::Blob)
        .filter_map(|i| blob_digest(&i.path))
        .collect();
    let dropped_refs = store.refs_reaching(&blobs)?;
    if !options.dry_run {
        if !dropped_refs.is_empty() {
            store
                .layout
                .update_index(|index: &mut Index<Descriptor>| {
                    index.manifests.retain(|d| {
                        super::ref_name(d)
                            .is_none_or(|name| !dropped_refs.iter().any(|r| r == name))
                    });
                })
                .map_err(StoreError::from)?;
        }
        for item in &removed {
            let result = if item.kind == ItemKind::Layer || item.kind == ItemKind::CacheMount {
                let _ = fs::remove_file(used_marker(&item.path));
                remove_tree(&item.path)
            } else {
                fs::remove_file(&item.path)
            };
            match result {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(PruneError::Remove {
                        path: item.path.clone(),
                        source,
                    });
                }
            }
        }
    }
    Ok(PruneReport {
        size_before,
        size_after: size,
        removed,
        dropped_refs,
    })
}

/// The file whose modification time is directory `dir`'s last use.
fn used_marker(dir: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(dir.file_name().unwrap_or_default());
    name.push(".used");
    dir.with_file_name(name)
}

/// `sha256:<hex>` of a blob's path `blobs/sha256/<hex>`.
fn blob_digest(path: &Path) -> Option<String> {
    let hex = path.file_name()?.to_str()?;
    let algorithm = path.parent()?.file_name()?.to_str()?;
    Some(format!("{algorithm}:{hex}"))
}

impl Store {
    /// Every removable item of the store, with its size and last use.
    fn items(&self) -> std::result::Result<Vec<Item>, PruneError> {
        let mut items = Vec::new();
        let root = self.root();
        for (dir, kind, nested) in [
            (root.join("blobs"), ItemKind::Blob, true),
            (root.join("layers"), ItemKind::Layer, true),
            (root.join("cache-mounts"), ItemKind::CacheMount, false),
            (root.join("cache-entries"), ItemKind::CacheEntry, false),
        ] {
            let parents = if nested {
                list(&dir)?.into_iter().filter(|p| p.is_dir()).collect()
            } else {
                vec![dir]
            };
            for parent in parents {
                for path in list(&parent)? {
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                    // Locks and temporary files are not items.
                    if name.as_deref().is_none_or(|n| {
                        n.starts_with('.') || Path::new(n).extension().is_some_and(|e| e == "lock")
                    }) {
                        continue;
                    }
                    let Ok(meta) = fs::symlink_metadata(&path) else {
                        continue;
                    };
                    let is_dir = meta.is_dir();
                    if is_dir != matches!(kind, ItemKind::Layer | ItemKind::CacheMount) {
                        continue;
                    }
                    let last_used = if is_dir {
                        fs::metadata(used_marker(&path))
                            .and_then(|m| m.modified())
                            .ok()
                            .max(meta.modified().ok())
                    } else {
                        meta.accessed().ok().max(meta.modified().ok())
                    };
                    items.push(Item {
                        kind,
                        size: if is_dir { tree_size(&path) } else { meta.len() },
                        last_used: last_used.unwrap_or(SystemTime::UNIX_EPOCH),
                        path,
                    });
                }
            }
        }
        Ok(items)
    }

    /// The names of the image references whose manifest (or index) reaches
    /// one of `blobs`: the manifest itself, its config or a layer.
    fn refs_reaching(
        &self,
        blobs: &BTreeSet<String>,
    ) -> std::result::Result<Vec<String>, PruneError> {
        if blobs.is_empty() {
            return Ok(Vec::new());
        }
        let index: Index<Descriptor> = self.layout.read_index().map_err(StoreError::from)?;
        let mut refs = Vec::new();
        for root in &index.manifests {
            let Some(name) = super::ref_name(root) else {
                continue;
            };
            let mut todo = vec![root.digest().to_string()];
            let mut reached = false;
            while let Some(digest) = todo.pop() {
                if blobs.contains(&digest) {
                    reached = true;
                    break;
                }
                // A manifest or index: its children. A blob that is gone
                // or not JSON has none.
                let Ok(data) = fs::read(self.layout.blob_path(&digest)) else {
                    continue;
                };
                let Ok(value) = serde_json::from_slice::<serde_json::Value>(&data) else {
                    continue;
                };
                let children = value["manifests"]
                    .as_array()
                    .into_iter()
                    .chain(value["layers"].as_array())
                    .flatten()
                    .chain(std::iter::once(&value["config"]));
                todo.extend(
                    children
                        .filter_map(|d| d["digest"].as_str())
                        .map(str::to_owned),
                );
            }
            if reached {
                refs.push(name.to_owned());
            }
        }
        Ok(refs)
    }
}

/// The entries of `dir` (none when it does not exist).
fn list(dir: &Path) -> std::result::Result<Vec<PathBuf>, PruneError> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.path()))
            .collect::<io::Result<_>>()
            .map_err(|source| PruneError::Read {
                path: dir.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(PruneError::Read {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// The bytes of the regular files under `dir` (each inode once).
#[must_use]
pub fn tree_size(dir: &Path) -> u64 {
    let mut seen = BTreeSet::new();
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                todo.push(entry.path());
            } else if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
                total += meta.len();
            }
        }
    }
    total
}

/// `n` bytes as B, KiB, MiB, GiB or TiB, for summaries.
#[must_use]
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[expect(clippy::cast_precision_loss, reason = "a summary")]
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Parses a size: bytes, or a number with `K`, `M`, `G`, `T` (powers of
/// 1024, also written `KiB`, `MiB` ... or `KB`, `MB` ...).
///
/// # Errors
/// A message saying what is wrong, for the flag's error.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (such as 500M or 20G)"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        other => return Err(format!("unknown size unit {other:?} (one of K, M, G, T)")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, days: u64) {
        let when = SystemTime::now() - Duration::from_secs(days * 24 * 3600);
        let file = File::open(path).unwrap();
        file.set_times(fs::FileTimes::new().set_accessed(when).set_modified(when))
            .unwrap();
    }

    fn write_tree(dir: &Path, bytes: usize) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("f"), vec![1u8; bytes]).unwrap();
    }

    #[test]
    fn least_recently_used_go_first_down_to_the_size() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let store = Store::open(&root).unwrap();
        let old_blob = store.put_bytes(&[1u8; 1000]).unwrap();
        let new_blob = store.put_bytes(&[2u8; 1000]).unwrap();
        let layer = root.join("layers/sha256").join("ab".repeat(32));
        write_tree(&layer, 3000);
        let mount = root.join("cache-mounts").join("cd".repeat(32));
        write_tree(&mount, 500);
        age(&store.blob_path(&old_blob), 30);
        age(&layer, 20);
        age(&mount, 10);
        // Found again now: used.
        assert!(store.has_blob(&new_blob));
        drop(store);

        // Dry: the sizes, nothing removed.
        let dry = prune(
            &root,
            &PruneOptions {
                max_size: Some(1600),
                dry_run: true,
                ..PruneOptions::default()
            },
        )
        .unwrap();
        assert_eq!(dry.size_before, 5500);
        assert_eq!(dry.size_after, 1500);
        assert!(root.join("layers/sha256").join("ab".repeat(32)).is_dir());
        let kinds: Vec<_> = dry.removed.iter().map(|i| i.kind).collect();
        assert_eq!(kinds, [ItemKind::Blob, ItemKind::Layer]);

        let done = prune(
            &root,
            &PruneOptions {
                max_size: Some(1600),
                ..PruneOptions::default()
            },
        )
        .unwrap();
        assert_eq!(done.size_after, 1500);
        let store = Store::open(&root).unwrap();
        assert!(!store.has_blob(&old_blob));
        assert!(store.has_blob(&new_blob));
        assert!(!layer.exists());
        assert!(mount.is_dir());
        drop(store);

        // By age: the mount (10 days) goes, the new blob stays.
        let aged = prune(
            &root,
            &PruneOptions {
                older_than: Some(Duration::from_secs(5 * 24 * 3600)),
                ..PruneOptions::default()
            },
        )
        .unwrap();
        assert_eq!(aged.removed.len(), 1);
        assert!(!mount.exists());
    }

    #[test]
    fn nothing_is_pruned_while_the_store_is_in_use() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let store = Store::open(&root).unwrap();
        let blob = store.put_bytes(b"in use").unwrap();
        let err = prune(
            &root,
            &PruneOptions {
                max_size: Some(0),
                ..PruneOptions::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, PruneError::InUse { .. }), "{err}");
        assert!(store.has_blob(&blob));
    }

    #[test]
    fn a_reference_reaching_a_removed_blob_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let store = Store::open(&root).unwrap();
        let layer = store.put_bytes(b"layer").unwrap();
        let config = store.put_bytes(b"{}").unwrap();
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{config}","size":2}},"layers":[{{"digest":"{layer}","size":5}}]}}"#
        );
        let manifest_digest = store.put_bytes(manifest.as_bytes()).unwrap();
        let descriptor = Descriptor::new(
            oci_spec::image::MediaType::ImageManifest,
            manifest.len() as u64,
            oci_spec::image::Digest::try_from(manifest_digest.to_string()).unwrap(),
        );
        store.set_ref("base:1", &descriptor).unwrap();
        age(&store.blob_path(&layer), 30);
        drop(store);
        let report = prune(
            &root,
            &PruneOptions {
                older_than: Some(Duration::from_secs(24 * 3600)),
                ..PruneOptions::default()
            },
        )
        .unwrap();
        assert_eq!(report.dropped_refs, ["base:1"]);
        let store = Store::open(&root).unwrap();
        assert!(store.get_ref("base:1").unwrap().is_none());
        assert!(store.has_blob(&config));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("2K"), Ok(2048));
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("1 M"), Ok(1 << 20));
        assert!(parse_size("x").is_err());
        assert!(parse_size("5X").is_err());
    }
}
