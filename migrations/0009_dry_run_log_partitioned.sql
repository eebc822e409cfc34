-- dry_run_log becomes partitioned by month of local_date (the lead's local date when decided,
-- the date its dispatch key is for), so that retention drops whole months without blocking a
-- run or rewriting the table (python -m migrate maintain).
--
-- A unique index on a partitioned table must include the partition key. Both uniqueness rules
-- of DOMAIN.md survive that: a dispatch key hashes its local date, so (dispatch_key,
-- local_date) is unique exactly when dispatch_key is; and one run decides a lead once, at one
-- instant in one zone, so (run_id, lead_id, local_date) is unique exactly when (run_id,
-- lead_id) is.
CREATE TABLE dry_run_log_partitioned (
    id           bigint GENERATED ALWAYS AS IDENTITY,
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
    local_date   date NOT NULL,
    CONSTRAINT dry_run_log_send_has_key_v2
        CHECK (action <> 'would_send' OR (channel IS NOT NULL AND dispatch_key IS NOT NULL)),
    CONSTRAINT dry_run_log_deferred_has_not_before_v2
        CHECK (action <> 'deferred' OR not_before IS NOT NULL)
) PARTITION BY RANGE (local_date);

-- Adds the month partition holding `day` unless it exists; returns its name, or NULL.
-- CREATE + ATTACH (not CREATE ... PARTITION OF) so that adding one takes only a SHARE UPDATE
-- EXCLUSIVE lock on the parent, which never blocks a run's reads and writes.
CREATE FUNCTION dry_run_log_add_partition(day date) RETURNS text
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    first_day date := date_trunc('month', day)::date;
    next_day  date := (date_trunc('month', day) + interval '1 month')::date;
    name      text := format('dry_run_log_%s', to_char(first_day, 'YYYY_MM'));
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format(
        'CREATE TABLE %I (LIKE dry_run_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS, '
        'CHECK (local_date >= %L AND local_date < %L))', name, first_day, next_day);
    EXECUTE format(
        'ALTER TABLE dry_run_log ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
        name, first_day, next_day);
    RETURN name;
END $$;

-- The old table's rows, each with its local date in the lead's zone (the tenant's when the
-- lead's is null or unknown), as the agent computes it.
CREATE TEMPORARY TABLE dry_run_log_moved ON COMMIT DROP AS
SELECT d.*, (d.decided_at AT TIME ZONE coalesce(z.name, t.timezone, 'America/Sao_Paulo'))::date
           AS local_date
FROM dry_run_log d
LEFT JOIN leads l ON l.id = d.lead_id
LEFT JOIN tenants t ON t.id = d.tenant_id
LEFT JOIN pg_timezone_names z ON z.name = l.timezone;

ALTER TABLE dry_run_log RENAME TO dry_run_log_v1;
ALTER TABLE dry_run_log_partitioned RENAME TO dry_run_log;

-- Partitions for every month with history, and for the next six months.
SELECT dry_run_log_add_partition(month::date)
FROM generate_series(
    date_trunc('month', least(current_date - 1, (SELECT min(local_date) FROM dry_run_log_moved))),
    date_trunc('month', current_date + 1) + interval '6 months',
    interval '1 month') AS month;

INSERT INTO dry_run_log (id, run_id, tenant_id, lead_id, channel, action, reason, dispatch_key,
                         template, flag_enabled, not_before, details, decided_at, local_date)
OVERRIDING SYSTEM VALUE
SELECT id, run_id, tenant_id, lead_id, channel, action, reason, dispatch_key, template,
       flag_enabled, not_before, details, decided_at, local_date
FROM dry_run_log_moved;
SELECT setval(pg_get_serial_sequence('dry_run_log', 'id'),
              coalesce((SELECT max(id) FROM dry_run_log_moved), 0) + 1, false);

DROP TABLE dry_run_log_v1;

ALTER TABLE dry_run_log ADD CONSTRAINT dry_run_log_pkey PRIMARY KEY (id, local_date);
ALTER TABLE dry_run_log
    ADD CONSTRAINT dry_run_log_run_lead_key UNIQUE (run_id, lead_id, local_date);
-- A dispatch key is recorded as an intent at most once, so a retry can never double it.
CREATE UNIQUE INDEX dry_run_log_dispatch_key_uniq
    ON dry_run_log (dispatch_key, local_date) WHERE action = 'would_send';
-- "By tenant and time": a tenant's history (dashboards, audits, support), and the edge minutes
-- of the rate windows (send_counts has the whole ones).
CREATE INDEX dry_run_log_tenant_time_idx ON dry_run_log (tenant_id, decided_at);
