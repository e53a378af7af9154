//! `executor build` through the CLI against the real registry, each result
//! checked with tools no one here wrote: `skopeo inspect --config` for the
//! config, `umoci unpack` for the files.

use std::fs;
use std::os::unix::fs::MetadataExt;

use executor_e2e::{Project, Registry, RegistryKind, unpack, unpack_docker_archive, unpack_layout};

#[test]
fn config_instructions_and_copy_pushed_to_a_registry() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let dockerfile = format!(
        "FROM {base}\n\
         ENV APP=/srv/app GREETING=\"hello world\"\n\
         LABEL org.example.team=build version=1\n\
         WORKDIR $APP\n\
         COPY --chown=nobody:nogroup --chmod=0640 app.conf ./\n\
         COPY src/ lib/\n\
         EXPOSE 8080 53/udp\n\
         VOLUME /data\n\
         USER nobody\n\
         STOPSIGNAL SIGINT\n\
         HEALTHCHECK --interval=30s --retries=3 CMD wget -q -O- http://localhost:8080/ || exit 1\n\
         ENTRYPOINT [\"/bin/sh\", \"-c\"]\n\
         CMD [\"echo $GREETING\"]\n"
    );
    let build = Project::new(
        &dockerfile,
        &[
            ("app.conf", "port=8080\n"),
            ("src/main.sh", "echo hi\n"),
            ("src/sub/x", "x"),
        ],
    );
    let destination = registry.reference("app:v1");
    let digest_file = build.dir.path().join("digest");
    let stderr = build.ok(&[
        "--destination",
        &destination,
        "--insecure",
        "--insecure-pull",
        "--digest-file",
        digest_file.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("[1/1] STEP 5/13: COPY --chown=nobody:nogroup"),
        "{stderr}"
    );

    let config = registry.inspect_config(&destination);
    let c = &config["config"];
    assert!(
        c["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "APP=/srv/app"),
        "{c}"
    );
    assert!(
        c["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "GREETING=hello world"),
        "{c}"
    );
    assert_eq!(c["Labels"]["org.example.team"], "build");
    assert_eq!(c["WorkingDir"], "/srv/app");
    assert_eq!(c["User"], "nobody");
    assert!(c["ExposedPorts"]["8080/tcp"].is_object(), "{c}");
    assert!(c["ExposedPorts"]["53/udp"].is_object(), "{c}");
    assert!(c["Volumes"]["/data"].is_object(), "{c}");
    assert_eq!(c["StopSignal"], "SIGINT");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], serde_json::json!(["echo $GREETING"]));
    let history = config["history"].as_array().unwrap();
    assert!(
        history
            .iter()
            .any(|h| h["created_by"] == "USER nobody" && h["empty_layer"] == true)
    );

    let digest = fs::read_to_string(&digest_file).unwrap();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );

    let rootfs = unpack(&registry, &destination, build.dir.path());
    let conf = rootfs.join("srv/app/app.conf");
    assert_eq!(fs::read_to_string(&conf).unwrap(), "port=8080\n");
    let meta = fs::metadata(&conf).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (65534, 65534, 0o640)
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("srv/app/lib/main.sh")).unwrap(),
        "echo hi\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("srv/app/lib/sub/x")).unwrap(),
        "x"
    );
    assert!(
        rootfs.join("bin/busybox").is_file(),
        "the base layer is in the image"
    );
}

#[test]
fn multi_stage_copy_from_and_target() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let dockerfile = format!(
        "FROM {base} AS build\nCOPY a.txt /out/a.txt\n\
         FROM scratch AS unused\nCOPY --from=nowhere:404 /x /x\n\
         FROM scratch\nCOPY --from=build /out/ /copied/\nCOPY --from=0 /bin/busybox /busybox\n"
    );
    let build = Project::new(&dockerfile, &[("a.txt", "from build")]);
    let destination = registry.reference("multi:latest");
    build.ok(&[
        "--destination",
        &destination,
        "--insecure-registry",
        &registry.host,
    ]);
    let rootfs = unpack(&registry, &destination, build.dir.path());
    assert_eq!(
        fs::read_to_string(rootfs.join("copied/a.txt")).unwrap(),
        "from build"
    );
    assert!(rootfs.join("busybox").is_file());
    assert!(!rootfs.join("bin").exists(), "scratch has no base files");
}

#[test]
fn dockerignore_keeps_files_out() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let build = Project::new(
        "FROM scratch\nCOPY . /ctx/\n",
        &[
            (".dockerignore", "secret*\n*.log\n!keep.log\n"),
            ("secret.txt", "no"),
            ("a.log", "no"),
            ("keep.log", "yes"),
            ("ok.txt", "yes"),
        ],
    );
    let destination = registry.reference("ignored:latest");
    build.ok(&["--destination", &destination, "--insecure"]);
    let rootfs = unpack(&registry, &destination, build.dir.path());
    assert!(rootfs.join("ctx/ok.txt").is_file());
    assert!(rootfs.join("ctx/keep.log").is_file());
    assert!(!rootfs.join("ctx/secret.txt").exists());
    assert!(!rootfs.join("ctx/a.log").exists());
}

#[test]
fn tar_and_oci_layout_outputs_without_a_registry() {
    let build = Project::new("FROM scratch\nCOPY f /f\nCMD [\"/f\"]\n", &[("f", "file")]);
    let tar = build.dir.path().join("image.tar");
    let layout = build.dir.path().join("layout");
    build.ok(&[
        "--no-push",
        "--destination",
        "example.test/app:1",
        "--tar-path",
        tar.to_str().unwrap(),
        "--oci-layout-path",
        layout.to_str().unwrap(),
    ]);
    // skopeo reads the docker archive.
    let rootfs = unpack_docker_archive(&tar, &build.dir.path().join("a"));
    assert_eq!(fs::read_to_string(rootfs.join("f")).unwrap(), "file");
    // umoci reads the OCI layout.
    let rootfs = unpack_layout(&layout, "example.test/app:1", &build.dir.path().join("b"));
    assert_eq!(fs::read_to_string(rootfs.join("f")).unwrap(), "file");
}

#[test]
fn run_without_a_shell_in_the_image_names_the_line_and_the_shell() {
    let build = Project::new("FROM scratch\nCOPY f /f\nRUN echo hi\n", &[("f", "x")]);
    let out = build.run(&["--no-push"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Dockerfile:3: RUN failed"), "{stderr}");
    assert!(stderr.contains("/bin/sh"), "{stderr}");
}

#[test]
fn basic_auth_with_docker_config() {
    use base64::Engine as _;
    let registry = Registry::start(RegistryKind::Basic);
    let build = Project::new("FROM scratch\nCOPY f /f\n", &[("f", "x")]);
    let config_dir = build.dir.path().join("docker-config");
    fs::create_dir_all(&config_dir).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        executor_e2e::USER,
        executor_e2e::PASSWORD
    ));
    fs::write(
        config_dir.join("config.json"),
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}",
            registry.host
        ),
    )
    .unwrap();
    let destination = registry.reference("private:1");
    build.ok(&["--destination", &destination, "--insecure"]);
    assert_eq!(
        registry.inspect_config(&destination)["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Without credentials the push is refused, and nothing is written there.
    fs::remove_file(config_dir.join("config.json")).unwrap();
    let out = build.run(&[
        "--destination",
        &registry.reference("private:2"),
        "--insecure",
    ]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn tls_registry_with_registry_certificate() {
    let registry = Registry::start(RegistryKind::Tls);
    let build = Project::new("FROM scratch\nCOPY f /f\n", &[("f", "x")]);
    let destination = registry.reference("tls:1");
    let certificate = format!(
        "{}={}",
        registry.host,
        registry.ca_cert.as_ref().unwrap().display()
    );
    build.ok(&[
        "--destination",
        &destination,
        "--registry-certificate",
        &certificate,
    ]);
    assert_eq!(registry.inspect_config(&destination)["os"], "linux");
}

#[test]
fn the_summary_and_metrics_file_count_steps_and_bytes() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let build = Project::new(
        &format!("FROM {base}\nENV A=1\nCOPY f /f\nRUN echo hi > /g\n"),
        &[("f", "x")],
    );
    let destination = registry.reference("metrics/app:1");
    let metrics = build.arg("metrics.json");
    let args = [
        "-d",
        destination.as_str(),
        "--insecure-registry",
        registry.host.as_str(),
        "--metrics-file",
        metrics.as_str(),
    ];
    let stderr = build.ok(&args);
    assert!(stderr.contains("3 steps executed, 0 cached"), "{stderr}");
    let first: serde_json::Value =
        serde_json::from_slice(&fs::read(build.path("metrics.json")).unwrap()).unwrap();
    assert_eq!(first["steps_executed"], 3);
    assert_eq!(first["steps_cached"], 0);
    assert!(first["bytes_downloaded"].as_u64().unwrap() > 0, "{first}");
    assert!(first["bytes_uploaded"].as_u64().unwrap() > 0, "{first}");
    let steps = first["steps"].as_array().unwrap();
    let layers: Vec<bool> = steps.iter().map(|s| s["layer"] == true).collect();
    assert_eq!(layers, [false, true, true], "{first}");
    assert!(
        steps[2]["instruction"]
            .as_str()
            .unwrap()
            .starts_with("RUN echo hi")
    );
    // The base is in the store now: nothing to download.
    build.ok(&args);
    let second: serde_json::Value =
        serde_json::from_slice(&fs::read(build.path("metrics.json")).unwrap()).unwrap();
    assert_eq!(second["bytes_downloaded"], 0, "{second}");
}

#[test]
fn cache_warm_fills_the_store_so_the_build_downloads_nothing() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let build = Project::new("ARG BASE\nFROM ${BASE}\nRUN echo warm > /w\n", &[]);
    let base_arg = format!("BASE={base}");
    // From the Dockerfile's FROM lines, with its build args.
    let mut warm = build.executor();
    warm.args(["cache", "warm", "--cache-dir"])
        .arg(build.cache())
        .args(["--dockerfile"])
        .arg(build.context().join("Dockerfile"))
        .args([
            "--build-arg",
            &base_arg,
            "--insecure-registry",
            &registry.host,
        ]);
    executor_e2e::ok(&mut warm);
    let metrics = build.arg("metrics.json");
    build.ok(&[
        "--no-push",
        "--build-arg",
        &base_arg,
        "--insecure-registry",
        &registry.host,
        "--metrics-file",
        &metrics,
    ]);
    let metrics: serde_json::Value =
        serde_json::from_slice(&fs::read(build.path("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["bytes_downloaded"], 0, "{metrics}");

    // By reference, into another store.
    let other = build.path("other-store");
    let mut warm = build.executor();
    warm.args(["cache", "warm", "--image", &base, "--cache-dir"])
        .arg(&other)
        .args(["--insecure-registry", &registry.host]);
    let out = warm.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("(1 layer)"));

    let mut nothing = build.executor();
    nothing.args(["cache", "warm"]);
    let stderr = executor_e2e::fails(&mut nothing);
    assert!(stderr.contains("nothing to warm"), "{stderr}");
}
