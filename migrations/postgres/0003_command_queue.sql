-- The persisted command queue. Highest priority first, then arrival order (`seq`).
CREATE TABLE commands (
    id               UUID PRIMARY KEY,
    seq              BIGINT GENERATED ALWAYS AS IDENTITY,
    project_id       TEXT NOT NULL,
    command          TEXT NOT NULL,
    workdir          TEXT,
    env              JSONB NOT NULL DEFAULT '{}',
    timeout_secs     INTEGER NOT NULL,
    priority         SMALLINT NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 1,
    api_key_id       UUID,
    request_id       TEXT NOT NULL,
    client_ip        TEXT,
    exit_code        INTEGER,
    stdout           TEXT,
    stderr           TEXT,
    stdout_truncated BOOLEAN NOT NULL DEFAULT FALSE,
    stderr_truncated BOOLEAN NOT NULL DEFAULT FALSE,
    error            TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    -- While running: which worker holds it, until when, and whether someone asked to stop it.
    claimed_by       TEXT,
    lease_until      TIMESTAMPTZ,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX commands_next ON commands (priority DESC, seq) WHERE status = 'queued';
CREATE INDEX commands_leases ON commands (lease_until) WHERE status = 'running';
CREATE INDEX commands_listing ON commands (created_at DESC, id DESC);

-- Wakes idle workers on every replica when work arrives, instead of tight polling.
CREATE FUNCTION rdev_commands_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rdev_commands', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER commands_enqueued AFTER INSERT ON commands FOR EACH STATEMENT EXECUTE FUNCTION rdev_commands_notify();
