//! `executor build` under the restrictions of Kubernetes pods, checked here
//! as the README documents them:
//! - without `CAP_SYS_ADMIN` (`capsh --drop=cap_sys_admin`, what a pod gets
//!   by default): a Dockerfile with RUN fails before any work with a message
//!   naming what is missing and what to grant; one without RUN builds and
//!   pushes (snapshots fall back from overlay to copies);
//! - under a seccomp filter like the container runtimes' default profile
//!   (unshare, mount, pivot_root and namespace-creating clone refused): the
//!   same;
//! - in a user namespace as root mapped to an unprivileged range (what
//!   `hostUsers: false` gives a pod): RUN works.

// The seccomp filter is installed between fork and exec.
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt as _;
use std::process::Command;

use executor_e2e::{Project, Registry, RegistryKind, unpack, wrapped};

/// `cmd`'s program and arguments, run under `capsh` without
/// `CAP_SYS_ADMIN` in the bounding set (so not after exec either).
fn without_cap_sys_admin(cmd: &Command) -> Command {
    wrapped(
        &[
            "capsh",
            "--drop=cap_sys_admin",
            "--",
            "-c",
            "exec \"$0\" \"$@\"",
        ],
        cmd,
    )
}

/// Gives the project's directory (context, store) to `owner`, as a pod's
/// volume belongs to its user.
fn chown_project(project: &Project, owner: &str) {
    let status = Command::new("chown")
        .args(["-R", owner])
        .arg(project.dir.path())
        .status()
        .expect("chown runs");
    assert!(status.success());
}

/// A classic BPF seccomp filter refusing what the runtimes' default
/// profile refuses a container without `CAP_SYS_ADMIN`: unshare, setns,
/// mount, umount2, pivot_root (EPERM), clone with a namespace flag (EPERM),
/// clone3 (ENOSYS, so libc falls back to clone). Everything else passes.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::cast_possible_truncation)] // BPF opcodes are 16-bit
fn deny_namespaces(cmd: &mut Command) {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    const EPERM: u32 = 1;
    const ENOSYS: u32 = 38;
    const NAMESPACE_FLAGS: u32 = 0x0002_0000 // CLONE_NEWNS
        | 0x0200_0000 // CLONE_NEWCGROUP
        | 0x0400_0000 // CLONE_NEWUTS
        | 0x0800_0000 // CLONE_NEWIPC
        | 0x1000_0000 // CLONE_NEWUSER
        | 0x2000_0000 // CLONE_NEWPID
        | 0x4000_0000; // CLONE_NEWNET
    // Syscall numbers on x86_64.
    const UNSHARE: u32 = 272;
    const SETNS: u32 = 308;
    const MOUNT: u32 = 165;
    const UMOUNT2: u32 = 166;
    const PIVOT_ROOT: u32 = 155;
    const CLONE: u32 = 56;
    const CLONE3: u32 = 435;
    fn stmt(code: u16, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }
    fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt,
            jf,
            k,
        }
    }
    let load = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let filter = vec![
        /* 0 */ stmt(load, 4), // seccomp_data.arch
        /* 1 */ jeq(AUDIT_ARCH_X86_64, 1, 0),
        /* 2 */ stmt(ret, RET_ALLOW),
        /* 3 */ stmt(load, 0), // seccomp_data.nr
        /* 4 */ jeq(UNSHARE, 9, 0),
        /* 5 */ jeq(SETNS, 8, 0),
        /* 6 */ jeq(MOUNT, 7, 0),
        /* 7 */ jeq(UMOUNT2, 6, 0),
        /* 8 */ jeq(PIVOT_ROOT, 5, 0),
        /* 9 */ jeq(CLONE3, 6, 0),
        /* 10 */ jeq(CLONE, 1, 0),
        /* 11 */ stmt(ret, RET_ALLOW),
        /* 12 */ stmt(load, 16), // clone's flags (args[0], low half)
        /* 13 */
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: NAMESPACE_FLAGS,
        },
        /* 14 */ stmt(ret, RET_ERRNO | EPERM),
        /* 15 */ stmt(ret, RET_ALLOW),
        /* 16 */ stmt(ret, RET_ERRNO | ENOSYS),
    ];
    // Jumps above: 4..=8 go to 14 (EPERM), 9 goes to 16 (ENOSYS), 10 to 12.
    assert_eq!(filter.len(), 17);
    // SAFETY: runs in the child between fork and exec, calling only prctl
    // (async-signal-safe) on memory the closure owns.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: u16::try_from(filter.len()).expect("a short filter"),
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &raw const prog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn run_dockerfile(base: &str) -> Project {
    Project::new(
        &format!("FROM {base}\nCOPY f /f\nRUN echo restricted > /r\n"),
        &[("f", "x")],
    )
}

fn copy_dockerfile(base: &str) -> Project {
    Project::new(
        &format!("FROM {base}\nCOPY f /srv/f\nWORKDIR /srv/app\n"),
        &[("f", "copied")],
    )
}

fn assert_names_what_to_grant(stderr: &str) {
    assert!(
        stderr.contains("Dockerfile:3: RUN cannot run here"),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");
    assert!(stderr.contains("CAP_SYS_ADMIN"), "{stderr}");
    // Refused before any work: the base image was not even pulled.
    assert!(!stderr.contains("STEP 2/"), "{stderr}");
}

#[test]
fn run_without_cap_sys_admin_fails_naming_what_to_grant() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = run_dockerfile(&base);
    let destination = registry.reference("restricted/run:1");
    // Namespaces named: `auto` would build in place on a machine that is
    // a container.
    let cmd = project.build(&[
        "--isolation=namespace",
        "-d",
        &destination,
        "--insecure-registry",
        &registry.host,
    ]);
    let stderr = executor_e2e::fails(&mut without_cap_sys_admin(&cmd));
    assert_names_what_to_grant(&stderr);
    let probe = Command::new("skopeo")
        .arg("inspect")
        .args(registry.skopeo_args(""))
        .arg(format!("docker://{destination}"))
        .output()
        .expect("skopeo runs");
    assert!(!probe.status.success(), "nothing may be pushed");
}

#[test]
fn copy_only_build_works_without_cap_sys_admin() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = copy_dockerfile(&base);
    let destination = registry.reference("restricted/copy:1");
    let cmd = project.build(&["-d", &destination, "--insecure-registry", &registry.host]);
    executor_e2e::ok(&mut without_cap_sys_admin(&cmd));
    let rootfs = unpack(&registry, &destination, &project.path("unpacked"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("srv/f")).unwrap(),
        "copied"
    );
    assert!(rootfs.join("srv/app").is_dir());
    assert!(rootfs.join("bin/busybox").is_file());
}

#[cfg(target_arch = "x86_64")]
#[test]
fn run_under_a_seccomp_filter_denying_namespaces_fails_clearly_and_copy_works() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();

    let project = run_dockerfile(&base);
    let mut cmd = project.build(&["--isolation=namespace", "--no-push"]);
    deny_namespaces(&mut cmd);
    let stderr = executor_e2e::fails(&mut cmd);
    assert_names_what_to_grant(&stderr);
    assert!(stderr.contains("seccomp"), "{stderr}");

    let project = copy_dockerfile(&base);
    let destination = registry.reference("restricted/seccomp:1");
    let mut cmd = project.build(&["-d", &destination, "--insecure-registry", &registry.host]);
    deny_namespaces(&mut cmd);
    executor_e2e::ok(&mut cmd);
    let rootfs = unpack(&registry, &destination, &project.path("unpacked"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("srv/f")).unwrap(),
        "copied"
    );
    // The filter lets the new mount API through but refuses umount2, and
    // the build shares the host's mounts: it must have mounted nothing
    // (an overlay probe used to stay mounted here).
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let key = project.cache().to_string_lossy().into_owned();
    assert!(
        !mounts.lines().any(|l| l.contains(&key)),
        "the build left mounts behind:\n{mounts}"
    );
}

/// A user namespace whose root is `argv[1]` here, made as the
/// container runtime makes a pod's: the child unshares, this side (root
/// outside) writes the id maps, the child becomes root inside and runs
/// the build in fresh mount and PID namespaces. (unshare(1) cannot: its
/// --map-users needs an /etc/subuid entry.)
const USERNS: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID = 0x10000000, 0x00020000, 0x20000000
outside = sys.argv[1]
ready_r, ready_w = os.pipe()
mapped_r, mapped_w = os.pipe()
pid = os.fork()
if pid == 0:
    if libc.unshare(CLONE_NEWUSER) != 0:
        sys.exit("unshare(CLONE_NEWUSER): " + os.strerror(ctypes.get_errno()))
    os.write(ready_w, b"x")
    os.read(mapped_r, 1)
    os.setgid(0)
    os.setgroups([])
    os.setuid(0)
    if libc.unshare(CLONE_NEWNS | CLONE_NEWPID) != 0:
        sys.exit("unshare(CLONE_NEWNS|CLONE_NEWPID): " + os.strerror(ctypes.get_errno()))
    inner = os.fork()
    if inner == 0:
        os.execvp(sys.argv[2], sys.argv[2:])
    _, status = os.waitpid(inner, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
os.read(ready_r, 1)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as f:
        f.write(f"0 {outside} 65536\n")
os.write(mapped_w, b"x")
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// `hostUsers: false`: the pod's root is root only in its own user
/// namespace, mapped to an unprivileged range of this machine's ids.
#[test]
fn run_works_as_root_of_a_user_namespace() {
    const OUTSIDE: u32 = 200_000;
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = Project::new(
        &format!(
            "FROM {base}\nRUN echo app:x:1000:1000::/home/app:/bin/sh >> /etc/passwd && echo in-userns > /r && mkdir -p /home/app && chown app /r /home/app\nUSER app\nRUN id -u > /home/app/uid\n"
        ),
        &[],
    );
    // What the namespace's root owns: the project (context, store).
    chown_project(&project, &format!("{OUTSIDE}:{OUTSIDE}"));
    let destination = registry.reference("restricted/userns:1");
    let cmd = project.build(&["-d", &destination, "--insecure-registry", &registry.host]);
    let outside = OUTSIDE.to_string();
    executor_e2e::ok(&mut wrapped(&["python3", "-c", USERNS, &outside], &cmd));
    let rootfs = unpack(&registry, &destination, &project.path("unpacked"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("r")).unwrap(),
        "in-userns\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("home/app/uid")).unwrap(),
        "1000\n"
    );
}

/// Without root at all (a pod with `runAsUser: 1000` and user namespaces
/// allowed): RUN runs in a user namespace that maps the caller to root, and
/// what the caller owns is root's in the image.
#[test]
fn run_works_without_root() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = Project::new(
        &format!("FROM {base}\nCOPY f /srv/f\nRUN id -u > /uid && echo rootless > /srv/r\n"),
        &[("f", "copied")],
    );
    chown_project(&project, "1000:1000");
    let destination = registry.reference("restricted/rootless:1");
    let cmd = project.build(&["-d", &destination, "--insecure-registry", &registry.host]);
    executor_e2e::ok(&mut wrapped(
        &[
            "setpriv",
            "--reuid",
            "1000",
            "--regid",
            "1000",
            "--clear-groups",
            "--",
        ],
        &cmd,
    ));
    let rootfs = unpack(&registry, &destination, &project.path("unpacked"));
    assert_eq!(std::fs::read_to_string(rootfs.join("uid")).unwrap(), "0\n");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("srv/r")).unwrap(),
        "rootless\n"
    );
    for path in ["uid", "srv", "srv/f", "srv/r"] {
        let meta = std::fs::symlink_metadata(rootfs.join(path)).unwrap();
        assert_eq!(
            (
                std::os::unix::fs::MetadataExt::uid(&meta),
                std::os::unix::fs::MetadataExt::gid(&meta)
            ),
            (0, 0),
            "/{path}"
        );
    }
}
