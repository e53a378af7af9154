//! The build engine for one Dockerfile build, and its stage scheduling:
//! the context prepared, the Dockerfile planned, then every needed stage
//! built as soon as the stages it depends on are (independent stages at
//! the same time, one thread each; the first failure stops the others), and
//! the target stage's image written out. [`Engine`] is what every stage of
//! one build shares; the rooms around it hold the rest: one stage's steps
//! (`stage.rs`), one step's execution (`step.rs`, `copy_step.rs`), cache
//! keys (`keys.rs`), outputs and digest files (`output.rs`), the summary
//! (`metrics.rs`). RUN goes through an [`Isolation`] (namespaces by
//! default), base images through an image fetcher, so either plugs in
//! without touching the engine. It parses no Dockerfile text itself.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use oci_spec::image::Descriptor;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::cache::Cache;
use super::config::{self, ImageConfig};
use super::error::{BuildError, Result, StepCause, io_at};
use super::metrics::{Metrics, StepMetric};
use super::settings::Settings;
use super::stage::StageResult;
use super::workdir::ScratchDir;
use crate::context::{self, Context, ContextSource, PrepareOptions};
use crate::dockerfile::instructions::{Instruction, Kind};
use crate::dockerfile::parser;
use crate::dockerfile::plan::{self, Options, Plan};
use crate::image::digest::Digest;
use crate::image::layer::Compression;
use crate::image::store::Store;
use crate::registry::{ImageReference, RegistryOptions, TransferOptions};
use crate::rootfs::{
    BlockingRemote, ImageFetcher, InPlace, LayerRef, Remote, SnapshotMode, StageRoot,
};
use crate::sandbox::{self, Isolation};

/// What a finished build produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The image manifest's digest.
    pub digest: Digest,
    /// The manifest descriptor in the local store.
    pub manifest: Descriptor,
    pub config: ImageConfig,
    /// The destinations pushed to.
    pub pushed: Vec<ImageReference>,
    pub metrics: Metrics,
}

/// The registries a build talks to, with its TLS, plain-HTTP, mirror and
/// retry settings and the credentials found from the environment.
pub fn remote(settings: &Settings) -> Result<Remote> {
    let options = RegistryOptions {
        insecure: settings.insecure_registries.clone(),
        skip_tls_verify: settings.skip_tls_verify_registries.clone(),
        certificates: settings.registry_certificates.clone(),
        mirrors: settings.registry_mirrors.clone(),
        pull: TransferOptions {
            insecure: settings.insecure_pull,
            skip_tls_verify: settings.skip_tls_verify_pull,
            retries: settings.image_download_retry,
        },
        push: TransferOptions {
            insecure: settings.insecure_push,
            skip_tls_verify: settings.skip_tls_verify_push,
            retries: settings.push_retry,
        },
        timeout: std::time::Duration::from_secs(settings.registry_timeout_secs),
        ..RegistryOptions::default()
    };
    Ok(Remote::from_options(options)?)
}

/// Runs a build as `settings` describe. Blocking: file work runs on the
/// calling thread and one thread per stage in flight, and registry calls go
/// through `runtime` (call it from outside async code, e.g. in
/// `spawn_blocking`).
///
/// Cancelling `cancel` stops this build only: its running RUN steps are
/// killed, its stages stop at their next instruction, and it returns
/// [`BuildError::Interrupted`] after removing its scratch directories.
pub fn build(settings: &Settings, runtime: &Handle, cancel: &CancellationToken) -> Result<Outcome> {
    build_on(settings, Arc::new(remote(settings)?), runtime, cancel)
}

/// [`build`] with the registries already reached for `settings` (the CLI's
/// push check made their clients: TLS set up once per process run).
pub fn build_on(
    settings: &Settings,
    registry: Arc<Remote>,
    runtime: &Handle,
    cancel: &CancellationToken,
) -> Result<Outcome> {
    let parts = Parts {
        isolation: super::isolation::choose(settings)?.into(),
        images: Box::new(BlockingRemote::new(Arc::clone(&registry), runtime.clone())),
        registry,
    };
    build_with(settings, runtime, cancel, parts)
}

/// What a build runs steps with and takes images from: namespaces and the
/// registries for [`build`], fakes in tests.
pub(super) struct Parts {
    pub(super) isolation: Arc<dyn Isolation>,
    pub(super) images: Box<dyn ImageFetcher>,
    /// Pushes, and the layer cache's registry repository.
    pub(super) registry: Arc<Remote>,
}

/// [`build`] with these parts.
pub(super) fn build_with(
    settings: &Settings,
    runtime: &Handle,
    cancel: &CancellationToken,
    parts: Parts,
) -> Result<Outcome> {
    let started = Instant::now();
    let security = settings.security.resolve()?;
    let store = Store::open(&settings.cache_dir)?;
    let tmp = store.root().join("tmp");
    let work = ScratchDir::create(&tmp).map_err(io_at(&tmp))?;

    let source: ContextSource = settings.context.parse().map_err(BuildError::Source)?;
    let mut git = context::GitOptions::default();
    for option in &settings.git {
        git.apply(option)?;
    }
    let context = Context::prepare(
        &source,
        &PrepareOptions {
            sub_path: settings.context_sub_path.as_ref().map(PathBuf::from),
            dockerfile: Some(settings.dockerfile.clone()),
            git: git.with_env()?,
            scratch_dir: Some(work.path().to_path_buf()),
        },
    )?;
    let file_name = settings.dockerfile.display().to_string();
    let (plan, opts) = plan_dockerfile(context.dockerfile(), &file_name, settings)?;
    for warning in &plan.warnings {
        tracing::warn!(
            "{file_name}:{}: {} ({})",
            warning.position,
            warning.message,
            warning.rule
        );
    }
    // RUN needs namespaces: say so before any step runs when this machine
    // (a restricted pod) cannot make them. The probe runs on a thread of
    // its own while the base images are resolved; every stage waits for
    // its answer before its first step, and a build that fails before
    // then reports the probe's failure rather than its own. With --cache,
    // the first RUN that executes asks instead: a build whose RUN steps
    // all come from the cache then works there too, and pays nothing for
    // the check.
    let first_run = plan.needed.iter().find_map(|&index| {
        plan.stages[index]
            .instructions
            .iter()
            .find(|i| matches!(i.kind, Kind::Run(_)))
    });
    // Where every RUN runs (no cache to take one from), the overlay probe
    // mounts its test while the isolation is probed and the base pulled.
    let overlay_probe = {
        let work = work.path().to_path_buf();
        Probe::start(
            first_run.is_some()
                && settings.cache.is_none()
                && settings.snapshot_mode == SnapshotMode::Overlay,
            "overlay-probe",
            move || crate::sandbox::overlay::supported(&work),
        )
    };
    let isolation_probe = {
        let isolation = Arc::clone(&parts.isolation);
        Probe::start(
            first_run.is_some() && settings.cache.is_none(),
            "isolation-probe",
            move || isolation.available(),
        )
    };
    let privileged = rustix::process::geteuid().is_root();
    // A build without RUN asks nothing of the isolation: no probe, and its
    // stages are plain directories (see `Engine::mode`).
    let has_run = first_run.is_some();
    let place = if has_run {
        parts
            .isolation
            .shared_root()
            .map(|shared| super::isolation::place(shared, settings, context.root()))
    } else {
        None
    };
    let cache = match &settings.cache {
        Some(_) if settings.single_snapshot => {
            tracing::warn!(
                "--cache is not used with --single-snapshot: the stage's steps make one layer"
            );
            None
        }
        Some(cache) => {
            let push_to = settings
                .destinations
                .first()
                .filter(|_| settings.push)
                .cloned();
            Some(Cache::open(cache, &store, push_to)?)
        }
        None => None,
    };
    let engine = Engine {
        cache,
        isolation_probe,
        first_run_line: first_run.map(|run| run.start.line),
        settings,
        store,
        context,
        plan: &plan,
        opts: &opts,
        work: work.path().to_path_buf(),
        registry: parts.registry,
        images: parts.images,
        runtime,
        file_name,
        image_roots: Mutex::new(BTreeMap::new()),
        failed: AtomicBool::new(false),
        mode: std::sync::OnceLock::new(),
        overlay_probe,
        privileged,
        place,
        isolation: parts.isolation,
        security,
        cancel: cancel.clone(),
        steps: Mutex::new(Vec::new()),
        compression: if settings.zstd {
            Compression::Zstd
        } else {
            Compression::Gzip
        },
    };
    let mut results = engine
        .run_stages()
        .map_err(|error| engine.isolation_error_first(error))?;
    let final_stage = results
        .remove(&plan.target)
        .expect("the target stage was built");
    let mut outcome = engine.finish(final_stage.config.clone(), &final_stage.layers)?;
    let steps = engine
        .steps
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    outcome.metrics = Metrics::new(
        &outcome.digest,
        started.elapsed(),
        steps,
        engine.registry.transferred(),
    );
    outcome.metrics.report(settings.metrics_file.as_deref())?;
    Ok(outcome)
}

/// Reads the Dockerfile at `path` (`name` in messages) and plans it with
/// the build's args, target and platform.
pub(super) fn plan_dockerfile(
    path: &Path,
    name: &str,
    settings: &Settings,
) -> Result<(Plan, Options)> {
    let text = fs::read(path).map_err(io_at(path))?;
    let text = String::from_utf8_lossy(&text);
    let opts = Options {
        build_args: settings.build_args.clone(),
        target: settings.target.clone(),
        build_platform: crate::platform::Platform::host(),
        target_platform: settings.platform.clone(),
    };
    let parsed =
        parser::parse_named(name, &text).map_err(|e| BuildError::Dockerfile(e.render(name)))?;
    let plan = plan::plan_parsed(parsed, &opts).map_err(|errors| {
        BuildError::Dockerfile(
            errors
                .0
                .iter()
                .map(|e| e.render(name))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    Ok((plan, opts))
}

/// What every stage of one build shares. Stages run on their own threads;
/// everything here is read-only but the image roots and the failure flag.
pub(super) struct Engine<'a> {
    pub(super) settings: &'a Settings,
    /// `--cache`.
    pub(super) cache: Option<Cache>,
    /// Whether RUN can be isolated here: probed from the start of a build
    /// whose RUN steps all run (waited for before any stage's first step),
    /// else when the first RUN executes.
    isolation_probe: Probe<std::result::Result<(), sandbox::Unavailable>>,
    /// The line of the first RUN of the stages built, for the message
    /// when the isolation is unavailable; `None` when no needed stage has
    /// a RUN step (an ONBUILD trigger of a base image aside): nothing is
    /// then probed or mounted (see [`Engine::has_run`]).
    pub(super) first_run_line: Option<usize>,
    pub(super) store: Store,
    pub(super) context: Context,
    pub(super) plan: &'a Plan,
    pub(super) opts: &'a Options,
    pub(super) work: PathBuf,
    pub(super) registry: Arc<Remote>,
    /// Where base images and `--from` images come from.
    pub(super) images: Box<dyn ImageFetcher>,
    pub(super) runtime: &'a Handle,
    pub(super) file_name: String,
    /// Root filesystems of images used by `COPY --from=<image>` and
    /// `RUN --mount=from=<image>`, made once.
    pub(super) image_roots: Mutex<BTreeMap<String, Arc<StageRoot>>>,
    /// Set when a stage fails: the others stop at their next instruction.
    pub(super) failed: AtomicBool,
    pub(super) compression: Compression,
    /// How snapshots are taken, decided when a stage root is first made
    /// (a build whose steps all come from the cache makes none).
    pub(super) mode: std::sync::OnceLock<SnapshotMode>,
    /// Whether overlays can be mounted here: probed from the start of a
    /// build whose RUN steps all run, else when first asked (by the
    /// snapshot mode, or by a build without RUN that needs a merged root
    /// for `COPY --from` a stage or image).
    overlay_probe: Probe<bool>,
    /// Running as root: ownership is kept when layers are applied.
    pub(super) privileged: bool,
    /// How RUN steps run.
    pub(super) isolation: Arc<dyn Isolation>,
    /// RUN steps' seccomp filter and no_new_privs.
    pub(super) security: crate::sandbox::Security,
    /// Where stages are built when RUN steps run in the executor's own
    /// root (`--isolation=in-place`).
    pub(super) place: Option<InPlace>,
    /// Cancelled to stop the build (Ctrl-C, a cancelled run).
    pub(super) cancel: CancellationToken,
    /// Every step done so far, for the summary.
    pub(super) steps: Mutex<Vec<StepMetric>>,
}

pub(super) type Built = BTreeMap<usize, Arc<StageResult>>;

/// The time the image records for a step or for itself: the clock's, or
/// `SOURCE_DATE_EPOCH` (`--reproducible`) so that two builds of the same
/// inputs give the same config.
pub(super) fn timestamp(settings: &Settings) -> String {
    let secs = settings.source_date_epoch.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    });
    config::rfc3339(secs)
}

impl Engine<'_> {
    /// Whether a needed stage has a RUN step (an ONBUILD trigger of a base
    /// image aside): without, nothing is probed or mounted.
    pub(super) fn has_run(&self) -> bool {
        self.first_run_line.is_some()
    }

    /// Whether RUN steps can be isolated here (probed once), as the error
    /// a RUN at `line` fails with.
    pub(super) fn isolation_ready(&self, line: usize) -> Result<()> {
        self.isolation_probe
            .answer(|| self.isolation.available())
            .clone()
            .map_err(|source| BuildError::Isolation {
                file: self.file_name.clone(),
                line,
                source,
            })
    }

    /// Whether overlays can be mounted in the scratch directory (see
    /// [`crate::sandbox::overlay::supported`]).
    fn overlay_supported(&self) -> bool {
        *self
            .overlay_probe
            .answer(|| crate::sandbox::overlay::supported(&self.work))
    }

    /// `error`, or the isolation's when the probe started with the build
    /// (no `--cache`) found RUN steps cannot run here: a restricted pod
    /// learns that first, whatever else failed meanwhile.
    fn isolation_error_first(&self, error: BuildError) -> BuildError {
        match self.first_run_line {
            Some(line) if self.cache.is_none() => self.isolation_ready(line).err().unwrap_or(error),
            _ => error,
        }
    }

    /// Builds every needed stage, each as soon as the stages it depends on
    /// are built: independent stages run at the same time, one thread each.
    /// The first failure stops the others and is returned.
    pub(super) fn run_stages(&self) -> Result<Built> {
        // `needed` holds every stage the target needs, directly or not.
        let mut pending: BTreeSet<usize> = self.plan.needed.iter().copied().collect();
        let mut built = Built::new();
        let mut first_error = None;
        let (done, finished) = mpsc::channel::<(usize, Result<StageResult>)>();
        std::thread::scope(|scope| {
            let mut running = 0usize;
            loop {
                if first_error.is_none() {
                    let ready: Vec<usize> = pending
                        .iter()
                        .copied()
                        .filter(|&i| {
                            self.plan.stages[i]
                                .depends_on
                                .iter()
                                .all(|d| built.contains_key(d))
                        })
                        .collect();
                    for index in ready {
                        pending.remove(&index);
                        let deps: Built = self.plan.stages[index]
                            .depends_on
                            .iter()
                            .map(|d| (*d, Arc::clone(&built[d])))
                            .collect();
                        let done = done.clone();
                        running += 1;
                        scope.spawn(move || {
                            // A panic in the stage still reports back (as a
                            // failure), so the loop below never waits forever.
                            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
                                || self.run_stage(index, &deps),
                            ))
                            .unwrap_or_else(|_| {
                                Err(BuildError::Internal(format!(
                                    "stage {index} stopped on an internal error (a bug: please report it)"
                                )))
                            });
                            if result.is_err() {
                                self.failed.store(true, Ordering::Relaxed);
                            }
                            let _ = done.send((index, result));
                        });
                    }
                }
                if running == 0 {
                    break;
                }
                let (index, result) = finished.recv().expect("a stage thread reports back");
                running -= 1;
                match result {
                    Ok(stage) => {
                        built.insert(index, Arc::new(stage));
                    }
                    Err(BuildError::Cancelled) => {}
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        });
        match first_error {
            Some(e) => Err(e),
            None => Ok(built),
        }
    }

    /// `instruction` failed because of `cause`.
    pub(super) fn step_error(
        &self,
        instruction: &Instruction,
        cause: impl Into<StepCause>,
    ) -> BuildError {
        BuildError::Step {
            file: self.file_name.clone(),
            line: instruction.start.line,
            instruction: instruction.keyword().to_string(),
            source: cause.into(),
        }
    }

    /// `--snapshot-mode`, or full snapshots where overlay cannot be
    /// mounted (checked once, on first use).
    pub(super) fn mode(&self) -> SnapshotMode {
        *self.mode.get_or_init(|| match self.settings.snapshot_mode {
            _ if self.place.is_some() => SnapshotMode::InPlace,
            // A build without RUN still takes the store's extracted layers
            // (full snapshots would extract and hash the whole base on
            // every build) but mounts nothing: COPY, ADD and WORKDIR read
            // the layers through a view, and only a root read by `COPY
            // --from` is mounted (see `source_root`). Nothing is probed.
            SnapshotMode::Overlay if !self.has_run() => SnapshotMode::Overlay,
            SnapshotMode::Overlay if !self.overlay_supported() => {
                tracing::info!(
                    "overlay mounts are not available here: snapshots copy and compare the root filesystem (slower; RUST_LOG=debug says why)"
                );
                SnapshotMode::Full
            }
            mode => {
                tracing::debug!("snapshot mode: {}", mode.as_str());
                mode
            }
        })
    }

    pub(super) fn new_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.work.join(name);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_at(&dir))?;
        }
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        Ok(dir)
    }

    /// The root a stage is built in: the executor's own in place (taken
    /// when the stage before has dropped it), else [`Engine::stage_root`].
    pub(super) fn own_root(&self, name: &str, layers: &[LayerRef]) -> Result<StageRoot> {
        let Some(place) = &self.place else {
            return self.stage_root(name, layers);
        };
        let dir = self.work.join(name);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_at(&dir))?;
        }
        Ok(StageRoot::in_place(
            place,
            &self.store,
            dir,
            layers,
            self.privileged,
        )?)
    }

    /// Whether a merged root can be mounted here: always where RUN steps
    /// chose overlay; a build without RUN probes on first use.
    fn can_mount(&self) -> bool {
        self.mode() == SnapshotMode::Overlay && (self.has_run() || self.overlay_supported())
    }

    /// The root filesystem of `layers` (in the store) under the scratch
    /// directory `name` (full snapshots where stages are built in place:
    /// the roots `COPY --from` reads are the build's own), unmounted.
    pub(super) fn stage_root(&self, name: &str, layers: &[LayerRef]) -> Result<StageRoot> {
        self.make_root(name, layers, false)
    }

    /// [`Engine::stage_root`]; with `mounted`, its merged tree is at its
    /// path (a full root where overlay cannot be mounted).
    fn make_root(&self, name: &str, layers: &[LayerRef], mounted: bool) -> Result<StageRoot> {
        let dir = self.work.join(name);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_at(&dir))?;
        }
        let mode = match self.mode() {
            SnapshotMode::Overlay if mounted && !self.can_mount() => SnapshotMode::Full,
            SnapshotMode::InPlace => SnapshotMode::Full,
            mode => mode,
        };
        let mut root = StageRoot::new(mode, &self.store, dir, layers, self.privileged)?;
        if mounted {
            root.mount()?;
        }
        Ok(root)
    }

    /// The root filesystem `COPY --from=` and `RUN --mount=from=` read: a
    /// stage's, or an image's.
    pub(super) fn source_root(
        &self,
        built: &Built,
        from: &str,
        instruction: &Instruction,
    ) -> Result<Arc<StageRoot>> {
        // The plan has refused an index out of bounds already.
        if let plan::Source::Stage(i) = self.plan.resolve_from(from) {
            let stage = built.get(&i).ok_or_else(|| {
                self.step_error(instruction, format!("stage {from} was not built"))
            })?;
            let mut root = stage.root.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(made) = root.as_mut()
                && (!made.is_mounted() || made.is_stubbed())
            {
                // Built without a mount, or mounted for its last RUN (with
                // the mount points the layers lack): mounted now as its
                // layers are, by the only holder (roots are handed out
                // mounted). Where that cannot be, it is made again below
                // as a plain directory.
                match Arc::get_mut(made) {
                    Some(only) if self.can_mount() => only.mount()?,
                    _ => *root = None,
                }
            }
            if let Some(root) = &*root {
                return Ok(Arc::clone(root));
            }
            // A stage taken from the cache: its root is made now.
            self.images.ensure_layers(&stage.layers, &self.store)?;
            let name = format!("stage-{i}/source-root");
            let made = Arc::new(self.make_root(&name, &stage.layers, true)?);
            *root = Some(Arc::clone(&made));
            return Ok(made);
        }
        // Held while the image is fetched and unpacked, so stages that copy
        // from the same image wait for one copy of it.
        let mut roots = self
            .image_roots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(root) = roots.get(from) {
            return Ok(Arc::clone(root));
        }
        let reference = ImageReference::parse(from).map_err(|e| self.step_error(instruction, e))?;
        let image = self
            .images
            .resolve(&reference, &self.settings.platform, &self.store)?;
        self.images.ensure_layers(&image.layers, &self.store)?;
        let name = format!("image-{}", roots.len());
        let root = Arc::new(self.make_root(&name, &image.layers, true)?);
        roots.insert(from.to_string(), Arc::clone(&root));
        Ok(root)
    }
}

/// An answer the build asks for once (can overlays be mounted here, can
/// RUN be isolated here): worked out on a thread of its own from the
/// start of the build when it will surely be asked (see `build_with`),
/// else when first asked. The thread is joined before the answer is used
/// and when the engine goes, so it never outlives the scratch directory
/// the overlay probe mounts in.
struct Probe<T> {
    started: Mutex<Option<std::thread::JoinHandle<T>>>,
    answer: std::sync::OnceLock<T>,
}

impl<T: Send + 'static> Probe<T> {
    /// Starts `probe` on a thread named `name` when `now`; otherwise it is
    /// made when first asked.
    fn start(now: bool, name: &str, probe: impl FnOnce() -> T + Send + 'static) -> Self {
        let started = now
            .then(|| {
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn(probe)
                    .ok()
            })
            .flatten();
        Self {
            started: Mutex::new(started),
            answer: std::sync::OnceLock::new(),
        }
    }

    /// The answer: the thread's, or `probe`'s here when it was not started
    /// (or died).
    fn answer(&self, probe: impl FnOnce() -> T) -> &T {
        self.answer.get_or_init(|| {
            let started = self
                .started
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            match started.map(std::thread::JoinHandle::join) {
                Some(Ok(answer)) => answer,
                _ => probe(),
            }
        })
    }
}

impl<T> Drop for Probe<T> {
    fn drop(&mut self) {
        let started = self
            .started
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = started {
            let _ = thread.join();
        }
    }
}
