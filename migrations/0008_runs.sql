-- The run registry: a runId belongs to the tenant whose run first claimed it, in that run's own
-- transaction. Two runs with one runId serialise on this primary key, so the same runId for
-- another tenant is refused even when both arrive at the same instant, and a replay reads only
-- its own tenant's decisions.
CREATE TABLE runs (
    run_id     text PRIMARY KEY,
    tenant_id  text NOT NULL REFERENCES tenants (id),
    mode       text NOT NULL CHECK (mode IN ('dry_run', 'live')),
    started_at timestamptz NOT NULL DEFAULT now()
);
-- Retention removes old runs together with their decisions.
CREATE INDEX runs_started_at_idx ON runs (started_at);

-- Runs recorded before the registry existed keep replaying (the first tenant to use an id wins).
INSERT INTO runs (run_id, tenant_id, mode, started_at)
SELECT DISTINCT ON (run_id) run_id, tenant_id, 'dry_run', decided_at
FROM dry_run_log
ORDER BY run_id, decided_at, id;
