//! The server's Prometheus metrics (`/metrics`, the text format): runs by
//! status, queue depth and runs running (read from the store at each
//! scrape, so every replica shows the shared queue), the job duration
//! histogram, webhooks by source and result, lease expiries and runners
//! connected. prometheus-client's typed families; one registry per server.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::store::{Counts, RunStatus};

type Labels = Vec<(&'static str, String)>;

/// The metrics of one server.
pub struct Metrics {
    registry: Registry,
    runs: Family<Labels, Gauge>,
    queue_depth: Gauge,
    running: Gauge,
    job_seconds: Histogram,
    webhooks: Family<Labels, Counter>,
    lease_expiries: Counter,
    runners: Gauge,
    /// Runner lease owners and when each was last heard from.
    seen: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("executor");
        let runs = Family::<Labels, Gauge>::default();
        registry.register("runs", "Runs by status", runs.clone());
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Runs waiting for a runner",
            queue_depth.clone(),
        );
        let running = Gauge::default();
        registry.register("runs_running", "Runs being run", running.clone());
        let job_seconds = Histogram::new(exponential_buckets(0.5, 2.0, 14));
        registry.register(
            "job_duration_seconds",
            "How long jobs ran",
            job_seconds.clone(),
        );
        let webhooks = Family::<Labels, Counter>::default();
        registry.register(
            "webhooks",
            "Webhook deliveries by source and result",
            webhooks.clone(),
        );
        let lease_expiries = Counter::default();
        registry.register(
            "lease_expiries",
            "Runs requeued because their runner's lease expired",
            lease_expiries.clone(),
        );
        let runners = Gauge::default();
        registry.register(
            "runners_connected",
            "Runners heard from within the last lease period",
            runners.clone(),
        );
        Self {
            registry,
            runs,
            queue_depth,
            running,
            job_seconds,
            webhooks,
            lease_expiries,
            runners,
            seen: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    /// A webhook answered: `source` is the forge, `result` what was done
    /// (`queued`, `duplicate`, `ignored`, `unauthorized`, ...).
    pub fn webhook(&self, source: &str, result: &str) {
        self.webhooks
            .get_or_create(&vec![
                ("source", source.to_owned()),
                ("result", result.to_owned()),
            ])
            .inc();
    }

    pub fn job_finished(&self, duration: Duration) {
        self.job_seconds.observe(duration.as_secs_f64());
    }

    pub fn leases_expired(&self, count: u64) {
        self.lease_expiries.inc_by(count);
    }

    /// A runner called in.
    pub fn runner_seen(&self, owner: &str) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(owner.to_owned(), Instant::now());
    }

    /// The runners heard from within `window`, with how long ago, most
    /// recent first (the others are forgotten).
    #[must_use]
    pub fn runners(&self, window: Duration) -> Vec<(String, Duration)> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.retain(|_, at| at.elapsed() <= window);
        let mut runners: Vec<_> = seen
            .iter()
            .map(|(owner, at)| (owner.clone(), at.elapsed()))
            .collect();
        runners.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        runners
    }

    /// The text exposition, with the store's `counts` and the runners
    /// heard from within `window`.
    #[must_use]
    pub fn render(&self, counts: &Counts, window: Duration) -> String {
        for &status in RunStatus::ALL {
            let count = match status {
                RunStatus::Queued => counts.queued,
                RunStatus::Running => counts.running,
                RunStatus::Succeeded => counts.succeeded,
                RunStatus::Failed => counts.failed,
                RunStatus::Canceled => counts.canceled,
            };
            self.runs
                .get_or_create(&vec![("status", status.as_str().to_owned())])
                .set(count);
        }
        self.queue_depth.set(counts.depth());
        self.running.set(counts.running);
        let connected = self.runners(window).len();
        self.runners
            .set(i64::try_from(connected).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_holds_every_family() {
        let metrics = Metrics::default();
        metrics.webhook("github", "queued");
        metrics.job_finished(Duration::from_secs(3));
        metrics.leases_expired(2);
        metrics.runner_seen("local/1");
        let runners = metrics.runners(Duration::from_secs(60));
        assert_eq!(runners.len(), 1);
        assert_eq!(runners[0].0, "local/1");
        assert!(metrics.runners(Duration::ZERO).is_empty(), "forgotten");
        metrics.runner_seen("local/1");
        let text = metrics.render(
            &Counts {
                queued: 4,
                running: 1,
                ..Counts::default()
            },
            Duration::from_secs(60),
        );
        for line in [
            "executor_runs{status=\"queued\"} 4",
            "executor_queue_depth 4",
            "executor_runs_running 1",
            "executor_webhooks_total{source=\"github\",result=\"queued\"} 1",
            "executor_lease_expiries_total 2",
            "executor_runners_connected 1",
            "executor_job_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
