//! `executor serve` and `executor runner`: pipelines triggered by forge
//! webhooks, queued durably, claimed whole by runners, their statuses sent
//! back. This module holds the server's parts as libraries; the commands
//! wire them together.

pub mod store;
