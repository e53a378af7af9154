-- The server's queue and state on SQLite: the same tables as the PostgreSQL
-- migration, with SQLite's types (INTEGER for BIGINT, BLOB for BYTEA); times
-- are Unix milliseconds from the server's clock; JSON is stored as text.

CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repository TEXT NOT NULL,
    git_ref TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    event TEXT NOT NULL,
    fork BOOLEAN NOT NULL,
    trigger_json TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
    -- why the store itself ended the run (NULL when its runner did)
    status_reason TEXT,
    attempt INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    lease_owner TEXT,
    lease_expires_at INTEGER,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    retry_of INTEGER REFERENCES runs (id) ON DELETE SET NULL
);
-- claims take the oldest queued run; requeues scan running leases
CREATE INDEX runs_queued ON runs (id) WHERE status = 'queued';
CREATE INDEX runs_leases ON runs (lease_expires_at) WHERE status = 'running';
CREATE INDEX runs_repository ON runs (repository, id);
CREATE INDEX runs_finished ON runs (finished_at);

CREATE TABLE jobs (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    stage TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled', 'skipped')),
    queued_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    duration_ms INTEGER,
    image_digest TEXT,
    PRIMARY KEY (run_id, attempt, name)
);
-- the jobs still open, closed when their attempt ends
CREATE INDEX jobs_open ON jobs (run_id) WHERE status IN ('queued', 'running');

-- append-only: a chunk starts where the previous one of its job ended
CREATE TABLE log_chunks (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    job TEXT NOT NULL,
    byte_offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    data BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, attempt, job, byte_offset)
);

-- webhook deliveries seen, for dedup; run_id is set in the transaction
-- that inserts the delivery
CREATE TABLE deliveries (
    source TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    run_id INTEGER REFERENCES runs (id) ON DELETE CASCADE,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (source, delivery_id)
);

CREATE TABLE runner_tokens (
    name TEXT PRIMARY KEY,
    token_sha256 BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
