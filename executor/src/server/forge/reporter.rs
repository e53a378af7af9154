//! The background sender of commit statuses. [`Reporter::report`] only
//! records the status and returns: it never waits on the network, so a
//! forge that is slow, rate limited or down cannot fail or hold up a run.
//! A Tokio task sends what was recorded, a bounded number at a time.
//!
//! Statuses are coalesced per (forge, repository, commit, context): while
//! one is waiting or in flight, a newer one for the same key replaces the
//! waiting one, so only the latest state is sent and a key's states are
//! never sent out of order. Failed calls are retried with a bounded
//! exponential backoff, or after the forge's `Retry-After` or rate-limit
//! reset (which pauses every call to that forge), at most
//! [`ReporterConfig::max_attempts`] times; then the status is dropped with
//! a warning. Refusals (4xx) are not retried.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use super::client::Retry;
use super::{CommitStatus, ForgeClient};
use crate::error_chain;

/// How the reporter sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReporterConfig {
    /// Calls in flight at once, over all forges.
    pub concurrency: usize,
    /// Calls per status before it is dropped (1 = no retry).
    pub max_attempts: u32,
    /// The first retry's delay; it doubles per attempt.
    pub initial_backoff: Duration,
    /// The longest wait before a retry, the forge's `Retry-After`
    /// included.
    pub max_backoff: Duration,
}

impl Default for ReporterConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// Counts since the reporter started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReporterStats {
    /// Calls to [`Reporter::report`].
    pub reported: u64,
    /// Statuses replaced by a newer one for the same key before they were
    /// sent.
    pub coalesced: u64,
    /// Statuses the forge accepted (GitLab's same-state answer included).
    pub sent: u64,
    /// Calls that failed and were scheduled again.
    pub retried: u64,
    /// Statuses given up: refused, or still failing after the last
    /// attempt.
    pub failed: u64,
}

/// Sends commit statuses in the background; cheap to clone. The sending
/// task stops when the last clone is dropped.
#[derive(Clone)]
pub struct Reporter {
    handle: Arc<Handle>,
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reporter")
            .field("config", &self.shared().config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Closes the queue when the last [`Reporter`] goes.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

struct Shared {
    config: ReporterConfig,
    state: Mutex<State>,
    /// Wakes the dispatcher: a new status, a finished call.
    wake: Notify,
    /// Wakes [`Reporter::idle`] waiters when nothing is left.
    idle: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements: a panic in
        // another holder leaves nothing half-done worth refusing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct State {
    /// The latest unsent status per key.
    waiting: HashMap<Key, Waiting>,
    in_flight: HashSet<Key>,
    /// Forges rate limited until then.
    paused: HashMap<String, Instant>,
    next_seq: u64,
    stats: ReporterStats,
    closed: bool,
}

impl State {
    fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.in_flight.is_empty()
    }

    /// When `key`'s waiting status may be sent.
    fn ready_at(&self, key: &Key, waiting: &Waiting) -> Instant {
        let paused = self.paused.get(&key.forge).copied();
        paused.map_or(waiting.not_before, |p| p.max(waiting.not_before))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// The forge's kind and API URL: rate limits are per forge.
    forge: String,
    repository: String,
    sha: String,
    context: String,
}

struct Waiting {
    client: Arc<ForgeClient>,
    status: CommitStatus,
    /// Order of first report: older keys are sent first.
    seq: u64,
    /// Failed calls so far for this status.
    attempts: u32,
    not_before: Instant,
}

impl Reporter {
    /// Starts the sending task on the current Tokio runtime.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    #[must_use]
    pub fn spawn(config: ReporterConfig) -> Self {
        let shared = Arc::new(Shared {
            config: ReporterConfig {
                concurrency: config.concurrency.max(1),
                max_attempts: config.max_attempts.max(1),
                ..config
            },
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            idle: Notify::new(),
        });
        tokio::spawn(dispatch(Arc::clone(&shared)));
        Self {
            handle: Arc::new(Handle { shared }),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// Queues `status` for a commit of `repository` (as
    /// [`ForgeClient::set_status`] takes it) and returns at once. A status
    /// for the same commit and context that is not sent yet is replaced.
    pub fn report(&self, client: &Arc<ForgeClient>, repository: &str, status: CommitStatus) {
        let key = Key {
            forge: format!("{} {}", client.kind(), client.api_url()),
            repository: repository.to_owned(),
            sha: status.sha.clone(),
            context: status.context.clone(),
        };
        let shared = self.shared();
        let mut state = shared.lock();
        state.stats.reported += 1;
        let seq = state.next_seq;
        state.next_seq += 1;
        if let Some(waiting) = state.waiting.get_mut(&key) {
            // Keeps its place in the queue and any backoff: only the
            // status to send changes.
            waiting.client = Arc::clone(client);
            waiting.status = status;
            waiting.attempts = 0;
            state.stats.coalesced += 1;
        } else {
            state.waiting.insert(
                key,
                Waiting {
                    client: Arc::clone(client),
                    status,
                    seq,
                    attempts: 0,
                    not_before: Instant::now(),
                },
            );
        }
        drop(state);
        shared.wake.notify_one();
    }

    /// The counts so far.
    #[must_use]
    pub fn stats(&self) -> ReporterStats {
        self.shared().lock().stats
    }

    /// Waits until every reported status is sent or given up.
    pub async fn idle(&self) {
        let shared = self.shared();
        loop {
            let notified = shared.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if shared.lock().is_idle() {
                return;
            }
            notified.await;
        }
    }

    /// Waits up to `grace` for the queue to drain (on shutdown); whether it
    /// did. Statuses still waiting after that are dropped with the last
    /// clone.
    pub async fn drain(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.idle()).await.is_ok()
    }
}

/// The sending task: starts the calls that may go, sleeps until the next
/// one may or something changes.
async fn dispatch(shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(shared.config.concurrency));
    loop {
        let next_wake = {
            let mut state = shared.lock();
            if state.closed {
                return;
            }
            start_ready(&shared, &mut state, &permits);
            state
                .waiting
                .iter()
                .filter(|(key, _)| !state.in_flight.contains(key))
                .map(|(key, waiting)| state.ready_at(key, waiting))
                .min()
        };
        match next_wake {
            // Without a free permit, only a finished call can start more.
            Some(at) if permits.available_permits() > 0 => {
                tokio::select! {
                    () = shared.wake.notified() => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            _ => shared.wake.notified().await,
        }
    }
}

/// Starts a call for every ready key, oldest first, while permits last.
fn start_ready(shared: &Arc<Shared>, state: &mut State, permits: &Arc<Semaphore>) {
    let now = Instant::now();
    let mut ready: Vec<(u64, Key)> = state
        .waiting
        .iter()
        .filter(|(key, waiting)| {
            !state.in_flight.contains(*key) && state.ready_at(key, waiting) <= now
        })
        .map(|(key, waiting)| (waiting.seq, key.clone()))
        .collect();
    ready.sort_unstable_by_key(|(seq, _)| *seq);
    for (_, key) in ready {
        let Ok(permit) = Arc::clone(permits).try_acquire_owned() else {
            break;
        };
        let Some(waiting) = state.waiting.remove(&key) else {
            continue;
        };
        state.in_flight.insert(key.clone());
        tokio::spawn(send(Arc::clone(shared), key, waiting, permit));
    }
}

/// One call, and what follows from its answer.
async fn send(shared: Arc<Shared>, key: Key, waiting: Waiting, permit: OwnedSemaphorePermit) {
    let span = tracing::info_span!(
        "commit_status",
        forge = %key.forge,
        repository = %key.repository,
        sha = %key.sha,
        context = %key.context,
        state = ?waiting.status.state,
    );
    let result = waiting
        .client
        .set_status(&key.repository, &waiting.status)
        .instrument(span.clone())
        .await;
    drop(permit);
    let _entered = span.enter();
    let config = shared.config;
    let mut state = shared.lock();
    state.in_flight.remove(&key);
    let now = Instant::now();
    match result {
        Ok(sent) => {
            state.stats.sent += 1;
            tracing::debug!(same_state = sent.same_state, "commit status sent");
            if let Some(pause) = sent.pause {
                pause_forge(&mut state, &key.forge, now + pause.min(config.max_backoff));
            }
        }
        Err(error) => {
            let attempts = waiting.attempts + 1;
            let retry = error.retry();
            let delay = match retry {
                Retry::Never => None,
                _ if attempts >= config.max_attempts => None,
                Retry::After(delay) => Some(delay.min(config.max_backoff)),
                Retry::Backoff => Some(backoff(&config, attempts)),
            };
            let error = error_chain::one_line(&error);
            let Some(delay) = delay else {
                state.stats.failed += 1;
                tracing::warn!(attempts, %error, "commit status not sent");
                return finish(&shared, state);
            };
            if let Retry::After(_) = retry {
                pause_forge(&mut state, &key.forge, now + delay);
            }
            state.stats.retried += 1;
            tracing::info!(attempts, retry_in = ?delay, %error, "commit status failed, will retry");
            if let Some(newer) = state.waiting.get_mut(&key) {
                // A newer status replaced this one: it goes instead,
                // after the same delay.
                newer.not_before = newer.not_before.max(now + delay);
            } else {
                state.waiting.insert(
                    key,
                    Waiting {
                        attempts,
                        not_before: now + delay,
                        ..waiting
                    },
                );
            }
        }
    }
    finish(&shared, state);
}

/// Wakes whoever waits on a finished call: the dispatcher, and
/// [`Reporter::idle`] when nothing is left.
fn finish(shared: &Shared, state: MutexGuard<'_, State>) {
    let idle = state.is_idle();
    drop(state);
    if idle {
        shared.idle.notify_waiters();
    }
    shared.wake.notify_one();
}

fn pause_forge(state: &mut State, forge: &str, until: Instant) {
    let entry = state.paused.entry(forge.to_owned()).or_insert(until);
    *entry = (*entry).max(until);
}

/// `initial_backoff` doubled per failed attempt, at most `max_backoff`.
fn backoff(config: &ReporterConfig, attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1));
    config
        .initial_backoff
        .saturating_mul(factor)
        .min(config.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let config = ReporterConfig {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            ..ReporterConfig::default()
        };
        let waits: Vec<u64> = (1..=6).map(|n| backoff(&config, n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff(&config, u32::MAX), Duration::from_secs(10));
    }
}
