//! The registry client against the real registry server (the Debian package
//! `docker-registry`), started per test on a free port: anonymous, htpasswd
//! basic auth, TLS with a generated certificate, and token auth with a
//! token server of the test's own. In-process fakes stand in only for
//! faults the real server cannot be made to produce (503s, dropped
//! connections, a blob transfer cut in the middle).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use executor::platform::Platform;
use executor::registry::{
    BlobPush, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Error, ImageReference, Keychain, OCI_INDEX,
    OCI_MANIFEST, RegistryClient, RegistryOptions, TransferOptions,
};
use oci_spec::image::{Descriptor, Digest};
use serde_json::json;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

// ---- the registry server ----------------------------------------------------

const USER: &str = "tester";
const PASSWORD: &str = "s3cret-pass";

enum Kind {
    Anonymous,
    Basic,
    Tls,
    Token { realm: String, root_cert: PathBuf },
}

struct Registry {
    host: String,
    dir: tempfile::TempDir,
    ca: Option<PathBuf>,
    child: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Registry {
    fn start(kind: Kind) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("executor-registry-test-")
            .tempdir()
            .expect("a temp dir");
        let host = format!("127.0.0.1:{}", free_port());
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("storage dir");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            storage.display()
        );
        let mut ca = None;
        match kind {
            Kind::Anonymous => {}
            Kind::Basic => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", USER, PASSWORD])
                    .output()
                    .expect("htpasswd runs (Debian package apache2-utils)");
                assert!(out.status.success(), "htpasswd failed");
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, String::from_utf8_lossy(&out.stdout).trim()).unwrap();
                let _ = write!(
                    config,
                    "auth:\n  htpasswd:\n    realm: executor-tests\n    path: {}\n",
                    file.display()
                );
            }
            Kind::Tls => {
                let cert = rcgen::generate_simple_self_signed(vec![
                    "127.0.0.1".to_string(),
                    "localhost".to_string(),
                ])
                .expect("a certificate");
                let cert_file = dir.path().join("registry.crt");
                let key_file = dir.path().join("registry.key");
                std::fs::write(&cert_file, cert.cert.pem()).unwrap();
                std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
                let _ = write!(
                    config,
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    cert_file.display(),
                    key_file.display()
                );
                ca = Some(cert_file);
            }
            Kind::Token { realm, root_cert } => {
                let _ = write!(
                    config,
                    "auth:\n  token:\n    realm: {realm}\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
                    root_cert.display()
                );
            }
        }
        let config_file = dir.path().join("config.yml");
        std::fs::write(&config_file, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry starts (Debian package docker-registry)");
        let registry = Self {
            host,
            dir,
            ca,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&registry.host).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {}: {}",
                registry.host,
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn reference(&self, repo_and_tag: &str) -> ImageReference {
        ImageReference::parse(&format!("{}/{repo_and_tag}", self.host)).unwrap()
    }

    /// Options for this registry over plain HTTP, with quick retries.
    fn plain_options(&self) -> RegistryOptions {
        RegistryOptions {
            insecure: vec![self.host.clone()],
            ..quick_retries()
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn quick_retries() -> RegistryOptions {
    RegistryOptions {
        retry_initial_delay: Duration::from_millis(20),
        retry_max_delay: Duration::from_millis(100),
        ..RegistryOptions::default()
    }
}

fn client(options: RegistryOptions) -> RegistryClient {
    RegistryClient::new(options, Keychain::anonymous()).unwrap()
}

fn keychain(json: &serde_json::Value) -> (tempfile::TempDir, Keychain) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, json.to_string()).unwrap();
    let keychain = Keychain::from_file(&path).unwrap();
    (dir, keychain)
}

// ---- images -------------------------------------------------------------------

fn sha256(data: &[u8]) -> Digest {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
        .parse()
        .unwrap()
}

/// A gzipped tar holding one file.
fn layer(content: &str) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, "hello.txt", content.as_bytes())
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

struct Image {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
    media_type: &'static str,
}

impl Image {
    fn new(arch: &str, content: &str, docker: bool) -> Self {
        let layer = layer(content);
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(content.as_bytes()).to_string()]},
        })
        .to_string()
        .into_bytes();
        let (media_type, config_type, layer_type) = if docker {
            (
                DOCKER_MANIFEST,
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            )
        } else {
            (
                OCI_MANIFEST,
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": sha256(&config).to_string(), "size": config.len()},
            "layers": [{"mediaType": layer_type, "digest": sha256(&layer).to_string(), "size": layer.len()}],
        })
        .to_string()
        .into_bytes();
        Self {
            config,
            layer,
            manifest,
            media_type,
        }
    }

    fn blobs(&self) -> [&Vec<u8>; 2] {
        [&self.config, &self.layer]
    }

    async fn push(&self, client: &RegistryClient, reference: &ImageReference) -> Digest {
        for blob in self.blobs() {
            let pushed = client
                .push_blob(
                    reference,
                    &sha256(blob),
                    blob.len() as u64,
                    std::io::Cursor::new(blob.clone()),
                )
                .await
                .unwrap_or_else(|e| panic!("push blob to {reference}: {e:?}"));
            assert_ne!(pushed, BlobPush::Existed);
        }
        client
            .push_manifest(reference, &self.manifest, self.media_type)
            .await
            .unwrap_or_else(|e| panic!("push manifest {reference}: {e:?}"))
    }
}

fn linux(arch: &str) -> Platform {
    format!("linux/{arch}").parse().unwrap()
}

async fn pull(
    client: &RegistryClient,
    reference: &ImageReference,
    descriptor: &Descriptor,
) -> Vec<u8> {
    let mut out = Vec::new();
    let n = client
        .pull_blob(reference, descriptor, &mut out)
        .await
        .unwrap_or_else(|e| panic!("pull {} from {reference}: {e:?}", descriptor.digest()));
    assert_eq!(n, out.len() as u64);
    out
}

fn skopeo_inspect(args: &[&str], reference: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .arg("inspect")
        .args(args)
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo runs (Debian package skopeo)");
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("skopeo prints JSON")
}

// ---- anonymous registry ---------------------------------------------------------

#[tokio::test]
async fn push_resolve_and_pull_back() {
    let registry = Registry::start(Kind::Anonymous);
    let client = client(registry.plain_options());
    let reference = registry.reference("team/app:v1");
    let image = Image::new("amd64", "hello from the layer\n", false);

    let layer_digest = sha256(&image.layer);
    assert!(!client.blob_exists(&reference, &layer_digest).await.unwrap());
    let digest = image.push(&client, &reference).await;
    assert_eq!(digest, sha256(&image.manifest));
    assert!(client.blob_exists(&reference, &layer_digest).await.unwrap());
    // A blob already there is not uploaded again.
    let again = client
        .push_blob(
            &reference,
            &layer_digest,
            image.layer.len() as u64,
            std::io::Cursor::new(image.layer.clone()),
        )
        .await
        .unwrap();
    assert_eq!(again, BlobPush::Existed);

    let resolved = client.resolve(&reference, &linux("amd64")).await.unwrap();
    assert_eq!(resolved.manifest.manifest_digest, digest);
    assert_eq!(resolved.manifest.index_digest, None);
    assert_eq!(resolved.manifest.manifest_media_type, OCI_MANIFEST);
    assert_eq!(resolved.manifest.manifest_bytes, image.manifest);
    assert_eq!(resolved.config, image.config);
    assert_eq!(*resolved.config_digest(), sha256(&image.config));
    assert_eq!(resolved.layers().len(), 1);
    assert_eq!(resolved.manifest.source.digest(), Some(digest.as_ref()));
    assert_eq!(
        pull(&client, &resolved.manifest.source, &resolved.layers()[0]).await,
        image.layer
    );
    // By digest, too.
    let pinned = reference.with_digest(digest.as_ref());
    let by_digest = client.resolve(&pinned, &linux("amd64")).await.unwrap();
    assert_eq!(by_digest.manifest.manifest_digest, digest);

    // A tool no one here wrote agrees.
    let inspected = skopeo_inspect(&["--tls-verify=false"], &reference.to_string());
    assert_eq!(inspected["Digest"], digest.to_string());
    assert_eq!(inspected["Architecture"], "amd64");
    assert_eq!(inspected["Layers"], json!([layer_digest.to_string()]));
    assert_eq!(inspected["Env"], json!(["PATH=/bin"]));

    // Tags.
    assert_eq!(client.tag(&reference, "v2").await.unwrap(), digest);
    let mut tags = client.list_tags(&reference).await.unwrap();
    tags.sort();
    assert_eq!(tags, ["v1", "v2"]);
}

#[tokio::test]
async fn a_manifest_is_never_pushed_before_its_blobs() {
    let registry = Registry::start(Kind::Anonymous);
    let client = client(registry.plain_options());
    let reference = registry.reference("app:v1");
    let image = Image::new("amd64", "content", false);
    // Only the config is there.
    client
        .push_blob(
            &reference,
            &sha256(&image.config),
            image.config.len() as u64,
            std::io::Cursor::new(image.config.clone()),
        )
        .await
        .unwrap();
    let err = client
        .push_manifest(&reference, &image.manifest, image.media_type)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MissingBlob { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&sha256(&image.layer).to_string()), "{text}");
    assert!(text.contains(&reference.to_string()), "{text}");
    // The registry never saw the manifest.
    let err = client
        .resolve(&reference, &linux("amd64"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    assert!(err.to_string().contains("MANIFEST_UNKNOWN"), "{err}");
    assert!(
        !registry.log().contains("\"PUT /v2/app/manifests/"),
        "{}",
        registry.log()
    );
    // An index whose manifests are missing is refused the same way.
    let index = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(&image.manifest).to_string(), "size": image.manifest.len(),
                       "platform": {"os": "linux", "architecture": "amd64"}}],
    })
    .to_string();
    let err = client
        .push_manifest(
            &registry.reference("app:multi"),
            index.as_bytes(),
            OCI_INDEX,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MissingBlob { .. }), "{err:?}");
}

#[tokio::test]
async fn cross_repository_mount() {
    let registry = Registry::start(Kind::Anonymous);
    let client = client(registry.plain_options());
    let base = registry.reference("base/os:1");
    let image = Image::new("amd64", "base layer", false);
    image.push(&client, &base).await;

    let target = registry.reference("team/app:1");
    let layer = sha256(&image.layer);
    assert!(!client.blob_exists(&target, &layer).await.unwrap());
    assert!(client.mount_blob(&target, &base, &layer).await.unwrap());
    assert!(client.blob_exists(&target, &layer).await.unwrap());
    let mut out = Vec::new();
    let descriptor = Descriptor::new(
        oci_spec::image::MediaType::ImageLayerGzip,
        image.layer.len() as u64,
        layer.clone(),
    );
    client
        .pull_blob(&target, &descriptor, &mut out)
        .await
        .unwrap();
    assert_eq!(out, image.layer);
    assert!(
        registry.log().contains("mount="),
        "the mount went to the registry"
    );

    // A blob the source does not have: the registry refuses, the caller uploads.
    let absent = sha256(b"never pushed");
    assert!(!client.mount_blob(&target, &base, &absent).await.unwrap());
    assert!(!client.blob_exists(&target, &absent).await.unwrap());
    // Another registry cannot be mounted from.
    let elsewhere = ImageReference::parse("other.example:5000/base/os:1").unwrap();
    assert!(
        !client
            .mount_blob(&target, &elsewhere, &layer)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn an_index_resolves_to_the_requested_platform() {
    let registry = Registry::start(Kind::Anonymous);
    let client = client(registry.plain_options());
    let reference = registry.reference("multi:latest");
    let amd = Image::new("amd64", "amd64 layer", true);
    let arm = Image::new("arm64", "arm64 layer", true);
    let mut entries = Vec::new();
    for (image, arch) in [(&amd, "amd64"), (&arm, "arm64")] {
        let digest = image
            .push(&client, &registry.reference(&format!("multi:{arch}")))
            .await;
        entries.push(json!({
            "mediaType": DOCKER_MANIFEST, "digest": digest.to_string(), "size": image.manifest.len(),
            "platform": {"os": "linux", "architecture": arch, "variant": if arch == "arm64" { "v8" } else { "" }},
        }));
    }
    let list = json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST, "manifests": entries})
        .to_string();
    let list_digest = client
        .push_manifest(&reference, list.as_bytes(), DOCKER_MANIFEST_LIST)
        .await
        .unwrap();

    let resolved = client.resolve(&reference, &linux("arm64")).await.unwrap();
    assert_eq!(resolved.manifest.index_digest, Some(list_digest));
    assert_eq!(resolved.manifest.manifest_digest, sha256(&arm.manifest));
    assert_eq!(resolved.manifest.manifest_media_type, DOCKER_MANIFEST);
    assert_eq!(resolved.config, arm.config);
    assert_eq!(
        pull(&client, &resolved.manifest.source, &resolved.layers()[0]).await,
        arm.layer
    );
    let resolved = client.resolve(&reference, &linux("amd64")).await.unwrap();
    assert_eq!(resolved.config, amd.config);

    let err = client
        .resolve(&reference, &linux("s390x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoMatchingPlatform { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("linux/s390x"), "{text}");
    assert!(text.contains("linux/amd64, linux/arm64"), "{text}");
    assert!(text.contains(&reference.to_string()), "{text}");
}

#[tokio::test]
async fn docker_hub_names_are_pulled_through_mirrors() {
    let registry = Registry::start(Kind::Anonymous);
    let local = client(registry.plain_options());
    let image = Image::new("amd64", "busybox stand-in", false);
    image
        .push(&local, &registry.reference("library/busybox:1.36"))
        .await;

    // A dead mirror first: it is skipped; the live one serves the image.
    let dead = format!("127.0.0.1:{}", free_port());
    let options = RegistryOptions {
        mirrors: vec![dead.clone(), registry.host.clone()],
        insecure: vec![dead, registry.host.clone()],
        pull: TransferOptions {
            retries: 0,
            ..TransferOptions::default()
        },
        ..quick_retries()
    };
    let client = client(options);
    let hub = ImageReference::parse("busybox:1.36").unwrap();
    let resolved = client.resolve(&hub, &linux("amd64")).await.unwrap();
    assert_eq!(resolved.manifest.reference, hub);
    assert_eq!(resolved.manifest.source.registry(), registry.host);
    assert_eq!(resolved.manifest.source.repository(), "library/busybox");
    assert_eq!(resolved.config, image.config);
    // Blobs of the Docker Hub name come through the mirror too.
    assert_eq!(
        pull(&client, &hub, &resolved.layers()[0]).await,
        image.layer
    );
}

#[tokio::test]
async fn pull_errors_name_the_reference_and_the_registry_code() {
    let registry = Registry::start(Kind::Anonymous);
    let client = client(registry.plain_options());
    let missing = registry.reference("nothing/here:v9");
    let err = client.resolve(&missing, &linux("amd64")).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&missing.to_string()), "{text}");
    assert!(text.contains("404"), "{text}");
    assert!(!err.is_retryable());

    // Nothing listens: a connection error, retried, then reported.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let options = RegistryOptions {
        insecure: vec![nowhere.clone()],
        ..quick_retries()
    };
    let err = self::client(options)
        .resolve(
            &ImageReference::parse(&format!("{nowhere}/app")).unwrap(),
            &linux("amd64"),
        )
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains(&nowhere), "{err}");
}

// ---- basic auth ---------------------------------------------------------------------

#[tokio::test]
async fn basic_auth_with_docker_config_credentials() {
    let registry = Registry::start(Kind::Basic);
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let (_dir, keys) = keychain(&json!({"auths": {registry.host.clone(): {"auth": auth}}}));
    let client = RegistryClient::new(registry.plain_options(), keys).unwrap();
    let reference = registry.reference("private/app:v1");
    let image = Image::new("amd64", "private", false);
    let digest = image.push(&client, &reference).await;
    let resolved = client.resolve(&reference, &linux("amd64")).await.unwrap();
    assert_eq!(resolved.manifest.manifest_digest, digest);
    assert_eq!(
        pull(&client, &reference, &resolved.layers()[0]).await,
        image.layer
    );
    let inspected = skopeo_inspect(
        &["--tls-verify=false", &format!("--creds={USER}:{PASSWORD}")],
        &reference.to_string(),
    );
    assert_eq!(inspected["Digest"], digest.to_string());

    // Without credentials: 401, with a hint, and no retries.
    let anonymous = self::client(registry.plain_options());
    let err = anonymous
        .resolve(&reference, &linux("amd64"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err:?}");
    assert!(
        matches!(err, executor::registry::Error::NoCredentials { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("\nhint: add them with `docker login"),
        "{err}"
    );
    // Wrong credentials: a 401 too, told apart from missing ones.
    let (_dir2, wrong) = keychain(
        &json!({"auths": {registry.host.clone(): {"username": USER, "password": "wrong"}}}),
    );
    let err = RegistryClient::new(registry.plain_options(), wrong)
        .unwrap()
        .resolve(&reference, &linux("amd64"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err:?}");
    assert!(
        matches!(err, executor::registry::Error::CredentialsRefused { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("\nhint: check the password"),
        "{err}"
    );
}

// ---- TLS ------------------------------------------------------------------------------

#[tokio::test]
async fn tls_with_the_registry_certificate() {
    let registry = Registry::start(Kind::Tls);
    let ca = registry.ca.clone().unwrap();
    let reference = registry.reference("secure/app:v1");
    let image = Image::new("amd64", "over tls", false);

    let trusted = client(RegistryOptions {
        certificates: vec![(registry.host.clone(), ca.clone())],
        ..quick_retries()
    });
    let digest = image.push(&trusted, &reference).await;
    assert_eq!(
        trusted
            .resolve(&reference, &linux("amd64"))
            .await
            .unwrap()
            .manifest
            .manifest_digest,
        digest
    );
    let inspected = skopeo_inspect(&["--tls-verify=false"], &reference.to_string());
    assert_eq!(inspected["Digest"], digest.to_string());

    // Unknown CA: an error that says what to do, not retried.
    let untrusted = client(quick_retries());
    let err = untrusted
        .resolve(&reference, &linux("amd64"))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("--registry-certificate"), "{err}");
    assert!(err.to_string().contains(&registry.host), "{err}");

    // Verification skipped for this host, or for all pulls.
    for options in [
        RegistryOptions {
            skip_tls_verify: vec![registry.host.clone()],
            ..quick_retries()
        },
        RegistryOptions {
            pull: TransferOptions {
                skip_tls_verify: true,
                ..TransferOptions::default()
            },
            ..quick_retries()
        },
    ] {
        let resolved = client(options)
            .resolve(&reference, &linux("amd64"))
            .await
            .unwrap();
        assert_eq!(resolved.manifest.manifest_digest, digest);
    }
}

// ---- faults ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Fault {
    Status(u16),
    Drop,
}

/// A TCP proxy to `upstream` whose first connections each get a fault.
async fn fault_proxy(
    upstream: String,
    faults: Vec<Fault>,
) -> (String, Arc<Mutex<VecDeque<Fault>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let faults = Arc::new(Mutex::new(VecDeque::from(faults)));
    let queue = Arc::clone(&faults);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let fault = queue.lock().unwrap().pop_front();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                match fault {
                    Some(Fault::Drop) => drop(socket),
                    Some(Fault::Status(status)) => {
                        let _ = read_head(&mut socket).await;
                        let _ = socket
                            .write_all(
                                format!("HTTP/1.1 {status} Fault\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                                    .as_bytes(),
                            )
                            .await;
                        let _ = socket.shutdown().await;
                    }
                    None => {
                        if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut socket, &mut up).await;
                        }
                    }
                }
            });
        }
    });
    (addr, faults)
}

/// Reads an HTTP request head; returns it as text.
async fn read_head(socket: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") && buf.len() < 65536 {
        match socket.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn retries_with_backoff_on_503_429_and_dropped_connections() {
    let registry = Registry::start(Kind::Anonymous);
    let faults = vec![Fault::Status(503), Fault::Drop, Fault::Status(429)];
    let (proxy, left) = fault_proxy(registry.host.clone(), faults.clone()).await;
    let options = RegistryOptions {
        insecure: vec![proxy.clone()],
        ..quick_retries()
    };
    let via_proxy = |repo: &str| ImageReference::parse(&format!("{proxy}/{repo}")).unwrap();
    let client = client(options.clone());
    let image = Image::new("amd64", "through faults", false);
    let started = Instant::now();
    let digest = image.push(&client, &via_proxy("flaky/app:v1")).await;
    assert!(left.lock().unwrap().is_empty(), "every fault was met");
    // Three retries: 20 + 40 + 80 ms of backoff at least.
    assert!(started.elapsed() >= Duration::from_millis(140));
    assert_eq!(
        client
            .resolve(&via_proxy("flaky/app:v1"), &linux("amd64"))
            .await
            .unwrap()
            .manifest
            .manifest_digest,
        digest
    );

    // With no retries, the first fault is the answer.
    let (proxy, _) = fault_proxy(registry.host.clone(), vec![Fault::Status(503)]).await;
    let strict = self::client(RegistryOptions {
        insecure: vec![proxy.clone()],
        pull: TransferOptions {
            retries: 0,
            ..TransferOptions::default()
        },
        ..quick_retries()
    });
    let err = strict
        .resolve(
            &ImageReference::parse(&format!("{proxy}/flaky/app:v1")).unwrap(),
            &linux("amd64"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503), "{err:?}");
    assert!(err.is_retryable());

    // More faults than retries: the last fault is reported.
    let (proxy, _) = fault_proxy(registry.host.clone(), vec![Fault::Status(502); 5]).await;
    let few = self::client(RegistryOptions {
        insecure: vec![proxy.clone()],
        pull: TransferOptions {
            retries: 2,
            ..TransferOptions::default()
        },
        ..quick_retries()
    });
    let err = few
        .resolve(
            &ImageReference::parse(&format!("{proxy}/flaky/app:v1")).unwrap(),
            &linux("amd64"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(502), "{err:?}");
}

/// Serves one blob: the first GET sends half of it and hangs up; later GETs
/// honour `Range`. Returns the address and the `Range` headers seen.
async fn cut_blob_server(blob: Vec<u8>, corrupt: bool) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&ranges);
    tokio::spawn(async move {
        let mut blob_gets = 0;
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let head = read_head(&mut socket).await;
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut body = blob.clone();
            if corrupt {
                body[0] ^= 0xff;
            }
            let response: Vec<u8> = if path.contains("/blobs/") {
                blob_gets += 1;
                let range = header(&head, "range").map(str::to_string);
                seen.lock().unwrap().push(range.clone().unwrap_or_default());
                match range.and_then(|r| {
                    r.strip_prefix("bytes=")
                        .and_then(|r| r.strip_suffix('-'))
                        .and_then(|n| n.parse::<usize>().ok())
                }) {
                    Some(start) if blob_gets > 1 => {
                        let mut out = format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
                            body.len() - start,
                            body.len() - 1,
                            body.len()
                        )
                        .into_bytes();
                        out.extend_from_slice(&body[start..]);
                        out
                    }
                    _ => {
                        let mut out = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        let keep = if blob_gets == 1 {
                            body.len() / 2
                        } else {
                            body.len()
                        };
                        out.extend_from_slice(&body[..keep]);
                        out
                    }
                }
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
            };
            let _ = socket.write_all(&response).await;
            let _ = socket.shutdown().await;
        }
    });
    (addr, ranges)
}

#[tokio::test]
async fn a_cut_blob_transfer_resumes_where_it_stopped() {
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let descriptor = Descriptor::new(
        oci_spec::image::MediaType::ImageLayer,
        blob.len() as u64,
        sha256(&blob),
    );
    let (addr, ranges) = cut_blob_server(blob.clone(), false).await;
    let client = client(RegistryOptions {
        insecure: vec![addr.clone()],
        ..quick_retries()
    });
    let reference = ImageReference::parse(&format!("{addr}/repo:latest")).unwrap();
    assert_eq!(pull(&client, &reference, &descriptor).await, blob);
    assert_eq!(
        *ranges.lock().unwrap(),
        [String::new(), format!("bytes={}-", blob.len() / 2)]
    );

    // Bytes that do not match the digest are an error naming both digests.
    let (addr, _) = cut_blob_server(blob.clone(), true).await;
    let client = self::client(RegistryOptions {
        insecure: vec![addr.clone()],
        ..quick_retries()
    });
    let reference = ImageReference::parse(&format!("{addr}/repo:latest")).unwrap();
    let err = client
        .pull_blob(&reference, &descriptor, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&descriptor.digest().to_string()),
        "{err}"
    );

    // A descriptor whose size is smaller than the blob stops the transfer.
    let small = Descriptor::new(oci_spec::image::MediaType::ImageLayer, 10, sha256(&blob));
    let (addr, _) = cut_blob_server(blob, false).await;
    let client = self::client(RegistryOptions {
        insecure: vec![addr.clone()],
        ..quick_retries()
    });
    let reference = ImageReference::parse(&format!("{addr}/repo:latest")).unwrap();
    let err = client
        .pull_blob(&reference, &small, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SizeMismatch { .. }), "{err:?}");
}

#[tokio::test]
async fn a_reader_that_fails_is_reported_as_such() {
    struct Broken;
    impl tokio::io::AsyncRead for Broken {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Err(std::io::Error::other("disk on fire")))
        }
    }
    let registry = Registry::start(Kind::Anonymous);
    let client = client(registry.plain_options());
    let reference = registry.reference("app:v1");
    let err = client
        .push_blob(&reference, &sha256(b"x"), 1, Broken)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Source { .. }), "{err:?}");
    // A reader longer than the declared size is refused.
    let err = client
        .push_blob(
            &reference,
            &sha256(b"abc"),
            2,
            std::io::Cursor::new(b"abc".to_vec()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SizeMismatch { .. }), "{err:?}");
    // A reopenable source is read again for each try.
    let data = b"reopened".to_vec();
    let opened = Arc::new(Mutex::new(0));
    let count = Arc::clone(&opened);
    let pushed = client
        .push_blob_with(&reference, &sha256(&data), data.len() as u64, move || {
            *count.lock().unwrap() += 1;
            let data = data.clone();
            async move { Ok(std::io::Cursor::new(data)) }
        })
        .await
        .unwrap();
    assert_eq!(pushed, BlobPush::Uploaded);
    assert_eq!(*opened.lock().unwrap(), 1);
}

// ---- token auth -------------------------------------------------------------------------

const TOKEN_USER: &str = "tok-user";
const TOKEN_PASSWORD: &str = "tok-pass";
const REFRESH_TOKEN: &str = "refresh-secret";

/// What the token server was asked: method, scopes.
type TokenLog = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// A token server issuing ES256 JWTs the registry trusts (through `x5c` and
/// its `rootcertbundle`). Basic `tok-user`/`tok-pass` or the refresh token
/// get what they ask for; anonymous requests get pull only.
async fn token_server(dir: &Path) -> (String, PathBuf, TokenLog) {
    let issuer = rcgen::generate_simple_self_signed(vec!["token-issuer".to_string()]).unwrap();
    let root = dir.join("token-root.pem");
    std::fs::write(&root, issuer.cert.pem()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let realm = format!("http://{}/token", listener.local_addr().unwrap());
    let log: TokenLog = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&log);
    let issuer = Arc::new(issuer);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let issuer = Arc::clone(&issuer);
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let head = read_head(&mut socket).await;
                let mut parts = head.split_whitespace();
                let method = parts.next().unwrap_or("").to_string();
                let target = parts.next().unwrap_or("").to_string();
                let query = target.split_once('?').map_or("", |(_, q)| q).to_string();
                let mut form = parse_form(&query);
                if method == "POST" {
                    let len: usize = header(&head, "content-length")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    let _ = socket.read_exact(&mut body).await;
                    form.extend(parse_form(&String::from_utf8_lossy(&body)));
                }
                let mut scopes: Vec<String> = form
                    .iter()
                    .filter(|(k, _)| k == "scope")
                    .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
                    .collect();
                scopes.retain(|s| !s.is_empty());
                seen.lock().unwrap().push((method.clone(), scopes.clone()));
                let basic = header(&head, "authorization")
                    .and_then(|a| a.strip_prefix("Basic "))
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .map(|b| String::from_utf8_lossy(&b).into_owned());
                let refresh = form
                    .iter()
                    .find(|(k, _)| k == "refresh_token")
                    .map(|(_, v)| v.clone());
                let full = match (&basic, &refresh) {
                    (Some(b), _) => b == &format!("{TOKEN_USER}:{TOKEN_PASSWORD}"),
                    (None, Some(r)) => r == REFRESH_TOKEN,
                    (None, None) => false,
                };
                let refused = !full && (basic.is_some() || refresh.is_some());
                let response = if refused {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                } else {
                    let access: Vec<serde_json::Value> = scopes
                        .iter()
                        .filter_map(|s| {
                            let mut p = s.splitn(3, ':');
                            let (kind, name, actions) = (p.next()?, p.next()?, p.next()?);
                            let actions: Vec<&str> = actions
                                .split(',')
                                .filter(|a| full || *a == "pull")
                                .collect();
                            Some(json!({"type": kind, "name": name, "actions": actions}))
                        })
                        .collect();
                    let token = jwt(&issuer, &access);
                    let body = if method == "POST" {
                        json!({"access_token": token, "expires_in": 300})
                    } else {
                        json!({"token": token, "expires_in": 300})
                    }
                    .to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (realm, root, log)
}

fn parse_form(text: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn jwt(issuer: &rcgen::CertifiedKey<rcgen::KeyPair>, access: &[serde_json::Value]) -> String {
    use rcgen::SigningKey as _;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({
        "typ": "JWT", "alg": "ES256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(issuer.cert.der())],
    });
    let claims = json!({
        "iss": "test-issuer", "sub": "tester", "aud": "test-registry",
        "exp": now + 300, "nbf": now - 10, "iat": now - 10, "jti": format!("{now}-{}", access.len()),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        url.encode(header.to_string()),
        url.encode(claims.to_string())
    );
    let der = issuer.signing_key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", url.encode(ecdsa_der_to_raw(&der)))
}

/// An ASN.1 `SEQUENCE { r INTEGER, s INTEGER }` as JWS's 64-byte `r || s`.
fn ecdsa_der_to_raw(der: &[u8]) -> Vec<u8> {
    assert_eq!(der[0], 0x30, "an ECDSA signature is a DER sequence");
    let mut i = 2;
    let mut out = Vec::new();
    for _ in 0..2 {
        assert_eq!(der[i], 0x02);
        let len = der[i + 1] as usize;
        let int = &der[i + 2..i + 2 + len];
        let int = &int[int.len().saturating_sub(32)..];
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        i += 2 + len;
    }
    out
}

#[tokio::test]
async fn bearer_tokens_and_a_mount_scoped_for_both_repositories() {
    let dir = tempfile::tempdir().unwrap();
    let (realm, root_cert, log) = token_server(dir.path()).await;
    let registry = Registry::start(Kind::Token { realm, root_cert });
    let (_keys_dir, keys) = keychain(
        &json!({"auths": {registry.host.clone(): {"username": TOKEN_USER, "password": TOKEN_PASSWORD}}}),
    );
    let client = RegistryClient::new(registry.plain_options(), keys).unwrap();
    let base = registry.reference("base/os:1");
    let image = Image::new("amd64", "behind tokens", false);
    let digest = image.push(&client, &base).await;
    assert_eq!(
        client
            .resolve(&base, &linux("amd64"))
            .await
            .unwrap()
            .manifest
            .manifest_digest,
        digest
    );

    let target = registry.reference("team/app:1");
    let layer = sha256(&image.layer);
    assert!(client.mount_blob(&target, &base, &layer).await.unwrap());
    assert!(client.blob_exists(&target, &layer).await.unwrap());
    let asked: Vec<Vec<String>> = log.lock().unwrap().iter().map(|(_, s)| s.clone()).collect();
    assert!(
        asked.contains(&vec![
            "repository:team/app:pull,push".to_string(),
            "repository:base/os:pull".to_string()
        ]),
        "one token for both repositories: {asked:?}"
    );

    // Anonymous: pulls are granted, pushes are not.
    let anonymous = self::client(registry.plain_options());
    let resolved = anonymous.resolve(&base, &linux("amd64")).await.unwrap();
    assert_eq!(
        pull(&anonymous, &base, &resolved.layers()[0]).await,
        image.layer
    );
    let data = b"not allowed".to_vec();
    let err = anonymous
        .push_blob(
            &registry.reference("base/os:1"),
            &sha256(&data),
            data.len() as u64,
            std::io::Cursor::new(data),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err:?}");
    // A token without push on the target: the registry refuses the mount.
    assert!(!anonymous.mount_blob(&target, &base, &layer).await.unwrap());

    // An identity token is exchanged with the OAuth2 refresh-token POST.
    let (_id_dir, identity) =
        keychain(&json!({"auths": {registry.host.clone(): {"identitytoken": REFRESH_TOKEN}}}));
    let by_identity = RegistryClient::new(registry.plain_options(), identity).unwrap();
    let other = registry.reference("team/other:1");
    Image::new("amd64", "pushed with an identity token", false)
        .push(&by_identity, &other)
        .await;
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|(m, s)| m == "POST" && s == &vec!["repository:team/other:pull,push".to_string()])
    );

    // Wrong credentials: the token endpoint's refusal, naming it.
    let (_bad_dir, bad) = keychain(
        &json!({"auths": {registry.host.clone(): {"username": TOKEN_USER, "password": "nope"}}}),
    );
    let err = RegistryClient::new(registry.plain_options(), bad)
        .unwrap()
        .resolve(&base, &linux("amd64"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err:?}");
    assert!(err.to_string().contains("/token"), "{err}");
}
