//! The server's durable queue and state: runs, the jobs of each attempt,
//! their log chunks, webhook deliveries seen (dedup), runner tokens (hashed)
//! and cancel requests, in SQLite (a file in the data dir, WAL) or
//! PostgreSQL (a `postgres://` URL), with embedded migrations and one API
//! over both. It stores and answers: no HTTP, no pipeline execution.
//!
//! Why tables of our own and not a queue crate: apalis (SQLite and
//! PostgreSQL backends) and underway (PostgreSQL only, so no embedded
//! default) were looked at. Both model a queue of tasks that their own
//! in-process workers run; here a run is claimed whole by a runner that may
//! be another process talking HTTP, and every write the runner makes
//! afterwards (job events, log chunks, the result) must be fenced by the
//! run's attempt and lease, in the same transaction as the write. Webhook
//! dedup must insert the delivery and the run in one transaction, and the
//! run row is also what the API lists and filters. Neither crate exposes
//! its lease and attempt to fence our own tables, so the queue is the
//! `runs` table itself: claimed with `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL and one atomic `UPDATE ... RETURNING` through SQLite's single
//! writer.
//!
//! Why an enum over the two pools and not `sqlx::Any`: the SQL differs
//! where it matters (the claim), SQLite needs its typed connect options
//! (WAL, busy timeout, a single writer connection beside the readers) that
//! `Any` cannot express, and `Any` converts every value at run time. The
//! `on_pool!` macro writes a query once and compiles it for both pools.
//!
//! Every write a runner makes carries a [`Lease`] (run id, attempt, owner)
//! and is refused with [`Error::Fenced`] when that attempt is no longer
//! current or its lease expired: a runner that lost its lease cannot
//! overwrite the result of the attempt that replaced it. Times are Unix
//! milliseconds from the store's [`Clock`], so tests can move time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Connection as _;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

mod logs;
mod query;
mod queue;
mod record;
mod tokens;
mod types;

pub use types::{
    Beat, CancelOutcome, Claim, Counts, Delivery, Enqueued, Job, JobEvent, JobStatus, Lease,
    LogRead, NewRun, Run, RunFilter, RunId, RunOutcome, RunStatus,
};

/// The SQLite database's file name in the data dir.
pub const SQLITE_FILE: &str = "executor.db";

/// The errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create the data directory {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the database {target}")]
    Open {
        /// The file or the URL with its password hidden.
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "database URL {0} is not a PostgreSQL one\nhint: use postgres://user:password@host/database, or no URL for SQLite in the data dir"
    )]
    UnsupportedUrl(String),
    #[error("cannot apply the database migrations to {target}")]
    Migrate {
        target: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("database operation failed: {what}")]
    Query {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// The attempt is no longer current or its lease was lost: the write
    /// was refused (a runner answers 409).
    #[error(
        "run {run} attempt {attempt} of {owner} is fenced: the attempt is no longer current or its lease was lost"
    )]
    Fenced {
        run: RunId,
        attempt: i64,
        owner: String,
    },
    #[error("run {0} not found")]
    NotFound(RunId),
    #[error("run {run} is {status}, not finished: only a finished run can be retried")]
    NotFinished { run: RunId, status: RunStatus },
    #[error("job {job:?} of run {run} attempt {attempt} was never queued")]
    UnknownJob {
        run: RunId,
        attempt: i64,
        job: String,
    },
    #[error("job {job:?} cannot finish as {status}: that is not a final status")]
    UnfinishedStatus { job: String, status: JobStatus },
    #[error(
        "log of job {job:?} of run {run} attempt {attempt}: a chunk at byte {got}, but the log ends at byte {expected}"
    )]
    LogOffset {
        run: RunId,
        attempt: i64,
        job: String,
        expected: i64,
        got: i64,
    },
    #[error("{what} {value:?} in the database is not one the store writes")]
    Corrupt { what: &'static str, value: String },
    #[error("trigger metadata of run {run} is not JSON")]
    TriggerJson {
        run: RunId,
        #[source]
        source: serde_json::Error,
    },
    #[error("runner token name {0:?} is empty")]
    EmptyTokenName(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Maps a driver error to [`Error::Query`] naming the operation.
fn query(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Query { what, source }
}

/// Where times come from: the system clock, or a manual one tests move.
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<AtomicI64>>);

impl Clock {
    /// The system clock.
    #[must_use]
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock that stands at `start_ms` until [`Clock::advance`] moves it.
    #[must_use]
    pub fn manual(start_ms: i64) -> Self {
        Self(Some(Arc::new(AtomicI64::new(start_ms))))
    }

    /// Moves a manual clock forward (no effect on the system clock).
    pub fn advance(&self, by: Duration) {
        if let Some(now) = &self.0 {
            now.fetch_add(millis(by), Ordering::SeqCst);
        }
    }

    /// Unix milliseconds now.
    #[must_use]
    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            Some(now) => now.load(Ordering::SeqCst),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, millis),
        }
    }
}

/// A duration in whole milliseconds, saturating.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The two backends. SQLite allows one writer at a time: writes go through
/// a pool of one connection (queued in the pool rather than spinning in
/// SQLite's busy handler), reads through a pool of readers that WAL lets
/// run beside it.
#[derive(Debug, Clone)]
enum Backend {
    Sqlite {
        writer: SqlitePool,
        reader: SqlitePool,
    },
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the backend's writer pool (`write`)
/// or reader pool (`read`): the body is compiled once per backend, so one
/// query text serves both (`$1`-style parameters work in both).
macro_rules! on_pool {
    ($store:expr, write $pool:ident => $body:expr) => {
        match &$store.backend {
            $crate::server::store::Backend::Sqlite { writer: $pool, .. } => $body,
            $crate::server::store::Backend::Postgres($pool) => $body,
        }
    };
    ($store:expr, read $pool:ident => $body:expr) => {
        match &$store.backend {
            $crate::server::store::Backend::Sqlite { reader: $pool, .. } => $body,
            $crate::server::store::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// The queue and state store. Cheap to clone (the pools are shared).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    clock: Clock,
}

impl Store {
    /// Opens the store: PostgreSQL when `database_url` is given, else
    /// SQLite in `data_dir`; applies the migrations.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Self> {
        match database_url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Self::open_postgres(url).await
            }
            Some(url) => Err(Error::UnsupportedUrl(redact(url))),
            None => Self::open_sqlite(data_dir).await,
        }
    }

    /// Opens (creating) `data_dir/executor.db` in WAL mode and applies the
    /// migrations. Commits are synced (`synchronous=FULL`): a run answered
    /// as queued survives a power cut, not only a crash.
    pub async fn open_sqlite(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|source| Error::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(SQLITE_FILE);
        let target = path.display().to_string();
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let open = |source| Error::Open {
            target: target.clone(),
            source,
        };
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(open)?;
        sqlx::migrate!("src/server/store/migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|source| Error::Migrate {
                target: target.clone(),
                source,
            })?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(open)?;
        Ok(Self {
            backend: Backend::Sqlite { writer, reader },
            clock: Clock::system(),
        })
    }

    /// Connects to PostgreSQL at `url` (`postgres://user:password@host/db`)
    /// and applies the migrations. Several servers may share the database.
    pub async fn open_postgres(url: &str) -> Result<Self> {
        let target = redact(url);
        let open = |source| Error::Open {
            target: target.clone(),
            source,
        };
        // One connection first, without the pool's retries: an unreachable
        // or refusing server is reported at once with its cause, and the
        // migrations run on it.
        let mut first = PgConnection::connect(url).await.map_err(open)?;
        sqlx::migrate!("src/server/store/migrations/postgres")
            .run(&mut first)
            .await
            .map_err(|source| Error::Migrate {
                target: target.clone(),
                source,
            })?;
        first.close().await.map_err(open)?;
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect(url)
            .await
            .map_err(open)?;
        Ok(Self {
            backend: Backend::Postgres(pool),
            clock: Clock::system(),
        })
    }

    /// The store with times from `clock` (tests use [`Clock::manual`]).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The store's clock.
    #[must_use]
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// `"sqlite"` or `"postgres"`, for logs and metrics.
    #[must_use]
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Closes the pools, waiting for connections in use to come back.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { writer, reader } => {
                reader.close().await;
                writer.close().await;
            }
            Backend::Postgres(pool) => pool.close().await,
        }
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// `url` with the password replaced by `***`, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("postgres://ci:s3cret@db.internal:5432/executor"),
            "postgres://ci:***@db.internal:5432/executor"
        );
        assert_eq!(
            redact("postgres://ci@db.internal/executor"),
            "postgres://ci@db.internal/executor"
        );
        assert_eq!(redact("postgres:///executor"), "postgres:///executor");
    }

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = Clock::manual(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(Duration::from_secs(2));
        assert_eq!(clock.now_ms(), 3_000);
    }
}
