-- Publishing without the sequencing lock.
--
-- Writers (the hub's HTTP route on every hub but one, the publisher crate inside the caller's transaction) insert
-- into realtime_inbox and take no lock. One hub of the cluster, the *sequencer* (the holder of the advisory lock
-- 'realtime-sequencer'), moves committed inbox rows into the log in batches, under the head row lock, with the
-- next ids: ids are given after commit, in the order the sequencer sees the rows, so no later commit can fall
-- behind an id a reader has seen, and no open transaction holds anyone up. See docs/POSTGRES.md.
--
-- An event moved out of the inbox keeps its inbox_id, so the hub that inserted it learns its id by reading the log.
-- The functions of the first migration keep working: realtime_append (the locked path, for services that call it
-- and for batches with idempotency keys) and realtime_move_inbox (which hubs of the previous release call).

ALTER TABLE realtime_events ADD COLUMN inbox_id bigint;

-- The inbox is a queue: rows live for milliseconds. Vacuum it by the number of dead rows, not by its (tiny) size
-- (the sequencer also vacuums it itself as it moves rows: autovacuum visits a database only once a minute).
ALTER TABLE realtime_inbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000);

-- As realtime_store_locked, with the inbox id of each event (NULL for events that did not come from the inbox).
CREATE FUNCTION realtime_store_batch(
    base bigint, p_topics text[], p_scopes jsonb[], p_keys text[], p_seqs bigint[], p_payloads jsonb[],
    p_correlation_ids text[], p_traceparents text[], p_idempotency_keys text[], p_inbox_ids bigint[]
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    now_ts timestamptz := clock_timestamp();
    ids bigint[];
    stored bigint;
    n integer := coalesce(array_length(p_topics, 1), 0);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM unnest(p_idempotency_keys) AS k(key) WHERE k.key IS NOT NULL) THEN
        INSERT INTO realtime_events
            (id, topic, scope, stream_key, seq, payload, correlation_id, traceparent, created_at, inbox_id)
        SELECT base + u.ord, u.topic, u.scope, u.stream_key, u.seq, u.payload, u.correlation_id, u.traceparent,
               now_ts, u.inbox_id
        FROM unnest(p_topics, p_scopes, p_keys, p_seqs, p_payloads, p_correlation_ids, p_traceparents, p_inbox_ids)
            WITH ORDINALITY AS u(topic, scope, stream_key, seq, payload, correlation_id, traceparent, inbox_id, ord);
        IF n > 0 THEN
            UPDATE realtime_log_state SET head = base + n WHERE singleton;
            PERFORM pg_notify('realtime_events', (base + n)::text);
        END IF;
        RETURN ARRAY(SELECT base + g FROM generate_series(1, n) AS g);
    END IF;
    WITH input AS (
        SELECT u.*,
               CASE WHEN u.idem IS NULL THEN u.ord ELSE min(u.ord) OVER (PARTITION BY u.idem) END AS first_ord
        FROM unnest(p_topics, p_scopes, p_keys, p_seqs, p_payloads, p_correlation_ids, p_traceparents,
                    p_idempotency_keys, p_inbox_ids)
            WITH ORDINALITY AS u(topic, scope, stream_key, seq, payload, correlation_id, traceparent, idem, inbox_id,
                                 ord)
    ), firsts AS (
        SELECT i.*, k.event_id AS known_id
        FROM input i LEFT JOIN realtime_idempotency k ON k.key = i.idem
        WHERE i.ord = i.first_ord
    ), fresh AS (
        SELECT f.*, base + row_number() OVER (ORDER BY f.ord) AS new_id FROM firsts f WHERE f.known_id IS NULL
    ), inserted AS (
        INSERT INTO realtime_events
            (id, topic, scope, stream_key, seq, payload, correlation_id, traceparent, created_at, inbox_id)
        SELECT new_id, topic, scope, stream_key, seq, payload, correlation_id, traceparent, now_ts, inbox_id
        FROM fresh
        RETURNING id
    ), remembered AS (
        INSERT INTO realtime_idempotency (key, event_id, created_at)
        SELECT idem, new_id, now_ts FROM fresh WHERE idem IS NOT NULL
        RETURNING 1
    )
    SELECT array_agg(coalesce(f.known_id, n.new_id) ORDER BY i.ord), (SELECT count(*) FROM fresh)
    INTO ids, stored
    FROM input i
    JOIN firsts f ON f.ord = i.first_ord
    LEFT JOIN fresh n ON n.ord = i.first_ord;
    IF stored > 0 THEN
        UPDATE realtime_log_state SET head = base + stored WHERE singleton;
        PERFORM pg_notify('realtime_events', (base + stored)::text);
    END IF;
    RETURN ids;
END
$$;

-- The first migration's entry point, kept for anything that calls it: events without an inbox id.
CREATE OR REPLACE FUNCTION realtime_store_locked(
    base bigint, p_topics text[], p_scopes jsonb[], p_keys text[], p_seqs bigint[], p_payloads jsonb[],
    p_correlation_ids text[], p_traceparents text[], p_idempotency_keys text[]
) RETURNS bigint[]
LANGUAGE sql AS $$
    SELECT realtime_store_batch(base, p_topics, p_scopes, p_keys, p_seqs, p_payloads, p_correlation_ids,
                                p_traceparents, p_idempotency_keys,
                                array_fill(NULL::bigint, ARRAY[coalesce(array_length(p_topics, 1), 0)]))
$$;

-- Moves up to p_limit committed inbox rows into the log, in inbox order, each keeping its inbox id; returns how
-- many rows it took. The sequencer calls it; so do hubs of the previous release, and a hub whose publish waited
-- too long for the sequencer. The head row lock serializes all of them.
CREATE OR REPLACE FUNCTION realtime_move_inbox(p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    base bigint;
    taken integer;
    t text[]; s jsonb[]; k text[]; q bigint[]; p jsonb[]; c text[]; tp text[]; ik text[]; ii bigint[];
BEGIN
    -- A queue's table is mostly dead rows between vacuums: look by the index, which skips them, not by a scan.
    PERFORM 1 FROM realtime_inbox ORDER BY inbox_id LIMIT 1;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- Lock the head first: this waits for any other sequencing transaction to commit, so the inbox read below
    -- sees every row it has already moved as gone.
    SELECT head INTO base FROM realtime_log_state WHERE singleton FOR UPDATE;
    WITH moved AS (
        DELETE FROM realtime_inbox
        WHERE inbox_id IN (SELECT inbox_id FROM realtime_inbox ORDER BY inbox_id LIMIT p_limit)
        RETURNING *
    )
    SELECT array_agg(topic ORDER BY inbox_id), array_agg(scope ORDER BY inbox_id),
           array_agg(stream_key ORDER BY inbox_id), array_agg(seq ORDER BY inbox_id),
           array_agg(payload ORDER BY inbox_id), array_agg(correlation_id ORDER BY inbox_id),
           array_agg(traceparent ORDER BY inbox_id), array_agg(idempotency_key ORDER BY inbox_id),
           array_agg(inbox_id ORDER BY inbox_id), count(*)
    INTO t, s, k, q, p, c, tp, ik, ii, taken
    FROM moved;
    IF taken > 0 THEN
        PERFORM realtime_store_batch(base, t, s, k, q, p, c, tp, ik, ii);
    END IF;
    RETURN taken;
END
$$;
