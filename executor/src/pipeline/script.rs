//! A script job: `before_script` and `script`, then `after_script`, run in
//! the job's image through the sandbox, as GitLab CI's Docker executor
//! runs them.
//!
//! - The image is a reference fetched into the local store through the
//!   registry (layers already there are not downloaded again), or an image
//!   already in the store by manifest digest (what a build job left
//!   there). Its root filesystem is the build's: an overlay of its
//!   extracted layers (a full copy where overlay cannot be mounted), and
//!   whatever the job writes there is thrown away with it.
//! - The checkout is bind-mounted read-write at the job's project directory
//!   (`CI_PROJECT_DIR`), which is the working directory of every script,
//!   as in GitLab (the image's `WORKDIR` is not used). The image's `ENV`
//!   comes first in the environment, then the job's variables, then its
//!   secrets (a later name wins); `PATH` and `HOME` default as for RUN. The
//!   image's `USER` runs the scripts.
//! - `before_script` and `script` are one `/bin/sh` script with `set -e`
//!   (and `pipefail` where the shell has it), stderr joined to stdout, each
//!   command echoed first as `$ command`: it stops at the first command
//!   that fails, whose status is the job's. `after_script` then runs in a
//!   shell of its own in the same root filesystem, whatever `script` did,
//!   but not after a timeout (as in GitLab); its failure does not fail the
//!   job, and it has a timeout of its own.
//! - A timeout kills the job's whole process tree (the sandbox's PID
//!   namespace, through a [`KillSwitch`]), and so does cancelling the job's
//!   [`CancellationToken`] (Ctrl-C, a cancelled run): this job's sandbox
//!   only, never another's.
//!
//! Output goes to the caller's callback chunk by chunk (whole lines where
//! possible), unmasked: the caller's [`JobLog`](super::logs::JobLog) masks
//! secrets.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use oci_spec::image::ImageManifest;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::vars::Variables;
use crate::image::digest::Digest;
use crate::image::store::{Store, StoreError};
use crate::platform::Platform;
use crate::registry::ImageReference;
use crate::rootfs::config::{DEFAULT_PATH, ImageConfig};
use crate::rootfs::images::{ImageError, ImageSource, LayerRef};
use crate::rootfs::remote::Remote;
use crate::rootfs::{RootError, SnapshotMode, StageRoot};
use crate::sandbox::{self, KillSwitch, Mount, MountKind, Network, Spec, Status};

/// Where the generated scripts are mounted in the job's root filesystem.
const SCRIPTS_DIR: &str = "/.executor/scripts";

/// The shell scripts run with.
const SHELL: &str = "/bin/sh";

/// The hostname jobs see.
const HOSTNAME: &str = "executor";

/// GitLab Runner's default `after_script` timeout.
pub const DEFAULT_AFTER_SCRIPT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("invalid image reference {image:?}")]
    Reference {
        image: String,
        #[source]
        source: crate::registry::ReferenceError,
    },
    #[error("cannot get the image {image}")]
    Fetch {
        image: String,
        #[source]
        source: Box<ImageError>,
    },
    #[error(
        "image {image} is not in the local store\nhint: the build job that makes it must run first, with the same --cache-dir"
    )]
    NotStored { image: String },
    #[error("image {image} in the local store is not usable: {what} is not valid JSON of its kind")]
    StoredJson {
        image: String,
        /// The manifest, or the config `sha256:...`.
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("image {image} in the local store is not usable: {reason}")]
    Stored {
        image: String,
        reason: String,
        #[source]
        source: Option<Box<StoreError>>,
    },
    #[error("cannot make the root filesystem of image {image}")]
    Root {
        image: String,
        #[source]
        source: Box<RootError>,
    },
    #[error("the job's project directory {project_dir:?} must be an absolute path without \"..\"")]
    ProjectDir { project_dir: String },
    #[error("the checkout {} is not a directory", path.display())]
    Checkout {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot prepare the job's scratch directory {}", path.display())]
    Scratch {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image {image}: user {user:?}")]
    User {
        image: String,
        user: String,
        #[source]
        source: sandbox::UserError,
    },
    #[error(
        "image {image} has no {SHELL}\nhint: script jobs need an image with a POSIX shell at {SHELL} (busybox, alpine, debian...)"
    )]
    NoShell { image: String },
    #[error("cannot run the job's {part} in image {image}")]
    Sandbox {
        image: String,
        part: &'static str,
        #[source]
        source: sandbox::SandboxError,
    },
}

type Result<T, E = ScriptError> = std::result::Result<T, E>;

/// The image a script job runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobImage {
    /// A reference (`alpine:3.20`, `registry:5000/app@sha256:...`), fetched
    /// into the local store for the job's platform.
    Reference(String),
    /// An image manifest already in the local store, by digest (a build
    /// job's image, pushed or not).
    Stored(Digest),
}

impl std::fmt::Display for JobImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Reference(reference) => f.write_str(reference),
            Self::Stored(digest) => write!(f, "{digest} (local store)"),
        }
    }
}

/// What a script job runs, and where.
#[derive(Debug, Clone)]
pub struct ScriptJob {
    pub image: JobImage,
    /// The platform of the image to fetch for a reference.
    pub platform: Platform,
    pub before_script: Vec<String>,
    pub script: Vec<String>,
    pub after_script: Vec<String>,
    /// The job's variables, expanded, predefined ones included (see
    /// [`super::vars`]); a later name wins.
    pub variables: Variables,
    /// Secrets, by variable name, put in the environment too; the caller
    /// masks their values in the output it logs.
    pub secrets: Variables,
    /// The checkout on this machine, mounted read-write at `project_dir`.
    pub checkout: PathBuf,
    /// `CI_PROJECT_DIR`: where the job sees the checkout, absolute
    /// (GitLab's default is `/builds/NAME`: [`super::vars::default_project_dir`]).
    pub project_dir: String,
    /// The time `before_script` and `script` together may take.
    pub timeout: Option<Duration>,
    /// The time `after_script` may take.
    pub after_script_timeout: Duration,
    pub network: Network,
    /// Cancelled: the job's processes are killed (or never started).
    pub cancel: CancellationToken,
    /// The seccomp filter and no_new_privs of the job's commands.
    pub security: sandbox::Security,
}

impl ScriptJob {
    /// A job running `script` in `image` with the checkout at
    /// `project_dir`, with no variables, no timeout and the defaults for
    /// the rest.
    #[must_use]
    pub fn new(image: JobImage, script: Vec<String>, checkout: PathBuf, project_dir: &str) -> Self {
        Self {
            image,
            platform: Platform::host(),
            before_script: Vec::new(),
            script,
            after_script: Vec::new(),
            variables: Vec::new(),
            secrets: Vec::new(),
            checkout,
            project_dir: project_dir.to_owned(),
            timeout: None,
            after_script_timeout: DEFAULT_AFTER_SCRIPT_TIMEOUT,
            network: Network::Host,
            cancel: CancellationToken::new(),
            security: sandbox::Security::default(),
        }
    }
}

/// How one of the job's scripts ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptStatus {
    /// Every command succeeded.
    Succeeded,
    /// A command failed, or the shell was killed (Ctrl-C), with this status.
    Failed(Status),
    /// The timeout came first; everything the script started was killed.
    TimedOut(Duration),
}

impl std::fmt::Display for ScriptStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Succeeded => f.write_str("succeeded"),
            Self::Failed(status) => write!(f, "failed: {status}"),
            Self::TimedOut(limit) => write!(f, "timed out after {}", humantime(*limit)),
        }
    }
}

/// How a script job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobOutcome {
    /// `before_script` and `script`: the job's result.
    pub script: ScriptStatus,
    /// `after_script`, when it ran (it has commands and the job did not
    /// time out); it does not change the job's result.
    pub after_script: Option<ScriptStatus>,
}

impl JobOutcome {
    /// Whether the job succeeded.
    #[must_use]
    pub fn success(&self) -> bool {
        self.script == ScriptStatus::Succeeded
    }
}

/// Runs `job`: its image fetched through `remote` (registry calls on
/// `runtime`) into `store`, its root filesystem made, its scripts run with
/// their output passed to `output`. Blocking; call it off async threads
/// (`spawn_blocking`), with the handle of a multi-thread runtime (a
/// current-thread runtime's handle cannot drive its I/O from here). A failing command is an [`Ok`] outcome; an error
/// means the job could not be run at all.
pub fn run_script(
    job: &ScriptJob,
    store: &Store,
    remote: &Remote,
    runtime: &Handle,
    output: &dyn Fn(&[u8]),
) -> Result<JobOutcome> {
    let image = job.image.to_string();
    let _span = tracing::info_span!("script job", %image).entered();
    check_project_dir(&job.project_dir)?;
    let checkout = job
        .checkout
        .canonicalize()
        .and_then(|path| {
            if path.is_dir() {
                Ok(path)
            } else {
                Err(io::Error::from(io::ErrorKind::NotADirectory))
            }
        })
        .map_err(|source| ScriptError::Checkout {
            path: job.checkout.clone(),
            source,
        })?;
    let source = resolve_image(job, store, remote, runtime)?;
    let tmp = store.root().join("tmp");
    let scratch = tempfile::Builder::new()
        .prefix("job-")
        .tempdir_in(&tmp)
        .map_err(|source| ScriptError::Scratch { path: tmp, source })?;
    let privileged = rustix::process::geteuid().is_root();
    let mode = if privileged && sandbox::overlay::supported(scratch.path()) {
        SnapshotMode::Overlay
    } else {
        SnapshotMode::Full
    };
    let root = StageRoot::new(
        mode,
        store,
        scratch.path().join("root"),
        &source.layers,
        privileged,
    )
    // The job's processes see the merged tree.
    .and_then(|mut root| root.mount().map(|()| root))
    .map_err(|source| ScriptError::Root {
        image: image.clone(),
        source: Box::new(source),
    })?;
    let scripts = scratch.path().join("scripts");
    let scratch_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScriptError::Scratch { path, source }
    };
    fs::create_dir(&scripts).map_err(scratch_error(&scripts))?;
    let main = scripts.join("script.sh");
    let commands: Vec<&String> = job.before_script.iter().chain(&job.script).collect();
    write_script(&main, &commands).map_err(scratch_error(&main))?;
    let after = scripts.join("after_script.sh");
    let after_commands: Vec<&String> = job.after_script.iter().collect();
    write_script(&after, &after_commands).map_err(scratch_error(&after))?;

    let config = &source.config;
    let user_name = match config.config.user.as_str() {
        "" => "0",
        user => user,
    };
    let user =
        sandbox::user::resolve(root.path(), user_name).map_err(|source| ScriptError::User {
            image: image.clone(),
            user: user_name.to_owned(),
            source,
        })?;
    let env =
        environment(job, config, root.path(), user.uid).map_err(|source| ScriptError::User {
            image: image.clone(),
            user: user_name.to_owned(),
            source,
        })?;
    let mounts = vec![
        Mount {
            target: job.project_dir.clone(),
            kind: MountKind::Bind {
                source: checkout,
                read_only: false,
            },
        },
        Mount {
            target: SCRIPTS_DIR.to_owned(),
            kind: MountKind::Bind {
                source: scripts,
                read_only: true,
            },
        },
    ];
    let spec = |script: &str| Spec {
        root: root.path().to_path_buf(),
        args: vec![SHELL.to_owned(), format!("{SCRIPTS_DIR}/{script}")],
        env: env.clone(),
        cwd: job.project_dir.clone(),
        user: user.clone(),
        hostname: HOSTNAME.to_owned(),
        network: job.network,
        extra_hosts: Vec::new(),
        mounts: mounts.clone(),
        output: Arc::new(|_, _| {}),
        security: job.security.clone(),
        // A script's long-lived processes are reaped and get SIGTERM.
        init: true,
    };
    let sandbox_error = |part: &'static str| {
        let image = image.clone();
        move |source| match source {
            sandbox::SandboxError::NotFound { .. } => ScriptError::NoShell { image },
            source => ScriptError::Sandbox {
                image,
                part,
                source,
            },
        }
    };
    let script = run_killable(spec("script.sh"), job.timeout, &job.cancel, output)
        .map_err(sandbox_error("script"))?;
    let after_script = if job.after_script.is_empty()
        || matches!(script, ScriptStatus::TimedOut(_))
        || job.cancel.is_cancelled()
    {
        None
    } else {
        output(b"Running after_script\n");
        Some(
            run_killable(
                spec("after_script.sh"),
                Some(job.after_script_timeout),
                &job.cancel,
                output,
            )
            .map_err(sandbox_error("after_script"))?,
        )
    };
    drop(root);
    if let Err(e) = scratch.close() {
        tracing::warn!("cannot remove the job's scratch directory: {e}");
    }
    Ok(JobOutcome {
        script,
        after_script,
    })
}

fn check_project_dir(dir: &str) -> Result<()> {
    let path = Path::new(dir);
    let valid = path.is_absolute()
        && path != Path::new("/")
        && !path
            .components()
            .any(|c| c == std::path::Component::ParentDir);
    if valid {
        Ok(())
    } else {
        Err(ScriptError::ProjectDir {
            project_dir: dir.to_owned(),
        })
    }
}

/// The image's config and layers, in the store.
fn resolve_image(
    job: &ScriptJob,
    store: &Store,
    remote: &Remote,
    runtime: &Handle,
) -> Result<ImageSource> {
    match &job.image {
        JobImage::Reference(image) => {
            let reference =
                ImageReference::parse(image).map_err(|source| ScriptError::Reference {
                    image: image.clone(),
                    source,
                })?;
            runtime
                .block_on(remote.fetch(&reference, &job.platform, store))
                .map_err(|source| ScriptError::Fetch {
                    image: image.clone(),
                    source: Box::new(source),
                })
        }
        JobImage::Stored(digest) => stored_image(store, digest),
    }
}

/// An image manifest in the store, with its config and layers.
fn stored_image(store: &Store, digest: &Digest) -> Result<ImageSource> {
    let image = digest.to_string();
    if !store.has_blob(digest) {
        return Err(ScriptError::NotStored { image });
    }
    let unusable = |reason: String, source: Option<StoreError>| ScriptError::Stored {
        image: image.clone(),
        reason,
        source: source.map(Box::new),
    };
    let manifest = store
        .read_blob(digest)
        .map_err(|e| unusable("cannot read the manifest".into(), Some(e)))?;
    let manifest: ImageManifest =
        serde_json::from_slice(&manifest).map_err(|source| ScriptError::StoredJson {
            image: image.clone(),
            what: "the manifest".into(),
            source,
        })?;
    let config_digest = Digest::try_from(manifest.config().digest())
        .map_err(|_| unusable("the config digest is not valid".into(), None))?;
    let config = store
        .read_blob(&config_digest)
        .map_err(|e| unusable(format!("cannot read the config {config_digest}"), Some(e)))?;
    let config = ImageConfig::from_json(&config).map_err(|source| ScriptError::StoredJson {
        image: image.clone(),
        what: format!("the config {config_digest}"),
        source,
    })?;
    if config.rootfs.diff_ids.len() != manifest.layers().len() {
        return Err(unusable(
            format!(
                "the manifest lists {} layers but the config {} diff IDs",
                manifest.layers().len(),
                config.rootfs.diff_ids.len()
            ),
            None,
        ));
    }
    let layers = manifest
        .layers()
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(descriptor, diff_id)| LayerRef {
            descriptor: descriptor.clone(),
            diff_id: diff_id.clone(),
            source: None,
        })
        .collect();
    Ok(ImageSource {
        config,
        layers,
        digest: digest.to_string(),
    })
}

/// The image's ENV, then the job's variables and secrets (later names
/// win, in the place the name first had), `PATH` and `HOME` defaulted.
fn environment(
    job: &ScriptJob,
    config: &ImageConfig,
    root: &Path,
    uid: u32,
) -> std::result::Result<Vec<(String, String)>, sandbox::UserError> {
    let mut env: Vec<(String, String)> = Vec::new();
    for (key, value) in config
        .env_pairs()
        .into_iter()
        .chain(job.variables.iter().cloned())
        .chain(job.secrets.iter().cloned())
    {
        match env.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => env.push((key, value)),
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        let home = sandbox::user::home(root, uid)?.unwrap_or_else(|| "/".into());
        env.push(("HOME".into(), home));
    }
    Ok(env)
}

/// The shell script for `commands`: `set -e` (and `pipefail` where the
/// shell has it), stderr to stdout, each command echoed as `$ command`
/// before it runs (a command of several lines as its first line and
/// `# collapsed multi-line command`, as GitLab shows it).
#[must_use]
pub fn shell_script(commands: &[&String]) -> String {
    let mut script = String::from(
        "set -e\nif (set -o pipefail) 2>/dev/null; then set -o pipefail; fi\nexec 2>&1\n",
    );
    for command in commands {
        let mut lines = command.trim_end_matches('\n').lines();
        let first = lines.next().unwrap_or_default();
        let shown = if lines.next().is_some() {
            format!("$ {first} # collapsed multi-line command")
        } else {
            format!("$ {first}")
        };
        script.push_str("printf '%s\\n' ");
        script.push_str(&single_quoted(&shown));
        script.push('\n');
        script.push_str(command);
        if !command.ends_with('\n') {
            script.push('\n');
        }
    }
    script
}

fn single_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn write_script(path: &Path, commands: &[&String]) -> io::Result<()> {
    fs::write(path, shell_script(commands))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
}

/// How often a running sandbox looks at its cancellation token.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// Runs `spec` in the sandbox on a thread of its own, passing its output
/// to `output` on this thread, and kills it when `timeout` passes or
/// `cancel` is cancelled (a sandbox cancelled before it starts is killed as
/// it starts).
fn run_killable(
    mut spec: Spec,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
    output: &dyn Fn(&[u8]),
) -> std::result::Result<ScriptStatus, sandbox::SandboxError> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let tx = Mutex::new(tx);
    spec.output = Arc::new(move |_, chunk| {
        let _ = tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(chunk.to_vec());
    });
    let switch = KillSwitch::new();
    if cancel.is_cancelled() {
        switch.kill();
    }
    let deadline = timeout.map(|limit| Instant::now() + limit);
    let mut timed_out = false;
    let outcome = std::thread::scope(|scope| {
        let switch = &switch;
        // The spec (and with it the channel's sender) is dropped when the
        // sandbox ends, which ends the loop below.
        let running = scope.spawn(move || sandbox::run_killable(&spec, switch));
        loop {
            let received = if switch.killed() {
                rx.recv().ok()
            } else {
                let left = deadline.map_or(CANCEL_POLL, |deadline| {
                    deadline
                        .saturating_duration_since(Instant::now())
                        .min(CANCEL_POLL)
                });
                match rx.recv_timeout(left) {
                    Ok(chunk) => Some(chunk),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if cancel.is_cancelled() {
                            tracing::info!("canceled: killing the job");
                            switch.kill();
                        } else if deadline.is_some_and(|d| Instant::now() >= d) {
                            tracing::info!("timeout: killing the job");
                            timed_out = true;
                            switch.kill();
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                }
            };
            match received {
                Some(chunk) => output(&chunk),
                None => break,
            }
        }
        running.join()
    });
    let outcome = match outcome {
        Ok(outcome) => outcome?,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    Ok(match (outcome.status, timeout) {
        (_, Some(limit)) if timed_out => ScriptStatus::TimedOut(limit),
        (Status::Exited(0), _) => ScriptStatus::Succeeded,
        (status, _) => ScriptStatus::Failed(status),
    })
}

/// `1h2m3s`, `45s`, `1.5s`: a duration as a person reads it.
fn humantime(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs == 0 || duration.subsec_millis() != 0 && secs < 60 {
        return format!("{:.1}s", duration.as_secs_f64());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (value, unit) in [(h, 'h'), (m, 'm'), (s, 's')] {
        if value > 0 || (unit == 's' && out.is_empty()) {
            out.push_str(&value.to_string());
            out.push(unit);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::process::Command;

    use oci_spec::image::{Descriptor, MediaType};

    use super::*;
    use crate::image::layer::{self, Compression, WriteOptions};
    use crate::registry::RegistryOptions;

    /// A store holding a busybox image (one layer: `/bin/busybox` and its
    /// applets, `/etc/passwd` with root and `alice`, `/tmp`) with `env` and
    /// `user` in its config; the store's temp dir and the manifest digest.
    fn busybox_store(env: &[&str], user: &str) -> (tempfile::TempDir, Store, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        for sub in ["bin", "etc", "tmp", "root", "home/alice"] {
            fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        let applets = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&applets.stdout).lines() {
            if !applet.is_empty() && applet != "busybox" {
                symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
            }
        }
        fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        fs::write(rootfs.join("etc/group"), "root:x:0:\nalice:x:1000:\n").unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let mut writer = store.blob_writer().unwrap();
        let info = layer::write_layer(
            layer::layer_from_dir(&rootfs).unwrap(),
            Compression::Gzip,
            None,
            1,
            &mut writer,
            &WriteOptions::default(),
        )
        .unwrap();
        writer.commit(Some(&info.digest)).unwrap();
        let mut config = ImageConfig::scratch(&Platform::host());
        config.config.env = env.iter().map(|e| (*e).to_owned()).collect();
        config.config.user = user.to_owned();
        config.rootfs.diff_ids = vec![info.diff_id.to_string()];
        let config = config.to_json().unwrap();
        let config_digest = store.put_bytes(&config).unwrap();
        let config_descriptor = Descriptor::new(
            MediaType::ImageConfig,
            config.len() as u64,
            oci_spec::image::Digest::from(&config_digest),
        );
        let manifest =
            crate::rootfs::images::manifest_json(&config_descriptor, &[info.descriptor()]);
        let digest = store.put_bytes(&manifest).unwrap();
        (dir, store, digest)
    }

    struct Ran {
        outcome: Result<JobOutcome>,
        output: String,
    }

    fn run(job: &ScriptJob, store: &Store) -> Ran {
        // The sandbox tests' kill_all would kill this job's sandbox too.
        let _shared = crate::sandbox::tests::shared();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let remote = Remote::from_options(RegistryOptions::default()).unwrap();
        let output = std::cell::RefCell::new(Vec::new());
        let outcome = run_script(job, store, &remote, runtime.handle(), &|chunk| {
            output.borrow_mut().extend_from_slice(chunk);
        });
        Ran {
            outcome,
            output: String::from_utf8(output.into_inner()).unwrap(),
        }
    }

    fn job(digest: &Digest, checkout: &Path, script: &[&str]) -> ScriptJob {
        ScriptJob::new(
            JobImage::Stored(digest.clone()),
            script.iter().map(|s| (*s).to_owned()).collect(),
            checkout.to_path_buf(),
            "/builds/app",
        )
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_script_runs_in_the_image_with_the_checkout_and_the_variables() {
        let (_dir, store, digest) = busybox_store(
            &["PATH=/usr/bin:/bin", "FROM_IMAGE=image", "BOTH=image"],
            "",
        );
        let checkout = tempfile::tempdir().unwrap();
        fs::write(checkout.path().join("README"), "hello from the checkout\n").unwrap();
        let mut job = job(
            &digest,
            checkout.path(),
            &[
                "pwd",
                "cat README",
                "echo \"$FROM_IMAGE $BOTH $CI_JOB_NAME $TOKEN\" >&2",
                "echo written > out.txt",
                "id -u; echo $HOME",
                "touch /image-file",
            ],
        );
        job.before_script = strings(&["echo before"]);
        job.variables = vec![
            ("CI_JOB_NAME".into(), "unit".into()),
            ("BOTH".into(), "job".into()),
        ];
        job.secrets = vec![("TOKEN".into(), "s3cr3t".into())];
        let ran = run(&job, &store);
        let outcome = ran.outcome.unwrap();
        assert_eq!(outcome.script, ScriptStatus::Succeeded, "{}", ran.output);
        assert!(outcome.success());
        assert_eq!(outcome.after_script, None);
        assert_eq!(
            ran.output,
            "$ echo before\nbefore\n$ pwd\n/builds/app\n$ cat README\nhello from the checkout\n\
             $ echo \"$FROM_IMAGE $BOTH $CI_JOB_NAME $TOKEN\" >&2\nimage job unit s3cr3t\n\
             $ echo written > out.txt\n$ id -u; echo $HOME\n0\n/root\n$ touch /image-file\n"
        );
        // The checkout is the job's to write; the image's files are not kept.
        assert_eq!(
            fs::read_to_string(checkout.path().join("out.txt")).unwrap(),
            "written\n"
        );
        let again = run(
            &job_with(&digest, checkout.path(), "test ! -e /image-file"),
            &store,
        );
        assert_eq!(again.outcome.unwrap().script, ScriptStatus::Succeeded);
        // Nothing is left in the store's scratch space.
        let left: Vec<_> = fs::read_dir(store.root().join("tmp"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|name| name.to_string_lossy().starts_with("job-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    fn job_with(digest: &Digest, checkout: &Path, command: &str) -> ScriptJob {
        job(digest, checkout, &[command])
    }

    #[test]
    fn the_first_failure_stops_the_script_and_after_script_still_runs() {
        let (_dir, store, digest) = busybox_store(&[], "");
        let checkout = tempfile::tempdir().unwrap();
        let mut job = job(
            &digest,
            checkout.path(),
            &["echo first", "touch left-by-script; exit 3", "echo never"],
        );
        job.after_script = strings(&[
            "echo cleaning up",
            "test -e left-by-script && echo sees the files of the script",
            "false",
            "echo never after",
        ]);
        let ran = run(&job, &store);
        let outcome = ran.outcome.unwrap();
        assert_eq!(outcome.script, ScriptStatus::Failed(Status::Exited(3)));
        assert!(!outcome.success());
        assert_eq!(
            outcome.after_script,
            Some(ScriptStatus::Failed(Status::Exited(1)))
        );
        assert_eq!(
            ran.output,
            "$ echo first\nfirst\n$ touch left-by-script; exit 3\nRunning after_script\n\
             $ echo cleaning up\ncleaning up\n\
             $ test -e left-by-script && echo sees the files of the script\nsees the files of the script\n\
             $ false\n"
        );
    }

    #[test]
    fn a_timeout_kills_every_process_of_the_job() {
        let (_dir, store, digest) = busybox_store(&[], "");
        let checkout = tempfile::tempdir().unwrap();
        // Durations no other process on the machine sleeps for (another run
        // of this test included), so the check below sees only this job's.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let first = 1_000_000 + u64::from(std::process::id()) * 1000 + u64::from(nanos % 500) * 2;
        let markers = [first.to_string(), (first + 1).to_string()];
        let script = format!(
            "(sleep {} &) ; sleep {} & echo started",
            markers[0], markers[1]
        );
        let mut job = job(&digest, checkout.path(), &[script.as_str(), "wait"]);
        job.after_script = strings(&["echo after"]);
        job.timeout = Some(Duration::from_millis(1500));
        let ran = run(&job, &store);
        let outcome = ran.outcome.unwrap();
        assert_eq!(
            outcome.script,
            ScriptStatus::TimedOut(Duration::from_millis(1500))
        );
        assert_eq!(outcome.script.to_string(), "timed out after 1.5s");
        // GitLab does not run after_script after a timeout.
        assert_eq!(outcome.after_script, None);
        assert!(ran.output.contains("started\n"), "{}", ran.output);
        for marker in &markers {
            assert!(
                processes_with(&format!("sleep\0{marker}\0")).is_empty(),
                "sleep {marker} is still running"
            );
        }
    }

    /// The pids of processes whose command line is exactly `cmdline`.
    fn processes_with(cmdline: &str) -> Vec<String> {
        fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .filter(|e| fs::read(e.path().join("cmdline")).is_ok_and(|c| c == cmdline.as_bytes()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_images_user_runs_the_script() {
        let (_dir, store, digest) = busybox_store(&[], "alice");
        let checkout = tempfile::tempdir().unwrap();
        let ran = run(
            &job_with(&digest, checkout.path(), "id -u; echo $HOME"),
            &store,
        );
        assert_eq!(ran.outcome.unwrap().script, ScriptStatus::Succeeded);
        assert_eq!(ran.output, "$ id -u; echo $HOME\n1000\n/home/alice\n");
    }

    #[test]
    fn jobs_that_cannot_start_say_why() {
        let (_dir, store, _) = busybox_store(&[], "");
        let checkout = tempfile::tempdir().unwrap();
        let missing = Digest::of(crate::image::digest::Algorithm::Sha256, b"missing");
        let err = run(&job_with(&missing, checkout.path(), "true"), &store)
            .outcome
            .unwrap_err();
        assert!(matches!(err, ScriptError::NotStored { .. }), "{err}");
        assert!(err.to_string().contains(&missing.to_string()), "{err}");
        let mut bad = job_with(&missing, checkout.path(), "true");
        bad.image = JobImage::Reference("Not A Reference".into());
        let err = run(&bad, &store).outcome.unwrap_err();
        assert!(err.to_string().contains("Not A Reference"), "{err}");
        bad.project_dir = "relative".into();
        let err = run(&bad, &store).outcome.unwrap_err();
        assert!(matches!(err, ScriptError::ProjectDir { .. }), "{err}");
    }

    #[test]
    fn scripts_echo_each_command_and_stop_at_the_first_failure() {
        let commands = [
            "echo one".to_owned(),
            "echo 'it''s'".to_owned(),
            "if true; then\n  echo multi\nfi\n".to_owned(),
        ];
        let refs: Vec<&String> = commands.iter().collect();
        assert_eq!(
            shell_script(&refs),
            "set -e\nif (set -o pipefail) 2>/dev/null; then set -o pipefail; fi\nexec 2>&1\n\
             printf '%s\\n' '$ echo one'\necho one\n\
             printf '%s\\n' '$ echo '\\''it'\\'''\\''s'\\'''\necho 'it''s'\n\
             printf '%s\\n' '$ if true; then # collapsed multi-line command'\nif true; then\n  echo multi\nfi\n"
        );
    }

    #[test]
    fn project_dirs_must_be_absolute() {
        assert!(check_project_dir("/builds/app").is_ok());
        for bad in ["builds/app", "/", "/builds/../etc", ""] {
            assert!(check_project_dir(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(humantime(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(humantime(Duration::from_secs(45)), "45s");
        assert_eq!(humantime(Duration::from_millis(1500)), "1.5s");
        assert_eq!(humantime(Duration::from_secs(120)), "2m");
    }
}
