//! Fuzzes what is read of a registry's and the store's JSON: the input is
//! a manifest, an index or an image config, parsed as a pull parses it
//! (`registry::parse_manifest`, with each `Content-Type` a registry may
//! send), a platform chosen from an index, a manifest's blobs listed and
//! its layers turned into OCI descriptors, an image config read as a base
//! image's and changed as a build changes it, and the cache's manifest
//! parser. Nothing may panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

use executor::platform::Platform;
use executor::registry::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Manifest, OCI_INDEX, OCI_MANIFEST, parse_manifest,
    references, select_platform,
};
use executor::rootfs::config::ImageConfig;
use executor::rootfs::images::{as_oci_layer, descriptor_digest, manifest_json};

fuzz_target!(|data: &[u8]| {
    let platforms = ["linux/amd64", "linux/arm64/v8", "windows/amd64"]
        .map(|p| p.parse::<Platform>().expect("platform"));
    for content_type in [
        None,
        Some(OCI_MANIFEST),
        Some(OCI_INDEX),
        Some(DOCKER_MANIFEST),
        Some(DOCKER_MANIFEST_LIST),
        Some("application/json; charset=utf-8"),
    ] {
        let Ok((manifest, _media_type)) =
            parse_manifest("registry.test/fuzz:1", data, content_type)
        else {
            continue;
        };
        let (blobs, manifests) = references(&manifest);
        for descriptor in blobs.iter().chain(&manifests) {
            let _ = descriptor_digest(descriptor);
        }
        match &manifest {
            Manifest::Index(index) => {
                for platform in &platforms {
                    if let Some(entry) = select_platform(index, platform) {
                        let _ = descriptor_digest(entry);
                    }
                }
            }
            Manifest::Image(image) => {
                let layers: Vec<_> = image.layers().iter().map(as_oci_layer).collect();
                let _ = manifest_json(image.config(), &layers);
            }
        }
    }

    if let Ok(mut config) = ImageConfig::from_json(data) {
        let _ = config.env_pairs();
        let _ = config.shell();
        let _ = config.env_var("PATH");
        config.set_env("PATH", "/fuzz:$PATH");
        config.add_history("RUN fuzz".to_string(), true, None);
        config.add_layer(
            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "COPY . .".to_string(),
            Some("2020-01-01T00:00:00Z"),
        );
        let _ = config.to_json();
    }

    let _ = executor_cache::parse_manifest(data);
});
