-- SQLite keeps ids as TEXT, lists as JSON arrays and times as INTEGER microseconds since the
-- epoch, so that ordering and range filters compare numbers rather than formatted strings.
CREATE TABLE api_keys (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL,
    prefix                TEXT NOT NULL,
    key_hash              TEXT NOT NULL UNIQUE,
    scopes                TEXT NOT NULL,
    allowed_ips           TEXT NOT NULL DEFAULT '[]',
    rate_limit_per_minute INTEGER,
    expires_at            INTEGER,
    created_at            INTEGER NOT NULL,
    last_used_at          INTEGER,
    revoked_at            INTEGER
);
CREATE INDEX api_keys_created ON api_keys (created_at DESC, id DESC);

CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    at          INTEGER NOT NULL,
    request_id  TEXT NOT NULL,
    api_key_id  TEXT,
    client_ip   TEXT,
    project_id  TEXT,
    command     TEXT,
    exit_code   INTEGER,
    outcome     TEXT NOT NULL,
    duration_ms INTEGER
);
CREATE INDEX audit_log_at ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_project ON audit_log (project_id, at DESC);
CREATE INDEX audit_log_key ON audit_log (api_key_id, at DESC);
