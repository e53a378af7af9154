//! Runs one process tree in a root filesystem, isolated by Linux
//! namespaces. Knows nothing of images or Dockerfiles: the caller gives a
//! root directory, a command, its environment and mounts.
//!
//! Process model: [`run`] prepares everything before forking (mount
//! targets resolved inside the root and missing ones created and reported
//! as stubs, unless below an earlier mount, the content of the
//! `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` files, every path
//! and argument as a C string), then `clone`s pid 1 of new mount, PID, IPC and UTS
//! namespaces (plus network for [`Network::None`], plus a user namespace
//! mapping the caller to root when not running as root). The executor is
//! multi-threaded, so the children only make raw system calls from that
//! prepared plan until `execve` (see `child.rs`); no re-exec is needed.
//! As root, pid 1's mount namespace is a copy of the template's (see
//! `template.rs`: an empty read-only tmpfs, made once per process), where
//! it attaches a clone of the root's mount (and of each bind source), does
//! the mounts below, moves the root over `/` and `chroot`s into it: there
//! is nothing to detach, and a detach waits for an RCU grace period.
//! Elsewhere (in a user namespace, where the kernel needs a `/proc` of the
//! namespace to mount another) it works from a copy of the executor's:
//! pid 1 makes the mounts private, binds the root onto itself, mounts
//! `/proc`, a read-only `/sys` (both masked as in runc's default spec:
//! `/proc/kcore`, `/proc/keys`, `/sys/firmware` ... hidden, `/proc/sys`,
//! `/proc/sysrq-trigger` ... read-only; paths the kernel lacks are
//! skipped), a tmpfs `/dev` with the host's null, zero, full, random,
//! urandom and tty bound in, devpts and `/dev/shm`, writes the `/etc`
//! files on that tmpfs and binds them (their names there unlinked), binds
//! the caller's mounts, then `pivot_root`s and detaches the old root. In
//! both, paths below the root are relative to it (pid 1 works there).
//! With [`Spec::init`] (a script job) it then starts the command (working
//! directory, Docker's default capabilities, identity, `execve` through
//! `PATH`) as `posix_spawn` does, with `CLONE_VM | CLONE_VFORK` (no copy
//! of the page tables of what is a copy of the executor), and stays as a
//! tiny init: it reaps every child, forwards SIGTERM, SIGINT, SIGHUP and
//! SIGQUIT to the command and exits when the command does, which kills
//! the rest of the namespace. Without (a RUN step, as Docker and BuildKit
//! run one) pid 1 becomes the command itself, and is itself started as
//! `posix_spawn` starts a child: no fork of the executor at all. Pid 1 has
//! `PR_SET_PDEATHSIG(SIGKILL)`, tied to the thread calling [`run`] (which
//! blocks until the end; should the executor die before the prctl, pid 1
//! sees it through a pidfd and exits), and [`kill_all`] SIGKILLs every
//! live pid 1; [`run_killable`] with a [`KillSwitch`] lets another thread
//! kill one sandbox (a job's timeout). Every mount lives in the sandbox's
//! mount namespace, so when [`run`] returns nothing is left in the
//! caller's.
//!
//! A command that cannot be found is an error ([`SandboxError::NotFound`],
//! `exec: "foo": executable file not found in $PATH`), not an exit status.
//!
//! Capabilities: the command's bounding, permitted and effective sets are
//! Docker's default list (CHOWN, DAC_OVERRIDE, FSETID, FOWNER, MKNOD,
//! NET_RAW, SETGID, SETUID, SETFCAP, SETPCAP, NET_BIND_SERVICE,
//! SYS_CHROOT, KILL, AUDIT_WRITE), the inheritable and ambient sets are
//! empty (as in Docker since CVE-2022-24769), and a non-root user starts
//! with none effective. no_new_privs is not set unless asked for, so setuid
//! programs work.
//! Pid 1 keeps the caller's capabilities, which also keeps the command
//! from ptracing it.
//!
//! Mount targets: one that lies below an earlier mount (`/proc`, `/sys`,
//! `/dev`, the `/etc` files or an earlier mount of the spec, as in a tmpfs
//! on `/run` then a bind on `/run/secrets/x`) is created by pid 1 inside
//! that mount once it is mounted, component by component without following
//! symlinks (a symlink there is a setup error), and is not a stub: it
//! vanishes with a tmpfs, and stays in a bind mount's source as with runc.
//! Such a target must not contain `..` below the mount.
//!
//! seccomp: the command gets Docker's default profile, another profile or
//! none ([`Security`]), installed just before its capabilities are dropped
//! (see `seccomp.rs`).
//!
//! Without root: [`reexec_in_user_namespace`] runs the executor again as
//! root of a user namespace mapping the caller's subordinate id ranges
//! (`rootless.rs`), where the sandbox works as it does for root. Without a
//! range, the sandbox's own user namespace maps only the caller (to uid 0),
//! so other users fail with a clear setup error saying how to get one.
//!
//! Limits, for now: stubs are only reported with an [`Outcome`] (on `Err`
//! the caller discards the layer anyway).

#![allow(unsafe_code)]

mod child;
pub mod container;
mod etc;
mod inplace;
pub mod mountinfo;
mod mounts;
pub mod overlay;
mod path;
mod probe;
pub mod rootless;
mod seccomp;
mod subid;
mod template;
pub mod user;

use std::fmt;
use std::fs::File;
use std::io::{self, Read as _};
use std::net::IpAddr;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use rustix::event::{PollFd, PollFlags};
use rustix::pipe::PipeFlags;

pub use inplace::{InPlace, protected_paths};
pub use probe::{Unavailable, probe};
pub use rootless::{RootlessError, reexec_in_user_namespace};
pub use seccomp::{Profile, Seccomp, SeccompError, Security};
pub use user::UserError;

/// What to run and how.
pub struct Spec {
    /// The root filesystem (a directory, usually an overlay's merged dir).
    /// The sandbox may create mount-point stubs in it and reports them.
    pub root: PathBuf,
    /// argv; argv[0] without a '/' is looked up in the PATH of `env`
    /// inside the root (as runc does), error if not found.
    pub args: Vec<String>,
    /// Exactly the command's environment (the caller adds a default PATH).
    pub env: Vec<(String, String)>,
    /// Absolute path inside the root; created (owned by `user`) when missing.
    pub cwd: String,
    pub user: User,
    pub hostname: String,
    pub network: Network,
    /// Extra lines for /etc/hosts (besides localhost and the hostname).
    pub extra_hosts: Vec<(String, IpAddr)>,
    /// Mounts on top of the root, in order.
    pub mounts: Vec<Mount>,
    /// Called with each chunk of stdout/stderr as it arrives (lines when
    /// possible); the caller logs it.
    pub output: Output,
    /// The command's seccomp filter and no_new_privs.
    pub security: Security,
    /// Pid 1 is a tiny init that runs the command as its child (reaping
    /// orphans, forwarding SIGTERM, SIGINT, SIGHUP and SIGQUIT: a script
    /// job's long-lived processes), rather than the command itself (a RUN
    /// step, as Docker and BuildKit run one: one process fewer, started as
    /// `posix_spawn` starts one; see the module).
    pub init: bool,
}

/// The paths every namespace sandbox mounts on in its root, relative to
/// it, and whether each is a directory (else a file). The sandbox creates
/// those the root lacks as stubs ([`Outcome::stubs`]); a caller that
/// provides them beforehand (the overlay root's mount-point lower, in
/// `rootfs`) spares it making and the caller removing them at every step.
pub const MOUNT_POINTS: [(&str, bool); 6] = [
    ("proc", true),
    ("sys", true),
    ("dev", true),
    ("etc/hosts", false),
    ("etc/resolv.conf", false),
    ("etc/hostname", false),
];

/// Receives the command's output, chunk by chunk.
pub type Output = Arc<dyn Fn(Stream, &[u8]) + Send + Sync>;

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spec")
            .field("root", &self.root)
            .field("args", &self.args)
            .field("env", &self.env)
            .field("cwd", &self.cwd)
            .field("user", &self.user)
            .field("hostname", &self.hostname)
            .field("network", &self.network)
            .field("extra_hosts", &self.extra_hosts)
            .field("mounts", &self.mounts)
            .field("security", &self.security)
            .field("init", &self.init)
            .finish_non_exhaustive()
    }
}

/// The identity the command runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary `gid` need not be repeated).
    pub groups: Vec<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// The host's network namespace.
    #[default]
    Host,
    /// A fresh network namespace with only `lo`, up.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Absolute path inside the root.
    pub target: String,
    pub kind: MountKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// Bind `source` (file or dir); read_only => MS_RDONLY remount.
    Bind { source: PathBuf, read_only: bool },
    Tmpfs {
        size: Option<u64>,
        mode: Option<u32>,
    },
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Exited(i32),
    Signaled(i32),
}

impl Status {
    /// Exit status 0.
    #[must_use]
    pub fn success(self) -> bool {
        self == Status::Exited(0)
    }

    fn from_wait(status: i32) -> Status {
        if libc::WIFSIGNALED(status) {
            Status::Signaled(libc::WTERMSIG(status))
        } else {
            Status::Exited(libc::WEXITSTATUS(status))
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Exited(code) => write!(f, "exit status {code}"),
            Status::Signaled(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    /// Paths (relative to the root, no leading '/') the sandbox created as
    /// mount-point stubs (dirs or empty files, incl. missing parents), in
    /// creation order; the caller removes them from the layer.
    pub stubs: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid sandbox request: {what}")]
    Invalid { what: String },
    #[error("cannot prepare the sandbox: {what}")]
    Prepare {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the sandbox for {command:?}")]
    Start {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("sandbox setup failed: {step}")]
    Setup {
        step: String,
        #[source]
        source: io::Error,
    },
    /// A [`SandboxError::Setup`] for an id the user namespace of a build
    /// without root does not map (see `rootless.rs`).
    #[error("sandbox setup failed: {step}\n{hint}")]
    Unmapped {
        step: String,
        hint: String,
        #[source]
        source: io::Error,
    },
    #[error("exec: {command:?}: executable file not found in $PATH")]
    NotFound { command: String },
    #[error("cannot execute {command:?}")]
    Exec {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot wait for the sandbox")]
    Wait {
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error(
        "cannot enter a private mount namespace\nhint: call it first thing in main, while single-threaded, with CAP_SYS_ADMIN"
    )]
    PrivateNamespace {
        #[source]
        source: io::Error,
    },
}

type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// Where steps run when they run in the executor's own root filesystem
/// ([`InPlace`]): the root and the paths in it a build must leave alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedRoot {
    pub root: PathBuf,
    /// Absolute paths within `root`.
    pub protected: Vec<PathBuf>,
}

/// The isolation modes: [`Namespaces`] (a root of the step's own) and
/// [`InPlace`] (kaniko's: the executor's own root).
pub trait Isolation: Send + Sync {
    /// Runs `spec` to its end, or until `kill` is killed.
    fn run(&self, spec: &Spec, kill: &KillSwitch) -> Result<Outcome>;

    /// Whether this machine can run steps this way ([`probe`] by default).
    fn available(&self) -> std::result::Result<(), Unavailable> {
        probe()
    }

    /// `Some` when steps run in the executor's own root rather than in the
    /// root their [`Spec`] names: stages are then built in it.
    fn shared_root(&self) -> Option<SharedRoot> {
        None
    }
}

/// Linux namespaces and `pivot_root` (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct Namespaces;

impl Isolation for Namespaces {
    fn run(&self, spec: &Spec, kill: &KillSwitch) -> Result<Outcome> {
        run_killable(spec, kill)
    }
}

/// Pid 1 of every running sandbox, in the caller's PID namespace.
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<i32>> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// SIGKILL every sandbox this process is running (Ctrl-C/SIGTERM handler).
/// Killing pid 1 makes the kernel kill everything in its PID namespace.
pub fn kill_all() {
    let live = live();
    for &pid in live.iter() {
        // A pid stays in the registry until it is reaped, so it cannot
        // name a recycled process here.
        kill_pid(pid);
    }
}

/// Kills one sandbox from another thread: give it to [`run_killable`], and
/// call [`KillSwitch::kill`] (a timeout, a cancelled job). Killing pid 1
/// kills everything in its PID namespace, as [`kill_all`] does.
#[derive(Debug, Default)]
pub struct KillSwitch {
    /// Pid 1 of the sandbox, once it runs.
    pid: Mutex<Option<i32>>,
    killed: std::sync::atomic::AtomicBool,
}

impl KillSwitch {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// SIGKILLs the sandbox's pid 1 if it runs; a sandbox that has not
    /// started yet is killed as soon as it starts.
    pub fn kill(&self) {
        // The order of locks is the one `run_killable` takes: `LIVE`, then
        // the pid.
        let live = live();
        self.killed.store(true, std::sync::atomic::Ordering::SeqCst);
        let pid = *self.pid.lock().unwrap_or_else(PoisonError::into_inner);
        // Only a pid still registered (so not reaped, so not recycled).
        if let Some(pid) = pid.filter(|pid| live.contains(pid)) {
            kill_pid(pid);
        }
    }

    /// Whether [`KillSwitch::kill`] was called.
    #[must_use]
    pub fn killed(&self) -> bool {
        self.killed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// SIGKILLs `pid`, and its process group when it leads one (an in-place
/// command does; a sandbox's pid 1 leads none, so its group kill fails).
fn kill_pid(pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// Called first thing in main (single-threaded): unshare a private mount
/// namespace for the whole executor (MS_REC|MS_PRIVATE on /), so every
/// mount the executor makes disappears with it, even on SIGKILL.
pub fn enter_private_mount_namespace() -> Result<()> {
    // SAFETY: unshare(CLONE_NEWNS) only affects the calling thread's view
    // of mounts; the caller guarantees it is the only thread.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
        .and_then(|()| {
            rustix::mount::mount_change(
                "/",
                rustix::mount::MountPropagationFlags::REC
                    | rustix::mount::MountPropagationFlags::PRIVATE,
            )
        })
        .map_err(|err| SandboxError::PrivateNamespace { source: err.into() })?;
    PRIVATE_MOUNTS.store(true, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

/// Set once [`enter_private_mount_namespace`] succeeded.
static PRIVATE_MOUNTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process's mounts are its own (see
/// [`enter_private_mount_namespace`]): only then does the build mount
/// overlays itself. Elsewhere a mount could outlive the build: a seccomp
/// profile that lets the new mount API through but refuses `umount2`
/// leaves every overlay mounted on the host.
#[must_use]
pub fn has_private_mounts() -> bool {
    PRIVATE_MOUNTS.load(std::sync::atomic::Ordering::SeqCst)
}

fn pipe(what: &str) -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|err| SandboxError::Prepare {
        what: format!("{what} pipe"),
        source: err.into(),
    })
}

/// Reads the command's stdout and stderr into `output` and the report pipe
/// to its end (every writer closed or exec'd), all on this thread, which
/// would otherwise only wait: poll(2) over the three pipes until each is
/// at its end (a thread per pipe cost two spawns a RUN step). Output goes
/// out as complete lines when there are any, a partial line once it grows
/// past 8 KiB or at the end. Returns what the report pipe held.
fn pump_all(
    stdout: OwnedFd,
    stderr: OwnedFd,
    report: OwnedFd,
    output: &(dyn Fn(Stream, &[u8]) + Send + Sync),
) -> Vec<u8> {
    const LIMIT: usize = 8192;
    const REPORT: usize = 2;
    let streams = [Stream::Stdout, Stream::Stderr];
    let mut pipes = [stdout, stderr, report].map(|fd| Some(File::from(fd)));
    let mut pending = [Vec::new(), Vec::new(), Vec::new()];
    let mut buffer = [0u8; LIMIT];
    loop {
        let open: Vec<usize> = (0..pipes.len()).filter(|&i| pipes[i].is_some()).collect();
        if open.is_empty() {
            return std::mem::take(&mut pending[REPORT]);
        }
        let mut polled: Vec<PollFd<'_>> = pipes
            .iter()
            .flatten()
            .map(|pipe| PollFd::new(pipe, PollFlags::IN))
            .collect();
        match rustix::event::poll(&mut polled, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            // ENOMEM, say: try again shortly rather than spin or block on
            // one pipe while the command fills another.
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
        let ready: Vec<usize> = open
            .into_iter()
            .zip(&polled)
            .filter(|(_, fd)| !fd.revents().is_empty())
            .map(|(i, _)| i)
            .collect();
        drop(polled);
        for i in ready {
            let Some(pipe) = &mut pipes[i] else { continue };
            let read = match pipe.read(&mut buffer) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(read) => read,
                Err(_) => 0,
            };
            let pending = &mut pending[i];
            if read == 0 {
                pipes[i] = None;
                if i != REPORT && !pending.is_empty() {
                    output(streams[i], pending);
                    pending.clear();
                }
                continue;
            }
            pending.extend_from_slice(&buffer[..read]);
            if i == REPORT {
                continue;
            }
            if let Some(end) = pending.iter().rposition(|&byte| byte == b'\n') {
                output(streams[i], &pending[..=end]);
                pending.drain(..=end);
            }
            if pending.len() >= LIMIT {
                output(streams[i], pending);
                pending.clear();
            }
        }
    }
}

/// Waits for pid 1 without reaping, drops it from the registry, then reaps
/// it, so [`kill_all`] never signals a recycled pid.
fn wait(pid: i32) -> Result<i32> {
    loop {
        // SAFETY: zeroed siginfo_t is valid output storage for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid with valid arguments; WNOWAIT leaves the zombie.
        let result = unsafe {
            libc::waitid(
                libc::P_PID,
                libc::id_t::try_from(pid).unwrap_or(0),
                &raw mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if result == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(SandboxError::Wait { source: err });
        }
    }
    live().retain(|&live| live != pid);
    let mut status = 0;
    loop {
        // SAFETY: waitpid with a valid status pointer.
        if unsafe { libc::waitpid(pid, &raw mut status, 0) } == pid {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(SandboxError::Wait { source: err });
        }
    }
}

/// Pumps a command's stdout and stderr to `output` while waiting for
/// `pid` ([`wait`]); returns what the report pipe held and the wait.
fn pump_and_wait(
    pid: i32,
    stdout: OwnedFd,
    stderr: OwnedFd,
    report: OwnedFd,
    output: &(dyn Fn(Stream, &[u8]) + Send + Sync),
) -> (Vec<u8>, Result<i32>) {
    let report = pump_all(stdout, stderr, report, output);
    (report, wait(pid))
}

/// Reads the whole pipe (until every writer has closed or exec'd).
fn read_all(fd: OwnedFd) -> Vec<u8> {
    let mut bytes = Vec::new();
    let _ = File::from(fd).read_to_end(&mut bytes);
    bytes
}

/// Runs `spec.args` in the sandbox and waits for it.
pub fn run(spec: &Spec) -> Result<Outcome> {
    run_inner(spec, None)
}

/// [`run`], killed when `switch` is (the status is then
/// `Signaled(SIGKILL)`).
pub fn run_killable(spec: &Spec, switch: &KillSwitch) -> Result<Outcome> {
    run_inner(spec, Some(switch))
}

fn run_inner(spec: &Spec, switch: Option<&KillSwitch>) -> Result<Outcome> {
    let command = spec.args.first().cloned().unwrap_or_default();
    let _span =
        tracing::debug_span!("sandbox", root = %spec.root.display(), command = %command).entered();
    let root = spec
        .root
        .canonicalize()
        .map_err(|source| SandboxError::Prepare {
            what: format!("root {}", spec.root.display()),
            source,
        })?;
    let rootless = !rustix::process::geteuid().is_root();
    let template = if rootless { None } else { template::get() };
    let mut prepared = mounts::prepare(spec, &root, rootless, template)?;
    prepared.plan.seccomp = seccomp::for_namespaces(&spec.security, child::DEFAULT_CAPABILITIES)?;
    let stdin = File::open("/dev/null").map_err(|source| SandboxError::Prepare {
        what: "/dev/null".into(),
        source,
    })?;
    let (out_read, out_write) = pipe("stdout")?;
    let (err_read, err_write) = pipe("stderr")?;
    let (report_read, report_write) = pipe("report")?;
    let (status_read, status_write) = pipe("status")?;
    // For pid 1 to see whether the executor died before its
    // PR_SET_PDEATHSIG took hold; without pidfds (Linux < 5.3) the race
    // stays open.
    let executor = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .ok();
    let fds = child::Fds {
        stdin: stdin.as_raw_fd(),
        stdout: out_write.as_raw_fd(),
        stderr: err_write.as_raw_fd(),
        report: report_write.as_raw_fd(),
        status: status_write.as_raw_fd(),
        parent_ends: [
            out_read.as_raw_fd(),
            err_read.as_raw_fd(),
            report_read.as_raw_fd(),
            status_read.as_raw_fd(),
        ],
        executor: executor.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
    };
    // From the template, pid 1 makes its mount namespace itself (a copy
    // of the template's).
    let mut flags = libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if template.is_none() {
        flags |= libc::CLONE_NEWNS;
    }
    if spec.network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    if rootless {
        flags |= libc::CLONE_NEWUSER;
    }
    let pid = {
        // Registered under the lock, so kill_all cannot miss it.
        let mut live = live();
        let cloned = if spec.init {
            // SAFETY: the child runs only `child::pid1`, which makes raw
            // system calls from the prepared plan and ends in _exit.
            match unsafe { child::clone(flags) } {
                Ok(0) => child::pid1(&prepared.plan, &fds),
                other => other,
            }
        } else {
            // SAFETY: `flags` holds namespace flags only; the child runs
            // `child::pid1_exec`, which makes raw system calls from the
            // prepared plan and ends in execve or _exit.
            unsafe { child::clone_exec(flags, &prepared.plan, &fds) }
        };
        match cloned {
            Ok(pid) => {
                live.push(pid);
                if let Some(switch) = switch {
                    *switch.pid.lock().unwrap_or_else(PoisonError::into_inner) = Some(pid);
                    if switch.killed() {
                        kill_pid(pid);
                    }
                }
                pid
            }
            Err(errno) => {
                return Err(SandboxError::Start {
                    command,
                    source: io::Error::from_raw_os_error(errno),
                });
            }
        }
    };
    drop((
        stdin,
        out_write,
        err_write,
        report_write,
        status_write,
        executor,
        std::mem::take(&mut prepared.detached),
    ));
    let (report, waited) = pump_and_wait(pid, out_read, err_read, report_read, &*spec.output);
    let waited = waited?;
    let status = read_all(status_read);
    if let Some(err) = reported(&report, command, |step| {
        step_name(&prepared.steps, step, spec)
    }) {
        return Err(unmapped(err, &report, &prepared.plan));
    }
    let status = match <[u8; 4]>::try_from(status.as_slice()) {
        Ok(bytes) => Status::from_wait(i32::from_ne_bytes(bytes)),
        Err(_) => Status::from_wait(waited),
    };
    tracing::debug!(%status, "sandbox finished");
    Ok(Outcome {
        status,
        stubs: prepared.stubs,
    })
}

/// The error a child reported on its report pipe as `(step, errno)`, if
/// it reported one; `name` names a setup step.
fn reported(
    report: &[u8],
    command: String,
    name: impl FnOnce(u32) -> String,
) -> Option<SandboxError> {
    let (step, errno) = child::read_report(report)?;
    let source = io::Error::from_raw_os_error(errno);
    Some(match step {
        child::STEP_EXEC if errno == libc::ENOENT => SandboxError::NotFound { command },
        child::STEP_EXEC => SandboxError::Exec { command, source },
        _ => SandboxError::Setup {
            step: name(step),
            source,
        },
    })
}

/// `err` with [`rootless::unmapped_hint`] when it is switching to an id,
/// or giving a directory to one, that the user namespace of a build
/// without root does not map (`EINVAL`).
fn unmapped(err: SandboxError, report: &[u8], plan: &child::Plan) -> SandboxError {
    let step = child::read_report(report).map(|(step, _)| step);
    let owned_dir = |step: u32| {
        usize::try_from(step)
            .ok()
            .and_then(|index| plan.ops.get(index))
            .is_some_and(|op| matches!(op, child::Op::MkdirOwned { .. }))
    };
    match err {
        SandboxError::Setup { step: name, source }
            if source.raw_os_error() == Some(libc::EINVAL)
                && step.is_some_and(|step| step == child::STEP_IDENTITY || owned_dir(step)) =>
        {
            match rootless::unmapped_hint() {
                Some(hint) => SandboxError::Unmapped {
                    step: name,
                    hint,
                    source,
                },
                None => SandboxError::Setup { step: name, source },
            }
        }
        other => other,
    }
}

fn step_name(steps: &[String], step: u32, spec: &Spec) -> String {
    match step {
        child::STEP_CHDIR => format!("changing to the working directory {}", spec.cwd),
        child::STEP_IDENTITY => format!(
            "switching to uid {} gid {} groups {:?}",
            spec.user.uid, spec.user.gid, spec.user.groups
        ),
        child::STEP_FORK => "forking the command".into(),
        child::STEP_STDIO => "setting up stdin, stdout and stderr".into(),
        child::STEP_DEATHSIG => "setting the parent-death signal".into(),
        child::STEP_USER_MAPS => "writing the user namespace's uid and gid maps".into(),
        child::STEP_CAPABILITIES => "dropping capabilities".into(),
        child::STEP_SECCOMP => "installing the seccomp filter\nhint: a kernel without seccomp filters, or a runtime's profile refusing seccomp(2), needs --security-opt seccomp=unconfined".into(),
        _ => usize::try_from(step)
            .ok()
            .and_then(|index| steps.get(index))
            .cloned()
            .unwrap_or_else(|| format!("step {step}")),
    }
}

#[cfg(test)]
pub(crate) mod tests;
