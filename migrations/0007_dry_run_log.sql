-- The dry-run ledger: what the agent would have done, one row per lead per run.
-- An append-only audit log holding ids, never personal data; tenant_id and lead_id carry no
-- foreign keys (as in DOMAIN.md), so erasing a lead (LGPD) is never blocked by its history,
-- and a 10,000-row COPY skips 20,000 referential checks (~60 ms, measured by nox -s bench).
CREATE TABLE dry_run_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id       text NOT NULL,
    tenant_id    text NOT NULL,
    lead_id      uuid NOT NULL,
    channel      text CHECK (channel IN ('whatsapp', 'email', 'calendar')),
    action       text NOT NULL CHECK (action IN ('would_send', 'skipped', 'deferred')),
    reason       text NOT NULL,
    dispatch_key text,
    template     text,
    flag_enabled boolean NOT NULL,
    not_before   timestamptz,
    details      jsonb NOT NULL DEFAULT '[]'::jsonb,
    decided_at   timestamptz NOT NULL DEFAULT now(),
    -- Also the "by run" index: replaying a runId reads what it decided.
    CONSTRAINT dry_run_log_run_lead_key UNIQUE (run_id, lead_id),
    CONSTRAINT dry_run_log_send_has_key
        CHECK (action <> 'would_send' OR (channel IS NOT NULL AND dispatch_key IS NOT NULL)),
    CONSTRAINT dry_run_log_deferred_has_not_before
        CHECK (action <> 'deferred' OR not_before IS NOT NULL)
);

-- A dispatch key is recorded as an intent at most once, so a retry can never double it.
CREATE UNIQUE INDEX dry_run_log_dispatch_key_uniq
    ON dry_run_log (dispatch_key) WHERE action = 'would_send';
-- "By tenant and time": cooldown per lead and the dashboard's history.
CREATE INDEX dry_run_log_tenant_lead_time_idx ON dry_run_log (tenant_id, lead_id, decided_at DESC);
-- Rate caps count a tenant's recent intended sends per channel.
CREATE INDEX dry_run_log_tenant_channel_time_idx
    ON dry_run_log (tenant_id, channel, decided_at) WHERE action = 'would_send';
