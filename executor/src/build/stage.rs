//! One stage from its base to its last step: the base resolved (scratch,
//! an image, an earlier stage), ONBUILD triggers, every instruction
//! expanded and keyed before any runs, the keys looked up at once, then the
//! steps in order: taken from the cache while every step so far hit, else
//! executed (`step.rs`, `copy_step.rs`) on the stage's root, made then.
//! Which stages run when is `engine.rs`'s.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::cache::Hit;
use super::config::{self, Applied, ImageConfig, StageFlags};
use super::copy::Source;
use super::engine::{Built, Engine, timestamp};
use super::error::{BuildError, Result, StepCause, StepError};
use super::keys;
use super::metrics::StepMetric;
use super::step::PendingLayer;
use crate::dockerfile::instructions::{self, Instruction, Kind};
use crate::dockerfile::parser;
use crate::dockerfile::plan::{Base, Scope};
use crate::registry::ImageReference;
use crate::rootfs::{LayerRef, SnapshotMode, StageRoot};
use executor_cache::{BaseRef, Key};

/// One built stage. Its root stays while a later stage may read it
/// (mounted when first read: see `Engine::source_root`); a stage taken
/// whole from the cache has none until a later step reads it (`COPY
/// --from`, `RUN --mount=from=`).
pub(super) struct StageResult {
    pub(super) config: ImageConfig,
    pub(super) layers: Vec<LayerRef>,
    /// The key of its last step, when every step had one.
    pub(super) key: Option<Key>,
    pub(super) root: Mutex<Option<Arc<StageRoot>>>,
}

/// A stage being built.
pub(super) struct StageState {
    pub(super) index: usize,
    pub(super) config: ImageConfig,
    pub(super) layers: Vec<LayerRef>,
    /// Made (its layers downloaded and extracted) when the first step that
    /// is not taken from the cache executes.
    pub(super) root: Option<StageRoot>,
    /// `--single-snapshot`: how many layers the base has; the stage's own
    /// become one at its end.
    pub(super) base_layers: usize,
    /// `--single-snapshot`: how many history entries the base has.
    pub(super) base_history: usize,
    /// `--single-snapshot`, full mode: the stubs of every RUN, removed at
    /// the end.
    pub(super) stubs: Vec<PathBuf>,
    /// The last RUN's layer while it is written in the background (see
    /// `Engine::settle`).
    pub(super) pending: Option<PendingLayer>,
}

impl StageState {
    pub(super) fn root(&mut self) -> &mut StageRoot {
        self.root
            .as_mut()
            .expect("the stage root is made before a step executes")
    }

    /// The stage's layers, the one being written included.
    pub(super) fn layer_count(&self) -> usize {
        self.layers.len() + usize::from(self.pending.is_some())
    }

    pub(super) fn rootfs(&self) -> &Path {
        self.root
            .as_ref()
            .expect("the stage root is made before a step executes")
            .path()
    }

    /// The stage's root as COPY, ADD and WORKDIR read it (unmounted).
    pub(super) fn view(&self) -> crate::rootfs::RootView<'_> {
        self.root
            .as_ref()
            .expect("the stage root is made before a step executes")
            .view()
    }
}

/// One instruction of a stage, expanded, with the variables in scope at it
/// and its cache key.
pub(super) struct Planned<'p> {
    pub(super) instruction: Instruction,
    pub(super) scope: Scope<'p>,
    pub(super) key: Option<Key>,
    /// ADD's URL sources downloaded to compute the key, in the order of
    /// the instruction's URLs: the step copies these same bytes.
    pub(super) fetched: Vec<Source>,
}

/// What a step that executes needs of its stage besides the stage's state.
pub(super) struct Job<'a> {
    pub(super) index: usize,
    pub(super) built: &'a Built,
    pub(super) scope: &'a Scope<'a>,
    pub(super) created: &'a str,
    /// ADD's URLs, already downloaded for the step's key.
    pub(super) fetched: Vec<Source>,
}

impl<'a> Engine<'a> {
    pub(super) fn run_stage(&self, index: usize, built: &Built) -> Result<StageResult> {
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
        // The base's layers are downloaded here only where a RUN will need
        // them (without --cache, every step runs), while the manifest and
        // config are stored; otherwise the first step that executes
        // downloads them, and a step taken from the cache does not.
        let needs_files = self.cache.is_none()
            && stage
                .instructions
                .iter()
                .any(|i| matches!(i.kind, Kind::Run(_)));
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
                let image = if needs_files {
                    self.images.fetch(&reference, &platform, &self.store)?
                } else {
                    self.images.resolve(&reference, &platform, &self.store)?
                };
                (
                    image.config,
                    image.layers,
                    Some(BaseRef::Image {
                        manifest_digest: image.digest,
                    }),
                )
            }
        };
        // No step runs before the isolation probe started with the build
        // has answered (see `build_with`).
        if self.cache.is_none()
            && let Some(line) = self.first_run_line
        {
            self.isolation_ready(line)?;
        }
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
            pending: None,
        };
        if self.settings.single_snapshot {
            self.ensure_root(&mut result)?;
        }

        // ONBUILD triggers of the base run first, then are cleared.
        let mut instructions = Vec::new();
        for trigger in std::mem::take(&mut config.config.on_build) {
            let invalid = |source: StepCause| {
                self.step_error(
                    &stage.from,
                    StepError::Trigger {
                        trigger: trigger.clone(),
                        source,
                    },
                )
            };
            let parsed = parser::parse(&trigger).map_err(|e| invalid(e.into()))?;
            for node in &parsed.nodes {
                let mut instruction =
                    instructions::parse_node(node, &parsed).map_err(|e| invalid(e.into()))?;
                instruction.start = stage.from.start;
                if matches!(instruction.kind, Kind::Run(_)) {
                    self.isolation_ready(stage.from.start.line)?;
                    // Stages were not placed in the executor's root: the
                    // Dockerfile has no RUN of its own.
                    if !self.has_run() && self.isolation.shared_root().is_some() {
                        return Err(invalid(
                            "a RUN trigger needs --isolation=in-place given on the command line (the Dockerfile itself has no RUN)".into(),
                        ));
                    }
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
        // The last RUN's layer, written while the steps after it ran.
        let outcome = outcome.and_then(|()| self.settle(&mut result));
        if let Some(cache) = &self.cache
            && !saves.is_empty()
        {
            // Entries are written at once, except that a layer two steps
            // both made (an image may hold one layer several times) is
            // uploaded by the first step's entry alone: the later entries
            // wait for it, then find the blob there, instead of racing two
            // uploads of one blob into the cache repository.
            let mut seen = std::collections::HashSet::new();
            let (first, repeated): (Vec<_>, Vec<_>) = saves.iter().partition(|(_, _, layer)| {
                layer
                    .as_ref()
                    .is_none_or(|l| seen.insert(l.descriptor.digest().to_string()))
            });
            for wave in [first, repeated] {
                let writes = wave.into_iter().map(|(key, config, layer)| {
                    cache.save(*key, config, layer.as_ref(), &self.registry, &self.store)
                });
                self.runtime
                    .block_on(futures_util::future::join_all(writes));
            }
        }
        outcome?;
        if self.settings.single_snapshot {
            self.single_snapshot(&mut result, &timestamp(self.settings))?;
        }
        Ok(StageResult {
            config: result.config,
            layers: result.layers,
            key: stage_key,
            // An in-place root is the executor's own: the next stage takes
            // it, and a later `COPY --from` gets a root of its own.
            root: Mutex::new(
                result
                    .root
                    .filter(|root| root.mode() != SnapshotMode::InPlace)
                    .map(Arc::new),
            ),
        })
    }

    /// Expands the stage's instructions in order, keeping the variables in
    /// scope at each, and with `--cache` computes each one's key, chained
    /// from `base_key`. A step that is not cached (by the `--cache-*-layers`
    /// flags, or because what it reads has no identity) has no key, and
    /// neither has any step after it.
    pub(super) fn plan_steps(
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
            let mut fetched = Vec::new();
            let key = match (&self.cache, parent) {
                (Some(cache), Some(parent)) => {
                    let step = match config::apply(&mut simulated, &mut flags, &instruction, None) {
                        Applied::Config => Some(keys::config_step(&instruction)),
                        Applied::NotConfigOnly => match &instruction.kind {
                            Kind::Workdir(_) => Some(keys::config_step(&instruction)),
                            Kind::Run(r) if cache.settings.run_layers => {
                                self.run_key(built, &instruction, r, &simulated, &scope)?
                            }
                            Kind::Copy(c) if cache.settings.copy_layers => self.copy_key(
                                index,
                                built,
                                &instruction,
                                (&c.args, None),
                                &scope,
                                &mut fetched,
                            )?,
                            Kind::Add(a) if cache.settings.copy_layers => self.copy_key(
                                index,
                                built,
                                &instruction,
                                (&a.args, Some(a)),
                                &scope,
                                &mut fetched,
                            )?,
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
                fetched,
            });
        }
        Ok(planned)
    }

    /// Runs the planned steps: while every step so far came from the cache,
    /// a hit is used as is (its layer not downloaded); from the first miss
    /// on, steps execute on the stage's root, made then.
    pub(super) fn run_steps(
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
            if self.cancel.is_cancelled() {
                return Err(BuildError::Interrupted);
            }
            if self.failed.load(Ordering::Relaxed) {
                return Err(BuildError::Cancelled);
            }
            let step_started = Instant::now();
            let layers_before = result.layer_count();
            let Planned {
                instruction,
                scope,
                key,
                fetched,
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
                            fetched,
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
                    // The entry needs this step's layer and config whole.
                    self.settle(result)?;
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
                    layer: result.layer_count() > layers_before,
                    cached: all_cached,
                });
        }
        Ok(())
    }

    /// A step taken from the cache. The instruction is applied to the
    /// config as executing it would (so the history says what this build
    /// did, e.g. an `ARG`'s value now), with the time the cached step was
    /// made, and the cached layer joins the stage without being downloaded.
    pub(super) fn use_hit(
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
    pub(super) fn ensure_root(&self, result: &mut StageState) -> Result<()> {
        if result.root.is_some() {
            return Ok(());
        }
        self.images.ensure_layers(&result.layers, &self.store)?;
        let mut root = self.own_root(&format!("stage-{}/root", result.index), &result.layers)?;
        if self.settings.single_snapshot {
            root.before_run()?;
        }
        result.root = Some(root);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The order of cache hits and misses, through a fake isolation (it
    //! records each RUN's command and writes a file for it into the root,
    //! no namespace) and a fake image fetcher (no registry): full
    //! snapshots, an OCI layout cache in a temp dir.

    use std::collections::BTreeMap;
    use std::fs;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex, PoisonError};

    use tokio_util::sync::CancellationToken;

    use crate::build::engine::{Outcome, Parts, build_with as engine_build};
    use crate::build::{BuildError, CacheRepo, CacheSettings, Settings, SnapshotMode};
    use crate::image::store::Store;
    use crate::platform::Platform;
    use crate::registry::{ImageReference, RegistryOptions};
    use crate::rootfs::config::ImageConfig;
    use crate::rootfs::{ImageError, ImageFetcher, ImageSource, LayerRef, Remote};
    use crate::sandbox::{self, Isolation, KillSwitch, SandboxError, Spec, Status, Unavailable};

    /// Records every command it runs, writes `/ran-N` into the root for the
    /// Nth, and cancels `cancel_after` once it has run that many.
    struct FakeIsolation {
        commands: Arc<Mutex<Vec<String>>>,
        cancel_after: Option<(usize, CancellationToken)>,
    }

    impl Isolation for FakeIsolation {
        fn run(&self, spec: &Spec, _: &KillSwitch) -> Result<sandbox::Outcome, SandboxError> {
            let mut commands = self.commands.lock().unwrap_or_else(PoisonError::into_inner);
            commands.push(spec.args.last().cloned().unwrap_or_default());
            let n = commands.len();
            fs::write(spec.root.join(format!("ran-{n}")), format!("{n}\n")).unwrap();
            if let Some((after, cancel)) = &self.cancel_after
                && n == *after
            {
                cancel.cancel();
            }
            Ok(sandbox::Outcome {
                status: Status::Exited(0),
                stubs: Vec::new(),
            })
        }

        fn available(&self) -> Result<(), Unavailable> {
            Ok(())
        }
    }

    /// Gives every reference an image with no layers, and counts calls.
    #[derive(Default)]
    struct FakeImages {
        resolved: Arc<Mutex<Vec<String>>>,
    }

    impl ImageFetcher for FakeImages {
        fn resolve(
            &self,
            reference: &ImageReference,
            platform: &Platform,
            _: &Store,
        ) -> Result<ImageSource, ImageError> {
            self.resolved
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(reference.to_string());
            Ok(ImageSource {
                config: ImageConfig::scratch(platform),
                layers: Vec::new(),
                digest: format!("sha256:{}", "b".repeat(64)),
            })
        }

        fn ensure_layers(&self, layers: &[LayerRef], _: &Store) -> Result<(), ImageError> {
            assert!(layers.iter().all(|l| l.source.is_none()), "no base layer");
            Ok(())
        }
    }

    /// A project: its context, its store and its cache layout.
    struct Bed {
        dir: tempfile::TempDir,
    }

    impl Bed {
        fn new(dockerfile: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join("context")).unwrap();
            let bed = Self { dir };
            bed.write_dockerfile(dockerfile);
            bed
        }

        fn write_dockerfile(&self, text: &str) {
            fs::write(self.path("context/Dockerfile"), text).unwrap();
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn settings(&self) -> Settings {
            Settings {
                context: self.path("context").display().to_string(),
                context_sub_path: None,
                dockerfile: PathBuf::from("Dockerfile"),
                git: Vec::new(),
                build_args: BTreeMap::new(),
                target: None,
                labels: Vec::new(),
                destinations: Vec::new(),
                push: false,
                tar_path: None,
                oci_layout_path: None,
                digest_file: None,
                image_name_with_digest_file: None,
                image_name_tag_with_digest_file: None,
                platform: Platform::host(),
                zstd: false,
                compression_level: None,
                compression_threads: 1,
                insecure_push: false,
                insecure_pull: false,
                insecure_registries: Vec::new(),
                skip_tls_verify_push: false,
                skip_tls_verify_pull: false,
                skip_tls_verify_registries: Vec::new(),
                registry_certificates: Vec::new(),
                registry_mirrors: Vec::new(),
                push_retry: 0,
                image_download_retry: 0,
                registry_timeout_secs: 60,
                cache_dir: self.path("store"),
                snapshot_mode: SnapshotMode::Full,
                single_snapshot: false,
                ignore_paths: Vec::new(),
                secrets: Vec::new(),
                ssh: Vec::new(),
                isolation: crate::build::IsolationMode::Namespace,
                force: false,
                security: crate::build::SecurityOptions::default(),
                source_date_epoch: None,
                metrics_file: None,
                cache_mount_max_size: None,
                cache: Some(CacheSettings {
                    repo: Some(CacheRepo::Layout(self.path("cache"))),
                    ttl: std::time::Duration::from_secs(3600),
                    copy_layers: true,
                    run_layers: true,
                    push: true,
                }),
            }
        }

        /// Builds with fakes; returns the outcome and the commands run.
        fn build(
            &self,
            cancel: &CancellationToken,
            cancel_after: Option<usize>,
        ) -> (Result<Outcome, BuildError>, Vec<String>) {
            build_with(&self.settings(), cancel, cancel_after)
        }
    }

    /// Builds with fakes; returns the outcome and the commands run.
    fn build_with(
        settings: &Settings,
        cancel: &CancellationToken,
        cancel_after: Option<usize>,
    ) -> (Result<Outcome, BuildError>, Vec<String>) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let commands = Arc::new(Mutex::new(Vec::new()));
        let parts = Parts {
            isolation: Arc::new(FakeIsolation {
                commands: Arc::clone(&commands),
                cancel_after: cancel_after.map(|n| (n, cancel.clone())),
            }),
            images: Box::new(FakeImages::default()),
            registry: Arc::new(Remote::from_options(RegistryOptions::default()).unwrap()),
        };
        let outcome = engine_build(settings, runtime.handle(), cancel, parts);
        let commands = commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (outcome, commands)
    }

    fn five_runs(third: &str) -> String {
        format!(
            "FROM example.invalid/base:1\n\
             RUN echo one\n\
             RUN echo two\n\
             RUN echo {third}\n\
             RUN echo four\n\
             RUN echo five\n"
        )
    }

    fn cached(outcome: &Outcome) -> Vec<bool> {
        outcome.metrics.steps.iter().map(|s| s.cached).collect()
    }

    #[test]
    fn the_third_of_five_steps_missing_executes_it_and_the_rest_in_order() {
        let bed = Bed::new(&five_runs("three"));
        let cancel = CancellationToken::new();
        let (first, ran) = bed.build(&cancel, None);
        let first = first.unwrap();
        assert_eq!(
            ran,
            [
                "echo one",
                "echo two",
                "echo three",
                "echo four",
                "echo five"
            ]
        );
        assert_eq!(cached(&first), [false; 5]);

        let (again, ran) = bed.build(&cancel, None);
        let again = again.unwrap();
        assert!(ran.is_empty(), "every step hits, nothing runs: {ran:?}");
        assert_eq!(cached(&again), [true; 5]);
        assert_eq!(again.digest, first.digest);

        bed.write_dockerfile(&five_runs("THREE"));
        let (changed, ran) = bed.build(&cancel, None);
        let changed = changed.unwrap();
        assert_eq!(ran, ["echo THREE", "echo four", "echo five"]);
        assert_eq!(cached(&changed), [true, true, false, false, false]);
        assert_eq!(changed.metrics.steps_cached, 2);
        assert_eq!(changed.metrics.steps_executed, 3);
    }

    #[test]
    fn a_cancelled_build_stops_before_its_next_step() {
        let bed = Bed::new(&five_runs("three"));
        let cancel = CancellationToken::new();
        let (outcome, ran) = bed.build(&cancel, Some(2));
        assert!(
            matches!(outcome, Err(BuildError::Interrupted)),
            "{outcome:?}"
        );
        assert_eq!(ran, ["echo one", "echo two"]);
        // The step running when the token was cancelled may have been
        // killed: only the one before it is filed.
        let (outcome, ran) = bed.build(&CancellationToken::new(), None);
        assert_eq!(ran, ["echo two", "echo three", "echo four", "echo five"]);
        assert_eq!(
            cached(&outcome.unwrap()),
            [true, false, false, false, false]
        );
    }

    /// A RUN whose bind mount reads a stage without a key (its COPY is not
    /// cached) has no key: with a fixed SOURCE_DATE_EPOCH it once got the
    /// same made-up one in every build, and hit.
    #[test]
    fn a_run_reading_a_stage_without_a_key_runs_in_every_build() {
        let bed = Bed::new(
            "FROM example.invalid/base:1 AS files\n\
             COPY a.txt /a.txt\n\
             FROM example.invalid/base:1\n\
             RUN --mount=type=bind,from=files,source=/a.txt,target=/in cat /in\n",
        );
        fs::write(bed.path("context/a.txt"), "alpha\n").unwrap();
        let mut settings = bed.settings();
        settings.source_date_epoch = Some(0);
        if let Some(cache) = &mut settings.cache {
            cache.copy_layers = false;
        }
        let cancel = CancellationToken::new();
        for build in ["first", "second"] {
            let (outcome, ran) = build_with(&settings, &cancel, None);
            assert_eq!(ran, ["cat /in"], "{build} build");
            assert!(
                outcome.unwrap().metrics.steps.iter().all(|s| !s.cached),
                "{build} build"
            );
        }
    }

    #[test]
    fn a_token_cancelled_before_the_build_runs_nothing() {
        let bed = Bed::new(&five_runs("three"));
        let cancel = CancellationToken::new();
        cancel.cancel();
        let (outcome, ran) = bed.build(&cancel, None);
        assert!(
            matches!(outcome, Err(BuildError::Interrupted)),
            "{outcome:?}"
        );
        assert!(ran.is_empty(), "{ran:?}");
    }
}
