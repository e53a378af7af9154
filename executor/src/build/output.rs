//! A build's outputs once its target stage is built: the image (config
//! and manifest) in the local store, pushed to each destination, written
//! as a docker archive (`--tar-path`) and an OCI layout
//! (`--oci-layout-path`), and kaniko's digest files. It builds nothing: the
//! stages are done when it runs.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use futures_util::future::try_join_all;
use oci_spec::image::{Descriptor, MediaType};

use super::config::ImageConfig;
use super::engine::{Engine, Outcome, timestamp};
use super::error::{BuildError, Result, io_at};
use super::metrics::Metrics;
use super::settings::Settings;
use crate::image::digest::Digest;
use crate::image::store::Store;
use crate::registry::ImageReference;
use crate::rootfs::images::{self, LayerRef};

impl Engine<'_> {
    /// Assembles the image, stores it and writes every output.
    pub(super) fn finish(&self, mut config: ImageConfig, layers: &[LayerRef]) -> Result<Outcome> {
        for (k, v) in &self.settings.labels {
            config.config.labels.insert(k.clone(), v.clone());
        }
        // The image was made when its last step was: a build whose steps
        // all come from the cache gives the same config, and digest, as the
        // build that filled it.
        config.created = Some(
            config
                .history
                .last()
                .and_then(|h| h.created.clone())
                .unwrap_or_else(|| timestamp(self.settings)),
        );
        // Layers taken from the cache are downloaded only when needed: for
        // the local store's copy when nothing is pushed, and for the files
        // written here.
        let pushed_somewhere = self.settings.push && !self.settings.destinations.is_empty();
        if !pushed_somewhere
            || self.settings.tar_path.is_some()
            || self.settings.oci_layout_path.is_some()
        {
            self.images.ensure_layers(layers, &self.store)?;
        }
        let result = FinalImage { config, layers };
        let config_bytes = result.config.to_json().map_err(BuildError::EncodeConfig)?;
        let config_digest = crate::image::digest::sha256_bytes(&config_bytes);
        let config_descriptor = Descriptor::new(
            MediaType::ImageConfig,
            config_bytes.len() as u64,
            oci_spec::image::Digest::from(&config_digest),
        );
        let layer_descriptors: Vec<Descriptor> = result
            .layers
            .iter()
            .map(|l| images::as_oci_layer(&l.descriptor))
            .collect();
        let manifest = images::manifest_json(&config_descriptor, &layer_descriptors);
        // The config and the manifest are stored at once (each waits for
        // its fsync), before any tag names the manifest.
        let digest = std::thread::scope(|scope| {
            let config = scope.spawn(|| self.store.put_bytes(&config_bytes));
            let manifest = self.store.put_bytes(&manifest);
            let config = config
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            config.and(manifest)
        })?;
        let manifest_descriptor = Descriptor::new(
            MediaType::ImageManifest,
            manifest.len() as u64,
            oci_spec::image::Digest::from(&digest),
        );
        for destination in &self.settings.destinations {
            self.store
                .set_ref(&destination.to_string(), &manifest_descriptor)?;
        }

        let mut pushed = Vec::new();
        if self.settings.push {
            // Tags of one repository share its blobs: those go once.
            let mut repositories: BTreeMap<String, Vec<&ImageReference>> = BTreeMap::new();
            for destination in &self.settings.destinations {
                repositories
                    .entry(destination.name())
                    .or_default()
                    .push(destination);
            }
            let uploads = repositories.values().map(|tags| {
                self.registry.push(
                    tags,
                    &self.store,
                    &manifest,
                    &config_descriptor,
                    result.layers,
                )
            });
            self.runtime.block_on(try_join_all(uploads))?;
            for destination in &self.settings.destinations {
                tracing::info!("pushed {}@{digest} ({destination})", destination.name());
                pushed.push(destination.clone());
            }
        }
        if let Some(path) = &self.settings.tar_path {
            write_docker_archive(
                path,
                &self.store,
                &config_digest,
                &config_bytes,
                result.layers,
                &self.settings.destinations,
            )?;
            tracing::info!("wrote {}", path.display());
        }
        if let Some(dir) = &self.settings.oci_layout_path {
            let mut root = manifest_descriptor.clone();
            if let Some(name) = self.settings.destinations.first() {
                let mut annotations = std::collections::HashMap::new();
                annotations.insert(
                    "org.opencontainers.image.ref.name".to_string(),
                    name.to_string(),
                );
                root.set_annotations(Some(annotations));
            }
            self.store.export_layout(dir, &[root])?;
            tracing::info!("wrote OCI layout {}", dir.display());
        }
        write_digest_files(self.settings, &digest)?;
        Ok(Outcome {
            digest,
            manifest: manifest_descriptor,
            config: result.config,
            pushed,
            metrics: Metrics::default(),
        })
    }
}

/// The target stage's config and layers, as `finish` writes them.
struct FinalImage<'l> {
    config: ImageConfig,
    layers: &'l [LayerRef],
}

/// kaniko's digest files.
fn write_digest_files(settings: &Settings, digest: &Digest) -> Result<()> {
    let write = |path: &Path, text: String| fs::write(path, text).map_err(io_at(path));
    if let Some(path) = &settings.digest_file {
        write(path, digest.to_string())?;
    }
    if let Some(path) = &settings.image_name_with_digest_file {
        let lines: Vec<String> = settings
            .destinations
            .iter()
            .map(|d| format!("{}@{digest}", d.name()))
            .collect();
        write(path, lines.join("\n") + "\n")?;
    }
    if let Some(path) = &settings.image_name_tag_with_digest_file {
        let lines: Vec<String> = settings
            .destinations
            .iter()
            .map(|d| format!("{}:{}@{digest}", d.name(), d.tag().unwrap_or("latest")))
            .collect();
        write(path, lines.join("\n") + "\n")?;
    }
    Ok(())
}

/// Writes the image as a docker-archive tarball (`docker save` format:
/// `manifest.json`, the config, each layer as an uncompressed tar named by
/// its diffID, once however often the image holds it), which `docker load`
/// and `skopeo copy docker-archive:` read.
///
/// Each layer is decompressed once, straight into the archive: its tar
/// header goes in as a placeholder and is written again with the size once
/// the data is in (no temporary copy, memory flat whatever the layer size).
fn write_docker_archive(
    path: &Path,
    store: &Store,
    config_digest: &Digest,
    config: &[u8],
    layers: &[LayerRef],
    tags: &[ImageReference],
) -> Result<()> {
    let io_err = |source| BuildError::Io {
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
        let digest = images::descriptor_digest(&layer.descriptor)?;
        let hex = layer.diff_id.trim_start_matches("sha256:").to_string();
        let name = format!("{hex}/layer.tar");
        // A layer repeated in the image is stored once, listed every time.
        if layer_names.contains(&name) {
            layer_names.push(name);
            continue;
        }
        let blob = store.open_blob(&digest)?;
        let mut reader = crate::image::apply::decompress(io::BufReader::new(blob))?;
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
