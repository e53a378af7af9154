//! A runner's reports about the jobs of its attempt (queued, started,
//! finished), each fenced by the attempt's lease in the same transaction.

use super::queue::fence;
use super::{Error, JobEvent, Lease, Result, Store, on_pool, query};

impl Store {
    /// Records `event` for job `job` of `lease`'s attempt. [`Error::Fenced`]
    /// when the lease is no longer current; [`Error::UnknownJob`] when the
    /// job was started or finished without being queued first. A repeated
    /// `Queued` is a no-op, so a runner may resend after a lost answer.
    pub async fn record_job(&self, lease: &Lease, job: &str, event: &JobEvent) -> Result<()> {
        if let JobEvent::Finished { status, .. } = event
            && !status.is_finished()
        {
            return Err(Error::UnfinishedStatus {
                job: job.to_owned(),
                status: *status,
            });
        }
        let now = self.now();
        on_pool!(self, write pool => {
            let mut tx = pool.begin().await.map_err(query("begin a job event"))?;
            fence!(tx, lease, now);
            let changed = match event {
                JobEvent::Queued { stage } => {
                    sqlx::query(
                        "INSERT INTO jobs (run_id, attempt, name, position, stage, status, \
                         queued_at) VALUES ($1, $2, $3, (SELECT COUNT(*) FROM jobs \
                         WHERE run_id = $1 AND attempt = $2), $4, 'queued', $5) \
                         ON CONFLICT (run_id, attempt, name) DO NOTHING",
                    )
                    .bind(lease.run_id)
                    .bind(lease.attempt)
                    .bind(job)
                    .bind(stage)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(query("record a queued job"))?;
                    // inserted now or before: either way the job exists
                    1
                }
                JobEvent::Started => sqlx::query(
                    "UPDATE jobs SET status = 'running', started_at = $4 \
                     WHERE run_id = $1 AND attempt = $2 AND name = $3",
                )
                .bind(lease.run_id)
                .bind(lease.attempt)
                .bind(job)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(query("record a started job"))?
                .rows_affected(),
                JobEvent::Finished {
                    status,
                    image_digest,
                } => sqlx::query(
                    "UPDATE jobs SET status = $4, finished_at = $5, \
                     duration_ms = $5 - COALESCE(started_at, $5), image_digest = $6 \
                     WHERE run_id = $1 AND attempt = $2 AND name = $3",
                )
                .bind(lease.run_id)
                .bind(lease.attempt)
                .bind(job)
                .bind(status.as_str())
                .bind(now)
                .bind(image_digest.as_deref())
                .execute(&mut *tx)
                .await
                .map_err(query("record a finished job"))?
                .rows_affected(),
            };
            if changed == 0 {
                return Err(Error::UnknownJob {
                    run: lease.run_id,
                    attempt: lease.attempt,
                    job: job.to_owned(),
                });
            }
            tx.commit().await.map_err(query("commit a job event"))
        })
    }
}
