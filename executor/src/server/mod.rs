//! `executor serve` and `executor runner`: pipelines triggered by forge
//! webhooks, queued durably, claimed whole by runners, their statuses sent
//! back. This module holds the server's parts as libraries: turning a
//! forge's webhook delivery into a typed trigger ([`webhook`]), the durable
//! queue and run history on SQLite or PostgreSQL ([`store`]) and commit
//! statuses sent back to the forge ([`forge`]); the configuration
//! ([`config`]), the logic between them ([`service`]), the HTTP side
//! ([`http`]), metrics ([`metrics`]) and the runners that execute runs
//! with the pipeline library ([`runner`]). The commands (`cli/serve.rs`,
//! `cli/runner.rs`) wire them together.

pub mod config;
pub mod forge;
pub mod http;
pub mod metrics;
pub mod runner;
pub mod service;
pub mod store;
pub mod webhook;
