//! Pipeline runs: the runner's building blocks, independent of the
//! `pipeline.yaml` types (the `pipeline-schema` crate owns those, and the
//! run's planner drives these): the commit a run works on ([`checkout`]).
//! Nothing here speaks HTTP.

pub mod checkout;

pub use checkout::{Checkout, CheckoutError, GitRef};
