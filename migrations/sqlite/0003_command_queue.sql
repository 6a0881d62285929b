-- The persisted command queue (see the Postgres migration). `seq` is the rowid: arrival order.
CREATE TABLE commands (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    project_id       TEXT NOT NULL,
    command          TEXT NOT NULL,
    workdir          TEXT,
    env              TEXT NOT NULL DEFAULT '{}',
    timeout_secs     INTEGER NOT NULL,
    priority         INTEGER NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 1,
    api_key_id       TEXT,
    request_id       TEXT NOT NULL,
    client_ip        TEXT,
    exit_code        INTEGER,
    stdout           TEXT,
    stderr           TEXT,
    stdout_truncated INTEGER NOT NULL DEFAULT 0,
    stderr_truncated INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    claimed_by       TEXT,
    lease_until      INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX commands_next ON commands (status, priority DESC, seq);
CREATE INDEX commands_leases ON commands (status, lease_until);
CREATE INDEX commands_listing ON commands (created_at DESC, id DESC);
