-- Topic policies (docs/RETENTION.md): each policy removes its own events and keeps its own position. A row per
-- policy, named by its key (its patterns and every earlier policy's, so a change that could move a topic from one
-- policy to another starts a new row). Reads judge a resume point against the removal positions of the policies
-- their patterns reach, in the same snapshot as the page they read.

CREATE TABLE realtime_policies (
    key text PRIMARY KEY,
    name text NOT NULL,
    -- The newest id of this policy's events that retention or a cap removed.
    removed_through bigint NOT NULL CHECK (removed_through >= 0),
    -- Every event of this policy with an id up to here is gone: where the next removal starts looking.
    scanned_through bigint NOT NULL CHECK (scanned_through >= 0),
    removed bigint NOT NULL DEFAULT 0,
    used_at timestamptz NOT NULL DEFAULT now()
);
