-- Leases of rate-limit budget: a replica takes up to p_want of a key's remaining budget in one
-- call, recording them as hits of second p_now before any is used, then admits that many
-- requests of that second from memory. What it does not use it gives back once the second is
-- over (UPDATE … SET hits = hits - n). Under the same per-key advisory lock as
-- rdev_rate_limit_hit, so replicas together never record more than the limit in a window; a
-- lease a crashed replica never gave back only refuses early, until it leaves the window.
CREATE FUNCTION rdev_rate_limit_take(p_key UUID, p_now BIGINT, p_window INTEGER, p_limit INTEGER, p_want INTEGER)
RETURNS TABLE (granted INTEGER, used INTEGER, oldest BIGINT)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_used    INTEGER;
    v_oldest  BIGINT;
    v_granted INTEGER;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM pg_advisory_xact_lock(hashtextextended(p_key::text, 0));
    SELECT COALESCE(SUM(hits), 0), MIN(second) INTO v_used, v_oldest
    FROM rate_limit_buckets WHERE key_id = p_key AND second > p_now - p_window;
    v_granted := LEAST(GREATEST(p_limit - v_used, 0), GREATEST(p_want, 0));
    IF v_granted > 0 THEN
        INSERT INTO rate_limit_buckets (key_id, second, hits) VALUES (p_key, p_now, v_granted)
        ON CONFLICT (key_id, second) DO UPDATE SET hits = rate_limit_buckets.hits + v_granted;
    END IF;
    RETURN QUERY SELECT v_granted, v_used + v_granted, COALESCE(v_oldest, p_now);
END
$$;

-- A single hit is a lease of one: the window's rule is written once, above.
CREATE OR REPLACE FUNCTION rdev_rate_limit_hit(p_key UUID, p_now BIGINT, p_window INTEGER, p_limit INTEGER)
RETURNS TABLE (allowed BOOLEAN, used INTEGER, oldest BIGINT)
LANGUAGE sql VOLATILE AS $$
    SELECT t.granted > 0, t.used, t.oldest FROM rdev_rate_limit_take(p_key, p_now, p_window, p_limit, 1) AS t
$$;
