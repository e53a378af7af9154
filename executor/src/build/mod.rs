//! The build engine: stages, instruction executors, cache use, outputs. It
//! drives the Dockerfile plan instruction by instruction; it never parses
//! text itself.

pub mod add;
pub mod cache;
pub mod config;
pub mod copy;
pub mod engine;
pub mod images;
pub mod keys;
pub mod remote;
pub mod rootfs;
pub mod run;
pub mod settings;
pub mod warm;
pub mod workdir;

pub use cache::{CacheRepo, CacheSettings};
pub use engine::{BuildError, Metrics, Outcome, StepMetric, build};
pub use rootfs::SnapshotMode;
pub use run::{Secret, SecretSource, SshAgent};
pub use settings::Settings;
