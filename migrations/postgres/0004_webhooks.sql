-- Webhooks: subscriptions, an outbox of events, one delivery per (webhook, event), every attempt.
--
-- A finished command writes its event into `webhook_events` in the transaction that stores its
-- final state, so a crash cannot lose it. Dispatchers on every replica fan events out into
-- `webhook_deliveries` and claim due deliveries with a lease (`FOR UPDATE SKIP LOCKED`), like
-- the command queue, so each attempt is made by one replica.
CREATE TABLE webhooks (
    id          UUID PRIMARY KEY,
    url         TEXT NOT NULL,
    description TEXT,
    events      JSONB NOT NULL,
    -- `whsec_…`: kept (not hashed) because every delivery is signed with it.
    secret      TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL DEFAULT TRUE,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhooks_listing ON webhooks (created_at, id);

CREATE TABLE webhook_events (
    id          UUID PRIMARY KEY,
    event       TEXT NOT NULL,
    -- The exact body every subscriber receives (TEXT, not JSONB, so the signed bytes never change).
    payload     TEXT NOT NULL,
    traceparent TEXT,
    occurred_at TIMESTAMPTZ NOT NULL,
    fanned_out  BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX webhook_events_unfanned ON webhook_events (occurred_at) WHERE NOT fanned_out;

CREATE TABLE webhook_deliveries (
    id              UUID PRIMARY KEY,
    webhook_id      UUID NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        UUID NOT NULL REFERENCES webhook_events (id),
    event           TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    next_attempt_at TIMESTAMPTZ,
    claimed_by      TEXT,
    lease_until     TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL,
    delivered_at    TIMESTAMPTZ,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_listing ON webhook_deliveries (webhook_id, created_at DESC, id DESC);

CREATE TABLE webhook_attempts (
    delivery_id   UUID NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt       INTEGER NOT NULL,
    at            TIMESTAMPTZ NOT NULL,
    status_code   INTEGER,
    latency_ms    BIGINT NOT NULL,
    error         TEXT,
    response_body TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
