# A container as a runtime makes a default Kubernetes pod's, for the
# in-place tests (see pod.rs): run as root, this makes fresh mount, PID,
# UTS and IPC namespaces (the network stays the host's, where the test
# registry listens), an overlay root over the image directory (or, with
# "overlay": false, a plain bind: a root with no sign of a container),
# /proc, a read-only /sys, a tmpfs /dev with the usual nodes, the runtime's
# /etc/hosts, /etc/resolv.conf and /etc/hostname, the volumes bound at
# their own paths (or, given as [source, target], at target), then
# pivot_root. SIGTERM to this process goes to the command running, as a
# runtime stops a pod; the pod dies with this process. Each command then runs, one after the
# other, as root with Docker's default capabilities only, no_new_privs,
# and a seccomp filter refusing what containerd's RuntimeDefault refuses
# a container without CAP_SYS_ADMIN. The exit statuses go to a JSON file.
import ctypes, json, os, signal, sys

cfg = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.syscall.restype = ctypes.c_long


def check(result, what):
    if result != 0:
        sys.exit("pod: %s: %s" % (what, os.strerror(ctypes.get_errno())))


def mount(source, target, fstype, flags, data=None):
    enc = lambda v: v.encode() if isinstance(v, str) else v
    check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)),
          "mount %s on %s" % (source, target))


MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 0x4000, 1 << 18
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID = 0x20000, 0x4000000, 0x8000000, 0x20000000

check(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID), "unshare")
init = os.fork()
if init != 0:
    signal.signal(signal.SIGTERM, lambda *_: os.kill(init, signal.SIGTERM))
    _, status = os.waitpid(init, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
check(libc.prctl(1, signal.SIGKILL, 0, 0, 0), "PR_SET_PDEATHSIG")
running = []
signal.signal(signal.SIGTERM, lambda *_: [os.kill(pid, signal.SIGTERM) for pid in running])

# Pid 1 of the pod.
mount(None, "/", None, MS_REC | MS_PRIVATE)
root = cfg["merged"]
if cfg["overlay"]:
    mount("overlay", root, "overlay", 0,
          "lowerdir=%s,upperdir=%s,workdir=%s" % (cfg["image"], cfg["upper"], cfg["work"]))
else:
    mount(cfg["image"], root, None, MS_BIND | MS_REC)
# Mount points the image lacks are made, as runc makes them.
for point in ("/proc", "/sys", "/dev", "/etc"):
    os.makedirs(root + point, exist_ok=True)
for name in cfg["etc"]:
    if not os.path.exists(root + "/etc/" + name):
        open(root + "/etc/" + name, "w").close()
mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
mount("sysfs", root + "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
mount("tmpfs", root + "/dev", "tmpfs", MS_NOSUID, "mode=755")
for node in ("null", "zero", "full", "random", "urandom", "tty"):
    open(root + "/dev/" + node, "w").close()
    mount("/dev/" + node, root + "/dev/" + node, None, MS_BIND)
os.mkdir(root + "/dev/shm")
mount("shm", root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777")
for name, source in cfg["etc"].items():
    mount(source, root + "/etc/" + name, None, MS_BIND)
for volume in cfg["volumes"]:
    source, target = (volume, volume) if isinstance(volume, str) else volume
    os.makedirs(root + target, exist_ok=True)
    mount(source, root + target, None, MS_BIND | MS_REC)
os.chdir(root)
check(libc.syscall(155, b".", b"."), "pivot_root")  # pivot_root(".", ".")
check(libc.umount2(b".", 2), "detaching the old root")  # MNT_DETACH
os.chroot(".")
os.chdir("/")
check(libc.sethostname(b"pod", 3), "sethostname")

# Docker's default capabilities.
DEFAULT_CAPS = {0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31}
last_cap = int(open("/proc/sys/kernel/cap_last_cap").read())

# containerd's RuntimeDefault, for a container without CAP_SYS_ADMIN.
EPERM, ENOSYS = 1, 38
DENIED = {
    272: EPERM, 308: EPERM, 165: EPERM, 166: EPERM, 155: EPERM,  # unshare setns mount umount2 pivot_root
    250: EPERM, 248: EPERM, 249: EPERM,  # keyctl add_key request_key
    321: EPERM, 298: EPERM, 323: EPERM,  # bpf perf_event_open userfaultfd
    428: EPERM, 429: EPERM, 430: EPERM, 431: EPERM, 432: EPERM, 433: EPERM,  # new mount API
    246: EPERM, 320: EPERM, 175: EPERM, 313: EPERM, 176: EPERM,  # kexec_* init/finit/delete_module
    169: EPERM, 167: EPERM, 168: EPERM, 163: EPERM,  # reboot swapon swapoff acct
    164: EPERM, 227: EPERM, 179: EPERM,  # settimeofday clock_settime quotactl
    303: EPERM, 304: EPERM, 310: EPERM, 311: EPERM, 312: EPERM,  # handles, process_vm_*, kcmp
    172: EPERM, 173: EPERM,  # iopl ioperm
    435: ENOSYS,  # clone3: libc falls back to clone
}
CLONE = 56
NAMESPACE_FLAGS = 0x7E020000  # NEWNS NEWCGROUP NEWUTS NEWIPC NEWUSER NEWPID NEWNET


class Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte),
                ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]


LD, JEQ, JSET, RET = 0x20, 0x15, 0x45, 0x06
ALLOW, ERRNO = 0x7FFF0000, 0x00050000
program = [(LD, 0, 0, 4), (JEQ, 1, 0, 0xC000003E), (RET, 0, 0, ERRNO | ENOSYS), (LD, 0, 0, 0)]
for nr, errno in DENIED.items():
    program += [(JEQ, 0, 1, nr), (RET, 0, 0, ERRNO | errno)]
program += [(JEQ, 0, 3, CLONE), (LD, 0, 0, 16), (JSET, 0, 1, NAMESPACE_FLAGS),
            (RET, 0, 0, ERRNO | EPERM), (RET, 0, 0, ALLOW)]
filters = (Filter * len(program))(*[Filter(c, t, f, k) for c, t, f, k in program])
prog = Prog(len(program), filters)

statuses = []
for argv in cfg["commands"]:
    pid = os.fork()
    if pid == 0:
        for cap in range(last_cap + 1):
            if cap not in DEFAULT_CAPS:
                check(libc.prctl(24, cap, 0, 0, 0), "dropping capability %d" % cap)  # PR_CAPBSET_DROP
        check(libc.prctl(47, 4, 0, 0, 0), "clearing ambient capabilities")
        check(libc.prctl(38, 1, 0, 0, 0), "no_new_privs")
        check(libc.prctl(22, 2, ctypes.byref(prog), 0, 0), "seccomp")
        os.chdir(cfg.get("cwd", "/"))
        os.execve(argv[0], argv, cfg["env"])
    running[:] = [pid]
    _, status = os.waitpid(pid, 0)
    statuses.append(os.waitstatus_to_exitcode(status))
with open(cfg["statuses"], "w") as f:
    json.dump(statuses, f)
