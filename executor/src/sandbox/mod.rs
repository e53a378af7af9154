//! placeholder

pub mod overlay;
