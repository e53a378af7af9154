//! A build context in a temp dir of its own and `executor build` runs on it,
//! with a private image store and docker config; plus unpacking results
//! with skopeo and umoci.

// These run commands for their effect; their output is there when a test
// wants it.
#![allow(clippy::must_use_candidate)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::{Registry, executor_bin};

/// A context directory (`context/`) with a Dockerfile and files, a private
/// store (`cache/`), `DOCKER_CONFIG` (`docker-config/`) and `TMPDIR`
/// (`tmp/`), all in one temp dir.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    /// A context holding `dockerfile` as `Dockerfile` and `files`.
    #[must_use]
    pub fn new(dockerfile: &str, files: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("executor-e2e-")
            .tempdir()
            .expect("a temp dir");
        let project = Self { dir };
        fs::create_dir_all(project.context()).expect("context dir");
        fs::create_dir_all(project.path("tmp")).expect("tmp dir");
        project.write("Dockerfile", dockerfile);
        for (name, content) in files {
            project.write(name, content);
        }
        project
    }

    /// Writes `content` to `name` in the context.
    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) {
        let path = self.context().join(name);
        fs::create_dir_all(path.parent().expect("a parent")).expect("a parent dir");
        fs::write(path, content).expect("a context file");
    }

    #[must_use]
    pub fn context(&self) -> PathBuf {
        self.dir.path().join("context")
    }

    #[must_use]
    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// A path in the project's temp dir (outside the context).
    #[must_use]
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `path(name)` as a string, for arguments.
    #[must_use]
    pub fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// `executor` with the project's docker config and nothing else.
    #[must_use]
    pub fn executor(&self) -> Command {
        let mut cmd = Command::new(executor_bin());
        cmd.env("DOCKER_CONFIG", self.path("docker-config"))
            // Its temporary files (the sandbox probe's included) in the
            // project's own dir, where the test looks for leftovers.
            .env("TMPDIR", self.path("tmp"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("EXECUTOR_") {
                cmd.env_remove(name);
            }
        }
        cmd
    }

    /// `executor build --context CONTEXT --cache-dir CACHE ARGS...`.
    #[must_use]
    pub fn build(&self, args: &[&str]) -> Command {
        self.build_in(&self.cache(), args)
    }

    /// `executor build --context CONTEXT --cache-dir STORE ARGS...`: a
    /// build with a store of its own, such as a CI pod's empty one.
    #[must_use]
    pub fn build_in(&self, store: &Path, args: &[&str]) -> Command {
        let mut cmd = self.executor();
        cmd.arg("build")
            .arg("--context")
            .arg(self.context())
            .arg("--cache-dir")
            .arg(store)
            .args(args);
        cmd
    }

    /// Runs `executor build` with `args`.
    #[must_use]
    pub fn run(&self, args: &[&str]) -> Output {
        self.build(args).output().expect("executor runs")
    }

    /// Runs `executor build` with `args`; it must succeed. Returns stderr.
    pub fn ok(&self, args: &[&str]) -> String {
        ok(&mut self.build(args))
    }

    /// Runs `executor build` with `args`; it must exit 1. Returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        fails(&mut self.build(args))
    }
}

/// `cmd` run through `wrapper` (a program and its arguments, such as
/// `["faketime", "2030-01-01"]`): the wrapper gets `cmd`'s program and
/// arguments after its own, and `cmd`'s environment changes.
#[must_use]
pub fn wrapped(wrapper: &[&str], cmd: &Command) -> Command {
    let (program, args) = wrapper.split_first().expect("a wrapper program");
    let mut outer = Command::new(program);
    outer.args(args).arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => outer.env(key, v),
            None => outer.env_remove(key),
        };
    }
    outer
}

/// Runs `cmd`; it must succeed. Returns stderr.
pub fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stderr}",
        out.status
    );
    stderr
}

/// Runs `cmd`; it must exit with status 1 (no panic, no signal). Returns
/// stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().expect("executor runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{cmd:?} should exit 1:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Unpacks `reference` from `registry` with skopeo + umoci into `into`;
/// returns the rootfs.
#[must_use]
pub fn unpack(registry: &Registry, reference: &str, into: &Path) -> PathBuf {
    fs::create_dir_all(into).expect("the unpack dir");
    let layout = into.join("layout");
    ok(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .args(registry.skopeo_args("src-"))
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:image", layout.display())));
    unpack_layout(&layout, "image", into)
}

/// Reads a `docker save` tarball with `skopeo copy docker-archive:` and
/// unpacks it with umoci into `into`; returns the rootfs.
#[must_use]
pub fn unpack_docker_archive(tar: &Path, into: &Path) -> PathBuf {
    fs::create_dir_all(into).expect("the unpack dir");
    let layout = into.join("layout");
    ok(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("docker-archive:{}", tar.display()))
        .arg(format!("oci:{}:image", layout.display())));
    unpack_layout(&layout, "image", into)
}

/// Unpacks `tag` of the OCI layout with umoci into `into/bundle`; returns
/// the rootfs.
#[must_use]
pub fn unpack_layout(layout: &Path, tag: &str, into: &Path) -> PathBuf {
    let bundle = into.join("bundle");
    ok(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle));
    bundle.join("rootfs")
}

/// The raw manifest of `reference`, as `skopeo inspect --raw` gives it.
#[must_use]
pub fn raw_manifest(registry: &Registry, reference: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .arg("inspect")
        .arg("--raw")
        .args(registry.skopeo_args(""))
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON manifest")
}
