//! Builds without root that keep the image's own ids, as podman and
//! buildah have them (containers/storage `pkg/unshare`, buildah's
//! `MaybeReexecUsingUserNamespace`): [`reexec_in_user_namespace`] runs the
//! executor again, as it was started, in a user namespace whose maps
//! `newuidmap` and `newgidmap` (Debian's `uidmap`) wrote from the caller's
//! `/etc/subuid` and `/etc/subgid` ranges: namespace id 0 is the caller,
//! 1 and up are the ranges in file order. In there the executor is root of
//! its namespace, which the rest of it already knows how to be (a pod with
//! `hostUsers: false` is the same): layers are extracted and files chowned
//! to the image's own ids, overlays mounted with `userxattr`, RUN switches
//! to any user, and layers are written with the ids as the namespace sees
//! them. The ids on disk are the host's subordinate ids, which the next
//! build of the same user (same ranges) sees as the same image ids. This
//! module is the one place that enters the namespace.
//!
//! The process that re-executes stays as a waiter: it forwards SIGINT,
//! SIGTERM, SIGHUP and SIGQUIT to the build and ends as the build ends (its
//! exit status, or the signal that killed it); the build dies with it
//! (`PR_SET_PDEATHSIG`), as a `kill -9` of the executor would kill a build
//! run directly.
//!
//! Without a range, the tools or user namespaces, the executor stays the
//! caller, and each RUN's user namespace maps the caller alone to root
//! (the single-id mode, as before): other users have no ids there, and
//! what fails for it says why and how to get a range ([`single_id_hint`]);
//! in the namespace, an id past the ranges says what is mapped
//! ([`unmapped_hint`]).
//! A malformed entry for the caller in either file is an error, not a
//! fallback: the administrator meant to give a range.

use std::ffi::{CStr, CString, OsString, c_char, c_int};
use std::fmt;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd as _, RawFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use rustix::pipe::PipeFlags;

use super::child;
use super::subid::{self, Owner, Range, SubidError};

/// Set in the re-executed executor's environment: the pid of the waiter.
const PARENT_VAR: &str = "_EXECUTOR_USERNS_PARENT";

/// The kernel's limit on the lines of an id map (Linux 4.15 and later).
const MAX_MAP_LINES: usize = 340;

/// Why the executor could not enter its user namespace.
#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    #[error(transparent)]
    Subid(#[from] SubidError),
    #[error("cannot prepare the user namespace: {what}")]
    Prepare {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot run the executor again in its user namespace ({})", exe.display())]
    Exec {
        exe: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot wait for the executor in its user namespace")]
    Wait {
        #[source]
        source: io::Error,
    },
}

type Result<T, E = RootlessError> = std::result::Result<T, E>;

/// Why the single-id mode is in use.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SingleId {
    /// The caller has no range in `file`.
    NoRange { file: &'static str, user: String },
    /// `tool` is nowhere on `PATH`.
    NoTool { tool: &'static str },
    /// A tool or the kernel refused.
    Failed { what: String },
}

impl fmt::Display for SingleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SingleId::NoRange { file, user } => write!(f, "{user} has no range in {file}"),
            SingleId::NoTool { tool } => write!(
                f,
                "{tool} is not installed (Debian and Ubuntu: apt-get install uidmap; Fedora: shadow-utils)"
            ),
            SingleId::Failed { what } => f.write_str(what),
        }
    }
}

/// Why this process is in the single-id mode, once it has tried to leave
/// it; and the caller's name for the hint.
static SINGLE_ID: OnceLock<(SingleId, String)> = OnceLock::new();

/// The `hint:` line for what the single-id mode cannot do (a RUN as
/// another user, a file owned by another id): why the mode is in use, when
/// known, and how to get a range.
#[must_use]
pub fn single_id_hint() -> String {
    let (why, user) = match SINGLE_ID.get() {
        Some((why, user)) => (format!("since {why}"), user.as_str()),
        None => ("without a subordinate id range".to_owned(), "USER"),
    };
    format!(
        "hint: without root, only your own id is mapped (to root) {why}, so no other user or group has an id; \
         for the image's own ids, give the user a subordinate range (as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}) \
         and install newuidmap and newgidmap (Debian and Ubuntu: apt-get install uidmap)"
    )
}

/// The `hint:` line for an id the build cannot switch to or give a file
/// (`EINVAL` from setuid, chown ...): without root, the single-id mode's
/// ([`single_id_hint`]); in the namespace of [`reexec_in_user_namespace`],
/// which ids it maps and how to get more; `None` for root of the machine
/// (any id is there).
#[must_use]
pub fn unmapped_hint() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some(single_id_hint());
    }
    std::env::var_os(PARENT_VAR)?;
    let mapped = |file: &str| {
        std::fs::read_to_string(file).ok().map(|map| {
            map.lines()
                .filter_map(|line| line.split_whitespace().nth(2)?.parse::<u64>().ok())
                .sum::<u64>()
        })
    };
    let (uids, gids) = (mapped("/proc/self/uid_map")?, mapped("/proc/self/gid_map")?);
    Some(format!(
        "hint: this build runs in a user namespace that maps uids 0 to {} and gids 0 to {} (you, then your ranges in /etc/subuid and /etc/subgid); \
         a higher id needs a larger range (as root: usermod --add-subuids FIRST-LAST --add-subgids FIRST-LAST USER)",
        uids.saturating_sub(1),
        gids.saturating_sub(1)
    ))
}

/// Runs this executor again, with the same arguments and environment, as
/// root of a user namespace mapping the caller's subordinate ranges (see
/// the module doc), and waits for it: `Some(status)` is then its exit
/// status, for the caller to exit with. `None` when this process is to go
/// on by itself: it is root already (of the machine, or of the namespace
/// made for it), or the single-id mode is in use (logged, and kept for
/// [`single_id_hint`]).
///
/// Call it before any thread starts.
pub fn reexec_in_user_namespace() -> Result<Option<ExitCode>> {
    if let Some(parent) = std::env::var_os(PARENT_VAR) {
        stay_with(&parent);
        return Ok(None);
    }
    if rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let uid = rustix::process::getuid().as_raw();
    let owner = Owner {
        name: user_name(uid),
        uid,
    };
    let user = owner.name.clone().unwrap_or_else(|| uid.to_string());
    let single_id = |why: SingleId| {
        let _ = SINGLE_ID.set((why, user.clone()));
        Ok(None)
    };
    let maps = match Maps::for_caller(&owner)? {
        Ok(maps) => maps,
        Err(why) => {
            tracing::debug!("RUN maps only the caller: {why}");
            return single_id(why);
        }
    };
    match maps.run()? {
        Ok(status) => Ok(Some(status)),
        Err(why) => {
            tracing::warn!("RUN maps only the caller: {why}");
            single_id(why)
        }
    }
}

/// In the re-executed executor: dies with the waiter, and exits at once
/// when the waiter has died already.
fn stay_with(parent: &std::ffi::OsStr) {
    if let Err(e) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
    {
        tracing::debug!("no parent-death signal: {e}");
    }
    let parent: Option<i32> = parent.to_str().and_then(|pid| pid.parse().ok());
    let current = rustix::process::getppid().map(rustix::process::Pid::as_raw_nonzero);
    if parent != current.map(std::num::NonZero::get) {
        std::process::exit(125);
    }
}

/// The caller's name in the host's user database, if it has one.
#[allow(unsafe_code)]
fn user_name(uid: u32) -> Option<String> {
    let mut size = 4096;
    loop {
        let mut buffer: Vec<c_char> = vec![0; size];
        // SAFETY: passwd is plain old data; all-zero is a valid value.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is to live storage of the stated size;
        // the strings `entry` gets point into `buffer`.
        let result = unsafe {
            libc::getpwuid_r(
                uid,
                &raw mut entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                &raw mut found,
            )
        };
        if result == libc::ERANGE && size < 1 << 20 {
            size *= 4;
            continue;
        }
        if result != 0 || found.is_null() || entry.pw_name.is_null() {
            return None;
        }
        // SAFETY: getpwuid_r succeeded: pw_name is a NUL-terminated string
        // in `buffer`, which is still alive.
        let name = unsafe { CStr::from_ptr(entry.pw_name) };
        return Some(name.to_string_lossy().into_owned());
    }
}

/// `name` in `PATH`, else in the usual directories (a login shell's
/// `PATH` may lack `/usr/sbin`, and a CI job's may be short).
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// The arguments of `newuidmap`/`newgidmap` after the pid: the caller's
/// own `id` as 0, then `ranges` from 1 on. A range that holds `id` is left
/// out (the kernel refuses overlapping maps), as are ranges past the
/// kernel's line limit or the last namespace id.
fn map_arguments(id: u32, ranges: &[Range]) -> Vec<u32> {
    let mut arguments = vec![0, id, 1];
    let mut next: u32 = 1;
    for range in ranges {
        if arguments.len() / 3 == MAX_MAP_LINES {
            break;
        }
        if (range.first..=range.first.saturating_add(range.count - 1)).contains(&id) {
            tracing::debug!(
                first = range.first,
                count = range.count,
                "subordinate range holding the caller's own id left out"
            );
            continue;
        }
        // 4294967295 is no id (it means -1).
        let count = range.count.min(u32::MAX - next);
        if count == 0 {
            break;
        }
        arguments.extend([next, range.first, count]);
        next += count;
    }
    arguments
}

/// What the waiter needs to map the namespace: `newuidmap` and
/// `newgidmap`, each with its arguments after the pid.
struct Maps {
    writers: Vec<(PathBuf, Vec<u32>)>,
}

impl Maps {
    /// The maps of `owner` (the caller), or why there are none.
    fn for_caller(owner: &Owner) -> Result<std::result::Result<Maps, SingleId>> {
        let user = owner.name.clone().unwrap_or_else(|| owner.uid.to_string());
        let mut found = Vec::new();
        for file in ["/etc/subuid", "/etc/subgid"] {
            let ranges = subid::ranges(Path::new(file), owner)?;
            if ranges.is_empty() {
                return Ok(Err(SingleId::NoRange { file, user }));
            }
            found.push(ranges);
        }
        let ids = [owner.uid, rustix::process::getgid().as_raw()];
        let mut writers = Vec::new();
        for ((tool, id), ranges) in ["newuidmap", "newgidmap"].into_iter().zip(ids).zip(found) {
            match find_tool(tool) {
                Some(path) => writers.push((path, map_arguments(id, &ranges))),
                None => return Ok(Err(SingleId::NoTool { tool })),
            }
        }
        Ok(Ok(Maps { writers }))
    }

    /// Starts the executor again in a new user namespace, maps it, lets it
    /// exec and waits for it. `Err` (inside) when the namespace or its maps
    /// cannot be had: the child is gone then, and this process goes on in
    /// the single-id mode.
    fn run(&self) -> Result<std::result::Result<ExitCode, SingleId>> {
        let exe = PathBuf::from("/proc/self/exe");
        let plan = ExecPlan::new(&exe)?;
        let prepare = |what| {
            move |e: rustix::io::Errno| RootlessError::Prepare {
                what,
                source: e.into(),
            }
        };
        let (go_read, go_write) =
            rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(prepare("a pipe"))?;
        let (report_read, report_write) =
            rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(prepare("a pipe"))?;
        let waiter = rustix::process::getpid().as_raw_nonzero().get();
        let fds = ChildFds {
            go: go_read.as_raw_fd(),
            go_other_end: go_write.as_raw_fd(),
            report: report_write.as_raw_fd(),
        };
        // SAFETY: the child only runs `exec_when_mapped`: raw system calls
        // on the prepared plan, ending in execve or _exit.
        let pid = match unsafe { child::clone(libc::CLONE_NEWUSER) } {
            Ok(0) => exec_when_mapped(&plan, fds, waiter),
            Ok(pid) => pid,
            Err(errno) => {
                return Ok(Err(SingleId::Failed {
                    what: format!(
                        "cannot create a user namespace: {}",
                        io::Error::from_raw_os_error(errno)
                    ),
                }));
            }
        };
        drop((go_read, report_write));
        let mapped = self
            .writers
            .iter()
            .try_for_each(|(tool, arguments)| write_map(tool, pid, arguments));
        if let Err(why) = mapped {
            // The child reads the end of the pipe and exits.
            drop(go_write);
            wait(pid)?;
            return Ok(Err(why));
        }
        let mut go = File::from(go_write);
        let sent = go.write_all(b"1");
        drop(go);
        let mut report = Vec::new();
        let _ = File::from(report_read).read_to_end(&mut report);
        if let Err(source) = sent {
            wait(pid)?;
            return Err(RootlessError::Exec { exe, source });
        }
        if let Ok(errno) = <[u8; 4]>::try_from(report.as_slice()) {
            wait(pid)?;
            return Err(RootlessError::Exec {
                exe,
                source: io::Error::from_raw_os_error(i32::from_ne_bytes(errno)),
            });
        }
        tracing::debug!(maps = ?self.writers, "running again in a user namespace");
        CHILD.store(pid, Ordering::SeqCst);
        for signal in FORWARDED {
            child::set_handler(signal, forward as *const () as libc::sighandler_t);
        }
        let status = wait(pid)?;
        Ok(Ok(exit_code(status)))
    }
}

/// Runs `tool pid arguments...`; why not, when it fails.
fn write_map(tool: &Path, pid: i32, arguments: &[u32]) -> std::result::Result<(), SingleId> {
    let mut command = Command::new(tool);
    command
        .arg(pid.to_string())
        .args(arguments.iter().map(u32::to_string))
        .stdin(Stdio::null());
    let mut shown = tool.display().to_string();
    for argument in command.get_args() {
        shown.push(' ');
        shown.push_str(&argument.to_string_lossy());
    }
    match command.output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(SingleId::Failed {
            what: format!(
                "`{shown}` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        }),
        Err(e) => Err(SingleId::Failed {
            what: format!("cannot run `{shown}`: {e}"),
        }),
    }
}

/// The signals the waiter passes on to the build.
const FORWARDED: [c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// The build's pid, for [`forward`].
static CHILD: AtomicI32 = AtomicI32::new(0);

#[allow(unsafe_code)]
extern "C" fn forward(signal: c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Reaps `pid`; its wait status.
#[allow(unsafe_code)]
fn wait(pid: i32) -> Result<c_int> {
    let mut status: c_int = 0;
    loop {
        // SAFETY: waitpid with a valid status pointer.
        if unsafe { libc::waitpid(pid, &raw mut status, 0) } == pid {
            return Ok(status);
        }
        let source = io::Error::last_os_error();
        if source.kind() != io::ErrorKind::Interrupted {
            return Err(RootlessError::Wait { source });
        }
    }
}

/// The build's exit status as this process's; a build killed by a signal
/// kills the waiter with it (or, should that signal not kill it, 128 plus
/// its number, as a shell reports it).
#[allow(unsafe_code)]
fn exit_code(status: c_int) -> ExitCode {
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        child::set_handler(signal, libc::SIG_DFL);
        // SAFETY: kill(2) of this process with the build's signal.
        unsafe { libc::kill(libc::getpid(), signal) };
        return ExitCode::from(u8::try_from(128 + signal).unwrap_or(u8::MAX));
    }
    ExitCode::from(u8::try_from(libc::WEXITSTATUS(status)).unwrap_or(1))
}

/// The executor's command line and environment as C strings, with
/// [`PARENT_VAR`] set, ready for an `execve` after `clone`.
struct ExecPlan {
    exe: CString,
    _strings: Vec<CString>,
    argv: Vec<*const c_char>,
    env: Vec<*const c_char>,
}

impl ExecPlan {
    fn new(exe: &Path) -> Result<Self> {
        let c_string = |bytes: Vec<u8>| {
            CString::new(bytes).map_err(|e| RootlessError::Prepare {
                what: "the command line and environment",
                source: io::Error::new(io::ErrorKind::InvalidInput, e),
            })
        };
        let exe = c_string(exe.as_os_str().as_bytes().to_vec())?;
        let argv: Vec<CString> = std::env::args_os()
            .map(OsString::into_vec)
            .map(c_string)
            .collect::<Result<_>>()?;
        let waiter = rustix::process::getpid().as_raw_nonzero();
        let env: Vec<CString> = std::env::vars_os()
            .filter(|(key, _)| key != PARENT_VAR)
            .map(|(key, value)| {
                let mut entry = key.into_vec();
                entry.push(b'=');
                entry.extend(value.as_bytes());
                entry
            })
            .chain([format!("{PARENT_VAR}={waiter}").into_bytes()])
            .map(c_string)
            .collect::<Result<_>>()?;
        let pointers = |strings: &[CString]| {
            strings
                .iter()
                .map(|string| string.as_ptr())
                .chain([std::ptr::null()])
                .collect::<Vec<_>>()
        };
        let (argv_ptrs, env_ptrs) = (pointers(&argv), pointers(&env));
        Ok(Self {
            exe,
            _strings: argv.into_iter().chain(env).collect(),
            argv: argv_ptrs,
            env: env_ptrs,
        })
    }
}

/// The pipes the child uses.
#[derive(Clone, Copy)]
struct ChildFds {
    /// Read end: one byte `1` once the maps are written.
    go: RawFd,
    /// The waiter's end of it, closed in the child.
    go_other_end: RawFd,
    /// Write end: the `execve` errno when it fails (closed by a
    /// successful exec).
    report: RawFd,
}

/// The child, in its new user namespace: dies with the waiter, waits until
/// its maps are written, then execs the executor again (as root of the
/// namespace, so with its full capabilities there). Raw calls only: the
/// waiter may have threads.
#[allow(unsafe_code)]
fn exec_when_mapped(plan: &ExecPlan, fds: ChildFds, waiter: i32) -> ! {
    // SAFETY: each call below is async-signal-safe and works on live
    // buffers or prepared C strings; the child ends in execve or _exit.
    unsafe {
        libc::close(fds.go_other_end);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != waiter {
            libc::_exit(125);
        }
        let mut byte = 0u8;
        loop {
            let read = libc::read(fds.go, (&raw mut byte).cast(), 1);
            if read == 1 && byte == b'1' {
                break;
            }
            if read < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            libc::_exit(125);
        }
        libc::execve(plan.exe.as_ptr(), plan.argv.as_ptr(), plan.env.as_ptr());
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
            .to_ne_bytes();
        libc::write(fds.report, errno.as_ptr().cast(), errno.len());
        libc::_exit(127)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_is_root_and_the_ranges_follow() {
        let ranges = [
            Range {
                first: 100_000,
                count: 65536,
            },
            Range {
                first: 300_000,
                count: 10,
            },
        ];
        assert_eq!(
            map_arguments(1000, &ranges),
            [0, 1000, 1, 1, 100_000, 65536, 65537, 300_000, 10]
        );
        // A range holding the caller's own id would overlap its line.
        let holding = [
            Range {
                first: 500,
                count: 1000,
            },
            ranges[1],
        ];
        assert_eq!(map_arguments(1000, &holding), [0, 1000, 1, 1, 300_000, 10]);
        // Namespace ids stop below 4294967295 (-1).
        let huge = [
            Range {
                first: 100,
                count: u32::MAX - 200,
            },
            Range {
                first: 10,
                count: 500,
            },
            Range {
                first: 60,
                count: 5,
            },
        ];
        assert_eq!(
            map_arguments(7, &huge),
            [0, 7, 1, 1, 100, u32::MAX - 200, u32::MAX - 199, 10, 199]
        );
        // At most the kernel's 340 lines.
        let many: Vec<Range> = (0..400)
            .map(|i| Range {
                first: 100_000 + i * 10,
                count: 10,
            })
            .collect();
        assert_eq!(map_arguments(7, &many).len(), 3 * MAX_MAP_LINES);
    }

    #[test]
    fn the_hint_says_how_to_get_a_range() {
        let hint = single_id_hint();
        assert!(hint.starts_with("hint: without root"), "{hint}");
        assert!(hint.contains("usermod --add-subuids"), "{hint}");
        assert!(hint.contains("apt-get install uidmap"), "{hint}");
        let why = SingleId::NoTool { tool: "newuidmap" };
        assert!(why.to_string().contains("apt-get install uidmap"), "{why}");
        let why = SingleId::NoRange {
            file: "/etc/subuid",
            user: "alice".into(),
        };
        assert_eq!(why.to_string(), "alice has no range in /etc/subuid");
    }

    #[test]
    fn tools_are_found_on_path_or_in_the_usual_places() {
        assert_eq!(find_tool("sh").map(|p| p.is_file()), Some(true));
        assert_eq!(find_tool("executor-no-such-tool"), None);
    }
}
