-- Secrets replaced by a rotation keep working until `valid_until` (microseconds).
CREATE TABLE api_key_previous_secrets (
    key_hash    TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL REFERENCES api_keys (id),
    valid_until INTEGER NOT NULL
);
CREATE INDEX api_key_previous_secrets_key ON api_key_previous_secrets (key_id);

-- Sliding-window rate limiting: hits per key per second (see the Postgres migration).
CREATE TABLE rate_limit_buckets (
    key_id TEXT    NOT NULL,
    second INTEGER NOT NULL,
    hits   INTEGER NOT NULL,
    PRIMARY KEY (key_id, second)
) WITHOUT ROWID;
