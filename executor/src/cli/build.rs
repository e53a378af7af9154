//! `executor build` (and `executor` with kaniko's flags and no subcommand):
//! kaniko's flag names, each also read from an `EXECUTOR_*` variable, turned
//! into [`executor::build::Settings`].

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{ArgAction, Args, ValueEnum};

use executor::build::settings::source_date_epoch;
use executor::build::{
    CacheRepo, CacheSettings, IsolationMode, Secret, SecurityOptions, Settings, SnapshotMode,
    SshAgent,
};
use executor::dockerfile::instructions::parse_go_duration;
use executor::platform::Platform;
use executor::registry::{Backoff, DEFAULT_TIMEOUT, ImageReference};
use executor::rootfs::Remote;
use tokio_util::sync::CancellationToken;

/// kaniko's boolean flags take `--flag`, `--flag=true` and `--flag=false`.
macro_rules! bool_flag {
    () => {
        ArgAction::Set
    };
}

#[derive(Debug, Clone, Args, Default)]
#[allow(clippy::struct_excessive_bools)]
pub struct BuildArgs {
    /// The build context: a directory, `tar://PATH` (.tar or .tar.gz),
    /// `tar://stdin`, `git://HOST/REPO#REF#COMMIT`, or an https URL ending in
    /// `.git`
    #[arg(short = 'c', long, env = "EXECUTOR_CONTEXT", default_value = ".")]
    pub context: String,

    /// A sub-directory of the context to build from
    #[arg(long, env = "EXECUTOR_CONTEXT_SUB_PATH", value_name = "PATH")]
    pub context_sub_path: Option<String>,

    /// The Dockerfile, relative to the context unless it exists as given
    #[arg(
        short = 'f',
        long,
        env = "EXECUTOR_DOCKERFILE",
        default_value = "Dockerfile"
    )]
    pub dockerfile: PathBuf,

    /// Git context options: `branch=NAME`, `single-branch=true|false`,
    /// `recurse-submodules=true|false` (comma separated or repeated)
    #[arg(
        long,
        env = "EXECUTOR_GIT",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    pub git: Vec<String>,

    /// A build argument, KEY=VALUE; a bare KEY takes its value from the
    /// environment (repeatable)
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]", value_parser = super::dockerfile::build_arg)]
    pub args: Vec<String>,

    /// The stage to build; the last one when absent
    #[arg(long, env = "EXECUTOR_TARGET")]
    pub target: Option<String>,

    /// Build only the stages the target needs (always on: stages the target
    /// does not need are never built)
    #[arg(long, action = bool_flag!(), num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    pub skip_unused_stages: bool,

    /// A label for the image, KEY=VALUE (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,

    /// An image reference to push to (repeatable)
    #[arg(
        short = 'd',
        long = "destination",
        env = "EXECUTOR_DESTINATION",
        value_delimiter = ','
    )]
    pub destinations: Vec<String>,

    /// Build without pushing
    #[arg(long, env = "EXECUTOR_NO_PUSH", action = bool_flag!(), num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub no_push: bool,

    /// Also write the image as a docker-archive tarball (`docker load`)
    #[arg(long, env = "EXECUTOR_TAR_PATH", value_name = "PATH")]
    pub tar_path: Option<PathBuf>,

    /// Also write the image as an OCI image layout directory
    #[arg(long, env = "EXECUTOR_OCI_LAYOUT_PATH", value_name = "PATH")]
    pub oci_layout_path: Option<PathBuf>,

    /// Write the image's manifest digest to this file
    #[arg(long, env = "EXECUTOR_DIGEST_FILE", value_name = "PATH")]
    pub digest_file: Option<PathBuf>,

    /// Write `REPO@DIGEST` for each destination to this file
    #[arg(
        long,
        env = "EXECUTOR_IMAGE_NAME_WITH_DIGEST_FILE",
        value_name = "PATH"
    )]
    pub image_name_with_digest_file: Option<PathBuf>,

    /// Write `REPO:TAG@DIGEST` for each destination to this file
    #[arg(
        long,
        env = "EXECUTOR_IMAGE_NAME_TAG_WITH_DIGEST_FILE",
        value_name = "PATH"
    )]
    pub image_name_tag_with_digest_file: Option<PathBuf>,

    /// Write the build's summary as JSON to this file: each step's time,
    /// steps executed and cached, blob bytes downloaded and uploaded
    #[arg(long, env = "EXECUTOR_METRICS_FILE", value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    /// The most a RUN cache mount (`--mount=type=cache`) may hold: one
    /// larger when a step takes it is emptied first (bytes, or with K, M,
    /// G, T)
    #[arg(long, env = "EXECUTOR_CACHE_MOUNT_MAX_SIZE", value_name = "SIZE", value_parser = executor::image::store::prune::parse_size)]
    pub cache_mount_max_size: Option<u64>,

    #[command(flatten)]
    pub pull: PullArgs,

    /// Use the layer cache: every step is looked up (by a key of its inputs)
    /// before it runs, and its result stored after
    #[arg(long, env = "EXECUTOR_CACHE", action = bool_flag!(), num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub cache: bool,

    /// Where cache entries are kept: a repository (`REGISTRY/REPO`), or an
    /// OCI image layout directory (`oci:PATH`); default: the first
    /// destination's repository followed by `/cache`
    #[arg(long, env = "EXECUTOR_CACHE_REPO", value_name = "REPO|oci:PATH")]
    pub cache_repo: Option<String>,

    /// Cache entries older than this are misses (Go syntax: `336h`, `90m`)
    #[arg(
        long,
        env = "EXECUTOR_CACHE_TTL",
        default_value = "336h",
        value_name = "DURATION"
    )]
    pub cache_ttl: String,

    /// Cache COPY and ADD steps too (default true: a fully cached build
    /// then executes nothing; kaniko's default is false)
    #[arg(long, env = "EXECUTOR_CACHE_COPY_LAYERS", action = bool_flag!(), num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    pub cache_copy_layers: bool,

    /// Cache RUN steps
    #[arg(long, env = "EXECUTOR_CACHE_RUN_LAYERS", action = bool_flag!(), num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    pub cache_run_layers: bool,

    /// Look up cache entries but never write any
    #[arg(long, env = "EXECUTOR_NO_PUSH_CACHE", action = bool_flag!(), num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub no_push_cache: bool,

    /// Layer compression
    #[arg(long, env = "EXECUTOR_COMPRESSION", default_value = "gzip")]
    pub compression: Compression,

    /// Compression level (gzip 1-9, zstd 1-22)
    #[arg(long, env = "EXECUTOR_COMPRESSION_LEVEL")]
    pub compression_level: Option<i32>,

    /// Threads compressing each layer (0: one per core); digests do not
    /// depend on it
    #[arg(long, env = "EXECUTOR_COMPRESSION_THREADS", default_value_t = 0)]
    pub compression_threads: usize,

    #[command(flatten)]
    pub push_args: PushArgs,

    /// A secret RUN steps may mount: `id=ID,src=PATH` or `id=ID,env=VAR`
    /// (repeatable)
    #[arg(long = "secret", value_name = "id=ID,src=PATH|env=VAR")]
    pub secrets: Vec<String>,

    /// An SSH agent RUN steps may mount: `default` (SSH_AUTH_SOCK) or
    /// `ID=SOCKET` (repeatable)
    #[arg(long = "ssh", value_name = "default|ID[=SOCKET]")]
    pub ssh: Vec<String>,

    /// How RUN changes are found: `overlay` (the RUN's overlay upper
    /// directory is its diff) or `full` (copy and compare); kaniko's
    /// `redo` and `time` mean `overlay`
    #[arg(long, env = "EXECUTOR_SNAPSHOT_MODE", default_value = "overlay")]
    pub snapshot_mode: SnapshotModeArg,

    /// One layer for each stage's own changes instead of one per step
    #[arg(long, env = "EXECUTOR_SINGLE_SNAPSHOT", action = bool_flag!(), num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub single_snapshot: bool,

    /// An image path left out of the layers RUN writes (repeatable)
    #[arg(
        long = "ignore-path",
        env = "EXECUTOR_IGNORE_PATH",
        value_delimiter = ',',
        value_name = "PATH"
    )]
    pub ignore_paths: Vec<PathBuf>,

    /// Strip times from the image: config and history at SOURCE_DATE_EPOCH
    /// (0 when unset), file times clamped to it, so the same inputs give the
    /// same digest. `SOURCE_DATE_EPOCH` as a build arg or in the environment
    /// does the same.
    #[arg(long, env = "EXECUTOR_REPRODUCIBLE", action = bool_flag!(), num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub reproducible: bool,

    /// How RUN steps are isolated; `namespace`: fresh mount, PID, IPC and
    /// UTS namespaces and pivot_root; `in-place`: kaniko's model, directly
    /// in this container's own root file system (which each stage
    /// overwrites; refused outside a container unless --force); `auto`:
    /// namespaces where they can be made, else in place inside a container
    #[arg(long, env = "EXECUTOR_ISOLATION", default_value = "auto")]
    pub isolation: IsolationArg,

    /// With --isolation=in-place: build even where no container is seen,
    /// overwriting this machine's root file system (kaniko's --force)
    #[arg(long, env = "EXECUTOR_FORCE", action = bool_flag!(), num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub force: bool,

    #[command(flatten)]
    pub security: SecurityArgs,

    /// The whole build's settings as JSON (`executor::build::Settings`),
    /// instead of flags: how `executor run` hands a build job to the
    /// `executor build` it starts. Not for people: hidden from --help.
    #[arg(long, hide = true, value_name = "PATH")]
    pub settings_file: Option<PathBuf>,
}

/// The registry settings for pushes. Shared by `executor build` and
/// `executor run` (for its build jobs).
#[derive(Debug, Clone, Args, Default)]
pub struct PushArgs {
    /// Push to plain-HTTP registries. Pushes only, as kaniko's --insecure:
    /// pulls take --insecure-pull, and --insecure-registry HOST covers
    /// both for one registry
    #[arg(long, env = "EXECUTOR_INSECURE", action = bool_flag!(), num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub insecure: bool,

    /// Do not verify TLS certificates when pushing
    #[arg(long, env = "EXECUTOR_SKIP_TLS_VERIFY", action = bool_flag!(), num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub skip_tls_verify: bool,

    /// Retries of a failed push request (429, 5xx, dropped connection,
    /// timeout), with exponential backoff
    #[arg(long, env = "EXECUTOR_PUSH_RETRY", default_value_t = Backoff::default().retries)]
    pub push_retry: u32,
}

/// `--security-opt`, shared by `executor build` (RUN steps) and `executor
/// run` (script jobs and build jobs' RUN steps).
#[derive(Debug, Clone, Args, Default)]
pub struct SecurityArgs {
    /// The security of the commands RUN steps and script jobs run, as
    /// buildah's: `seccomp=unconfined` (no seccomp filter), `seccomp=PATH`
    /// (a Docker-format JSON profile instead of Docker's default one),
    /// `no-new-privileges` (setuid and file-capability programs gain
    /// nothing; off by default, as in Docker)
    #[arg(
        long = "security-opt",
        env = "EXECUTOR_SECURITY_OPT",
        value_delimiter = ',',
        value_name = "OPTION"
    )]
    pub security_opts: Vec<String>,
}

impl SecurityArgs {
    pub fn options(&self) -> anyhow::Result<SecurityOptions> {
        SecurityOptions::parse(&self.security_opts).map_err(anyhow::Error::msg)
    }
}

/// What fetching images takes: the store, the platform and the registry
/// settings for pulls. Shared by `executor build` and `executor cache warm`.
#[derive(Debug, Clone, Args, Default)]
pub struct PullArgs {
    /// The platform to build for, OS/ARCH[/VARIANT]; this machine's by
    /// default
    #[arg(
        long,
        env = "EXECUTOR_CUSTOM_PLATFORM",
        value_name = "OS/ARCH[/VARIANT]"
    )]
    pub custom_platform: Option<Platform>,

    /// Pull (base images, cache lookups) from plain-HTTP registries.
    /// Pulls only, as kaniko's --insecure-pull: pushes take --insecure
    #[arg(long, env = "EXECUTOR_INSECURE_PULL", action = bool_flag!(), num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub insecure_pull: bool,

    /// A registry to reach over plain HTTP, HOST[:PORT], for pushes and
    /// pulls (repeatable)
    #[arg(
        long,
        env = "EXECUTOR_INSECURE_REGISTRY",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub insecure_registry: Vec<String>,

    /// Do not verify TLS certificates when pulling
    #[arg(long, env = "EXECUTOR_SKIP_TLS_VERIFY_PULL", action = bool_flag!(), num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub skip_tls_verify_pull: bool,

    /// A registry whose TLS certificate is not verified (repeatable)
    #[arg(
        long,
        env = "EXECUTOR_SKIP_TLS_VERIFY_REGISTRY",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub skip_tls_verify_registry: Vec<String>,

    /// A CA certificate for a registry, HOST=PATH (repeatable)
    #[arg(
        long,
        env = "EXECUTOR_REGISTRY_CERTIFICATE",
        value_delimiter = ',',
        value_name = "HOST=PATH"
    )]
    pub registry_certificate: Vec<String>,

    /// A mirror for docker.io (repeatable; tried in order)
    #[arg(
        long,
        env = "EXECUTOR_REGISTRY_MIRROR",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub registry_mirror: Vec<String>,

    /// Retries of a failed base image request (429, 5xx, dropped
    /// connection, timeout), with exponential backoff
    #[arg(long, env = "EXECUTOR_IMAGE_DOWNLOAD_RETRY", default_value_t = Backoff::default().retries)]
    pub image_download_retry: u32,

    /// Seconds a registry request (pull, push, token, cache lookup) may go
    /// without an answer or a byte moving before it fails and is retried;
    /// a long transfer that keeps moving never times out. Connecting gets
    /// at most 30 s of it
    #[arg(long, env = "EXECUTOR_REGISTRY_TIMEOUT", value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub registry_timeout: u64,

    /// The local image store (an OCI layout); pulled base images are reused
    /// across builds
    #[arg(long, env = "EXECUTOR_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum SnapshotModeArg {
    #[default]
    Overlay,
    Full,
    /// kaniko's name: the same as overlay.
    Redo,
    /// kaniko's name: the same as overlay.
    Time,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum IsolationArg {
    #[default]
    Auto,
    Namespace,
    InPlace,
}

impl From<IsolationArg> for IsolationMode {
    fn from(arg: IsolationArg) -> Self {
        match arg {
            IsolationArg::Auto => Self::Auto,
            IsolationArg::Namespace => Self::Namespace,
            IsolationArg::InPlace => Self::InPlace,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
}

/// The default store: `$XDG_CACHE_HOME/executor`, else `~/.cache/executor`.
pub(super) fn default_cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("executor"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("cannot find the cache directory: HOME is not set\nhint: pass --cache-dir")?;
    Ok(PathBuf::from(home).join(".cache/executor"))
}

/// `HOST=PATH` pairs.
pub(super) fn pairs(values: &[String], flag: &str) -> anyhow::Result<Vec<(String, PathBuf)>> {
    values
        .iter()
        .map(|v| match v.split_once('=') {
            Some((host, path)) if !host.is_empty() && !path.is_empty() => {
                Ok((host.to_string(), PathBuf::from(path)))
            }
            _ => bail!("invalid {flag} {v:?}: expected HOST=PATH"),
        })
        .collect()
}

impl BuildArgs {
    /// Resolves the flags into settings: defaults filled in, pairs parsed,
    /// contradictions rejected.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        if self.destinations.is_empty()
            && !self.no_push
            && self.tar_path.is_none()
            && self.oci_layout_path.is_none()
        {
            bail!(
                "no destination: give --destination to push, or --no-push, --tar-path or --oci-layout-path\nhint: executor build --context . --destination registry.example/app:tag"
            );
        }
        let mut labels = Vec::new();
        for label in &self.labels {
            let Some((k, v)) = label.split_once('=') else {
                bail!("invalid --label {label:?}: expected KEY=VALUE");
            };
            labels.push((k.to_string(), v.to_string()));
        }
        let build_args = super::dockerfile::build_args(&self.args);
        let cache_dir = match &self.pull.cache_dir {
            Some(dir) => dir.clone(),
            None => default_cache_dir()?,
        };
        let cache = self.cache_settings()?;
        Ok(Settings {
            cache,
            context: self.context.clone(),
            context_sub_path: self.context_sub_path.clone(),
            dockerfile: self.dockerfile.clone(),
            git: self.git.clone(),
            source_date_epoch: source_date_epoch(&build_args, self.reproducible)?,
            metrics_file: self.metrics_file.clone(),
            cache_mount_max_size: self.cache_mount_max_size,
            build_args,
            target: self.target.clone(),
            labels,
            destinations: self
                .destinations
                .iter()
                .map(|d| {
                    ImageReference::parse(d).with_context(|| format!("invalid --destination {d:?}"))
                })
                .collect::<anyhow::Result<_>>()?,
            push: !self.no_push,
            tar_path: self.tar_path.clone(),
            oci_layout_path: self.oci_layout_path.clone(),
            digest_file: self.digest_file.clone(),
            image_name_with_digest_file: self.image_name_with_digest_file.clone(),
            image_name_tag_with_digest_file: self.image_name_tag_with_digest_file.clone(),
            platform: self
                .pull
                .custom_platform
                .clone()
                .unwrap_or_else(Platform::host),
            zstd: self.compression == Compression::Zstd,
            compression_level: self.compression_level,
            compression_threads: self.compression_threads,
            insecure_push: self.push_args.insecure,
            insecure_pull: self.pull.insecure_pull,
            insecure_registries: self.pull.insecure_registry.clone(),
            skip_tls_verify_push: self.push_args.skip_tls_verify,
            skip_tls_verify_pull: self.pull.skip_tls_verify_pull,
            skip_tls_verify_registries: self.pull.skip_tls_verify_registry.clone(),
            registry_certificates: pairs(
                &self.pull.registry_certificate,
                "--registry-certificate",
            )?,
            registry_mirrors: self.pull.registry_mirror.clone(),
            push_retry: self.push_args.push_retry,
            image_download_retry: self.pull.image_download_retry,
            // 0 only from `PullArgs::default()` (clap refuses it).
            registry_timeout_secs: match self.pull.registry_timeout {
                0 => DEFAULT_TIMEOUT.as_secs(),
                secs => secs,
            },
            cache_dir,
            snapshot_mode: match self.snapshot_mode {
                SnapshotModeArg::Full => SnapshotMode::Full,
                SnapshotModeArg::Overlay | SnapshotModeArg::Redo | SnapshotModeArg::Time => {
                    SnapshotMode::Overlay
                }
            },
            single_snapshot: self.single_snapshot,
            isolation: self.isolation.into(),
            force: self.force,
            security: self.security.options()?,
            ignore_paths: self
                .ignore_paths
                .iter()
                .map(|p| {
                    if p.is_absolute() {
                        Ok(p.clone())
                    } else {
                        bail!(
                            "invalid --ignore-path {}: expected an absolute image path",
                            p.display()
                        )
                    }
                })
                .collect::<anyhow::Result<_>>()?,
            secrets: self
                .secrets
                .iter()
                .map(|s| Secret::parse(s).map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<_>>()?,
            ssh: self
                .ssh
                .iter()
                .map(|s| SshAgent::parse(s).map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<_>>()?,
        })
    }
}

/// The settings `executor run` wrote for one build job.
fn settings_file(path: &std::path::Path) -> anyhow::Result<Settings> {
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read the settings file {}", path.display()))?;
    serde_json::from_slice(&text)
        .with_context(|| format!("invalid settings file {}", path.display()))
}

impl BuildArgs {
    /// `--cache` and the flags that go with it.
    fn cache_settings(&self) -> anyhow::Result<Option<CacheSettings>> {
        if !self.cache {
            return Ok(None);
        }
        let ttl = parse_go_duration(&self.cache_ttl)
            .ok()
            .and_then(|nanos| u64::try_from(nanos).ok())
            .map(std::time::Duration::from_nanos)
            .with_context(|| {
                format!(
                    "invalid --cache-ttl {:?}: expected a positive duration such as 336h or 90m",
                    self.cache_ttl
                )
            })?;
        let repo = match &self.cache_repo {
            Some(repo) => Some(
                CacheRepo::parse(repo)
                    .map_err(|e| anyhow::anyhow!("invalid --cache-repo {repo:?}: {e}"))?,
            ),
            // kaniko's default: the first destination's repository + /cache.
            None => self
                .destinations
                .first()
                .map(|d| -> anyhow::Result<CacheRepo> {
                    let destination = ImageReference::parse(d)
                        .with_context(|| format!("invalid --destination {d:?}"))?;
                    Ok(CacheRepo::default_for(&destination))
                })
                .transpose()?,
        };
        Ok(Some(CacheSettings {
            repo,
            ttl,
            copy_layers: self.cache_copy_layers,
            run_layers: self.cache_run_layers,
            push: !self.no_push_cache,
        }))
    }
}

/// Before anything is built, as kaniko does: the credentials in use may
/// push to each destination's repository (once per repository). Not with
/// `--no-push`. The cache repository is not checked (kaniko does not
/// either): a cache entry that cannot be written is a warning, not a
/// failed build.
async fn check_push_access(settings: &Settings, remote: &Remote) -> anyhow::Result<()> {
    if !settings.push || settings.destinations.is_empty() {
        return Ok(());
    }
    let mut checked = Vec::new();
    for destination in &settings.destinations {
        if checked.contains(&destination.name()) {
            continue;
        }
        remote.client().check_push(destination).await?;
        checked.push(destination.name());
    }
    Ok(())
}

/// Runs `executor build`.
pub fn run(args: &BuildArgs) -> anyhow::Result<std::process::ExitCode> {
    let settings = match &args.settings_file {
        Some(path) => {
            // A pipeline's build job: it ends with the run that started it,
            // as SIGTERM would end it (`executor run` quitting at once on a
            // second Ctrl-C).
            if let Err(e) = rustix::process::set_parent_process_death_signal(Some(
                rustix::process::Signal::TERM,
            )) {
                tracing::debug!("no parent-death signal: {e}");
            }
            settings_file(path)?
        }
        None => args.settings()?,
    };
    // Without root: the build runs again as root of a user namespace of the
    // caller's subordinate ids, when it has some (this process waits).
    if let Some(status) = executor::sandbox::reexec_in_user_namespace()? {
        return Ok(status);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let remote = Arc::new(executor::build::engine::remote(&settings)?);
    runtime.block_on(check_push_access(&settings, &remote))?;
    // SIGINT and SIGTERM kill the running steps; the build then stops,
    // removes its scratch space and fails.
    let cancel = CancellationToken::new();
    let signals = runtime.spawn({
        let cancel = cancel.clone();
        async move {
            let Some(mut signals) = super::signals::StopSignals::new() else {
                return;
            };
            let name = signals.next().await;
            tracing::warn!("{name}: stopping the build");
            cancel.cancel();
        }
    });
    let outcome = executor::build::engine::build_on(&settings, remote, runtime.handle(), &cancel);
    signals.abort();
    let outcome = outcome?;
    let mut stdout = std::io::stdout().lock();
    if outcome.pushed.is_empty() {
        writeln!(stdout, "{}", outcome.digest)?;
    } else {
        for reference in &outcome.pushed {
            writeln!(stdout, "{reference}@{}", outcome.digest)?;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_settings_file_flag_is_hidden_and_reads_what_a_run_wrote() {
        let mut cli = super::super::Cli::command();
        let build = cli.find_subcommand_mut("build").unwrap();
        let help = build.render_long_help().to_string();
        assert!(help.contains("--context"), "{help}");
        assert!(!help.contains("settings-file"), "{help}");

        let dir = tempfile::tempdir().unwrap();
        let args = BuildArgs {
            context: "/ctx".into(),
            no_push: true,
            pull: PullArgs {
                cache_dir: Some(dir.path().join("store")),
                ..PullArgs::default()
            },
            cache_ttl: "336h".into(),
            ..BuildArgs::default()
        };
        let settings = args.settings().unwrap();
        let path = dir.path().join("settings.json");
        std::fs::write(&path, serde_json::to_vec(&settings).unwrap()).unwrap();
        assert_eq!(settings_file(&path).unwrap(), settings);

        std::fs::write(&path, "{\"context\": 1}").unwrap();
        let error = settings_file(&path).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("invalid settings file {}", path.display())
        );
    }

    #[test]
    fn registry_timeout_reaches_the_settings_and_zero_is_refused() {
        use clap::Parser as _;
        let parse = |args: &[&str]| {
            let mut argv = vec!["executor", "build", "--no-push", "--cache-dir", "/store"];
            argv.extend_from_slice(args);
            super::super::Cli::try_parse_from(argv)
        };
        let settings = |cli: super::super::Cli| match cli.command {
            Some(super::super::Command::Build(args)) => args.settings().unwrap(),
            _ => panic!("not a build"),
        };
        let default = settings(parse(&[]).unwrap());
        assert_eq!(default.registry_timeout_secs, 60);
        let five = settings(parse(&["--registry-timeout", "5"]).unwrap());
        assert_eq!(five.registry_timeout_secs, 5);
        let Err(error) = parse(&["--registry-timeout", "0"]) else {
            panic!("--registry-timeout 0 is refused");
        };
        assert!(error.to_string().contains("--registry-timeout"), "{error}");
        // A settings file written before the flag existed reads as 60 s.
        let mut json = serde_json::to_value(&five).unwrap();
        json.as_object_mut()
            .unwrap()
            .remove("registry_timeout_secs");
        let old: Settings = serde_json::from_value(json).unwrap();
        assert_eq!(old.registry_timeout_secs, 60);
    }
}
