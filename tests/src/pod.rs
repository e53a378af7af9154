//! The executor as a container runtime runs it in a default Kubernetes
//! pod, for the in-place tests: [`PodImage`] is the executor image's root
//! (`/kaniko/executor`, the shared libraries it links and their loader in
//! `/kaniko/lib`, CA certificates under `/kaniko/ssl`, the mount points a
//! runtime needs: everything under `/kaniko`, which an in-place build
//! leaves alone while it replaces `/lib`), and
//! [`Pod::run`] starts a container of it through `pod.py` (fresh mount,
//! PID, UTS and IPC namespaces, an overlay root whose upper directory the
//! test can read afterwards, `pivot_root`, Docker's default capabilities,
//! `no_new_privs`, containerd's RuntimeDefault seccomp refusals) and runs
//! commands in it one after the other. The network is the host's, where
//! the test registry listens.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::executor_bin;

const SCRIPT: &str = include_str!("pod.py");

/// The executor image's root filesystem, made from this workspace's
/// binary as `examples/image/Dockerfile` makes it.
pub struct PodImage {
    dir: tempfile::TempDir,
}

impl PodImage {
    /// Made from [`executor_bin`] and the libraries `ldd` lists for it.
    #[must_use]
    pub fn executor() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("executor-pod-image-")
            .tempdir()
            .expect("a temporary directory");
        let root = dir.path();
        for sub in [
            "proc",
            "sys",
            "dev",
            "etc",
            "kaniko/.docker",
            "kaniko/ssl/certs",
            "workspace",
            "root",
        ] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        fs::create_dir(root.join("tmp")).unwrap();
        fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        for file in ["hosts", "resolv.conf", "hostname"] {
            fs::write(root.join("etc").join(file), "").unwrap();
        }
        let bin = executor_bin();
        let mut elf = fs::read(&bin).unwrap();
        set_interpreter(&mut elf, LOADER);
        fs::write(root.join("kaniko/executor"), elf).unwrap();
        fs::set_permissions(
            root.join("kaniko/executor"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        for lib in shared_libraries(&bin) {
            let name = lib.file_name().unwrap().to_string_lossy().into_owned();
            let to = if name.starts_with("ld-linux") {
                root.join(LOADER.strip_prefix('/').unwrap())
            } else {
                root.join("kaniko/lib").join(name)
            };
            copy_file(&lib, &to);
        }
        copy_file(
            Path::new("/etc/ssl/certs/ca-certificates.crt"),
            &root.join("kaniko/ssl/certs/ca-certificates.crt"),
        );
        Self { dir }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// sha256 of every regular file of the image, by path.
    #[must_use]
    pub fn checksums(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        checksums(self.path(), Path::new(""), &mut out);
        out.sort();
        out
    }
}

fn checksums(root: &Path, rel: &Path, out: &mut Vec<(String, String)>) {
    for entry in fs::read_dir(root.join(rel)).unwrap() {
        let entry = entry.unwrap();
        let child = rel.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            checksums(root, &child, out);
        } else if kind.is_file() {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(fs::read(root.join(&child)).unwrap());
            out.push((child.display().to_string(), hex::encode(digest)));
        }
    }
}

/// Where the image's binary finds its loader (its libraries: through
/// `LD_LIBRARY_PATH=/kaniko/lib`).
pub const LOADER: &str = "/kaniko/lib/ld.so";

/// Rewrites the ELF program interpreter (`PT_INTERP`) of `elf` to
/// `path`, which must fit in the old one's place.
pub fn set_interpreter(elf: &mut [u8], path: &str) {
    let u16_at = |b: &[u8], at: usize| usize::from(u16::from_le_bytes([b[at], b[at + 1]]));
    let u64_at = |b: &[u8], at: usize| {
        usize::try_from(u64::from_le_bytes(b[at..at + 8].try_into().unwrap())).unwrap()
    };
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    let (phoff, phentsize, phnum) = (u64_at(elf, 0x20), u16_at(elf, 0x36), u16_at(elf, 0x38));
    for index in 0..phnum {
        let header = phoff + index * phentsize;
        if u32::from_le_bytes(elf[header..header + 4].try_into().unwrap()) == 3 {
            let (offset, size) = (u64_at(elf, header + 8), u64_at(elf, header + 32));
            assert!(path.len() < size, "{path} does not fit as the interpreter");
            elf[offset..offset + size].fill(0);
            elf[offset..offset + path.len()].copy_from_slice(path.as_bytes());
            return;
        }
    }
    panic!("no PT_INTERP: a static binary");
}

fn copy_file(from: &Path, to: &Path) {
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    fs::copy(from, to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
}

/// The shared libraries and the loader `bin` links, from `ldd`.
fn shared_libraries(bin: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(bin).output().expect("ldd runs");
    assert!(out.status.success(), "ldd {}", bin.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// One container of a [`PodImage`].
pub struct Pod<'a> {
    pub image: &'a PodImage,
    /// An overlay root, as every runtime gives; `false`: the image bound
    /// as it is, a root with no sign of a container.
    pub overlay: bool,
    /// Host directories bound at their own paths (context, store, output).
    pub volumes: Vec<PathBuf>,
    /// Besides the image's (`PATH`, `HOME`, `DOCKER_CONFIG`,
    /// `SSL_CERT_FILE`).
    pub env: Vec<(String, String)>,
}

/// What a pod did.
pub struct PodRun {
    /// Each command's exit status.
    pub statuses: Vec<i32>,
    pub stderr: String,
    /// The container's overlay upper directory: what changed in the image.
    pub upper: PathBuf,
    _dir: tempfile::TempDir,
}

impl Pod<'_> {
    /// Runs `commands` (absolute programs) in one fresh container.
    #[must_use]
    pub fn run(&self, commands: &[Vec<String>]) -> PodRun {
        let dir = tempfile::Builder::new()
            .prefix("executor-pod-")
            .tempdir()
            .expect("a temporary directory");
        let out = dir.path().join("out");
        for sub in ["upper", "work", "merged", "out"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        fs::write(out.join("hostname"), "pod\n").unwrap();
        let mut env = serde_json::Map::new();
        for (k, v) in [
            (
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/kaniko",
            ),
            ("HOME", "/root"),
            ("DOCKER_CONFIG", "/kaniko/.docker"),
            ("SSL_CERT_FILE", "/kaniko/ssl/certs/ca-certificates.crt"),
            ("LD_LIBRARY_PATH", "/kaniko/lib"),
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
        ] {
            if k != "KUBERNETES_SERVICE_HOST" || self.overlay {
                env.insert(k.into(), v.into());
            }
        }
        for (k, v) in &self.env {
            env.insert(k.clone(), v.clone().into());
        }
        let mut volumes: Vec<String> = self
            .volumes
            .iter()
            .map(|v| v.display().to_string())
            .collect();
        volumes.push(out.display().to_string());
        let statuses = out.join("statuses.json");
        let config = serde_json::json!({
            "image": self.image.path(),
            "overlay": self.overlay,
            "upper": dir.path().join("upper"),
            "work": dir.path().join("work"),
            "merged": dir.path().join("merged"),
            "etc": {
                "hosts": "/etc/hosts",
                "resolv.conf": "/etc/resolv.conf",
                "hostname": out.join("hostname"),
            },
            "volumes": volumes,
            "env": env,
            "commands": commands,
            "statuses": statuses,
        });
        let output = Command::new("python3")
            .args(["-c", SCRIPT, &config.to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("python3 runs");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "the pod failed: {stderr}");
        let statuses: Vec<i32> =
            serde_json::from_slice(&fs::read(&statuses).expect("the pod's statuses")).unwrap();
        PodRun {
            statuses,
            stderr,
            upper: dir.path().join("upper"),
            _dir: dir,
        }
    }
}
