//! The local store's cache entries (`<--cache-dir>/cache-entries/`): each
//! entry's JSON at `<dir>/<64 hex>.json`, named after [`Key::tag`].
//!
//! An entry is written to a temporary file beside it and renamed into
//! place, so a reader sees a whole entry or none, and writers racing on a
//! key (same key, same content) are harmless. This module holds entries
//! only: the layer blobs they name are in the local store's blobs, and
//! whether one is there is the engine's check.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::entry::{Entry, Lookup, check};
use crate::key::Key;
use crate::layout::StoreError;
use crate::oci_layout::{create_dir, write_atomic};

/// The directory of the local store's cache entries.
#[derive(Debug, Clone)]
pub struct LocalEntries {
    dir: PathBuf,
}

impl LocalEntries {
    /// Opens the entries at `dir` (`<store>/cache-entries`), creating the
    /// directory if missing.
    pub fn open(dir: &Path) -> Result<LocalEntries, StoreError> {
        create_dir(dir)?;
        Ok(LocalEntries {
            dir: dir.to_owned(),
        })
    }

    /// Looks `key` up: [`Lookup::Miss`] when it has no file, else what
    /// [`check`] says of the file's content. Whether the entry's layer blob
    /// is in the store is the caller's check.
    #[must_use]
    pub fn get(&self, key: &Key, now: i64, ttl: Duration) -> Lookup {
        let path = self.path(key);
        match fs::read(&path) {
            Ok(data) => match check(&data, key, now, ttl) {
                Lookup::Invalid(reason) => Lookup::Invalid(format!("{}: {reason}", path.display())),
                hit @ Lookup::Hit(_) => {
                    // Its last use, for `executor cache prune`.
                    crate::oci_layout::mark_accessed(&path);
                    hit
                }
                other => other,
            },
            Err(err) if err.kind() == io::ErrorKind::NotFound => Lookup::Miss,
            Err(err) => Lookup::Invalid(format!("cannot read {}: {err}", path.display())),
        }
    }

    /// Writes `entry` under its key, replacing the file there atomically.
    pub fn put(&self, entry: &Entry) -> Result<(), StoreError> {
        let json = entry.to_json();
        // What is written must read back (digests, config).
        Entry::from_json(&json).map_err(|source| StoreError::Entry {
            key: entry.key,
            source,
        })?;
        Ok(write_atomic(&self.path(&entry.key), &json)?)
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{}.json", key.tag()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::entry::EntryLayer;

    const NOW: i64 = 1_764_480_000;
    const TTL: Duration = Duration::from_secs(3600);

    fn entry(n: u8) -> Entry {
        Entry {
            key: Key::from_bytes([n; 32]),
            written: NOW,
            config: json!({"architecture": "amd64", "os": "linux"}),
            layer: Some(EntryLayer {
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                digest: format!("sha256:{}", "a".repeat(64)),
                size: 7,
                diff_id: format!("sha256:{}", "d".repeat(64)),
            }),
        }
    }

    fn invalid(lookup: Lookup) -> String {
        match lookup {
            Lookup::Invalid(reason) => reason,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn put_then_get() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache-entries");
        let entries = LocalEntries::open(&dir).unwrap();
        let one = entry(1);
        assert_eq!(entries.get(&one.key, NOW, TTL), Lookup::Miss);
        entries.put(&one).unwrap();
        assert_eq!(entries.get(&one.key, NOW, TTL), Lookup::Hit(one.clone()));
        assert_eq!(
            entries.get(&one.key, NOW + 3601, TTL),
            Lookup::Expired { written: NOW }
        );
        assert_eq!(entries.get(&entry(2).key, NOW, TTL), Lookup::Miss);
        // The file is the entry's JSON, named after its key's tag.
        let path = dir.join(format!("{}.json", one.key.tag()));
        assert_eq!(fs::read(&path).unwrap(), one.to_json());

        // A second put replaces the first, and leaves no temporary file.
        let newer = Entry {
            written: NOW + 10,
            layer: None,
            ..one.clone()
        };
        entries.put(&newer).unwrap();
        assert_eq!(entries.get(&one.key, NOW, TTL), Lookup::Hit(newer));
        let files: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(files.len(), 1);
    }

    #[test]
    fn get_reports_what_it_cannot_use() {
        let tmp = tempfile::tempdir().unwrap();
        let entries = LocalEntries::open(tmp.path()).unwrap();
        let key = entry(1).key;
        let path = tmp.path().join(format!("{}.json", key.tag()));

        fs::write(&path, b"{\"version\":1,").unwrap();
        assert!(invalid(entries.get(&key, NOW, TTL)).starts_with(&format!(
            "{}: cannot parse the cache entry JSON: ",
            path.display()
        )));
        // Another key's entry under this key's name.
        fs::write(&path, entry(2).to_json()).unwrap();
        assert_eq!(
            invalid(entries.get(&key, NOW, TTL)),
            format!(
                "{}: the entry filed under {key} is the entry of {}",
                path.display(),
                entry(2).key
            )
        );
        // Unreadable: a directory where the file should be.
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        assert!(
            invalid(entries.get(&key, NOW, TTL))
                .starts_with(&format!("cannot read {}: ", path.display()))
        );
    }

    #[test]
    fn put_refuses_an_entry_it_could_not_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let entries = LocalEntries::open(tmp.path()).unwrap();
        let bad = Entry {
            config: json!("not an object"),
            ..entry(1)
        };
        let err = entries.put(&bad).unwrap_err();
        assert!(matches!(
            err,
            StoreError::Entry {
                source: crate::EntryError::Config,
                ..
            }
        ));
        assert_eq!(entries.get(&bad.key, NOW, TTL), Lookup::Miss);
    }
}
