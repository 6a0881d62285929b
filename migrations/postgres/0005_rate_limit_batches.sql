-- The hits of several requests in one round trip: each replica sends the hits waiting at that
-- moment together (see adapters/group_commit.rs). Each hit is decided exactly as one call of
-- rdev_rate_limit_hit would decide it, in key order so that two replicas taking the same keys'
-- advisory locks in one transaction can never wait on each other in a cycle. Results come back
-- with the position (ord) of their hit in the arrays.
CREATE FUNCTION rdev_rate_limit_hits(p_keys UUID[], p_now BIGINT, p_window INTEGER, p_limits INTEGER[])
RETURNS TABLE (ord INTEGER, allowed BOOLEAN, used INTEGER, oldest BIGINT)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_hit RECORD;
BEGIN
    FOR v_hit IN
        SELECT k.key, k.ord, l.lim
        FROM unnest(p_keys) WITH ORDINALITY AS k(key, ord)
        JOIN unnest(p_limits) WITH ORDINALITY AS l(lim, ord) USING (ord)
        ORDER BY k.key, k.ord
    LOOP
        RETURN QUERY SELECT v_hit.ord::INTEGER, h.allowed, h.used, h.oldest
            FROM rdev_rate_limit_hit(v_hit.key, p_now, p_window, v_hit.lim) AS h;
    END LOOP;
END
$$;
