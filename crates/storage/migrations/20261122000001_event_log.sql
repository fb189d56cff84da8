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

-- Events published inside a publisher's own transaction, waiting to get their ids.
CREATE TABLE realtime_inbox (
    inbox_id bigserial PRIMARY KEY,
    topic text NOT NULL,
    scope jsonb NOT NULL,
    stream_key text,
    seq bigint,
    payload jsonb NOT NULL,
    correlation_id text,
    queued_at timestamptz NOT NULL DEFAULT now()
);

-- Appends a batch given as parallel arrays; returns the first id (the others follow densely).
-- One statement, one round trip; the head row lock is held until the calling transaction commits.
CREATE FUNCTION realtime_append(
    p_topics text[], p_scopes jsonb[], p_keys text[], p_seqs bigint[], p_payloads jsonb[], p_correlation_ids text[]
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint := coalesce(array_length(p_topics, 1), 0);
    base bigint;
    now_ts timestamptz;
BEGIN
    IF n = 0 THEN
        RETURN NULL;
    END IF;
    UPDATE realtime_log_state SET head = head + n WHERE singleton RETURNING head - n INTO base;
    now_ts := clock_timestamp();
    INSERT INTO realtime_events (id, topic, scope, stream_key, seq, payload, correlation_id, created_at)
    SELECT base + u.ord, u.topic, u.scope, u.stream_key, u.seq, u.payload, u.correlation_id, now_ts
    FROM unnest(p_topics, p_scopes, p_keys, p_seqs, p_payloads, p_correlation_ids)
        WITH ORDINALITY AS u(topic, scope, stream_key, seq, payload, correlation_id, ord);
    PERFORM pg_notify('realtime_events', (base + n)::text);
    RETURN base + 1;
END
$$;

-- Moves up to p_limit committed inbox rows into the log, in inbox order; returns how many moved.
CREATE FUNCTION realtime_move_inbox(p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    base bigint;
    moved integer;
    now_ts timestamptz;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM realtime_inbox) THEN
        RETURN 0;
    END IF;
    -- Lock the head first: this statement waits for any other sequencing transaction to commit, so the
    -- inbox read below sees every row it has already moved as gone.
    SELECT head INTO base FROM realtime_log_state WHERE singleton FOR UPDATE;
    now_ts := clock_timestamp();
    WITH taken AS (
        DELETE FROM realtime_inbox
        WHERE inbox_id IN (SELECT inbox_id FROM realtime_inbox ORDER BY inbox_id LIMIT p_limit)
        RETURNING *
    ), numbered AS (
        SELECT base + row_number() OVER (ORDER BY inbox_id) AS id, * FROM taken
    )
    INSERT INTO realtime_events (id, topic, scope, stream_key, seq, payload, correlation_id, created_at)
    SELECT id, topic, scope, stream_key, seq, payload, correlation_id, now_ts FROM numbered;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved > 0 THEN
        UPDATE realtime_log_state SET head = base + moved WHERE singleton;
        PERFORM pg_notify('realtime_events', (base + moved)::text);
    END IF;
    RETURN moved;
END
$$;
