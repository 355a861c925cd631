-- Backfill and re-sync runs against the Clerk Backend API: when, what they
-- found and did, for GET /internal/v1/sync/status and operators.
CREATE TABLE sync_runs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- 'all', or the Clerk organization id of a single-organization sync.
    scope        text NOT NULL,
    prune        boolean NOT NULL DEFAULT false,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    report       jsonb NOT NULL DEFAULT '{}'::jsonb,
    error        text
);
CREATE INDEX sync_runs_started_idx ON sync_runs (started_at DESC);
