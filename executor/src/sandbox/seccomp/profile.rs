//! Docker-format seccomp profiles (moby's `Seccomp` JSON type): read and
//! checked, then compiled for one command — its capabilities, this kernel
//! and architecture — into a BPF program, with the semantics the parent
//! module lists. Runs before the fork; allocates freely.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::{Arc, OnceLock};

use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule, sock_filter};

use super::bpf;

/// moby v26.1.5's `profiles/seccomp/default.json` (see the module doc).
const DOCKER_DEFAULT: &str = include_str!("docker-default.json");

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

pub(super) type Result<T, E = SeccompError> = std::result::Result<T, E>;

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
            return Err(format!(
                "errnoRet is only allowed with SCMP_ACT_ERRNO and SCMP_ACT_TRACE, not {name}"
            ));
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
                return Err(
                    "SCMP_ACT_NOTIFY needs a listener, which the executor does not run".into(),
                );
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
pub(super) enum Arch {
    X86_64,
    X86,
    Aarch64,
    Arm,
    Riscv64,
}

impl Arch {
    /// The architecture this executor was built for, if covered.
    pub(super) fn native() -> Option<Arch> {
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
            Arch::X86_64 => 0x3e | BITS_64 | LITTLE_ENDIAN,
            Arch::X86 => 0x03 | LITTLE_ENDIAN,
            Arch::Aarch64 => 0xb7 | BITS_64 | LITTLE_ENDIAN,
            Arch::Arm => 0x28 | LITTLE_ENDIAN,
            Arch::Riscv64 => 0xf3 | BITS_64 | LITTLE_ENDIAN,
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
    pub(super) origin: String,
    default_action: Action,
    /// `architectures` (the old format), or empty.
    architectures: Vec<String>,
    /// `archMap`: an architecture and its sub-architectures.
    arch_map: Vec<(String, Vec<String>)>,
    /// `SECCOMP_FILTER_FLAG_*` bits for seccomp(2).
    pub(super) flags: libc::c_ulong,
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
pub(super) fn kernel_version(release: &str) -> Option<(u32, u32)> {
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
            .map(|entry| {
                (
                    entry.architecture,
                    entry.sub_architectures.unwrap_or_default(),
                )
            })
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
                None => tracing::debug!(
                    "seccomp: architecture {name} is not covered; its calls get the default action or are killed"
                ),
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
    pub(super) fn compile(
        &self,
        native: Arch,
        caps: u64,
        kernel: (u32, u32),
    ) -> Result<Vec<sock_filter>> {
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
                SeccompCondition::new(
                    arg.index,
                    SeccompCmpArgLen::Qword,
                    arg.op.clone(),
                    arg.value,
                )
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

#[cfg(test)]
mod tests {
    use rustix::thread::CapabilitySet;

    use super::super::bpf::run;
    use super::*;

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM.unsigned_abs();
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS.unsigned_abs();

    fn caps(names: &[&str]) -> u64 {
        names
            .iter()
            .map(|name| 1 << CAPABILITIES.iter().position(|c| c == name).unwrap())
            .sum()
    }

    /// Docker's default capabilities, as the namespaces' sandbox gives them.
    fn docker_caps() -> u64 {
        crate::sandbox::child::DEFAULT_CAPABILITIES.bits()
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
        for name in [
            "read",
            "write",
            "openat",
            "execve",
            "exit_group",
            "capset",
            "setuid",
        ] {
            assert_eq!(filter.call(name, &[]), ALLOW, "{name}");
        }
        for name in [
            "mount", "umount2", "unshare", "setns", "keyctl", "add_key", "swapon",
        ] {
            assert_eq!(filter.call(name, &[]), EPERM, "{name}");
        }
        // Allowed only with a capability the step does not have.
        for name in [
            "syslog",
            "acct",
            "reboot",
            "init_module",
            "settimeofday",
            "bpf",
        ] {
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
        assert_eq!(
            filter.call("clone", &[fork | 0x0002_0000]),
            EPERM,
            "CLONE_NEWNS"
        );
        assert_eq!(filter.call("clone3", &[]), ENOSYS);
        for allowed in [0, 8, 0x20000, 0x20008, 0xffff_ffff] {
            assert_eq!(
                filter.call("personality", &[allowed]),
                ALLOW,
                "{allowed:#x}"
            );
        }
        // ADDR_NO_RANDOMIZE, and a value whose low half is allowed.
        assert_eq!(filter.call("personality", &[0x0004_0000]), EPERM);
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
            assert_eq!(filter.call_on(arch, "personality", &[0x0004_0000]), EPERM);
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
        let eacces = libc::SECCOMP_RET_ERRNO | libc::EACCES.unsigned_abs();
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
        assert_eq!(
            run(&filter.program, filter.native.audit(), 4000, [0; 6]),
            ALLOW
        );
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
