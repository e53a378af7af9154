//! Talking to OCI distribution registries: image references with Docker's
//! defaults, credentials from Docker's `config.json` and credential helpers,
//! resolving an image (index to platform manifest, config), streaming blobs
//! in and out of caller-given readers and writers, cross-repository mounts,
//! manifest pushes that never precede their blobs, retries with backoff,
//! an idle timeout on every request, a check of push access before a
//! build, and per-host TLS and plain-HTTP settings.
//!
//! Built on oci-client (see `client.rs` for what our own reqwest calls add
//! and why). This module knows nothing of Dockerfiles or the local image
//! store: bytes come from and go to whatever the caller hands over.

mod auth;
mod backoff;
mod client;
mod error;
mod idle;
mod manifest;
mod pull;
mod push;
mod reference;
mod tls;
mod token;
mod transfer;

pub use auth::{
    AuthError, Credential, DOCKER_HUB_SERVER, KANIKO_DOCKER_CONFIG, Keychain, config_candidates,
    server_key,
};
pub use backoff::Backoff;
pub use client::{
    BlobPush, DEFAULT_TIMEOUT, RegistryClient, RegistryOptions, ResolvedImage, TransferOptions,
};
pub use error::{Error, RegistryAnswer, Result};
pub use manifest::{
    ACCEPTED_MANIFESTS, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Manifest, OCI_INDEX, OCI_MANIFEST,
    parse_manifest, references, select_platform,
};
pub use reference::{DOCKER_HUB, ImageReference, ReferenceError, parse_mirror};
