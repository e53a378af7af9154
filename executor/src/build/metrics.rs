//! What a build did, for its summary line and `--metrics-file`: each step
//! (executed or taken from the cache, how long, whether it wrote a layer)
//! and the build's totals. Collected by the engine as steps end; it decides
//! nothing about the build.

use std::path::Path;
use std::time::Duration;

use super::error::{BuildError, Result, io_at};
use crate::image::digest::Digest;
use crate::image::store::prune::human_bytes;

/// One step as the build's summary and `--metrics-file` report it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepMetric {
    /// The stage's index in the Dockerfile.
    pub stage: usize,
    /// The step's number in its stage (FROM is 1).
    pub step: usize,
    pub instruction: String,
    pub seconds: f64,
    /// Whether the step wrote a layer.
    pub layer: bool,
    /// Taken from the cache instead of executed.
    pub cached: bool,
}

/// What a build did, for its summary line and `--metrics-file`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Metrics {
    pub digest: String,
    pub seconds: f64,
    pub steps_executed: usize,
    pub steps_cached: usize,
    /// Blob bytes received from registries (base images, ADD excluded).
    pub bytes_downloaded: u64,
    /// Blob bytes sent to registries.
    pub bytes_uploaded: u64,
    pub steps: Vec<StepMetric>,
}

impl Metrics {
    /// The totals of a build of `digest` that took `elapsed`, from its
    /// `steps` (in any order) and the registry bytes `(downloaded,
    /// uploaded)`.
    #[must_use]
    pub fn new(
        digest: &Digest,
        elapsed: Duration,
        mut steps: Vec<StepMetric>,
        (bytes_downloaded, bytes_uploaded): (u64, u64),
    ) -> Self {
        steps.sort_by_key(|s| (s.stage, s.step));
        Self {
            digest: digest.to_string(),
            seconds: elapsed.as_secs_f64(),
            steps_executed: steps.iter().filter(|s| !s.cached).count(),
            steps_cached: steps.iter().filter(|s| s.cached).count(),
            bytes_downloaded,
            bytes_uploaded,
            steps,
        }
    }

    /// Logs the summary line, and writes the metrics as JSON to `file`
    /// when given.
    pub(super) fn report(&self, file: Option<&Path>) -> Result<()> {
        tracing::info!(
            "built {} in {:.1}s: {} steps executed, {} cached; {} downloaded, {} uploaded",
            self.digest,
            self.seconds,
            self.steps_executed,
            self.steps_cached,
            human_bytes(self.bytes_downloaded),
            human_bytes(self.bytes_uploaded),
        );
        if let Some(path) = file {
            let json = serde_json::to_vec_pretty(self).map_err(BuildError::Metrics)?;
            std::fs::write(path, json).map_err(io_at(path))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_as_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }
}
