//! The `executor` engine: everything the `executor` binary does, as a
//! library. See `ARCHITECTURE.md` at the repository root for the module
//! map and the rules between modules.

// A library reports to its caller (errors, events, tracing); only the
// binary prints. Tests may.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod build;
pub mod context;
pub mod dockerfile;
pub mod error_chain;
pub mod image;
pub mod pipeline;
pub mod platform;
pub mod progress;
pub mod registry;
pub mod rootfs;
pub mod sandbox;
pub mod server;
