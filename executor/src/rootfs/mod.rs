//! Fetching an image and running something in its root, for both the build
//! engine ([`crate::build`]) and pipeline script jobs
//! ([`crate::pipeline`]): the image config format ([`config`]), an image's
//! layers and where they come from ([`images`]), the registries an image is
//! fetched from and pushed to ([`remote`]), a root filesystem made of
//! an image's layers whose changes become a layer ([`StageRoot`]), and
//! that root read without mounting it ([`RootView`]).
//!
//! It knows nothing of Dockerfiles, build settings or pipelines: it must
//! not import `build` or `pipeline`. It runs no process itself (the
//! sandbox does), and mounts only through `sandbox::overlay`.

pub mod config;
pub mod images;
mod inplace;
mod mount_points;
pub mod remote;
mod root;
mod view;
pub mod walk;

pub use images::{ImageError, ImageSource, LayerRef};
pub use inplace::InPlace;
pub use remote::{BlockingRemote, ImageFetcher, Remote};
pub use root::{Diff, RootError, SnapshotMode, StageRoot, Staged, extract_layers};
pub use view::{Found, RootView};
