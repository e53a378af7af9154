//! The in-place root (`--isolation=in-place`, kaniko's model): a stage is
//! built in the executor's own root filesystem, for a container that may
//! create no namespace and mount nothing.
//!
//! Making the root clears it back first — everything but the protected
//! paths (the executor's own files, the context, the store, secrets,
//! `/proc`, `/sys`, `/dev`, the runtime's `/etc` files, `--ignore-path`s,
//! and every mount point found in `/proc/self/mountinfo`) is removed — then
//! the stage's layers are extracted over it, the protected paths left
//! alone. One stage at a time has the root: a process-wide lease, taken
//! when the root is made and given back when it drops, makes stages that
//! could run at once wait for each other.
//!
//! Snapshots compare metadata walks ([`super::walk`]): one before a RUN
//! (the walk after the last RUN, when nothing changed the root since), one
//! after it. Protected paths are never walked, so they are in no layer.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, PoisonError};

use super::images::{self, LayerRef};
use super::root::RootError;
use super::walk::Walk;
use crate::image::apply::{self, ApplyOptions, WhiteoutMode};
use crate::image::layer::LayerEntry;
use crate::image::store::Store;
use crate::sandbox::mountinfo;

type Result<T, E = RootError> = std::result::Result<T, E>;

/// Where in-place stages are built: the root (`/` for real builds) and the
/// paths in it a build must leave alone (image paths: absolute, within the
/// root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InPlace {
    pub root: PathBuf,
    pub protected: Vec<PathBuf>,
}

/// Whether some stage has the root now.
static TAKEN: Mutex<bool> = Mutex::new(false);
static FREED: Condvar = Condvar::new();

/// The root, held by one stage until it drops.
struct Lease;

impl Lease {
    fn take() -> Self {
        let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
        while *taken {
            taken = FREED.wait(taken).unwrap_or_else(PoisonError::into_inner);
        }
        *taken = true;
        Lease
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        *TAKEN.lock().unwrap_or_else(PoisonError::into_inner) = false;
        FREED.notify_one();
    }
}

/// A stage's in-place root.
pub(super) struct InPlaceRoot {
    root: PathBuf,
    /// Relative paths never walked, cleared nor written.
    skip: HashSet<PathBuf>,
    /// The same as image paths, for layer extraction.
    protected: Vec<PathBuf>,
    /// The walk the next diff compares with, taken before the step.
    before: Option<Walk>,
    /// The walk after the last diff, while nothing else changed the root.
    last: Option<Walk>,
    _lease: Lease,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> RootError + '_ {
    move |source| RootError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `path` relative to the root: without its leading `/` and `.`s.
fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect()
}

impl InPlaceRoot {
    /// Clears `place.root` but its protected paths and extracts `layers`
    /// (in the store) over it; waits while another stage has the root.
    pub(super) fn new(
        place: &InPlace,
        store: &Store,
        layers: &[LayerRef],
        privileged: bool,
    ) -> Result<Self> {
        let lease = Lease::take();
        let mut protected: Vec<PathBuf> = place.protected.iter().map(|p| relative(p)).collect();
        protected.extend(mount_points(&place.root));
        protected.retain(|p| !p.as_os_str().is_empty());
        protected.sort();
        protected.dedup();
        let skip: HashSet<PathBuf> = protected.iter().cloned().collect();
        let ancestors: HashSet<PathBuf> = protected
            .iter()
            .flat_map(|p| p.ancestors().skip(1).map(Path::to_path_buf))
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        tracing::debug!(root = %place.root.display(), ?protected, "clearing the in-place root");
        clear(&place.root, Path::new(""), &skip, &ancestors)?;
        let opts = ApplyOptions {
            root_is_privileged: privileged,
            preserve_ownership: true,
            ignore_paths: protected.iter().map(|p| Path::new("/").join(p)).collect(),
        };
        for layer in layers {
            let digest = images::descriptor_digest(&layer.descriptor)?;
            store.apply_blob(&digest, &place.root, &opts)?;
        }
        Ok(Self {
            root: place.root.clone(),
            skip,
            protected: opts.ignore_paths,
            before: None,
            last: None,
            _lease: lease,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.root
    }

    /// Lays a COPY's staging tree over the root (streamed as a tar through
    /// a pipe, so the store may be on another file system), protected
    /// paths left alone.
    pub(super) fn add_tree(&mut self, staging: &Path, privileged: bool) -> Result<()> {
        self.last = None;
        let (read, write) = rustix::pipe::pipe().map_err(|e| io_at(staging)(e.into()))?;
        let opts = ApplyOptions {
            root_is_privileged: privileged,
            preserve_ownership: true,
            ignore_paths: self.protected.clone(),
        };
        let (written, applied) = std::thread::scope(|scope| {
            let writer = scope.spawn(move || {
                let mut tar = tar::Builder::new(fs::File::from(write));
                tar.follow_symlinks(false);
                tar.mode(tar::HeaderMode::Complete);
                tar.append_dir_all(".", staging)?;
                tar.into_inner().map(drop)
            });
            let applied = apply::apply_tar_with(
                fs::File::from(read),
                &self.root,
                &opts,
                &WhiteoutMode::Apply,
            );
            (writer.join(), applied)
        });
        applied?;
        written
            .unwrap_or_else(|_| Err(io::Error::other("the tar writer panicked")))
            .map_err(io_at(staging))?;
        fs::remove_dir_all(staging).map_err(io_at(staging))
    }

    /// Before a RUN: the walk to compare with (the last one when nothing
    /// changed the root since).
    pub(super) fn before_run(&mut self) -> Result<()> {
        if self.before.is_none() {
            self.before = Some(match self.last.take() {
                Some(walk) => walk,
                None => Walk::of(&self.root, &self.skip)?,
            });
        }
        Ok(())
    }

    /// What changed since [`InPlaceRoot::before_run`], less `ignore` (image
    /// paths). `relaxed` paths (the ones the isolation itself touched
    /// around the step) are compared without their change time.
    pub(super) fn take_diff(
        &mut self,
        relaxed: &[PathBuf],
        ignore: &[PathBuf],
    ) -> Result<Vec<LayerEntry>> {
        let before = self.before.take().ok_or(RootError::NoCopy)?;
        let after = Walk::of(&self.root, &self.skip)?;
        let relaxed: HashSet<PathBuf> = relaxed.iter().map(|p| relative(p)).collect();
        let ignore: Vec<PathBuf> = ignore.iter().map(|p| relative(p)).collect();
        let mut entries = after.diff(&before, &self.root, &relaxed)?;
        entries.retain(|e| !ignore.iter().any(|i| e.path.starts_with(i)));
        self.last = Some(after);
        Ok(entries)
    }
}

/// Removes everything below `root/rel` but `skip` (relative paths) and
/// what they hold; `keep` (their ancestors) are kept and cleared inside
/// when they are directories, kept as they are otherwise.
fn clear(root: &Path, rel: &Path, skip: &HashSet<PathBuf>, keep: &HashSet<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    for entry in fs::read_dir(&dir).map_err(io_at(&dir))? {
        let entry = entry.map_err(io_at(&dir))?;
        let child = rel.join(entry.file_name());
        if skip.contains(&child) {
            continue;
        }
        let path = entry.path();
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_at(&path)(e)),
        };
        if keep.contains(&child) {
            if meta.is_dir() {
                clear(root, &child, skip, keep)?;
            }
            continue;
        }
        let removed = if meta.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_at(&path)(e)),
            _ => {}
        }
    }
    Ok(())
}

/// The mount points below `root` (relative), from `/proc/self/mountinfo`:
/// volumes, secrets, the runtime's files. None when it cannot be read.
fn mount_points(root: &Path) -> Vec<PathBuf> {
    let Ok(root) = root.canonicalize() else {
        return Vec::new();
    };
    mountinfo::mount_points_under(&root)
        .into_iter()
        .filter_map(|point| point.strip_prefix(&root).ok().map(Path::to_path_buf))
        .filter(|rel| !rel.as_os_str().is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clearing_keeps_protected_paths_and_their_ancestors() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["kaniko/.docker", "etc/ssl", "usr/bin", "var/run/secrets/sa"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "kaniko/executor",
            "etc/hosts",
            "etc/passwd",
            "usr/bin/sh",
            "var/run/secrets/sa/token",
            "var/run/other",
        ] {
            fs::write(root.join(f), f).unwrap();
        }
        let skip: HashSet<PathBuf> = ["kaniko", "etc/hosts", "var/run/secrets"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let keep: HashSet<PathBuf> = ["etc", "var", "var/run"]
            .iter()
            .map(PathBuf::from)
            .collect();
        clear(root, Path::new(""), &skip, &keep).unwrap();
        let mut left: Vec<String> = walkdir(root);
        left.sort();
        assert_eq!(
            left,
            [
                "etc",
                "etc/hosts",
                "kaniko",
                "kaniko/.docker",
                "kaniko/executor",
                "var",
                "var/run",
                "var/run/secrets",
                "var/run/secrets/sa",
                "var/run/secrets/sa/token"
            ]
        );
    }

    fn walkdir(root: &Path) -> Vec<String> {
        Walk::of(root, &HashSet::new())
            .unwrap()
            .entries
            .keys()
            .map(|p| p.display().to_string())
            .collect()
    }

    #[test]
    fn mount_points_are_relative_to_the_root() {
        assert!(
            mount_points(Path::new("/"))
                .iter()
                .any(|p| p == Path::new("proc"))
        );
    }
}
