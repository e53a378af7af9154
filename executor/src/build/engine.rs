//! The build engine for one Dockerfile build: stages in dependency order,
//! each from its base (scratch, an image, an earlier stage), instruction by
//! instruction: config-only instructions change the config; WORKDIR, COPY,
//! ADD and RUN write layers. Each stage keeps its root filesystem
//! ([`StageRoot`]: an overlay of its layers, or a plain directory) so later
//! instructions, RUN and `COPY --from` see what Docker would. RUN goes
//! through an [`Isolation`] (namespaces by default), so another way of
//! running steps plugs in without touching the engine. Stages whose
//! dependencies are built run at the same time, each on its own thread.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::try_join_all;
use oci_spec::image::{Descriptor, MediaType};
use tokio::runtime::Handle;

use super::add;
use super::cache::{Cache, Hit};
use super::config::{self, Applied, ImageConfig, StageFlags};
use super::copy::{self, Source, TreeEntry};
use super::images::{self, LayerRef};
use super::keys;
use super::remote::Remote;
use super::rootfs::{SnapshotMode, StageRoot};
use super::run;
use super::settings::Settings;
use super::workdir::ScratchDir;
use crate::context::{self, Context, ContextSource, PrepareOptions};
use crate::dockerfile::instructions::{self, Add, CopyArgs, Instruction, Kind};
use crate::dockerfile::parser;
use crate::dockerfile::plan::{self, Base, Options, Plan, Scope};
use crate::dockerfile::shell::Lex;
use crate::image::apply::{self, ApplyOptions};
use crate::image::digest::Digest;
use crate::image::layer::{self, Compression, LayerEntry, LayerInfo, WriteOptions};
use crate::image::store::Store;
use crate::registry::ImageReference;
use crate::sandbox::{self, Isolation};
use executor_cache::{BaseRef, Key, TreeHash};

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Dockerfile(String),
    #[error(transparent)]
    Context(#[from] context::Error),
    /// RUN cannot be isolated here (a restricted pod).
    #[error("{file}:{line}: RUN cannot run here: {source}")]
    Isolation {
        file: String,
        line: usize,
        #[source]
        source: sandbox::Unavailable,
    },
    #[error("{file}:{line}: {instruction} failed: {message}")]
    Step {
        file: String,
        line: usize,
        instruction: String,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] crate::image::store::StoreError),
    #[error(transparent)]
    Layer(#[from] crate::image::layer::LayerError),
    #[error(transparent)]
    Apply(#[from] crate::image::apply::ApplyError),
    #[error(transparent)]
    Image(#[from] images::ImageError),
    #[error(transparent)]
    Diff(#[from] crate::image::diff::DiffError),
    #[error(transparent)]
    Upper(#[from] crate::image::upper::UpperError),
    #[error(transparent)]
    Overlay(#[from] crate::sandbox::overlay::OverlayError),
    /// The cache cannot be opened (a lookup or write never fails a build).
    #[error("{0}")]
    Cache(String),
    /// SIGINT or SIGTERM: the steps running were killed.
    #[error("the build was interrupted")]
    Interrupted,
    /// A bug (a panic in a stage), reported instead of crashing the build.
    #[error("{0}")]
    Internal(String),
    /// Another stage failed first; this one stopped.
    #[error("the build was stopped")]
    Cancelled,
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T, E = BuildError> = std::result::Result<T, E>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One step as the build's summary and `--metrics-file` report it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepMetric {
    /// The stage's index in the Dockerfile.
    pub stage: usize,
    /// The step's number in its stage (FROM is 1).
    pub step: usize,
    pub instruction: String,
    pub seconds: f64,
    /// Whether the step wrote a layer.
    pub layer: bool,
    /// Taken from the cache instead of executed.
    pub cached: bool,
}

/// What a build did, for its summary line and `--metrics-file`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Metrics {
    pub digest: String,
    pub seconds: f64,
    pub steps_executed: usize,
    pub steps_cached: usize,
    /// Blob bytes received from registries (base images, ADD excluded).
    pub bytes_downloaded: u64,
    /// Blob bytes sent to registries.
    pub bytes_uploaded: u64,
    pub steps: Vec<StepMetric>,
}

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

/// One built stage. Its root stays mounted while a later stage may read
/// it; a stage taken whole from the cache has none until a later step reads
/// it (`COPY --from`, `RUN --mount=from=`).
struct StageResult {
    config: ImageConfig,
    layers: Vec<LayerRef>,
    /// The key of its last step, when every step had one.
    key: Option<Key>,
    root: Mutex<Option<Arc<StageRoot>>>,
}

/// A stage being built.
struct StageState {
    index: usize,
    config: ImageConfig,
    layers: Vec<LayerRef>,
    /// Made (its layers downloaded and extracted) when the first step that
    /// is not taken from the cache executes.
    root: Option<StageRoot>,
    /// `--single-snapshot`: how many layers the base has; the stage's own
    /// become one at its end.
    base_layers: usize,
    /// `--single-snapshot`: how many history entries the base has.
    base_history: usize,
    /// `--single-snapshot`, full mode: the stubs of every RUN, removed at
    /// the end.
    stubs: Vec<PathBuf>,
}

impl StageState {
    fn root(&mut self) -> &mut StageRoot {
        self.root
            .as_mut()
            .expect("the stage root is made before a step executes")
    }

    fn rootfs(&self) -> &Path {
        self.root
            .as_ref()
            .expect("the stage root is made before a step executes")
            .path()
    }
}

/// One instruction of a stage, expanded, with the variables in scope at it
/// and its cache key.
struct Planned<'p> {
    instruction: Instruction,
    scope: Scope<'p>,
    key: Option<Key>,
}

/// Set by SIGINT/SIGTERM (see [`interrupt`]): every stage stops.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Stops every build of this process: running steps are killed, stages stop
/// at their next instruction, and the builds return
/// [`BuildError::Interrupted`] after removing their scratch directories.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
    sandbox::kill_all();
}

/// Runs a build as `settings` describe. Blocking: file work runs on the
/// calling thread and one thread per stage in flight, and registry calls go
/// through `runtime` (call it from outside async code, e.g. in
/// `spawn_blocking`).
pub fn build(settings: &Settings, runtime: &Handle) -> Result<Outcome> {
    let started = Instant::now();
    let store = Store::open(&settings.cache_dir)?;
    let tmp = store.root().join("tmp");
    let work = ScratchDir::create(&tmp).map_err(io_at(&tmp))?;

    let source: ContextSource = settings
        .context
        .parse()
        .map_err(|e: context::SourceError| BuildError::Dockerfile(e.to_string()))?;
    let mut git = context::GitOptions::default();
    for option in &settings.git {
        git.apply(option)
            .map_err(|e| BuildError::Dockerfile(e.to_string()))?;
    }
    let context = Context::prepare(
        &source,
        &PrepareOptions {
            sub_path: settings.context_sub_path.as_ref().map(PathBuf::from),
            dockerfile: Some(settings.dockerfile.clone()),
            git: git
                .with_env()
                .map_err(|e| BuildError::Dockerfile(e.to_string()))?,
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
    // RUN needs namespaces: say so before any work when this machine (a
    // restricted pod) cannot make them. With --cache, the first RUN that
    // executes checks instead: a build whose RUN steps all come from the
    // cache then works there too, and pays nothing for the check.
    let first_run = plan.needed.iter().find_map(|&index| {
        plan.stages[index]
            .instructions
            .iter()
            .find(|i| matches!(i.kind, Kind::Run(_)))
    });
    if let Some(run) = first_run
        && settings.cache.is_none()
    {
        sandbox::probe().map_err(|source| BuildError::Isolation {
            file: file_name.clone(),
            line: run.start.line,
            source,
        })?;
    }
    let privileged = rustix::process::geteuid().is_root();
    let registry = Remote::new(settings)?;
    let cache = match &settings.cache {
        Some(_) if settings.single_snapshot => {
            tracing::warn!(
                "--cache is not used with --single-snapshot: the stage's steps make one layer"
            );
            None
        }
        Some(cache) => Some(Cache::open(cache, &store).map_err(BuildError::Cache)?),
        None => None,
    };
    let engine = Engine {
        cache,
        probed: std::sync::OnceLock::new(),
        settings,
        store,
        context,
        plan: &plan,
        opts: &opts,
        work: work.path().to_path_buf(),
        registry,
        runtime,
        file_name,
        image_roots: Mutex::new(BTreeMap::new()),
        failed: AtomicBool::new(false),
        mode: std::sync::OnceLock::new(),
        privileged,
        isolation: Box::new(sandbox::Namespaces),
        steps: Mutex::new(Vec::new()),
        compression: if settings.zstd {
            Compression::Zstd
        } else {
            Compression::Gzip
        },
    };
    let mut results = engine.run_stages()?;
    let final_stage = results
        .remove(&plan.target)
        .expect("the target stage was built");
    let mut outcome = engine.finish(final_stage.config.clone(), &final_stage.layers)?;
    let mut steps = engine
        .steps
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    steps.sort_by_key(|s| (s.stage, s.step));
    let (bytes_downloaded, bytes_uploaded) = engine.registry.transferred();
    outcome.metrics = Metrics {
        digest: outcome.digest.to_string(),
        seconds: started.elapsed().as_secs_f64(),
        steps_executed: steps.iter().filter(|s| !s.cached).count(),
        steps_cached: steps.iter().filter(|s| s.cached).count(),
        bytes_downloaded,
        bytes_uploaded,
        steps,
    };
    let m = &outcome.metrics;
    tracing::info!(
        "built {} in {:.1}s: {} steps executed, {} cached; {} downloaded, {} uploaded",
        outcome.digest,
        m.seconds,
        m.steps_executed,
        m.steps_cached,
        human_bytes(m.bytes_downloaded),
        human_bytes(m.bytes_uploaded),
    );
    if let Some(path) = &settings.metrics_file {
        let json = serde_json::to_vec_pretty(m)
            .map_err(|e| BuildError::Internal(format!("cannot encode the metrics: {e}")))?;
        fs::write(path, json).map_err(io_at(path))?;
    }
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
struct Engine<'a> {
    settings: &'a Settings,
    /// `--cache`.
    cache: Option<Cache>,
    /// With `--cache`, whether RUN can be isolated here, checked when the
    /// first RUN executes (without, before the build starts).
    probed: std::sync::OnceLock<std::result::Result<(), sandbox::Unavailable>>,
    store: Store,
    context: Context,
    plan: &'a Plan,
    opts: &'a Options,
    work: PathBuf,
    registry: Remote,
    runtime: &'a Handle,
    file_name: String,
    /// Root filesystems of images used by `COPY --from=<image>` and
    /// `RUN --mount=from=<image>`, made once.
    image_roots: Mutex<BTreeMap<String, Arc<StageRoot>>>,
    /// Set when a stage fails: the others stop at their next instruction.
    failed: AtomicBool,
    compression: Compression,
    /// How snapshots are taken, decided when a stage root is first made
    /// (a build whose steps all come from the cache makes none).
    mode: std::sync::OnceLock<SnapshotMode>,
    /// Running as root: ownership is kept when layers are applied.
    privileged: bool,
    /// How RUN steps run.
    isolation: Box<dyn Isolation>,
    /// Every step done so far, for the summary.
    steps: Mutex<Vec<StepMetric>>,
}

type Built = BTreeMap<usize, Arc<StageResult>>;

/// The time the image records for a step or for itself: the clock's, or
/// `SOURCE_DATE_EPOCH` (`--reproducible`) so that two builds of the same
/// inputs give the same config.
fn timestamp(settings: &Settings) -> String {
    let secs = settings.source_date_epoch.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    });
    config::rfc3339(secs)
}

impl<'a> Engine<'a> {
    /// Builds every needed stage, each as soon as the stages it depends on
    /// are built: independent stages run at the same time, one thread each.
    /// The first failure stops the others and is returned.
    fn run_stages(&self) -> Result<Built> {
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

    fn step_error(&self, instruction: &Instruction, message: impl std::fmt::Display) -> BuildError {
        BuildError::Step {
            file: self.file_name.clone(),
            line: instruction.start.line,
            instruction: instruction.keyword().to_string(),
            message: message.to_string(),
        }
    }

    /// `--snapshot-mode`, or full snapshots where overlay cannot be
    /// mounted (checked once, on first use).
    fn mode(&self) -> SnapshotMode {
        *self.mode.get_or_init(|| match self.settings.snapshot_mode {
            SnapshotMode::Overlay if !crate::sandbox::overlay::supported(&self.work) => {
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

    fn new_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.work.join(name);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_at(&dir))?;
        }
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        Ok(dir)
    }

    /// The root filesystem of `layers` (in the store) under the scratch
    /// directory `name`.
    fn stage_root(&self, name: &str, layers: &[LayerRef]) -> Result<StageRoot> {
        let dir = self.work.join(name);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_at(&dir))?;
        }
        StageRoot::new(self.mode(), &self.store, dir, layers, self.privileged)
    }

    fn run_stage(&self, index: usize, built: &Built) -> Result<StageResult> {
        let stage = &self.plan.stages[index];
        let total_stages = self.plan.needed.len();
        let position = self
            .plan
            .needed
            .iter()
            .position(|&i| i == index)
            .unwrap_or(0)
            + 1;
        let platform = stage
            .platform
            .clone()
            .unwrap_or_else(|| self.settings.platform.clone());
        let steps = stage.instructions.len() + 1;
        tracing::info!(
            "[{position}/{total_stages}] STEP 1/{steps}: {}",
            stage.from.display()
        );
        // The base's layers are not downloaded here: the first step that
        // executes needs them, a step taken from the cache does not.
        let (mut config, layers, base) = match &stage.base {
            Base::Scratch => (
                ImageConfig::scratch(&platform),
                Vec::new(),
                Some(BaseRef::Scratch),
            ),
            Base::Stage(i) => {
                let base = built.get(i).expect("dependencies are built first");
                (
                    base.config.clone(),
                    base.layers.clone(),
                    base.key.map(BaseRef::Stage),
                )
            }
            Base::Image(reference) => {
                let reference = ImageReference::parse(reference)
                    .map_err(|e| self.step_error(&stage.from, e))?;
                let image = self.runtime.block_on(self.registry.resolve(
                    &reference,
                    &platform,
                    &self.store,
                ))?;
                (
                    image.config,
                    image.layers,
                    Some(BaseRef::Image {
                        manifest_digest: image.digest,
                    }),
                )
            }
        };
        let mut result = StageState {
            index,
            config: ImageConfig {
                created: None,
                ..config.clone()
            },
            base_layers: layers.len(),
            base_history: config.history.len(),
            layers,
            root: None,
            stubs: Vec::new(),
        };
        if self.settings.single_snapshot {
            self.ensure_root(&mut result)?;
        }

        // ONBUILD triggers of the base run first, then are cleared.
        let mut instructions = Vec::new();
        for trigger in std::mem::take(&mut config.config.on_build) {
            let parsed = parser::parse(&trigger).map_err(|e| {
                self.step_error(&stage.from, format!("ONBUILD trigger {trigger:?}: {e}"))
            })?;
            for node in &parsed.nodes {
                let mut instruction = instructions::parse_node(node, &parsed).map_err(|e| {
                    self.step_error(&stage.from, format!("ONBUILD trigger {trigger:?}: {e}"))
                })?;
                instruction.start = stage.from.start;
                if matches!(instruction.kind, Kind::Run(_)) {
                    sandbox::probe().map_err(|source| BuildError::Isolation {
                        file: self.file_name.clone(),
                        line: stage.from.start.line,
                        source,
                    })?;
                }
                instructions.push(instruction);
            }
        }
        result.config.config.on_build.clear();
        instructions.extend(stage.instructions.iter().cloned());

        // Every instruction is expanded, and with --cache keyed, before any
        // runs; the keys are looked up at once.
        let base_key = base.and_then(|base| {
            self.cache.as_ref()?;
            let from = executor_cache::key(None, &executor_cache::Step::From { base });
            // A scratch stage's config names the platform.
            Some(executor_cache::key(
                Some(&from),
                &executor_cache::Step::Config {
                    canonical: format!("platform {platform}"),
                },
            ))
        });
        let planned = self.plan_steps(index, built, instructions, &result.config, base_key)?;
        let mut hits: Vec<Option<Hit>> = match &self.cache {
            Some(cache) => {
                let keys: Vec<Option<Key>> = planned.iter().map(|p| p.key).collect();
                self.runtime
                    .block_on(cache.lookup_all(&keys, &self.registry, &self.store))
            }
            None => Vec::new(),
        };
        hits.resize_with(planned.len(), || None);
        let stage_key = planned.last().map_or(base_key, |p| p.key);

        // Results of executed steps, filed in the cache when the stage ends
        // (failed or not: what succeeded is worth keeping).
        let mut saves: Vec<(Key, ImageConfig, Option<LayerRef>)> = Vec::new();
        let outcome = self.run_steps(
            (position, total_stages, steps),
            built,
            &mut result,
            planned,
            hits,
            &mut saves,
        );
        if let Some(cache) = &self.cache
            && !saves.is_empty()
        {
            let writes = saves.iter().map(|(key, config, layer)| {
                cache.save(*key, config, layer.as_ref(), &self.registry, &self.store)
            });
            self.runtime
                .block_on(futures_util::future::join_all(writes));
        }
        outcome?;
        if self.settings.single_snapshot {
            self.single_snapshot(&mut result, &timestamp(self.settings))?;
        }
        Ok(StageResult {
            config: result.config,
            layers: result.layers,
            key: stage_key,
            root: Mutex::new(result.root.map(Arc::new)),
        })
    }

    /// Expands the stage's instructions in order, keeping the variables in
    /// scope at each, and with `--cache` computes each one's key, chained
    /// from `base_key`. A step that is not cached (by the `--cache-*-layers`
    /// flags, or because what it reads has no identity) has no key, and
    /// neither has any step after it.
    fn plan_steps(
        &self,
        index: usize,
        built: &Built,
        instructions: Vec<Instruction>,
        config: &ImageConfig,
        base_key: Option<Key>,
    ) -> Result<Vec<Planned<'a>>> {
        let mut scope = Scope::new(self.plan, self.opts, config.env_pairs());
        let mut simulated = config.clone();
        let mut flags = StageFlags::default();
        let mut parent = base_key;
        let mut planned = Vec::with_capacity(instructions.len());
        for mut instruction in instructions {
            scope
                .apply(&mut instruction, &self.plan.parsed)
                .map_err(|e| BuildError::Dockerfile(e.render(&self.file_name)))?;
            let key = match (&self.cache, parent) {
                (Some(cache), Some(parent)) => {
                    let step = match config::apply(&mut simulated, &mut flags, &instruction, None) {
                        Applied::Config => Some(keys::config_step(&instruction)),
                        Applied::NotConfigOnly => match &instruction.kind {
                            Kind::Workdir(_) => Some(keys::config_step(&instruction)),
                            Kind::Run(r) if cache.settings.run_layers => Some(self.run_key(
                                index,
                                built,
                                &instruction,
                                r,
                                &simulated,
                                &scope,
                            )?),
                            Kind::Copy(c) if cache.settings.copy_layers => {
                                self.copy_key(index, built, &instruction, &c.args, None, &scope)?
                            }
                            Kind::Add(a) if cache.settings.copy_layers => {
                                self.copy_key(index, built, &instruction, &a.args, Some(a), &scope)?
                            }
                            _ => None,
                        },
                    };
                    step.map(|step| executor_cache::key(Some(&parent), &step))
                }
                _ => None,
            };
            parent = key;
            planned.push(Planned {
                instruction,
                scope: scope.clone(),
                key,
            });
        }
        Ok(planned)
    }

    /// Runs the planned steps: while every step so far came from the cache,
    /// a hit is used as is (its layer not downloaded); from the first miss
    /// on, steps execute on the stage's root, made then.
    fn run_steps(
        &self,
        (position, total_stages, steps): (usize, usize, usize),
        built: &Built,
        result: &mut StageState,
        planned: Vec<Planned<'_>>,
        hits: Vec<Option<Hit>>,
        saves: &mut Vec<(Key, ImageConfig, Option<LayerRef>)>,
    ) -> Result<()> {
        let index = result.index;
        let mut flags = StageFlags::default();
        let mut all_cached = true;
        for (n, (step, hit)) in planned.into_iter().zip(hits).enumerate() {
            if INTERRUPTED.load(Ordering::Relaxed) {
                return Err(BuildError::Interrupted);
            }
            if self.failed.load(Ordering::Relaxed) {
                return Err(BuildError::Cancelled);
            }
            let step_started = Instant::now();
            let layers_before = result.layers.len();
            let Planned {
                instruction,
                scope,
                key,
            } = step;
            let hit = if all_cached { hit } else { None };
            all_cached = hit.is_some();
            if let Some(hit) = hit {
                Self::use_hit(result, &mut flags, &instruction, hit);
            } else {
                let created = timestamp(self.settings);
                match config::apply(&mut result.config, &mut flags, &instruction, Some(&created)) {
                    Applied::Config => {}
                    Applied::NotConfigOnly => {
                        self.ensure_root(result)?;
                        let job = Job {
                            index,
                            built,
                            scope: &scope,
                            created: &created,
                        };
                        match &instruction.kind {
                            Kind::Workdir(_) => {
                                self.workdir(index, result, &instruction, &created)?;
                            }
                            Kind::Copy(c) => {
                                self.copy(&job, result, &instruction, &c.args, None)?;
                            }
                            Kind::Add(a) => {
                                self.copy(&job, result, &instruction, &a.args, Some(a))?;
                            }
                            Kind::Run(r) => self.run(&job, result, &instruction, r)?,
                            _ => return Err(self.step_error(&instruction, "is not supported")),
                        }
                    }
                }
                if let Some(key) = key {
                    let layer = result.layers[layers_before..].last().cloned();
                    saves.push((key, result.config.clone(), layer));
                }
            }
            let seconds = step_started.elapsed().as_secs_f64();
            let shown = instruction.display();
            let cached = if all_cached { " (cached)" } else { "" };
            tracing::info!(
                "[{position}/{total_stages}] STEP {}/{steps}: {shown}{cached} ({seconds:.2}s)",
                n + 2,
            );
            self.steps
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(StepMetric {
                    stage: index,
                    step: n + 2,
                    instruction: shown,
                    seconds,
                    layer: result.layers.len() > layers_before,
                    cached: all_cached,
                });
        }
        Ok(())
    }

    /// A step taken from the cache. The instruction is applied to the
    /// config as executing it would (so the history says what this build
    /// did, e.g. an `ARG`'s value now), with the time the cached step was
    /// made, and the cached layer joins the stage without being downloaded.
    fn use_hit(
        result: &mut StageState,
        flags: &mut StageFlags,
        instruction: &Instruction,
        hit: Hit,
    ) {
        let created = hit.config.history.last().and_then(|h| h.created.clone());
        let created = created.as_deref();
        if matches!(
            config::apply(&mut result.config, flags, instruction, created),
            Applied::Config
        ) {
            return;
        }
        let created_by = instruction.display();
        match hit.layer {
            Some(layer) => {
                result.config.add_layer(&layer.diff_id, created_by, created);
                result.layers.push(layer);
            }
            None => result.config.add_history(created_by, true, created),
        }
    }

    /// Makes the stage's root from its layers (downloading those not in the
    /// store) if it is not made yet.
    fn ensure_root(&self, result: &mut StageState) -> Result<()> {
        if result.root.is_some() {
            return Ok(());
        }
        self.runtime
            .block_on(self.registry.ensure_layers(&result.layers, &self.store))?;
        let mut root = self.stage_root(&format!("stage-{}/root", result.index), &result.layers)?;
        if self.settings.single_snapshot {
            root.before_run()?;
        }
        result.root = Some(root);
        Ok(())
    }

    /// The identity of a `--from` source for a key: a stage by its last
    /// key, an image by its manifest digest (resolved, not downloaded).
    /// `None` when the stage has no key.
    fn source_identity(
        &self,
        built: &Built,
        from: &str,
        instruction: &Instruction,
    ) -> Result<Option<String>> {
        if let plan::Source::Stage(i) = self.plan.resolve_from(from) {
            return Ok(built
                .get(&i)
                .and_then(|stage| stage.key)
                .map(|key| format!("stage:{key}")));
        }
        let reference = ImageReference::parse(from).map_err(|e| self.step_error(instruction, e))?;
        let image = self.runtime.block_on(self.registry.resolve(
            &reference,
            &self.settings.platform,
            &self.store,
        ))?;
        Ok(Some(format!("image:{}", image.digest)))
    }

    /// The content hash of `patterns` selected from the build context, as
    /// COPY (and a RUN bind mount) would read them.
    fn context_hash(
        &self,
        patterns: &[String],
        excludes: &[String],
        instruction: &Instruction,
    ) -> Result<TreeHash> {
        let selected = self
            .context
            .select(patterns, excludes)
            .map_err(|e| self.step_error(instruction, e))?;
        let digest = self
            .context
            .content_hash(&selected, excludes)
            .map_err(|e| self.step_error(instruction, e))?;
        Ok(TreeHash::from_bytes(digest.0))
    }

    /// A RUN's key step: its command and environment, and what its bind
    /// mounts read.
    fn run_key(
        &self,
        _index: usize,
        built: &Built,
        instruction: &Instruction,
        r: &instructions::Run,
        config: &ImageConfig,
        scope: &Scope<'_>,
    ) -> Result<executor_cache::Step> {
        let mut bind_sources = Vec::new();
        for mount in r
            .mounts
            .iter()
            .filter(|m| m.kind == instructions::MountKind::Bind)
        {
            let source = mount.source.clone().unwrap_or_else(|| "/".to_string());
            let hash = match &mount.from {
                None => self.context_hash(&[source], &[], instruction)?,
                Some(from) => match self.source_identity(built, from, instruction)? {
                    Some(id) => keys::identity("source", &format!("{id}:{source}")),
                    // A stage without a key: the step cannot be keyed
                    // soundly, so its identity is the stage's name and
                    // this build's time; it never hits.
                    None => {
                        keys::identity("unkeyed", &format!("{from}:{}", timestamp(self.settings)))
                    }
                },
            };
            bind_sources.push(hash);
        }
        Ok(keys::run_step(r, config, scope.args(), bind_sources))
    }

    /// A COPY's or ADD's key step, `None` when what it reads has no
    /// identity (a `--from` stage that was not keyed).
    fn copy_key(
        &self,
        index: usize,
        built: &Built,
        instruction: &Instruction,
        args: &CopyArgs,
        add: Option<&Add>,
        scope: &Scope<'_>,
    ) -> Result<Option<executor_cache::Step>> {
        let mut heredocs = Vec::new();
        for heredoc in &args.heredocs {
            heredocs.push((
                heredoc.name.clone(),
                self.heredoc_content(heredoc, scope, instruction)?,
            ));
        }
        let (remote, local): (Vec<&String>, Vec<&String>) = args
            .sources
            .iter()
            .partition(|s| add.is_some() && add::is_remote(s));
        let mut parts = Vec::new();
        // A URL is known by its checksum when given, else by its content,
        // fetched now (and again if the step executes).
        for url in remote {
            let (checksum, keep_git_dir) = add.map_or((None, false), |a| {
                (a.checksum.as_deref(), a.keep_git_dir == Some(true))
            });
            if let Some(checksum) = checksum {
                parts.push(keys::identity("checksum", checksum));
                continue;
            }
            let scratch = self.new_dir(&format!("stage-{index}/key-sources"))?;
            let fetched = add::fetch(url, None, keep_git_dir, &scratch, self.runtime)
                .map_err(|e| self.step_error(instruction, add::render(&e)))?;
            // A download is a file alone in its directory; a git
            // repository a directory.
            let tree = if fetched.path.is_dir() {
                fetched.path.clone()
            } else {
                fetched.path.parent().unwrap_or(&scratch).to_path_buf()
            };
            let hash = executor_cache::hash_dir(&tree).map_err(io_at(&tree))?;
            fs::remove_dir_all(&scratch).map_err(io_at(&scratch))?;
            parts.push(hash);
        }
        let patterns: Vec<String> = local.into_iter().cloned().collect();
        let from = match &args.from {
            None => {
                if !patterns.is_empty() {
                    parts.push(self.context_hash(&patterns, &args.exclude, instruction)?);
                }
                None
            }
            Some(from) => match self.source_identity(built, from, instruction)? {
                Some(id) => Some(id),
                None => return Ok(None),
            },
        };
        Ok(Some(keys::copy_step(
            instruction,
            args,
            add,
            keys::combine(&parts),
            from,
            heredocs,
        )))
    }

    /// RUN: the command in the stage's root through the isolation, then its
    /// changes as a layer.
    fn run(
        &self,
        job: &Job<'_>,
        result: &mut StageState,
        instruction: &Instruction,
        r: &instructions::Run,
    ) -> Result<()> {
        if self.cache.is_some() {
            self.probed
                .get_or_init(sandbox::probe)
                .clone()
                .map_err(|source| BuildError::Isolation {
                    file: self.file_name.clone(),
                    line: instruction.start.line,
                    source,
                })?;
        }
        let scratch = self.new_dir(&format!("stage-{}/run", job.index))?;
        result.root().before_run()?;
        let from_root = |from: &str| -> std::result::Result<PathBuf, String> {
            self.source_root(job.built, from, instruction)
                .map(|root| root.path().to_path_buf())
                .map_err(|e| e.to_string())
        };
        let context_source = |source: &str| -> std::result::Result<PathBuf, String> {
            self.context_view(source, &scratch, instruction)
                .map_err(|e| e.to_string())
        };
        let step = run::Step {
            run: r,
            config: &result.config,
            args: job.scope.args(),
            root: result.rootfs(),
            scratch: &scratch,
            context_source: &context_source,
            store: self.store.root(),
            secrets: &self.settings.secrets,
            ssh: &self.settings.ssh,
            from_root: &from_root,
        };
        let outcome = run::execute(&step, self.isolation.as_ref());
        fs::remove_dir_all(&scratch).map_err(io_at(&scratch))?;
        if INTERRUPTED.load(Ordering::Relaxed) {
            return Err(BuildError::Interrupted);
        }
        let stubs = outcome.map_err(|e| self.step_error(instruction, e))?;
        let created_by = instruction.display();
        if self.settings.single_snapshot && self.mode() == SnapshotMode::Full {
            // One diff at the end of the stage.
            result.stubs.extend(stubs);
            result
                .config
                .add_history(created_by, true, Some(job.created));
            return Ok(());
        }
        match result
            .root()
            .take_diff(&stubs, &self.settings.ignore_paths)?
        {
            None => {
                result.root().discard()?;
                // BuildKit and kaniko write no layer for a step that changed
                // nothing.
                result
                    .config
                    .add_history(created_by, true, Some(job.created));
            }
            Some(diff) => {
                let info = self.store_layer(diff.entries)?;
                result.root().keep(&self.store, &info.diff_id)?;
                Self::record_layer(result, &info, created_by, job.created);
            }
        }
        Ok(())
    }

    /// What `RUN --mount=type=bind` (no `from`) shows of `source`: the
    /// build context as COPY sees it, so `.dockerignore` applies as in
    /// BuildKit (which sends only the files it keeps). Without a
    /// `.dockerignore` that is the context's own path; with one, a view of
    /// the files kept, made under `scratch` (hard links where the context
    /// shares the store's file system, copies elsewhere).
    fn context_view(
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
        copy::copy(&sources, "/", &empty, &view, &opts)
            .map_err(|e| self.step_error(instruction, e))?;
        Ok(match (path.is_dir(), path.file_name()) {
            (false, Some(name)) => view.join(name),
            _ => view,
        })
    }

    /// `--single-snapshot`: the stage's own layers become one.
    fn single_snapshot(&self, result: &mut StageState, created: &str) -> Result<()> {
        let entries = match self.mode() {
            SnapshotMode::Overlay => {
                let base_layers = result.base_layers;
                let dirs = &result.root().layer_dirs()[base_layers..];
                if dirs.is_empty() {
                    return Ok(());
                }
                crate::image::upper::squash(dirs)?
            }
            SnapshotMode::Full => {
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

    /// WORKDIR: the directory and its missing parents are created (owned by
    /// the current USER, as BuildKit does) when the image does not have it.
    fn workdir(
        &self,
        index: usize,
        result: &mut StageState,
        instruction: &Instruction,
        created: &str,
    ) -> Result<()> {
        let dir = result.config.config.working_dir.clone();
        let created_by = instruction.display();
        if copy::resolve_in_root(result.rootfs(), &dir, true).is_dir() {
            result.config.add_history(created_by, true, Some(created));
            return Ok(());
        }
        let owner = match result.config.config.user.as_str() {
            "" => None,
            user => Some(
                copy::resolve_chown(user, result.rootfs())
                    .map_err(|e| self.step_error(instruction, e))?,
            ),
        };
        let staging = self.new_dir(&format!("stage-{index}/staging"))?;
        copy::make_dir(result.rootfs(), &staging, &dir, owner.unwrap_or((0, 0)))
            .map_err(|e| self.step_error(instruction, e))?;
        self.commit_layer(result, &staging, created_by, created)
    }

    /// COPY and ADD.
    fn copy(
        &self,
        job: &Job<'_>,
        result: &mut StageState,
        instruction: &Instruction,
        args: &CopyArgs,
        add: Option<&Add>,
    ) -> Result<()> {
        let (scope, created) = (job.scope, job.created);
        let keyword = if add.is_some() { "ADD" } else { "COPY" };
        let chown = args
            .chown
            .as_deref()
            .map(|c| copy::resolve_chown(c, result.rootfs()))
            .transpose()
            .map_err(|e| self.step_error(instruction, e))?;
        let chmod = args
            .chmod
            .as_deref()
            .map(copy::parse_chmod)
            .transpose()
            .map_err(|e| self.step_error(instruction, e))?;
        let mut copy_opts = copy::Options {
            instruction: keyword,
            chown,
            chmod,
            parents: args.parents,
            workdir: result.config.config.working_dir.clone(),
            from_context: args.from.is_none(),
        };

        let scratch = self.new_dir(&format!("stage-{}/sources", job.index))?;
        let mut sources = Vec::new();
        // Heredoc sources are files named by their delimiter.
        for heredoc in &args.heredocs {
            let content = self.heredoc_content(heredoc, scope, instruction)?;
            let path = scratch.join(&heredoc.name);
            fs::write(&path, content).map_err(io_at(&path))?;
            sources.push(Source {
                path,
                rel: heredoc.name.clone(),
                entries: None,
            });
        }
        let (remote, local): (Vec<&String>, Vec<&String>) = args
            .sources
            .iter()
            .partition(|s| add.is_some() && add::is_remote(s));
        for url in remote {
            let (checksum, keep_git_dir) = add.map_or((None, false), |a| {
                (a.checksum.as_deref(), a.keep_git_dir == Some(true))
            });
            let source = add::fetch(url, checksum, keep_git_dir, &scratch, self.runtime)
                .map_err(|e| self.step_error(instruction, add::render(&e)))?;
            sources.push(source);
        }
        let patterns: Vec<String> = local.into_iter().cloned().collect();
        if !patterns.is_empty() {
            match &args.from {
                None => {
                    sources.extend(self.context_sources(
                        &self.context,
                        &patterns,
                        &args.exclude,
                        instruction,
                    )?);
                }
                Some(from) => {
                    let root = self.source_root(job.built, from, instruction)?;
                    let other = Context::from_rootfs(root.path())?;
                    sources.extend(self.context_sources(
                        &other,
                        &patterns,
                        &args.exclude,
                        instruction,
                    )?);
                    copy_opts.from_context = false;
                }
            }
        }

        let staging = self.new_dir(&format!("stage-{}/staging", job.index))?;
        // Context files are extracted unless --unpack=false; downloads and
        // heredocs (in `scratch`) only with --unpack=true, as BuildKit does.
        let unpack = add.map(|a| a.unpack);
        let (archives, plain): (Vec<Source>, Vec<Source>) = sources.into_iter().partition(|s| {
            let wanted = match unpack {
                None | Some(Some(false)) => false,
                Some(Some(true)) => true,
                Some(None) => !s.path.starts_with(&scratch),
            };
            wanted && args.from.is_none() && s.path.is_file() && add::is_local_archive(&s.path)
        });
        // `--link` makes a layer independent of what is below it, as
        // BuildKit does: the copy sees an empty root (no symlink in the image
        // is followed, no existing directory lends its metadata, a
        // destination without a trailing slash is not looked up), and the
        // layer is then laid over the stage like any other.
        let empty_root;
        let copy_root = if args.link {
            empty_root = self.new_dir(&format!("stage-{}/link-root", job.index))?;
            &empty_root
        } else {
            result.rootfs()
        };
        if !plain.is_empty() {
            copy::copy(&plain, &args.dest, copy_root, &staging, &copy_opts)
                .map_err(|e| self.step_error(instruction, e))?;
        }
        for archive in archives {
            let (dest, _) = copy::destination(&args.dest, &copy_opts.workdir);
            let dest = copy::resolve_image_path(copy_root, &dest, true);
            let target = copy::under(&staging, &dest);
            // Directories the image has keep their metadata; missing ones
            // take --chown's owner, as COPY's do.
            copy::make_dir(copy_root, &staging, &dest, chown.unwrap_or((0, 0)))
                .map_err(|e| self.step_error(instruction, e))?;
            let file = fs::File::open(&archive.path).map_err(io_at(&archive.path))?;
            apply::apply_layer(
                io::BufReader::new(file),
                &target,
                &ApplyOptions {
                    root_is_privileged: rustix::process::geteuid().is_root(),
                    preserve_ownership: chown.is_none(),
                    ignore_paths: Vec::new(),
                },
            )
            .map_err(|e| {
                self.step_error(instruction, format!("cannot extract {}: {e}", archive.rel))
            })?;
            // --chown applies to what the archive held, as in BuildKit.
            if let Some((uid, gid)) = chown {
                chown_tree(&target, uid, gid)?;
            }
        }
        self.commit_layer(result, &staging, instruction.display(), created)
    }

    /// A COPY heredoc's file content: expanded unless its delimiter was
    /// quoted.
    fn heredoc_content(
        &self,
        heredoc: &instructions::HeredocFile,
        scope: &Scope<'_>,
        instruction: &Instruction,
    ) -> Result<String> {
        if !heredoc.expand {
            return Ok(heredoc.content.clone());
        }
        let lex = Lex {
            raw_quotes: true,
            raw_escapes: true,
            ..Lex::new(self.plan.parsed.escape)
        };
        lex.process_word(&heredoc.content, scope)
            .map_err(|e| self.step_error(instruction, e.message))
    }

    /// Selected files of `ctx` as copy sources.
    fn context_sources(
        &self,
        ctx: &Context,
        patterns: &[String],
        excludes: &[String],
        instruction: &Instruction,
    ) -> Result<Vec<Source>> {
        let selected = ctx
            .select(patterns, excludes)
            .map_err(|e| self.step_error(instruction, e))?;
        let mut out = Vec::with_capacity(selected.len());
        for item in selected {
            let entries = if item.metadata.is_dir() {
                let mut list = Vec::new();
                for entry in ctx
                    .walk(&item, excludes)
                    .map_err(|e| self.step_error(instruction, e))?
                {
                    let entry = entry.map_err(|e| self.step_error(instruction, e))?;
                    list.push(TreeEntry {
                        sub: entry.sub,
                        abs: entry.abs,
                        metadata: entry.metadata,
                    });
                }
                Some(list)
            } else {
                None
            };
            out.push(Source {
                path: item.abs,
                rel: item.rel,
                entries,
            });
        }
        Ok(out)
    }

    /// The root filesystem `COPY --from=` and `RUN --mount=from=` read: a
    /// stage's, or an image's.
    fn source_root(
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
            if let Some(root) = &*root {
                return Ok(Arc::clone(root));
            }
            // A stage taken from the cache: its root is made now.
            self.runtime
                .block_on(self.registry.ensure_layers(&stage.layers, &self.store))?;
            let made = Arc::new(self.stage_root(&format!("stage-{i}/root"), &stage.layers)?);
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
        let image = self.runtime.block_on(self.registry.fetch(
            &reference,
            &self.settings.platform,
            &self.store,
        ))?;
        let name = format!("image-{}", roots.len());
        let root = Arc::new(self.stage_root(&name, &image.layers)?);
        roots.insert(from.to_string(), Arc::clone(&root));
        Ok(root)
    }

    /// Writes `entries` as a layer into the store.
    fn store_layer(&self, mut entries: Vec<LayerEntry>) -> Result<LayerInfo> {
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
            self.settings.compression_level,
            self.settings.compression_threads,
            &mut writer,
            &WriteOptions {
                // File times later than SOURCE_DATE_EPOCH are clamped to it.
                source_date_epoch: self
                    .settings
                    .source_date_epoch
                    .map(|epoch| u64::try_from(epoch).unwrap_or(0)),
            },
        )?;
        writer.flush().map_err(io_at(self.store.root()))?;
        writer.commit(Some(&info.digest))?;
        Ok(info)
    }

    /// Records a written layer in the stage's layers and config.
    fn record_layer(result: &mut StageState, info: &LayerInfo, created_by: String, created: &str) {
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
    fn commit_layer(
        &self,
        result: &mut StageState,
        staging: &Path,
        created_by: String,
        created: &str,
    ) -> Result<()> {
        let entries = layer::layer_from_dir(staging)?;
        let info = self.store_layer(entries)?;
        // The staged tree is the layer: it joins the root rather than the
        // layer just written being extracted again.
        result
            .root()
            .add_layer(&self.store, &info.diff_id, staging)?;
        Self::record_layer(result, &info, created_by, created);
        Ok(())
    }

    /// Assembles the image, stores it and writes every output.
    fn finish(&self, mut config: ImageConfig, layers: &[LayerRef]) -> Result<Outcome> {
        for (k, v) in &self.settings.labels {
            config.config.labels.insert(k.clone(), v.clone());
        }
        // The image was made when its last step was: a build whose steps
        // all come from the cache gives the same config, and digest, as the
        // build that filled it.
        config.created = Some(
            config
                .history
                .last()
                .and_then(|h| h.created.clone())
                .unwrap_or_else(|| timestamp(self.settings)),
        );
        // Layers taken from the cache are downloaded only when needed: for
        // the local store's copy when nothing is pushed, and for the files
        // written here.
        let pushed_somewhere = self.settings.push && !self.settings.destinations.is_empty();
        if !pushed_somewhere
            || self.settings.tar_path.is_some()
            || self.settings.oci_layout_path.is_some()
        {
            self.runtime
                .block_on(self.registry.ensure_layers(layers, &self.store))?;
        }
        let result = FinalImage { config, layers };
        let config_bytes = result
            .config
            .to_json()
            .map_err(|e| BuildError::Dockerfile(format!("cannot encode the image config: {e}")))?;
        let config_digest = self.store.put_bytes(&config_bytes)?;
        let config_descriptor = Descriptor::new(
            MediaType::ImageConfig,
            config_bytes.len() as u64,
            oci_spec::image::Digest::from(&config_digest),
        );
        let layer_descriptors: Vec<Descriptor> = result
            .layers
            .iter()
            .map(|l| images::as_oci_layer(&l.descriptor))
            .collect();
        let manifest = images::manifest_json(&config_descriptor, &layer_descriptors);
        let digest = self.store.put_bytes(&manifest)?;
        let manifest_descriptor = Descriptor::new(
            MediaType::ImageManifest,
            manifest.len() as u64,
            oci_spec::image::Digest::from(&digest),
        );
        for destination in &self.settings.destinations {
            self.store
                .set_ref(&destination.to_string(), &manifest_descriptor)?;
        }

        let mut pushed = Vec::new();
        if self.settings.push {
            // Tags of one repository share its blobs: those go once.
            let mut repositories: BTreeMap<String, Vec<&ImageReference>> = BTreeMap::new();
            for destination in &self.settings.destinations {
                repositories
                    .entry(destination.name())
                    .or_default()
                    .push(destination);
            }
            let uploads = repositories.values().map(|tags| {
                self.registry.push(
                    tags,
                    &self.store,
                    &manifest,
                    &config_descriptor,
                    result.layers,
                )
            });
            self.runtime.block_on(try_join_all(uploads))?;
            for destination in &self.settings.destinations {
                tracing::info!("pushed {}@{digest} ({destination})", destination.name());
                pushed.push(destination.clone());
            }
        }
        if let Some(path) = &self.settings.tar_path {
            images::write_docker_archive(
                path,
                &self.store,
                &config_digest,
                &config_bytes,
                result.layers,
                &self.settings.destinations,
            )?;
            tracing::info!("wrote {}", path.display());
        }
        if let Some(dir) = &self.settings.oci_layout_path {
            let mut root = manifest_descriptor.clone();
            if let Some(name) = self.settings.destinations.first() {
                let mut annotations = std::collections::HashMap::new();
                annotations.insert(
                    "org.opencontainers.image.ref.name".to_string(),
                    name.to_string(),
                );
                root.set_annotations(Some(annotations));
            }
            self.store.export_layout(dir, &[root])?;
            tracing::info!("wrote OCI layout {}", dir.display());
        }
        write_digest_files(self.settings, &digest)?;
        Ok(Outcome {
            digest,
            manifest: manifest_descriptor,
            config: result.config,
            pushed,
            metrics: Metrics::default(),
        })
    }
}

/// The target stage's config and layers, as `finish` writes them.
struct FinalImage<'l> {
    config: ImageConfig,
    layers: &'l [LayerRef],
}

/// `n` bytes as B, KiB, MiB or GiB, for the summary line.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    #[allow(clippy::cast_precision_loss)] // a summary line
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

/// Gives everything below `dir` (not `dir` itself) the owner `uid:gid`,
/// without following symlinks.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let path = entry.map_err(io_at(dir))?.path();
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(io_at(&path))?;
        if fs::symlink_metadata(&path).map_err(io_at(&path))?.is_dir() {
            chown_tree(&path, uid, gid)?;
        }
    }
    Ok(())
}

/// What a COPY or ADD step needs of its stage besides the stage's result.
struct Job<'a> {
    index: usize,
    built: &'a Built,
    scope: &'a Scope<'a>,
    created: &'a str,
}

/// kaniko's digest files.
fn write_digest_files(settings: &Settings, digest: &Digest) -> Result<()> {
    let write = |path: &Path, text: String| fs::write(path, text).map_err(io_at(path));
    if let Some(path) = &settings.digest_file {
        write(path, digest.to_string())?;
    }
    if let Some(path) = &settings.image_name_with_digest_file {
        let lines: Vec<String> = settings
            .destinations
            .iter()
            .map(|d| format!("{}@{digest}", d.name()))
            .collect();
        write(path, lines.join("\n") + "\n")?;
    }
    if let Some(path) = &settings.image_name_tag_with_digest_file {
        let lines: Vec<String> = settings
            .destinations
            .iter()
            .map(|d| format!("{}:{}@{digest}", d.name(), d.tag().unwrap_or("latest")))
            .collect();
        write(path, lines.join("\n") + "\n")?;
    }
    Ok(())
}
