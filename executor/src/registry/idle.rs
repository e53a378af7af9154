//! The registry's idle timeout (`--registry-timeout`): a request to a
//! registry fails, as a retryable error, once nothing has moved for that
//! long: no answer to a request, no byte of a download, no byte of an
//! upload taken by the connection. A long transfer that keeps moving never
//! times out: the limit is on silence, not on the whole request.
//!
//! Our own reqwest client has reqwest's `read_timeout` (its requests carry
//! no body to speak of). oci-client's is not given one: reqwest's
//! `read_timeout` counts from the start of a request until its answer's
//! headers, so it would cut every upload that takes longer than the limit,
//! however fast it moves. Its calls are watched here instead.
//!
//! An upload is seen to move as the connection takes its pieces; the last
//! bytes handed over (up to the sockets' buffers, a few MB) drain unseen,
//! so the answer must come within the limit after that: on a link so slow
//! that the buffers take longer than the limit to drain, raise it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::error::{Error, Result};

/// When a transfer last moved, shared between the stream that moves the
/// bytes and the watch over the request.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last movement.
    last: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl Activity {
    /// Records that bytes moved now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::SeqCst);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::SeqCst))
    }
}

/// `request`, failing with [`Error::Timeout`] when it has not finished
/// `idle` after it started or after `activity` last moved.
pub(crate) async fn watched<T>(
    idle: Duration,
    activity: &Activity,
    context: &str,
    request: impl Future<Output = Result<T>>,
) -> Result<T> {
    activity.touch();
    // Boxed: an upload's future is large, and callers' futures hold this one.
    let mut request = Box::pin(request);
    loop {
        let deadline = activity.last() + idle;
        tokio::select! {
            out = &mut request => return out,
            () = tokio::time::sleep_until(deadline) => {
                if activity.last() + idle <= Instant::now() {
                    return Err(Error::Timeout { context: context.to_string(), idle });
                }
            }
        }
    }
}

/// `step` (one answer, one chunk of a body), failing with
/// [`Error::Timeout`] when it takes longer than `idle`.
pub(crate) async fn within<T>(
    idle: Duration,
    context: &str,
    step: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(idle, Box::pin(step))
        .await
        .map_err(|_| Error::Timeout {
            context: context.to_string(),
            idle,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silence_times_out_and_movement_does_not() {
        let idle = Duration::from_secs(10);
        let activity = Activity::default();
        let e = watched(
            idle,
            &activity,
            "pulling x",
            std::future::pending::<Result<()>>(),
        )
        .await
        .unwrap_err();
        assert!(e.is_retryable());
        assert_eq!(
            e.to_string(),
            "pulling x: the registry sent or took nothing for 10 s"
        );

        // Forty seconds of a transfer that moves every 5 s: no timeout.
        let activity = Activity::default();
        let moving = async {
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                activity.touch();
            }
            Ok(42)
        };
        assert_eq!(watched(idle, &activity, "x", moving).await.unwrap(), 42);

        let slow = tokio::time::sleep(Duration::from_secs(11));
        let e = within(idle, "getting y", async {
            slow.await;
            Ok(())
        })
        .await
        .unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
    }
}
