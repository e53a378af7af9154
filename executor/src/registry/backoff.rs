//! The retry policy: how many times a registry request is tried again
//! (`--push-retry`, `--image-download-retry`) and how long to wait before
//! each try, doubling from `initial` up to `max`. Which failures are worth a
//! retry is [`super::Error::is_retryable`]'s call.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Tries after the first one.
    pub retries: u32,
    /// The wait before the first retry.
    pub initial: Duration,
    /// No wait is longer than this.
    pub max: Duration,
}

impl Backoff {
    #[must_use]
    pub const fn new(retries: u32) -> Self {
        Self {
            retries,
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }

    /// The wait before retry number `retry` (0 for the first retry), or
    /// `None` when the retries are used up.
    #[must_use]
    pub fn delay(&self, retry: u32) -> Option<Duration> {
        if retry >= self.retries {
            return None;
        }
        let factor = 2u32.checked_pow(retry).unwrap_or(u32::MAX);
        Some(self.initial.saturating_mul(factor).min(self.max))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_stops() {
        let b = Backoff {
            retries: 6,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let delays: Vec<_> = (0..8).map(|i| b.delay(i)).collect();
        let ms = |m| Some(Duration::from_millis(m));
        assert_eq!(
            delays,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1000),
                ms(1000),
                None,
                None
            ]
        );
    }

    #[test]
    fn zero_retries_never_waits() {
        assert_eq!(Backoff::new(0).delay(0), None);
    }

    #[test]
    fn huge_retry_counts_do_not_overflow() {
        let b = Backoff::new(u32::MAX);
        assert_eq!(b.delay(200), Some(b.max));
    }
}
