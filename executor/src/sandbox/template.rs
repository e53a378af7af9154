//! The mount namespace a sandbox starts from when the executor is root: an
//! empty read-only tmpfs as its root, with the host's devices bound in
//! `/dev`, an empty `/root` where the step's root is attached and an empty
//! `/empty` the sandbox binds over the directories it masks. Made
//! once per process, by a child that pivots into the tmpfs and detaches
//! the executor's tree, and kept by a descriptor of its namespace.
//!
//! Why: a sandbox made from a copy of the executor's own namespace must
//! `pivot_root` into its root and detach the old one before the command
//! may run, and every unmount waits for an RCU grace period (a fraction of
//! a millisecond when the other CPUs are idle, up to a millisecond when
//! they are not: measured on the 20-step bench, a third of each RUN's own
//! set-up). From this template there is nothing to detach: pid 1 joins it,
//! takes a private copy (`unshare`), attaches the root (a clone of its
//! mount the executor made with `open_tree`), mounts `/proc`, `/dev` ...
//! in it, moves it over the template's `/` and `chroot`s into it, as runc
//! does without `pivot_root`. What is left below the root is the template
//! (an empty read-only tmpfs and the device nodes the root's `/dev` has
//! anyway), under the mount that covers it: `..` from the root comes back
//! to it, `/proc/self/mountinfo` does not show it, and no host mount is in
//! the namespace (not even a `/proc` or `/sys` that would let a nested
//! user namespace mount an unmasked one).
//!
//! Where the template cannot be made or used (no `open_tree`, a seccomp
//! profile refusing `setns`, a user namespace: see [`check`]), sandboxes
//! pivot as before.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::Read as _;
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::sync::OnceLock;

use rustix::fs::{Mode, OFlags};
use rustix::mount::{MountFlags, MountPropagationFlags, MoveMountFlags, OpenTreeFlags};
use rustix::pipe::PipeFlags;
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

use super::child;

/// Where a sandbox attaches its root in the template.
pub(super) const ATTACH: &CStr = c"/root";

/// An empty directory of the template (read-only): a sandbox binds it
/// over the directories it masks, rather than mounting a tmpfs of its own.
pub(super) const EMPTY: &CStr = c"/empty";

/// The host devices the template holds at `/dev/<name>` (binds), for the
/// sandbox's `/dev` and its masks.
pub(super) const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

static TEMPLATE: OnceLock<Option<OwnedFd>> = OnceLock::new();

/// The template's namespace, made on first use (see the module); `None`
/// where it cannot be made or used here.
pub(super) fn get() -> Option<BorrowedFd<'static>> {
    TEMPLATE
        .get_or_init(|| {
            if !rustix::process::geteuid().is_root() {
                return None;
            }
            make()
                .inspect_err(|(step, errno)| {
                    let error = std::io::Error::from_raw_os_error(*errno);
                    tracing::debug!(%error, "no template mount namespace ({step}): sandboxes pivot");
                })
                .ok()
        })
        .as_ref()
        .map(OwnedFd::as_fd)
}

/// Steps of the template's making and checking, as the child reports them.
const STEPS: [&str; 11] = [
    "opening its namespace",
    "making the mounts private",
    "mounting the tmpfs",
    "making /dev, /root and /empty",
    "binding the devices",
    "making the tmpfs read-only",
    "pivoting into it",
    "joining and copying it",
    "attaching a root and moving it over /",
    "mounting a /proc in it",
    "mounting a /sys in it",
];

/// The C strings the child works from, made before the fork.
struct Paths {
    scratch: CString,
    dev: CString,
    root: CString,
    empty: CString,
    devices: Vec<(CString, CString)>,
}

fn c_string(bytes: &[u8]) -> Result<CString, (&'static str, i32)> {
    CString::new(bytes).map_err(|_| ("a path", libc::EINVAL))
}

/// Makes the template in a child, checks that a sandbox can use it, and
/// returns its namespace.
fn make() -> Result<OwnedFd, (&'static str, i32)> {
    let scratch = tempfile::Builder::new()
        .prefix("executor-template-")
        .tempdir()
        .map_err(|e| ("a scratch directory", e.raw_os_error().unwrap_or(libc::EIO)))?;
    let base = scratch.path();
    let paths = Paths {
        scratch: c_string(base.as_os_str().as_bytes())?,
        dev: c_string(base.join("dev").as_os_str().as_bytes())?,
        root: c_string(base.join("root").as_os_str().as_bytes())?,
        empty: c_string(base.join("empty").as_os_str().as_bytes())?,
        devices: DEVICES
            .iter()
            .map(|name| {
                Ok((
                    c_string(format!("/dev/{name}").as_bytes())?,
                    c_string(base.join("dev").join(name).as_os_str().as_bytes())?,
                ))
            })
            .collect::<Result<_, _>>()?,
    };
    // What the check attaches as a root: a clone of the scratch directory.
    let probe_root = rustix::mount::open_tree(
        rustix::fs::CWD,
        base,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(|e| ("open_tree", e.raw_os_error()))?;
    let pipe =
        || rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| ("a pipe", e.raw_os_error()));
    let (report_read, report_write) = pipe()?;
    let (go_read, go_write) = pipe()?;
    // SAFETY: the child runs `build` and `check` (raw system calls on the
    // C strings prepared above), `child::report` and _exit.
    let pid = match unsafe { child::clone(libc::CLONE_NEWNS) } {
        Ok(0) => {
            // The parent's ends (the check waits for the end of `go`), and
            // every other descriptor the executor's threads hold; never
            // dropped here, as this child ends in _exit.
            child::close_inherited([
                report_write.as_raw_fd(),
                go_read.as_raw_fd(),
                probe_root.as_raw_fd(),
            ]);
            let code = match build(&paths).and_then(|own| {
                child::report(report_write.as_raw_fd(), u32::MAX, 0);
                let mut byte = [0u8; 1];
                let _ = rustix::io::read(&go_read, &mut byte);
                check(&own, &probe_root)
            }) {
                Ok(()) => 0,
                Err((step, errno)) => {
                    child::report(report_write.as_raw_fd(), step, errno);
                    1
                }
            };
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(code) }
        }
        Ok(pid) => pid,
        Err(errno) => return Err(("clone", errno)),
    };
    drop((report_write, go_read, probe_root));
    let mut report = File::from(report_read);
    let mut message = [0u8; 8];
    let made = report.read_exact(&mut message).is_ok() && failed(&message).is_none();
    // Opened while the child holds the namespace, before its check
    // leaves it.
    let namespace = made
        .then(|| {
            rustix::fs::open(
                format!("/proc/{pid}/ns/mnt").as_str(),
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        })
        .transpose();
    drop(go_write);
    let mut rest = Vec::new();
    let _ = report.read_to_end(&mut rest);
    super::probe::reap(pid);
    drop(scratch);
    let namespace = namespace.map_err(|e| ("opening its namespace", e.raw_os_error()))?;
    match (namespace, failed(&message).or_else(|| failed(&rest))) {
        (_, Some(failure)) => Err(failure),
        (Some(namespace), None) => Ok(namespace),
        (None, None) => Err(("the child", libc::ECHILD)),
    }
}

/// The failure a child's report holds, if it holds one.
fn failed(message: &[u8]) -> Option<(&'static str, i32)> {
    let (step, errno) = child::read_report(message)?;
    (step != u32::MAX).then(|| {
        let name = usize::try_from(step)
            .ok()
            .and_then(|step| STEPS.get(step))
            .copied()
            .unwrap_or("a step");
        (name, errno)
    })
}

fn at(step: u32) -> impl Fn(rustix::io::Errno) -> (u32, i32) {
    move |err| (step, err.raw_os_error())
}

/// In the child, a new mount namespace: turns it into the template and
/// returns a descriptor of it (raw calls only).
fn build(paths: &Paths) -> Result<OwnedFd, (u32, i32)> {
    let own = rustix::fs::open(
        c"/proc/self/ns/mnt",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(at(0))?;
    rustix::mount::mount_change(
        c"/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(at(1))?;
    let flags = MountFlags::NOSUID | MountFlags::NOEXEC;
    rustix::mount::mount(
        c"tmpfs",
        paths.scratch.as_c_str(),
        c"tmpfs",
        flags,
        Some(c"mode=755,size=16k"),
    )
    .map_err(at(2))?;
    for dir in [&paths.dev, &paths.root, &paths.empty] {
        rustix::fs::mkdir(dir.as_c_str(), Mode::from_raw_mode(0o755)).map_err(at(3))?;
    }
    for (source, target) in &paths.devices {
        let create = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        drop(
            rustix::fs::open(target.as_c_str(), create, Mode::from_raw_mode(0o666))
                .map_err(at(4))?,
        );
        match rustix::mount::mount_bind(source.as_c_str(), target.as_c_str()) {
            Ok(()) => {}
            // A device the host lacks is left out, as the sandbox does.
            Err(rustix::io::Errno::NOENT) => {
                rustix::fs::unlink(target.as_c_str()).map_err(at(4))?;
            }
            Err(err) => return Err(at(4)(err)),
        }
    }
    rustix::mount::mount_remount(paths.scratch.as_c_str(), flags | MountFlags::RDONLY, c"")
        .map_err(at(5))?;
    child::pivot(&paths.scratch).map_err(|errno| (6, errno))?;
    Ok(own)
}

/// In the child, once the parent holds the template: what a sandbox does
/// with it, on a copy (raw calls only), down to mounting a `/proc` and a
/// `/sys`. Outside the initial user namespace (a rootless executor's own,
/// a pod's with `hostUsers: false`) the kernel refuses those where no
/// `/proc` or `/sys` of the namespace is fully visible, and the template
/// has none (on purpose): sandboxes there pivot from a copy of the
/// executor's namespace, which has the host's.
fn check(template: &OwnedFd, root: &OwnedFd) -> Result<(), (u32, i32)> {
    enter(template.as_fd()).map_err(at(7))?;
    attach(root.as_fd(), ATTACH).map_err(at(8))?;
    rustix::process::chdir(ATTACH).map_err(at(8))?;
    move_root().map_err(at(8))?;
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    rustix::mount::mount(c"proc", c"/", c"proc", flags, None).map_err(at(9))?;
    rustix::mount::mount(c"sysfs", c"/", c"sysfs", flags | MountFlags::RDONLY, None).map_err(at(10))
}

/// Joins the template's namespace and takes a private copy of it.
pub(super) fn enter(template: BorrowedFd<'_>) -> rustix::io::Result<()> {
    rustix::thread::move_into_link_name_space(template, Some(LinkNameSpaceType::Mount))?;
    // SAFETY: NEWNS alone touches no descriptor table.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS) }
}

/// Attaches the detached mount `mount` (an `open_tree` clone) at `target`.
pub(super) fn attach(mount: BorrowedFd<'_>, target: &CStr) -> rustix::io::Result<()> {
    rustix::mount::move_mount(
        mount,
        c"",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
}

/// Moves the mount at the working directory (the root, attached) over the
/// template's `/` and makes it the process's root.
pub(super) fn move_root() -> rustix::io::Result<()> {
    rustix::mount::mount_move(c".", c"/")?;
    rustix::process::chroot(c".")?;
    rustix::process::chdir(c"/")
}

#[cfg(test)]
mod tests {
    /// As root (these tests run as root) every sandbox starts from the
    /// template, so the sandbox's tests exercise it.
    #[test]
    fn the_template_is_made_as_root() {
        assert!(
            rustix::process::geteuid().is_root(),
            "run the tests as root"
        );
        assert!(super::get().is_some());
    }
}
