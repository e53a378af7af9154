//! The end-to-end test harness: each test gets its own temp dir, its own
//! registry server on a free 127.0.0.1 port (the Debian package
//! `docker-registry`, in three variants: anonymous, htpasswd basic auth, and
//! TLS with a certificate made for the test) and base images made from
//! Debian packages, never pulled from a public registry.
//!
//! Base images are built once per test run and reused: the busybox image is
//! an OCI layout made with `umoci` from `/bin/busybox` (package
//! `busybox-static`) and copied to a test's registry with `skopeo`; the
//! Debian image (module `debian`) is `debootstrap --variant=minbase
//! bookworm`, made by `tests/fixtures/debian-base.sh`. PostgreSQL for the
//! server's store (module `postgres`) is a cluster started once per test
//! binary, a database per test.
//!
//! Registry faults a real server will not make (dropped and stalled
//! connections, 5xx answers, truncated bodies) come from an in-process
//! proxy put in front of a real registry (module `fault`); what the
//! registry then holds is checked through its API (module `integrity`).

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod browser;
mod cache;
mod debian;
mod fault;
pub mod forge;
mod image;
mod integrity;
mod leftovers;
mod pod;
mod postgres;
mod project;
mod serve;
pub mod server_bed;
mod users;

pub use cache::{CacheEntry, LogMark, Metrics, Request, layout_cache_entries};
pub use debian::{DEFAULT_PATH, debian_layout, debian_tarball};
pub use fault::{Fault, FaultProxy, Mode};
pub use image::{Node, PulledImage, pull_image, tree};
pub use leftovers::{Leftovers, processes_with};
pub use pod::{Pod, PodImage, PodRun, RunningPod, build_image};
pub use postgres::postgres_database;
pub use project::{
    Project, fails, ok, raw_manifest, unpack, unpack_docker_archive, unpack_layout, wrapped,
};
pub use serve::{GitDaemon, GitHttpServer, HttpServer, git, git_commit, git_repo};
pub use users::{SUBID_FILES, TestUser, executor_for_anyone, open_dir};

/// How a test registry authenticates and serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryKind {
    /// Plain HTTP, no auth.
    Anonymous,
    /// Plain HTTP with htpasswd basic auth ([`USER`] / [`PASSWORD`]).
    Basic,
    /// HTTPS with a certificate for 127.0.0.1 made for this registry, no auth.
    Tls,
}

pub const USER: &str = "executor";
pub const PASSWORD: &str = "s3cret-pass";

/// A running `docker-registry`, stopped when dropped.
pub struct Registry {
    pub kind: RegistryKind,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// The CA certificate (PEM) a client must trust, for [`RegistryKind::Tls`].
    pub ca_cert: Option<PathBuf>,
    /// A directory with `ca.crt` in the layout `skopeo --cert-dir` wants.
    pub cert_dir: Option<PathBuf>,
    child: Child,
    dir: TempDir,
    /// `debian:bookworm` once pushed here (see `push_debian`).
    debian: OnceLock<String>,
}

/// A free TCP port on 127.0.0.1 (bound then released).
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Whether an HTTP server answers on `host` (`127.0.0.1:PORT`): a response
/// is read, so a connection that met itself (a connect to a port nobody
/// listens on may take that very port as its source) does not count. A TLS
/// server answers plain HTTP with a 400 response too.
fn answers_http(host: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(host) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (is it installed? .ci/run installs it)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Registry {
    /// Starts a registry and waits until it answers. One that exits first
    /// (the free port it was given taken meanwhile) is started again on
    /// another port.
    #[must_use]
    pub fn start(kind: RegistryKind) -> Self {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(kind) {
                Ok(registry) => return registry,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "docker-registry did not start:\n{}",
            failures.join("\n---\n")
        );
    }

    fn try_start(kind: RegistryKind) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("executor-registry-")
            .tempdir()
            .expect("a temp dir");
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("registry storage dir");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            storage.display()
        );
        let (mut ca_cert, mut cert_dir) = (None, None);
        match kind {
            RegistryKind::Anonymous => {}
            RegistryKind::Basic => {
                let line = run(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, line.trim()).expect("htpasswd file");
                let _ = write!(
                    config,
                    "auth:\n  htpasswd:\n    realm: executor-tests\n    path: {}\n",
                    file.display()
                );
            }
            RegistryKind::Tls => {
                let cert = rcgen::generate_simple_self_signed(vec![
                    "127.0.0.1".to_string(),
                    "localhost".to_string(),
                ])
                .expect("a self-signed certificate");
                let cert_file = dir.path().join("registry.crt");
                let key_file = dir.path().join("registry.key");
                std::fs::write(&cert_file, cert.cert.pem()).expect("cert file");
                std::fs::write(&key_file, cert.signing_key.serialize_pem()).expect("key file");
                let _ = write!(
                    config,
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    cert_file.display(),
                    key_file.display()
                );
                let certs = dir.path().join("certs.d");
                std::fs::create_dir_all(&certs).expect("cert dir");
                std::fs::copy(&cert_file, certs.join("ca.crt")).expect("ca.crt");
                ca_cert = Some(cert_file);
                cert_dir = Some(certs);
            }
        }
        let config_file = dir.path().join("config.yml");
        std::fs::write(&config_file, config).expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect(
                "docker-registry starts (the Debian package docker-registry; .ci/run installs it)",
            );
        let mut registry = Self {
            kind,
            host,
            ca_cert,
            cert_dir,
            child,
            dir,
            debian: OnceLock::new(),
        };
        registry.wait_ready()?;
        Ok(registry)
    }

    /// Waits until the registry answers HTTP; `Err` with its log when it
    /// exited first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "docker-registry on {} exited ({status}); its log:\n{}",
                    self.host,
                    self.log()
                ));
            }
            if answers_http(&self.host) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not listen on {} within 30 s; its log:\n{}",
            self.host,
            self.log()
        );
    }

    /// The registry's own log, access log included.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `HOST:PORT/repo:tag` on this registry.
    #[must_use]
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.host)
    }

    /// skopeo's options to talk to this registry as a destination
    /// (`--dest-...`) or source (`--src-...`), or with none for `inspect`.
    #[must_use]
    pub fn skopeo_args(&self, prefix: &str) -> Vec<String> {
        let mut args = Vec::new();
        match self.kind {
            RegistryKind::Tls => {
                let dir = self
                    .cert_dir
                    .as_ref()
                    .expect("a TLS registry has a cert dir");
                args.push(format!("--{prefix}cert-dir={}", dir.display()));
            }
            _ => args.push(format!("--{prefix}tls-verify=false")),
        }
        if self.kind == RegistryKind::Basic {
            args.push(format!("--{prefix}creds={USER}:{PASSWORD}"));
        }
        args
    }

    /// The image config of `reference`, as `skopeo inspect --config` gives it.
    #[must_use]
    pub fn inspect_config(&self, reference: &str) -> serde_json::Value {
        let mut cmd = Command::new("skopeo");
        cmd.arg("inspect")
            .arg("--config")
            .args(self.skopeo_args(""));
        cmd.arg(format!("docker://{reference}"));
        serde_json::from_str(&run(&mut cmd)).expect("skopeo prints JSON")
    }

    /// The image config of `reference` exactly as stored (`skopeo inspect
    /// --config --raw`: without `--raw` skopeo converts it to the OCI type
    /// and drops Docker's `OnBuild`, `Healthcheck` and `Shell`).
    #[must_use]
    pub fn raw_config(&self, reference: &str) -> serde_json::Value {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--config", "--raw"])
            .args(self.skopeo_args(""));
        cmd.arg(format!("docker://{reference}"));
        serde_json::from_str(&run(&mut cmd)).expect("skopeo prints JSON")
    }

    /// The manifest digest of `reference`, from `skopeo inspect`.
    #[must_use]
    pub fn digest_of(&self, reference: &str) -> String {
        let mut cmd = Command::new("skopeo");
        cmd.arg("inspect").args(self.skopeo_args(""));
        cmd.arg(format!("docker://{reference}"));
        let value: serde_json::Value =
            serde_json::from_str(&run(&mut cmd)).expect("skopeo prints JSON");
        value["Digest"].as_str().expect("a digest").to_owned()
    }

    /// Pushes the busybox base image here as `busybox:latest`; returns its
    /// reference.
    #[must_use]
    pub fn push_busybox(&self) -> String {
        let layout = busybox_layout();
        let reference = self.reference("busybox:latest");
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet"])
            .args(self.skopeo_args("dest-"));
        cmd.arg(format!("oci:{}:latest", layout.display()));
        cmd.arg(format!("docker://{reference}"));
        run(&mut cmd);
        reference
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where fixtures built once per run live: under the workspace's `target/`.
fn fixtures_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-fixtures");
    std::fs::create_dir_all(&dir).expect("fixtures dir");
    dir
}

/// An OCI layout holding `busybox:latest`: `/bin/busybox` from the
/// `busybox-static` package with its applets linked in `/bin`, `/etc/passwd`
/// and `/etc/group` with root and nobody, `/tmp`. Built once per test run.
#[must_use]
pub fn busybox_layout() -> PathBuf {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT
        .get_or_init(|| {
            let fixtures = fixtures_dir();
            let done = fixtures.join("busybox-oci");
            if done.join("index.json").is_file() {
                return done;
            }
            // Built under a private name, then renamed into place: test
            // binaries running at once never see a half-made layout.
            let layout = fixtures.join(format!("busybox-oci.{}.tmp", std::process::id()));
            let _ = std::fs::remove_dir_all(&layout);
            let work = tempfile::Builder::new()
                .prefix("executor-busybox-")
                .tempdir()
                .expect("a temp dir");
            let bundle = work.path().join("bundle");
            run(Command::new("umoci").args(["init", "--layout"]).arg(&layout));
            run(Command::new("umoci")
                .args(["new", "--image"])
                .arg(format!("{}:latest", layout.display())));
            run(Command::new("umoci")
                .args(["unpack", "--rootless", "--image"])
                .arg(format!("{}:latest", layout.display()))
                .arg(&bundle));
            let rootfs = bundle.join("rootfs");
            for dir in ["bin", "etc", "tmp", "root", "home"] {
                std::fs::create_dir_all(rootfs.join(dir)).expect("rootfs dir");
            }
            std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
                .expect("/bin/busybox (the Debian package busybox-static; .ci/run installs it)");
            let applets = run(Command::new("/bin/busybox").arg("--list"));
            for applet in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
                let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
            }
            std::fs::write(
                rootfs.join("etc/passwd"),
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            )
            .expect("passwd");
            std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")
                .expect("group");
            run(Command::new("umoci")
                .args(["repack", "--image"])
                .arg(format!("{}:latest", layout.display()))
                .arg(&bundle));
            run(Command::new("umoci")
                .args(["config", "--image"])
                .arg(format!("{}:latest", layout.display()))
                .args(["--config.cmd", "/bin/sh", "--config.env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]));
            if std::fs::rename(&layout, &done).is_err() {
                // Another test binary finished first: use its copy.
                let _ = std::fs::remove_dir_all(&layout);
            }
            done
        })
        .clone()
}

/// The `executor` binary of this workspace, built once per test run (a
/// plain `cargo build -p executor`, which is a no-op when `cargo test
/// --workspace` already built it).
#[must_use]
pub fn executor_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // Test binaries live in `<target>/<profile>/deps/`.
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary is in <target>/<profile>/deps");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let target_dir = profile_dir.parent().expect("a target dir");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "executor", "--bin", "executor"])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        run(&mut cmd);
        let bin = profile_dir.join("executor");
        assert!(bin.is_file(), "{} was not built", bin.display());
        bin
    })
    .clone()
}
