//! Whether the sandbox can work here: namespaces, mounts and `pivot_root`
//! tried in a throwaway child, so a restricted pod fails at start with a
//! message naming what is missing and what to grant.

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::ffi::OsStrExt as _;

use rustix::mount::{MountFlags, MountPropagationFlags};
use rustix::pipe::PipeFlags;

use super::child::{self, UserMaps};

/// What to grant, for every failure.
const HINT: &str = "hint: the sandbox needs CAP_SYS_ADMIN and a seccomp profile that allows unshare, mount and pivot_root (Kubernetes: securityContext.capabilities.add [SYS_ADMIN] and seccompProfile.type Unconfined, AppArmor unconfined), or `hostUsers: false` on a node with user namespaces enabled";

/// The sandbox cannot run here.
#[derive(Debug, Clone)]
pub struct Unavailable {
    /// What failed, e.g. "cannot create a mount namespace".
    pub what: String,
    /// The error number the kernel answered with.
    pub errno: i32,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = std::io::Error::from_raw_os_error(self.errno).to_string();
        let text = text.split(" (os error").next().unwrap_or_default();
        let mut chars = text.chars();
        let text: String = chars
            .next()
            .map(|first| first.to_lowercase().chain(chars).collect())
            .unwrap_or_default();
        write!(f, "{}: {text}\n{HINT}", self.what)
    }
}

impl std::error::Error for Unavailable {}

fn unavailable(what: impl Into<String>, errno: i32) -> Unavailable {
    Unavailable {
        what: what.into(),
        errno,
    }
}

pub(super) fn reap(pid: i32) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: waitpid with a valid status pointer.
        let result = unsafe { libc::waitpid(pid, &raw mut status, 0) };
        if result == pid || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return status;
        }
    }
}

/// Steps of the mount check, reported by the child.
const STEPS: [&str; 4] = [
    "cannot write the user namespace's id maps",
    "cannot make the mounts private",
    "cannot mount a tmpfs",
    "cannot pivot_root",
];

fn mount_check(scratch: &CString, maps: Option<&UserMaps>) -> Result<(), (u32, i32)> {
    if let Some(maps) = maps {
        maps.apply().map_err(|errno| (0, errno))?;
    }
    rustix::mount::mount_change(
        c"/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(|err| (1, err.raw_os_error()))?;
    rustix::mount::mount(
        c"tmpfs",
        scratch.as_c_str(),
        c"tmpfs",
        MountFlags::empty(),
        None,
    )
    .map_err(|err| (2, err.raw_os_error()))?;
    child::pivot(scratch).map_err(|errno| (3, errno))
}

/// Whether namespaces, mounts and pivot_root work here; Err names what is
/// missing (capability, seccomp, user namespaces) and what to grant.
pub fn probe() -> Result<(), Unavailable> {
    let rootless = !rustix::process::geteuid().is_root();
    let mut namespaces = Vec::new();
    if rootless {
        namespaces.push((libc::CLONE_NEWUSER, "user"));
    }
    namespaces.extend([
        (libc::CLONE_NEWNS, "mount"),
        (libc::CLONE_NEWPID, "PID"),
        (libc::CLONE_NEWIPC, "IPC"),
        (libc::CLONE_NEWUTS, "UTS"),
    ]);
    let flags = namespaces.iter().fold(0, |flags, (flag, _)| flags | flag);
    // All namespaces in one child, which checks the mounts: where that
    // works (almost everywhere a build runs) it is the whole probe. Where
    // the namespaces cannot be made, a child per namespace added finds
    // which one, for the message.
    match mount_probe(flags, rootless) {
        Err(Probed::Clone(errno)) => Err(missing_namespace(&namespaces)
            .unwrap_or_else(|| unavailable("cannot create the sandbox's namespaces", errno))),
        Err(Probed::Unavailable(unavailable)) => Err(unavailable),
        Ok(()) => {
            // The namespace the sandboxes start from, made here (a build
            // probes while it resolves its base) rather than on the first
            // RUN's path.
            super::template::get();
            Ok(())
        }
    }
}

/// Why [`mount_probe`] failed: its child could not be made, or it was and
/// said what it could not do.
enum Probed {
    Clone(i32),
    Unavailable(Unavailable),
}

/// The first of `namespaces` that a child cannot be made in, with those
/// before it.
fn missing_namespace(namespaces: &[(i32, &str)]) -> Option<Unavailable> {
    let mut flags = 0;
    for (flag, name) in namespaces {
        flags |= flag;
        // SAFETY: the child only calls _exit.
        match unsafe { child::clone(flags) } {
            // SAFETY: _exit is async-signal-safe.
            Ok(0) => unsafe { libc::_exit(0) },
            Ok(pid) => {
                reap(pid);
            }
            Err(errno) => {
                return Some(unavailable(
                    format!("cannot create a {name} namespace"),
                    errno,
                ));
            }
        }
    }
    None
}

/// A child in the namespaces `flags` runs [`mount_check`] in a scratch
/// directory and reports the step that failed.
fn mount_probe(flags: i32, rootless: bool) -> Result<(), Probed> {
    let scratch = tempfile::Builder::new()
        .prefix("executor-probe-")
        .tempdir()
        .map_err(|err| {
            Probed::Unavailable(unavailable(
                "cannot create a temporary directory",
                err.raw_os_error().unwrap_or(libc::EIO),
            ))
        })?;
    let path = CString::new(scratch.path().as_os_str().as_bytes()).map_err(|_| {
        Probed::Unavailable(unavailable(
            "cannot use the temporary directory",
            libc::EINVAL,
        ))
    })?;
    let maps = rootless.then(UserMaps::for_caller);
    let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|err| {
        Probed::Unavailable(unavailable("cannot create a pipe", err.raw_os_error()))
    })?;
    // SAFETY: the child only runs `mount_check` (raw system calls on
    // prepared C strings), `child::report` and _exit.
    let pid = match unsafe { child::clone(flags) } {
        Ok(0) => {
            // Nothing of the executor's held while the check runs.
            child::close_inherited([write.as_raw_fd()]);
            let code = match mount_check(&path, maps.as_ref()) {
                Ok(()) => 0,
                Err((step, errno)) => {
                    child::report(write.as_raw_fd(), step, errno);
                    1
                }
            };
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(code) }
        }
        Ok(pid) => pid,
        Err(errno) => return Err(Probed::Clone(errno)),
    };
    drop(write);
    let mut message = Vec::new();
    let _ = File::from(read).read_to_end(&mut message);
    reap(pid);
    drop(scratch);
    if let Some((step, errno)) = child::read_report(&message) {
        let what = usize::try_from(step)
            .ok()
            .and_then(|step| STEPS.get(step))
            .copied()
            .unwrap_or("cannot set up mounts");
        return Err(Probed::Unavailable(unavailable(what, errno)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_works_here() {
        probe().unwrap();
    }

    #[test]
    fn unavailable_names_the_failure_and_the_remedy() {
        let err = unavailable("cannot create a mount namespace", libc::EPERM);
        let text = err.to_string();
        assert!(
            text.starts_with("cannot create a mount namespace: operation not permitted\nhint: "),
            "{text}"
        );
        assert!(text.contains("CAP_SYS_ADMIN") && text.contains("hostUsers: false"));
    }
}
