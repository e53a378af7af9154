//! What the build engine does with images beyond one stage: fetching base
//! images into the local store, pushing the result (blobs first, manifest
//! last), the docker-archive output, and the OCI manifest.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, MediaType};

use super::config::ImageConfig;
use crate::image::digest::Digest;
use crate::image::store::Store;
use crate::registry::ImageReference;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid digest {value:?} in a descriptor")]
    Digest { value: String },
    #[error("image {reference}: {message}")]
    Image { reference: String, message: String },
    #[error(transparent)]
    Registry(#[from] crate::registry::Error),
    #[error(transparent)]
    Store(#[from] crate::image::store::StoreError),
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
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

/// Writes the image as a docker-archive tarball (`docker save` format:
/// `manifest.json`, the config, each layer as an uncompressed tar named by
/// its diffID, once however often the image holds it), which `docker load` and `skopeo copy docker-archive:` read.
///
/// Each layer is decompressed once, straight into the archive: its tar
/// header goes in as a placeholder and is written again with the size once
/// the data is in (no temporary copy, memory flat whatever the layer size).
pub fn write_docker_archive(
    path: &Path,
    store: &Store,
    config_digest: &Digest,
    config: &[u8],
    layers: &[LayerRef],
    tags: &[ImageReference],
) -> Result<()> {
    let io_err = |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let file = fs::File::create(&tmp).map_err(io_err)?;
    let mut out = io::BufWriter::with_capacity(1 << 20, file);
    let config_name = format!("{}.json", config_digest.hex());
    append_bytes(&mut out, &config_name, config).map_err(io_err)?;
    let mut layer_names = Vec::new();
    for layer in layers {
        let digest = descriptor_digest(&layer.descriptor)?;
        let hex = layer.diff_id.trim_start_matches("sha256:").to_string();
        let name = format!("{hex}/layer.tar");
        // A layer repeated in the image is stored once, listed every time.
        if layer_names.contains(&name) {
            layer_names.push(name);
            continue;
        }
        let blob = store.open_blob(&digest)?;
        let mut reader = crate::image::apply::decompress(io::BufReader::new(blob))
            .map_err(|e| io_err(io::Error::other(e)))?;
        append_stream(&mut out, &name, &mut reader).map_err(io_err)?;
        layer_names.push(name);
    }
    let repo_tags: Vec<String> = tags.iter().map(ToString::to_string).collect();
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": repo_tags,
        "Layers": layer_names,
    }]))
    .expect("manifest.json encodes");
    append_bytes(&mut out, "manifest.json", &manifest).map_err(io_err)?;
    // The end of the archive: two zero blocks.
    out.write_all(&[0u8; 2 * TAR_BLOCK]).map_err(io_err)?;
    out.into_inner().map_err(|e| io_err(e.into_error()))?;
    fs::rename(&tmp, path).map_err(io_err)?;
    Ok(())
}

const TAR_BLOCK: usize = 512;

/// The header of a regular file in the docker archive (names are short:
/// a digest and a suffix).
fn archive_header(name: &str, size: u64) -> io::Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    header.set_path(name)?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    Ok(header)
}

fn pad(out: &mut impl Write, size: u64) -> io::Result<()> {
    // The remainder is below 512, so the cast is lossless.
    #[allow(clippy::cast_possible_truncation)]
    let rem = (size % TAR_BLOCK as u64) as usize;
    out.write_all(&[0u8; TAR_BLOCK][..(TAR_BLOCK - rem) % TAR_BLOCK])
}

fn append_bytes(out: &mut impl Write, name: &str, data: &[u8]) -> io::Result<()> {
    out.write_all(archive_header(name, data.len() as u64)?.as_bytes())?;
    out.write_all(data)?;
    pad(out, data.len() as u64)
}

/// Appends a file of unknown size read from `data`: a placeholder header,
/// the data, then the real header over the placeholder.
fn append_stream<W: Write + io::Seek>(
    out: &mut W,
    name: &str,
    data: &mut impl Read,
) -> io::Result<()> {
    let start = out.stream_position()?;
    out.write_all(archive_header(name, 0)?.as_bytes())?;
    let size = io::copy(data, out)?;
    pad(out, size)?;
    let end = out.stream_position()?;
    out.seek(io::SeekFrom::Start(start))?;
    out.write_all(archive_header(name, size)?.as_bytes())?;
    out.seek(io::SeekFrom::Start(end))?;
    Ok(())
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
