//! The seccomp filter of a sandboxed command (a RUN step, a script job):
//! Docker's default profile by default, a Docker-format profile from a file
//! (`--security-opt seccomp=PATH`), or none (`seccomp=unconfined`). This
//! module reads profiles and turns them into a classic BPF program before
//! the fork; the child only installs the prepared program (raw calls).
//!
//! The default is Docker's own `profiles/seccomp/default.json`, embedded
//! unchanged (`seccomp/docker-default.json`; Apache-2.0, Copyright Docker,
//! Inc.), as Debian ships it in `golang-github-docker-docker-dev`
//! 26.1.5+dfsg1-9+deb13u1, i.e. moby v26.1.5. Its semantics, as moby's
//! `setupSeccomp` and runc give them, are kept:
//! - every system call not allowed fails with the default action,
//!   `ERRNO(EPERM)` (`defaultErrnoRet`, EPERM when absent);
//! - a rule applies when its `includes` hold and its `excludes` do not:
//!   `arches` against the native architecture (Go's names: `amd64`, `arm64`,
//!   `x86`...), `caps` against the command's bounding set (every included
//!   capability present, no excluded one), `minKernel` against `uname`;
//! - argument conditions (`SCMP_CMP_EQ`, `NE`, `LT`, `LE`, `GE`, `GT`,
//!   `MASKED_EQ` with `value` the mask and `valueTwo` the datum) compare all
//!   64 bits; one rule's conditions must all hold, except that a rule naming
//!   one argument twice becomes one rule per condition (runc's rule);
//! - a syscall's rules are tried in the profile's order, the first that
//!   matches decides; a rule whose action is the default action is dropped
//!   (as runc does);
//! - the filter covers the native architecture and the sub-architectures
//!   `archMap` gives it (x86 programs on x86_64, arm on aarch64; names are
//!   resolved per architecture, one unknown there is skipped), and a call
//!   from any other architecture kills the process; x32 calls, which no
//!   table here covers, get the default action;
//! - system calls numbered above every one the profile names for an
//!   architecture fail with ENOSYS, not the default action (runc's stub), so
//!   a newer libc falls back from a call the profile predates.
//!
//! With Docker's default capabilities this refuses, among others, `mount`,
//! `unshare`, `setns`, `clone` with namespace flags (and `clone3`, ENOSYS),
//! `keyctl`, `add_key`, `syslog`, `acct`, `swapon`, `reboot`, `bpf`,
//! `ptrace` (below kernel 4.8) and `socket(AF_VSOCK)`.
//!
//! The programs are assembled in `seccomp/bpf.rs` from `seccompiler`'s
//! compiled argument conditions (the 64-bit comparisons in 32-bit BPF): its
//! own filter type has one match action for every rule and no
//! sub-architectures, which Docker's profile needs. The syscall numbers come from the `syscalls`
//! crate's tables. Architectures: x86_64 (with x86), aarch64 (with arm)
//! and riscv64, the little-endian ones both crates cover; elsewhere the
//! default profile is skipped with a warning and a profile file refused.
//!
//! When the filter is installed, and `no_new_privs`: see [`Security`].

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rustix::thread::CapabilitySet;
use seccompiler::sock_filter;

use profile::{Arch, Result, kernel_version};
pub use profile::{Profile, SeccompError};

mod bpf;
mod profile;

/// Which filter sandboxed commands get (`--security-opt seccomp=...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// Docker's default profile.
    #[default]
    Default,
    /// No filter of the executor's own.
    Unconfined,
    /// A Docker-format profile read from a file.
    Profile(Arc<Profile>),
}

/// The seccomp filter and `no_new_privs` of a sandboxed command.
///
/// `no_new_privs` stays off unless asked for
/// (`--security-opt no-new-privileges`), as in Docker and BuildKit: whether
/// a step runs a setuid or file-capability program (`sudo` or `su` in a
/// `USER` step, `ping`, `newgrp`, setgid helpers such as `ssh-agent` or
/// `crontab`) cannot be told before it runs, and no_new_privs is inherited
/// by everything the step starts, so a root step that drops to another user
/// (`su builder -c ...`, `runuser`) and runs `sudo` there would break too.
/// A root step would gain nothing from setuid-root programs, but setting it
/// there only removes setgid and setuid-to-another-user transitions: it
/// buys no safety and breaks those. The filter needs no no_new_privs
/// either: in the namespaces' sandbox the command holds CAP_SYS_ADMIN (in
/// its own user namespace when rootless) until its capabilities are
/// dropped, so it is installed just before that, after every mount and the
/// `pivot_root` (runc's order), and the sandbox's own calls are never
/// filtered. In place (a pod without CAP_SYS_ADMIN) a filter can only be
/// installed with no_new_privs: see [`for_in_place`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    pub seccomp: Seccomp,
    /// Set no_new_privs for the command (`--security-opt no-new-privileges`).
    pub no_new_privileges: bool,
}

/// A compiled filter, installed by the child (see [`Security`]).
pub(super) struct Filter {
    program: Arc<[sock_filter]>,
    flags: libc::c_ulong,
    no_new_privs: bool,
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filter")
            .field("instructions", &self.program.len())
            .field("flags", &self.flags)
            .field("no_new_privs", &self.no_new_privs)
            .finish()
    }
}

impl Filter {
    /// Sets no_new_privs when asked, then installs the program for this
    /// thread (the child is single-threaded) and what it executes. Raw
    /// calls only: this runs between `clone` and `execve`.
    pub(super) fn install(&self) -> std::result::Result<(), i32> {
        if self.no_new_privs {
            rustix::thread::set_no_new_privs(true).map_err(rustix::io::Errno::raw_os_error)?;
        }
        let program = libc::sock_fprog {
            // Checked against MAX_INSTRUCTIONS when compiled.
            len: u16::try_from(self.program.len()).unwrap_or(u16::MAX),
            // seccompiler's `sock_filter` is `repr(C)` with the kernel's
            // layout, as libc's is.
            filter: self.program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
        };
        // SAFETY: seccomp(2) copies the program, which `program` describes
        // and `self` keeps alive, before returning.
        let result = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &raw const program,
            )
        };
        if result == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL))
        }
    }
}

impl Security {
    /// The profile to compile, `None` when unconfined.
    fn profile(&self) -> Result<Option<Arc<Profile>>> {
        match &self.seccomp {
            Seccomp::Default => Profile::docker_default().map(Some),
            Seccomp::Unconfined => Ok(None),
            Seccomp::Profile(profile) => Ok(Some(Arc::clone(profile))),
        }
    }

    /// `profile` compiled for a command whose bounding set is `caps`, with
    /// no_new_privs when `no_new_privs`; `None` on an architecture not
    /// covered here when the profile is the default one.
    fn filter(&self, profile: &Profile, caps: u64, no_new_privs: bool) -> Result<Option<Filter>> {
        let Some(native) = Arch::native() else {
            if self.seccomp == Seccomp::Default {
                static WARNED: OnceLock<()> = OnceLock::new();
                WARNED.get_or_init(|| {
                    tracing::warn!(
                        "RUN steps get no seccomp filter: the executor cannot compile one for {}",
                        std::env::consts::ARCH
                    );
                });
                return Ok(None);
            }
            return Err(SeccompError::Architecture {
                origin: profile.origin.clone(),
                arch: std::env::consts::ARCH,
            });
        };
        let release = rustix::system::uname();
        let kernel = release
            .release()
            .to_str()
            .ok()
            .and_then(kernel_version)
            .unwrap_or((0, 0));
        Ok(Some(Filter {
            program: compiled(profile, native, caps, kernel)?,
            flags: profile.flags,
            no_new_privs,
        }))
    }
}

/// `profile` compiled for `native`, `caps` and `kernel`, compiled once: a
/// build runs the same profile for every RUN step. The last few programs
/// are kept (a server runs builds with profiles of their own).
fn compiled(
    profile: &Profile,
    native: Arch,
    caps: u64,
    kernel: (u32, u32),
) -> Result<Arc<[sock_filter]>> {
    type Entry = (Profile, Arch, u64, (u32, u32), Arc<[sock_filter]>);
    const KEPT: usize = 4;
    static KEPT_PROGRAMS: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    let mut kept = KEPT_PROGRAMS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(entry) = kept
        .iter()
        .find(|(p, a, c, k, _)| (*a, *c, *k) == (native, caps, kernel) && p == profile)
    {
        return Ok(Arc::clone(&entry.4));
    }
    let program: Arc<[sock_filter]> = profile.compile(native, caps, kernel)?.into();
    if kept.len() == KEPT {
        kept.remove(0);
    }
    kept.push((profile.clone(), native, caps, kernel, Arc::clone(&program)));
    Ok(program)
}

/// The filter of a command in the namespaces' sandbox, whose bounding set
/// will be `caps`; it holds CAP_SYS_ADMIN when the filter is installed, so
/// no_new_privs is set only when asked for.
pub(super) fn for_namespaces(security: &Security, caps: CapabilitySet) -> Result<Option<Filter>> {
    match security.profile()? {
        Some(profile) => security.filter(&profile, caps.bits(), security.no_new_privileges),
        None => Ok(None),
    }
}

/// The filter of a command run in place, which keeps the executor's
/// capabilities. Without CAP_SYS_ADMIN (a default pod) the kernel takes a
/// filter only with no_new_privs, which would stop the setuid programs of
/// `USER` steps (`sudo`, `su`): the filter is then installed only where
/// no_new_privs is already set on the executor (Kubernetes'
/// `allowPrivilegeEscalation: false`, so it costs nothing) or asked for
/// (`--security-opt no-new-privileges`). Elsewhere the container runtime's
/// own filter (RuntimeDefault is Docker's profile) is the one that applies;
/// ours on top of it is defence in depth, not the only line.
pub(super) fn for_in_place(security: &Security) -> Result<Option<Filter>> {
    let Some(profile) = security.profile()? else {
        return Ok(None);
    };
    let admin = rustix::thread::capabilities(None)
        .is_ok_and(|sets| sets.effective.contains(CapabilitySet::SYS_ADMIN));
    let no_new_privs =
        security.no_new_privileges || (!admin && rustix::thread::no_new_privs().unwrap_or(false));
    if !admin && !no_new_privs {
        static SAID: OnceLock<()> = OnceLock::new();
        SAID.get_or_init(|| {
            tracing::info!(
                "RUN steps in place get the container runtime's seccomp filter only: without CAP_SYS_ADMIN the executor could add its own only with no_new_privs, which stops setuid programs (pass --security-opt no-new-privileges for both)"
            );
        });
        return Ok(None);
    }
    security.filter(&profile, bounding_set(), no_new_privs)
}

/// This process's capability bounding set, as bits.
fn bounding_set() -> u64 {
    let mut caps = 0;
    for bit in 0..u64::BITS {
        match rustix::thread::capability_is_in_bounding_set(CapabilitySet::from_bits_retain(
            1 << bit,
        )) {
            Ok(true) => caps |= 1 << bit,
            Ok(false) => {}
            // Past the kernel's last capability.
            Err(_) => break,
        }
    }
    caps
}
