-- Sessions: the folder and variables a session's next command starts with. `running_command_id`
-- is the lease that lets one command at a time run in a session, across replicas: taken when a
-- command starts (only when free, or when its holder's `lease_until` passed), given back in the
-- transaction that stores the command's end and the session's next state.
CREATE TABLE sessions (
    id                 TEXT PRIMARY KEY,
    project_id         TEXT NOT NULL,
    api_key_id         TEXT,
    workdir            TEXT,
    env                TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    last_used_at       INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL,
    running_command_id TEXT,
    lease_until        INTEGER
);
CREATE INDEX sessions_expiry ON sessions (expires_at);
CREATE INDEX sessions_by_key ON sessions (api_key_id, created_at);
-- A session's commands, and what a queued command's stdin gets (cleared once it has run).
ALTER TABLE commands ADD COLUMN session_id TEXT;
ALTER TABLE commands ADD COLUMN stdin BLOB;
