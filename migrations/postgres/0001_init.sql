-- API keys: only the SHA-256 of the secret is kept; `prefix` is what people see in listings.
CREATE TABLE api_keys (
    id                    UUID PRIMARY KEY,
    name                  TEXT NOT NULL,
    prefix                TEXT NOT NULL,
    key_hash              TEXT NOT NULL UNIQUE,
    scopes                TEXT[] NOT NULL,
    allowed_ips           TEXT[] NOT NULL DEFAULT '{}',
    rate_limit_per_minute INTEGER,
    expires_at            TIMESTAMPTZ,
    created_at            TIMESTAMPTZ NOT NULL,
    last_used_at          TIMESTAMPTZ,
    revoked_at            TIMESTAMPTZ
);
CREATE INDEX api_keys_created ON api_keys (created_at DESC, id DESC);

-- One row per execution and per rejected attempt; read newest first.
CREATE TABLE audit_log (
    id          UUID PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    request_id  TEXT NOT NULL,
    api_key_id  UUID,
    client_ip   TEXT,
    project_id  TEXT,
    command     TEXT,
    exit_code   INTEGER,
    outcome     TEXT NOT NULL,
    duration_ms BIGINT
);
CREATE INDEX audit_log_at ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_project ON audit_log (project_id, at DESC);
CREATE INDEX audit_log_key ON audit_log (api_key_id, at DESC);
