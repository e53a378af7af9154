//! The `executor` engine: everything the `executor` binary does, as a
//! library. See `shared/ARCHITECTURE.md` for the module map.

pub mod build;
pub mod context;
pub mod dockerfile;
pub mod image;
pub mod pipeline;
pub mod platform;
pub mod progress;
pub mod registry;
pub mod rootfs;
pub mod sandbox;
