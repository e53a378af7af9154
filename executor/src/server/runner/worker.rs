//! The runner loop: `concurrency` slots, each claiming a run, executing
//! it and claiming the next, until shutdown. On shutdown no slot claims
//! again; runs in progress go on for the grace period, then are cancelled
//! and their leases released so another runner takes them.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Coordinator, Ended, Machine, execute};
use crate::error_chain;

/// How a runner works.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// Runs at once.
    pub concurrency: usize,
    /// Each slot executes one run, then stops (`executor runner --once`).
    pub once: bool,
    /// How long runs in progress may go on after shutdown.
    pub grace: Duration,
}

/// A runner over a [`Coordinator`].
pub struct Worker<C> {
    coordinator: Arc<C>,
    machine: Machine,
    config: WorkerConfig,
}

impl<C: Coordinator> Worker<C> {
    pub fn new(coordinator: Arc<C>, machine: Machine, config: WorkerConfig) -> Self {
        Self {
            coordinator,
            machine,
            config,
        }
    }

    /// Runs until `shutdown` fires and the runs in progress are over (or
    /// released past the grace), or, with `once`, until each slot ran one.
    pub async fn run(self, shutdown: CancellationToken) {
        let abort = CancellationToken::new();
        let grace = self.config.grace;
        let abort_after_grace = {
            let (shutdown, abort) = (shutdown.clone(), abort.clone());
            tokio::spawn(async move {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
                abort.cancel();
            })
        };
        let mut slots = JoinSet::new();
        for _ in 0..self.config.concurrency.max(1) {
            let coordinator = Arc::clone(&self.coordinator);
            let machine = self.machine.clone();
            let (shutdown, abort) = (shutdown.clone(), abort.clone());
            let once = self.config.once;
            slots.spawn(async move {
                slot(coordinator, machine, shutdown, abort, once).await;
            });
        }
        while slots.join_next().await.is_some() {}
        abort_after_grace.abort();
    }
}

async fn slot<C: Coordinator>(
    coordinator: Arc<C>,
    machine: Machine,
    shutdown: CancellationToken,
    abort: CancellationToken,
    once: bool,
) {
    loop {
        let claimed = tokio::select! {
            () = shutdown.cancelled() => return,
            claimed = coordinator.claim() => claimed,
        };
        let assignment = match claimed {
            Ok(Some(assignment)) => assignment,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("cannot claim a run: {}", error_chain::one_line(&e));
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let run = assignment.run_id;
        let attempt = assignment.lease.attempt;
        tracing::info!(run, attempt, commit = %assignment.commit_sha, "running");
        match execute(
            Arc::clone(&coordinator),
            assignment,
            &machine,
            abort.clone(),
        )
        .await
        {
            Ok(Ended::Finished(outcome)) => {
                tracing::info!(run, attempt, ?outcome, "run finished");
            }
            Ok(Ended::Released) => tracing::warn!(run, attempt, "grace over: run released"),
            Ok(Ended::Fenced) => tracing::warn!(run, attempt, "lease lost: run abandoned"),
            Err(e) => tracing::error!(run, attempt, "{}", error_chain::one_line(&e)),
        }
        if once {
            return;
        }
    }
}
