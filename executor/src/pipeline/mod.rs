//! Pipeline runs: the runner's building blocks, independent of the
//! `pipeline.yaml` types (the `pipeline-schema` crate owns those, and the
//! run's planner drives these): the commit a run works on ([`checkout`]),
//! GitLab's predefined variables and `$VAR` expansion ([`vars`]). Nothing
//! here speaks HTTP.

pub mod checkout;
pub mod vars;

pub use checkout::{Checkout, CheckoutError, GitRef};
pub use vars::{PipelineSource, Predefined, Variables, expand, expand_all};
