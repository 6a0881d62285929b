-- Secrets replaced by a rotation keep working until `valid_until` (the rotation's grace period).
CREATE TABLE api_key_previous_secrets (
    key_hash    TEXT PRIMARY KEY,
    key_id      UUID NOT NULL REFERENCES api_keys (id),
    valid_until TIMESTAMPTZ NOT NULL
);
CREATE INDEX api_key_previous_secrets_key ON api_key_previous_secrets (key_id);

-- Sliding-window rate limiting: hits per key per second; a window is the sum of its last 60
-- buckets, so the cost of a check does not grow with the limit.
CREATE TABLE rate_limit_buckets (
    key_id UUID    NOT NULL,
    second BIGINT  NOT NULL,
    hits   INTEGER NOT NULL,
    PRIMARY KEY (key_id, second)
);

-- One round trip per request. The advisory lock serialises the hits of one key across all
-- replicas; being VOLATILE, each statement below sees what earlier lock holders committed, so
-- N replicas together allow exactly the limit. The commit does not wait for the WAL flush: a
-- database crash may forget the last milliseconds of hits, which is harmless for a rate limit
-- and saves the fsync that otherwise dominates the cost. Expired buckets are purged in batches
-- by the servers' maintenance task, not here.
CREATE FUNCTION rdev_rate_limit_hit(p_key UUID, p_now BIGINT, p_window INTEGER, p_limit INTEGER)
RETURNS TABLE (allowed BOOLEAN, used INTEGER, oldest BIGINT)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_used   INTEGER;
    v_oldest BIGINT;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM pg_advisory_xact_lock(hashtextextended(p_key::text, 0));
    SELECT COALESCE(SUM(hits), 0), MIN(second) INTO v_used, v_oldest
    FROM rate_limit_buckets WHERE key_id = p_key AND second > p_now - p_window;
    IF v_used < p_limit THEN
        INSERT INTO rate_limit_buckets (key_id, second, hits) VALUES (p_key, p_now, 1)
        ON CONFLICT (key_id, second) DO UPDATE SET hits = rate_limit_buckets.hits + 1;
        RETURN QUERY SELECT TRUE, v_used + 1, COALESCE(v_oldest, p_now);
    ELSE
        RETURN QUERY SELECT FALSE, v_used, v_oldest;
    END IF;
END
$$;
