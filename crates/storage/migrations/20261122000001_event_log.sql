-- The realtime event log.
--
-- Ids are dense and gap-free in visibility order: every id is assigned while holding the row lock of
-- realtime_log_state, which is held until commit. A transaction that assigns ids therefore commits before the next
-- one can assign any, so once a reader has seen id N, no event with id < N can appear later. Publishers that need
-- their own transaction write to realtime_inbox instead (no lock, no NOTIFY); hubs move committed inbox rows into
-- the log in batches. See docs/POSTGRES.md.

CREATE TABLE realtime_log_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    head bigint NOT NULL CHECK (head >= 0)
);
INSERT INTO realtime_log_state (singleton, head) VALUES (true, 0);

CREATE TABLE realtime_events (
    id bigint PRIMARY KEY,
    topic text NOT NULL,
    scope jsonb NOT NULL,
    stream_key text,
    seq bigint,
    payload jsonb NOT NULL,
    correlation_id text,
    traceparent text,
    created_at timestamptz NOT NULL,
    org_id text GENERATED ALWAYS AS (scope ->> 'org_id') STORED,
    project_id text GENERATED ALWAYS AS (scope ->> 'project_id') STORED,
    env text GENERATED ALWAYS AS (scope ->> 'env') STORED,
    run_id text GENERATED ALWAYS AS (scope ->> 'run_id') STORED,
    task_id text GENERATED ALWAYS AS (scope ->> 'task_id') STORED,
    deploy_id text GENERATED ALWAYS AS (scope ->> 'deploy_id') STORED
);

-- Catch-up by id uses the primary key; filtered replay uses these.
CREATE INDEX realtime_events_topic_id ON realtime_events (topic, id);
CREATE INDEX realtime_events_project_id ON realtime_events (project_id, id) WHERE project_id IS NOT NULL;
CREATE INDEX realtime_events_run_id ON realtime_events (run_id, id) WHERE run_id IS NOT NULL;
CREATE INDEX realtime_events_deploy_id ON realtime_events (deploy_id, id) WHERE deploy_id IS NOT NULL;
CREATE INDEX realtime_events_task_id ON realtime_events (task_id, id) WHERE task_id IS NOT NULL;
CREATE INDEX realtime_events_org_id ON realtime_events (org_id, id) WHERE org_id IS NOT NULL;

-- Idempotency keys of stored events: a retried publish answers the first id instead of storing twice.
CREATE TABLE realtime_idempotency (
    key text PRIMARY KEY,
    event_id bigint NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX realtime_idempotency_created_at ON realtime_idempotency (created_at);

-- Events published inside a publisher's own transaction, waiting to get their ids.
CREATE TABLE realtime_inbox (
    inbox_id bigserial PRIMARY KEY,
    topic text NOT NULL,
    scope jsonb NOT NULL,
    stream_key text,
    seq bigint,
    payload jsonb NOT NULL,
    correlation_id text,
    traceparent text,
    idempotency_key text,
    queued_at timestamptz NOT NULL DEFAULT now()
);

-- Stores a batch given as parallel arrays; the caller holds the head row lock and passes the head as `base`.
-- An event whose idempotency key is known (from before, or earlier in the batch) is not stored again: its slot
-- in the answer holds the id it got the first time. Returns the ids in input order and moves the head.
CREATE FUNCTION realtime_store_locked(
    base bigint, p_topics text[], p_scopes jsonb[], p_keys text[], p_seqs bigint[], p_payloads jsonb[],
    p_correlation_ids text[], p_traceparents text[], p_idempotency_keys text[]
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    now_ts timestamptz := clock_timestamp();
    ids bigint[];
    stored bigint;
    n integer := coalesce(array_length(p_topics, 1), 0);
BEGIN
    -- Fast path: no idempotency key in the batch (the common case), so every event is new.
    IF NOT EXISTS (SELECT 1 FROM unnest(p_idempotency_keys) AS k(key) WHERE k.key IS NOT NULL) THEN
        INSERT INTO realtime_events
            (id, topic, scope, stream_key, seq, payload, correlation_id, traceparent, created_at)
        SELECT base + u.ord, u.topic, u.scope, u.stream_key, u.seq, u.payload, u.correlation_id, u.traceparent, now_ts
        FROM unnest(p_topics, p_scopes, p_keys, p_seqs, p_payloads, p_correlation_ids, p_traceparents)
            WITH ORDINALITY AS u(topic, scope, stream_key, seq, payload, correlation_id, traceparent, ord);
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
                    p_idempotency_keys)
            WITH ORDINALITY AS u(topic, scope, stream_key, seq, payload, correlation_id, traceparent, idem, ord)
    ), firsts AS (
        SELECT i.*, k.event_id AS known_id
        FROM input i LEFT JOIN realtime_idempotency k ON k.key = i.idem
        WHERE i.ord = i.first_ord
    ), fresh AS (
        SELECT f.*, base + row_number() OVER (ORDER BY f.ord) AS new_id FROM firsts f WHERE f.known_id IS NULL
    ), inserted AS (
        INSERT INTO realtime_events
            (id, topic, scope, stream_key, seq, payload, correlation_id, traceparent, created_at)
        SELECT new_id, topic, scope, stream_key, seq, payload, correlation_id, traceparent, now_ts FROM fresh
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

-- Appends a batch; returns its ids. One statement, one round trip; the head row lock is held until the calling
-- transaction commits.
CREATE FUNCTION realtime_append(
    p_topics text[], p_scopes jsonb[], p_keys text[], p_seqs bigint[], p_payloads jsonb[],
    p_correlation_ids text[], p_traceparents text[], p_idempotency_keys text[]
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    base bigint;
BEGIN
    IF coalesce(array_length(p_topics, 1), 0) = 0 THEN
        RETURN ARRAY[]::bigint[];
    END IF;
    -- Waits for any other sequencing transaction to commit; the statements after it see what that one stored.
    SELECT head INTO base FROM realtime_log_state WHERE singleton FOR UPDATE;
    RETURN realtime_store_locked(base, p_topics, p_scopes, p_keys, p_seqs, p_payloads, p_correlation_ids,
                                 p_traceparents, p_idempotency_keys);
END
$$;

-- Moves up to p_limit committed inbox rows into the log, in inbox order; returns how many rows it took.
CREATE FUNCTION realtime_move_inbox(p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    base bigint;
    taken integer;
    t text[]; s jsonb[]; k text[]; q bigint[]; p jsonb[]; c text[]; tp text[]; ik text[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM realtime_inbox) THEN
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
           array_agg(traceparent ORDER BY inbox_id), array_agg(idempotency_key ORDER BY inbox_id), count(*)
    INTO t, s, k, q, p, c, tp, ik, taken
    FROM moved;
    IF taken > 0 THEN
        PERFORM realtime_store_locked(base, t, s, k, q, p, c, tp, ik);
    END IF;
    RETURN taken;
END
$$;
