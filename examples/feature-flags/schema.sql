-- The feature-flag service's tables and the view the hub's database source reads (examples/feature-flags).
-- Apply to the database the hub polls:  psql "$DATABASE_URL" -f examples/feature-flags/schema.sql

CREATE TABLE IF NOT EXISTS environments (
    id         text PRIMARY KEY,
    project_id text NOT NULL,
    key        text NOT NULL                      -- what browsers name it: ?env=prod
);

CREATE TABLE IF NOT EXISTS audit_log (
    id             bigserial PRIMARY KEY,
    project_id     text NOT NULL,
    environment_id text NOT NULL REFERENCES environments (id),
    entity         text NOT NULL,                 -- feature, segment, …
    entity_id      text NOT NULL,
    action         text NOT NULL,                 -- created | updated | deleted
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS pending_changes (
    id             bigserial PRIMARY KEY,
    project_id     text NOT NULL,
    environment_id text NOT NULL REFERENCES environments (id),
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS pending_change_entities (
    id                bigserial PRIMARY KEY,
    pending_change_id bigint NOT NULL REFERENCES pending_changes (id),
    entity            text NOT NULL,
    entity_id         text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- One row per change the browsers must hear of. `created_at` must be no earlier than the start of the transaction
-- that made the row visible (docs/SOURCES.md): a pending change's entities may be added in a later transaction, so
-- its rows take the later of the two times.
CREATE OR REPLACE VIEW v_realtime_events AS
    SELECT 'audit'::text                AS source,
           'audit:' || a.id             AS event_id,
           a.project_id,
           a.environment_id,
           e.key                        AS environment_key,
           a.entity,
           a.entity_id,
           a.action,
           a.created_at
      FROM audit_log a
      JOIN environments e ON e.id = a.environment_id
    UNION ALL
    SELECT 'pending'::text,
           'pending:' || pe.id,
           p.project_id,
           p.environment_id,
           e.key,
           'pending_change'::text,
           pe.entity_id,
           'created'::text,
           greatest(p.created_at, pe.created_at)
      FROM pending_changes p
      JOIN pending_change_entities pe ON pe.pending_change_id = p.id
      JOIN environments e ON e.id = p.environment_id;

-- Optional: wake the hub as soon as a change commits instead of at its next poll. This adds nothing to the
-- service's own writes; a lost notification only costs up to one poll interval.
CREATE OR REPLACE FUNCTION notify_realtime_sources() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('realtime_sources', '');
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS audit_log_notify ON audit_log;
CREATE TRIGGER audit_log_notify AFTER INSERT ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION notify_realtime_sources();
DROP TRIGGER IF EXISTS pending_change_entities_notify ON pending_change_entities;
CREATE TRIGGER pending_change_entities_notify AFTER INSERT ON pending_change_entities
    FOR EACH STATEMENT EXECUTE FUNCTION notify_realtime_sources();
