-- Idempotency-Key reservations, per API key: `status` is NULL while the first request is being
-- answered (until `locked_until`, after which the same request may take it over), then the
-- answer replayed to every repeat. Purged 24 h after `created_at`.
CREATE TABLE idempotency_keys (
    api_key_id   TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    locked_until INTEGER NOT NULL,
    status       INTEGER,
    location     TEXT,
    body         TEXT,
    PRIMARY KEY (api_key_id, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);
