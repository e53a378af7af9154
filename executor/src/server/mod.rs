//! `executor serve` and `executor runner`: pipelines triggered by forge
//! webhooks, queued durably, claimed whole by runners, their statuses sent
//! back. This module holds the server's parts as libraries: turning a
//! forge's webhook delivery into a typed trigger ([`webhook`]), the durable
//! queue and run history on SQLite or PostgreSQL ([`store`]) and commit
//! statuses sent back to the forge ([`forge`]). The commands wire them
//! together; none of these parts runs a pipeline itself.

pub mod config;
pub mod forge;
pub mod store;
pub mod webhook;
