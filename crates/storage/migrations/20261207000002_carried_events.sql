-- Notifications that carry their events.
--
-- Every transaction that gives ids sends one NOTIFY realtime_events. Until now its payload was the new head, and
-- every hub then read the log from its cursor: a round trip per hub per transaction, on the path of every live
-- delivery. Now a transaction of at most 32 events whose notification fits PostgreSQL's payload limit (8000
-- bytes) sends the events themselves, as the log stores them, and a hub whose cursor is right below the first one
-- delivers them without reading the log. Anything else (a larger transaction, a hub that missed something) is
-- still read from the log. Notifications are delivered in commit order, which is id order under the head row lock.
--
-- The payload: {"events": [[id, created_at in microseconds since 1970, topic, scope, stream_key, seq, payload,
-- correlation_id, traceparent], …]} in id order; or the new head, as before. Hubs of earlier releases take any
-- payload as a wake-up. See docs/POSTGRES.md.
--
-- Notifications wait in one queue for the whole server (8 GB) until every listening session has read them, and a
-- session that does not read (a frozen process, a listener idle in a transaction) holds them all. Events are
-- carried only while that queue is under 1 % full: a stalled listener would otherwise let notifications of up to
-- 8000 bytes, not a few dozen, fill it, and then every NOTIFY (every append) fails.

-- Notifies the events with ids first_id … last_id, which the calling transaction has just stored.
CREATE FUNCTION realtime_notify_events(first_id bigint, last_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    message text;
BEGIN
    IF last_id - first_id < 32 AND pg_notification_queue_usage() < 0.01 THEN
        SELECT json_build_object('events', json_agg(json_build_array(
                   id, (extract(epoch FROM created_at) * 1000000)::bigint, topic, scope, stream_key, seq, payload,
                   correlation_id, traceparent) ORDER BY id))::text
        INTO message
        FROM realtime_events WHERE id BETWEEN first_id AND last_id;
        IF octet_length(message) < 8000 THEN
            PERFORM pg_notify('realtime_events', message);
            RETURN;
        END IF;
    END IF;
    PERFORM pg_notify('realtime_events', last_id::text);
END
$$;

-- As before (20261124000001_sequencer.sql), with the notification of realtime_notify_events.
CREATE OR REPLACE FUNCTION realtime_store_batch(
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
            PERFORM realtime_notify_events(base + 1, base + n);
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
        PERFORM realtime_notify_events(base + 1, base + stored);
    END IF;
    RETURN ids;
END
$$;
