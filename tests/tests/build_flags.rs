//! `executor build`'s flags through the CLI against the real registry
//! (`docker-registry`), each checked with skopeo, umoci or the registry's
//! own access log: outputs and digest files, build args, target, labels,
//! platform, compression, plain-HTTP and TLS options, mirrors, retries, the
//! store, logging, `EXECUTOR_*` variables, kaniko's invocation without a
//! subcommand, and cross-repository mounts.

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;

use executor_e2e::{
    Project, Registry, RegistryKind, free_port, raw_manifest, unpack, unpack_docker_archive,
    unpack_layout,
};

/// Does the registry have `reference`?
fn exists(registry: &Registry, reference: &str) -> bool {
    Command::new("skopeo")
        .arg("inspect")
        .args(registry.skopeo_args(""))
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap()
        .status
        .success()
}

/// A plain HTTP/1.1 request to the registry; returns the status code.
fn http(host: &str, method: &str, path: &str) -> u16 {
    let mut stream = TcpStream::connect(host).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn destinations_outputs_digest_files_labels_and_build_args() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = Project::new(
        "ARG BASE\nFROM $BASE\nARG GIVEN\nARG FROM_ENV\nARG DEFAULTED=default\n\
             LABEL given=$GIVEN from-env=$FROM_ENV defaulted=$DEFAULTED\n\
             LABEL overridden=dockerfile\nCOPY f /f\n",
        &[("f", "file\n")],
    );
    let (one, two) = (
        registry.reference("out/one:v1"),
        registry.reference("out/two:v2"),
    );
    let (tar, layout) = (project.path("image.tar"), project.path("layout"));
    let mut cmd = project.build(&[
        "--build-arg",
        &format!("BASE={base}"),
        "--build-arg",
        "GIVEN=flag value",
        "--build-arg",
        "FROM_ENV",
        "--label",
        "overridden=flag",
        "--label",
        "extra=1",
        "-d",
        &one,
        "--destination",
        &two,
        "--insecure",
        "--insecure-pull",
        "--digest-file",
        &project.arg("digest"),
        "--image-name-with-digest-file",
        &project.arg("name-digest"),
        "--image-name-tag-with-digest-file",
        &project.arg("name-tag-digest"),
        "--tar-path",
        tar.to_str().unwrap(),
        "--oci-layout-path",
        layout.to_str().unwrap(),
    ]);
    cmd.env("FROM_ENV", "from the environment");
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let digest = registry.digest_of(&one);
    assert_eq!(registry.digest_of(&two), digest, "one image, two names");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("{one}@{digest}")), "{stdout}");
    assert!(stdout.contains(&format!("{two}@{digest}")), "{stdout}");
    assert_eq!(fs::read_to_string(project.path("digest")).unwrap(), digest);
    let host = &registry.host;
    assert_eq!(
        fs::read_to_string(project.path("name-digest")).unwrap(),
        format!("{host}/out/one@{digest}\n{host}/out/two@{digest}\n")
    );
    assert_eq!(
        fs::read_to_string(project.path("name-tag-digest")).unwrap(),
        format!("{host}/out/one:v1@{digest}\n{host}/out/two:v2@{digest}\n")
    );

    let labels = &registry.inspect_config(&one)["config"]["Labels"];
    assert_eq!(labels["given"], "flag value");
    assert_eq!(labels["from-env"], "from the environment");
    assert_eq!(labels["defaulted"], "default");
    assert_eq!(labels["overridden"], "flag", "--label wins: {labels}");
    assert_eq!(labels["extra"], "1");

    // The docker archive, read by skopeo; the OCI layout, by umoci.
    let rootfs = unpack_docker_archive(&tar, &project.path("a"));
    assert_eq!(fs::read_to_string(rootfs.join("f")).unwrap(), "file\n");
    assert!(rootfs.join("bin/busybox").is_file());
    let rootfs = unpack_layout(&layout, &one, &project.path("b"));
    assert_eq!(fs::read_to_string(rootfs.join("f")).unwrap(), "file\n");

    // --no-push: nothing reaches the registry, the digest is still printed.
    let three = registry.reference("out/three:v3");
    let mut cmd = project.build(&[
        "--build-arg",
        &format!("BASE={base}"),
        "--insecure-pull",
        "--no-push",
        "-d",
        &three,
    ]);
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sha256:"));
    assert!(!exists(&registry, &three), "--no-push pushed");
}

#[test]
fn target_skips_unused_stages() {
    let project = Project::new(
        "FROM scratch AS broken\nCOPY does-not-exist /\n\
         FROM scratch AS build\nCOPY a /a\n\
         FROM scratch AS final\nCOPY --from=build /a /b\n",
        &[("a", "a\n")],
    );
    let layout = project.path("layout");
    for skip in ["--skip-unused-stages", "--skip-unused-stages=true"] {
        let _ = fs::remove_dir_all(&layout);
        project.ok(&[
            skip,
            "--target",
            "build",
            "--no-push",
            "-d",
            "example.test/t:1",
            "--oci-layout-path",
            layout.to_str().unwrap(),
        ]);
        let rootfs = unpack_layout(&layout, "example.test/t:1", &project.path(skip));
        assert!(rootfs.join("a").is_file(), "the build stage is the image");
        assert!(!rootfs.join("b").exists(), "the final stage is not");
    }
    // Without --target, the last stage; the broken one is never built.
    let _ = fs::remove_dir_all(&layout);
    project.ok(&[
        "--no-push",
        "-d",
        "example.test/t:1",
        "--oci-layout-path",
        layout.to_str().unwrap(),
    ]);
    let rootfs = unpack_layout(&layout, "example.test/t:1", &project.path("last"));
    assert!(rootfs.join("b").is_file());
    // Targeting the broken stage fails on its COPY, naming the file.
    let stderr = project.fails(&["--no-push", "--target", "broken"]);
    assert!(stderr.contains("does-not-exist"), "{stderr}");
}

#[test]
fn custom_platform_and_zstd_compression() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let project = Project::new("FROM scratch\nCOPY f /f\n", &[("f", "zstd\n")]);
    let destination = registry.reference("platform/arm:1");
    project.ok(&[
        "--custom-platform",
        "linux/arm64",
        "--compression",
        "zstd",
        "--compression-level",
        "19",
        "-d",
        &destination,
        "--insecure",
    ]);
    let config = registry.inspect_config(&destination);
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["os"], "linux");
    let manifest = raw_manifest(&registry, &destination);
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    // The layer is real zstd: skopeo decompresses it (recompressing to
    // gzip, which umoci reads), and umoci unpacks it.
    let layout = project.path("from-zstd");
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-compress",
            "--dest-compress-format=gzip",
        ])
        .args(registry.skopeo_args("src-"))
        .arg(format!("docker://{destination}"))
        .arg(format!("oci:{}:image", layout.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rootfs = unpack_layout(&layout, "image", &project.path("u"));
    assert_eq!(fs::read_to_string(rootfs.join("f")).unwrap(), "zstd\n");

    // The level changes the bytes: level 1 gives another layer digest.
    let fast = registry.reference("platform/arm:fast");
    project.ok(&[
        "--custom-platform=linux/arm64",
        "--compression=zstd",
        "--compression-level=1",
        "-d",
        &fast,
        "--insecure",
    ]);
    let gzip = registry.reference("platform/arm:gzip");
    project.ok(&["--custom-platform=linux/arm64", "-d", &gzip, "--insecure"]);
    assert_eq!(
        raw_manifest(&registry, &gzip)["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
}

#[test]
fn plain_http_registries_need_insecure_flags() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = Project::new(&format!("FROM {base}\nCOPY f /f\n"), &[("f", "x")]);
    let destination = registry.reference("insecure/app:1");
    // Without any flag the registry is spoken to over https and fails.
    let stderr = project.fails(&["-d", &destination]);
    assert!(stderr.contains(&registry.host), "{stderr}");
    // --insecure covers the push only: the pull still fails.
    let stderr = project.fails(&["-d", &destination, "--insecure"]);
    assert!(stderr.contains(&base), "{stderr}");
    // --insecure-pull covers the pull only: the push fails.
    let stderr = project.fails(&["-d", &destination, "--insecure-pull"]);
    assert!(stderr.contains(&registry.host), "{stderr}");
    assert!(!exists(&registry, &destination));
    project.ok(&["-d", &destination, "--insecure", "--insecure-pull"]);
    assert!(exists(&registry, &destination));
    // --insecure-registry covers both, for that host only.
    let other = registry.reference("insecure/app:2");
    project.ok(&["-d", &other, "--insecure-registry", &registry.host]);
    assert!(exists(&registry, &other));
}

#[test]
fn tls_registries_with_skip_verify_flags_and_certificates() {
    let registry = Registry::start(RegistryKind::Tls);
    let base = registry.push_busybox();
    let project = Project::new(&format!("FROM {base}\nCOPY f /f\n"), &[("f", "x")]);
    let certificate = format!(
        "{}={}",
        registry.host,
        registry.ca_cert.as_ref().unwrap().display()
    );
    let destination = |tag: &str| registry.reference(&format!("tls/app:{tag}"));

    // Unknown certificate: refused, naming the registry.
    let stderr = project.fails(&["-d", &destination("refused")]);
    assert!(stderr.contains(&registry.host), "{stderr}");
    // Pull verified with the certificate, push without verification.
    project.ok(&[
        "-d",
        &destination("a"),
        "--registry-certificate",
        &certificate,
    ]);
    // Each direction's skip flag covers that direction only.
    project.fails(&["-d", &destination("b"), "--skip-tls-verify"]);
    project.fails(&["-d", &destination("b"), "--skip-tls-verify-pull"]);
    assert!(!exists(&registry, &destination("b")));
    project.ok(&[
        "-d",
        &destination("b"),
        "--skip-tls-verify",
        "--skip-tls-verify-pull",
    ]);
    project.ok(&[
        "-d",
        &destination("c"),
        "--skip-tls-verify-registry",
        &registry.host,
    ]);
    for tag in ["a", "b", "c"] {
        assert!(exists(&registry, &destination(tag)), "{tag}");
    }
}

#[test]
fn registry_mirror_serves_docker_hub_names() {
    let mirror = Registry::start(RegistryKind::Anonymous);
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!(
            "oci:{}:latest",
            executor_e2e::busybox_layout().display()
        ))
        .arg(format!(
            "docker://{}",
            mirror.reference("library/busybox:latest")
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let project = Project::new("FROM busybox\nCOPY f /f\n", &[("f", "x")]);
    let layout = project.path("layout");
    project.ok(&[
        "--registry-mirror",
        &mirror.host,
        "--insecure-registry",
        &mirror.host,
        "--no-push",
        "-d",
        "example.test/m:1",
        "--oci-layout-path",
        layout.to_str().unwrap(),
    ]);
    let log = mirror.log();
    assert!(
        log.contains("/v2/library/busybox/manifests/latest"),
        "the mirror was asked: {log}"
    );
    let rootfs = unpack_layout(&layout, "example.test/m:1", &project.path("u"));
    assert!(rootfs.join("bin/busybox").is_file());
}

#[test]
fn retries_follow_push_retry_and_image_download_retry() {
    let dead = format!("127.0.0.1:{}", free_port());
    let project = Project::new(&format!("FROM {dead}/base:1\n"), &[]);
    for (retries, expected) in [("0", 0), ("2", 2)] {
        let stderr = project.fails(&[
            "--no-push",
            "--insecure-pull",
            "--image-download-retry",
            retries,
        ]);
        assert_eq!(count(&stderr, "retrying"), expected, "{stderr}");
        assert!(stderr.contains(&dead), "{stderr}");
    }
    project.write("Dockerfile", "FROM scratch\n");
    let destination = format!("{dead}/app:1");
    for (retries, expected) in [("0", 0), ("1", 1)] {
        let stderr = project.fails(&["-d", &destination, "--insecure", "--push-retry", retries]);
        assert_eq!(count(&stderr, "retrying"), expected, "{stderr}");
        assert!(stderr.contains(&dead), "{stderr}");
    }
}

#[test]
fn cache_dir_keeps_pulled_base_layers() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = Project::new(&format!("FROM {base}\nCOPY f /f\n"), &[("f", "x")]);
    let layer = raw_manifest(&registry, &base)["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let blob_gets = |log: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("\"GET /v2/busybox/blobs/{layer}")))
            .count()
    };
    project.ok(&["--no-push", "--insecure-pull"]);
    let first = blob_gets(&registry.log());
    assert_eq!(first, 1, "the layer was pulled once");
    project.ok(&["--no-push", "--insecure-pull"]);
    let log = registry.log();
    assert_eq!(
        blob_gets(&log),
        first,
        "the second build downloads no blob: {log}"
    );
    // Another store downloads again.
    let mut cmd = project.executor();
    cmd.arg("build")
        .arg("--context")
        .arg(project.context())
        .args(["--no-push", "--insecure-pull", "--cache-dir"])
        .arg(project.path("other-store"));
    executor_e2e::ok(&mut cmd);
    assert!(blob_gets(&registry.log()) > first);
}

#[test]
fn verbosity_and_json_logs() {
    let project = Project::new("FROM scratch\nCOPY f /f\n", &[("f", "x")]);
    let info = project.ok(&["--no-push"]);
    assert!(info.contains("STEP 2/2: COPY f /f"), "{info}");
    assert!(!info.contains("DEBUG"), "{info}");
    let debug = project.ok(&["--no-push", "-v", "debug"]);
    assert!(debug.contains("DEBUG"), "{debug}");
    let quiet = project.ok(&["--no-push", "--verbosity=error"]);
    assert!(!quiet.contains("STEP"), "{quiet}");
    let json = project.ok(&["--no-push", "--log-format", "json"]);
    let lines: Vec<&str> = json.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(v["level"].is_string(), "{line}");
    }
    assert!(json.contains("STEP 2/2"), "{json}");
}

#[test]
fn environment_variables_and_kaniko_invocation() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let project = Project::new("FROM scratch\nCOPY f /f\n", &[("f", "x")]);
    // Settings from EXECUTOR_* variables.
    let destination = registry.reference("env/app:1");
    let mut cmd = project.executor();
    cmd.arg("build")
        .env("EXECUTOR_CONTEXT", project.context())
        .env("EXECUTOR_DESTINATION", &destination)
        .env("EXECUTOR_INSECURE", "true")
        .env("EXECUTOR_CACHE_DIR", project.cache())
        .env("EXECUTOR_CUSTOM_PLATFORM", "linux/s390x");
    executor_e2e::ok(&mut cmd);
    assert_eq!(
        registry.inspect_config(&destination)["architecture"],
        "s390x"
    );

    // kaniko's invocation: no subcommand.
    let kaniko = registry.reference("env/kaniko:1");
    let mut cmd = project.executor();
    cmd.arg("--context")
        .arg(project.context())
        .args(["--destination", &kaniko, "--insecure"])
        .arg("--cache-dir")
        .arg(project.cache())
        .arg("--verbosity=info");
    let stderr = executor_e2e::ok(&mut cmd);
    assert!(stderr.contains("STEP 2/2"), "{stderr}");
    assert!(exists(&registry, &kaniko));
}

#[test]
fn pushes_mount_base_layers_across_repositories() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let layer = raw_manifest(&registry, &base)["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    // In the access log the digest is URL-encoded: match its hex part.
    let hex = layer.trim_start_matches("sha256:").to_owned();
    let project = Project::new(&format!("FROM {base}\nCOPY f /f\n"), &[("f", "x")]);
    let destination = registry.reference("mounted/app:1");
    project.ok(&["-d", &destination, "--insecure-registry", &registry.host]);
    let log = registry.log();
    let mount = log
        .lines()
        .find(|l| l.contains("POST /v2/mounted/app/blobs/uploads/") && l.contains(&hex))
        .unwrap_or_else(|| {
            let ours: Vec<&str> = log.lines().filter(|l| l.contains("mounted/app")).collect();
            panic!("no mount of {layer}: {ours:#?}")
        });
    assert!(mount.contains("from=busybox"), "{mount}");
    assert!(
        mount.contains("\" 201 "),
        "the registry mounted it: {mount}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("PUT /v2/mounted/app/blobs/uploads/") && l.contains(&hex)),
        "the base layer was uploaded instead of mounted"
    );

    // The source repository no longer has the blob: the registry refuses
    // the mount, and the layer is uploaded from the store.
    assert_eq!(
        http(
            &registry.host,
            "DELETE",
            &format!("/v2/busybox/blobs/{layer}")
        ),
        202
    );
    let uploaded = registry.reference("uploaded/app:1");
    project.ok(&["-d", &uploaded, "--insecure-registry", &registry.host]);
    let log = registry.log();
    assert!(
        log.lines()
            .any(|l| l.contains("PUT /v2/uploaded/app/blobs/uploads/")
                && l.contains(&hex)
                && l.contains("\" 201 ")),
        "the layer was uploaded: {log}"
    );
    let rootfs = unpack(&registry, &uploaded, project.dir.path());
    assert!(rootfs.join("bin/busybox").is_file());
}
