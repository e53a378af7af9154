-- The server's queue and state on PostgreSQL. Every integer is BIGINT (it
-- decodes as i64, as SQLite's INTEGER does); times are Unix milliseconds
-- from the server's clock; JSON is stored as text (only the server reads it).

CREATE TABLE runs (
    id BIGSERIAL PRIMARY KEY,
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
    attempt BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    retry_of BIGINT REFERENCES runs (id) ON DELETE SET NULL
);
-- claims take the oldest queued run; requeues scan running leases
CREATE INDEX runs_queued ON runs (id) WHERE status = 'queued';
CREATE INDEX runs_leases ON runs (lease_expires_at) WHERE status = 'running';
CREATE INDEX runs_repository ON runs (repository, id);
CREATE INDEX runs_finished ON runs (finished_at);

CREATE TABLE jobs (
    run_id BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    name TEXT NOT NULL,
    position BIGINT NOT NULL,
    stage TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled', 'skipped')),
    queued_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    duration_ms BIGINT,
    image_digest TEXT,
    PRIMARY KEY (run_id, attempt, name)
);
-- the jobs still open, closed when their attempt ends
CREATE INDEX jobs_open ON jobs (run_id) WHERE status IN ('queued', 'running');

-- append-only: a chunk starts where the previous one of its job ended
CREATE TABLE log_chunks (
    run_id BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    job TEXT NOT NULL,
    byte_offset BIGINT NOT NULL,
    length BIGINT NOT NULL,
    data BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, attempt, job, byte_offset)
);

-- webhook deliveries seen, for dedup; run_id is set in the transaction
-- that inserts the delivery
CREATE TABLE deliveries (
    source TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    run_id BIGINT REFERENCES runs (id) ON DELETE CASCADE,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (source, delivery_id)
);

CREATE TABLE runner_tokens (
    name TEXT PRIMARY KEY,
    token_sha256 BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
