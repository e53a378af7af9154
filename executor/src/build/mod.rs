//! The build engine: stages, instruction executors, cache use, outputs. It
//! drives the Dockerfile plan instruction by instruction; it never parses
//! text itself.

pub mod config;
pub mod copy;
pub mod settings;

pub use settings::Settings;
