//! The code that runs after `clone`: pid 1 of the sandbox (mounts, pivot,
//! a tiny init) and the command it forks.
//!
//! The executor is multi-threaded, so between `clone` and `execve` only
//! async-signal-safe work is allowed: everything here reads a [`Plan`]
//! prepared before the fork (C strings, pointer arrays, mount data) and
//! makes raw system calls (rustix's linux_raw backend, or libc's thin
//! syscall wrappers). No allocation, no locks, no panics, no `std::io`
//! objects. Failures are reported as `(step, errno)` through a pipe and
//! turned into messages by the parent, which knows the step names.

use std::ffi::{CStr, CString, c_char, c_int};
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use rustix::fs::{FileType, Gid, Mode, OFlags, StatVfsMountFlags, Uid};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::thread::{CapabilitySet, CapabilitySets};

use super::path::Kind;

/// Report steps that are not an index into [`Plan::ops`].
pub(super) const STEP_EXEC: u32 = u32::MAX;
pub(super) const STEP_CHDIR: u32 = u32::MAX - 1;
pub(super) const STEP_IDENTITY: u32 = u32::MAX - 2;
pub(super) const STEP_FORK: u32 = u32::MAX - 3;
pub(super) const STEP_STDIO: u32 = u32::MAX - 4;
pub(super) const STEP_DEATHSIG: u32 = u32::MAX - 5;
pub(super) const STEP_USER_MAPS: u32 = u32::MAX - 6;
pub(super) const STEP_CAPABILITIES: u32 = u32::MAX - 7;
pub(super) const STEP_SECCOMP: u32 = u32::MAX - 8;

/// Exit status of pid 1 when the setup failed (the report says why).
const EXIT_SETUP: c_int = 125;

/// Signals pid 1 forwards to the command.
const FORWARDED: [c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// The capabilities Docker and BuildKit give a RUN step (moby's
/// `oci/caps/defaults.go`); the command keeps these and no others.
pub(super) const DEFAULT_CAPABILITIES: CapabilitySet = CapabilitySet::CHOWN
    .union(CapabilitySet::DAC_OVERRIDE)
    .union(CapabilitySet::FSETID)
    .union(CapabilitySet::FOWNER)
    .union(CapabilitySet::MKNOD)
    .union(CapabilitySet::NET_RAW)
    .union(CapabilitySet::SETGID)
    .union(CapabilitySet::SETUID)
    .union(CapabilitySet::SETFCAP)
    .union(CapabilitySet::SETPCAP)
    .union(CapabilitySet::NET_BIND_SERVICE)
    .union(CapabilitySet::SYS_CHROOT)
    .union(CapabilitySet::KILL)
    .union(CapabilitySet::AUDIT_WRITE);

/// One setup step of pid 1, run in order before the command is forked.
#[derive(Debug)]
pub(super) enum Op {
    /// `mount --make-rprivate /`, so nothing propagates back to the host.
    PrivateRoot,
    Mount {
        source: CString,
        target: CString,
        fstype: CString,
        flags: MountFlags,
        data: Option<CString>,
    },
    /// `chdir`: the root, once bound onto itself, so that the paths of the
    /// later steps are relative to it.
    Chdir {
        path: CString,
    },
    /// A recursive bind mount, then a read-only remount when asked.
    Bind {
        source: CString,
        target: CString,
        read_only: bool,
    },
    /// A fresh read-only sysfs, else the host's `/sys` bound read-only.
    Sysfs {
        target: CString,
    },
    /// An empty file on the `/dev` tmpfs with the host's device bound on
    /// it; skipped when the host lacks the device.
    Device {
        source: CString,
        target: CString,
    },
    /// `/dev/null` bound over a file, a read-only empty tmpfs over a
    /// directory (one for all of them, bound over the others); skipped
    /// when `target` does not exist.
    Mask {
        target: CString,
    },
    /// `target` bound onto itself read-only; skipped when it does not exist.
    ReadOnly {
        target: CString,
    },
    Mkdir {
        path: CString,
        mode: u32,
    },
    /// A mount target below an earlier mount (`base`, already mounted):
    /// `names` created in it one by one, never following a symlink, the
    /// last as a directory or an empty file.
    MountPoint {
        base: CString,
        names: Vec<CString>,
        kind: Kind,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    /// A new file (mode 0644) holding `content`; never follows a symlink.
    WriteFile {
        path: CString,
        content: Vec<u8>,
    },
    Unlink {
        path: CString,
    },
    Hostname {
        name: Vec<u8>,
    },
    /// `ip link set lo up`, by ioctl.
    LoopbackUp,
    /// `pivot_root` into `root` and detach the old root.
    Pivot {
        root: CString,
    },
    /// Joins the template mount namespace (`template.rs`) and takes a
    /// private copy of it: the start of a sandbox that never pivots.
    EnterTemplate {
        namespace: RawFd,
    },
    /// Attaches a detached mount (an `open_tree` clone the executor made)
    /// at `target`, then a read-only remount when asked.
    Attach {
        mount: RawFd,
        target: CString,
        read_only: bool,
    },
    /// Moves the attached root (the working directory) over the template's
    /// `/` and makes it the root (`template.rs`).
    MoveRoot,
    /// A directory created (after the pivot) and owned by the user when
    /// missing.
    MkdirOwned {
        path: CString,
        uid: u32,
        gid: u32,
    },
}

/// `/proc/self/{setgroups,uid_map,gid_map}` contents for a rootless sandbox.
#[derive(Debug)]
pub(super) struct UserMaps {
    pub files: [(CString, Vec<u8>); 3],
}

impl UserMaps {
    /// Maps the caller's effective ids to root in the new user namespace.
    pub fn for_caller() -> UserMaps {
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        UserMaps {
            files: [
                (c"/proc/self/setgroups".to_owned(), b"deny".to_vec()),
                (
                    c"/proc/self/uid_map".to_owned(),
                    format!("0 {uid} 1\n").into_bytes(),
                ),
                (
                    c"/proc/self/gid_map".to_owned(),
                    format!("0 {gid} 1\n").into_bytes(),
                ),
            ],
        }
    }

    /// Writes the maps (in the child, raw calls only).
    pub fn apply(&self) -> Result<(), i32> {
        for (path, content) in &self.files {
            // SAFETY: `path` is a NUL-terminated C string.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(errno());
            }
            // SAFETY: `content` is a live buffer of the given length.
            let written = unsafe { libc::write(fd, content.as_ptr().cast(), content.len()) };
            let failed = if written < 0 { Some(errno()) } else { None };
            // SAFETY: `fd` was opened above and is closed once.
            unsafe { libc::close(fd) };
            if let Some(errno) = failed {
                return Err(errno);
            }
        }
        Ok(())
    }
}

/// Everything the children need, prepared before the fork.
pub(super) struct Plan {
    pub ops: Vec<Op>,
    pub user_maps: Option<UserMaps>,
    /// Whether to call setgroups (not allowed in a rootless sandbox, where
    /// setgroups is denied).
    pub set_groups: bool,
    pub groups: Vec<Gid>,
    pub uid: Uid,
    pub gid: Gid,
    pub cwd: CString,
    /// In place (no namespaces): the command keeps the executor's
    /// capabilities (the container's), as kaniko's steps do.
    pub keep_capabilities: bool,
    /// An empty read-only directory to bind over the directories masked
    /// (the template's: see `template.rs`); without, the first of them
    /// gets a tmpfs of its own, bound over the others.
    pub empty_dir: Option<&'static CStr>,
    /// The command's seccomp filter, installed before its capabilities
    /// are dropped.
    pub seccomp: Option<super::seccomp::Filter>,
    /// Paths (inside the root) to try `execve` on, in order.
    pub candidates: Vec<CString>,
    /// The storage `argv_ptrs` and `env_ptrs` point into.
    _argv: Vec<CString>,
    _env: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    env_ptrs: Vec<*const c_char>,
}

impl Plan {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ops: Vec<Op>,
        user_maps: Option<UserMaps>,
        user: &super::User,
        cwd: CString,
        candidates: Vec<CString>,
        argv: Vec<CString>,
        env: Vec<CString>,
    ) -> Plan {
        let pointers = |strings: &[CString]| {
            strings
                .iter()
                .map(|string| string.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let argv_ptrs = pointers(&argv);
        let env_ptrs = pointers(&env);
        Plan {
            ops,
            set_groups: user_maps.is_none(),
            user_maps,
            groups: user.groups.iter().map(|&gid| Gid::from_raw(gid)).collect(),
            uid: Uid::from_raw(user.uid),
            gid: Gid::from_raw(user.gid),
            cwd,
            keep_capabilities: false,
            empty_dir: None,
            seccomp: None,
            candidates,
            _argv: argv,
            _env: env,
            argv_ptrs,
            env_ptrs,
        }
    }
}

/// The file descriptors pid 1 works with (raw numbers, all `O_CLOEXEC`).
pub(super) struct Fds {
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// Write end of the `(step, errno)` report pipe.
    pub report: RawFd,
    /// Write end of the pipe pid 1 sends the command's wait status to.
    pub status: RawFd,
    /// The parent's ends, closed in the child.
    pub parent_ends: [RawFd; 4],
    /// A pidfd of the executor (`O_CLOEXEC`), when the kernel has them.
    pub executor: Option<RawFd>,
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn raw(err: rustix::io::Errno) -> i32 {
    err.raw_os_error()
}

/// `clone(flags | SIGCHLD)` without a new stack: fork semantics, plus the
/// namespaces in `flags`. Returns 0 in the child.
///
/// # Safety
///
/// The child of a multi-threaded process may only make async-signal-safe
/// calls and must end in `execve` or `_exit`.
pub(super) unsafe fn clone(flags: c_int) -> Result<libc::pid_t, i32> {
    // SAFETY: with a null stack the child continues on a copy of this
    // stack, like fork(2); the caller upholds the post-fork rules.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::c_ulong::try_from(flags | libc::SIGCHLD).unwrap_or(0),
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        Err(errno())
    } else {
        Ok(libc::pid_t::try_from(pid).unwrap_or(-1))
    }
}

/// Writes `(step, errno)` to the report pipe.
pub(super) fn report(fd: RawFd, step: u32, errno: i32) {
    let mut message = [0u8; 8];
    message[..4].copy_from_slice(&step.to_ne_bytes());
    message[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: `message` is a live 8-byte buffer; a failed write is ignored
    // (the parent then sees the exit status only).
    unsafe { libc::write(fd, message.as_ptr().cast(), message.len()) };
}

/// The `(step, errno)` a [`report`] wrote, if `message` holds one.
pub(super) fn read_report(message: &[u8]) -> Option<(u32, i32)> {
    let step = u32::from_ne_bytes(message.get(..4)?.try_into().ok()?);
    let errno = i32::from_ne_bytes(message.get(4..8)?.try_into().ok()?);
    Some((step, errno))
}

fn fail(fd: RawFd, step: u32, errno: i32) -> ! {
    report(fd, step, errno);
    // SAFETY: _exit is async-signal-safe and skips the parent's atexit work.
    unsafe { libc::_exit(EXIT_SETUP) }
}

fn mount_flags_of(target: &CStr) -> MountFlags {
    let Ok(stat) = rustix::fs::statvfs(target) else {
        return MountFlags::empty();
    };
    let mut flags = MountFlags::empty();
    for (have, keep) in [
        (StatVfsMountFlags::NOSUID, MountFlags::NOSUID),
        (StatVfsMountFlags::NODEV, MountFlags::NODEV),
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
    ] {
        if stat.f_flag.contains(have) {
            flags |= keep;
        }
    }
    flags
}

fn bind(source: &CStr, target: &CStr, read_only: bool) -> Result<(), i32> {
    rustix::mount::mount_bind_recursive(source, target).map_err(raw)?;
    if read_only {
        remount_read_only(target)?;
    }
    Ok(())
}

fn remount_read_only(target: &CStr) -> Result<(), i32> {
    // The flags the kernel locked on the source (nosuid, nodev ...) must
    // be repeated, or the remount fails in a user namespace.
    let flags = MountFlags::BIND | MountFlags::RDONLY | mount_flags_of(target);
    rustix::mount::mount_remount(target, flags, c"").map_err(raw)
}

/// Hides `target` as runc does for its masked paths: `/dev/null` bound
/// over a file, an empty read-only tmpfs over a directory. The type is
/// looked at first rather than learnt from a failed bind (runc's way): the
/// kernel undoes a bind that fails on a directory by unmounting its copy,
/// which waits for an RCU grace period, a tenth of a millisecond or more
/// for every directory masked in every RUN step. Directories get a bind
/// of `empty`: the template's empty directory when the sandbox starts from
/// it, else the first of them, which gets the tmpfs. A new superblock
/// costs far more than a bind, and what they show is the same, an empty
/// directory that cannot be written (the superblock itself is read-only).
fn mask<'a>(target: &'a CStr, empty: &mut Option<&'a CStr>) -> Result<(), i32> {
    let is_dir = match rustix::fs::stat(target) {
        Ok(stat) => FileType::from_raw_mode(stat.st_mode) == FileType::Directory,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(err) => return Err(raw(err)),
    };
    let mounted = match (is_dir, *empty) {
        (true, Some(first)) => rustix::mount::mount_bind(first, target),
        (true, None) => rustix::mount::mount(
            c"tmpfs",
            target,
            c"tmpfs",
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            Some(c"size=0"),
        )
        .inspect(|()| *empty = Some(target)),
        (false, _) => rustix::mount::mount_bind(c"/dev/null", target),
    };
    match mounted {
        // Gone between the look and the mount (a /proc entry can).
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(err) => Err(raw(err)),
    }
}

/// Opens `name` in `dir` as a directory, creating it when missing; a
/// symlink is an error (ENOTDIR), so nothing outside the mount is touched.
fn subdir(dir: &OwnedFd, name: &CStr) -> Result<OwnedFd, i32> {
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(err) => return Err(raw(err)),
    }
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(raw)
}

/// Creates `names` below `base` (see [`Op::MountPoint`]).
fn mount_point(base: &CStr, names: &[CString], kind: Kind) -> Result<(), i32> {
    let Some((last, parents)) = names.split_last() else {
        return Ok(());
    };
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open(base, flags, Mode::empty()).map_err(raw)?;
    for name in parents {
        dir = subdir(&dir, name)?;
    }
    if kind == Kind::Dir {
        return subdir(&dir, last).map(drop);
    }
    let create =
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(&dir, last.as_c_str(), create, Mode::from_raw_mode(0o644)) {
        Ok(_) => Ok(()),
        Err(rustix::io::Errno::EXIST) => {
            let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let file =
                rustix::fs::openat(&dir, last.as_c_str(), flags, Mode::empty()).map_err(raw)?;
            let stat = rustix::fs::fstat(&file).map_err(raw)?;
            if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
                Err(libc::ELOOP)
            } else {
                Ok(())
            }
        }
        Err(err) => Err(raw(err)),
    }
}

/// Creates `path` (which must not exist) holding `content` (raw calls).
fn write_file(path: &CStr, content: &[u8]) -> Result<(), i32> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let file = rustix::fs::open(path, flags, Mode::from_raw_mode(0o644)).map_err(raw)?;
    let mut left = content;
    while !left.is_empty() {
        match rustix::io::write(&file, left) {
            Ok(0) => return Err(libc::EIO),
            Ok(written) => left = left.get(written..).unwrap_or_default(),
            Err(rustix::io::Errno::INTR) => {}
            Err(err) => return Err(raw(err)),
        }
    }
    Ok(())
}

fn loopback_up() -> Result<(), i32> {
    // SAFETY: plain socket(2) call.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(errno());
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo") {
        *slot = libc::c_char::try_from(*byte).unwrap_or(0);
    }
    // SAFETY: SIOCGIFFLAGS fills the flags member of the ifreq union.
    let mut result = unsafe { libc::ioctl(socket, libc::SIOCGIFFLAGS, &raw mut request) };
    if result == 0 {
        // SAFETY: the flags member was just filled by the kernel.
        unsafe {
            request.ifr_ifru.ifru_flags |=
                libc::c_short::try_from(libc::IFF_UP | libc::IFF_RUNNING).unwrap_or(1);
        }
        // SAFETY: SIOCSIFFLAGS reads the ifreq filled above.
        result = unsafe { libc::ioctl(socket, libc::SIOCSIFFLAGS, &raw const request) };
    }
    let failed = if result < 0 { Some(errno()) } else { None };
    // SAFETY: `socket` is open and closed once.
    unsafe { libc::close(socket) };
    failed.map_or(Ok(()), Err)
}

pub(super) fn pivot(root: &CStr) -> Result<(), i32> {
    rustix::process::chdir(root).map_err(raw)?;
    // pivot_root(".", ".") stacks the old root on the new one; detaching
    // "." then drops it (pivot_root(2), NOTES), with no put_old directory.
    rustix::process::pivot_root(c".", c".").map_err(raw)?;
    rustix::mount::unmount(c".", UnmountFlags::DETACH).map_err(raw)?;
    rustix::process::chdir(c"/").map_err(raw)
}

impl Op {
    /// Runs the step; `empty` is the masks' shared tmpfs (see [`mask`]).
    fn apply<'a>(&'a self, empty: &mut Option<&'a CStr>) -> Result<(), i32> {
        match self {
            Op::Chdir { path } => rustix::process::chdir(path.as_c_str()).map_err(raw),
            Op::PrivateRoot => rustix::mount::mount_change(
                c"/",
                MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
            )
            .map_err(raw),
            Op::Mount {
                source,
                target,
                fstype,
                flags,
                data,
            } => rustix::mount::mount(
                source.as_c_str(),
                target.as_c_str(),
                fstype.as_c_str(),
                *flags,
                data.as_deref(),
            )
            .map_err(raw),
            Op::Bind {
                source,
                target,
                read_only,
            } => bind(source, target, *read_only),
            Op::Sysfs { target } => {
                let flags = MountFlags::RDONLY
                    | MountFlags::NOSUID
                    | MountFlags::NODEV
                    | MountFlags::NOEXEC;
                match rustix::mount::mount(c"sysfs", target.as_c_str(), c"sysfs", flags, None) {
                    Ok(()) => Ok(()),
                    Err(_) => bind(c"/sys", target, true),
                }
            }
            Op::Device { source, target } => {
                // SAFETY: `target` is a C string; the fd is closed at once.
                let fd = unsafe {
                    libc::open(
                        target.as_ptr(),
                        libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC,
                        0o666,
                    )
                };
                if fd < 0 {
                    return Err(errno());
                }
                // SAFETY: `fd` was just opened.
                unsafe { libc::close(fd) };
                match rustix::mount::mount_bind(source.as_c_str(), target.as_c_str()) {
                    Ok(()) => Ok(()),
                    Err(rustix::io::Errno::NOENT) => {
                        let _ = rustix::fs::unlink(target.as_c_str());
                        Ok(())
                    }
                    Err(err) => Err(raw(err)),
                }
            }
            Op::Mask { target } => mask(target, empty),
            Op::ReadOnly { target } => match bind(target, target, true) {
                Err(libc::ENOENT) => Ok(()),
                other => other,
            },
            Op::MountPoint { base, names, kind } => mount_point(base, names, *kind),
            Op::Mkdir { path, mode } => {
                match rustix::fs::mkdir(path.as_c_str(), Mode::from_raw_mode(*mode)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
                    Err(err) => Err(raw(err)),
                }
            }
            Op::Symlink { target, link } => {
                rustix::fs::symlink(target.as_c_str(), link.as_c_str()).map_err(raw)
            }
            Op::WriteFile { path, content } => write_file(path, content),
            Op::Unlink { path } => rustix::fs::unlink(path.as_c_str()).map_err(raw),
            Op::Hostname { name } => rustix::system::sethostname(name).map_err(raw),
            Op::LoopbackUp => loopback_up(),
            Op::Pivot { root } => pivot(root),
            Op::EnterTemplate { namespace } => {
                // SAFETY: the executor keeps the template's descriptor open
                // for its whole life (`template.rs`).
                let namespace = unsafe { BorrowedFd::borrow_raw(*namespace) };
                super::template::enter(namespace).map_err(raw)
            }
            Op::Attach {
                mount,
                target,
                read_only,
            } => {
                // SAFETY: the parent holds the mount's descriptor until this
                // child has exec'd or exited (see `Prepared::detached`).
                let mount = unsafe { BorrowedFd::borrow_raw(*mount) };
                super::template::attach(mount, target).map_err(raw)?;
                if *read_only {
                    remount_read_only(target)?;
                }
                Ok(())
            }
            Op::MoveRoot => super::template::move_root().map_err(raw),
            Op::MkdirOwned { path, uid, gid } => {
                match rustix::fs::mkdir(path.as_c_str(), Mode::from_raw_mode(0o755)) {
                    Ok(()) => rustix::fs::chown(
                        path.as_c_str(),
                        Some(Uid::from_raw(*uid)),
                        Some(Gid::from_raw(*gid)),
                    )
                    .map_err(raw),
                    Err(rustix::io::Errno::EXIST) => Ok(()),
                    Err(err) => Err(raw(err)),
                }
            }
        }
    }
}

/// Reduces the bounding, permitted, effective and inheritable sets to
/// [`DEFAULT_CAPABILITIES`] and clears the ambient set. The bounding set
/// goes first (dropping needs CAP_SETPCAP, which capset may remove); a
/// later `setuid` to a non-root user empties the effective set as usual.
/// no_new_privs stays off unless asked for, so setuid programs such as `su`
/// work (see `seccomp.rs`).
fn drop_capabilities() -> Result<(), i32> {
    for bit in 0..u64::BITS {
        let capability = CapabilitySet::from_bits_retain(1 << bit);
        if DEFAULT_CAPABILITIES.contains(capability) {
            continue;
        }
        match rustix::thread::remove_capability_from_bounding_set(capability) {
            Ok(()) => {}
            // Past the kernel's last capability (cap_last_cap).
            Err(rustix::io::Errno::INVAL) => break,
            Err(err) => return Err(raw(err)),
        }
    }
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: DEFAULT_CAPABILITIES,
            permitted: DEFAULT_CAPABILITIES,
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(raw)?;
    rustix::thread::clear_ambient_capability_set().map_err(raw)
}

/// The command's pid, for the forwarding signal handler of pid 1.
static COMMAND: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(signal: c_int) {
    let pid = COMMAND.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, signal) };
    }
}

pub(super) fn set_handler(signal: c_int, handler: libc::sighandler_t) {
    // SAFETY: sigaction with a zeroed (empty-mask) struct and a valid
    // handler value (SIG_DFL or an extern "C" fn taking the signal number).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = libc::SA_RESTART;
        libc::sigaction(signal, &raw const action, std::ptr::null_mut());
    }
}

/// Default handlers and an empty signal mask: the parent's handlers (a
/// tokio runtime's, say) must not run in the sandbox.
fn reset_signals() {
    for signal in 1..libc::SIGRTMAX() {
        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
            set_handler(signal, libc::SIG_DFL);
        }
    }
    // SAFETY: an emptied sigset_t, applied to this (only) thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &raw const set, std::ptr::null_mut());
    }
}

/// Whether the process behind `pidfd` has exited (its pidfd polls
/// readable). A raw poll with no wait.
pub(super) fn exited(pidfd: RawFd) -> bool {
    let mut entry = libc::pollfd {
        fd: pidfd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no timeout.
    let ready = unsafe { libc::poll(&raw mut entry, 1, 0) };
    ready > 0 && entry.revents & libc::POLLIN != 0
}

/// Closes every descriptor from 3 up but `keep`: a child is a copy of the
/// executor and would otherwise hold whatever it had open, other sandboxes'
/// pipes included (a concurrent RUN could then not see its own end of
/// file), and files another thread has open below an overlay (whose
/// unmount is then refused as busy).
pub(super) fn close_inherited<const N: usize>(mut keep: [RawFd; N]) {
    // No allocation here: this runs between clone and exec.
    keep.sort_unstable();
    let mut first: libc::c_uint = 3;
    for fd in keep {
        if fd < 3 {
            continue;
        }
        let fd = fd.unsigned_abs();
        if fd > first {
            // SAFETY: close_range(2) on descriptors this process owns; none of
            // them is used again.
            unsafe { libc::syscall(libc::SYS_close_range, first, fd - 1, 0) };
        }
        first = first.max(fd + 1);
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0) };
}

/// The command run in place (`--isolation=in-place`): the forked child
/// leads a process group of its own (so a kill reaches what it starts),
/// dies with the executor's thread, gets the pipes as its standard
/// descriptors and nothing else, then runs as [`command`] does.
pub(super) fn direct(plan: &Plan, fds: &Fds) -> ! {
    // SAFETY: setpgid(0, 0) on this process; async-signal-safe.
    unsafe { libc::setpgid(0, 0) };
    if let Err(err) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
    {
        fail(fds.report, STEP_DEATHSIG, raw(err));
    }
    reset_signals();
    standard_fds(fds, [fds.report, fds.report]);
    command(plan, fds)
}

/// Gives the process the pipes as its standard descriptors, closes every
/// other descriptor but `keep`, and sets the usual umask.
fn standard_fds(fds: &Fds, keep: [RawFd; 2]) {
    stdio(fds);
    close_inherited(keep);
}

/// [`standard_fds`] but for closing the other descriptors.
fn stdio(fds: &Fds) {
    for fd in fds.parent_ends {
        // SAFETY: closes this process's copy of a parent-only fd.
        unsafe { libc::close(fd) };
    }
    for (from, to) in [(fds.stdin, 0), (fds.stdout, 1), (fds.stderr, 2)] {
        // SAFETY: dup2 onto the standard descriptors; clears O_CLOEXEC.
        if unsafe { libc::dup2(from, to) } < 0 {
            fail(fds.report, STEP_STDIO, errno());
        }
    }
    // SAFETY: umask(2) cannot fail.
    unsafe { libc::umask(0o022) };
}

/// What pid 1 does first, whether it then stays as an init ([`pid1`]) or
/// becomes the command ([`pid1_exec`]): dies with the executor's thread,
/// gets the pipes as its standard descriptors (and `keep`, nothing else),
/// maps its user namespace, then runs the plan's setup steps.
fn pid1_setup(plan: &Plan, fds: &Fds, keep: [RawFd; 2]) {
    if let Err(err) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
    {
        fail(fds.report, STEP_DEATHSIG, raw(err));
    }
    if let Some(executor) = fds.executor {
        // The executor may have died between clone and the prctl above,
        // which then never fires. getppid() cannot tell: the parent is
        // outside this PID namespace, so it is always 0 here.
        if exited(executor) {
            // SAFETY: see `fail`; nobody is left to read a report.
            unsafe { libc::_exit(EXIT_SETUP) };
        }
        // SAFETY: closes this process's copy of the pidfd.
        unsafe { libc::close(executor) };
    }
    reset_signals();
    stdio(fds);
    if let Some(maps) = &plan.user_maps {
        if let Err(errno) = maps.apply() {
            fail(fds.report, STEP_USER_MAPS, errno);
        }
    }
    let mut empty = plan.empty_dir;
    for (index, op) in plan.ops.iter().enumerate() {
        if let Err(errno) = op.apply(&mut empty) {
            fail(fds.report, u32::try_from(index).unwrap_or(0), errno);
        }
    }
    // After the steps, which may use descriptors the executor made for
    // them (the template's, the mounts to attach).
    close_inherited(keep);
}

/// Pid 1 of the sandbox as the command itself, as Docker and BuildKit run
/// a RUN step: sets up, then becomes the command. Started by
/// [`clone_exec`]; its exit ends the PID namespace.
fn pid1_exec(plan: &Plan, fds: &Fds) -> ! {
    pid1_setup(plan, fds, [fds.report, fds.report]);
    command(plan, fds)
}

/// Starts [`pid1_exec`] in new namespaces (`flags`) as `posix_spawn`
/// starts a child ([`spawn_vfork`]): the calling thread waits, suspended,
/// until the command's `execve` or the setup's failure, and no copy of
/// the executor's page tables is made only to be thrown away at `execve`
/// (with them the copy-on-write faults, and their TLB shootdowns across
/// the executor's threads, that a fork costs while it lives). Returns pid 1.
///
/// # Safety
/// `flags` holds only namespace flags, which `CLONE_VM | CLONE_VFORK`
/// allow; the child follows the post-clone rules (see the module).
pub(super) unsafe fn clone_exec(flags: c_int, plan: &Plan, fds: &Fds) -> Result<libc::pid_t, i32> {
    spawn_vfork(flags, plan, fds, pid1_exec)
}

/// Pid 1 of the sandbox: sets up, forks the command, reaps every child and
/// exits when the command does (the kernel then kills what is left in the
/// PID namespace), after sending the command's wait status to the parent.
pub(super) fn pid1(plan: &Plan, fds: &Fds) -> ! {
    pid1_setup(plan, fds, [fds.report, fds.status]);
    for signal in FORWARDED {
        set_handler(signal, forward as *const () as libc::sighandler_t);
    }
    let pid = match spawn_command(plan, fds) {
        Ok(pid) => pid,
        Err(errno) => fail(fds.report, STEP_FORK, errno),
    };
    COMMAND.store(pid, Ordering::Relaxed);
    // SAFETY: pid 1's copy of the report pipe; the command keeps its own
    // until execve closes it, which is how the parent learns exec worked.
    unsafe { libc::close(fds.report) };
    loop {
        let mut status: c_int = 0;
        // SAFETY: waitpid with a valid status pointer.
        let reaped = unsafe { libc::waitpid(-1, &raw mut status, 0) };
        if reaped == pid {
            let bytes = status.to_ne_bytes();
            // SAFETY: `bytes` is a live buffer.
            unsafe { libc::write(fds.status, bytes.as_ptr().cast(), bytes.len()) };
            // SAFETY: see `fail`.
            unsafe { libc::_exit(0) };
        }
        if reaped < 0 && errno() != libc::EINTR {
            // SAFETY: see `fail`.
            unsafe { libc::_exit(EXIT_SETUP) };
        }
    }
}

/// Stack of a [`spawn_vfork`] child until its `execve`.
const COMMAND_STACK: usize = 512 * 1024;

/// Starts [`command`] as `posix_spawn` does (see [`spawn_vfork`]); pid 1
/// waits, suspended, until the child's `execve` or `_exit`, rather than
/// copying the page tables of what is a copy of the whole executor, only
/// to throw them away at `execve`. Returns the command's pid.
fn spawn_command(plan: &Plan, fds: &Fds) -> Result<libc::pid_t, i32> {
    spawn_vfork(0, plan, fds, command)
}

/// `clone(CLONE_VM | CLONE_VFORK | flags)` running `body` on a stack of
/// its own: the child shares this process's memory, and the caller waits,
/// suspended, until the child's `execve` or `_exit`. The child makes raw
/// calls only, on its own stack, and writes nothing the caller reads but
/// `errno`. Returns the child's pid.
fn spawn_vfork(
    flags: c_int,
    plan: &Plan,
    fds: &Fds,
    body: fn(&Plan, &Fds) -> !,
) -> Result<libc::pid_t, i32> {
    type Arg<'a> = (&'a Plan, &'a Fds, fn(&Plan, &Fds) -> !);
    extern "C" fn entry(arg: *mut libc::c_void) -> c_int {
        // SAFETY: `arg` is the `Arg` below, alive until this child execs
        // or exits (the caller is suspended until then).
        let (plan, fds, body) = unsafe { *arg.cast::<Arg<'_>>() };
        body(plan, fds)
    }
    // SAFETY: a fresh private anonymous mapping, unmapped below once the
    // child no longer uses it.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            COMMAND_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(errno());
    }
    let mut arg: Arg<'_> = (plan, fds, body);
    // SAFETY: the stack grows down from the end of the mapping; with
    // CLONE_VFORK this call returns only once the child has exec'd or
    // exited, so `arg` and the stack outlive its use of them.
    let pid = unsafe {
        libc::clone(
            entry,
            stack.cast::<u8>().add(COMMAND_STACK).cast(),
            flags | libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut arg).cast(),
        )
    };
    let failed = if pid < 0 { Some(errno()) } else { None };
    // SAFETY: the mapping made above, no longer used.
    unsafe { libc::munmap(stack, COMMAND_STACK) };
    failed.map_or(Ok(pid), Err)
}

/// The command: working directory, capabilities, identity, then `execve` through the
/// candidates as execvp does (ENOENT, ENOTDIR and EACCES try the next).
fn command(plan: &Plan, fds: &Fds) -> ! {
    for signal in FORWARDED {
        set_handler(signal, libc::SIG_DFL);
    }
    if let Err(err) = rustix::process::chdir(plan.cwd.as_c_str()) {
        fail(fds.report, STEP_CHDIR, raw(err));
    }
    if let Some(filter) = &plan.seccomp
        && let Err(errno) = filter.install()
    {
        fail(fds.report, STEP_SECCOMP, errno);
    }
    if !plan.keep_capabilities
        && let Err(errno) = drop_capabilities()
    {
        fail(fds.report, STEP_CAPABILITIES, errno);
    }
    let identity = (|| {
        if plan.set_groups {
            rustix::thread::set_thread_groups(&plan.groups)?;
        }
        rustix::thread::set_thread_gid(plan.gid)?;
        rustix::thread::set_thread_uid(plan.uid)
    })();
    if let Err(err) = identity {
        fail(fds.report, STEP_IDENTITY, raw(err));
    }
    let mut denied = false;
    for candidate in &plan.candidates {
        // SAFETY: NUL-terminated path and NULL-terminated pointer arrays
        // into `plan`, which outlives the call.
        unsafe {
            libc::execve(
                candidate.as_ptr(),
                plan.argv_ptrs.as_ptr(),
                plan.env_ptrs.as_ptr(),
            );
        }
        match errno() {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => denied = true,
            other => {
                report(fds.report, STEP_EXEC, other);
                // SAFETY: see `fail`.
                unsafe { libc::_exit(126) };
            }
        }
    }
    let (errno, status) = if denied {
        (libc::EACCES, 126)
    } else {
        (libc::ENOENT, 127)
    };
    report(fds.report, STEP_EXEC, errno);
    // SAFETY: see `fail`.
    unsafe { libc::_exit(status) }
}
