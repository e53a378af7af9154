//! An image's parts as the local store and registries know them: its
//! layers and where each came from, a fetched image (config, layers,
//! manifest digest), and the OCI manifest written for a built one.

use oci_spec::image::{Descriptor, MediaType};

use super::config::ImageConfig;
use crate::image::digest::Digest;
use crate::registry::ImageReference;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid digest {value:?} in a descriptor")]
    Digest { value: String },
    #[error("image {reference}: {message}")]
    Image { reference: String, message: String },
    #[error("image {reference}: the image config {digest} is not valid")]
    Config {
        reference: String,
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Registry(#[from] crate::registry::Error),
    #[error(transparent)]
    Store(#[from] crate::image::store::StoreError),
}

type Result<T, E = ImageError> = std::result::Result<T, E>;

/// A layer of an image being built: where its blob is, and where it came
/// from (for cross-repository mounts).
#[derive(Debug, Clone)]
pub struct LayerRef {
    pub descriptor: Descriptor,
    /// `sha256:...` of the uncompressed tar.
    pub diff_id: String,
    /// The repository the blob was pulled from, if any (pushes mount it
    /// from there).
    pub source: Option<ImageReference>,
}

/// A base image in the local store.
#[derive(Debug, Clone)]
pub struct ImageSource {
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
    /// The digest of its platform-specific manifest (`sha256:...`).
    pub digest: String,
}

/// Our digest type from a descriptor's.
pub fn descriptor_digest(descriptor: &Descriptor) -> Result<Digest> {
    let value = descriptor.digest().to_string();
    value.parse().map_err(|_| ImageError::Digest { value })
}

/// A layer descriptor with Docker's media types mapped to the OCI ones (the
/// bytes are the same), as BuildKit does when it writes an OCI manifest.
#[must_use]
pub fn as_oci_layer(descriptor: &Descriptor) -> Descriptor {
    let media_type = match descriptor.media_type() {
        MediaType::Other(t) if t == "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            MediaType::ImageLayerGzip
        }
        MediaType::Other(t) if t == "application/vnd.docker.image.rootfs.diff.tar.zstd" => {
            MediaType::ImageLayerZstd
        }
        MediaType::Other(t) if t == "application/vnd.docker.image.rootfs.diff.tar" => {
            MediaType::ImageLayer
        }
        other => other.clone(),
    };
    Descriptor::new(media_type, descriptor.size(), descriptor.digest().clone())
}

/// The OCI image manifest's bytes.
#[must_use]
pub fn manifest_json(config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    let descriptor = |d: &Descriptor| {
        serde_json::json!({
            "mediaType": d.media_type().to_string(),
            "digest": d.digest().to_string(),
            "size": d.size(),
        })
    };
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor(config),
        "layers": layers.iter().map(descriptor).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&manifest).expect("a manifest encodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_media_types_become_oci() {
        let digest: oci_spec::image::Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let d = Descriptor::new(
            MediaType::Other("application/vnd.docker.image.rootfs.diff.tar.gzip".into()),
            3,
            digest,
        );
        assert_eq!(as_oci_layer(&d).media_type(), &MediaType::ImageLayerGzip);
    }
}
