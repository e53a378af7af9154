//! Exporting images from the store as an OCI image layout of their own
//! (`--oci-layout-path`): every blob an image reaches, through manifests
//! and indexes (OCI and Docker schema 2), written with the shared
//! [`OciLayout`]'s checked blob writes and its locked `index.json`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::PoisonError;

use executor_cache::oci_layout::{Index, LayoutError, OciLayout};
use oci_spec::image::{Descriptor, MediaType};
use serde::Deserialize;

use super::{Result, Store, StoreError, ref_name};
use crate::image::digest::Digest;

const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MEDIA_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

impl Store {
    /// Writes an OCI image layout at `dir` (for `--oci-layout-path`) holding
    /// `roots` in its `index.json` and every blob they reach: the manifests
    /// and indexes (OCI and Docker schema 2), their configs and layers.
    /// A blob this process wrote or hashed whole (see
    /// [`Store::written_here`], [`Store::has_sound_blob`]) is hard-linked
    /// where the layout is on the store's file system: a layer of hundreds
    /// of megabytes is not written twice (an OCI layout's blobs are never
    /// edited in place: tools write new files; one damaged in place would
    /// be the store's too, and the store's digest checks catch it when it
    /// is next used). Other blobs are cloned (reflinks) where the file
    /// system can and copied otherwise, checked against their digests and
    /// sizes either way (a corrupt one is removed from the store and
    /// reported). An
    /// existing layout at `dir` is kept: a root replaces an entry with the
    /// same ref name (or, unnamed, the same digest). Layers missing from
    /// the store are an error, except non-distributable ones that carry
    /// `urls`.
    pub fn export_layout(&self, dir: &Path, roots: &[Descriptor]) -> Result<()> {
        let mut blobs = BTreeMap::new();
        for root in roots {
            self.collect_blobs(root, &mut blobs)?;
        }
        let out = OciLayout::open(dir)?;
        for (digest, size) in &blobs {
            self.export_blob(&out, digest, *size)?;
        }
        out.update_index(|index: &mut Index<Descriptor>| {
            for root in roots {
                let name = ref_name(root);
                let same = |d: &Descriptor| match name {
                    Some(name) => ref_name(d) == Some(name),
                    None => ref_name(d).is_none() && d.digest() == root.digest(),
                };
                match index.manifests.iter().position(same) {
                    Some(i) => index.manifests[i] = root.clone(),
                    None => index.manifests.push(root.clone()),
                }
            }
        })?;
        Ok(())
    }

    /// Adds `descriptor`'s blob (with the size it gives) and, for manifests
    /// and indexes, everything they reference to `out`.
    fn collect_blobs(
        &self,
        descriptor: &Descriptor,
        out: &mut BTreeMap<Digest, u64>,
    ) -> Result<()> {
        let digest =
            Digest::try_from(descriptor.digest()).map_err(|source| StoreError::Digest {
                context: format!("a {} descriptor", descriptor.media_type()),
                source,
            })?;
        if out.contains_key(&digest) {
            return Ok(());
        }
        if !self.has_blob(&digest) && descriptor.urls().as_ref().is_some_and(|u| !u.is_empty()) {
            // A foreign layer: registries serve it from its URLs, not from us.
            return Ok(());
        }
        let media_type = descriptor.media_type();
        let is_tree = matches!(media_type, MediaType::ImageManifest | MediaType::ImageIndex)
            || matches!(media_type, MediaType::Other(m)
                if m == MEDIA_DOCKER_MANIFEST || m == MEDIA_DOCKER_MANIFEST_LIST);
        if is_tree {
            let data = self.read_blob(&digest)?;
            let children: Children =
                serde_json::from_slice(&data).map_err(|source| StoreError::Manifest {
                    digest: digest.clone(),
                    source,
                })?;
            out.insert(digest, descriptor.size());
            for child in children
                .manifests
                .iter()
                .chain(&children.config)
                .chain(&children.layers)
            {
                self.collect_blobs(child, out)?;
            }
        } else if self.has_blob(&digest) {
            out.insert(digest, descriptor.size());
        } else {
            return Err(LayoutError::BlobNotFound {
                digest: digest.to_string(),
                dir: self.root().to_owned(),
            }
            .into());
        }
        Ok(())
    }

    /// Records that this process wrote the blob `digest` and checked it as
    /// it did (a layer it made): [`Store::export_layout`] may then link it
    /// without hashing it again.
    pub fn written_here(&self, digest: &Digest) {
        self.sound
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(digest.clone());
    }

    /// Puts the blob `digest` of `size` bytes into `out`. A blob that does
    /// not match is checked again here: if it is corrupt, it is removed
    /// from the store and reported as such.
    fn export_blob(&self, out: &OciLayout, digest: &Digest, size: u64) -> Result<()> {
        if self.link_blob(out, digest, size) {
            return Ok(());
        }
        let name = digest.to_string();
        match out.put_blob_file(&self.blob_path(digest), &name, size) {
            Err(err @ (LayoutError::SourceDigest { .. } | LayoutError::SourceSize { .. })) => {
                self.verify_blob(digest)?;
                Err(err.into())
            }
            other => Ok(other?),
        }
    }
}

impl Store {
    /// Hard-links the blob `digest` into `out` when this process knows it
    /// sound (written or hashed here) with `size` bytes and both are on one
    /// file system; false when it did not (the caller copies).
    fn link_blob(&self, out: &OciLayout, digest: &Digest, size: u64) -> bool {
        let known = self
            .sound
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(digest);
        let src = self.blob_path(digest);
        if !known || !fs::metadata(&src).is_ok_and(|m| m.is_file() && m.len() == size) {
            return false;
        }
        let dst = out.blob_path(&digest.to_string());
        let Some(dir) = dst.parent() else {
            return false;
        };
        if executor_cache::oci_layout::create_dir(dir).is_err() {
            return false;
        }
        // Linked under a temporary name, renamed into place: a blob that
        // is there already (of another size) is replaced whole.
        let linked = tempfile::Builder::new()
            .prefix(&format!(".{}.link", digest.hex()))
            .make_in(dir, |tmp| fs::hard_link(&src, tmp));
        match linked {
            Ok(tmp) => tmp.persist(&dst).is_ok(),
            Err(e) => {
                tracing::debug!(blob = %digest, error = %e, "cannot hard-link the blob into the layout: copying it");
                false
            }
        }
    }
}

/// The descriptors a manifest or index references.
#[derive(Deserialize)]
struct Children {
    #[serde(default)]
    manifests: Vec<Descriptor>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}
