//! Manifests as registries serve them: OCI image manifests and indexes, and
//! Docker schema 2 manifests and manifest lists (read into the same oci-spec
//! types; their fields are the same), and the choice of an index entry for a
//! platform.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use super::error::{Error, Result};
use crate::platform::Platform;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The manifest types asked for when pulling, best first.
pub const ACCEPTED_MANIFESTS: [&str; 4] = [
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
];

/// A parsed manifest of either kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    Image(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

/// Parses a manifest; `content_type` is the registry's `Content-Type`, used
/// when the body names no `mediaType`. Returns the manifest and its media
/// type.
pub fn parse_manifest(
    reference: &str,
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<(Manifest, String)> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Peek {
        #[serde(default)]
        schema_version: Option<u32>,
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let invalid = |source| Error::InvalidManifest {
        reference: reference.to_string(),
        source,
    };
    let peek: Peek = serde_json::from_slice(bytes).map_err(invalid)?;
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
        .filter(|c| !c.is_empty() && c != "application/json" && c != "text/plain");
    let media_type = peek.media_type.or(header).unwrap_or_else(|| {
        if peek.manifests.is_some() {
            OCI_INDEX.to_string()
        } else {
            OCI_MANIFEST.to_string()
        }
    });
    let unsupported = || Error::UnsupportedManifest {
        reference: reference.to_string(),
        media_type: media_type.clone(),
    };
    if peek.schema_version != Some(2) {
        return Err(unsupported());
    }
    let manifest = match media_type.as_str() {
        OCI_INDEX | DOCKER_MANIFEST_LIST => {
            Manifest::Index(Box::new(serde_json::from_slice(bytes).map_err(invalid)?))
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            Manifest::Image(Box::new(serde_json::from_slice(bytes).map_err(invalid)?))
        }
        _ => return Err(unsupported()),
    };
    Ok((manifest, media_type))
}

/// The platform an index entry declares, normalised as ours are; `None`
/// for entries without one (or with one we cannot read).
#[must_use]
pub fn entry_platform(entry: &Descriptor) -> Option<Platform> {
    let p = entry.platform().as_ref()?;
    let mut text = format!("{}/{}", p.os(), p.architecture());
    if let Some(v) = p.variant().as_deref().filter(|v| !v.is_empty()) {
        text.push('/');
        text.push_str(v);
    }
    text.parse().ok()
}

/// The index entry for `wanted`: same OS and architecture, the same variant
/// first, else an entry without a variant, else (when no variant is asked
/// for) any variant; the first such entry in the index's order.
#[must_use]
pub fn select_platform<'a>(index: &'a ImageIndex, wanted: &Platform) -> Option<&'a Descriptor> {
    let score = |entry: &Descriptor| {
        let p = entry_platform(entry)?;
        if p.os != wanted.os || p.architecture != wanted.architecture {
            return None;
        }
        match (&wanted.variant, &p.variant) {
            (a, b) if a == b => Some(3),
            (_, None) => Some(2),
            (None, Some(_)) => Some(1),
            (Some(_), Some(_)) => None,
        }
    };
    let mut best: Option<(u8, &Descriptor)> = None;
    for entry in index.manifests() {
        if let Some(s) = score(entry)
            && best.is_none_or(|(b, _)| s > b)
        {
            best = Some((s, entry));
        }
    }
    best.map(|(_, d)| d)
}

/// The platforms an index offers, for error messages.
#[must_use]
pub fn available_platforms(index: &ImageIndex) -> String {
    let names: Vec<String> = index
        .manifests()
        .iter()
        .filter_map(entry_platform)
        .map(|p| p.to_string())
        .collect();
    if names.is_empty() {
        "no platforms".to_string()
    } else {
        names.join(", ")
    }
}

/// The blobs a manifest refers to that must be in the repository before it
/// is pushed (foreign layers with `urls` live elsewhere), and, for an index,
/// the manifests it lists.
#[must_use]
pub fn references(manifest: &Manifest) -> (Vec<&Descriptor>, Vec<&Descriptor>) {
    match manifest {
        Manifest::Image(m) => {
            let blobs = std::iter::once(m.config())
                .chain(
                    m.layers()
                        .iter()
                        .filter(|l| l.urls().as_ref().is_none_or(Vec::is_empty)),
                )
                .collect();
            (blobs, Vec::new())
        }
        Manifest::Index(i) => (Vec::new(), i.manifests().iter().collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn index(platforms: &[&str]) -> ImageIndex {
        let manifests: Vec<String> = platforms
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut parts = p.split('/');
                let os = parts.next().unwrap();
                let arch = parts.next().unwrap();
                let variant = parts
                    .next()
                    .map(|v| format!(r#","variant":"{v}""#))
                    .unwrap_or_default();
                format!(
                    r#"{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{i:064x}","size":{i},"platform":{{"os":"{os}","architecture":"{arch}"{variant}}}}}"#
                )
            })
            .collect();
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
            manifests.join(",")
        );
        serde_json::from_str(&json).unwrap()
    }

    fn pick(platforms: &[&str], wanted: &str) -> Option<u64> {
        let idx = index(platforms);
        select_platform(&idx, &wanted.parse().unwrap()).map(Descriptor::size)
    }

    #[test]
    fn platform_choice() {
        let all = [
            "unknown/unknown",
            "linux/amd64",
            "linux/arm/v6",
            "linux/arm/v7",
            "linux/arm64/v8",
            "windows/amd64",
        ];
        assert_eq!(pick(&all, "linux/amd64"), Some(1));
        assert_eq!(pick(&all, "linux/arm/v7"), Some(3));
        assert_eq!(pick(&all, "linux/arm/v6"), Some(2));
        // arm64/v8 is normalised to arm64 on both sides.
        assert_eq!(pick(&all, "linux/arm64"), Some(4));
        assert_eq!(pick(&all, "linux/aarch64"), Some(4));
        assert_eq!(pick(&all, "windows/amd64"), Some(5));
        assert_eq!(pick(&all, "linux/s390x"), None);
        // An entry without a variant serves a request with one.
        assert_eq!(pick(&["linux/arm64"], "linux/arm64/v9"), Some(0));
        // A variant beats no variant when it matches exactly.
        assert_eq!(
            pick(&["linux/arm", "linux/arm/v5"], "linux/arm/v5"),
            Some(1)
        );
        assert_eq!(
            available_platforms(&index(&["linux/amd64", "linux/arm/v7"])),
            "linux/amd64, linux/arm/v7"
        );
    }

    #[test]
    fn parses_oci_and_docker_manifests() {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
                "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,"digest":"{D}"}},
                "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":3,"digest":"{D}"}}]}}"#
        );
        let (m, t) = parse_manifest("r", docker.as_bytes(), None).unwrap();
        assert_eq!(t, DOCKER_MANIFEST);
        let Manifest::Image(m) = &m else {
            panic!("not an image")
        };
        assert_eq!(m.layers().len(), 1);
        // No mediaType in the body: the header decides.
        let oci = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"{D}"}},"layers":[]}}"#
        );
        let (_, t) = parse_manifest(
            "r",
            oci.as_bytes(),
            Some(&format!("{OCI_MANIFEST}; charset=utf-8")),
        )
        .unwrap();
        assert_eq!(t, OCI_MANIFEST);
        let (_, t) = parse_manifest("r", oci.as_bytes(), None).unwrap();
        assert_eq!(t, OCI_MANIFEST);
        let list = r#"{"schemaVersion":2,"manifests":[]}"#;
        let (m, t) = parse_manifest("r", list.as_bytes(), None).unwrap();
        assert_eq!(t, OCI_INDEX);
        assert!(matches!(m, Manifest::Index(_)));
    }

    #[test]
    fn rejects_schema_1_and_garbage() {
        let v1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let e = parse_manifest(
            "host/x:y",
            v1.as_bytes(),
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "host/x:y: unsupported manifest type application/vnd.docker.distribution.manifest.v1+prettyjws"
        );
        let e = parse_manifest("host/x:y", b"not json", None).unwrap_err();
        assert!(matches!(e, Error::InvalidManifest { .. }), "{e}");
    }
}
