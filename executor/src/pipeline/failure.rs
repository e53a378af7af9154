//! Why one attempt of a job failed, typed: what `retry: when` tells apart
//! ([`JobFailure::kind`]), and, through [`crate::error_chain::one_line`],
//! the reason the job's log and the run's summary show.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pipeline_schema::RetryWhen;

use super::artifacts::ArtifactError;
use super::build_job::{PathError, SettingsError};
use super::script::ScriptError;
use crate::image::diff::DiffError;
use crate::image::digest::DigestError;
use crate::sandbox::Status;

/// A job's secret that this machine cannot give.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {name}: the environment variable {var} is not set on this machine")]
    Unset { name: String, var: String },
    #[error("secret {name}: {var} is not one of the secrets this run is given")]
    NotGiven { name: String, var: String },
    #[error(
        "secret {name}: file secrets are not read for this run (a server run's secrets come from its configuration)"
    )]
    NoFiles { name: String },
    #[error("secret {name}: cannot read {}", path.display())]
    Read {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A build job's `executor build` that could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot find the executor binary")]
    Executable(#[source] io::Error),
    #[error("cannot start {}", exe.display())]
    Start {
        exe: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot wait for the build")]
    Wait(#[source] io::Error),
}

/// How one attempt of a job failed.
#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    #[error("canceled")]
    Canceled,
    /// Shared by every attempt: the secrets are read once per job.
    #[error(transparent)]
    Secret(Arc<SecretError>),
    #[error("cannot create {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot clean {}", path.display())]
    Clean {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot copy the checkout")]
    CopyCheckout(#[source] DiffError),
    #[error("cannot restore artifacts")]
    RestoreArtifacts(#[source] ArtifactError),
    #[error("cannot keep artifacts")]
    KeepArtifacts(#[source] ArtifactError),
    #[error("no image: give the job an `image`, or set `defaults.image`")]
    NoImage,
    #[error("the image of job {0} is not there: it did not succeed")]
    NoJobImage(String),
    #[error(transparent)]
    Script(#[from] ScriptError),
    #[error("the script {0}")]
    ScriptFailed(Status),
    #[error("timed out after {}", pipeline_schema::format_duration(*.0))]
    TimedOut(Duration),
    #[error(transparent)]
    BuildPath(#[from] PathError),
    #[error(transparent)]
    BuildSettings(#[from] SettingsError),
    #[error("cannot write {}", path.display())]
    WriteSettings {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Child(#[from] ChildError),
    #[error("the build exited with status {0}")]
    BuildExited(i32),
    #[error("the build wrote no digest in {}", path.display())]
    NoDigest {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the build wrote an invalid digest in {}", path.display())]
    BadDigest {
        path: PathBuf,
        #[source]
        source: DigestError,
    },
}

impl JobFailure {
    /// The kind of failure `retry: when` names.
    #[must_use]
    pub fn kind(&self) -> RetryWhen {
        match self {
            Self::ScriptFailed(_) | Self::BuildExited(_) => RetryWhen::ScriptFailure,
            Self::TimedOut(_) => RetryWhen::Timeout,
            _ => RetryWhen::SystemFailure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_chain::one_line;

    #[test]
    fn a_failure_reads_as_one_line_each_cause_once_and_retries_by_its_kind() {
        let secret = JobFailure::Secret(Arc::new(SecretError::Read {
            name: "KEY".into(),
            path: PathBuf::from("/keys/deploy"),
            source: io::Error::from(io::ErrorKind::NotFound),
        }));
        assert_eq!(
            one_line(&secret),
            "secret KEY: cannot read /keys/deploy: entity not found"
        );
        assert_eq!(secret.kind(), RetryWhen::SystemFailure);
        let child = JobFailure::from(ChildError::Start {
            exe: PathBuf::from("/bin/executor"),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        });
        assert_eq!(
            one_line(&child),
            "cannot start /bin/executor: permission denied"
        );
        let failed = JobFailure::ScriptFailed(Status::Exited(3));
        assert_eq!(failed.kind(), RetryWhen::ScriptFailure);
        assert_eq!(JobFailure::BuildExited(1).kind(), RetryWhen::ScriptFailure);
        let timeout = JobFailure::TimedOut(Duration::from_secs(90));
        assert_eq!(timeout.kind(), RetryWhen::Timeout);
        assert_eq!(one_line(&timeout), "timed out after 1m30s");
    }
}
