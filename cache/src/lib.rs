//! The storage layer below the executor: the layer cache (its keys and the
//! stores of its entries) and the on-disk primitives the executor's image
//! store and build context share with it.
//!
//! Why here and not in a crate of their own: the cache was already the
//! crate below `executor`, and everything it stores sits on these
//! primitives (its keys hash trees, its entries live in OCI layouts and
//! carry dates). One crate keeps one implementation of each without a
//! fourth crate to version; the executor reaches them as
//! `executor_cache::{oci_layout, time, xattr}` and the tree hash below.
//!
//! The primitives, each the only implementation in the project:
//! - [`oci_layout`]: an OCI image layout on disk (`index.json` under its
//!   lock, blobs written and read back checked against their digests), the
//!   ground of both the cache's [`Layout`] and the executor's image store.
//! - the tree hash ([`TreeHasher`], [`hash_dir`], [`entry_at`],
//!   [`selection_hash`]): what a key sees of files, for a COPY's selection
//!   from the build context as for a downloaded tree.
//! - [`xattr`]: reading a file's xattrs as a layer records them.
//! - [`time`]: RFC 3339 dates of Unix times.
//! - [`reflink`]: copies of files that share no inode with their source.
//!
//! The cache itself owns what a build step's cache key is made of and how
//! those inputs are encoded: a versioned, length-framed encoding chained
//! from the parent step's key, so that no two different inputs share a key
//! and a changed step changes every key after it. It knows nothing of
//! Dockerfile syntax: the build engine resolves an instruction (expanding
//! variables, selecting files, hashing the bind-mounted sources) and hands
//! it a typed [`Step`]. It must never see a secret's value, and never let
//! a time that is not an input of the build (a file's mtime, the clock)
//! into a key.
//!
//! It also owns what an [`Entry`] is (the step's image config and layer, as
//! versioned JSON and as the OCI manifest filing it) and two stores of
//! entries on disk: an OCI image [`Layout`] (`--cache-repo oci:PATH`) and
//! the local store's [`LocalEntries`]. A lookup never fails a build: it is a
//! [`Lookup`], whose `Invalid` the engine logs and treats as a miss. The
//! registry store is the engine's, built on [`Entry::manifest`] and
//! [`parse_manifest`]: this crate does no network I/O.

// A library reports to its caller (errors, events, tracing); only the
// binary prints. Tests may.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

mod entry;
mod key;
mod layout;
mod local;
pub mod oci_layout;
pub mod reflink;
pub mod time;
mod tree;
pub mod xattr;

pub use entry::{
    BlobRef, CacheManifest, ENTRY_MEDIA_TYPE, Entry, EntryError, EntryLayer, Lookup,
    MAX_EMBEDDED_ENTRY, OCI_MANIFEST, check, parse_manifest,
};
pub use key::{
    BaseRef, CopyStep, Key, KeyEncoder, MountSpec, ParseDigestError, RunStep, Step, TreeHash,
    UrlContent, VERSION, key,
};
pub use layout::{Layout, StoreError};
pub use local::LocalEntries;
pub use tree::{
    EntryKind, SelectedTree, TreeEntry, TreeHasher, entry_at, hash_dir, selection_hash,
};
