//! A stage's root filesystem while it is built, and how a step's changes
//! become a layer.
//!
//! Two snapshotters, chosen once per build:
//! - **overlay** (the default): the root is an overlay mount whose lower
//!   directories are the stage's layers, each extracted once into the store
//!   and shared by every build and stage. A RUN writes into a fresh upper
//!   directory, which *is* its diff: turning it into a layer costs what the
//!   RUN changed, never what the image holds. The upper directory then
//!   becomes that layer's extracted copy in the store (a rename). The
//!   overlay is mounted only when something needs the merged tree (a RUN,
//!   `COPY --from` this stage): COPY, ADD and WORKDIR read the layers
//!   through a [`RootView`], so a build without RUN mounts nothing. A
//!   COPY's layer may even be written straight from its sources, its
//!   staging tree lacking the files: such a layer is *pending*, read in
//!   place, and extracted from its blob only if the root is mounted.
//! - **full** (`--snapshot-mode=full`, or where overlay cannot be mounted):
//!   the root is a plain directory with every layer applied; before a RUN
//!   it is copied, and the diff is found by walking both trees and comparing
//!   metadata and content.
//!
//! - **in-place** (`--isolation=in-place`): the root is the executor's own
//!   `/`, cleared back and the layers extracted over it; the diff compares
//!   metadata walks taken before and after the RUN (see `inplace.rs`).
//!
//! All leave out the mount-point stubs the sandbox made, and give the same
//! file tree. The overlay spares the sandbox most of them: the mount points
//! the layers lack are a lower directory of their own (`mount_points.rs`).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::images::{self, ImageError, LayerRef};
use super::inplace::{InPlace, InPlaceRoot};
use super::walk::WalkError;
use crate::image::apply::{self, ApplyError, ApplyOptions};
use crate::image::diff::{self, DiffError};
use crate::image::digest::Digest;
use crate::image::layer::{self, LayerEntry, LayerError};
use crate::image::store::{Store, StoreError};
use crate::image::upper::{self, UpperError};
use crate::sandbox::overlay::{self, Overlay, OverlayError};

use super::view::RootView;

/// Why a root filesystem could not be made, snapshotted or changed.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Diff(#[from] DiffError),
    #[error(transparent)]
    Upper(#[from] UpperError),
    #[error(transparent)]
    Overlay(#[from] OverlayError),
    #[error(transparent)]
    Walk(#[from] WalkError),
    /// A bug: a full snapshot compared without a copy taken before.
    #[error("no copy of the root was taken before the step")]
    NoCopy,
    /// A bug: an in-place root asked of `StageRoot::new`, or in-place work
    /// asked of another root.
    #[error("the in-place root is made by StageRoot::in_place only")]
    NoPlace,
    /// A bug: a lower directory asked for that the root does not have.
    #[error("the root has no lower directory {index}")]
    NoLower { index: usize },
    /// A bug: a staging tree without its files given to a root that is
    /// not an overlay's.
    #[error("a staging tree without its files is for overlay roots only")]
    Placeholders,
    #[error("invalid diffID {value:?} of a layer")]
    DiffId { value: String },
    #[error("cannot write {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T, E = RootError> = std::result::Result<T, E>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> RootError + '_ {
    move |source| RootError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How RUN steps are snapshotted (`--snapshot-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum SnapshotMode {
    /// Overlay upper directories are the diffs.
    #[default]
    Overlay,
    /// A full copy before each RUN, compared after it.
    Full,
    /// The executor's own root, walked before and after each RUN (chosen
    /// by `--isolation=in-place`, not by `--snapshot-mode`).
    InPlace,
}

impl SnapshotMode {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Overlay => "overlay",
            Self::Full => "full",
            Self::InPlace => "in-place",
        }
    }
}

/// One stage's root filesystem.
pub struct StageRoot {
    mode: SnapshotMode,
    /// This root's own directory in the build's scratch space.
    dir: PathBuf,
    /// The root as processes and COPY see it.
    root: PathBuf,
    /// Overlay: the extracted layers, bottom first.
    lowers: Vec<PathBuf>,
    /// Overlay: COPY layers above `lowers` whose files were not copied
    /// (see [`StageRoot::add_layer`]), bottom first; extracted into the
    /// store when the root is mounted.
    pending: Vec<Pending>,
    /// Where layers are extracted and adopted.
    store: Store,
    /// Overlay: the mount, and the generation of its upper directory.
    mount: Option<Overlay>,
    generation: usize,
    /// Overlay: the mount has the mount-point lower (`mount_points.rs`),
    /// as a RUN needs; readers of the merged tree get a mount without it.
    stubbed: bool,
    /// Overlay: the last RUN's mount being unmounted on a thread of its
    /// own while its changes are read and written as a layer (nothing
    /// writes to the root once the step's processes are gone), its work
    /// directory then recycled there; joined before its upper directory
    /// moves or the next overlay is mounted. With the slot of that work
    /// directory; the thread says whether it recycled it.
    unmounting: Option<(usize, std::thread::JoinHandle<Result<bool, OverlayError>>)>,
    /// Overlay: how many lowers the mount-point lower was last made for,
    /// and what it was (see `mount_points.rs`).
    mount_points: Option<(usize, Option<PathBuf>)>,
    /// Overlay: whether each of the two work directories (mounts alternate
    /// between them, see [`StageRoot::work`]) was recycled since its last
    /// mount, off the step's path.
    work_recycled: [bool; 2],
    /// Full: the copy taken before the current RUN (or before the stage's
    /// first change, with `--single-snapshot`).
    before: Option<PathBuf>,
    /// In-place: the executor's own root.
    in_place: Option<InPlaceRoot>,
    privileged: bool,
    /// Overlay without `index=on`: the hard-linked lower files copied up
    /// whole before the current step, and each lower's linked names.
    linked: upper::LinkedCopies,
    linked_names: upper::LinkedNames,
}

impl std::fmt::Debug for StageRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageRoot")
            .field("mode", &self.mode)
            .field("root", &self.root)
            .field("layers", &self.lowers.len())
            .finish_non_exhaustive()
    }
}

/// A layer written straight from its sources: its staging tree, which
/// lacks the regular files, and where each one's content is.
struct Pending {
    dir: PathBuf,
    content: HashMap<PathBuf, PathBuf>,
    diff_id: Digest,
    blob: Digest,
}

/// A COPY's finished staging tree (no whiteouts), ready to join the root.
#[derive(Debug)]
pub struct Staged<'a> {
    /// The layer as written: digest and diffID.
    pub layer: &'a layer::LayerInfo,
    pub dir: &'a Path,
    /// The regular files missing from `dir` (by the path they would have
    /// there) and the files holding their content; empty when every file
    /// was copied.
    pub content: HashMap<PathBuf, PathBuf>,
}

/// A step's changes, ready to be written as a layer.
pub struct Diff {
    pub entries: Vec<LayerEntry>,
}

impl StageRoot {
    /// The root for `layers` (already in the store) under `dir`, which must
    /// not exist yet.
    pub fn new(
        mode: SnapshotMode,
        store: &Store,
        dir: PathBuf,
        layers: &[LayerRef],
        privileged: bool,
    ) -> Result<Self> {
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let root = dir.join("rootfs");
        fs::create_dir_all(&root).map_err(io_at(&root))?;
        let mut this = Self {
            mode,
            dir,
            root,
            lowers: Vec::new(),
            pending: Vec::new(),
            store: store.clone(),
            mount: None,
            generation: 0,
            stubbed: false,
            unmounting: None,
            work_recycled: [false; 2],
            mount_points: None,
            before: None,
            in_place: None,
            privileged,
            linked: upper::LinkedCopies::default(),
            linked_names: upper::LinkedNames::new(),
        };
        match mode {
            // Mounted when first needed (see `mount`).
            SnapshotMode::Overlay => this.lowers = extract_layers(store, layers)?,
            SnapshotMode::Full => {
                let opts = ApplyOptions {
                    root_is_privileged: privileged,
                    preserve_ownership: true,
                    ..ApplyOptions::default()
                };
                for layer in layers {
                    let digest = images::descriptor_digest(&layer.descriptor)?;
                    store.apply_blob(&digest, &this.root, &opts)?;
                }
            }
            SnapshotMode::InPlace => {
                // Not a root of its own: StageRoot::in_place makes these.
                return Err(RootError::NoPlace);
            }
        }
        Ok(this)
    }

    /// The root for `layers` built in place (see `inplace.rs`): waits for
    /// the stage that has the root to drop it, clears it and extracts the
    /// layers; `dir` (which must not exist yet) holds nothing but is the
    /// stage's scratch space, as for the other modes.
    pub fn in_place(
        place: &InPlace,
        store: &Store,
        dir: PathBuf,
        layers: &[LayerRef],
        privileged: bool,
    ) -> Result<Self> {
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let root = InPlaceRoot::new(place, store, layers, privileged)?;
        Ok(Self {
            mode: SnapshotMode::InPlace,
            dir,
            root: root.path().to_path_buf(),
            lowers: Vec::new(),
            pending: Vec::new(),
            store: store.clone(),
            mount: None,
            generation: 0,
            stubbed: false,
            unmounting: None,
            work_recycled: [false; 2],
            mount_points: None,
            before: None,
            in_place: Some(root),
            privileged,
            linked: upper::LinkedCopies::default(),
            linked_names: upper::LinkedNames::new(),
        })
    }

    /// How this root is snapshotted.
    #[must_use]
    pub fn mode(&self) -> SnapshotMode {
        self.mode
    }

    /// The root directory, as RUN sees it: an overlay root is there once
    /// mounted ([`StageRoot::mount`], [`StageRoot::before_run`]).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The root as COPY, ADD and WORKDIR read it: the layers (pending ones
    /// included), without mounting them; or the plain directory.
    #[must_use]
    pub fn view(&self) -> RootView<'_> {
        match self.mode {
            SnapshotMode::Overlay => self
                .pending
                .iter()
                .fold(RootView::layers(&self.lowers), |view, p| {
                    view.with_layer(&p.dir, &p.content)
                }),
            SnapshotMode::Full | SnapshotMode::InPlace => RootView::dir(&self.root),
        }
    }

    /// Whether [`StageRoot::path`] shows the root now.
    #[must_use]
    pub fn is_mounted(&self) -> bool {
        self.mode != SnapshotMode::Overlay || self.mount.is_some()
    }

    /// Makes [`StageRoot::path`] show the root: overlay mounts it (its
    /// pending layers extracted first, and without the mount points a RUN
    /// needs: the tree the layers hold, as `COPY --from` reads it); the
    /// other modes have it already.
    pub fn mount(&mut self) -> Result<()> {
        if self.is_mounted() && !self.stubbed {
            return Ok(());
        }
        self.remount_with(false)
    }

    /// Whether the overlay mount shows the mount points a RUN needs over
    /// the layers (a root handed to readers is mounted again without).
    #[must_use]
    pub fn is_stubbed(&self) -> bool {
        self.stubbed
    }

    fn upper(&self) -> PathBuf {
        self.dir.join(format!("upper-{}", self.generation))
    }

    /// The overlay work directory of the current generation: two, used in
    /// turn, so that one is recycled (see [`overlay::recycle_work_dir`])
    /// after its mount is gone while the other serves the next mount.
    fn work(&self) -> PathBuf {
        self.dir.join(format!("work-{}", self.work_slot()))
    }

    fn work_slot(&self) -> usize {
        self.generation % 2
    }

    /// Mounts the overlay of the current lowers with a fresh upper directory
    /// (the pending layers extracted into the store first), with the
    /// mount-point lower if the last mount had it.
    fn remount(&mut self) -> Result<()> {
        self.remount_with(self.stubbed)
    }

    /// [`StageRoot::remount`], with the mount-point lower when `stubbed`.
    fn remount_with(&mut self, stubbed: bool) -> Result<()> {
        self.unmounted()?;
        for pending in std::mem::take(&mut self.pending) {
            let dir = self
                .store
                .extracted_layer(&pending.diff_id, &pending.blob)?;
            self.lowers.push(dir);
            fs::remove_dir_all(&pending.dir).map_err(io_at(&pending.dir))?;
        }
        if let Some(mount) = self.mount.take() {
            mount.unmount()?;
        }
        // The last generation's upper directory: gone already when it
        // became a layer or was discarded, kept while it is a lower whose
        // layer is being written, and empty after a COPY (which writes no
        // upper directory).
        if !self.lowers.contains(&self.upper()) {
            let _ = fs::remove_dir_all(self.upper());
        }
        self.generation += 1;
        let (upper, work) = (self.upper(), self.work());
        fs::create_dir_all(&upper).map_err(io_at(&upper))?;
        // The work directory is recycled rather than made anew: every new
        // inode counts on a file system that makes them slowly. The thread
        // that unmounted its last mount recycled it already, if it could
        // (taken: the slot is in use again until its next recycling).
        let slot = self.work_slot();
        let recycled =
            std::mem::take(&mut self.work_recycled[slot]) || overlay::recycle_work_dir(&work);
        if !recycled {
            fs::create_dir_all(&work).map_err(io_at(&work))?;
        }
        if !overlay::keeps_hard_links() {
            self.linked =
                upper::LinkedCopies::copy_up(&upper, &self.lowers, &mut self.linked_names)?;
        }
        // For a RUN: the mount points the sandbox needs and the layers
        // lack, in a lower of their own above them (see `mount_points`).
        let mut lowers = self.lowers.clone();
        if stubbed {
            let stubs = self.dir.join("mount-points");
            let lower = match &self.mount_points {
                // Made for the lowers below these, and none of these has
                // anything at a mount point's first name (a file, a
                // directory, a whiteout): what it holds still holds.
                Some((below, lower))
                    if *below <= self.lowers.len()
                        && self.lowers[*below..]
                            .iter()
                            .all(|dir| !super::mount_points::touches(dir)) =>
                {
                    lower.clone()
                }
                _ => super::mount_points::lower(&stubs, &self.lowers).map_err(io_at(&stubs))?,
            };
            self.mount_points = Some((self.lowers.len(), lower.clone()));
            lowers.extend(lower);
        }
        self.stubbed = stubbed;
        // No layers at all (FROM scratch) is fine: Overlay mounts an empty
        // lower directory of its own.
        let mounted = match Overlay::mount(&lowers, &upper, &work, &self.root) {
            Err(error) if recycled => {
                // A kernel that refuses a recycled work directory gets a
                // fresh one, now and from now on.
                tracing::debug!(%error, "overlay refused a recycled work directory");
                overlay::refuse_recycling();
                let _ = fs::remove_dir_all(&work);
                fs::create_dir_all(&work).map_err(io_at(&work))?;
                Overlay::mount(&lowers, &upper, &work, &self.root)
            }
            other => other,
        };
        self.mount = Some(mounted?);
        Ok(())
    }

    /// Lays a finished layer's tree (a COPY's staging directory, with no
    /// whiteouts) over the root. Overlay: a tree whose files were copied
    /// becomes the store's extracted copy of the layer (a rename); one
    /// without its files stays pending in this root's directory, read
    /// through [`StageRoot::view`] and extracted from the layer's blob
    /// only if the root is mounted; a mounted root is mounted again with
    /// it. Full and in-place: it is moved into the root (whole trees only).
    pub fn add_layer(&mut self, staged: Staged<'_>) -> Result<()> {
        let Staged {
            layer,
            dir: staging,
            content,
        } = staged;
        if self.mode == SnapshotMode::Overlay && !content.is_empty() {
            let dir = self.dir.join(format!("pending-{}", self.pending.len()));
            fs::rename(staging, &dir).map_err(io_at(staging))?;
            let content = content
                .into_iter()
                .map(|(placeholder, source)| {
                    let moved = placeholder
                        .strip_prefix(staging)
                        .map_or_else(|_| placeholder.clone(), |rel| dir.join(rel));
                    (moved, source)
                })
                .collect();
            self.pending.push(Pending {
                dir,
                content,
                diff_id: layer.diff_id.clone(),
                blob: layer.digest.clone(),
            });
        } else {
            if !content.is_empty() {
                return Err(RootError::Placeholders);
            }
            match self.mode {
                SnapshotMode::Overlay => {
                    let dir = self.store.adopt_layer(&layer.diff_id, staging)?;
                    self.lowers.push(dir);
                }
                SnapshotMode::Full => {
                    apply::merge_tree(staging, &self.root)?;
                    fs::remove_dir_all(staging).map_err(io_at(staging))?;
                }
                SnapshotMode::InPlace => {
                    let privileged = self.privileged;
                    self.place()?.add_tree(staging, privileged)?;
                }
            }
        }
        if self.mode == SnapshotMode::Overlay && self.mount.is_some() {
            self.remount()?;
        }
        Ok(())
    }

    fn place(&mut self) -> Result<&mut InPlaceRoot> {
        self.in_place.as_mut().ok_or(RootError::NoPlace)
    }

    /// Called before a RUN: overlay mounts the root, full mode copies it,
    /// in-place walks it.
    pub fn before_run(&mut self) -> Result<()> {
        if self.mode == SnapshotMode::Overlay && (self.mount.is_none() || !self.stubbed) {
            self.remount_with(true)?;
        }
        if self.mode == SnapshotMode::InPlace {
            return self.place()?.before_run();
        }
        if self.mode == SnapshotMode::Full && self.before.is_none() {
            let before = self.dir.join("before");
            let _ = fs::remove_dir_all(&before);
            diff::copy_tree(&self.root, &before)?;
            self.before = Some(before);
        }
        Ok(())
    }

    /// After a RUN: removes the sandbox's mount-point `stubs` and the paths
    /// in `ignore` (image paths, absolute), and returns what the RUN
    /// changed (`None` when nothing). Overlay unmounts the root; call
    /// [`StageRoot::keep`] or [`StageRoot::discard`] next.
    pub fn take_diff(&mut self, stubs: &[PathBuf], ignore: &[PathBuf]) -> Result<Option<Diff>> {
        let ignore: Vec<PathBuf> = ignore
            .iter()
            .map(|p| p.strip_prefix("/").unwrap_or(p).to_path_buf())
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        let entries = match self.mode {
            SnapshotMode::Overlay => {
                if let Some(mount) = self.mount.take() {
                    let work = self.work();
                    let unmount = std::thread::Builder::new()
                        .name("unmount".into())
                        .spawn(move || {
                            mount.unmount()?;
                            Ok(overlay::recycle_work_dir(&work))
                        })
                        .map_err(io_at(&self.root))?;
                    self.unmounting = Some((self.work_slot(), unmount));
                }
                let upper = self.upper();
                upper::remove_stubs(&upper, stubs, true, |rel| self.lower_meta(rel))?;
                for path in &ignore {
                    remove_path(&upper.join(path))?;
                }
                std::mem::take(&mut self.linked).drop_unchanged(&upper, &self.lowers)?;
                upper::relink_copied_up(&upper, &self.lowers)?;
                layer::layer_from_overlay_upper(&upper)?
            }
            SnapshotMode::Full => {
                let before = self.before.take().ok_or(RootError::NoCopy)?;
                upper::remove_stubs(&self.root, stubs, false, |rel| {
                    fs::symlink_metadata(before.join(rel)).ok()
                })?;
                let entries = diff::diff_trees(&before, &self.root, &ignore)?;
                fs::remove_dir_all(&before).map_err(io_at(&before))?;
                entries
            }
            // The in-place isolation removes what it made around the step
            // itself; its "stubs" are the paths it touched, compared
            // without their change time.
            SnapshotMode::InPlace => self.place()?.take_diff(stubs, &ignore)?,
        };
        Ok((!entries.is_empty()).then_some(Diff { entries }))
    }

    /// Keeps the last RUN's changes as the layer `diff_id`.
    pub fn keep(&mut self, store: &Store, diff_id: &Digest) -> Result<()> {
        if self.mode == SnapshotMode::Overlay {
            self.unmounted()?;
            let dir = store.adopt_layer(diff_id, &self.upper())?;
            self.lowers.push(dir);
            self.remount()?;
        }
        Ok(())
    }

    /// Overlay: the last RUN's upper directory joins the lowers where it is
    /// (its layer is being written from it, and nothing writes to it
    /// again) under a fresh upper directory; returns its index among the
    /// lowers, for [`StageRoot::adopt_lower`] once its diffID is known.
    pub fn keep_pending(&mut self) -> Result<usize> {
        self.unmounted()?;
        self.lowers.push(self.upper());
        self.remount()?;
        Ok(self.lowers.len() - 1)
    }

    /// Moves the lower directory at `index` (one [`StageRoot::keep_pending`]
    /// kept) into the store as the extracted layer `diff_id`, while it may
    /// be mounted: a directory keeps working as a lower when renamed.
    pub fn adopt_lower(&mut self, store: &Store, index: usize, diff_id: &Digest) -> Result<()> {
        let dir = self
            .lowers
            .get(index)
            .cloned()
            .ok_or(RootError::NoLower { index })?;
        self.lowers[index] = store.adopt_layer_in_use(diff_id, &dir)?;
        Ok(())
    }

    /// Drops the last RUN's upper directory (it changed nothing).
    pub fn discard(&mut self) -> Result<()> {
        if self.mode == SnapshotMode::Overlay {
            self.unmounted()?;
            let upper = self.upper();
            fs::remove_dir_all(&upper).map_err(io_at(&upper))?;
            self.remount()?;
        }
        Ok(())
    }

    /// Waits for the unmount [`StageRoot::take_diff`] started, if any.
    fn unmounted(&mut self) -> Result<()> {
        let Some((slot, unmounting)) = self.unmounting.take() else {
            return Ok(());
        };
        match unmounting.join() {
            Ok(Ok(recycled)) => {
                self.work_recycled[slot] = recycled;
                Ok(())
            }
            Ok(Err(e)) => Err(e.into()),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// The metadata of `rel` in the topmost lower directory holding it.
    fn lower_meta(&self, rel: &Path) -> Option<fs::Metadata> {
        self.lowers
            .iter()
            .rev()
            .find_map(|lower| fs::symlink_metadata(lower.join(rel)).ok())
    }

    /// The extracted directories of the layers, bottom first (overlay only;
    /// pending layers are not among them: `--single-snapshot` makes none).
    #[must_use]
    pub fn layer_dirs(&self) -> &[PathBuf] {
        debug_assert!(self.pending.is_empty(), "pending layers have no directory");
        &self.lowers
    }
}

impl Drop for StageRoot {
    fn drop(&mut self) {
        if let Err(e) = self.unmounted() {
            tracing::warn!("cannot unmount {}: {e}", self.root.display());
        }
        if let Some(mount) = self.mount.take() {
            if let Err(e) = mount.unmount() {
                tracing::warn!("cannot unmount {}: {e}", self.root.display());
            }
        }
    }
}

/// The layers' extracted directories in the store (each extracted once,
/// shared by every build), bottom first.
pub fn extract_layers(store: &Store, layers: &[LayerRef]) -> Result<Vec<PathBuf>> {
    layers
        .iter()
        .map(|layer| {
            let blob = images::descriptor_digest(&layer.descriptor)?;
            let diff_id: Digest = layer.diff_id.parse().map_err(|_| RootError::DiffId {
                value: layer.diff_id.clone(),
            })?;
            Ok(store.extracted_layer(&diff_id, &blob)?)
        })
        .collect()
}

fn remove_path(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path).map_err(io_at(path)),
        Ok(_) => fs::remove_file(path).map_err(io_at(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(path)(e)),
    }
}
