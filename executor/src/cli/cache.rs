//! `executor cache`: the local store's base images (`warm`, kaniko's
//! warmer).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

use super::build::{BuildArgs, PullArgs};

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

    /// The store, platform and registry settings, as for `executor build`
    #[command(flatten)]
    pub pull: PullArgs,
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
        pull: args.pull.clone(),
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
