//! `--isolation=in-place` (kaniko's model): the command runs directly in
//! the executor's own root filesystem, for a container that may create no
//! namespace and mount nothing. A plain fork, then a process group of its
//! own, the standard descriptors, the working directory (made when
//! missing), `setgroups`/`setgid`/`setuid` to the image's user, and
//! `execve` through `PATH` — no namespace, no mount, no `pivot_root`. The
//! command keeps the container's capabilities (Docker's default set in a
//! default pod); a non-root user loses them at `setuid` as usual.
//!
//! Mounts cannot be made, so a [`Spec`]'s mounts are emulated in the root
//! and undone after the step, whatever its outcome: a read-write bind (a
//! cache mount, a bind's throw-away copy) is renamed in and back out
//! (copied both ways across file systems), a read-only bind (a secret file,
//! a heredoc script, the context) is copied in and removed after, a socket
//! (an ssh agent) is a symlink to it, a tmpfs is an empty directory removed
//! after. What was at a target is moved aside and put back, missing parents
//! are made and removed, and their parent gets its times back when the
//! step did not change it: the [`Outcome`]'s `stubs` list those paths,
//! which the snapshot compares without their change time. The network,
//! hostname and `/etc` files are the container's.
//!
//! A killed step's process group is killed: a daemon that made a session of
//! its own outlives it, as it would outlive a kaniko build.

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use super::{
    Isolation, KillSwitch, MountKind, Outcome, Result, SandboxError, SharedRoot, Spec, Status,
    Unavailable, child, kill_pid, live, mounts, pipe, pump_and_wait, reported, step_name,
};

/// Runs steps in the executor's own root, `/`. The build adds its own
/// protected paths (context, store, `--ignore-path`s...) to
/// [`protected_paths`].
#[derive(Debug, Clone, Copy, Default)]
pub struct InPlace;

/// The paths an in-place build leaves alone whatever it builds: the
/// executor's files (`/kaniko`, the debug image's `/busybox`, the running
/// binary's directory), the
/// kernel's and the runtime's (`/proc`, `/sys`, `/dev`, `/etc/hosts`,
/// `/etc/resolv.conf`, `/etc/hostname`), mounted secrets and
/// service-account tokens (`/var/run/secrets`, `/run/secrets`), and the
/// registry credentials, CA certificates and temporary directory the
/// executor still needs (`DOCKER_CONFIG`, `SSL_CERT_FILE`, `SSL_CERT_DIR`,
/// `TMPDIR` when set; `/tmp` itself is the image's).
#[must_use]
pub fn protected_paths() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = [
        "/kaniko",
        // The debug image's busybox, as kaniko's.
        "/busybox",
        "/proc",
        "/sys",
        "/dev",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/etc/hostname",
        "/var/run/secrets",
        "/run/secrets",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .filter(|dir| dir != Path::new("/"))
    {
        paths.push(dir);
    }
    for var in ["DOCKER_CONFIG", "SSL_CERT_FILE", "SSL_CERT_DIR", "TMPDIR"] {
        if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            paths.push(PathBuf::from(value));
        }
    }
    paths
}

impl Isolation for InPlace {
    fn run(&self, spec: &Spec, kill: &KillSwitch) -> Result<Outcome> {
        run(spec, kill)
    }

    /// Always: in place needs nothing of the kernel (whether it may run
    /// here at all is the caller's decision, see [`super::container`]).
    fn available(&self) -> std::result::Result<(), Unavailable> {
        Ok(())
    }

    fn shared_root(&self) -> Option<SharedRoot> {
        Some(SharedRoot {
            root: PathBuf::from("/"),
            protected: protected_paths(),
        })
    }
}

fn prepare_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Prepare { what, source }
}

fn c_string(what: &str, value: impl Into<Vec<u8>>) -> Result<CString> {
    CString::new(value).map_err(|_| SandboxError::Invalid {
        what: format!("{what} holds a NUL byte"),
    })
}

fn run(spec: &Spec, kill: &KillSwitch) -> Result<Outcome> {
    let command = spec.args.first().cloned().unwrap_or_default();
    let _span = tracing::debug_span!("in-place", command = %command).entered();
    let root = spec
        .root
        .canonicalize()
        .map_err(prepare_err(format!("root {}", spec.root.display())))?;
    if root != Path::new("/") {
        return Err(SandboxError::Invalid {
            what: format!(
                "an in-place step runs in / only, not in {}",
                spec.root.display()
            ),
        });
    }
    if command.is_empty() {
        return Err(SandboxError::Invalid {
            what: "empty command".into(),
        });
    }
    if !spec.cwd.starts_with('/') {
        return Err(SandboxError::Invalid {
            what: format!("working directory {:?} is not absolute", spec.cwd),
        });
    }
    if spec.network == super::Network::None {
        tracing::warn!(
            "--network=none cannot be honoured in place: the step uses the container's network"
        );
    }
    make_cwd(&spec.cwd, &spec.user)?;
    let mut staged = Staged::default();
    let result = staged
        .stage(spec)
        .and_then(|()| execute(spec, kill, &command));
    let touched = staged.undo();
    let status = result?;
    Ok(Outcome {
        status,
        stubs: touched?,
    })
}

/// The working directory and its missing parents, owned by the user.
fn make_cwd(cwd: &str, user: &super::User) -> Result<()> {
    let mut missing = Vec::new();
    for dir in Path::new(cwd).ancestors() {
        if fs::symlink_metadata(dir).is_ok() {
            break;
        }
        missing.push(dir.to_path_buf());
    }
    for dir in missing.iter().rev() {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(dir)
            .map_err(prepare_err(format!("working directory {}", dir.display())))?;
        std::os::unix::fs::lchown(dir, Some(user.uid), Some(user.gid))
            .map_err(prepare_err(format!("owner of {}", dir.display())))?;
    }
    Ok(())
}

/// Forks and execs the command, pumps its output, waits for it.
fn execute(spec: &Spec, kill: &KillSwitch, command: &str) -> Result<Status> {
    let candidates = mounts::candidates(command, &spec.env)
        .into_iter()
        .map(|c| c_string("the command's path", c))
        .collect::<Result<Vec<_>>>()?;
    let argv = spec
        .args
        .iter()
        .map(|a| c_string("an argument", a.as_str()))
        .collect::<Result<Vec<_>>>()?;
    let env = spec
        .env
        .iter()
        .map(|(k, v)| c_string("an environment variable", format!("{k}={v}")))
        .collect::<Result<Vec<_>>>()?;
    let mut plan = child::Plan::new(
        Vec::new(),
        None,
        &spec.user,
        c_string("the working directory", spec.cwd.as_str())?,
        candidates,
        argv,
        env,
    );
    plan.keep_capabilities = true;
    plan.seccomp = super::seccomp::for_in_place(&spec.security)?;
    let stdin = File::open("/dev/null").map_err(prepare_err("/dev/null"))?;
    let (out_read, out_write) = pipe("stdout")?;
    let (err_read, err_write) = pipe("stderr")?;
    let (report_read, report_write) = pipe("report")?;
    let fds = child::Fds {
        stdin: stdin.as_raw_fd(),
        stdout: out_write.as_raw_fd(),
        stderr: err_write.as_raw_fd(),
        report: report_write.as_raw_fd(),
        status: report_write.as_raw_fd(),
        parent_ends: [
            out_read.as_raw_fd(),
            err_read.as_raw_fd(),
            report_read.as_raw_fd(),
            report_read.as_raw_fd(),
        ],
        executor: None,
    };
    let pid = {
        let mut live = live();
        // SAFETY: the child runs only `child::direct`, which makes raw
        // system calls from the prepared plan and ends in execve or _exit.
        match unsafe { child::clone(0) } {
            Ok(0) => child::direct(&plan, &fds),
            Ok(pid) => {
                // Also here, so a kill right after the fork reaches the
                // group (setpgid fails harmlessly once the child did it or
                // exec'd).
                // SAFETY: setpgid on our own child.
                unsafe { libc::setpgid(pid, pid) };
                live.push(pid);
                *kill.pid.lock().unwrap_or_else(PoisonError::into_inner) = Some(pid);
                if kill.killed() {
                    kill_pid(pid);
                }
                pid
            }
            Err(errno) => {
                return Err(SandboxError::Start {
                    command: command.to_owned(),
                    source: io::Error::from_raw_os_error(errno),
                });
            }
        }
    };
    drop((stdin, out_write, err_write, report_write));
    let (report, waited) = pump_and_wait(pid, out_read, err_read, report_read, &*spec.output);
    let waited = waited?;
    if let Some(err) = reported(&report, command.to_owned(), |step| {
        step_name(&[], step, spec)
    }) {
        return Err(err);
    }
    let status = Status::from_wait(waited);
    tracing::debug!(%status, "in-place step finished");
    Ok(status)
}

/// One emulated mount, to undo.
#[derive(Debug)]
enum Undo {
    /// Move `target` back to `source` (a read-write bind renamed in).
    RenameBack { target: PathBuf, source: PathBuf },
    /// Copy `target` back over `source`, then remove it (a read-write bind
    /// copied in across file systems).
    CopyBack { target: PathBuf, source: PathBuf },
    /// Remove what was made at `target`.
    Remove { target: PathBuf },
    /// Put what was at `target` before back.
    Restore { stash: PathBuf, target: PathBuf },
    /// Remove a parent made for a target, when empty.
    RemoveDir { dir: PathBuf },
    /// Give `dir` its times back unless the step changed it (its times
    /// once everything was staged differ from those after the step).
    Times {
        dir: PathBuf,
        before: Box<fs::Metadata>,
        staged: Option<(i64, i64)>,
        stepped: Option<(i64, i64)>,
    },
}

/// The emulated mounts of a step, undone in reverse order.
#[derive(Debug, Default)]
struct Staged {
    undo: Vec<Undo>,
    /// Relative paths the emulation touched (the step's `stubs`).
    touched: Vec<PathBuf>,
}

fn relative(path: &Path) -> PathBuf {
    path.strip_prefix("/").unwrap_or(path).to_path_buf()
}

fn setup_err(what: String) -> impl FnOnce(io::Error) -> SandboxError {
    move |source| SandboxError::Setup { step: what, source }
}

impl Staged {
    fn stage(&mut self, spec: &Spec) -> Result<()> {
        for (n, mount) in spec.mounts.iter().enumerate() {
            let target = PathBuf::from(&mount.target);
            if target
                .components()
                .any(|c| c == std::path::Component::ParentDir)
                || !target.is_absolute()
            {
                return Err(SandboxError::Invalid {
                    what: format!(
                        "mount target {:?} is not a clean absolute path",
                        mount.target
                    ),
                });
            }
            let Some(parent) = target.parent().map(Path::to_path_buf) else {
                return Err(SandboxError::Invalid {
                    what: "a mount on / cannot be emulated in place".into(),
                });
            };
            self.parents(&parent)?;
            self.touched.push(relative(&target));
            if fs::symlink_metadata(&target).is_ok() {
                let stash = parent.join(format!(".executor-hidden-{}-{n}", std::process::id()));
                fs::rename(&target, &stash).map_err(setup_err(format!(
                    "moving {} aside for a mount",
                    target.display()
                )))?;
                self.undo.push(Undo::Restore {
                    stash,
                    target: target.clone(),
                });
            }
            self.place(&mount.kind, &target)?;
        }
        // The parents' times once everything is in place: a step that
        // changes a parent moves them.
        for undo in &mut self.undo {
            if let Undo::Times { dir, staged, .. } = undo {
                *staged = mtime(dir);
            }
        }
        Ok(())
    }

    /// Makes the missing parents of a target (recorded to be removed) and
    /// records the times of the first existing one.
    fn parents(&mut self, parent: &Path) -> Result<()> {
        let mut missing = Vec::new();
        let mut existing = None;
        for dir in parent.ancestors() {
            match fs::symlink_metadata(dir) {
                Ok(meta) => {
                    existing = Some((dir.to_path_buf(), meta));
                    break;
                }
                Err(_) => missing.push(dir.to_path_buf()),
            }
        }
        if let Some((dir, before)) = existing
            && !self
                .undo
                .iter()
                .any(|u| matches!(u, Undo::Times { dir: d, .. } if *d == dir))
        {
            self.touched.push(relative(&dir));
            self.undo.push(Undo::Times {
                dir,
                before: Box::new(before),
                staged: None,
                stepped: None,
            });
        }
        for dir in missing.iter().rev() {
            fs::create_dir(dir)
                .map_err(setup_err(format!("creating {} for a mount", dir.display())))?;
            self.touched.push(relative(dir));
            self.undo.push(Undo::RemoveDir { dir: dir.clone() });
        }
        Ok(())
    }

    fn place(&mut self, kind: &MountKind, target: &Path) -> Result<()> {
        let what = || format!("emulating the mount on {}", target.display());
        match kind {
            MountKind::Tmpfs { mode, .. } => {
                fs::DirBuilder::new()
                    .mode(mode.unwrap_or(0o1777))
                    .create(target)
                    .map_err(setup_err(what()))?;
                self.undo.push(Undo::Remove {
                    target: target.to_path_buf(),
                });
            }
            MountKind::Bind { source, read_only } => {
                let meta = fs::symlink_metadata(source).map_err(setup_err(format!(
                    "reading the mount source {}",
                    source.display()
                )))?;
                if meta.file_type().is_socket() {
                    std::os::unix::fs::symlink(source, target).map_err(setup_err(what()))?;
                    self.undo.push(Undo::Remove {
                        target: target.to_path_buf(),
                    });
                } else if *read_only {
                    copy(source, target).map_err(setup_err(what()))?;
                    self.undo.push(Undo::Remove {
                        target: target.to_path_buf(),
                    });
                } else {
                    match fs::rename(source, target) {
                        Ok(()) => self.undo.push(Undo::RenameBack {
                            target: target.to_path_buf(),
                            source: source.clone(),
                        }),
                        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                            copy(source, target).map_err(setup_err(what()))?;
                            self.undo.push(Undo::CopyBack {
                                target: target.to_path_buf(),
                                source: source.clone(),
                            });
                        }
                        Err(e) => return Err(setup_err(what())(e)),
                    }
                }
            }
        }
        Ok(())
    }

    /// Undoes everything, in reverse order; the first failure is returned
    /// after the rest was tried. Returns the touched paths.
    fn undo(mut self) -> Result<Vec<PathBuf>> {
        for undo in &mut self.undo {
            if let Undo::Times { dir, stepped, .. } = undo {
                *stepped = mtime(dir);
            }
        }
        let mut first = None;
        for undo in self.undo.into_iter().rev() {
            if let Err(e) = undo_one(undo) {
                tracing::warn!("cannot undo an emulated mount: {e}");
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(self.touched),
        }
    }
}

fn undo_one(undo: Undo) -> Result<()> {
    match undo {
        Undo::RenameBack { target, source } => fs::rename(&target, &source).map_err(setup_err(
            format!("moving {} back to {}", target.display(), source.display()),
        )),
        Undo::CopyBack { target, source } => {
            let step = format!("copying {} back to {}", target.display(), source.display());
            remove(&source)
                .and_then(|()| copy(&target, &source))
                .and_then(|()| remove(&target))
                .map_err(setup_err(step))
        }
        Undo::Remove { target } => {
            remove(&target).map_err(setup_err(format!("removing {}", target.display())))
        }
        Undo::Restore { stash, target } => remove(&target)
            .and_then(|()| fs::rename(&stash, &target))
            .map_err(setup_err(format!("putting {} back", target.display()))),
        Undo::RemoveDir { dir } => {
            // Not empty: the step wrote there through the parent, keep it.
            let _ = fs::remove_dir(&dir);
            Ok(())
        }
        Undo::Times {
            dir,
            before,
            staged,
            stepped,
        } => {
            let untouched = staged.is_some() && staged == stepped;
            if untouched {
                let times = rustix::fs::Timestamps {
                    last_access: rustix::fs::Timespec {
                        tv_sec: before.atime(),
                        tv_nsec: before.atime_nsec(),
                    },
                    last_modification: rustix::fs::Timespec {
                        tv_sec: before.mtime(),
                        tv_nsec: before.mtime_nsec(),
                    },
                };
                rustix::fs::utimensat(
                    rustix::fs::CWD,
                    dir.as_os_str().as_bytes(),
                    &times,
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| {
                    setup_err(format!("restoring the times of {}", dir.display()))(e.into())
                })?;
            }
            Ok(())
        }
    }
}

/// The modification time of `path`, when it can be read.
fn mtime(path: &Path) -> Option<(i64, i64)> {
    fs::symlink_metadata(path)
        .ok()
        .map(|meta| (meta.mtime(), meta.mtime_nsec()))
}

/// Removes a file or a tree; nothing there is fine.
fn remove(path: &Path) -> io::Result<()> {
    let removed = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// A copy of a tree ([`crate::image::diff::copy_tree`]) or of a file,
/// with its mode and owner.
fn copy(from: &Path, to: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    if meta.is_dir() {
        return crate::image::diff::copy_tree(from, to).map_err(io::Error::other);
    }
    fs::copy(from, to)?;
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    fs::set_permissions(to, meta.permissions())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::super::{Mount, Network, User};
    use super::*;

    fn spec(script: &str, cwd: &Path, mounts: Vec<Mount>) -> (Spec, Arc<Mutex<Vec<u8>>>) {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&out);
        let spec = Spec {
            root: PathBuf::from("/"),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: cwd.display().to_string(),
            user: User::default(),
            hostname: "ignored".into(),
            network: Network::Host,
            extra_hosts: Vec::new(),
            mounts,
            output: Arc::new(move |_, chunk: &[u8]| sink.lock().unwrap().extend_from_slice(chunk)),
            security: super::super::Security::default(),
            init: true,
        };
        (spec, out)
    }

    /// Every emulated mount is there while the step runs and gone after:
    /// what was at a target is back, a read-write bind's writes reach its
    /// source, made parents are removed and their parent has its times.
    #[test]
    fn emulated_mounts_are_in_place_during_the_step_and_undone_after() {
        let _shared = super::super::tests::shared();
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let work = base.join("work");
        fs::create_dir_all(work.join("hidden")).unwrap();
        fs::write(work.join("hidden/original"), "original").unwrap();
        let secret = base.join("secret");
        fs::write(&secret, "s3cr3t").unwrap();
        let cache = base.join("cache");
        fs::create_dir(&cache).unwrap();
        fs::write(cache.join("old"), "cached").unwrap();
        let parent_before = fs::metadata(&work).unwrap();
        let mounts = vec![
            Mount {
                target: work.join("hidden").display().to_string(),
                kind: MountKind::Bind {
                    source: cache.clone(),
                    read_only: false,
                },
            },
            Mount {
                target: work.join("run/secrets/token").display().to_string(),
                kind: MountKind::Bind {
                    source: secret.clone(),
                    read_only: true,
                },
            },
            Mount {
                target: work.join("scratch").display().to_string(),
                kind: MountKind::Tmpfs {
                    size: None,
                    mode: None,
                },
            },
        ];
        let (spec, out) = spec(
            "cat hidden/old run/secrets/token; echo new > hidden/new; touch scratch/x; ls hidden; pwd",
            &work,
            mounts,
        );
        let outcome = InPlace.run(&spec, &KillSwitch::new()).unwrap();
        assert_eq!(outcome.status, Status::Exited(0));
        let out = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert_eq!(out, format!("cacheds3cr3tnew\nold\n{}\n", work.display()));
        assert_eq!(fs::read_to_string(cache.join("new")).unwrap(), "new\n");
        assert_eq!(
            fs::read_to_string(work.join("hidden/original")).unwrap(),
            "original"
        );
        assert!(!work.join("run").exists());
        assert!(!work.join("scratch").exists());
        let mut left: Vec<_> = fs::read_dir(&work)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["hidden"]);
        let parent_after = fs::metadata(&work).unwrap();
        assert_eq!(parent_after.mtime(), parent_before.mtime());
        assert_eq!(parent_after.mtime_nsec(), parent_before.mtime_nsec());
        assert!(outcome.stubs.contains(&relative(&work)));
        assert!(outcome.stubs.contains(&relative(&work.join("hidden"))));
    }

    #[test]
    fn a_missing_command_and_a_failing_one_are_told_apart() {
        let _shared = super::super::tests::shared();
        let dir = tempfile::tempdir().unwrap();
        let (mut missing, _) = spec("", dir.path(), Vec::new());
        missing.args = vec!["no-such-command-here".into()];
        assert!(matches!(
            InPlace.run(&missing, &KillSwitch::new()),
            Err(SandboxError::NotFound { .. })
        ));
        let (failing, _) = spec("exit 3", dir.path(), Vec::new());
        assert_eq!(
            InPlace.run(&failing, &KillSwitch::new()).unwrap().status,
            Status::Exited(3)
        );
        let (elsewhere, _) = spec("true", dir.path(), Vec::new());
        let elsewhere = Spec {
            root: dir.path().to_path_buf(),
            ..elsewhere
        };
        assert!(matches!(
            InPlace.run(&elsewhere, &KillSwitch::new()),
            Err(SandboxError::Invalid { .. })
        ));
    }

    /// A kill reaches what the step started (its process group).
    #[test]
    fn a_kill_reaches_the_whole_process_group() {
        let _shared = super::super::tests::shared();
        let dir = tempfile::tempdir().unwrap();
        let (spec, _) = spec("sleep 600 & sleep 600; echo late", dir.path(), Vec::new());
        let kill = Arc::new(KillSwitch::new());
        let killer = {
            let kill = Arc::clone(&kill);
            std::thread::spawn(move || {
                while kill.pid.lock().unwrap().is_none() {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                kill.kill();
            })
        };
        let outcome = InPlace.run(&spec, &kill).unwrap();
        killer.join().unwrap();
        assert_eq!(outcome.status, Status::Signaled(libc::SIGKILL));
    }
}
