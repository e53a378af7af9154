//! The build engine: stages, instruction executors, cache use, outputs. It
//! drives the Dockerfile plan instruction by instruction; it never parses
//! text itself. Where to look: `engine.rs` (the entry point, stage
//! scheduling), `stage.rs` (one stage's steps, cache hits and misses),
//! `step.rs` (RUN, WORKDIR, layers), `copy_step.rs` with `copy.rs` and
//! `add.rs` (COPY and ADD), `keys.rs` (cache keys), `cache.rs` (the layer
//! cache), `output.rs` (push, archives, digest files), `metrics.rs`.
//! Fetching images and their root filesystems is [`crate::rootfs`]'s.

pub mod add;
pub mod cache;
pub mod config;
pub mod copy;
mod copy_step;
pub mod engine;
mod error;
mod isolation;
pub mod keys;
mod metrics;
mod output;
pub mod run;
pub mod settings;
mod stage;
mod step;
pub mod warm;
pub mod workdir;

pub use crate::rootfs::SnapshotMode;
pub use cache::{CacheRepo, CacheSettings};
pub use engine::{Outcome, build};
pub use error::BuildError;
pub use metrics::{Metrics, StepMetric};
pub use run::{Secret, SecretSource, SshAgent};
pub use settings::{IsolationMode, SeccompOption, SecurityOptions, Settings, SourceDateEpochError};
