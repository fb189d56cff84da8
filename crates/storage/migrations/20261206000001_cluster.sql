-- What the hubs of a cluster keep beside the log: revocations (of a token subject or a token id), each until its
-- own expiry, so that they survive a hub's restart. Messages between hubs go by NOTIFY on realtime_cluster and
-- are not stored. See docs/SECURITY.md.

CREATE TABLE realtime_revocations (
    key text PRIMARY KEY,
    value text NOT NULL,
    until timestamptz NOT NULL
);
