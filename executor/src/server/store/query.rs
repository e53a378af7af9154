//! What the API and the metrics read: a run, a page of runs (filtered,
//! newest first), the jobs of a run, and the count of runs by status.

use super::types::{JOB_COLUMNS, JobRow, RUN_COLUMNS, RunRow};
use super::{Counts, Job, Result, Run, RunFilter, RunId, RunStatus, Store, on_pool, query};

/// The page size when the filter names none.
const DEFAULT_PAGE: u32 = 50;

impl Store {
    /// Run `id`, if it exists.
    pub async fn run(&self, id: RunId) -> Result<Option<Run>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
        let row: Option<RunRow> = on_pool!(self, read pool => {
            sqlx::query_as(&sql)
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(query("read a run"))?
        });
        row.map(Run::try_from).transpose()
    }

    /// A page of runs matching `filter`, newest first. The next page is
    /// the runs before the last one's id.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE ($1 IS NULL OR repository = $1) \
             AND ($2 IS NULL OR git_ref = $2) AND ($3 IS NULL OR status = $3) \
             AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
        );
        let git_ref = filter
            .branch
            .as_ref()
            .map(|branch| format!("refs/heads/{branch}"));
        let limit = if filter.limit == 0 {
            DEFAULT_PAGE
        } else {
            filter.limit
        };
        let rows: Vec<RunRow> = on_pool!(self, read pool => {
            sqlx::query_as(&sql)
                .bind(filter.repository.as_deref())
                .bind(git_ref.as_deref())
                .bind(filter.status.map(RunStatus::as_str))
                .bind(filter.before)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
                .map_err(query("list runs"))?
        });
        rows.into_iter().map(Run::try_from).collect()
    }

    /// The jobs of run `id`: of one attempt, or of all (by attempt), in
    /// the order they were queued.
    pub async fn jobs(&self, id: RunId, attempt: Option<i64>) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE run_id = $1 AND ($2 IS NULL OR attempt = $2) \
             ORDER BY attempt, position"
        );
        let rows: Vec<JobRow> = on_pool!(self, read pool => {
            sqlx::query_as(&sql)
                .bind(id)
                .bind(attempt)
                .fetch_all(pool)
                .await
                .map_err(query("list a run's jobs"))?
        });
        rows.into_iter().map(Job::try_from).collect()
    }

    /// How many runs are in each status (the queue depth is
    /// [`Counts::depth`]).
    pub async fn counts(&self) -> Result<Counts> {
        let rows: Vec<(String, i64)> = on_pool!(self, read pool => {
            sqlx::query_as("SELECT status, COUNT(*) FROM runs GROUP BY status")
                .fetch_all(pool)
                .await
                .map_err(query("count runs by status"))?
        });
        let mut counts = Counts::default();
        for (status, count) in rows {
            counts.add(RunStatus::parse(&status)?, count);
        }
        Ok(counts)
    }
}
