//! `executor cache`: the local store's base images (`warm`, kaniko's
//! warmer) and its upkeep (`prune`: the least recently used items go).

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
    Warm(Box<WarmArgs>),
    /// Remove what the local store used least recently: blobs, extracted
    /// layers, cache mounts, cache entries (never while a build uses it)
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove the least recently used items until the store holds at most
    /// this much (bytes, or with K, M, G, T: powers of 1024)
    #[arg(long, value_name = "SIZE", value_parser = executor::image::store::prune::parse_size)]
    pub max_size: Option<u64>,

    /// Remove the items not used for this long (30m, 12h, 7d)
    #[arg(long, value_name = "DURATION", value_parser = parse_age)]
    pub older_than: Option<std::time::Duration>,

    /// Say what would be removed; remove nothing
    #[arg(long)]
    pub dry_run: bool,

    /// The local store; the default one (as for `executor build`) when
    /// absent
    #[arg(long, env = "EXECUTOR_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    pipeline_schema::parse_duration(text).map_err(|e| e.to_string())
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
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]", value_parser = super::dockerfile::build_arg)]
    pub args: Vec<String>,

    /// The stage whose bases are fetched; the last one when absent
    #[arg(long)]
    pub target: Option<String>,

    /// The store, platform and registry settings, as for `executor build`
    #[command(flatten)]
    pub pull: PullArgs,
}

pub fn run(args: &CacheArgs) -> anyhow::Result<std::process::ExitCode> {
    // Without root, in the user namespace builds use (`executor build`):
    // the store's files are owned by its ids.
    if let Some(status) = executor::sandbox::reexec_in_user_namespace()? {
        return Ok(status);
    }
    match &args.command {
        CacheCommand::Warm(warm) => run_warm(warm),
        CacheCommand::Prune(prune) => run_prune(prune),
    }
}

fn run_prune(args: &PruneArgs) -> anyhow::Result<std::process::ExitCode> {
    use executor::image::store::prune::{PruneOptions, human_bytes, prune};
    if args.max_size.is_none() && args.older_than.is_none() {
        bail!(
            "nothing to prune by: give --max-size SIZE or --older-than DURATION\nhint: executor cache prune --max-size 20G --cache-dir /cache"
        );
    }
    let root = match &args.cache_dir {
        Some(dir) => dir.clone(),
        None => super::build::default_cache_dir()?,
    };
    let report = prune(
        &root,
        &PruneOptions {
            max_size: args.max_size,
            older_than: args.older_than,
            dry_run: args.dry_run,
        },
    )?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for item in &report.removed {
        println!(
            "{verb} {} {} ({})",
            item.kind,
            item.path.display(),
            human_bytes(item.size)
        );
    }
    for name in &report.dropped_refs {
        println!("{verb} image reference {name} (it reaches a removed blob)");
    }
    println!(
        "{}: {} before, {} after{}",
        root.display(),
        human_bytes(report.size_before),
        human_bytes(report.size_after),
        if args.dry_run { " (dry run)" } else { "" }
    );
    Ok(std::process::ExitCode::SUCCESS)
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
