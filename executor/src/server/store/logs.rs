//! Job logs, per run, attempt and job: append-only chunks at byte offsets
//! (each starts where the previous one ended, fenced by the attempt's
//! lease), read back from any offset for following, and deleted once their
//! run finished before the retention horizon.

use super::queue::fence;
use super::{Error, JobStatus, Lease, LogRead, Result, RunId, RunStatus, Store, on_pool, query};

/// At most this many chunks per read; a follower reads again from
/// [`LogRead::next_offset`].
const CHUNKS_PER_READ: i64 = 256;

impl Store {
    /// Appends `data` at byte `offset` of job `job`'s log in `lease`'s
    /// attempt; answers where the log now ends. The offset must be where
    /// the log ends: resending the last chunk at its offset (a lost answer)
    /// is accepted once stored, any other offset is [`Error::LogOffset`].
    pub async fn append_log(
        &self,
        lease: &Lease,
        job: &str,
        offset: i64,
        data: &[u8],
    ) -> Result<i64> {
        let now = self.now();
        let length = i64::try_from(data.len()).unwrap_or(i64::MAX);
        on_pool!(self, write pool => {
            let mut tx = pool.begin().await.map_err(query("begin a log append"))?;
            fence!(tx, lease, now);
            let end: i64 = sqlx::query_scalar(
                "SELECT COALESCE(MAX(byte_offset + length), 0) FROM log_chunks \
                 WHERE run_id = $1 AND attempt = $2 AND job = $3",
            )
            .bind(lease.run_id)
            .bind(lease.attempt)
            .bind(job)
            .fetch_one(&mut *tx)
            .await
            .map_err(query("find where a log ends"))?;
            if offset == end {
                if !data.is_empty() {
                    sqlx::query(
                        "INSERT INTO log_chunks (run_id, attempt, job, byte_offset, length, data, \
                         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(lease.run_id)
                    .bind(lease.attempt)
                    .bind(job)
                    .bind(offset)
                    .bind(length)
                    .bind(data)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(query("append a log chunk"))?;
                }
                tx.commit().await.map_err(query("commit a log append"))?;
                return Ok(end + length);
            }
            let resent: Option<i64> = sqlx::query_scalar(
                "SELECT length FROM log_chunks WHERE run_id = $1 AND attempt = $2 AND job = $3 \
                 AND byte_offset = $4",
            )
            .bind(lease.run_id)
            .bind(lease.attempt)
            .bind(job)
            .bind(offset)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query("look for a resent log chunk"))?;
            if resent == Some(length) {
                return Ok(end);
            }
            Err(Error::LogOffset {
                run: lease.run_id,
                attempt: lease.attempt,
                job: job.to_owned(),
                expected: end,
                got: offset,
            })
        })
    }

    /// Reads job `job`'s log of `attempt` of run `run` from byte `from`.
    /// [`LogRead::complete`] says no more will come; otherwise read again
    /// from [`LogRead::next_offset`].
    pub async fn read_log(
        &self,
        run: RunId,
        attempt: i64,
        job: &str,
        from: i64,
    ) -> Result<LogRead> {
        // The state is read before the chunks: a job seen finished here
        // wrote its last chunk before, so it is in the read below.
        let state: Option<(String, i64, Option<String>)> = on_pool!(self, read pool => {
            sqlx::query_as(
                "SELECT runs.status, runs.attempt, jobs.status FROM runs LEFT JOIN jobs \
                 ON jobs.run_id = runs.id AND jobs.attempt = $2 AND jobs.name = $3 \
                 WHERE runs.id = $1",
            )
            .bind(run)
            .bind(attempt)
            .bind(job)
            .fetch_optional(pool)
            .await
            .map_err(query("read a job's state"))?
        });
        let (run_status, current_attempt, job_status) = state.ok_or(Error::NotFound(run))?;
        let job_over = match job_status {
            Some(status) => JobStatus::parse(&status)?.is_finished(),
            None => false,
        };
        let over =
            job_over || current_attempt != attempt || RunStatus::parse(&run_status)?.is_finished();
        let chunks: Vec<(i64, Vec<u8>)> = on_pool!(self, read pool => {
            sqlx::query_as(
                "SELECT byte_offset, data FROM log_chunks WHERE run_id = $1 AND attempt = $2 \
                 AND job = $3 AND byte_offset + length > $4 ORDER BY byte_offset LIMIT $5",
            )
            .bind(run)
            .bind(attempt)
            .bind(job)
            .bind(from)
            .bind(CHUNKS_PER_READ)
            .fetch_all(pool)
            .await
            .map_err(query("read a job's log"))?
        });
        let whole = i64::try_from(chunks.len()).unwrap_or(i64::MAX) < CHUNKS_PER_READ;
        let mut data = Vec::new();
        let mut next_offset = from;
        for (offset, chunk) in chunks {
            let skip = usize::try_from(from - offset).unwrap_or(0).min(chunk.len());
            data.extend_from_slice(&chunk[skip..]);
            next_offset = offset + i64::try_from(chunk.len()).unwrap_or(i64::MAX);
        }
        Ok(LogRead {
            data,
            next_offset,
            complete: over && whole,
        })
    }

    /// Deletes the log chunks of runs that finished before `before_ms`
    /// (log retention); answers how many chunks went.
    pub async fn delete_logs_finished_before(&self, before_ms: i64) -> Result<u64> {
        on_pool!(self, write pool => {
            Ok(sqlx::query(
                "DELETE FROM log_chunks WHERE run_id IN \
                 (SELECT id FROM runs WHERE finished_at < $1)",
            )
            .bind(before_ms)
            .execute(pool)
            .await
            .map_err(query("delete old logs"))?
            .rows_affected())
        })
    }
}
