//! Why a build failed: one error for the whole engine, each cause kept as
//! its typed source (the binary prints the chain).

use std::io;
use std::path::{Path, PathBuf};

use crate::context;
use crate::rootfs::{self, ImageError};
use crate::sandbox;

/// Why one step failed: the error of the part that failed (copy, RUN,
/// ADD's download ...), or a message when nothing else failed.
pub type StepCause = Box<dyn std::error::Error + Send + Sync>;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile's own diagnostics, each rendered with its file,
    /// line and column (a message, not a cause).
    #[error("{0}")]
    Dockerfile(String),
    /// `--context` or a `--git` option is not valid.
    #[error(transparent)]
    Source(#[from] context::SourceError),
    #[error(transparent)]
    Context(#[from] context::Error),
    /// RUN cannot be isolated here (a restricted pod).
    #[error("{file}:{line}: RUN cannot run here")]
    Isolation {
        file: String,
        line: usize,
        #[source]
        source: sandbox::Unavailable,
    },
    /// `--isolation=in-place` where no container is seen.
    #[error(
        "--isolation=in-place builds in this machine's own root file system, which it would overwrite, and no sign of a container was found\nhint: run the executor in a container (its image), use --isolation=namespace, or pass --force if this root file system is disposable"
    )]
    OutsideContainer,
    #[error("{file}:{line}: {instruction} failed")]
    Step {
        file: String,
        line: usize,
        instruction: String,
        #[source]
        source: StepCause,
    },
    /// `cache warm --image` names no image.
    #[error("invalid --image {image:?}")]
    WarmImage {
        image: String,
        #[source]
        source: crate::registry::ReferenceError,
    },
    #[error(transparent)]
    Store(#[from] crate::image::store::StoreError),
    #[error(transparent)]
    Layer(#[from] crate::image::layer::LayerError),
    #[error(transparent)]
    Apply(#[from] crate::image::apply::ApplyError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Root(Box<rootfs::RootError>),
    #[error(transparent)]
    Diff(#[from] crate::image::diff::DiffError),
    #[error(transparent)]
    Upper(#[from] crate::image::upper::UpperError),
    #[error(transparent)]
    Overlay(#[from] crate::sandbox::overlay::OverlayError),
    /// `--security-opt seccomp=PATH` cannot be used.
    #[error(transparent)]
    Seccomp(#[from] sandbox::SeccompError),
    /// The cache cannot be opened (a lookup or write never fails a build).
    #[error(transparent)]
    Cache(#[from] super::cache::OpenError),
    #[error("cannot encode the image config")]
    EncodeConfig(#[source] serde_json::Error),
    /// SIGINT or SIGTERM: the steps running were killed.
    #[error("the build was interrupted")]
    Interrupted,
    #[error("cannot encode the metrics")]
    Metrics(#[source] serde_json::Error),
    /// A bug (a panic in a stage), reported instead of crashing the build.
    #[error("{0}")]
    Internal(String),
    /// Another stage failed first; this one stopped.
    #[error("the build was stopped")]
    Cancelled,
    #[error("cannot write {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<rootfs::RootError> for BuildError {
    fn from(error: rootfs::RootError) -> Self {
        Self::Root(Box::new(error))
    }
}

pub(super) type Result<T, E = BuildError> = std::result::Result<T, E>;

pub(super) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A step's cause that says where in the step it happened.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("cannot extract {archive}")]
    Extract {
        archive: String,
        #[source]
        source: crate::image::apply::ApplyError,
    },
    #[error("ONBUILD trigger {trigger:?}")]
    Trigger {
        trigger: String,
        #[source]
        source: StepCause,
    },
}
