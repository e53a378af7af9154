//! The Dockerfile frontend: BuildKit's Dockerfile language, parsed, typed,
//! expanded and planned into stages, plus `.dockerignore`. It reads no file
//! but the ones it is handed and never touches images or the network.
//!
//! Layers, each usable on its own: [`parser`] (text to raw nodes, BuildKit's
//! AST dump), [`instructions`] (typed instructions and their flags),
//! [`shell`] (BuildKit's word expansion), [`plan`] (stages, ARG/ENV scoping,
//! targets), [`lint`] (BuildKit-named checks) and [`check`] (all of it, as
//! `executor dockerfile check` reports it).

pub mod check;
pub mod dockerignore;
pub mod error;
pub mod gopath;
pub mod instructions;
pub mod lint;
pub mod parser;
pub mod plan;
pub mod shell;
pub mod suggest;

pub use error::{Error, Errors, Position};
