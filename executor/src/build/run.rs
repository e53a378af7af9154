//! RUN: turns one expanded RUN instruction and its stage's state into a
//! sandbox [`Spec`](crate::sandbox::Spec): the command (shell form, exec
//! form, heredocs as BuildKit runs them), the environment, the user, and
//! every `--mount` (bind, cache, secret, tmpfs, ssh). It runs nothing
//! itself but through the isolation it is given, and never writes a layer:
//! the snapshotter ([`super::rootfs`]) does.
//!
//! Secret values reach the process only as a read-only file or an
//! environment variable of that one process; they are masked in the output
//! the log gets, and never enter the config, the history or a layer.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::config::ImageConfig;
use super::copy;
use crate::dockerfile::instructions::{Command, Mount, MountKind, NetworkMode, Run, SecurityMode};
use crate::sandbox::{self, Isolation, KillSwitch, Network, Spec, Stream};

/// Docker's PATH when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The hostname RUN steps see.
const HOSTNAME: &str = "executor";

/// Why a RUN could not be started, or failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{command} exited with status {code}{}", full_hint(full.as_deref()))]
    Exit {
        command: String,
        code: i32,
        /// The store's directory when its file system was found full after
        /// the step: the likely cause, said with the failure.
        full: Option<PathBuf>,
    },
    #[error("{command} was killed by signal {signal}")]
    Signal { command: String, signal: i32 },
    #[error(
        "--mount=type=secret,id={0}: no such secret\nhint: pass --secret id={0},src=PATH or --secret id={0},env=VARIABLE"
    )]
    MissingSecret(String),
    #[error(
        "--mount=type=ssh,id={0}: no such ssh agent\nhint: pass --ssh {0} (with SSH_AUTH_SOCK set) or --ssh {0}=SOCKET"
    )]
    MissingSsh(String),
    #[error("cannot read secret {id:?} from {}", path.display())]
    SecretFile {
        id: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("secret {id:?}: the environment variable {var} is not set")]
    SecretEnv { id: String, var: String },
    #[error("{0}")]
    Invalid(String),
    #[error("--mount=type=bind: cannot read {source_path:?} {from}")]
    BindSource {
        source_path: String,
        /// `of STAGE`, `of IMAGE` or `of the build context`.
        from: String,
        #[source]
        source: MountCause,
    },
    #[error("--mount=type=bind: cannot copy the source {source_path:?}")]
    BindCopy {
        source_path: String,
        #[source]
        source: crate::image::diff::DiffError,
    },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    User(#[from] sandbox::user::UserError),
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
}

type Result<T, E = RunError> = std::result::Result<T, E>;

/// Why the build could not give a bind mount its source.
pub type MountCause = Box<dyn std::error::Error + Send + Sync>;

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RunError + 'a {
    move |source| RunError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Where a `--secret` value comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// One `--secret`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Secret {
    pub id: String,
    pub source: SecretSource,
}

impl Secret {
    /// Parses `id=ID,src=PATH`, `id=ID,env=VAR` (also `source=`,
    /// `type=file|env`), or a bare `ID` (the variable of that name, else the
    /// file of that name), as BuildKit's `--secret`.
    pub fn parse(value: &str) -> std::result::Result<Self, String> {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        let mut kind = None;
        for field in value.split(',') {
            let (k, v) = field.split_once('=').unwrap_or((field, ""));
            match k.trim().to_ascii_lowercase().as_str() {
                "id" => id = Some(v.to_string()),
                "src" | "source" => src = Some(v.to_string()),
                "env" => env = Some(v.to_string()),
                "type" => kind = Some(v.to_string()),
                _ if !value.contains('=') => id = Some(value.to_string()),
                other => {
                    return Err(format!(
                        "invalid --secret {value:?}: unknown key {other:?} (expected id, src, env, type)"
                    ));
                }
            }
        }
        let id = id
            .filter(|i| !i.is_empty())
            .ok_or_else(|| format!("invalid --secret {value:?}: no id"))?;
        let source = match (kind.as_deref(), src, env) {
            (_, Some(_), Some(_)) => {
                return Err(format!(
                    "invalid --secret {value:?}: give src or env, not both"
                ));
            }
            (Some("env"), Some(var), None) | (_, None, Some(var)) => SecretSource::Env(var),
            (Some("file") | None, Some(path), None) => SecretSource::File(PathBuf::from(path)),
            (Some("env"), None, None) => SecretSource::Env(id.clone()),
            (Some("file"), None, None) => SecretSource::File(PathBuf::from(&id)),
            (None, None, None) => {
                if std::env::var_os(&id).is_some() {
                    SecretSource::Env(id.clone())
                } else {
                    SecretSource::File(PathBuf::from(&id))
                }
            }
            (Some(other), _, _) => {
                return Err(format!(
                    "invalid --secret {value:?}: unknown type {other:?} (expected file or env)"
                ));
            }
        };
        Ok(Self { id, source })
    }

    /// The value, read now.
    fn value(&self) -> Result<Vec<u8>> {
        match &self.source {
            SecretSource::File(path) => fs::read(path).map_err(|source| RunError::SecretFile {
                id: self.id.clone(),
                path: path.clone(),
                source,
            }),
            SecretSource::Env(var) => std::env::var_os(var)
                .map(std::os::unix::ffi::OsStringExt::into_vec)
                .ok_or_else(|| RunError::SecretEnv {
                    id: self.id.clone(),
                    var: var.clone(),
                }),
        }
    }
}

/// One `--ssh`: an agent socket by id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SshAgent {
    pub id: String,
    pub socket: PathBuf,
}

impl SshAgent {
    /// Parses `default`, `ID` (both take `SSH_AUTH_SOCK`) or `ID=SOCKET`.
    pub fn parse(value: &str) -> std::result::Result<Self, String> {
        let (id, socket) = if let Some((id, path)) = value.split_once('=') {
            (id, PathBuf::from(path.split(',').next().unwrap_or(path)))
        } else {
            let sock = std::env::var_os("SSH_AUTH_SOCK").ok_or_else(|| {
                format!("invalid --ssh {value:?}: SSH_AUTH_SOCK is not set\nhint: start an agent (eval $(ssh-agent)) or pass --ssh {value}=SOCKET")
            })?;
            (value, PathBuf::from(sock))
        };
        if id.is_empty() {
            return Err(format!("invalid --ssh {value:?}: no id"));
        }
        Ok(Self {
            id: id.to_string(),
            socket,
        })
    }
}

/// What a RUN needs of the build besides its instruction.
pub struct Step<'a> {
    pub run: &'a Run,
    /// The stage's config (ENV, USER, WORKDIR, SHELL) at this step.
    pub config: &'a ImageConfig,
    /// The ARGs in scope, with their values.
    pub args: &'a [(String, String)],
    /// The stage's root filesystem.
    pub root: &'a Path,
    /// A directory for this step's files, made on first use (see
    /// [`scratch`]); removed by the caller.
    pub scratch: &'a Path,
    /// What `--mount=type=bind` without `from` binds for a `source` path:
    /// the context as COPY sees it.
    pub context_source: &'a dyn Fn(&str) -> std::result::Result<PathBuf, MountCause>,
    /// The local store's directory (cache mounts live under it).
    pub store: &'a Path,
    /// A cache mount larger than this when the step takes it starts over.
    pub cache_mount_max_size: Option<u64>,
    pub secrets: &'a [Secret],
    pub ssh: &'a [SshAgent],
    /// The root filesystem of a stage or image named by a mount's `from`.
    pub from_root: &'a dyn Fn(&str) -> std::result::Result<PathBuf, MountCause>,
    /// The seccomp filter and no_new_privs the command gets.
    pub security: &'a sandbox::Security,
}

/// Runs the step through `isolation` (killed when `kill` is); returns the
/// mount-point stubs the sandbox made in the root.
pub fn execute(
    step: &Step<'_>,
    isolation: &dyn Isolation,
    kill: &KillSwitch,
) -> Result<Vec<PathBuf>> {
    if step.run.security == Some(SecurityMode::Insecure) {
        return Err(RunError::Invalid(
            "--security=insecure is not allowed: steps never run privileged".into(),
        ));
    }
    let mut mounts = Vec::new();
    let mut env = environment(step);
    let mut masks: Vec<Vec<u8>> = Vec::new();
    // Cache-mount locks, held until the step ends.
    let mut locks = Vec::new();
    // Where secrets are written, until the step ends.
    let _secrets = step
        .run
        .mounts
        .iter()
        .any(|m| m.kind == MountKind::Secret)
        .then(|| SecretDir::create(step.scratch))
        .transpose()?;
    let (args, shown) = command(step, &mut mounts)?;
    for (n, mount) in step.run.mounts.iter().enumerate() {
        prepare_mount(
            step,
            mount,
            n,
            &mut mounts,
            &mut env,
            &mut masks,
            &mut locks,
        )?;
    }
    let user_name = if step.config.config.user.is_empty() {
        "0"
    } else {
        step.config.config.user.as_str()
    };
    let user = sandbox::user::resolve(step.root, user_name)?;
    if !env.iter().any(|(k, _)| k == "HOME") {
        let home = sandbox::user::home(step.root, user.uid)?.unwrap_or_else(|| "/".into());
        env.push(("HOME".into(), home));
    }
    let cwd = match step.config.config.working_dir.as_str() {
        "" => "/".to_string(),
        dir => dir.to_string(),
    };
    let masks = Arc::new(masks);
    let pending = Arc::new(Mutex::new([Vec::new(), Vec::new()]));
    let output = {
        let masks = Arc::clone(&masks);
        let pending = Arc::clone(&pending);
        Arc::new(move |stream: Stream, chunk: &[u8]| {
            let index = usize::from(matches!(stream, Stream::Stderr));
            let mut pending = pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let buf = &mut pending[index];
            buf.extend_from_slice(chunk);
            while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                log_line(&line[..end], &masks);
            }
        })
    };
    let spec = Spec {
        root: step.root.to_path_buf(),
        args,
        env,
        cwd,
        user,
        hostname: HOSTNAME.to_string(),
        network: match step.run.network {
            Some(NetworkMode::None) => Network::None,
            _ => Network::Host,
        },
        extra_hosts: Vec::new(),
        mounts,
        output,
        security: step.security.clone(),
        // The command is pid 1, as Docker and BuildKit run a RUN step.
        init: false,
    };
    let outcome = isolation.run(&spec, kill);
    for buf in pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
    {
        if !buf.is_empty() {
            log_line(buf, &masks);
        }
    }
    drop(locks);
    let outcome = outcome?;
    match outcome.status {
        sandbox::Status::Exited(0) => Ok(outcome.stubs),
        sandbox::Status::Exited(code) => Err(RunError::Exit {
            command: shown,
            code,
            full: crate::image::store::is_full(step.store).then(|| step.store.to_path_buf()),
        }),
        sandbox::Status::Signaled(signal) => Err(RunError::Signal {
            command: shown,
            signal,
        }),
    }
}

/// The directory a step's secret files are written to, `secrets/` in its
/// scratch: a tmpfs where one can be mounted, so that their plain text
/// never reaches the disk, and (the process being in a mount namespace of
/// its own: see `main.rs`) vanishes with the process however it ends. Where
/// mounting is not allowed, a plain directory, which the next build removes
/// first if this one is killed (`workdir.rs`). Unmounted on drop.
struct SecretDir {
    mounted: Option<PathBuf>,
}

impl SecretDir {
    fn path(scratch: &Path) -> PathBuf {
        scratch.join("secrets")
    }

    fn create(scratch: &Path) -> Result<Self> {
        let dir = Self::path(scratch);
        fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("cannot set the mode of", &dir))?;
        let mounted = rustix::mount::mount(
            "tmpfs",
            &dir,
            "tmpfs",
            rustix::mount::MountFlags::NOSUID
                | rustix::mount::MountFlags::NODEV
                | rustix::mount::MountFlags::NOEXEC,
            c"mode=0700,size=16m",
        );
        match mounted {
            Ok(()) => Ok(Self { mounted: Some(dir) }),
            Err(err) => {
                tracing::debug!(path = %dir.display(), %err, "no tmpfs for secrets; writing them to the scratch directory");
                Ok(Self { mounted: None })
            }
        }
    }
}

impl Drop for SecretDir {
    fn drop(&mut self) {
        if let Some(dir) = self.mounted.take()
            && let Err(err) = rustix::mount::unmount(&dir, rustix::mount::UnmountFlags::DETACH)
        {
            tracing::warn!(path = %dir.display(), %err, "cannot unmount the secrets' tmpfs");
        }
    }
}

/// The step's scratch directory, made now if it is not yet.
fn scratch<'a>(step: &Step<'a>) -> Result<&'a Path> {
    fs::create_dir_all(step.scratch).map_err(io_err("cannot create", step.scratch))?;
    Ok(step.scratch)
}

/// The hint of a RUN failure whose store's file system is full.
fn full_hint(full: Option<&Path>) -> String {
    full.map_or_else(String::new, |path| {
        format!(
            "\nhint: the file system of the store {} is full (no space left on device): the step's files are written there; free space or pass another --cache-dir",
            path.display()
        )
    })
}

/// One line of a step's output, secrets masked, to the log.
fn log_line(line: &[u8], masks: &[Vec<u8>]) {
    let mut text = String::from_utf8_lossy(line).into_owned();
    for mask in masks {
        let mask = String::from_utf8_lossy(mask);
        if !mask.is_empty() {
            text = text.replace(mask.as_ref(), "****");
        }
    }
    tracing::info!(target: "executor::run", "{}", text.trim_end_matches('\r'));
}

/// The image's ENV, then the ARGs in scope that ENV does not set, with
/// Docker's PATH when none is set.
fn environment(step: &Step<'_>) -> Vec<(String, String)> {
    let mut env = step.config.env_pairs();
    for (k, v) in step.args {
        if !env.iter().any(|(key, _)| key == k) {
            env.push((k.clone(), v.clone()));
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    env
}

/// The argv and the command as the error shows it. Heredocs run as
/// BuildKit runs them: a sole heredoc starting with `#!` is a script
/// file executed directly, another sole heredoc is the shell's command,
/// and heredocs after a command are handed to the shell with it.
fn command(step: &Step<'_>, mounts: &mut Vec<sandbox::Mount>) -> Result<(Vec<String>, String)> {
    let run = step.run;
    let shell = step.config.shell();
    match &run.command {
        Command::Exec(args) => {
            if args.is_empty() {
                return Err(RunError::Invalid("the command is empty".into()));
            }
            let shown = serde_json::to_string(args).unwrap_or_else(|_| args.join(" "));
            Ok((args.clone(), shown))
        }
        Command::Shell(cmd) if run.heredocs.is_empty() => {
            let mut args = shell;
            args.push(cmd.clone());
            Ok((args, cmd.clone()))
        }
        Command::Shell(cmd) => {
            let body = |h: &crate::dockerfile::parser::Heredoc| {
                if h.chomp {
                    crate::dockerfile::parser::chomp_heredoc_content(&h.content)
                } else {
                    h.content.clone()
                }
            };
            let sole = run.heredocs.len() == 1 && is_sole_heredoc(cmd);
            if sole {
                let heredoc = &run.heredocs[0];
                let data: String = body(heredoc);
                if data.starts_with("#!") {
                    let file = scratch(step)?.join("heredoc");
                    fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o755)
                        .open(&file)
                        .and_then(|mut f| f.write_all(data.as_bytes()))
                        .map_err(io_err("cannot write the heredoc to", &file))?;
                    let target = format!("/dev/pipes/{}", heredoc.name);
                    mounts.push(sandbox::Mount {
                        target: target.clone(),
                        kind: sandbox::MountKind::Bind {
                            source: file,
                            read_only: true,
                        },
                    });
                    return Ok((vec![target], cmd.clone()));
                }
                let mut args = shell;
                args.push(data);
                return Ok((args, cmd.clone()));
            }
            let mut full = cmd.clone();
            for heredoc in &run.heredocs {
                full.push('\n');
                full.push_str(&heredoc.content);
                full.push_str(&heredoc.name);
            }
            let mut args = shell;
            args.push(full);
            Ok((args, cmd.clone()))
        }
    }
}

/// Whether the command is just one heredoc (`<<EOF`, `<<-"EOF"` ...).
fn is_sole_heredoc(cmd: &str) -> bool {
    let cmd = cmd.trim();
    let Some(rest) = cmd.strip_prefix("<<") else {
        return false;
    };
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let word = rest.trim_matches(|c| c == '"' || c == '\'');
    !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

/// An absolute target inside the root, `..` refused.
fn target_of(
    mount: &Mount,
    default: impl FnOnce() -> Option<String>,
    workdir: &str,
) -> Result<String> {
    let target = mount.target.clone().or_else(default).ok_or_else(|| {
        RunError::Invalid(format!("--mount=type={}: no target", mount.kind.as_str()))
    })?;
    let absolute = if target.starts_with('/') {
        target
    } else {
        format!("{}/{target}", workdir.trim_end_matches('/'))
    };
    if Path::new(&absolute)
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(RunError::Invalid(format!(
            "--mount target {absolute:?} must not hold \"..\""
        )));
    }
    Ok(absolute)
}

#[allow(clippy::too_many_lines, clippy::too_many_arguments)]
fn prepare_mount(
    step: &Step<'_>,
    mount: &Mount,
    n: usize,
    mounts: &mut Vec<sandbox::Mount>,
    env: &mut Vec<(String, String)>,
    masks: &mut Vec<Vec<u8>>,
    locks: &mut Vec<fs::File>,
) -> Result<()> {
    let workdir = match step.config.config.working_dir.as_str() {
        "" => "/",
        dir => dir,
    };
    match mount.kind {
        MountKind::Bind => {
            let target = target_of(mount, || None, workdir)?;
            let source_path = mount.source.as_deref().unwrap_or("/");
            let mut source = match &mount.from {
                Some(from) => {
                    let base = (step.from_root)(from).map_err(|source| RunError::BindSource {
                        source_path: source_path.to_owned(),
                        from: format!("of {from}"),
                        source,
                    })?;
                    copy::resolve_in_root(&base, source_path, true)
                }
                None => {
                    (step.context_source)(source_path).map_err(|source| RunError::BindSource {
                        source_path: source_path.to_owned(),
                        from: "of the build context".to_owned(),
                        source,
                    })?
                }
            };
            if fs::symlink_metadata(&source).is_err() {
                return Err(RunError::Invalid(format!(
                    "--mount=type=bind: source {source_path:?} does not exist{}",
                    mount
                        .from
                        .as_ref()
                        .map_or_else(|| " in the build context".into(), |f| format!(" in {f}"))
                )));
            }
            if !mount.read_only {
                // Writes are allowed and thrown away: the process writes to
                // a copy.
                let copy = scratch(step)?.join(format!("bind-{n}"));
                crate::image::diff::copy_tree(&source, &copy).map_err(|source| {
                    RunError::BindCopy {
                        source_path: source_path.to_owned(),
                        source,
                    }
                })?;
                source = copy;
            }
            mounts.push(sandbox::Mount {
                target,
                kind: sandbox::MountKind::Bind {
                    source,
                    read_only: mount.read_only,
                },
            });
        }
        MountKind::Cache => {
            if mount.from.is_some() {
                return Err(RunError::Invalid(
                    "--mount=type=cache,from=... is not supported: a cache mount starts empty"
                        .into(),
                ));
            }
            let target = target_of(mount, || None, workdir)?;
            let id = mount
                .id
                .clone()
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| target.clone());
            let dir = cache_dir(
                step.store,
                step.scratch,
                mount,
                &id,
                step.cache_mount_max_size,
                locks,
            )?;
            mounts.push(sandbox::Mount {
                target,
                kind: sandbox::MountKind::Bind {
                    source: dir,
                    read_only: mount.read_only,
                },
            });
        }
        MountKind::Tmpfs => {
            let target = target_of(mount, || None, workdir)?;
            mounts.push(sandbox::Mount {
                target,
                kind: sandbox::MountKind::Tmpfs {
                    size: mount.size.filter(|s| *s > 0),
                    mode: mount.mode,
                },
            });
        }
        MountKind::Secret => {
            let id = mount
                .id
                .clone()
                .filter(|i| !i.is_empty())
                .or_else(|| {
                    mount
                        .target
                        .as_deref()
                        .and_then(|t| Path::new(t).file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .ok_or_else(|| RunError::Invalid("--mount=type=secret: no id".into()))?;
            let Some(secret) = step.secrets.iter().rev().find(|s| s.id == id) else {
                if mount.required {
                    return Err(RunError::MissingSecret(id));
                }
                tracing::debug!("secret {id:?} not given; its mount is skipped");
                return Ok(());
            };
            let value = secret.value()?;
            let trimmed = String::from_utf8_lossy(&value).trim().as_bytes().to_vec();
            masks.push(value.clone());
            if !trimmed.is_empty() && trimmed != value {
                masks.push(trimmed);
            }
            if let Some(var) = &mount.env {
                let name = if var.is_empty() {
                    id.clone()
                } else {
                    var.clone()
                };
                env.push((name, String::from_utf8_lossy(&value).into_owned()));
                if mount.target.is_none() {
                    return Ok(());
                }
            }
            let target = target_of(mount, || Some(format!("/run/secrets/{id}")), workdir)?;
            let file = SecretDir::path(step.scratch).join(format!("secret-{n}"));
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .and_then(|mut f| f.write_all(&value))
                .map_err(io_err("cannot write the secret file", &file))?;
            fs::set_permissions(
                &file,
                fs::Permissions::from_mode(mount.mode.unwrap_or(0o400)),
            )
            .map_err(io_err("cannot set the mode of", &file))?;
            std::os::unix::fs::lchown(
                &file,
                Some(mount.uid.unwrap_or(0)),
                Some(mount.gid.unwrap_or(0)),
            )
            .map_err(io_err("cannot set the owner of", &file))?;
            mounts.push(sandbox::Mount {
                target,
                kind: sandbox::MountKind::Bind {
                    source: file,
                    read_only: true,
                },
            });
        }
        MountKind::Ssh => {
            let id = mount
                .id
                .clone()
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| "default".into());
            let Some(agent) = step.ssh.iter().rev().find(|a| a.id == id) else {
                if mount.required {
                    return Err(RunError::MissingSsh(id));
                }
                tracing::debug!("ssh agent {id:?} not given; its mount is skipped");
                return Ok(());
            };
            let target = target_of(
                mount,
                || Some(format!("/run/buildkit/ssh_agent.{n}")),
                workdir,
            )?;
            mounts.push(sandbox::Mount {
                target: target.clone(),
                kind: sandbox::MountKind::Bind {
                    source: agent.socket.clone(),
                    read_only: false,
                },
            });
            if !env.iter().any(|(k, _)| k == "SSH_AUTH_SOCK") {
                env.push(("SSH_AUTH_SOCK".into(), target));
            }
        }
    }
    Ok(())
}

/// The cache mount `id` in the store's directory `store`, created with the
/// mount's mode and owner the first time, and locked as `sharing` asks:
/// `shared` (the default) lets every step use it at once, `locked` waits
/// for the steps using it, `private` gets a fresh directory below `scratch`
/// when it is in use.
fn cache_dir(
    store: &Path,
    scratch: &Path,
    mount: &Mount,
    id: &str,
    max_size: Option<u64>,
    locks: &mut Vec<fs::File>,
) -> Result<PathBuf> {
    use crate::dockerfile::instructions::Sharing;
    use rustix::fs::{FlockOperation, flock};
    let key = crate::image::digest::sha256_bytes(id.as_bytes())
        .hex()
        .to_string();
    let base = store.join("cache-mounts");
    fs::create_dir_all(&base).map_err(io_err("cannot create", &base))?;
    let dir = base.join(&key);
    crate::image::store::prune::mark_used(&dir);
    let lock_path = base.join(format!("{key}.lock"));
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err("cannot open", &lock_path))?;
    if let Some(max) = max_size
        && dir.is_dir()
        // Only when no step uses it; the lock is then converted below.
        && flock(&lock, FlockOperation::NonBlockingLockExclusive).is_ok()
    {
        let size = crate::image::store::prune::tree_size(&dir);
        if size > max {
            tracing::warn!(
                "cache mount {id:?} holds {size} bytes, more than --cache-mount-max-size {max}: emptied"
            );
            let old = base.join(format!("{key}.old"));
            let _ = fs::remove_dir_all(&old);
            fs::rename(&dir, &old).map_err(io_err("cannot empty the cache mount", &dir))?;
            fs::remove_dir_all(&old).map_err(io_err("cannot remove", &old))?;
        }
    }
    let dir = match mount.sharing {
        Some(Sharing::Locked) => {
            flock(&lock, FlockOperation::LockExclusive)
                .map_err(|e| io_err("cannot lock", &lock_path)(e.into()))?;
            dir
        }
        Some(Sharing::Private) => {
            if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_ok() {
                dir
            } else {
                fs::create_dir_all(scratch).map_err(io_err("cannot create", scratch))?;
                scratch.join(format!("cache-{key}"))
            }
        }
        _ => {
            flock(&lock, FlockOperation::LockShared)
                .map_err(|e| io_err("cannot lock", &lock_path)(e.into()))?;
            dir
        }
    };
    locks.push(lock);
    if !dir.exists() {
        // Made under a temporary name of its own (two stages, or two
        // builds, may make it at once), so a half-made directory is never
        // used and no maker removes another's.
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{key}."))
            .suffix(".tmp")
            .tempdir_in(&base)
            .map_err(io_err("cannot create a directory in", &base))?;
        fs::set_permissions(
            tmp.path(),
            fs::Permissions::from_mode(mount.mode.unwrap_or(0o755)),
        )
        .map_err(io_err("cannot set the mode of", tmp.path()))?;
        std::os::unix::fs::chown(
            tmp.path(),
            Some(mount.uid.unwrap_or(0)),
            Some(mount.gid.unwrap_or(0)),
        )
        .map_err(io_err("cannot set the owner of", tmp.path()))?;
        // Whoever renames first made the cache; the other's copy is
        // removed when `tmp` drops.
        if fs::rename(tmp.path(), &dir).is_ok() {
            let _ = tmp.keep();
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse_like_buildkit() {
        assert_eq!(
            Secret::parse("id=npm,src=/tmp/npmrc").unwrap(),
            Secret {
                id: "npm".into(),
                source: SecretSource::File("/tmp/npmrc".into())
            }
        );
        assert_eq!(
            Secret::parse("id=tok,env=TOKEN").unwrap().source,
            SecretSource::Env("TOKEN".into())
        );
        assert_eq!(
            Secret::parse("id=tok,type=env").unwrap().source,
            SecretSource::Env("tok".into())
        );
        assert!(Secret::parse("src=/x").unwrap_err().contains("no id"));
        assert!(Secret::parse("id=a,src=/x,env=Y").is_err());
        assert!(
            Secret::parse("id=a,colour=red")
                .unwrap_err()
                .contains("colour")
        );
    }

    #[test]
    fn ssh_agents_parse() {
        let agent = SshAgent::parse("deploy=/run/agent.sock").unwrap();
        assert_eq!(agent.id, "deploy");
        assert_eq!(agent.socket, PathBuf::from("/run/agent.sock"));
        assert!(SshAgent::parse("=/x").is_err());
    }

    /// Two stages first using one cache id at once both get the one
    /// directory, made once, with the mount's mode; neither removes the
    /// other's half-made copy.
    #[test]
    fn two_threads_making_one_cache_mount_both_get_it() {
        let mount = Mount {
            kind: MountKind::Cache,
            target: Some("/cache".into()),
            source: None,
            from: None,
            read_only: false,
            id: None,
            sharing: None,
            mode: Some(0o750),
            uid: None,
            gid: None,
            required: false,
            env: None,
            size: None,
        };
        for round in 0..100 {
            let store = tempfile::tempdir().unwrap();
            let scratch = tempfile::tempdir().unwrap();
            let start = std::sync::Barrier::new(2);
            let dirs: Vec<PathBuf> = std::thread::scope(|scope| {
                let makers: Vec<_> = (0..2)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut locks = Vec::new();
                            start.wait();
                            cache_dir(
                                store.path(),
                                scratch.path(),
                                &mount,
                                "shared",
                                None,
                                &mut locks,
                            )
                        })
                    })
                    .collect();
                makers
                    .into_iter()
                    .map(|m| {
                        m.join()
                            .unwrap()
                            .unwrap_or_else(|e| panic!("round {round}: {e}"))
                    })
                    .collect()
            });
            assert_eq!(dirs[0], dirs[1], "round {round}");
            let meta = fs::metadata(&dirs[0]).unwrap();
            assert!(meta.is_dir(), "round {round}");
            assert_eq!(meta.permissions().mode() & 0o7777, 0o750, "round {round}");
            let left: Vec<_> = fs::read_dir(store.path().join("cache-mounts"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| Path::new(name).extension().is_some_and(|e| e == "tmp"))
                .collect();
            assert!(left.is_empty(), "round {round}: leftovers {left:?}");
        }
    }

    /// `--cache-mount-max-size`: a cache mount over the limit when a step
    /// takes it starts over empty; one within it, or in use, is kept.
    #[test]
    fn a_cache_mount_over_its_limit_starts_over() {
        let mount = Mount {
            kind: MountKind::Cache,
            target: Some("/cache".into()),
            source: None,
            from: None,
            read_only: false,
            id: None,
            sharing: None,
            mode: Some(0o755),
            uid: None,
            gid: None,
            required: false,
            env: None,
            size: None,
        };
        let store = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let take = |max: Option<u64>| {
            let mut locks = Vec::new();
            let dir =
                cache_dir(store.path(), scratch.path(), &mount, "c", max, &mut locks).unwrap();
            (dir, locks)
        };
        let (dir, locks) = take(None);
        fs::write(dir.join("big"), vec![0u8; 4096]).unwrap();
        drop(locks);
        let (dir, locks) = take(Some(8192));
        assert!(dir.join("big").is_file(), "within the limit: kept");
        drop(locks);
        // In use by another step: not emptied now.
        let (_, in_use) = take(None);
        let (dir, locks) = take(Some(1024));
        assert!(dir.join("big").is_file(), "in use: kept");
        drop((locks, in_use));
        let (dir, _locks) = take(Some(1024));
        assert!(dir.is_dir());
        assert!(!dir.join("big").exists(), "over the limit: emptied");
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o7777,
            0o755
        );
    }

    #[test]
    fn sole_heredocs_are_recognised() {
        assert!(is_sole_heredoc("<<EOF"));
        assert!(is_sole_heredoc("<<-\"EOT\""));
        assert!(!is_sole_heredoc("python3 <<EOF"));
        assert!(!is_sole_heredoc("<<EOF cat"));
    }
}
