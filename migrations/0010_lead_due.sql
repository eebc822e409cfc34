-- Per-lead due state, per mode: which leads a run may take, as an index range scan whose cost
-- follows the batch, not the tenant's size or history (DOMAIN.md, "Which leads a run takes").
--
-- A row is `ready` (due: taken oldest `lead_created_at` first) or waiting until `due_at`
-- ('infinity' = parked until the lead changes). Runs move waiting rows whose time has come to
-- ready (at most a bounded number per run), take ready rows FOR UPDATE SKIP LOCKED, and set
-- each decided lead's next due time in the transaction that records the decision. The ledger
-- stays the history; this table is only its index.
--
-- Other services INSERT and UPDATE leads with plain SQL: the triggers below keep this table
-- right. A new lead is due at once; a lead whose contact data, consent, opt-out, stage or zone
-- changes is ready to be examined again (the decision rules still apply the cooldown).
-- No foreign key to leads: a run updates each row twice in one transaction (made ready, then
-- decided), and PostgreSQL re-checks a foreign key on a row its own transaction wrote, which
-- cost 36 ms per 1,000 leads (EXPLAIN ANALYZE). The rows are created by the insert trigger
-- and erased by the delete trigger below, so none can be orphaned.
CREATE TABLE lead_due (
    lead_id         uuid NOT NULL,
    mode            text NOT NULL CHECK (mode IN ('dry_run', 'live')),
    tenant_id       text NOT NULL,
    lead_created_at timestamptz NOT NULL,
    ready           boolean NOT NULL DEFAULT true,
    due_at          timestamptz NOT NULL DEFAULT '-infinity',
    -- The mode's last send (would_send in dry runs): the cooldown counts from it.
    last_sent_at    timestamptz,
    -- The dispatch keys sent on the lead's latest local date of a send: an intent repeated
    -- that day (possible with a cooldown under 24 h) is skipped without reading the ledger.
    recent_keys      text[] NOT NULL DEFAULT '{}',
    recent_keys_date date,
    PRIMARY KEY (lead_id, mode)
);
CREATE INDEX lead_due_ready_idx
    ON lead_due (tenant_id, mode, lead_created_at, lead_id) WHERE ready;
CREATE INDEX lead_due_waiting_idx ON lead_due (tenant_id, mode, due_at) WHERE NOT ready;

-- Each lead's contact verdicts: its phone in E.164 and its email normalised, or NULL when the
-- value is invalid, next to the raw value they were computed from. A run validates only the
-- values that changed since (phonenumbers and email-validator cost 20-100 µs a value); erasing
-- a lead erases its verdicts (the delete trigger below).
CREATE TABLE lead_contact_verdicts (
    lead_id          uuid PRIMARY KEY,
    phone            text,
    phone_e164       text,
    email            text,
    email_normalized text,
    checked_at       timestamptz NOT NULL DEFAULT now()
);

-- No lead may be written while the state is built from history and the triggers come in.
LOCK TABLE leads IN SHARE ROW EXCLUSIVE MODE;

-- Today's state from the history. Leads suppressed at migration time are parked at once (the
-- runs park them otherwise, a batch at a time); the stage list is the policy's of today and
-- this file is never edited, so it is stated here as data, not as a rule.
INSERT INTO lead_due (lead_id, mode, tenant_id, lead_created_at, ready, due_at, last_sent_at,
                      recent_keys, recent_keys_date)
SELECT l.id, 'dry_run', l.tenant_id, l.created_at, s.due_at <= now(), s.due_at, h.last_sent_at,
       coalesce(k.keys, '{}'), k.local_date
FROM leads l
JOIN tenants t ON t.id = l.tenant_id
LEFT JOIN LATERAL (
    SELECT max(d.decided_at) FILTER (WHERE d.action = 'would_send') AS last_sent_at
    FROM dry_run_log d
    WHERE d.tenant_id = l.tenant_id AND d.lead_id = l.id
) h ON true
LEFT JOIN LATERAL (
    SELECT d.local_date, array_agg(d.dispatch_key ORDER BY d.id) AS keys
    FROM dry_run_log d
    WHERE d.tenant_id = l.tenant_id AND d.lead_id = l.id AND d.action = 'would_send'
    GROUP BY d.local_date
    ORDER BY d.local_date DESC
    LIMIT 1
) k ON true
LEFT JOIN LATERAL (
    SELECT d.action, d.decided_at, d.not_before
    FROM dry_run_log d
    WHERE d.tenant_id = l.tenant_id AND d.lead_id = l.id
    ORDER BY d.decided_at DESC, d.id DESC
    LIMIT 1
) last ON true
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN l.opted_out_at IS NOT NULL OR l.stage IN ('customer', 'lost')
            THEN 'infinity'::timestamptz
        WHEN last.action IS NULL THEN '-infinity'::timestamptz
        WHEN last.action = 'deferred' THEN last.not_before
        ELSE greatest(last.decided_at + make_interval(hours => t.cooldown_hours),
                      h.last_sent_at + make_interval(hours => t.cooldown_hours))
    END AS due_at
) s;

INSERT INTO lead_due (lead_id, mode, tenant_id, lead_created_at, ready, due_at)
SELECT l.id, 'live', l.tenant_id, l.created_at,
       NOT (l.opted_out_at IS NOT NULL OR l.stage IN ('customer', 'lost')),
       CASE WHEN l.opted_out_at IS NOT NULL OR l.stage IN ('customer', 'lost')
            THEN 'infinity'::timestamptz ELSE '-infinity'::timestamptz END
FROM leads l;

-- Statement-level triggers with transition tables: a bulk load of leads costs one INSERT here,
-- not one per row. SECURITY DEFINER: the services that write leads need no grant on lead_due.
CREATE FUNCTION lead_due_on_leads_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO lead_due (lead_id, mode, tenant_id, lead_created_at)
    SELECT n.id, m.mode, n.tenant_id, n.created_at
    FROM inserted_leads n CROSS JOIN (VALUES ('dry_run'), ('live')) AS m (mode);
    RETURN NULL;
END $$;

CREATE FUNCTION lead_due_on_leads_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE lead_due d
    SET ready = true, due_at = '-infinity', tenant_id = n.tenant_id,
        lead_created_at = n.created_at
    FROM updated_leads n
    JOIN previous_leads o ON o.id = n.id
    WHERE d.lead_id = n.id
      AND (n.phone, n.email, n.whatsapp_opt_in, n.email_opt_in, n.opted_out_at, n.timezone,
           n.stage, n.tenant_id, n.created_at)
          IS DISTINCT FROM
          (o.phone, o.email, o.whatsapp_opt_in, o.email_opt_in, o.opted_out_at, o.timezone,
           o.stage, o.tenant_id, o.created_at);
    RETURN NULL;
END $$;

-- Erasing a lead (LGPD) erases the agent's state about it: its due rows first (a run holding
-- them is waited for), then its contact verdicts, so a verdict that run saved goes too.
CREATE FUNCTION lead_due_on_leads_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM lead_due WHERE lead_id IN (SELECT id FROM deleted_leads);
    DELETE FROM lead_contact_verdicts WHERE lead_id IN (SELECT id FROM deleted_leads);
    RETURN NULL;
END $$;

CREATE FUNCTION lead_due_on_leads_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    TRUNCATE lead_due, lead_contact_verdicts;
    RETURN NULL;
END $$;

CREATE TRIGGER leads_lead_due_insert
    AFTER INSERT ON leads REFERENCING NEW TABLE AS inserted_leads
    FOR EACH STATEMENT EXECUTE FUNCTION lead_due_on_leads_insert();
CREATE TRIGGER leads_lead_due_update
    AFTER UPDATE ON leads REFERENCING OLD TABLE AS previous_leads NEW TABLE AS updated_leads
    FOR EACH STATEMENT EXECUTE FUNCTION lead_due_on_leads_update();
CREATE TRIGGER leads_lead_due_delete
    AFTER DELETE ON leads REFERENCING OLD TABLE AS deleted_leads
    FOR EACH STATEMENT EXECUTE FUNCTION lead_due_on_leads_delete();
CREATE TRIGGER leads_lead_due_truncate
    AFTER TRUNCATE ON leads FOR EACH STATEMENT EXECUTE FUNCTION lead_due_on_leads_truncate();
