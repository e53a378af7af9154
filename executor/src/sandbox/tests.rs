//! The sandbox run for real, as root, in a busybox root filesystem.

use std::fs;
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::*;

const APPLETS: [&str; 25] = [
    "sh", "echo", "cat", "id", "ls", "touch", "sleep", "ps", "mount", "ip", "pwd", "env",
    "hostname", "test", "tr", "grep", "wc", "head", "tail", "cut", "sort", "mknod", "chown",
    "stat", "mkdir",
];

/// kill_all kills every sandbox of the process: the test using it runs
/// alone (as does the one counting temporary directories), the others share.
static KILL_LOCK: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Shared by every test of the crate that runs a sandbox (`pipeline::script`'s
/// too): a test calling `kill_all` waits for them, and they for it.
pub(crate) fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    KILL_LOCK
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A root with busybox, /etc/passwd and /etc/group, and nothing else.
fn busybox_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        root.join("etc/group"),
        "root:x:0:\nalice:x:1000:\nwheel:x:10:alice\n",
    )
    .unwrap();
    dir
}

struct Captured {
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Captured {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

fn spec(root: &Path, script: &str) -> (Spec, Captured) {
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let captured = Captured {
        stdout: Arc::clone(&stdout),
        stderr: Arc::clone(&stderr),
    };
    let spec = Spec {
        root: root.to_owned(),
        args: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: "/".into(),
        user: User::default(),
        hostname: "sandbox-test".into(),
        network: Network::Host,
        extra_hosts: Vec::new(),
        mounts: Vec::new(),
        output: Arc::new(move |stream, bytes| match stream {
            Stream::Stdout => stdout.lock().unwrap().extend_from_slice(bytes),
            Stream::Stderr => stderr.lock().unwrap().extend_from_slice(bytes),
        }),
        security: super::Security::default(),
        init: true,
    };
    (spec, captured)
}

/// Runs `script` and returns the outcome and its stdout.
fn sh(root: &Path, script: &str) -> (Outcome, String) {
    let (spec, captured) = spec(root, script);
    let outcome = run(&spec).unwrap();
    (outcome, captured.stdout())
}

fn mountinfo_mentions(needle: &str) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|line| line.contains(needle))
        .map(str::to_owned)
        .collect()
}

fn processes_with_cmdline(cmdline: &[u8]) -> Vec<String> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|entry| fs::read(entry.path().join("cmdline")).is_ok_and(|line| line == cmdline))
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn output_and_exit_codes() {
    let _shared = shared();
    let root = busybox_root();
    let (spec, captured) = spec(root.path(), "cat; echo hello; echo oops >&2; exit 3");
    let outcome = run(&spec).unwrap();
    assert_eq!(outcome.status, Status::Exited(3));
    assert_eq!(captured.stdout(), "hello\n");
    assert_eq!(captured.stderr(), "oops\n");
    let (outcome, _) = sh(root.path(), "true");
    assert!(outcome.status.success());
    let (outcome, _) = sh(root.path(), "kill -TERM $$");
    assert_eq!(outcome.status, Status::Signaled(libc::SIGTERM));
}

#[test]
fn the_environment_is_exactly_the_spec() {
    let _shared = shared();
    let root = busybox_root();
    let (mut spec, captured) = spec(root.path(), "env | sort");
    spec.env.push(("GREETING".into(), "hello world".into()));
    let outcome = run(&spec).unwrap();
    assert!(outcome.status.success());
    // busybox sh adds PWD, SHLVL; nothing of the test's own environment.
    let stdout = captured.stdout();
    assert!(stdout.contains("GREETING=hello world\n"), "{stdout}");
    assert!(stdout.contains("PATH=/usr/bin:/bin\n"), "{stdout}");
    assert!(!stdout.contains("CARGO"), "{stdout}");
}

#[test]
fn user_groups_and_a_created_working_directory() {
    let _shared = shared();
    let root = busybox_root();
    let (mut spec, captured) = spec(
        root.path(),
        "id -u; id -g; id -G; pwd; touch mine && ls -ln",
    );
    spec.user = user::resolve(root.path(), "alice").unwrap();
    spec.cwd = "/home/alice/work".into();
    let outcome = run(&spec).unwrap();
    assert!(outcome.status.success(), "{}", captured.stderr());
    let stdout = captured.stdout();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[..4], ["1000", "1000", "1000 10", "/home/alice/work"]);
    assert!(
        stdout.contains(" 1000 ") && stdout.contains("mine"),
        "{stdout}"
    );
    let meta = fs::metadata(root.path().join("home/alice/work")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        1000,
        "the working directory belongs to the user"
    );
}

#[test]
fn proc_shows_only_the_sandbox() {
    let _shared = shared();
    let root = busybox_root();
    let (outcome, stdout) = sh(
        root.path(),
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc | grep -c '^[0-9]'",
    );
    assert!(outcome.status.success());
    let lines: Vec<&str> = stdout.lines().collect();
    // pid 1 is our init: a fork of this test binary, not the command.
    let own = fs::read("/proc/self/cmdline").unwrap();
    let own = String::from_utf8_lossy(&own).replace('\0', " ");
    assert_eq!(lines[0], own);
    // pid 1, sh, ls and grep at most.
    let count: u32 = lines[1].trim().parse().unwrap();
    assert!(count <= 4, "{stdout}");
}

#[test]
fn dev_etc_and_hostname() {
    let _shared = shared();
    let root = busybox_root();
    let (mut spec, captured) = spec(
        root.path(),
        "echo x > /dev/null && cat /dev/null && head -c 4 /dev/zero | wc -c; \
         test -c /dev/urandom && test -L /dev/ptmx && test -d /dev/pts && test -d /dev/shm && echo devices; \
         cat /etc/hosts; hostname; cat /etc/hostname; \
         touch /sys/x 2>/dev/null || echo sys read-only",
    );
    spec.extra_hosts = vec![("db".into(), "10.1.2.3".parse().unwrap())];
    let outcome = run(&spec).unwrap();
    assert!(outcome.status.success(), "{}", captured.stderr());
    let stdout = captured.stdout();
    assert!(
        stdout.starts_with("4\ndevices\n127.0.0.1\tlocalhost\tsandbox-test\n"),
        "{stdout}"
    );
    assert!(stdout.contains("10.1.2.3\tdb\n"), "{stdout}");
    assert!(
        stdout.ends_with("sandbox-test\nsandbox-test\nsys read-only\n"),
        "{stdout}"
    );
    // The files were bound in, never written into the root; the missing
    // ones were created as empty stubs and reported.
    for (stub, _) in MOUNT_POINTS {
        assert!(
            outcome.stubs.contains(&PathBuf::from(stub)),
            "{:?}",
            outcome.stubs
        );
    }
    assert_eq!(fs::read(root.path().join("etc/hosts")).unwrap(), b"");
    assert_eq!(fs::read(root.path().join("etc/hostname")).unwrap(), b"");
    // A root that has every MOUNT_POINTS entry (as rootfs's mount-point
    // lower makes them) needs no stub.
    let outcome = run(&spec).unwrap();
    assert!(outcome.status.success(), "{}", captured.stderr());
    assert_eq!(outcome.stubs, Vec::<PathBuf>::new());
}

/// The `Cap*` lines of the command's /proc/self/status.
fn capability_lines(root: &Path, user: &str) -> String {
    let (mut spec, captured) = spec(root, "grep ^Cap /proc/self/status");
    spec.user = user::resolve(root, user).unwrap();
    let outcome = run(&spec).unwrap();
    assert!(outcome.status.success(), "{}", captured.stderr());
    captured.stdout()
}

#[test]
fn the_command_has_dockers_default_capabilities() {
    let _shared = shared();
    let root = busybox_root();
    assert_eq!(
        DEFAULT_CAPABILITIES_MASK,
        child::DEFAULT_CAPABILITIES.bits(),
        "the mask Docker shows for its default set"
    );
    assert_eq!(
        capability_lines(root.path(), "root"),
        "CapInh:\t0000000000000000\n\
         CapPrm:\t00000000a80425fb\n\
         CapEff:\t00000000a80425fb\n\
         CapBnd:\t00000000a80425fb\n\
         CapAmb:\t0000000000000000\n"
    );
    // setuid to a non-root user empties the permitted and effective sets.
    assert_eq!(
        capability_lines(root.path(), "alice"),
        "CapInh:\t0000000000000000\n\
         CapPrm:\t0000000000000000\n\
         CapEff:\t0000000000000000\n\
         CapBnd:\t00000000a80425fb\n\
         CapAmb:\t0000000000000000\n"
    );
}

const DEFAULT_CAPABILITIES_MASK: u64 = 0xa804_25fb;

#[test]
fn root_in_the_sandbox_cannot_mount_but_can_mknod_and_chown() {
    let _shared = shared();
    let root = busybox_root();
    let (spec, captured) = spec(
        root.path(),
        "mkdir -p /mnt /tmp; mount -t tmpfs none /mnt && echo mounted || echo mount refused; \
         mknod /tmp/null c 1 3 && test -c /tmp/null && echo mknod; \
         touch /tmp/owned && chown 1000:10 /tmp/owned && stat -c %u:%g /tmp/owned",
    );
    let outcome = run(&spec).unwrap();
    assert!(outcome.status.success(), "{}", captured.stderr());
    assert_eq!(captured.stdout(), "mount refused\nmknod\n1000:10\n");
    assert!(
        captured.stderr().contains("ermission denied")
            || captured.stderr().contains("not permitted"),
        "{}",
        captured.stderr()
    );
}

#[test]
fn proc_and_sys_are_masked_as_in_runc() {
    let _shared = shared();
    // What the masks hide has content here (this kernel has no /proc/kcore
    // or /proc/sysrq-trigger: the sandbox skips them).
    for path in ["/proc/timer_list", "/proc/keys"] {
        assert!(!fs::read(path).unwrap().is_empty(), "{path}");
    }
    assert!(fs::read_dir("/sys/firmware").unwrap().next().is_some());
    let root = busybox_root();
    let (spec, captured) = spec(
        root.path(),
        "echo x > /proc/sys/kernel/hostname; touch /sys/firmware/x; \
         wc -c < /proc/timer_list; wc -c < /proc/keys; \
         test ! -e /proc/kcore || wc -c < /proc/kcore; \
         ls -A /sys/firmware | wc -l; \
         test ! -d /proc/acpi || ls -A /proc/acpi | wc -l; \
         grep -E ' /(proc/sys|proc/bus|proc/keys|sys/firmware) ' /proc/mounts | cut -d' ' -f2,4 | cut -d, -f1 | sort",
    );
    let outcome = run(&spec).unwrap();
    assert!(outcome.status.success(), "{}", captured.stderr());
    let stdout = captured.stdout();
    let lines: Vec<&str> = stdout.lines().collect();
    // timer_list, keys and kcore (when the kernel has it) read empty;
    // /sys/firmware and /proc/acpi (when the kernel has it: both are then
    // masked by one empty tmpfs) list nothing.
    let counts = lines.iter().take_while(|line| **line == "0").count();
    let present = ["/proc/kcore", "/proc/acpi"]
        .iter()
        .filter(|path| Path::new(path).exists())
        .count();
    assert_eq!(counts, 3 + present, "{stdout}");
    for mount in [
        "/proc/bus ro",
        "/proc/keys rw",
        "/proc/sys ro",
        "/sys/firmware ro",
    ] {
        assert!(lines.contains(&mount), "{mount}: {stdout}");
    }
    let stderr = captured.stderr();
    assert!(
        stderr.contains("/proc/sys/kernel/hostname: Read-only file system"),
        "{stderr}"
    );
    assert!(
        stderr.contains("/sys/firmware/x: Read-only file system"),
        "{stderr}"
    );
}

#[test]
fn network_none_has_only_loopback() {
    let _shared = shared();
    let root = busybox_root();
    let (mut spec, captured) = spec(
        root.path(),
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ip link show lo",
    );
    spec.network = Network::None;
    let outcome = run(&spec).unwrap();
    assert!(outcome.status.success(), "{}", captured.stderr());
    let stdout = captured.stdout();
    assert!(stdout.starts_with("lo\n"), "{stdout}");
    assert!(stdout.contains("UP"), "{stdout}");
}

#[test]
fn bind_and_tmpfs_mounts() {
    let _shared = shared();
    let root = busybox_root();
    let data = tempfile::tempdir().unwrap();
    fs::write(data.path().join("file"), "content\n").unwrap();
    let (mut spec, captured) = spec(
        root.path(),
        "cat /data/ro/file; touch /data/ro/new 2>/dev/null || echo refused; \
         touch /data/rw/new && echo written; \
         grep ' /scratch ' /proc/mounts | cut -d' ' -f3,4 | cut -d, -f1; touch /scratch/x && echo tmpfs",
    );
    spec.mounts = vec![
        Mount {
            target: "/data/ro".into(),
            kind: MountKind::Bind {
                source: data.path().to_owned(),
                read_only: true,
            },
        },
        Mount {
            target: "/data/rw".into(),
            kind: MountKind::Bind {
                source: data.path().to_owned(),
                read_only: false,
            },
        },
        Mount {
            target: "/scratch".into(),
            kind: MountKind::Tmpfs {
                size: Some(1 << 20),
                mode: Some(0o1777),
            },
        },
    ];
    let outcome = run(&spec).unwrap();
    assert!(outcome.status.success(), "{}", captured.stderr());
    assert_eq!(
        captured.stdout(),
        "content\nrefused\nwritten\ntmpfs rw\ntmpfs\n"
    );
    assert!(data.path().join("new").exists());
    let stubs = &outcome.stubs;
    let data_at = stubs
        .iter()
        .position(|stub| stub == Path::new("data"))
        .unwrap();
    assert_eq!(stubs[data_at + 1], Path::new("data/ro"));
    assert_eq!(stubs[data_at + 2], Path::new("data/rw"));
    assert!(stubs.contains(&PathBuf::from("scratch")));
    assert!(!root.path().join("scratch/x").exists());
    let mode = fs::metadata(root.path().join("data/ro"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
}

fn bind(target: &str, source: &Path, read_only: bool) -> Mount {
    Mount {
        target: target.into(),
        kind: MountKind::Bind {
            source: source.to_owned(),
            read_only,
        },
    }
}

#[test]
fn targets_below_an_earlier_mount_are_created_in_it() {
    let _shared = shared();
    let root = busybox_root();
    let data = tempfile::tempdir().unwrap();
    fs::write(data.path().join("secret"), "s3cret\n").unwrap();
    fs::create_dir(data.path().join("cache")).unwrap();
    fs::write(data.path().join("cache/file"), "cached\n").unwrap();
    fs::write(data.path().join("pipe"), "piped\n").unwrap();
    let (mut spec, captured) = spec(
        root.path(),
        "cat /run/secrets/x /run/cache/d/file /dev/pipes/build; \
         grep -E ' /(run|dev)(/|$| )' /proc/mounts | cut -d' ' -f2,3 | sort",
    );
    spec.mounts = vec![
        Mount {
            target: "/run".into(),
            kind: MountKind::Tmpfs {
                size: None,
                mode: None,
            },
        },
        bind("/run/secrets/x", &data.path().join("secret"), true),
        bind("/run/cache/d", &data.path().join("cache"), false),
        bind("/dev/pipes/build", &data.path().join("pipe"), false),
    ];
    let outcome = run(&spec).unwrap();
    assert!(outcome.status.success(), "{}", captured.stderr());
    let stdout = captured.stdout();
    assert!(stdout.starts_with("s3cret\ncached\npiped\n"), "{stdout}");
    for mount in [
        "/dev/pipes/build ",
        "/run tmpfs",
        "/run/cache/d ",
        "/run/secrets/x ",
    ] {
        assert!(stdout.contains(mount), "{mount}: {stdout}");
    }
    // The mount points live in the tmpfs /run and /dev, not in the root.
    assert!(outcome.stubs.contains(&PathBuf::from("run")));
    assert!(
        outcome
            .stubs
            .iter()
            .all(|stub| stub.parent() != Some(Path::new("run"))
                && stub.parent() != Some(Path::new("dev"))
                && !stub.starts_with("run/secrets")
                && !stub.starts_with("run/cache")
                && !stub.starts_with("dev/pipes")),
        "{:?}",
        outcome.stubs
    );
    assert!(!root.path().join("run/secrets").exists());
    assert!(!root.path().join("dev/pipes").exists());
}

/// Runs `spec` with a bind of a directory holding a symlink out of it
/// and a tmpfs below that symlink: pid 1's setup must fail, and make
/// nothing through the symlink.
fn refuses_a_mount_point_through_a_symlink(mut spec: Spec) {
    let cache = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), cache.path().join("escape")).unwrap();
    spec.mounts = vec![
        bind("/cache", cache.path(), false),
        Mount {
            target: "/cache/escape/planted".into(),
            kind: MountKind::Tmpfs {
                size: None,
                mode: None,
            },
        },
    ];
    let err = run(&spec).unwrap_err();
    assert!(
        err.to_string()
            .contains("creating the mount point /cache/escape/planted"),
        "{err}"
    );
    assert!(!outside.path().join("planted").exists());
}

#[test]
fn a_symlink_below_an_earlier_mount_is_not_followed() {
    let _shared = shared();
    let root = busybox_root();
    refuses_a_mount_point_through_a_symlink(spec(root.path(), "true").0);
}

#[test]
fn missing_commands_are_errors() {
    let _shared = shared();
    let root = busybox_root();
    let (mut spec, _) = spec(root.path(), "");
    spec.args = vec!["no-such-command".into()];
    let err = run(&spec).unwrap_err();
    assert_eq!(
        err.to_string(),
        "exec: \"no-such-command\": executable file not found in $PATH"
    );
    spec.args = vec!["/bin/nothing".into()];
    assert!(matches!(run(&spec), Err(SandboxError::NotFound { .. })));
}

#[test]
fn nothing_is_left_behind() {
    // Alone, so no other test's sandbox is in the way.
    let _alone = KILL_LOCK
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = busybox_root();
    let key = root.path().to_string_lossy().into_owned();
    let before = list(root.path());
    let (outcome, _) = sh(root.path(), "sleep 5000 & mount | grep -c proc; exit 1");
    assert_eq!(outcome.status, Status::Exited(1));
    assert!(
        mountinfo_mentions(&key).is_empty(),
        "{:?}",
        mountinfo_mentions(&key)
    );
    assert!(processes_with_cmdline(b"sleep\x005000\x00").is_empty());
    // The root holds the mount-point stubs (the caller removes them) and
    // nothing else: the /etc files were written on the sandbox's /dev.
    let mut expected = before;
    expected.extend(
        outcome
            .stubs
            .iter()
            .map(|stub| stub.to_string_lossy().into_owned()),
    );
    expected.sort();
    assert_eq!(list(root.path()), expected);
}

/// Every path below `root`, relative, sorted (also rootfs's tests').
pub(crate) fn list(root: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                todo.push(path.clone());
            }
            paths.push(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    paths.sort();
    paths
}

fn parent_of(pid: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("PPid:"))
        .unwrap();
    line["PPid:".len()..].trim().to_owned()
}

#[test]
fn pid_1_forwards_sigterm_to_the_command() {
    let _shared = shared();
    let root = busybox_root();
    let (spec, captured) = spec(
        root.path(),
        "trap 'echo terminated; exit 7' TERM; sleep 4713 & wait",
    );
    let signaller = std::thread::spawn(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(sleep) = processes_with_cmdline(b"sleep\x004713\x00").first() {
                let init = parent_of(&parent_of(sleep));
                let pid = rustix::process::Pid::from_raw(init.parse().unwrap()).unwrap();
                rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
                return;
            }
            assert!(Instant::now() < deadline, "the command did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let outcome = run(&spec).unwrap();
    signaller.join().unwrap();
    assert_eq!(outcome.status, Status::Exited(7));
    assert_eq!(captured.stdout(), "terminated\n");
    assert!(processes_with_cmdline(b"sleep\x004713\x00").is_empty());
}

#[test]
fn a_private_mount_namespace_hides_the_mounts() {
    let _shared = shared();
    let dir = tempfile::tempdir().unwrap();
    let target = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: the (single-threaded) child makes raw calls only, then _exit.
    let pid = match unsafe { child::clone(0) } {
        Ok(0) => {
            let mounted = enter_private_mount_namespace().is_ok()
                && rustix::mount::mount(
                    c"tmpfs",
                    target.as_c_str(),
                    c"tmpfs",
                    rustix::mount::MountFlags::empty(),
                    None,
                )
                .is_ok();
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(i32::from(!mounted)) }
        }
        Ok(pid) => pid,
        Err(errno) => panic!("clone: {errno}"),
    };
    assert_eq!(wait(pid).unwrap(), 0, "the child could not mount");
    let key = dir.path().to_string_lossy().into_owned();
    assert!(mountinfo_mentions(&key).is_empty());
}

#[test]
fn pid_1_can_tell_the_executor_has_died() {
    let _shared = shared();
    let pidfd = |pid: i32| {
        rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap()
    };
    let me = pidfd(rustix::process::getpid().as_raw_nonzero().get());
    assert!(!child::exited(me.as_raw_fd()));
    // SAFETY: the child only calls _exit.
    let pid = match unsafe { child::clone(0) } {
        // SAFETY: _exit is async-signal-safe.
        Ok(0) => unsafe { libc::_exit(0) },
        Ok(pid) => pid,
        Err(errno) => panic!("clone: {errno}"),
    };
    let gone = pidfd(pid);
    // Still a zombie: not reaped until `wait`, so the pid is not reused.
    // SAFETY: zeroed siginfo_t is valid output storage for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid with valid arguments; WNOWAIT leaves the zombie.
    let waited = unsafe {
        libc::waitid(
            libc::P_PID,
            libc::id_t::try_from(pid).unwrap(),
            &raw mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    assert_eq!(waited, 0);
    assert!(child::exited(gone.as_raw_fd()));
    assert_eq!(wait(pid).unwrap(), 0);
}

#[test]
fn kill_all_ends_the_tree() {
    let _alone = KILL_LOCK
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = busybox_root();
    let (spec, _) = spec(root.path(), "sleep 4711 & sleep 4712");
    let started = Instant::now();
    let killer = std::thread::spawn(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while processes_with_cmdline(b"sleep\x004712\x00").is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_all();
    });
    let outcome = run(&spec).unwrap();
    killer.join().unwrap();
    assert_eq!(outcome.status, Status::Signaled(libc::SIGKILL));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(processes_with_cmdline(b"sleep\x004711\x00").is_empty());
    assert!(processes_with_cmdline(b"sleep\x004712\x00").is_empty());
    let key = root.path().to_string_lossy().into_owned();
    assert!(mountinfo_mentions(&key).is_empty());
}

#[test]
fn a_sandbox_holds_none_of_the_executors_descriptors() {
    let _alone = KILL_LOCK
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // A pipe of the executor's (another step's output, say) is open while
    // a sandbox starts: the sandbox must not keep its write end, or the
    // reader never sees the end of it while the sandbox runs.
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let root = busybox_root();
    let (spec, _) = spec(root.path(), "sleep 4798");
    let long = std::thread::spawn(move || run(&spec).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with_cmdline(b"sleep\x004798\x00").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!processes_with_cmdline(b"sleep\x004798\x00").is_empty());
    drop(write);
    rustix::fs::fcntl_setfl(&read, rustix::fs::OFlags::NONBLOCK).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut hung_up = false;
    while Instant::now() < deadline {
        match rustix::io::read(&read, &mut [0u8; 1]) {
            Ok(0) => {
                hung_up = true;
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let still_running = !long.is_finished();
    kill_all();
    let outcome = long.join().unwrap();
    assert!(
        still_running,
        "the sandbox ended early: {:?}",
        outcome.status
    );
    assert!(hung_up, "the sandbox kept the executor's pipe open");
}

#[test]
fn a_kill_switch_ends_its_own_sandbox_only() {
    let _shared = shared();
    let root = busybox_root();
    let (target, _) = spec(root.path(), "sleep 4811 & sleep 4812");
    // A root of its own: two sandboxes preparing one root at once race
    // for its mount-point stubs.
    let other_root = busybox_root();
    let (other, survivor_out) = spec(
        other_root.path(),
        "until test -e /go-4813; do sleep 0.1; done; echo survived",
    );
    let switch = KillSwitch::new();
    let (outcome, survivor) = std::thread::scope(|scope| {
        let survivor = scope.spawn(|| run(&other).unwrap());
        let killer = scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while processes_with_cmdline(b"sleep\x004812\x00").is_empty()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            switch.kill();
        });
        let outcome = run_killable(&target, &switch).unwrap();
        killer.join().unwrap();
        fs::write(other_root.path().join("go-4813"), "").unwrap();
        (outcome, survivor.join().unwrap())
    });
    assert!(switch.killed());
    assert_eq!(outcome.status, Status::Signaled(libc::SIGKILL));
    assert!(processes_with_cmdline(b"sleep\x004811\x00").is_empty());
    assert!(processes_with_cmdline(b"sleep\x004812\x00").is_empty());
    assert_eq!(survivor.status, Status::Exited(0));
    assert_eq!(survivor_out.stdout(), "survived\n");
}

#[test]
fn a_kill_switch_thrown_before_the_start_kills_at_once() {
    let _shared = shared();
    let root = busybox_root();
    let (spec, _) = spec(root.path(), "sleep 4821");
    let switch = KillSwitch::new();
    switch.kill();
    let outcome = run_killable(&spec, &switch).unwrap();
    assert_eq!(outcome.status, Status::Signaled(libc::SIGKILL));
    assert!(processes_with_cmdline(b"sleep\x004821\x00").is_empty());
}

/// `Spec::init` false (a RUN step): pid 1 is the command itself, started
/// without a fork of the executor; what the caller sees is the same.
#[test]
fn without_init_the_command_is_pid_1() {
    let _shared = shared();
    let root = busybox_root();
    let direct = |script: &str| {
        let (mut spec, captured) = spec(root.path(), script);
        spec.init = false;
        (spec, captured)
    };

    let (spec, captured) =
        direct("echo $$; ps -o pid,args | grep -c '^ *1 sh -c'; echo oops >&2; exit 3");
    let outcome = run(&spec).unwrap();
    assert_eq!(outcome.status, Status::Exited(3));
    assert_eq!(captured.stdout(), "1\n1\n");
    assert_eq!(captured.stderr(), "oops\n");

    // What it started in the background ends with it.
    let (spec, captured) = direct("sleep 4831 & echo started");
    let outcome = run(&spec).unwrap();
    assert!(outcome.status.success(), "{}", captured.stderr());
    assert_eq!(captured.stdout(), "started\n");
    assert!(processes_with_cmdline(b"sleep\x004831\x00").is_empty());

    // Docker's capabilities, the identity asked for.
    let (mut spec, captured) = direct("grep ^Cap /proc/self/status; id -u");
    spec.user = user::resolve(root.path(), "alice").unwrap();
    let outcome = run(&spec).unwrap();
    assert!(outcome.status.success(), "{}", captured.stderr());
    assert_eq!(
        captured.stdout(),
        "CapInh:\t0000000000000000\n\
         CapPrm:\t0000000000000000\n\
         CapEff:\t0000000000000000\n\
         CapBnd:\t00000000a80425fb\n\
         CapAmb:\t0000000000000000\n\
         1000\n"
    );

    // A command that cannot be found, a setup step that fails.
    let (mut spec, _) = direct("");
    spec.args = vec!["no-such-command".into()];
    assert!(matches!(run(&spec), Err(SandboxError::NotFound { .. })));
    refuses_a_mount_point_through_a_symlink(direct("true").0);

    // A kill switch kills it.
    let (spec, _) = direct("sleep 4832");
    let switch = KillSwitch::new();
    switch.kill();
    let outcome = run_killable(&spec, &switch).unwrap();
    assert_eq!(outcome.status, Status::Signaled(libc::SIGKILL));
    assert!(processes_with_cmdline(b"sleep\x004832\x00").is_empty());
}

/// The classic chroot escape (chroot into a subdirectory, climb `..` from
/// the working directory left outside it, chroot there), by root with
/// CAP_SYS_CHROOT as Docker grants it, ends where it started: the root is
/// the top of what its namespace shows, whether the sandbox pivoted or
/// started from the template (`template.rs`), whose tmpfs lies below it.
/// Python (the host's, bound read-only) makes the calls busybox's
/// `chroot` applet does not.
#[test]
fn a_chroot_escape_ends_in_the_root() {
    let _shared = shared();
    let root = busybox_root();
    symlink("usr/lib", root.path().join("lib")).unwrap();
    symlink("usr/lib64", root.path().join("lib64")).unwrap();
    let script = "import os\n\
                  before = os.stat('/')\n\
                  os.mkdir('/x')\n\
                  os.chroot('/x')\n\
                  for _ in range(64): os.chdir('..')\n\
                  os.chroot('.')\n\
                  after = os.stat('/')\n\
                  print((before.st_dev, before.st_ino) == (after.st_dev, after.st_ino), sorted(os.listdir('/')))\n";
    let (mut spec, captured) = spec(root.path(), "");
    spec.args = vec!["/usr/bin/python3".into(), "-c".into(), script.into()];
    spec.init = false;
    spec.mounts = vec![bind("/usr", Path::new("/usr"), true)];
    let outcome = run(&spec).unwrap();
    assert!(outcome.status.success(), "{}", captured.stderr());
    let stdout = captured.stdout();
    assert!(stdout.starts_with("True ["), "{stdout}");
    assert!(
        stdout.contains("'x'") && stdout.contains("'bin'") && stdout.contains("'usr'"),
        "{stdout}"
    );
}
