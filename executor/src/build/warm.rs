//! `executor cache warm`: base images fetched into the local store ahead of
//! builds (kaniko's warmer), so a build on that store downloads none of
//! their layers; in overlay mode their layers are extracted too.

use std::collections::BTreeSet;

use tokio::runtime::Handle;

use super::engine::{plan_dockerfile, remote};
use super::error::BuildError;
use super::settings::Settings;
use crate::dockerfile::plan::Base;
use crate::image::store::Store;
use crate::registry::ImageReference;
use crate::rootfs::extract_layers;

/// One image put in the store.
#[derive(Debug, Clone)]
pub struct Warmed {
    pub reference: ImageReference,
    pub layers: usize,
}

/// The images a Dockerfile's needed stages start from, as its plan (build
/// args, `--target`) resolves them.
pub fn dockerfile_bases(settings: &Settings) -> Result<Vec<String>, BuildError> {
    let name = settings.dockerfile.display().to_string();
    let (plan, _) = plan_dockerfile(&settings.dockerfile, &name, settings)?;
    let mut bases = BTreeSet::new();
    for &index in &plan.needed {
        if let Base::Image(reference) = &plan.stages[index].base {
            bases.insert(reference.clone());
        }
    }
    Ok(bases.into_iter().collect())
}

/// Fetches `images` into the store at `settings.cache_dir` (config and
/// layers, each verified), and extracts their layers for overlay roots.
pub fn warm(
    settings: &Settings,
    images: &[String],
    runtime: &Handle,
) -> Result<Vec<Warmed>, BuildError> {
    let store = Store::open(&settings.cache_dir)?;
    let registry = remote(settings)?;
    let mut warmed = Vec::new();
    for image in images {
        let reference = ImageReference::parse(image).map_err(|source| BuildError::WarmImage {
            image: image.clone(),
            source,
        })?;
        let source = runtime.block_on(registry.fetch(&reference, &settings.platform, &store))?;
        // Overlay roots need root (the build falls back to copies without).
        let extract = rustix::process::geteuid().is_root();
        if extract {
            extract_layers(&store, &source.layers)?;
        }
        tracing::info!("warmed {reference}");
        warmed.push(Warmed {
            reference,
            layers: source.layers.len(),
        });
    }
    Ok(warmed)
}
