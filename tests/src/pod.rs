//! The executor as a container runtime runs it in a default Kubernetes
//! pod, for the in-place tests: [`PodImage`] is the executor image
//! (`examples/image/build.sh` with this workspace's binary, unpacked with
//! umoci), and
//! [`Pod::run`] (or, in the background, [`Pod::spawn`], stopped with
//! SIGTERM as a runtime stops a pod) starts a container of it through
//! `pod.py` (fresh mount,
//! PID, UTS and IPC namespaces, an overlay root whose upper directory the
//! test can read afterwards, `pivot_root`, Docker's default capabilities,
//! `no_new_privs`, containerd's RuntimeDefault seccomp refusals) and runs
//! commands in it one after the other. The network is the host's, where
//! the test registry listens.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::executor_bin;

const SCRIPT: &str = include_str!("pod.py");

/// The executor image's root filesystem: `examples/image/build.sh` run
/// with this workspace's binary ([`executor_bin`]), the default variant
/// unpacked with umoci.
pub struct PodImage {
    dir: tempfile::TempDir,
    /// The image's environment (its config's `Env`).
    env: Vec<(String, String)>,
}

impl PodImage {
    /// Builds the image (both variants, into a directory of its own).
    #[must_use]
    pub fn executor() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("executor-pod-image-")
            .tempdir()
            .expect("a temporary directory");
        build_image(&dir.path().join("out"));
        let bundle = dir.path().join("bundle");
        let status = Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!(
                "{}:docker.io/library/executor:latest",
                dir.path().join("out/layout-default").display()
            ))
            .arg(&bundle)
            .stdout(Stdio::null())
            .status()
            .expect("umoci runs");
        assert!(status.success(), "umoci unpack failed");
        let config: serde_json::Value =
            serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
        let env = config["process"]["env"]
            .as_array()
            .expect("the bundle's environment")
            .iter()
            .filter_map(|pair| pair.as_str()?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self { dir, env }
    }

    /// The unpacked root filesystem.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("bundle/rootfs")
    }

    /// The build's output: `layout-default`, `layout-debug`,
    /// `digest-default`, `digest-debug`.
    #[must_use]
    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// sha256 of every regular file of the image, by path.
    #[must_use]
    pub fn checksums(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        checksums(&self.path(), Path::new(""), &mut out);
        out.sort();
        out
    }
}

/// `examples/image/build.sh` with [`executor_bin`], its output in `out`.
pub fn build_image(out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/image/build.sh");
    let output = Command::new("bash")
        .arg(script)
        .env("EXECUTOR", executor_bin())
        .env("OUT", out)
        .stdin(Stdio::null())
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "examples/image/build.sh failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
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

/// One container of a [`PodImage`].
pub struct Pod<'a> {
    pub image: &'a PodImage,
    /// An overlay root, as every runtime gives; `false`: the image bound
    /// as it is, a root with no sign of a container.
    pub overlay: bool,
    /// Host directories bound at their own paths (context, store, output).
    pub volumes: Vec<PathBuf>,
    /// Besides the image's own (and, with `overlay`, a pod's
    /// `KUBERNETES_SERVICE_HOST`).
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
        let (dir, config) = self.config(&[], "/", commands);
        let output = Command::new("python3")
            .args(["-c", SCRIPT, &config.to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("python3 runs");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "the pod failed: {stderr}");
        PodRun::of(dir, stderr)
    }

    /// Starts `command` in one fresh container in `cwd`, with `mounts`
    /// (host path, path in the container) besides the volumes, as a
    /// runtime starts a pod's container; [`RunningPod`] stops it.
    #[must_use]
    pub fn spawn(
        &self,
        mounts: &[(PathBuf, String)],
        cwd: &str,
        command: Vec<String>,
    ) -> RunningPod {
        let (dir, config) = self.config(mounts, cwd, &[command]);
        let stderr = fs::File::create(dir.path().join("stderr")).expect("the pod's stderr file");
        let child = Command::new("python3")
            .args(["-c", SCRIPT, &config.to_string()])
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("the pod's stderr file"))
            .stderr(stderr)
            .spawn()
            .expect("python3 runs");
        RunningPod {
            child,
            dir: Some(dir),
        }
    }

    /// The pod's directory and the configuration of `pod.py`.
    fn config(
        &self,
        mounts: &[(PathBuf, String)],
        cwd: &str,
        commands: &[Vec<String>],
    ) -> (tempfile::TempDir, serde_json::Value) {
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
        for (k, v) in &self.image.env {
            env.insert(k.clone(), v.clone().into());
        }
        if self.overlay {
            // What Kubernetes gives every pod.
            env.insert("KUBERNETES_SERVICE_HOST".into(), "10.0.0.1".into());
        }
        for (k, v) in &self.env {
            env.insert(k.clone(), v.clone().into());
        }
        let mut volumes: Vec<serde_json::Value> = self
            .volumes
            .iter()
            .map(|v| v.display().to_string().into())
            .collect();
        volumes.push(out.display().to_string().into());
        for (source, target) in mounts {
            volumes.push(serde_json::json!([source, target]));
        }
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
            "cwd": cwd,
            "commands": commands,
            "statuses": out.join("statuses.json"),
        });
        (dir, config)
    }
}

impl PodRun {
    fn of(dir: tempfile::TempDir, stderr: String) -> Self {
        let statuses: Vec<i32> = serde_json::from_slice(
            &fs::read(dir.path().join("out/statuses.json")).expect("the pod's statuses"),
        )
        .unwrap();
        Self {
            statuses,
            stderr,
            upper: dir.path().join("upper"),
            _dir: dir,
        }
    }
}

/// A container started by [`Pod::spawn`]; dropped, it is killed with all
/// it started.
pub struct RunningPod {
    child: std::process::Child,
    dir: Option<tempfile::TempDir>,
}

impl RunningPod {
    /// SIGTERM to the container's command, as a runtime stops a pod.
    pub fn terminate(&self) {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.child.id()).expect("a pid"))
            .expect("a pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .expect("SIGTERM to the pod");
    }

    /// Whether the container has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits until the container exits; what it did.
    #[must_use]
    pub fn wait(mut self) -> PodRun {
        let status = self.child.wait().expect("the pod's runtime");
        let dir = self.dir.take().expect("the pod's directory");
        let stderr = fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
        assert!(status.success(), "the pod failed: {stderr}");
        PodRun::of(dir, stderr)
    }

    /// What the container wrote so far.
    #[must_use]
    pub fn output(&self) -> String {
        self.dir
            .as_ref()
            .and_then(|d| fs::read_to_string(d.path().join("stderr")).ok())
            .unwrap_or_default()
    }
}

impl Drop for RunningPod {
    fn drop(&mut self) {
        // The pod's init dies with its parent (PR_SET_PDEATHSIG).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
