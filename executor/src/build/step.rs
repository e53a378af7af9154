//! One step's execution on its stage's root: RUN (the command through the
//! build's [`Isolation`](crate::sandbox::Isolation), its changes taken as
//! a layer), WORKDIR's directory, and how a step's files become a layer in
//! the store and the stage (also `--single-snapshot`'s one layer). Which
//! step runs, and whether the cache has it, is the stage's business
//! (`stage.rs`); COPY and ADD are `copy_step.rs`'s.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::copy;
use super::engine::Engine;
use super::error::{BuildError, Result, io_at};
use super::run;
use super::stage::{Job, StageState};
use crate::dockerfile::instructions::{self, Instruction};
use crate::image::layer::{self, Compression, LayerEntry, LayerInfo, WriteOptions};
use crate::image::store::Store;
use crate::rootfs::{LayerRef, RootView, SnapshotMode, Staged};
use crate::sandbox;

impl Engine<'_> {
    /// RUN: the command in the stage's root through the isolation, then its
    /// changes as a layer.
    pub(super) fn run(
        &self,
        job: &Job<'_>,
        result: &mut StageState,
        instruction: &Instruction,
        r: &instructions::Run,
    ) -> Result<()> {
        self.isolation_ready(instruction.start.line)?;
        // The step's scratch directory is made only when one of its mounts
        // needs a file there (most steps need none).
        let scratch = self.work.join(format!("stage-{}/run", job.index));
        let snapshot_started = std::time::Instant::now();
        result.root().before_run()?;
        let before_run = snapshot_started.elapsed();
        let from_root = |from: &str| -> std::result::Result<PathBuf, run::MountCause> {
            self.source_root(job.built, from, instruction)
                .map(|root| root.path().to_path_buf())
                .map_err(mount_cause)
        };
        let context_source = |source: &str| -> std::result::Result<PathBuf, run::MountCause> {
            self.context_view(source, &scratch, instruction)
                .map_err(mount_cause)
        };
        let step = run::Step {
            run: r,
            config: &result.config,
            args: job.scope.args(),
            root: result.rootfs(),
            scratch: &scratch,
            context_source: &context_source,
            store: self.store.root(),
            cache_mount_max_size: self.settings.cache_mount_max_size,
            secrets: &self.settings.secrets,
            ssh: &self.settings.ssh,
            from_root: &from_root,
            security: &self.security,
        };
        // Cancelling the build kills the step.
        let kill = Arc::new(sandbox::KillSwitch::new());
        let watch = self.runtime.spawn({
            let (cancel, kill) = (self.cancel.clone(), Arc::clone(&kill));
            async move {
                cancel.cancelled().await;
                kill.kill();
            }
        });
        let outcome = run::execute(&step, self.isolation.as_ref(), &kill);
        watch.abort();
        match fs::remove_dir_all(&scratch) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_at(&scratch)(e));
            }
            _ => {}
        }
        if self.cancel.is_cancelled() {
            return Err(BuildError::Interrupted);
        }
        let stubs = outcome.map_err(|e| self.step_error(instruction, e))?;
        let created_by = instruction.display();
        if self.settings.single_snapshot && self.mode() != SnapshotMode::Overlay {
            // One diff at the end of the stage.
            result.stubs.extend(stubs);
            result
                .config
                .add_history(created_by, true, Some(job.created));
            return Ok(());
        }
        let diff_started = std::time::Instant::now();
        let diff = result
            .root()
            .take_diff(&stubs, &self.settings.ignore_paths)?;
        tracing::debug!(
            "snapshot ({}): {:.3}s ({:.3}s before the step, {:.3}s after)",
            self.mode().as_str(),
            (before_run + diff_started.elapsed()).as_secs_f64(),
            before_run.as_secs_f64(),
            diff_started.elapsed().as_secs_f64()
        );
        match diff {
            None => {
                result.root().discard()?;
                // BuildKit and kaniko write no layer for a step that changed
                // nothing.
                result
                    .config
                    .add_history(created_by, true, Some(job.created));
            }
            Some(diff) if self.mode() == SnapshotMode::Overlay => {
                // The layer is written on a thread of its own while the
                // next steps run: its upper directory becomes a lower of
                // the next mount where it is, and nothing writes to it
                // again. Only one layer is in flight: the last one is
                // settled first.
                self.settle(result)?;
                let lower_at = result.root().keep_pending()?;
                let writer = self.layer_writer();
                let entries = diff.entries;
                let handle = std::thread::Builder::new()
                    .name("layer-writer".into())
                    .spawn(move || writer.write(entries))
                    .map_err(|e| self.step_error(instruction, e))?;
                result.pending = Some(PendingLayer {
                    writer: Some(handle),
                    instruction: instruction.clone(),
                    layers_at: result.layers.len(),
                    diff_ids_at: result.config.rootfs.diff_ids.len(),
                    lower_at,
                });
                result
                    .config
                    .add_history(created_by, false, Some(job.created));
            }
            Some(diff) => {
                let info = self.store_layer(diff.entries)?;
                result.root().keep(&self.store, &info.diff_id)?;
                Self::record_layer(result, &info, created_by, job.created);
            }
        }
        Ok(())
    }

    /// Waits for the stage's RUN layer being written in the background, if
    /// any, and records it where the step left its place: the stage's
    /// layers, the config's diffIDs (its history entry is there already)
    /// and, moved into the store, the root's lowers. A failed write fails
    /// the step that made the layer. Called before anything reads the
    /// stage's layers: the next RUN's layer, a step filed in the cache,
    /// the end of the stage.
    pub(super) fn settle(&self, result: &mut StageState) -> Result<()> {
        let Some(mut pending) = result.pending.take() else {
            return Ok(());
        };
        let Some(writer) = pending.writer.take() else {
            return Ok(());
        };
        let info = match writer.join() {
            Ok(written) => written.map_err(|e| self.step_error(&pending.instruction, e))?,
            Err(_) => {
                return Err(self.step_error(
                    &pending.instruction,
                    "the thread writing its layer panicked",
                ));
            }
        };
        result
            .root()
            .adopt_lower(&self.store, pending.lower_at, &info.diff_id)?;
        result.layers.insert(
            pending.layers_at,
            LayerRef {
                descriptor: info.descriptor(),
                diff_id: info.diff_id.to_string(),
                source: None,
            },
        );
        result
            .config
            .rootfs
            .diff_ids
            .insert(pending.diff_ids_at, info.diff_id.to_string());
        Ok(())
    }

    /// What `RUN --mount=type=bind` (no `from`) shows of `source`: the
    /// build context as COPY sees it, so `.dockerignore` applies as in
    /// BuildKit (which sends only the files it keeps). Without a
    /// `.dockerignore` that is the context's own path; with one, a view of
    /// the files kept, made under `scratch` (hard links where the context
    /// shares the store's file system, copies elsewhere).
    pub(super) fn context_view(
        &self,
        source: &str,
        scratch: &Path,
        instruction: &Instruction,
    ) -> Result<PathBuf> {
        let path = copy::resolve_in_root(self.context.root(), source, true);
        if self.context.dockerignore().is_none() {
            return Ok(path);
        }
        let sources =
            self.context_sources(&self.context, &[source.to_string()], &[], instruction)?;
        let mut n = 0;
        let view = loop {
            let candidate = scratch.join(format!("context-{n}"));
            if !candidate.exists() {
                break candidate;
            }
            n += 1;
        };
        let empty = view.with_extension("root");
        for dir in [&view, &empty] {
            fs::create_dir_all(dir).map_err(io_at(dir))?;
        }
        let opts = copy::Options {
            instruction: "RUN --mount",
            chown: None,
            chmod: None,
            parents: false,
            workdir: "/".to_string(),
            // As a bind mount shows them: owners kept.
            from_context: false,
        };
        let mut staging = copy::Staging::copies(view.clone());
        copy::copy(&sources, "/", &RootView::dir(&empty), &mut staging, &opts)
            .map_err(|e| self.step_error(instruction, e))?;
        Ok(match (path.is_dir(), path.file_name()) {
            (false, Some(name)) => view.join(name),
            _ => view,
        })
    }

    /// WORKDIR: the directory and its missing parents are created (owned by
    /// the current USER, as BuildKit does) when the image does not have it.
    pub(super) fn workdir(
        &self,
        index: usize,
        result: &mut StageState,
        instruction: &Instruction,
        created: &str,
    ) -> Result<()> {
        let dir = result.config.config.working_dir.clone();
        let created_by = instruction.display();
        if copy::existing(&result.view(), &dir).is_some_and(|m| m.is_dir()) {
            result.config.add_history(created_by, true, Some(created));
            return Ok(());
        }
        let owner = match result.config.config.user.as_str() {
            "" => None,
            user => Some(
                copy::resolve_chown(user, &result.view(), &self.work)
                    .map_err(|e| self.step_error(instruction, e))?,
            ),
        };
        let staging = self.new_dir(&format!("stage-{index}/staging"))?;
        copy::make_dir(&result.view(), &staging, &dir, owner.unwrap_or((0, 0)))
            .map_err(|e| self.step_error(instruction, e))?;
        self.commit_layer(result, copy::Staging::copies(staging), created_by, created)
    }

    /// `--single-snapshot`: the stage's own layers become one.
    pub(super) fn single_snapshot(&self, result: &mut StageState, created: &str) -> Result<()> {
        let entries = match self.mode() {
            SnapshotMode::Overlay => {
                let base_layers = result.base_layers;
                let dirs = &result.root().layer_dirs()[base_layers..];
                if dirs.is_empty() {
                    return Ok(());
                }
                crate::image::upper::squash(dirs)?
            }
            SnapshotMode::Full | SnapshotMode::InPlace => {
                let stubs = std::mem::take(&mut result.stubs);
                match result
                    .root()
                    .take_diff(&stubs, &self.settings.ignore_paths)?
                {
                    Some(diff) => diff.entries,
                    None => return Ok(()),
                }
            }
        };
        let info = self.store_layer(entries)?;
        result.layers.truncate(result.base_layers);
        result.layers.push(LayerRef {
            descriptor: info.descriptor(),
            diff_id: info.diff_id.to_string(),
            source: None,
        });
        result.config.rootfs.diff_ids.truncate(result.base_layers);
        result.config.rootfs.diff_ids.push(info.diff_id.to_string());
        // The steps' history stays, every entry marked empty; the snapshot
        // is the stage's one layer.
        for entry in &mut result.config.history[result.base_history..] {
            entry.empty_layer = true;
        }
        result
            .config
            .add_history("executor single snapshot".into(), false, Some(created));
        Ok(())
    }

    /// Writes `entries` as a layer into the store.
    pub(super) fn store_layer(&self, entries: Vec<LayerEntry>) -> Result<LayerInfo> {
        self.layer_writer().write(entries)
    }

    /// How this build writes layers, owned (for a writer thread).
    pub(super) fn layer_writer(&self) -> LayerWriter {
        LayerWriter {
            store: self.store.clone(),
            privileged: self.privileged,
            compression: self.compression,
            level: self.settings.compression_level,
            threads: self.settings.compression_threads,
            // File times later than SOURCE_DATE_EPOCH are clamped to it.
            source_date_epoch: self
                .settings
                .source_date_epoch
                .map(|epoch| u64::try_from(epoch).unwrap_or(0)),
        }
    }

    /// Records a written layer in the stage's layers and config.
    pub(super) fn record_layer(
        result: &mut StageState,
        info: &LayerInfo,
        created_by: String,
        created: &str,
    ) {
        result.layers.push(LayerRef {
            descriptor: info.descriptor(),
            diff_id: info.diff_id.to_string(),
            source: None,
        });
        result
            .config
            .add_layer(&info.diff_id.to_string(), created_by, Some(created));
    }

    /// Writes the staging tree as a layer into the store, records it, and
    /// lays it over the stage's root filesystem (as applying it would).
    pub(super) fn commit_layer(
        &self,
        result: &mut StageState,
        staging: copy::Staging,
        created_by: String,
        created: &str,
    ) -> Result<()> {
        let info = self.store_layer(staging.entries()?)?;
        // The staged tree is the layer: it joins the root rather than the
        // layer just written being extracted again.
        let dir = staging.dir.clone();
        result.root().add_layer(Staged {
            layer: &info,
            dir: &dir,
            content: staging.into_sources(),
        })?;
        Self::record_layer(result, &info, created_by, created);
        Ok(())
    }
}

/// What writing a layer into the store needs besides its entries, owned,
/// so that a RUN's layer can be written on a thread of its own while the
/// next step runs.
pub(super) struct LayerWriter {
    store: Store,
    privileged: bool,
    compression: Compression,
    level: Option<i32>,
    threads: usize,
    source_date_epoch: Option<u64>,
}

impl LayerWriter {
    /// Writes `entries` as a layer into the store (its blob durable
    /// before it is renamed into place, see [`Store::blob_writer`]).
    pub(super) fn write(&self, mut entries: Vec<LayerEntry>) -> Result<LayerInfo> {
        if !self.privileged {
            // Without root the caller stands for root (RUN's user namespace
            // maps it so): its files are root's in the image.
            let uid = u64::from(rustix::process::geteuid().as_raw());
            let gid = u64::from(rustix::process::getegid().as_raw());
            for entry in &mut entries {
                if entry.uid == uid {
                    entry.uid = 0;
                }
                if entry.gid == gid {
                    entry.gid = 0;
                }
            }
        }
        let mut writer = self.store.blob_writer()?;
        let info = layer::write_layer(
            entries,
            self.compression,
            self.level,
            self.threads,
            &mut writer,
            &WriteOptions {
                source_date_epoch: self.source_date_epoch,
            },
        )
        .map_err(|err| match err {
            // Where: a full disk is the store's.
            layer::LayerError::Write(source) => io_at(writer.path())(source),
            other => other.into(),
        })?;
        writer.flush().map_err(io_at(writer.path()))?;
        writer.commit(Some(&info.digest))?;
        self.store.written_here(&info.digest);
        Ok(info)
    }
}

/// A RUN's layer being written on a thread of its own (overlay snapshots
/// only), and the places its digests take once known: see
/// [`Engine::settle`]. Dropped unsettled (the build failed), it waits for
/// the writer, so no thread outlives the build and no blob is left half
/// written (an unfinished one is removed by its writer).
pub(super) struct PendingLayer {
    writer: Option<std::thread::JoinHandle<Result<LayerInfo>>>,
    /// The step that made it, for its errors.
    instruction: Instruction,
    /// Its index in the stage's layers, the config's diffIDs and the
    /// root's lower directories.
    layers_at: usize,
    diff_ids_at: usize,
    lower_at: usize,
}

impl Drop for PendingLayer {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Why a bind mount of this RUN has no source: the step's own failure is
/// said once, by the RUN's error, so only its cause is kept.
fn mount_cause(error: BuildError) -> run::MountCause {
    match error {
        BuildError::Step { source, .. } => source,
        other => other.into(),
    }
}
