//! Turns a [`Spec`] into the [`Plan`] pid 1 runs: mount targets resolved
//! inside the root (stubs created and recorded), the `/etc` files' content
//! (pid 1 writes them on its `/dev` tmpfs), C strings for every path, the
//! exec candidates. Runs before the fork; allocates freely, mounts nothing.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd as _, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, OpenTreeFlags};

use super::child::{Op, Plan, UserMaps};
use super::path::{self, Kind, Target};
use super::{MountKind, Network, SandboxError, Spec, template};

/// Host devices bound into the sandbox's `/dev` (from the template's
/// `/dev`, which has the same, when the sandbox starts from it).
const DEVICES: [&str; 6] = template::DEVICES;

/// Paths hidden from the command, as in runc's default spec: `/dev/null`
/// over files, an empty read-only tmpfs over directories.
const MASKED: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths made read-only, as in runc's default spec.
const READ_ONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The plan, the step names (parallel to `plan.ops`) and the stubs.
pub(super) struct Prepared {
    pub plan: Plan,
    pub steps: Vec<String>,
    pub stubs: Vec<PathBuf>,
    /// The mounts pid 1 attaches (`open_tree` clones of the root and of
    /// the bind mounts' sources) when it starts from the template: held
    /// until it has exec'd or exited.
    pub detached: Vec<OwnedFd>,
}

fn c_string(what: &str, value: impl Into<Vec<u8>>) -> Result<CString, SandboxError> {
    CString::new(value).map_err(|_| SandboxError::Invalid {
        what: format!("{what} contains a NUL byte"),
    })
}

fn c_path(path: &Path) -> Result<CString, SandboxError> {
    c_string(
        &format!("path {}", path.display()),
        path.as_os_str().as_bytes(),
    )
}

struct Builder<'a> {
    root: &'a Path,
    /// The `open_tree` clones pid 1 attaches (see [`Prepared::detached`]).
    detached: Vec<OwnedFd>,
    ops: Vec<Op>,
    steps: Vec<String>,
    stubs: Vec<PathBuf>,
    /// Where a mount has been planned so far (relative to the root).
    mount_points: Vec<PathBuf>,
}

impl Builder<'_> {
    fn push(&mut self, op: Op, step: String) {
        self.ops.push(op);
        self.steps.push(step);
    }

    /// The mount target `inside`, relative to the root (pid 1 works in the
    /// root's directory: see [`Op::Chdir`]), which the caller mounts on
    /// next. Missing, it is created in the root (and recorded as a stub),
    /// or, below an earlier mount, by pid 1 once that is mounted (no stub:
    /// it lives in the mount).
    fn target(&mut self, inside: &str, kind: Kind) -> Result<CString, SandboxError> {
        let target = path::ensure(
            self.root,
            Path::new(inside),
            kind,
            &self.mount_points,
            &mut self.stubs,
        )
        .map_err(|source| SandboxError::Prepare {
            what: format!("mount point {inside} in {}", self.root.display()),
            source,
        })?;
        let relative = match target {
            Target::Root(relative) => relative,
            Target::Mount { index, below } => {
                let base = self.mount_points[index].clone();
                if !below.is_empty() {
                    let names = below
                        .iter()
                        .map(|name| c_string("mount target", name.as_bytes()))
                        .collect::<Result<_, _>>()?;
                    let op = Op::MountPoint {
                        base: c_path(&base)?,
                        names,
                        kind,
                    };
                    self.push(op, format!("creating the mount point {inside}"));
                }
                below.iter().fold(base, |path, name| path.join(name))
            }
        };
        let inside = c_path(&relative)?;
        self.mount_points.push(relative);
        Ok(inside)
    }

    /// A clone of the mount tree at `source` (recursive), for pid 1 to
    /// attach.
    fn detach(&mut self, source: &Path) -> Result<RawFd, SandboxError> {
        let flags = OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::AT_RECURSIVE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC;
        let mount = rustix::mount::open_tree(rustix::fs::CWD, source, flags).map_err(|err| {
            SandboxError::Prepare {
                what: format!("a mount of {}", source.display()),
                source: err.into(),
            }
        })?;
        let raw = mount.as_raw_fd();
        self.detached.push(mount);
        Ok(raw)
    }

    fn mount(
        &mut self,
        source: &str,
        target: CString,
        fstype: &str,
        flags: MountFlags,
        data: Option<&str>,
        step: String,
    ) -> Result<(), SandboxError> {
        let op = Op::Mount {
            source: c_string("mount source", source)?,
            target,
            fstype: c_string("file system type", fstype)?,
            flags,
            data: data
                .map(|data| c_string("mount options", data))
                .transpose()?,
        };
        self.push(op, step);
        Ok(())
    }

    fn dev(&mut self, dev: &Path, rootless: bool) -> Result<(), SandboxError> {
        let at = |name: &str| c_path(&dev.join(name));
        for name in DEVICES {
            let op = Op::Device {
                source: c_string("device", format!("/dev/{name}"))?,
                target: at(name)?,
            };
            self.push(op, format!("binding /dev/{name} into the sandbox"));
        }
        self.push(
            Op::Mkdir {
                path: at("pts")?,
                mode: 0o755,
            },
            "creating /dev/pts".into(),
        );
        let devpts = if rootless {
            "newinstance,ptmxmode=0666,mode=0620"
        } else {
            "newinstance,ptmxmode=0666,mode=0620,gid=5"
        };
        self.mount(
            "devpts",
            at("pts")?,
            "devpts",
            MountFlags::NOSUID | MountFlags::NOEXEC,
            Some(devpts),
            "mounting devpts on /dev/pts".into(),
        )?;
        for (target, link) in [
            ("pts/ptmx", "ptmx"),
            ("/proc/self/fd", "fd"),
            ("/proc/self/fd/0", "stdin"),
            ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
        ] {
            let op = Op::Symlink {
                target: c_string("link", target)?,
                link: at(link)?,
            };
            self.push(op, format!("creating the symlink /dev/{link}"));
        }
        self.push(
            Op::Mkdir {
                path: at("shm")?,
                mode: 0o1777,
            },
            "creating /dev/shm".into(),
        );
        self.mount(
            "shm",
            at("shm")?,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            Some("mode=1777,size=65536k"),
            "mounting a tmpfs on /dev/shm".into(),
        )
    }
}

/// The exec candidates for `program`: itself when it has a `/`, else each
/// directory of `PATH` (from `env`) joined with it, as runc looks it up.
pub(super) fn candidates(program: &str, env: &[(String, String)]) -> Vec<String> {
    if program.contains('/') {
        return vec![program.to_owned()];
    }
    let path = env
        .iter()
        .rev()
        .find(|(name, _)| name == "PATH")
        .map(|(_, value)| value.as_str())
        .unwrap_or_default();
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| format!("{}/{program}", dir.trim_end_matches('/')))
        .collect()
}

/// Prepares a run of `spec`, from the template namespace when there is
/// one (see `template.rs`), else from a copy of the executor's own.
pub(super) fn prepare<'a>(
    spec: &Spec,
    root: &'a Path,
    rootless: bool,
    template: Option<BorrowedFd<'a>>,
) -> Result<Prepared, SandboxError> {
    let Some(program) = spec.args.first() else {
        return Err(SandboxError::Invalid {
            what: "empty command".into(),
        });
    };
    if !spec.cwd.starts_with('/') {
        return Err(SandboxError::Invalid {
            what: format!("working directory {:?} is not absolute", spec.cwd),
        });
    }
    let mut b = Builder {
        root,
        detached: Vec::new(),
        ops: Vec::new(),
        steps: Vec::new(),
        stubs: Vec::new(),
        mount_points: Vec::new(),
    };
    let root_c = c_path(root)?;
    let shown = root.display().to_string();
    let at = if let Some(namespace) = template {
        b.push(
            Op::EnterTemplate {
                namespace: namespace.as_raw_fd(),
            },
            "entering the sandbox's mount namespace".into(),
        );
        let mount = b.detach(root)?;
        b.push(
            Op::Attach {
                mount,
                target: template::ATTACH.to_owned(),
                read_only: false,
            },
            format!("attaching the root {shown}"),
        );
        template::ATTACH.to_owned()
    } else {
        b.push(Op::PrivateRoot, "making the mounts private".into());
        b.push(
            Op::Bind {
                source: root_c.clone(),
                target: root_c.clone(),
                read_only: false,
            },
            format!("binding the root {shown} onto itself"),
        );
        root_c.clone()
    };
    // Every later path is relative to the root: the kernel then walks a
    // name or two rather than the root's whole host path, some forty times
    // a step.
    b.push(Op::Chdir { path: at }, format!("entering the root {shown}"));

    let proc = b.target("/proc", Kind::Dir)?;
    b.mount(
        "proc",
        proc.clone(),
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
        "mounting /proc".into(),
    )?;
    let proc_path = PathBuf::from(std::ffi::OsStr::from_bytes(proc.as_bytes()));
    let sys = b.target("/sys", Kind::Dir)?;
    let sys_path = PathBuf::from(std::ffi::OsStr::from_bytes(sys.as_bytes()));
    b.push(Op::Sysfs { target: sys }, "mounting /sys read-only".into());
    // The kernel's paths under the fresh /proc and /sys, never the root's.
    let kernel_path = |inside: &str| {
        let (base, rest) = match inside.strip_prefix("/proc/") {
            Some(rest) => (&proc_path, rest),
            None => (&sys_path, inside.trim_start_matches("/sys/")),
        };
        c_path(&base.join(rest))
    };
    for inside in MASKED {
        let target = kernel_path(inside)?;
        b.push(Op::Mask { target }, format!("masking {inside}"));
    }
    for inside in READ_ONLY {
        let target = kernel_path(inside)?;
        b.push(
            Op::ReadOnly { target },
            format!("making {inside} read-only"),
        );
    }
    let dev = b.target("/dev", Kind::Dir)?;
    let dev_path = PathBuf::from(std::ffi::OsStr::from_bytes(dev.as_bytes()));
    b.mount(
        "tmpfs",
        dev,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::STRICTATIME,
        Some("mode=755,size=65536k"),
        "mounting a tmpfs on /dev".into(),
    )?;
    b.dev(&dev_path, rootless)?;

    // The /etc files are written by pid 1 on the /dev tmpfs just mounted,
    // bound over the root's, and unlinked there: nothing is written to the
    // host's disk for them (a file system where every new inode is costly
    // makes that count, once a step), and they vanish with the sandbox.
    let files = [
        (
            "hosts",
            super::etc::hosts(&spec.hostname, &spec.extra_hosts),
        ),
        ("resolv.conf", super::etc::resolv_conf()),
        ("hostname", super::etc::hostname(&spec.hostname)),
    ];
    for (name, content) in files {
        let inside = format!("/etc/{name}");
        let source = c_path(&dev_path.join(format!(".executor-etc-{name}")))?;
        b.push(
            Op::WriteFile {
                path: source.clone(),
                content: content.into_bytes(),
            },
            format!("writing {inside} for the sandbox"),
        );
        let target = b.target(&inside, Kind::File)?;
        b.push(
            Op::Bind {
                source: source.clone(),
                target,
                read_only: false,
            },
            format!("binding {inside}"),
        );
        b.push(
            Op::Unlink { path: source },
            format!("removing the source of {inside} from /dev"),
        );
    }

    for mount in &spec.mounts {
        if !mount.target.starts_with('/') {
            return Err(SandboxError::Invalid {
                what: format!("mount target {:?} is not absolute", mount.target),
            });
        }
        match &mount.kind {
            MountKind::Bind { source, read_only } => {
                let meta = fs::metadata(source).map_err(|err| SandboxError::Prepare {
                    what: format!("bind mount source {}", source.display()),
                    source: err,
                })?;
                let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
                let target = b.target(&mount.target, kind)?;
                let op = if template.is_some() {
                    Op::Attach {
                        mount: b.detach(source)?,
                        target,
                        read_only: *read_only,
                    }
                } else {
                    Op::Bind {
                        source: c_path(source)?,
                        target,
                        read_only: *read_only,
                    }
                };
                b.push(
                    op,
                    format!("binding {} onto {}", source.display(), mount.target),
                );
            }
            MountKind::Tmpfs { size, mode } => {
                let mut options = Vec::new();
                if let Some(size) = size {
                    options.push(format!("size={size}"));
                }
                if let Some(mode) = mode {
                    options.push(format!("mode={mode:o}"));
                }
                let target = b.target(&mount.target, Kind::Dir)?;
                let options = options.join(",");
                b.mount(
                    "tmpfs",
                    target,
                    "tmpfs",
                    MountFlags::NOSUID | MountFlags::NODEV,
                    Some(&options)
                        .filter(|options| !options.is_empty())
                        .map(String::as_str),
                    format!("mounting a tmpfs on {}", mount.target),
                )?;
            }
        }
    }

    b.push(
        Op::Hostname {
            name: spec.hostname.as_bytes().to_vec(),
        },
        format!("setting the hostname {:?}", spec.hostname),
    );
    if matches!(spec.network, Network::None) {
        b.push(Op::LoopbackUp, "bringing up the loopback interface".into());
    }
    if template.is_some() {
        b.push(Op::MoveRoot, format!("making {shown} the root"));
    } else {
        b.push(
            Op::Pivot { root: root_c },
            format!("pivoting into the root {shown}"),
        );
    }
    let mut prefix = String::new();
    for name in spec.cwd.split('/').filter(|name| !name.is_empty()) {
        prefix.push('/');
        prefix.push_str(name);
        b.push(
            Op::MkdirOwned {
                path: c_string("working directory", prefix.as_str())?,
                uid: spec.user.uid,
                gid: spec.user.gid,
            },
            format!("creating the working directory {prefix}"),
        );
    }

    let candidates = candidates(program, &spec.env)
        .into_iter()
        .map(|candidate| c_string("command", candidate))
        .collect::<Result<_, _>>()?;
    let argv = spec
        .args
        .iter()
        .map(|arg| c_string("argument", arg.as_str()))
        .collect::<Result<_, _>>()?;
    let env = spec
        .env
        .iter()
        .map(|(name, value)| {
            if name.is_empty() || name.contains('=') {
                return Err(SandboxError::Invalid {
                    what: format!("environment variable name {name:?}"),
                });
            }
            c_string("environment variable", format!("{name}={value}"))
        })
        .collect::<Result<_, _>>()?;
    let mut plan = Plan::new(
        b.ops,
        rootless.then(UserMaps::for_caller),
        &spec.user,
        c_string("working directory", spec.cwd.as_str())?,
        candidates,
        argv,
        env,
    );
    if template.is_some() {
        plan.empty_dir = Some(template::EMPTY);
    }
    Ok(Prepared {
        plan,
        steps: b.steps,
        stubs: b.stubs,
        detached: b.detached,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_looked_up_in_the_path_of_the_environment() {
        let env = vec![
            ("PATH".to_owned(), "/usr/bin:/bin/".to_owned()),
            ("HOME".to_owned(), "/".to_owned()),
        ];
        assert_eq!(candidates("sh", &env), vec!["/usr/bin/sh", "/bin/sh"]);
        assert_eq!(candidates("./run", &env), vec!["./run"]);
        assert!(candidates("sh", &[]).is_empty());
    }
}
