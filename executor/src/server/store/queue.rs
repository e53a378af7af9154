//! The queue itself, on the `runs` table: enqueue with webhook dedup, claim
//! with a lease, heartbeat, finish, requeue of expired leases to a later
//! attempt, release on drain, cancel and retry. Also the fence every
//! runner write goes through.

use std::time::Duration;

use super::types::{RUN_COLUMNS, RunRow};
use super::{
    Backend, Beat, CancelOutcome, Claim, Delivery, Enqueued, Error, Lease, NewRun, Result, Run,
    RunId, RunOutcome, Store, millis, on_pool, query,
};

/// The condition that a lease is current: `$1` run, `$2` attempt, `$3`
/// owner, `$4` now. Bind them with [`bind_lease!`].
pub(super) const FENCED: &str = "id = $1 AND attempt = $2 AND lease_owner = $3 \
    AND status = 'running' AND lease_expires_at > $4";

/// Binds a lease and the time to a query on [`FENCED`].
macro_rules! bind_lease {
    ($query:expr, $lease:expr, $now:expr) => {
        $query
            .bind($lease.run_id)
            .bind($lease.attempt)
            .bind($lease.owner.as_str())
            .bind($now)
    };
}
pub(super) use bind_lease;

/// Inside a write transaction `$tx`: checks that `$lease` is current and
/// holds the run's row until the transaction ends (on PostgreSQL the
/// no-op `UPDATE` locks it against a concurrent requeue; SQLite has one
/// writer), or returns [`Error::Fenced`] from the enclosing function.
macro_rules! fence {
    ($tx:expr, $lease:expr, $now:expr) => {{
        let sql = format!(
            "UPDATE runs SET lease_owner = lease_owner WHERE {}",
            $crate::server::store::queue::FENCED
        );
        let touched = $crate::server::store::queue::bind_lease!(sqlx::query(&sql), $lease, $now)
            .execute(&mut *$tx)
            .await
            .map_err($crate::server::store::query("check the lease"))?
            .rows_affected();
        if touched == 0 {
            return Err($crate::server::store::queue::fenced($lease));
        }
    }};
}
pub(super) use fence;

/// The [`Error::Fenced`] of `lease`.
pub(super) fn fenced(lease: &Lease) -> Error {
    Error::Fenced {
        run: lease.run_id,
        attempt: lease.attempt,
        owner: lease.owner.clone(),
    }
}

/// Jobs still queued or running whose attempt is over (requeued, released
/// or finished) are canceled: `$1` now.
const CLOSE_STALE_JOBS: &str = "UPDATE jobs SET status = 'canceled', finished_at = $1 \
    WHERE status IN ('queued', 'running') AND EXISTS (SELECT 1 FROM runs \
    WHERE runs.id = jobs.run_id \
    AND (runs.attempt > jobs.attempt OR runs.status IN ('succeeded', 'failed', 'canceled')))";

/// Runs [`CLOSE_STALE_JOBS`] in the transaction `$tx`.
macro_rules! close_stale_jobs {
    ($tx:expr, $now:expr) => {
        sqlx::query(CLOSE_STALE_JOBS)
            .bind($now)
            .execute(&mut *$tx)
            .await
            .map_err(query("cancel the open jobs of attempts that are over"))?
    };
}

/// Why the store ended a run whose runner let its lease go.
const REASON_CANCELED: &str = "canceled: the cancel request came before its runner let it go";
const REASON_ATTEMPTS: &str = "failed: its lease was lost on the last allowed attempt";

/// The `SET` list that gives a run up: canceled when a cancel was
/// requested, failed when it was on its last allowed attempt, else back to
/// queued as the next attempt. `now` and `max` name the parameters that
/// hold the time and the attempts allowed.
fn give_up_set(now: &str, max: &str) -> String {
    let over = format!("(cancel_requested OR attempt >= {max})");
    format!(
        "status = CASE WHEN cancel_requested THEN 'canceled' \
         WHEN attempt >= {max} THEN 'failed' ELSE 'queued' END, \
         status_reason = CASE WHEN cancel_requested THEN '{REASON_CANCELED}' \
         WHEN attempt >= {max} THEN '{REASON_ATTEMPTS}' ELSE NULL END, \
         attempt = CASE WHEN {over} THEN attempt ELSE attempt + 1 END, \
         finished_at = CASE WHEN {over} THEN {now} ELSE NULL END, \
         started_at = CASE WHEN {over} THEN started_at ELSE NULL END, \
         lease_owner = NULL, lease_expires_at = NULL"
    )
}

impl Store {
    /// Queues `run`. With a `delivery`, a delivery seen before (even one
    /// being inserted concurrently) creates nothing and answers its run:
    /// the delivery and the run are inserted in one transaction.
    pub async fn enqueue(&self, run: &NewRun, delivery: Option<&Delivery>) -> Result<Enqueued> {
        let now = self.now();
        let trigger = run.trigger.to_string();
        on_pool!(self, write pool => {
            let mut tx = pool.begin().await.map_err(query("begin an enqueue"))?;
            if let Some(delivery) = delivery {
                let inserted = sqlx::query(
                    "INSERT INTO deliveries (source, delivery_id, received_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (source, delivery_id) DO NOTHING",
                )
                .bind(&delivery.source)
                .bind(&delivery.id)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(query("record a webhook delivery"))?
                .rows_affected();
                if inserted == 0 {
                    tx.rollback().await.map_err(query("roll back a duplicate delivery"))?;
                    let run_id: Option<i64> = sqlx::query_scalar(
                        "SELECT run_id FROM deliveries WHERE source = $1 AND delivery_id = $2",
                    )
                    .bind(&delivery.source)
                    .bind(&delivery.id)
                    .fetch_one(pool)
                    .await
                    .map_err(query("find a duplicate delivery's run"))?;
                    return run_id.map(Enqueued::Duplicate).ok_or_else(|| Error::Corrupt {
                        what: "webhook delivery without a run",
                        value: format!("{} {}", delivery.source, delivery.id),
                    });
                }
            }
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO runs (repository, git_ref, commit_sha, event, fork, trigger_json, \
                 status, attempt, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'queued', 1, $7) \
                 RETURNING id",
            )
            .bind(&run.repository)
            .bind(&run.git_ref)
            .bind(&run.commit_sha)
            .bind(&run.event)
            .bind(run.fork)
            .bind(&trigger)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(query("insert a run"))?;
            if let Some(delivery) = delivery {
                sqlx::query(
                    "UPDATE deliveries SET run_id = $1 WHERE source = $2 AND delivery_id = $3",
                )
                .bind(id)
                .bind(&delivery.source)
                .bind(&delivery.id)
                .execute(&mut *tx)
                .await
                .map_err(query("link a delivery to its run"))?;
            }
            tx.commit().await.map_err(query("commit an enqueue"))?;
            Ok(Enqueued::Created(id))
        })
    }

    /// Forgets the webhook deliveries received before `before_ms` (the
    /// dedup window: a forge's redelivery after that queues a new run);
    /// answers how many went.
    pub async fn forget_deliveries_before(&self, before_ms: i64) -> Result<u64> {
        on_pool!(self, write pool => {
            Ok(sqlx::query("DELETE FROM deliveries WHERE received_at < $1")
                .bind(before_ms)
                .execute(pool)
                .await
                .map_err(query("forget old deliveries"))?
                .rows_affected())
        })
    }

    /// Claims the oldest queued run for `owner`, leased for `lease_for`:
    /// it is running as its current attempt until the lease expires
    /// unrenewed. `None` when nothing is queued.
    pub async fn claim(&self, owner: &str, lease_for: Duration) -> Result<Option<Claim>> {
        let now = self.now();
        let expires = now.saturating_add(millis(lease_for));
        // PostgreSQL: replicas claim concurrently, each skipping the rows
        // another is claiming. SQLite: the single writer makes the
        // statement atomic.
        let skip_locked = match self.backend {
            Backend::Postgres(_) => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite { .. } => "",
        };
        let sql = format!(
            "UPDATE runs SET status = 'running', lease_owner = $1, lease_expires_at = $2, \
             started_at = $3 WHERE id = (SELECT id FROM runs WHERE status = 'queued' \
             ORDER BY id LIMIT 1{skip_locked}) RETURNING {RUN_COLUMNS}"
        );
        let row: Option<RunRow> = on_pool!(self, write pool => {
            sqlx::query_as(&sql)
                .bind(owner)
                .bind(expires)
                .bind(now)
                .fetch_optional(pool)
                .await
                .map_err(query("claim a run"))?
        });
        let Some(row) = row else {
            return Ok(None);
        };
        let run = Run::try_from(row)?;
        let lease = Lease {
            run_id: run.id,
            attempt: run.attempt,
            owner: owner.to_owned(),
            expires_at_ms: expires,
        };
        Ok(Some(Claim { run, lease }))
    }

    /// Renews `lease` for `lease_for` from now; answers whether a cancel
    /// was requested. [`Error::Fenced`] when the lease is no longer current.
    pub async fn heartbeat(&self, lease: &Lease, lease_for: Duration) -> Result<Beat> {
        let now = self.now();
        let expires = now.saturating_add(millis(lease_for));
        let sql = format!(
            "UPDATE runs SET lease_expires_at = $5 WHERE {FENCED} RETURNING cancel_requested"
        );
        let cancel: Option<bool> = on_pool!(self, write pool => {
            bind_lease!(sqlx::query_scalar(&sql), lease, now)
                .bind(expires)
                .fetch_optional(pool)
                .await
                .map_err(query("renew a lease"))?
        });
        let cancel_requested = cancel.ok_or_else(|| fenced(lease))?;
        Ok(Beat {
            expires_at_ms: expires,
            cancel_requested,
        })
    }

    /// Records the result of `lease`'s attempt; its jobs still open are
    /// canceled. [`Error::Fenced`] when the lease is no longer current: the
    /// result is dropped.
    pub async fn finish(&self, lease: &Lease, outcome: RunOutcome) -> Result<()> {
        let now = self.now();
        let sql = format!(
            "UPDATE runs SET status = $5, finished_at = $4, lease_owner = NULL, \
             lease_expires_at = NULL WHERE {FENCED}"
        );
        on_pool!(self, write pool => {
            let mut tx = pool.begin().await.map_err(query("begin a finish"))?;
            let finished = bind_lease!(sqlx::query(&sql), lease, now)
                .bind(outcome.status().as_str())
                .execute(&mut *tx)
                .await
                .map_err(query("finish a run"))?
                .rows_affected();
            if finished == 0 {
                return Err(fenced(lease));
            }
            close_stale_jobs!(tx, now);
            tx.commit().await.map_err(query("commit a finish"))
        })
    }

    /// Gives up the runs whose lease expired: each goes back to queued as
    /// its next attempt, or to canceled when a cancel was requested, or to
    /// failed when it was on attempt `max_attempts` (a run that keeps
    /// killing its runner stops there); the old attempt's writes are fenced
    /// from then on. Answers the runs as they are now.
    pub async fn requeue_expired(&self, max_attempts: i64) -> Result<Vec<Run>> {
        let now = self.now();
        let sql = format!(
            "UPDATE runs SET {} WHERE status = 'running' AND lease_expires_at <= $1 \
             RETURNING {RUN_COLUMNS}",
            give_up_set("$1", "$2")
        );
        let rows: Vec<RunRow> = on_pool!(self, write pool => {
            let mut tx = pool.begin().await.map_err(query("begin a requeue"))?;
            let rows = sqlx::query_as(&sql)
                .bind(now)
                .bind(max_attempts)
                .fetch_all(&mut *tx)
                .await
                .map_err(query("requeue expired leases"))?;
            close_stale_jobs!(tx, now);
            tx.commit().await.map_err(query("commit a requeue"))?;
            rows
        });
        rows.into_iter().map(Run::try_from).collect()
    }

    /// Gives `lease`'s run up without waiting for the lease to expire (a
    /// draining runner): queued again as the next attempt (a release is no
    /// failure: no attempt limit), or canceled if a cancel was requested.
    /// Answers the run as it is now.
    pub async fn release(&self, lease: &Lease) -> Result<Run> {
        let now = self.now();
        let sql = format!(
            "UPDATE runs SET {} WHERE {FENCED} RETURNING {RUN_COLUMNS}",
            give_up_set("$4", "$5")
        );
        let row: RunRow = on_pool!(self, write pool => {
            let mut tx = pool.begin().await.map_err(query("begin a release"))?;
            let row: Option<RunRow> = bind_lease!(sqlx::query_as(&sql), lease, now)
                .bind(i64::MAX)
                .fetch_optional(&mut *tx)
                .await
                .map_err(query("release a lease"))?;
            let Some(row) = row else {
                return Err(fenced(lease));
            };
            close_stale_jobs!(tx, now);
            tx.commit().await.map_err(query("commit a release"))?;
            row
        });
        Run::try_from(row)
    }

    /// Cancels run `id`: a queued run is canceled at once; a running one is
    /// flagged, and its runner learns it from its next heartbeat.
    pub async fn cancel(&self, id: RunId) -> Result<CancelOutcome> {
        let now = self.now();
        on_pool!(self, write pool => {
            let canceled = sqlx::query(
                "UPDATE runs SET status = 'canceled', finished_at = $2, cancel_requested = TRUE \
                 WHERE id = $1 AND status = 'queued'",
            )
            .bind(id)
            .bind(now)
            .execute(pool)
            .await
            .map_err(query("cancel a queued run"))?
            .rows_affected();
            if canceled > 0 {
                return Ok(CancelOutcome::Canceled);
            }
            // claimed meanwhile, or running already
            let flagged = sqlx::query(
                "UPDATE runs SET cancel_requested = TRUE WHERE id = $1 AND status = 'running'",
            )
            .bind(id)
            .execute(pool)
            .await
            .map_err(query("request a run's cancel"))?
            .rows_affected();
            if flagged > 0 {
                return Ok(CancelOutcome::Requested);
            }
        });
        let run = self.run(id).await?.ok_or(Error::NotFound(id))?;
        Ok(CancelOutcome::AlreadyFinished(run.status))
    }

    /// Queues a finished run again as a new run (its `retry_of` names the
    /// old one, whose history stays as it was). Answers the new run's id.
    pub async fn retry(&self, id: RunId) -> Result<RunId> {
        let now = self.now();
        let new_id: Option<i64> = on_pool!(self, write pool => {
            sqlx::query_scalar(
                "INSERT INTO runs (repository, git_ref, commit_sha, event, fork, trigger_json, \
                 status, attempt, created_at, retry_of) \
                 SELECT repository, git_ref, commit_sha, event, fork, trigger_json, 'queued', 1, \
                 $2, id FROM runs WHERE id = $1 AND status IN ('succeeded', 'failed', 'canceled') \
                 RETURNING id",
            )
            .bind(id)
            .bind(now)
            .fetch_optional(pool)
            .await
            .map_err(query("retry a run"))?
        });
        if let Some(new_id) = new_id {
            return Ok(new_id);
        }
        let run = self.run(id).await?.ok_or(Error::NotFound(id))?;
        Err(Error::NotFinished {
            run: id,
            status: run.status,
        })
    }
}
