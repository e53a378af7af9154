//! One layer at several positions of one image (issue 19): steps whose
//! changes are byte-identical give the same diffID, and an image may hold a
//! diffID any number of times. The differential test's `repeated_layers`
//! compares such images' files with buildah's; this checks what else meets
//! the repeated layer: the push (the blob is uploaded once, the manifest
//! lists it twice), the docker archive of `--tar-path` (stored once, listed
//! twice, readable by skopeo), the registry cache (a rebuild on an empty
//! store takes every step from it and gives the same digest) and
//! `--snapshot-mode=full` (the same files).

use std::fs;
use std::path::Path;

use executor_e2e::{
    Metrics, Project, Registry, RegistryKind, ok, raw_manifest, tree, unpack, unpack_docker_archive,
};

/// `COPY f /f` twice, with a RUN between that deletes it and writes what
/// the second copy must leave alone; then the same RUN twice after a
/// VOLUME, the second a second later (with file times clamped, both write
/// the same bytes).
fn dockerfile(base: &str) -> String {
    format!(
        "FROM {base}\n\
         COPY f /f\n\
         RUN rm /f && echo between > /g\n\
         COPY f /f\n\
         VOLUME /data\n\
         RUN mkdir -p /same && dd if=/dev/zero of=/same/file bs=1k count=4 2>/dev/null\n\
         RUN sleep 1 && mkdir -p /same && dd if=/dev/zero of=/same/file bs=1k count=4 2>/dev/null\n"
    )
}

/// The diffIDs of a docker archive's image, and its entries' names.
fn archive(path: &Path) -> (Vec<String>, Vec<String>) {
    let mut names = Vec::new();
    let mut manifest = None;
    let mut tar = tar::Archive::new(fs::File::open(path).expect("the archive"));
    for entry in tar.entries().expect("a tar") {
        let mut entry = entry.expect("an archive entry");
        let name = entry.path().expect("a name").display().to_string();
        if name == "manifest.json" {
            manifest = Some(serde_json::from_reader::<_, serde_json::Value>(&mut entry).unwrap());
        }
        names.push(name);
    }
    let manifest = manifest.expect("the archive has a manifest.json");
    let layers = manifest[0]["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .map(|l| l.as_str().expect("a layer name").to_owned())
        .collect();
    (layers, names)
}

#[test]
fn a_repeated_layer_is_pushed_archived_and_cached() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let project = Project::new(&dockerfile(&base), &[("f", "copied twice\n")]);
    let cache = registry.reference("app/cache");
    let build = |n: usize, extra: &[&str]| {
        let destination = registry.reference(&format!("app:{n}"));
        let metrics = project.arg(&format!("metrics-{n}.json"));
        let store = project.path(&format!("store-{n}"));
        let tar = project.arg(&format!("image-{n}.tar"));
        // File times clamped to 0: the two RUNs (a second apart) write
        // the same bytes.
        let mut args = vec![
            "--build-arg",
            "SOURCE_DATE_EPOCH=0",
            "-d",
            &destination,
            "--insecure-registry",
            &registry.host,
            "--metrics-file",
            &metrics,
            "--tar-path",
            &tar,
        ];
        args.extend_from_slice(extra);
        ok(&mut project.build_in(&store, &args));
        (destination, Metrics::read(Path::new(&metrics)))
    };

    let mark = registry.mark();
    let (first, metrics) = build(0, &["--cache", "--cache-repo", &cache]);
    assert_eq!(metrics.steps_executed(), 6, "{:#}", metrics.json);

    // The manifest lists each repeated blob twice; each was uploaded (or
    // mounted from the cache repository) once.
    let manifest = raw_manifest(&registry, &first);
    let layers: Vec<&str> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("a digest"))
        .collect();
    assert_eq!(layers.len(), 6, "{manifest:#}");
    assert_eq!(layers[1], layers[3], "the two COPY layers: {layers:?}");
    assert_eq!(layers[4], layers[5], "the two RUN layers: {layers:?}");
    for digest in [layers[1], layers[4]] {
        let uploads = registry
            .writes_to_since("app", mark)
            .into_iter()
            .filter(|r| r.path.contains(&digest.replace(':', "%3A")))
            .collect::<Vec<_>>();
        assert_eq!(uploads.len(), 1, "uploads of {digest} to app: {uploads:?}");
    }

    // The archive holds each layer once and lists it as often as the image.
    let (listed, names) = archive(&project.path("image-0.tar"));
    assert_eq!(listed.len(), 6, "{listed:?}");
    assert_eq!(listed[1], listed[3]);
    assert_eq!(listed[4], listed[5]);
    for layer in [&listed[1], &listed[4]] {
        assert_eq!(
            names.iter().filter(|n| *n == layer).count(),
            1,
            "{layer} in {names:?}"
        );
    }
    let pushed = tree(&unpack(&registry, &first, &project.path("pushed")));
    let archived = tree(&unpack_docker_archive(
        &project.path("image-0.tar"),
        &project.path("archived"),
    ));
    assert_eq!(pushed, archived);
    assert!(pushed.contains_key("f") && pushed.contains_key("g"));
    assert!(pushed.contains_key("same/file"));

    // A rebuild on an empty store: every step from the cache, same image.
    let (_, again) = build(1, &["--cache", "--cache-repo", &cache]);
    assert_eq!(again.steps_executed(), 0, "{:#}", again.json);
    assert_eq!(again.digest(), metrics.digest());

    // Without overlay mounts: the same files.
    let (full, _) = build(2, &["--snapshot-mode=full"]);
    assert_eq!(
        tree(&unpack(&registry, &full, &project.path("full"))),
        pushed
    );
}
