//! `--isolation=in-place` and `auto` where a container runtime runs the
//! executor image as it runs a default Kubernetes pod ([`Pod`]: fresh
//! namespaces, an overlay root, Docker's default capabilities, no
//! `CAP_SYS_ADMIN`, `no_new_privs`, RuntimeDefault's seccomp refusals):
//! RUN builds there in the container's own root, the image's own files are
//! untouched, a secret reaches no layer, a failed build leaves the next one
//! correct; and on a root with no sign of a container, in place is refused.
//! The RUN cases of the differential corpus are compared with buildah in a
//! pod too (`differential.rs`).

use std::fs;
use std::path::Path;

use executor_e2e::{Pod, PodImage, Project, Registry, RegistryKind, build_image, unpack_layout};

const SECRET: &str = "s3cr3t-in-place-value";

/// `/kaniko/executor build` of `project`'s context and store, as the pod
/// sees them (bound at their own paths).
fn build(project: &Project, context: &Path, extra: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "/kaniko/executor".into(),
        "build".into(),
        "--context".into(),
        context.display().to_string(),
        "--cache-dir".into(),
        project.cache().display().to_string(),
    ];
    argv.extend(extra.iter().map(|a| (*a).to_string()));
    argv
}

/// Every layer blob of an OCI layout, decompressed, holds no `needle`.
fn assert_not_in_layout(layout: &Path, needle: &[u8]) {
    for blob in fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let path = blob.unwrap().path();
        let raw = fs::read(&path).unwrap();
        let mut data = Vec::new();
        let mut gz = flate2::read::GzDecoder::new(raw.as_slice());
        if std::io::Read::read_to_end(&mut gz, &mut data).is_err() {
            data = raw;
        }
        assert!(
            !data.windows(needle.len()).any(|w| w == needle),
            "{} holds the secret",
            path.display()
        );
    }
}

#[test]
fn run_builds_in_place_in_a_default_pod() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let image = PodImage::executor();
    let before = image.checksums();
    let project = Project::new(
        &format!(
            "FROM {base} AS build\n\
             RUN mkdir /out && echo built > /out/f\n\
             FROM {base}\n\
             COPY --from=build /out/f /from-build\n\
             COPY a.txt /a.txt\n\
             RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /secret-size\n\
             RUN --mount=type=cache,target=/var/cache/x echo c > /var/cache/x/c && ls /var/cache/x > /cache-listing\n\
             RUN --mount=type=bind,source=a.txt,target=/mnt/a cp /mnt/a /from-bind\n\
             RUN --mount=type=tmpfs,target=/scratch touch /scratch/gone && ls /scratch > /tmpfs-listing\n\
             RUN echo app:x:1000:1000::/home/app:/bin/sh >> /etc/passwd && mkdir -p /home/app && chown app /home/app\n\
             USER app\n\
             WORKDIR /home/app\n\
             RUN id -u > uid && touch mine\n\
             USER root\n\
             RUN rm /bin/vi && echo changed > /etc/motd && ls /kaniko > /kaniko-seen 2>&1 || true\n"
        ),
        &[("a.txt", "from the context\n")],
    );
    // Fails half-way, in the same container, before the build that must
    // come out right.
    let failing = project.path("failing");
    fs::create_dir_all(&failing).unwrap();
    fs::write(
        failing.join("Dockerfile"),
        format!("FROM {base}\nRUN echo junk > /junk && mkdir /junk-dir\nRUN false\n"),
    )
    .unwrap();
    let layout = project.path("layout");
    let pod = Pod {
        image: &image,
        overlay: true,
        volumes: vec![project.dir.path().to_path_buf()],
        env: vec![("TOK".into(), SECRET.into())],
    };
    let insecure = ["--insecure-registry", registry.host.as_str()];
    let mut good = build(
        &project,
        &project.context(),
        &[
            "--no-push",
            "--destination",
            "example.test/in-place:1",
            "--oci-layout-path",
            layout.to_str().unwrap(),
            "--secret",
            "id=tok,env=TOK",
        ],
    );
    good.extend(insecure.iter().map(|a| (*a).to_string()));
    let mut bad = build(&project, &failing, &["--no-push"]);
    bad.extend(insecure.iter().map(|a| (*a).to_string()));
    let run = pod.run(&[bad, good]);
    assert_eq!(run.statuses, [1, 0], "{}", run.stderr);
    assert!(
        run.stderr.contains("RUN steps run in place"),
        "auto did not pick in place:\n{}",
        run.stderr
    );
    let rootfs = unpack_layout(
        &layout,
        "example.test/in-place:1",
        &project.path("unpacked"),
    );
    let read = |p: &str| fs::read_to_string(rootfs.join(p)).unwrap_or_else(|e| panic!("/{p}: {e}"));
    assert_eq!(read("from-build"), "built\n");
    assert_eq!(read("a.txt"), "from the context\n");
    assert_eq!(read("secret-size").trim(), SECRET.len().to_string());
    assert_eq!(read("cache-listing"), "c\n");
    assert_eq!(read("from-bind"), "from the context\n");
    assert_eq!(read("tmpfs-listing"), "gone\n");
    assert_eq!(read("home/app/uid"), "1000\n");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&fs::metadata(rootfs.join("home/app/mine")).unwrap()),
        1000
    );
    assert_eq!(read("etc/motd"), "changed\n");
    assert!(!rootfs.join("bin/vi").exists());
    // Nothing of the failed build, of the executor, or of the emulated
    // mounts, reached the image.
    for absent in [
        "junk",
        "junk-dir",
        "out",
        "run/secrets",
        "var/cache/x",
        "mnt",
        "scratch",
        "kaniko",
    ] {
        assert!(!rootfs.join(absent).exists(), "/{absent} is in the image");
    }
    assert_not_in_layout(&layout, SECRET.as_bytes());
    // The image's own files are as they were: nothing under /kaniko was
    // written in the container (its overlay upper directory has none).
    assert!(
        !run.upper.join("kaniko").exists(),
        "the build wrote into /kaniko"
    );
    assert_eq!(image.checksums(), before);
}

#[test]
fn in_place_is_refused_where_no_container_is_seen() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let image = PodImage::executor();
    let before = image.checksums();
    let project = Project::new(&format!("FROM {base}\nRUN touch /x\n"), &[]);
    // The image bound as it is: no overlay root, no runtime's marks.
    let pod = Pod {
        image: &image,
        overlay: false,
        volumes: vec![project.dir.path().to_path_buf()],
        env: Vec::new(),
    };
    let insecure = ["--insecure-registry", registry.host.as_str()];
    let mut commands = Vec::new();
    for isolation in ["--isolation=in-place", "--isolation=auto"] {
        let mut argv = build(&project, &project.context(), &["--no-push", isolation]);
        argv.extend(insecure.iter().map(|a| (*a).to_string()));
        commands.push(argv);
    }
    let run = pod.run(&commands);
    assert_eq!(run.statuses, [1, 1], "{}", run.stderr);
    assert!(
        run.stderr
            .contains("--isolation=in-place builds in this machine's own root file system"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    // auto falls back to the namespaces' error and its hint.
    assert!(run.stderr.contains("RUN cannot run here"), "{}", run.stderr);
    assert!(run.stderr.contains("CAP_SYS_ADMIN"), "{}", run.stderr);
    // Bound as it is, the image gets the runtime's mount points (empty
    // /etc files, made by the pod); nothing else may change.
    let mount_points = ["etc/hosts", "etc/hostname", "etc/resolv.conf"];
    let after: Vec<_> = image
        .checksums()
        .into_iter()
        .filter(|(path, _)| !mount_points.contains(&path.as_str()))
        .collect();
    assert_eq!(after, before, "the image root was written");
}

/// The image: kaniko's paths, no shell in the default variant, busybox in
/// the debug one, and the same digests when built again from the same
/// commit.
#[test]
fn the_image_has_kanikos_paths_no_shell_and_is_reproducible() {
    let image = PodImage::executor();
    let root = image.path();
    for file in [
        "kaniko/executor",
        "kaniko/lib/ld.so",
        "kaniko/ssl/certs/ca-certificates.crt",
    ] {
        assert!(root.join(file).is_file(), "/{file}");
    }
    for dir in ["kaniko/.docker", "workspace"] {
        assert!(root.join(dir).is_dir(), "/{dir}");
    }
    for shell in ["bin/sh", "busybox", "bin/busybox"] {
        assert!(!root.join(shell).exists(), "/{shell} in the default image");
    }
    let debug = unpack_layout(
        &image.out().join("layout-debug"),
        "docker.io/library/executor:debug",
        &image.out().join("debug"),
    );
    assert!(
        debug.join("busybox/sh").exists(),
        "no /busybox/sh in :debug"
    );
    let again = tempfile::tempdir().unwrap();
    build_image(again.path());
    for variant in ["default", "debug"] {
        let digest =
            |out: &Path| fs::read_to_string(out.join(format!("digest-{variant}"))).unwrap();
        assert_eq!(digest(&image.out()), digest(again.path()), "{variant}");
    }
}
