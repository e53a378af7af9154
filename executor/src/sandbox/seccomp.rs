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
//! `ptrace` of other processes below kernel 4.8 and `socket(AF_VSOCK)`.
//!
//! The programs are assembled here from `seccompiler`'s compiled argument
//! conditions (the 64-bit comparisons in 32-bit BPF): its own filter type
//! has one match action for every rule and no sub-architectures, which
//! Docker's profile needs. The syscall numbers come from the `syscalls`
//! crate's tables. Architectures: x86_64 (with x86), aarch64 (with arm)
//! and riscv64, the little-endian ones both crates cover; elsewhere the
//! default profile is skipped with a warning and a profile file refused.
//!
//! When the filter is installed, and `no_new_privs`: see [`Security`].

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::{Arc, OnceLock};

use rustix::thread::CapabilitySet;
use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule, sock_filter};

/// moby v26.1.5's `profiles/seccomp/default.json` (see the module doc).
const DOCKER_DEFAULT: &str = include_str!("seccomp/docker-default.json");

/// The kernel's limit on a filter's length (`BPF_MAXINSNS`).
const MAX_INSTRUCTIONS: usize = 4096;

/// Capability names by bit number, as profiles spell them.
const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot read the seccomp profile {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid seccomp profile {origin}")]
    Parse {
        origin: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid seccomp profile {origin}: {what}")]
    Invalid { origin: String, what: String },
    #[error("seccomp profile {origin}: cannot compile the rule for {syscall}")]
    Compile {
        origin: String,
        syscall: String,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error(
        "seccomp profile {origin}: the filter has {length} instructions, more than the kernel's {MAX_INSTRUCTIONS}"
    )]
    TooLarge { origin: String, length: usize },
    #[error(
        "seccomp profile {origin}: seccomp filters are not supported on {arch}\nhint: pass --security-opt seccomp=unconfined"
    )]
    Architecture { origin: String, arch: &'static str },
}

type Result<T, E = SeccompError> = std::result::Result<T, E>;

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

/// What a rule (or the profile's default) does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Allow,
    Errno(u16),
    KillThread,
    KillProcess,
    Trap,
    Trace(u16),
    Log,
}

impl Action {
    fn parse(name: &str, errno: Option<u32>) -> std::result::Result<Action, String> {
        let data = |default: u16| -> std::result::Result<u16, String> {
            errno.map_or(Ok(default), |errno| {
                u16::try_from(errno).map_err(|_| format!("errnoRet {errno} is out of range"))
            })
        };
        let takes_errno = matches!(name, "SCMP_ACT_ERRNO" | "SCMP_ACT_TRACE");
        if errno.is_some() && !takes_errno {
            return Err(format!("errnoRet is only allowed with SCMP_ACT_ERRNO and SCMP_ACT_TRACE, not {name}"));
        }
        let eperm = u16::try_from(libc::EPERM).unwrap_or(1);
        Ok(match name {
            "SCMP_ACT_ALLOW" => Action::Allow,
            "SCMP_ACT_ERRNO" => Action::Errno(data(eperm)?),
            "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
            "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
            "SCMP_ACT_TRAP" => Action::Trap,
            "SCMP_ACT_TRACE" => Action::Trace(data(eperm)?),
            "SCMP_ACT_LOG" => Action::Log,
            "SCMP_ACT_NOTIFY" => {
                return Err("SCMP_ACT_NOTIFY needs a listener, which the executor does not run".into());
            }
            other => return Err(format!("unknown action {other:?}")),
        })
    }

    /// The filter's return value.
    fn ret(self) -> u32 {
        match self {
            Action::Allow => libc::SECCOMP_RET_ALLOW,
            Action::Errno(errno) => libc::SECCOMP_RET_ERRNO | u32::from(errno),
            Action::KillThread => libc::SECCOMP_RET_KILL_THREAD,
            Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
            Action::Trap => libc::SECCOMP_RET_TRAP,
            Action::Trace(data) => libc::SECCOMP_RET_TRACE | u32::from(data),
            Action::Log => libc::SECCOMP_RET_LOG,
        }
    }
}

/// An architecture a filter can cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Arch {
    X86_64,
    X86,
    Aarch64,
    Arm,
    Riscv64,
}

impl Arch {
    /// The architecture this executor was built for, if covered.
    fn native() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else if cfg!(target_arch = "riscv64") {
            Some(Arch::Riscv64)
        } else {
            None
        }
    }

    /// From a profile's `SCMP_ARCH_*` name; `None` for one not covered here.
    fn from_scmp(name: &str) -> Option<Arch> {
        Some(match name {
            "SCMP_ARCH_X86_64" => Arch::X86_64,
            "SCMP_ARCH_X86" => Arch::X86,
            "SCMP_ARCH_AARCH64" => Arch::Aarch64,
            "SCMP_ARCH_ARM" => Arch::Arm,
            "SCMP_ARCH_RISCV64" => Arch::Riscv64,
            _ => return None,
        })
    }

    fn scmp(self) -> &'static str {
        match self {
            Arch::X86_64 => "SCMP_ARCH_X86_64",
            Arch::X86 => "SCMP_ARCH_X86",
            Arch::Aarch64 => "SCMP_ARCH_AARCH64",
            Arch::Arm => "SCMP_ARCH_ARM",
            Arch::Riscv64 => "SCMP_ARCH_RISCV64",
        }
    }

    /// The name `includes.arches` and `excludes.arches` use (moby's).
    fn go_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::X86 => "x86",
            Arch::Aarch64 => "arm64",
            Arch::Arm => "arm",
            Arch::Riscv64 => "riscv64",
        }
    }

    /// `AUDIT_ARCH_*`: the ELF machine, 64-bit and little-endian bits.
    fn audit(self) -> u32 {
        const BITS_64: u32 = 0x8000_0000;
        const LITTLE_ENDIAN: u32 = 0x4000_0000;
        match self {
            Arch::X86_64 => 62 | BITS_64 | LITTLE_ENDIAN,
            Arch::X86 => 3 | LITTLE_ENDIAN,
            Arch::Aarch64 => 183 | BITS_64 | LITTLE_ENDIAN,
            Arch::Arm => 40 | LITTLE_ENDIAN,
            Arch::Riscv64 => 243 | BITS_64 | LITTLE_ENDIAN,
        }
    }

    /// Whether a process on `native` can make calls of this architecture.
    fn runs_on(self, native: Arch) -> bool {
        matches!(
            (native, self),
            (Arch::X86_64, Arch::X86_64 | Arch::X86)
                | (Arch::Aarch64, Arch::Aarch64 | Arch::Arm)
                | (Arch::Riscv64, Arch::Riscv64)
        )
    }

    /// The number of system call `name` on this architecture (one that
    /// [`Arch::runs_on`] this machine's).
    fn syscall(self, name: &str) -> Option<u32> {
        let id = match self {
            #[cfg(target_arch = "x86_64")]
            Arch::X86_64 => syscalls::x86_64::Sysno::from_str(name).ok()?.id(),
            Arch::X86 => syscalls::x86::Sysno::from_str(name).ok()?.id(),
            #[cfg(target_arch = "aarch64")]
            Arch::Aarch64 => syscalls::aarch64::Sysno::from_str(name).ok()?.id(),
            Arch::Arm => syscalls::arm::Sysno::from_str(name).ok()?.id(),
            #[cfg(target_arch = "riscv64")]
            Arch::Riscv64 => syscalls::riscv64::Sysno::from_str(name).ok()?.id(),
            #[allow(unreachable_patterns)]
            _ => return None,
        };
        u32::try_from(id).ok()
    }
}

/// One argument condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Arg {
    index: u8,
    op: SeccompCmpOp,
    value: u64,
}

/// When a rule applies (`includes`) or does not (`excludes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Conditions {
    arches: Vec<String>,
    caps: Vec<String>,
    /// `(major, minor)`.
    min_kernel: Option<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    names: Vec<String>,
    action: Action,
    args: Vec<Arg>,
    includes: Conditions,
    excludes: Conditions,
}

/// A Docker-format seccomp profile, checked when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Where it came from, for messages.
    origin: String,
    default_action: Action,
    /// `architectures` (the old format), or empty.
    architectures: Vec<String>,
    /// `archMap`: an architecture and its sub-architectures.
    arch_map: Vec<(String, Vec<String>)>,
    /// `SECCOMP_FILTER_FLAG_*` bits for seccomp(2).
    flags: libc::c_ulong,
    rules: Vec<Rule>,
}

/// The JSON shape of a profile (moby's `Seccomp` type).
mod raw {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Profile {
        #[serde(default)]
        pub default_action: String,
        pub default_errno_ret: Option<u32>,
        pub architectures: Option<Vec<String>>,
        pub arch_map: Option<Vec<ArchMap>>,
        pub syscalls: Option<Vec<Syscall>>,
        pub flags: Option<Vec<String>>,
        pub listener_path: Option<String>,
    }

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct ArchMap {
        pub architecture: String,
        pub sub_architectures: Option<Vec<String>>,
    }

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Syscall {
        pub name: Option<String>,
        pub names: Option<Vec<String>>,
        pub action: String,
        pub errno_ret: Option<u32>,
        pub args: Option<Vec<Arg>>,
        pub includes: Option<Filter>,
        pub excludes: Option<Filter>,
    }

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Arg {
        pub index: u32,
        pub value: u64,
        #[serde(default)]
        pub value_two: u64,
        pub op: String,
    }

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Filter {
        pub caps: Option<Vec<String>>,
        pub arches: Option<Vec<String>>,
        pub min_kernel: Option<String>,
    }
}

/// `"6.1"` or `"6.1.0-28-amd64"` as `(6, 1)`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

impl Profile {
    /// Docker's default profile (parsed once).
    pub fn docker_default() -> Result<Arc<Profile>> {
        static DEFAULT: OnceLock<Arc<Profile>> = OnceLock::new();
        if let Some(profile) = DEFAULT.get() {
            return Ok(Arc::clone(profile));
        }
        let profile = Arc::new(Profile::parse(
            DOCKER_DEFAULT,
            "Docker's default profile".into(),
        )?);
        Ok(Arc::clone(DEFAULT.get_or_init(|| profile)))
    }

    /// Reads a Docker-format profile from `path`.
    pub fn load(path: &Path) -> Result<Profile> {
        let text = std::fs::read_to_string(path).map_err(|source| SeccompError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Profile::parse(&text, path.display().to_string())
    }

    /// Parses and checks a profile; `origin` names it in messages.
    pub fn parse(text: &str, origin: String) -> Result<Profile> {
        let raw: raw::Profile = match serde_json::from_str(text) {
            Ok(raw) => raw,
            Err(source) => return Err(SeccompError::Parse { origin, source }),
        };
        let invalid = |what: String| SeccompError::Invalid {
            origin: origin.clone(),
            what,
        };
        if raw.listener_path.as_deref().is_some_and(|p| !p.is_empty()) {
            return Err(invalid(
                "listenerPath needs a seccomp agent, which the executor does not run".into(),
            ));
        }
        let default_action = Action::parse(&raw.default_action, raw.default_errno_ret)
            .map_err(|what| invalid(format!("defaultAction: {what}")))?;
        let architectures = raw.architectures.unwrap_or_default();
        let arch_map: Vec<_> = raw
            .arch_map
            .unwrap_or_default()
            .into_iter()
            .map(|entry| (entry.architecture, entry.sub_architectures.unwrap_or_default()))
            .collect();
        if !architectures.is_empty() && !arch_map.is_empty() {
            return Err(invalid(
                "both 'architectures' and 'archMap' are given; use one".into(),
            ));
        }
        let mut flags = 0;
        for flag in raw.flags.unwrap_or_default() {
            flags |= match flag.as_str() {
                "SECCOMP_FILTER_FLAG_LOG" => libc::SECCOMP_FILTER_FLAG_LOG,
                "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
                "SECCOMP_FILTER_FLAG_TSYNC" => 0,
                other => return Err(invalid(format!("unsupported flag {other:?}"))),
            };
        }
        let mut rules = Vec::new();
        for (n, syscall) in raw.syscalls.unwrap_or_default().into_iter().enumerate() {
            let names = match (syscall.name, syscall.names) {
                (Some(name), None) => vec![name],
                (None, Some(names)) => names,
                (Some(_), Some(_)) => {
                    return Err(invalid(format!(
                        "syscalls[{n}]: both 'name' and 'names' are given; use one"
                    )));
                }
                (None, None) => Vec::new(),
            };
            let at = || format!("syscalls[{n}] ({})", names.join(", "));
            let action = Action::parse(&syscall.action, syscall.errno_ret)
                .map_err(|what| invalid(format!("{}: {what}", at())))?;
            let args = syscall
                .args
                .unwrap_or_default()
                .into_iter()
                .map(|arg| {
                    let index = u8::try_from(arg.index)
                        .ok()
                        .filter(|&index| index <= 5)
                        .ok_or_else(|| format!("argument index {} is not 0 to 5", arg.index))?;
                    let (op, value) = match arg.op.as_str() {
                        "SCMP_CMP_NE" => (SeccompCmpOp::Ne, arg.value),
                        "SCMP_CMP_LT" => (SeccompCmpOp::Lt, arg.value),
                        "SCMP_CMP_LE" => (SeccompCmpOp::Le, arg.value),
                        "SCMP_CMP_EQ" => (SeccompCmpOp::Eq, arg.value),
                        "SCMP_CMP_GE" => (SeccompCmpOp::Ge, arg.value),
                        "SCMP_CMP_GT" => (SeccompCmpOp::Gt, arg.value),
                        "SCMP_CMP_MASKED_EQ" => (SeccompCmpOp::MaskedEq(arg.value), arg.value_two),
                        other => return Err(format!("unknown operator {other:?}")),
                    };
                    Ok(Arg { index, op, value })
                })
                .collect::<std::result::Result<_, String>>()
                .map_err(|what| invalid(format!("{}: {what}", at())))?;
            let conditions = |filter: Option<raw::Filter>, which: &str| {
                let Some(filter) = filter else {
                    return Ok(Conditions::default());
                };
                let min_kernel = match filter.min_kernel {
                    Some(version) => Some(kernel_version(&version).ok_or_else(|| {
                        invalid(format!(
                            "{}: {which}.minKernel {version:?} is not MAJOR.MINOR",
                            at()
                        ))
                    })?),
                    None => None,
                };
                Ok(Conditions {
                    arches: filter.arches.unwrap_or_default(),
                    caps: filter.caps.unwrap_or_default(),
                    min_kernel,
                })
            };
            rules.push(Rule {
                includes: conditions(syscall.includes, "includes")?,
                excludes: conditions(syscall.excludes, "excludes")?,
                names,
                action,
                args,
            });
        }
        Ok(Profile {
            origin,
            default_action,
            architectures,
            arch_map,
            flags,
            rules,
        })
    }

    /// The architectures the filter covers on `native`: the native one and
    /// its sub-architectures from `archMap` (or `architectures`), those this
    /// module has tables for.
    fn arches(&self, native: Arch) -> Vec<Arch> {
        let listed: Vec<&str> = if self.architectures.is_empty() {
            self.arch_map
                .iter()
                .find(|(arch, _)| arch == native.scmp())
                .map(|(_, subs)| subs.iter().map(String::as_str).collect())
                .unwrap_or_default()
        } else {
            self.architectures.iter().map(String::as_str).collect()
        };
        let mut arches = vec![native];
        for name in listed {
            match Arch::from_scmp(name).filter(|arch| arch.runs_on(native)) {
                Some(arch) if !arches.contains(&arch) => arches.push(arch),
                Some(_) => {}
                None => tracing::debug!("seccomp: architecture {name} is not covered; its calls get the default action or are killed"),
            }
        }
        arches
    }

    /// Whether `rule` applies on `native` for a command whose bounding set
    /// is `caps`, on kernel `kernel` (moby's `setupSeccomp`).
    fn applies(rule: &Rule, native: Arch, caps: &[&str], kernel: (u32, u32)) -> bool {
        let arch = native.go_name();
        let excludes = &rule.excludes;
        if excludes.arches.iter().any(|a| a == arch)
            || excludes.caps.iter().any(|c| caps.contains(&c.as_str()))
            || excludes.min_kernel.is_some_and(|min| kernel >= min)
        {
            return false;
        }
        let includes = &rule.includes;
        (includes.arches.is_empty() || includes.arches.iter().any(|a| a == arch))
            && includes.caps.iter().all(|c| caps.contains(&c.as_str()))
            && includes.min_kernel.is_none_or(|min| kernel >= min)
    }

    /// The BPF program for a command whose bounding set is `caps` (bit
    /// numbers), on `native` and kernel `kernel`.
    fn compile(&self, native: Arch, caps: u64, kernel: (u32, u32)) -> Result<Vec<sock_filter>> {
        let caps: Vec<&str> = CAPABILITIES
            .iter()
            .enumerate()
            .filter(|&(bit, _)| caps & (1 << bit) != 0)
            .map(|(_, name)| *name)
            .collect();
        let rules: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|rule| Profile::applies(rule, native, &caps, kernel))
            .filter(|rule| rule.action != self.default_action)
            .collect();
        let default = self.default_action.ret();
        let mut sections = Vec::new();
        for arch in self.arches(native) {
            // Per syscall number, its rules in the profile's order.
            let mut chains: BTreeMap<u32, Vec<(u32, Option<SeccompRule>)>> = BTreeMap::new();
            for rule in &rules {
                let compiled = self.conditions(rule)?;
                for name in &rule.names {
                    let Some(nr) = arch.syscall(name) else {
                        continue;
                    };
                    let chain = chains.entry(nr).or_default();
                    let action = rule.action.ret();
                    match &compiled {
                        None => chain.push((action, None)),
                        Some(alternatives) => {
                            chain.extend(alternatives.iter().map(|r| (action, Some(r.clone()))));
                        }
                    }
                }
            }
            let enosys_above = match self.default_action {
                Action::Allow | Action::Log => None,
                _ => chains.keys().next_back().copied(),
            };
            let entries = chains
                .into_iter()
                .map(|(nr, chain)| (nr, bpf::chain(chain, default)))
                .collect::<Vec<_>>();
            sections.push(bpf::Section {
                audit: arch.audit(),
                x32: arch == Arch::X86_64,
                enosys_above,
                tree: bpf::tree(&entries, default),
            });
        }
        let program = bpf::program(&sections, default);
        if program.len() > MAX_INSTRUCTIONS {
            return Err(SeccompError::TooLarge {
                origin: self.origin.clone(),
                length: program.len(),
            });
        }
        Ok(program)
    }

    /// A rule's argument conditions as seccompiler rules, any of which
    /// matches (one unless an argument is named twice); `None` without
    /// conditions.
    fn conditions(&self, rule: &Rule) -> Result<Option<Vec<SeccompRule>>> {
        if rule.args.is_empty() {
            return Ok(None);
        }
        let compile_err = |source| SeccompError::Compile {
            origin: self.origin.clone(),
            syscall: rule.names.join(", "),
            source,
        };
        let conditions = rule
            .args
            .iter()
            .map(|arg| {
                SeccompCondition::new(arg.index, SeccompCmpArgLen::Qword, arg.op.clone(), arg.value)
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(compile_err)?;
        let repeated = rule
            .args
            .iter()
            .enumerate()
            .any(|(n, arg)| rule.args[..n].iter().any(|a| a.index == arg.index));
        let rules = if repeated {
            conditions
                .into_iter()
                .map(|condition| SeccompRule::new(vec![condition]))
                .collect::<std::result::Result<Vec<_>, _>>()
        } else {
            SeccompRule::new(conditions).map(|rule| vec![rule])
        };
        rules.map(Some).map_err(compile_err)
    }
}

/// A compiled filter, installed by the child (see [`Security`]).
pub(super) struct Filter {
    program: Vec<sock_filter>,
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
            rustix::thread::set_no_new_privs(true).map_err(|err| err.raw_os_error())?;
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
            program: profile.compile(native, caps, kernel)?,
            flags: profile.flags,
            no_new_privs,
        }))
    }
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
    let no_new_privs = security.no_new_privileges
        || (!admin && rustix::thread::no_new_privs().unwrap_or(false));
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

/// The program assembler: an architecture dispatch, then per architecture
/// a binary search over the system call numbers down to short linear runs,
/// each number leading to its rules' chain.
mod bpf {
    use super::sock_filter;

    const LD_ABS_W: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JA: u16 = 0x05; // BPF_JMP | BPF_JA
    const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGT: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
    const JGE: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const JSET: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
    const RET: u16 = 0x06; // BPF_RET | BPF_K
    /// Offsets in `struct seccomp_data`.
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    /// `__X32_SYSCALL_BIT`.
    const X32: u32 = 0x4000_0000;
    /// Runs this short are searched linearly.
    const LEAF: usize = 4;

    fn stmt(code: u16, k: u32) -> sock_filter {
        sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
        sock_filter { code, jt, jf, k }
    }

    /// An unconditional jump over `over` instructions.
    fn skip(over: usize) -> sock_filter {
        stmt(JA, u32::try_from(over).unwrap_or(u32::MAX))
    }

    fn ret(value: u32) -> sock_filter {
        stmt(RET, value)
    }

    pub(super) struct Section {
        pub audit: u32,
        /// x86_64: calls with the x32 bit get the default action.
        pub x32: bool,
        /// Calls numbered above this fail with ENOSYS.
        pub enosys_above: Option<u32>,
        pub tree: Vec<sock_filter>,
    }

    /// A syscall's rules (their return value and conditions), tried in
    /// order, then `default`. A rule without conditions ends the chain.
    pub(super) fn chain(
        rules: Vec<(u32, Option<seccompiler::SeccompRule>)>,
        default: u32,
    ) -> Vec<sock_filter> {
        let mut out = Vec::new();
        for (action, rule) in rules {
            let Some(rule) = rule else {
                out.push(ret(action));
                return out;
            };
            // A failed condition jumps just past the rule's return, to the
            // next rule (seccompiler's own layout).
            let program: seccompiler::BpfProgram = rule.into();
            out.extend(program);
            out.push(ret(action));
        }
        out.push(ret(default));
        out
    }

    /// Dispatches on the syscall number (in the accumulator) to the chains
    /// of `entries` (sorted by number); others get `default`.
    pub(super) fn tree(entries: &[(u32, Vec<sock_filter>)], default: u32) -> Vec<sock_filter> {
        let mut out = Vec::new();
        if entries.len() <= LEAF {
            for (nr, chain) in entries {
                if let Ok(length) = u8::try_from(chain.len()) {
                    out.push(jump(JEQ, *nr, 0, length));
                } else {
                    out.push(jump(JEQ, *nr, 0, 1));
                    out.push(skip(1));
                    out.push(skip(chain.len()));
                }
                out.extend_from_slice(chain);
            }
            out.push(ret(default));
            return out;
        }
        let (low, high) = entries.split_at(entries.len() / 2);
        let pivot = high[0].0;
        let low = tree(low, default);
        out.push(jump(JGE, pivot, 0, 1));
        out.push(skip(low.len()));
        out.extend(low);
        out.extend(tree(high, default));
        out
    }

    fn section(section: &Section, default: u32) -> Vec<sock_filter> {
        let mut out = vec![stmt(LD_ABS_W, NR)];
        if section.x32 {
            out.push(jump(JSET, X32, 0, 1));
            out.push(ret(default));
        }
        if let Some(last) = section.enosys_above {
            out.push(jump(JGT, last, 0, 1));
            out.push(ret(
                libc::SECCOMP_RET_ERRNO | libc::ENOSYS.unsigned_abs(),
            ));
        }
        out.extend_from_slice(&section.tree);
        out
    }

    /// The whole program: a call from an architecture no section covers
    /// kills the process.
    pub(super) fn program(sections: &[Section], default: u32) -> Vec<sock_filter> {
        let bodies: Vec<_> = sections.iter().map(|s| section(s, default)).collect();
        let mut out = vec![stmt(LD_ABS_W, ARCH)];
        let mut start = 2 * sections.len() + 2;
        for (n, (section, body)) in sections.iter().zip(&bodies).enumerate() {
            out.push(jump(JEQ, section.audit, 0, 1));
            // This jump is instruction 2n + 2.
            out.push(skip(start - (2 * n + 3)));
            start += body.len();
        }
        out.push(ret(libc::SECCOMP_RET_KILL_PROCESS));
        for body in bodies {
            out.extend(body);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `program` on a call as the kernel would: the filter's return
    /// value.
    fn run(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::new();
        data.extend_from_slice(&nr.to_le_bytes());
        data.extend_from_slice(&arch.to_le_bytes());
        data.extend_from_slice(&0u64.to_le_bytes());
        for arg in args {
            data.extend_from_slice(&arg.to_le_bytes());
        }
        let mut a = 0u32;
        let mut pc = 0usize;
        loop {
            let insn = &program[pc];
            pc += 1;
            match insn.code {
                0x20 => {
                    let at = insn.k as usize;
                    a = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
                }
                0x54 => a &= insn.k,
                0x05 => pc += insn.k as usize,
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let taken = match insn.code {
                        0x15 => a == insn.k,
                        0x25 => a > insn.k,
                        0x35 => a >= insn.k,
                        _ => a & insn.k != 0,
                    };
                    pc += usize::from(if taken { insn.jt } else { insn.jf });
                }
                0x06 => return insn.k,
                code => panic!("unexpected instruction {code:#x} at {}", pc - 1),
            }
        }
    }

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | 1;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | 38;

    fn caps(names: &[&str]) -> u64 {
        names
            .iter()
            .map(|name| 1 << CAPABILITIES.iter().position(|c| c == name).unwrap())
            .sum()
    }

    /// Docker's default capabilities, as the namespaces' sandbox gives them.
    fn docker_caps() -> u64 {
        super::super::child::DEFAULT_CAPABILITIES.bits()
    }

    struct Compiled {
        program: Vec<sock_filter>,
        native: Arch,
    }

    impl Compiled {
        fn new(profile: &Profile, caps: u64, kernel: (u32, u32)) -> Compiled {
            let native = Arch::native().unwrap();
            Compiled {
                program: profile.compile(native, caps, kernel).unwrap(),
                native,
            }
        }

        fn call(&self, name: &str, args: &[u64]) -> u32 {
            self.call_on(self.native, name, args)
        }

        fn call_on(&self, arch: Arch, name: &str, args: &[u64]) -> u32 {
            let nr = arch.syscall(name).unwrap_or_else(|| panic!("no {name}"));
            let mut all = [0; 6];
            all[..args.len()].copy_from_slice(args);
            run(&self.program, arch.audit(), nr, all)
        }
    }

    fn docker() -> Compiled {
        Compiled::new(&Profile::docker_default().unwrap(), docker_caps(), (6, 1))
    }

    #[test]
    fn the_default_profile_allows_ordinary_calls_and_refuses_the_rest_with_eperm() {
        let filter = docker();
        assert!(filter.program.len() <= MAX_INSTRUCTIONS);
        for name in ["read", "write", "openat", "execve", "exit_group", "capset", "setuid"] {
            assert_eq!(filter.call(name, &[]), ALLOW, "{name}");
        }
        for name in ["mount", "umount2", "unshare", "setns", "keyctl", "add_key", "swapon"] {
            assert_eq!(filter.call(name, &[]), EPERM, "{name}");
        }
        // Allowed only with a capability the step does not have.
        for name in ["syslog", "acct", "reboot", "init_module", "settimeofday", "bpf"] {
            assert_eq!(filter.call(name, &[]), EPERM, "{name}");
        }
        // ... or one it has.
        assert_eq!(filter.call("chroot", &[]), ALLOW);
    }

    #[test]
    fn argument_conditions_are_checked() {
        let filter = docker();
        let (fork, newuser) = (u64::from(libc::SIGCHLD.unsigned_abs()), 0x1000_0000);
        assert_eq!(filter.call("clone", &[fork]), ALLOW);
        assert_eq!(filter.call("clone", &[fork | newuser]), EPERM);
        assert_eq!(filter.call("clone", &[fork | 0x0002_0000]), EPERM, "CLONE_NEWNS");
        assert_eq!(filter.call("clone3", &[]), ENOSYS);
        for allowed in [0, 8, 0x20000, 0x20008, 0xffff_ffff] {
            assert_eq!(filter.call("personality", &[allowed]), ALLOW, "{allowed:#x}");
        }
        // ADDR_NO_RANDOMIZE, and a value whose low half is allowed.
        assert_eq!(filter.call("personality", &[0x0040000]), EPERM);
        assert_eq!(filter.call("personality", &[0x1_0000_0000]), EPERM);
        assert_eq!(filter.call("socket", &[2, 1, 0]), ALLOW, "AF_INET");
        assert_eq!(filter.call("socket", &[40, 1, 0]), EPERM, "AF_VSOCK");
    }

    #[test]
    fn capabilities_and_the_kernel_decide_which_rules_apply() {
        let profile = Profile::docker_default().unwrap();
        let admin = Compiled::new(&profile, docker_caps() | caps(&["CAP_SYS_ADMIN"]), (6, 1));
        assert_eq!(admin.call("mount", &[]), ALLOW);
        assert_eq!(admin.call("unshare", &[]), ALLOW);
        assert_eq!(admin.call("clone", &[0x1000_0000]), ALLOW);
        assert_eq!(admin.call("clone3", &[]), ALLOW);
        let syslog = Compiled::new(&profile, caps(&["CAP_SYSLOG"]), (6, 1));
        assert_eq!(syslog.call("syslog", &[]), ALLOW);
        assert_eq!(syslog.call("chroot", &[]), EPERM, "no CAP_SYS_CHROOT");
        // ptrace needs kernel 4.8 without CAP_SYS_PTRACE.
        assert_eq!(docker().call("ptrace", &[]), ALLOW);
        let old = Compiled::new(&profile, docker_caps(), (4, 4));
        assert_eq!(old.call("ptrace", &[]), EPERM);
    }

    #[test]
    fn architectures_newer_calls_and_x32() {
        let filter = docker();
        // A call numbered past every one the profile names: ENOSYS.
        let audit = filter.native.audit();
        assert_eq!(run(&filter.program, audit, 4000, [0; 6]), ENOSYS);
        // Another architecture than the filter covers: killed.
        assert_eq!(
            run(&filter.program, 0x1234, 0, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        let profile = Profile::docker_default().unwrap();
        let arches = profile.arches(filter.native);
        if filter.native == Arch::X86_64 {
            assert_eq!(arches, [Arch::X86_64, Arch::X86]);
            // x32's read: the default action.
            assert_eq!(run(&filter.program, audit, 0x4000_0000, [0; 6]), EPERM);
        }
        // The 32-bit sub-architecture has its own numbers.
        for &arch in &arches[1..] {
            assert_eq!(filter.call_on(arch, "read", &[]), ALLOW);
            assert_eq!(filter.call_on(arch, "mount", &[]), EPERM);
            assert_eq!(filter.call_on(arch, "personality", &[0x0040000]), EPERM);
        }
    }

    fn custom(json: &str) -> Result<Profile> {
        Profile::parse(json, "test.json".into())
    }

    #[test]
    fn a_profile_file_gets_its_own_actions_and_runc_rules() {
        let profile = custom(
            r#"{
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                    {"name": "write", "action": "SCMP_ACT_ERRNO",
                     "args": [{"index": 0, "value": 5, "op": "SCMP_CMP_EQ"},
                              {"index": 0, "value": 7, "op": "SCMP_CMP_EQ"}]},
                    {"name": "kill", "action": "SCMP_ACT_ERRNO",
                     "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                              {"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]},
                    {"name": "ioctl", "action": "SCMP_ACT_KILL_PROCESS",
                     "args": [{"index": 1, "value": 4294967040, "valueTwo": 21504,
                               "op": "SCMP_CMP_MASKED_EQ"}]},
                    {"name": "getpid", "action": "SCMP_ACT_ALLOW"}
                ]
            }"#,
        )
        .unwrap();
        let filter = Compiled::new(&profile, 0, (6, 1));
        let eacces = libc::SECCOMP_RET_ERRNO | 13;
        assert_eq!(filter.call("mkdirat", &[]), eacces);
        // One argument named twice: either condition matches (runc).
        assert_eq!(filter.call("write", &[5]), EPERM);
        assert_eq!(filter.call("write", &[7]), EPERM);
        assert_eq!(filter.call("write", &[1]), ALLOW);
        // Different arguments: both must match.
        assert_eq!(filter.call("kill", &[1, 9]), EPERM);
        assert_eq!(filter.call("kill", &[1, 15]), ALLOW);
        // (arg & 0xffffff00) == 0x5400: the TCGETS family.
        let kill = libc::SECCOMP_RET_KILL_PROCESS;
        assert_eq!(filter.call("ioctl", &[0, 0x5401]), kill);
        assert_eq!(filter.call("ioctl", &[0, 0x8901]), ALLOW);
        // Allowed by default: no ENOSYS past the profile's calls.
        assert_eq!(run(&filter.program, filter.native.audit(), 4000, [0; 6]), ALLOW);
        // Without an archMap only the native architecture is covered.
        assert_eq!(profile.arches(filter.native), [filter.native]);
    }

    #[test]
    fn the_first_matching_rule_of_a_call_decides() {
        let profile = custom(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                {"name": "dup", "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 3, "op": "SCMP_CMP_GE"}]},
                {"name": "dup", "action": "SCMP_ACT_ERRNO", "errnoRet": 9},
                {"name": "dup", "action": "SCMP_ACT_ALLOW"}
            ]}"#,
        )
        .unwrap();
        let filter = Compiled::new(&profile, 0, (6, 1));
        assert_eq!(filter.call("dup", &[4]), ALLOW);
        assert_eq!(filter.call("dup", &[2]), libc::SECCOMP_RET_ERRNO | 9);
        assert_eq!(filter.call("read", &[]), EPERM);
    }

    #[test]
    fn profiles_the_executor_cannot_honour_are_refused_with_the_reason() {
        let message = |json: &str| {
            let err = custom(json).unwrap_err();
            let mut text = err.to_string();
            if let Some(source) = std::error::Error::source(&err) {
                text = format!("{text}: {source}");
            }
            text
        };
        assert_eq!(
            message(r#"{"defaultAction": "SCMP_ACT_EPERM"}"#),
            r#"invalid seccomp profile test.json: defaultAction: unknown action "SCMP_ACT_EPERM""#
        );
        assert!(
            message(r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "read", "action": "SCMP_ACT_NOTIFY"}]}"#)
                .contains("syscalls[0] (read): SCMP_ACT_NOTIFY needs a listener"),
        );
        assert!(
            message(r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "read", "action": "SCMP_ACT_ALLOW", "errnoRet": 1}]}"#)
                .contains("errnoRet is only allowed with SCMP_ACT_ERRNO and SCMP_ACT_TRACE, not SCMP_ACT_ALLOW"),
        );
        assert!(
            message(r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "read", "names": ["write"], "action": "SCMP_ACT_ALLOW"}]}"#)
                .contains("both 'name' and 'names'"),
        );
        assert!(
            message(r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "read", "action": "SCMP_ACT_ALLOW", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#)
                .contains("argument index 6 is not 0 to 5"),
        );
        assert_eq!(
            message("{\n  \"defaultAction\": \"SCMP_ACT_ERRNO\",\n  \"syscalls\": [}"),
            "invalid seccomp profile test.json: expected value at line 3 column 16"
        );
        let missing = Profile::load(Path::new("/nonexistent/profile.json")).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "cannot read the seccomp profile /nonexistent/profile.json"
        );
    }

    #[test]
    fn kernel_releases_read_as_major_and_minor() {
        assert_eq!(kernel_version("6.1.0-28-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("4.8"), Some((4, 8)));
        assert_eq!(kernel_version("6.18.44-fc-v1300"), Some((6, 18)));
        assert_eq!(kernel_version("six"), None);
    }

    #[test]
    fn capability_names_follow_the_kernel_numbers() {
        assert_eq!(caps(&["CAP_SYS_ADMIN"]), CapabilitySet::SYS_ADMIN.bits());
        assert_eq!(caps(&["CAP_SYSLOG"]), CapabilitySet::SYSLOG.bits());
        assert_eq!(
            caps(&["CAP_CHECKPOINT_RESTORE"]),
            CapabilitySet::CHECKPOINT_RESTORE.bits()
        );
    }
}
