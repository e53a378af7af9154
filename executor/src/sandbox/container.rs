//! Whether the executor runs inside a container: `--isolation=in-place`
//! overwrites the root filesystem it runs in, which must never be a
//! machine's own.
//!
//! Signals, any one of which is enough (each is set by the runtime, not by
//! the image, so an image cannot fake a host into a container):
//! - `/run/.containerenv` (Podman, Buildah, CRI-O);
//! - `/.dockerenv` (Docker, and Kubernetes on dockershim), only where the
//!   root is not a block device's file system: some machine images carry
//!   a stray `/.dockerenv` on a disk-backed root (this project's own
//!   development machines do), while Docker's storage drivers give a
//!   container an overlay (device 0:N);
//! - the `container` environment variable of pid 1 or of this process
//!   (systemd's convention: Podman, LXC, systemd-nspawn set it);
//! - `KUBERNETES_SERVICE_HOST` in the environment (every pod of a
//!   Kubernetes cluster gets it, whatever the runtime: containerd sets
//!   none of the above);
//! - the root's mount in `/proc/self/mountinfo` is an overlay (how every
//!   OCI runtime's image snapshotter mounts a container's root; a machine
//!   booted on an overlay root is a live image, refused all the same);
//! - `/proc/1/cgroup` names a container (`docker`, `kubepods`, `containerd`,
//!   `libpod`, `lxc`, under cgroup v1).
//!
//! Not used: "pid 1 is not init" (a container may run an init, and a host
//! in a PID namespace of its own would look like one) and the cgroup path
//! under cgroup v2 (a namespaced container sees `0::/`, like a host).

use std::fs;
use std::path::Path;

/// The first signal found that this process runs in a container, as a
/// phrase for messages; `None` when none is.
#[must_use]
pub fn detect() -> Option<String> {
    detect_in(Path::new("/"), |name| std::env::var_os(name).is_some())
}

fn detect_in(root: &Path, env: impl Fn(&str) -> bool) -> Option<String> {
    if root.join("run/.containerenv").exists() {
        return Some("/run/.containerenv exists".into());
    }
    let mountinfo = fs::read_to_string(root.join("proc/self/mountinfo")).unwrap_or_default();
    let root_mount = root_mount(&mountinfo);
    if root.join(".dockerenv").exists()
        && root_mount.is_none_or(|(device, _)| device.starts_with("0:"))
    {
        return Some("/.dockerenv exists".into());
    }
    if env("container") {
        return Some("the container environment variable is set".into());
    }
    if let Ok(environ) = fs::read(root.join("proc/1/environ"))
        && environ
            .split(|&b| b == 0)
            .any(|var| var.starts_with(b"container="))
    {
        return Some("pid 1 has the container environment variable".into());
    }
    if env("KUBERNETES_SERVICE_HOST") {
        return Some("KUBERNETES_SERVICE_HOST is set (a Kubernetes pod)".into());
    }
    if let Some((_, fstype)) = root_mount
        && (fstype == "overlay" || fstype == "fuse.fuse-overlayfs")
    {
        return Some("the root file system is an overlay mount".into());
    }
    if let Ok(cgroup) = fs::read_to_string(root.join("proc/1/cgroup"))
        && let Some(word) = ["docker", "kubepods", "containerd", "libpod", "lxc"]
            .iter()
            .find(|word| cgroup.contains(*word))
    {
        return Some(format!("pid 1's cgroup names {word}"));
    }
    None
}

/// The device (`major:minor`) and file system type of the last mount on
/// `/` in `mountinfo`.
fn root_mount(mountinfo: &str) -> Option<(&str, &str)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let device = fields.nth(2)?;
            let point = fields.nth(1)?;
            let fstype = line.split(" - ").nth(1)?.split(' ').next()?;
            Some((point, device, fstype))
        })
        .rfind(|(point, _, _)| *point == "/")
        .map(|(_, device, fstype)| (device, fstype))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_signal_is_seen_and_a_bare_root_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(detect_in(root, |_| false), None);
        assert!(
            detect_in(root, |name| name == "KUBERNETES_SERVICE_HOST")
                .unwrap()
                .contains("Kubernetes")
        );
        assert!(detect_in(root, |name| name == "container").is_some());
        fs::create_dir_all(root.join("proc/self")).unwrap();
        fs::write(
            root.join("proc/self/mountinfo"),
            "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n",
        )
        .unwrap();
        assert_eq!(detect_in(root, |_| false), None);
        fs::write(
            root.join("proc/self/mountinfo"),
            "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
             500 22 0:50 / / rw,relatime - overlay overlay rw,lowerdir=/a\n",
        )
        .unwrap();
        assert!(detect_in(root, |_| false).unwrap().contains("overlay"));
        // A stray /.dockerenv on a disk-backed root is no sign.
        fs::write(
            root.join("proc/self/mountinfo"),
            "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n",
        )
        .unwrap();
        fs::write(root.join(".dockerenv"), "").unwrap();
        assert_eq!(detect_in(root, |_| false), None);
        fs::write(
            root.join("proc/self/mountinfo"),
            "500 22 0:50 / / rw,relatime - overlay overlay rw,lowerdir=/a\n",
        )
        .unwrap();
        assert!(detect_in(root, |_| false).is_some());
        fs::create_dir_all(root.join("run")).unwrap();
        fs::write(root.join("run/.containerenv"), "").unwrap();
        assert!(
            detect_in(root, |_| false)
                .unwrap()
                .contains(".containerenv")
        );
    }
}
