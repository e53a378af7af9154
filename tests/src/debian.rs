//! The Debian base image: `debootstrap --variant=minbase bookworm` (with
//! `libcap2-bin` for `setcap`/`getcap`), made by
//! `tests/fixtures/debian-base.sh` into a tarball once, turned here into an
//! OCI layout once per test run and pushed to a test's registry as
//! `debian:bookworm` once per registry.
//!
//! `.ci/run` runs the script before `cargo test`, so the tests find the
//! tarball made and never reach the Debian mirror themselves. When it is
//! missing (a plain `cargo test` on a fresh checkout) the harness runs the
//! script itself: that takes minutes, needs root, the `debootstrap` package
//! and the mirror `http://deb.debian.org/debian`
//! (`EXECUTOR_DEBIAN_MIRROR` overrides it).

use std::fs;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};

use crate::{Registry, run};

/// Docker's default `PATH`, which the image's config sets.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The fixture script, in the repository.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/debian-base.sh")
}

/// The directory the script keeps its tarball in, as it computes it.
fn fixtures_dir() -> PathBuf {
    let dir = std::env::var_os("EXECUTOR_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-fixtures"),
        PathBuf::from,
    );
    fs::create_dir_all(&dir).expect("fixtures dir");
    dir
}

/// The root filesystem tarball of Debian bookworm minbase, made by
/// `tests/fixtures/debian-base.sh` (which prints its path; it returns at
/// once when the tarball is already made).
#[must_use]
pub fn debian_tarball() -> PathBuf {
    static TARBALL: OnceLock<PathBuf> = OnceLock::new();
    TARBALL
        .get_or_init(|| {
            let made = fixtures_dir().join("debian-bookworm-minbase.tar");
            if made.is_file() {
                return made;
            }
            eprintln!(
                "{} is missing: running {} (debootstrap from the Debian mirror, minutes; .ci/run does this before the tests)",
                made.display(),
                script().display()
            );
            let out = run(Command::new("bash").arg(script()));
            let path = PathBuf::from(out.trim());
            assert!(path.is_file(), "debian-base.sh printed {out:?}");
            path
        })
        .clone()
}

/// `gzip(tar)` of `tarball` written to `to`; returns (sha256 of the tar,
/// sha256 of the gzip, gzip size).
fn gzip_layer(tarball: &Path, to: &Path) -> (String, String, u64) {
    struct Hashing<W> {
        inner: W,
        hash: Sha256,
        size: u64,
    }
    impl<W: std::io::Write> std::io::Write for Hashing<W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.inner.write(buf)?;
            self.hash.update(&buf[..n]);
            self.size += n as u64;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush()
        }
    }
    let mut input = fs::File::open(tarball).expect("the Debian tarball");
    let out = Hashing {
        inner: std::io::BufWriter::new(fs::File::create(to).expect("the layer blob")),
        hash: Sha256::new(),
        size: 0,
    };
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut tar_hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf).expect("read the Debian tarball");
        if n == 0 {
            break;
        }
        tar_hash.update(&buf[..n]);
        gz.write_all(&buf[..n]).expect("write the layer blob");
    }
    let mut out = gz.finish().expect("finish the layer blob");
    out.flush().expect("flush the layer blob");
    (
        hex::encode(tar_hash.finalize()),
        hex::encode(out.hash.finalize()),
        out.size,
    )
}

/// Writes `bytes` as a blob of the layout; returns its hex digest.
fn write_blob(layout: &Path, bytes: &[u8]) -> String {
    let digest = hex::encode(Sha256::digest(bytes));
    fs::write(layout.join("blobs/sha256").join(&digest), bytes).expect("a blob");
    digest
}

/// An OCI layout holding `debian:bookworm`: one gzip layer, the tarball as
/// it is (so every owner, mode and xattr the script recorded reaches the
/// image untouched); config `Env` PATH, `Cmd ["bash"]`. Made once per test
/// run, and kept next to the tarball while that is unchanged.
#[must_use]
pub fn debian_layout() -> PathBuf {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT
        .get_or_init(|| {
            let tarball = debian_tarball();
            let meta = fs::metadata(&tarball).expect("the Debian tarball");
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            let fixtures = tarball.parent().expect("a fixtures dir").to_path_buf();
            let done = fixtures.join(format!("debian-oci-{}-{mtime}", meta.len()));
            if done.join("index.json").is_file() {
                return done;
            }
            let layout = fixtures.join(format!("debian-oci.{}.tmp", std::process::id()));
            let _ = fs::remove_dir_all(&layout);
            fs::create_dir_all(layout.join("blobs/sha256")).expect("layout dir");
            let partial = layout.join("blobs/sha256/layer.partial");
            let (diff_id, blob, size) = gzip_layer(&tarball, &partial);
            fs::rename(&partial, layout.join("blobs/sha256").join(&blob)).expect("layer blob");
            let arch = match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                other => other,
            };
            let config = serde_json::json!({
                "architecture": arch,
                "os": "linux",
                "config": {
                    "Env": [format!("PATH={DEFAULT_PATH}")],
                    "Cmd": ["bash"],
                },
                "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
                "history": [{
                    "created_by": "debootstrap --variant=minbase --include=libcap2-bin bookworm",
                }],
            });
            let config = serde_json::to_vec(&config).expect("config JSON");
            let config_digest = write_blob(&layout, &config);
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": format!("sha256:{config_digest}"),
                    "size": config.len(),
                },
                "layers": [{
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": format!("sha256:{blob}"),
                    "size": size,
                }],
            });
            let manifest = serde_json::to_vec(&manifest).expect("manifest JSON");
            let manifest_digest = write_blob(&layout, &manifest);
            let index = serde_json::json!({
                "schemaVersion": 2,
                "manifests": [{
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": format!("sha256:{manifest_digest}"),
                    "size": manifest.len(),
                    "annotations": {"org.opencontainers.image.ref.name": "bookworm"},
                }],
            });
            fs::write(
                layout.join("oci-layout"),
                r#"{"imageLayoutVersion":"1.0.0"}"#,
            )
            .expect("oci-layout");
            fs::write(
                layout.join("index.json"),
                serde_json::to_vec(&index).expect("index JSON"),
            )
            .expect("index.json");
            if fs::rename(&layout, &done).is_err() {
                // Another test binary finished first: use its copy.
                let _ = fs::remove_dir_all(&layout);
            }
            done
        })
        .clone()
}

impl Registry {
    /// Pushes the Debian base image here as `debian:bookworm` (once per
    /// registry); returns its reference.
    #[must_use]
    pub fn push_debian(&self) -> String {
        self.debian
            .get_or_init(|| {
                let layout = debian_layout();
                let reference = self.reference("debian:bookworm");
                let mut cmd = Command::new("skopeo");
                cmd.args(["copy", "--quiet"])
                    .args(self.skopeo_args("dest-"));
                cmd.arg(format!("oci:{}:bookworm", layout.display()));
                cmd.arg(format!("docker://{reference}"));
                run(&mut cmd);
                reference
            })
            .clone()
    }
}
