//! Images on this machine: the OCI config, manifest and index types
//! (`oci-spec`'s, re-exported here), the local content store (an OCI image
//! layout under `--cache-dir`), writing layers (deterministic tar, gzip or
//! zstd, streamed and hashed in one pass) and applying them to a root
//! filesystem (whiteouts, confined to the root). This module reads and
//! writes files only: it must not run processes, and knows nothing of
//! Dockerfiles or registries.

pub mod apply;
pub mod diff;
pub mod digest;
pub mod layer;
pub mod store;
pub mod upper;

pub use digest::{
    Algorithm, Digest, DigestError, Hasher, HashingReader, HashingWriter, sha256_bytes,
};
pub use layer::{
    Compression, EntryKind, LayerEntry, LayerError, LayerInfo, WriteOptions, default_threads,
    layer_from_dir, layer_from_overlay_upper, write_layer,
};
pub use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
pub use store::{BlobWriter, Store, StoreError};
