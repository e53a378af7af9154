//! `executor cache`: the local store's base images (`warm`, kaniko's
//! warmer).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

use super::build::BuildArgs;
use executor::platform::Platform;
use executor::registry::Backoff;

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Fetch base images into the local store before builds need them
    Warm(WarmArgs),
}

#[derive(Debug, Args)]
pub struct WarmArgs {
    /// An image to fetch (repeatable)
    #[arg(short = 'i', long = "image", value_name = "REF")]
    pub images: Vec<String>,

    /// Also fetch the images this Dockerfile's stages start from
    #[arg(short = 'f', long, value_name = "PATH")]
    pub dockerfile: Option<PathBuf>,

    /// A build argument for the Dockerfile's FROM lines, KEY=VALUE
    /// (repeatable)
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub args: Vec<String>,

    /// The stage whose bases are fetched; the last one when absent
    #[arg(long)]
    pub target: Option<String>,

    /// The local image store, as for `executor build`
    #[arg(long, env = "EXECUTOR_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// The platform to fetch, OS/ARCH[/VARIANT]; this machine's by default
    #[arg(
        long,
        env = "EXECUTOR_CUSTOM_PLATFORM",
        value_name = "OS/ARCH[/VARIANT]"
    )]
    pub custom_platform: Option<Platform>,

    /// A registry to reach over plain HTTP, HOST[:PORT] (repeatable)
    #[arg(
        long,
        env = "EXECUTOR_INSECURE_REGISTRY",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub insecure_registry: Vec<String>,

    /// Pull from plain-HTTP registries
    #[arg(long, env = "EXECUTOR_INSECURE_PULL")]
    pub insecure_pull: bool,

    /// A registry whose TLS certificate is not verified (repeatable)
    #[arg(
        long,
        env = "EXECUTOR_SKIP_TLS_VERIFY_REGISTRY",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub skip_tls_verify_registry: Vec<String>,

    /// A CA certificate for a registry, HOST=PATH (repeatable)
    #[arg(
        long,
        env = "EXECUTOR_REGISTRY_CERTIFICATE",
        value_delimiter = ',',
        value_name = "HOST=PATH"
    )]
    pub registry_certificate: Vec<String>,

    /// A mirror for docker.io (repeatable; tried in order)
    #[arg(
        long,
        env = "EXECUTOR_REGISTRY_MIRROR",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub registry_mirror: Vec<String>,

    /// Retries of a failed request, with exponential backoff
    #[arg(long, env = "EXECUTOR_IMAGE_DOWNLOAD_RETRY", default_value_t = Backoff::default().retries)]
    pub image_download_retry: u32,
}

pub fn run(args: &CacheArgs) -> anyhow::Result<std::process::ExitCode> {
    match &args.command {
        CacheCommand::Warm(warm) => run_warm(warm),
    }
}

fn run_warm(args: &WarmArgs) -> anyhow::Result<std::process::ExitCode> {
    if args.images.is_empty() && args.dockerfile.is_none() {
        bail!(
            "nothing to warm: give --image REF or --dockerfile PATH\nhint: executor cache warm --image debian:bookworm --cache-dir /cache"
        );
    }
    // The build's settings, for the registry client and the store.
    let build = BuildArgs {
        no_push: true,
        args: args.args.clone(),
        target: args.target.clone(),
        dockerfile: args.dockerfile.clone().unwrap_or_default(),
        cache_dir: args.cache_dir.clone(),
        custom_platform: args.custom_platform.clone(),
        insecure_registry: args.insecure_registry.clone(),
        insecure_pull: args.insecure_pull,
        skip_tls_verify_registry: args.skip_tls_verify_registry.clone(),
        registry_certificate: args.registry_certificate.clone(),
        registry_mirror: args.registry_mirror.clone(),
        image_download_retry: args.image_download_retry,
        ..BuildArgs::default()
    };
    let settings = build.settings()?;
    let mut images = args.images.clone();
    if args.dockerfile.is_some() {
        images.extend(executor::build::warm::dockerfile_bases(&settings)?);
    }
    images.sort();
    images.dedup();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let warmed = executor::build::warm::warm(&settings, &images, runtime.handle())?;
    for image in warmed {
        let unit = if image.layers == 1 { "layer" } else { "layers" };
        println!("{} ({} {unit})", image.reference, image.layers);
    }
    Ok(std::process::ExitCode::SUCCESS)
}
