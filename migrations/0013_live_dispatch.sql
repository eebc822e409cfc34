-- Live dispatch (DOMAIN.md, "Modes" and "Live sending: at most once per dispatch key"): the
-- tenant's mode, the live ledger's protocol columns, live mode's decision history, the tenants'
-- senders, message content as data, booked meetings and opt-outs.

-- A tenant is live only when its mode is 'live' AND the stack's flag is exactly "true".
-- Constant defaults: no table rewrite.
ALTER TABLE tenants
    ADD COLUMN dispatch_mode text NOT NULL DEFAULT 'dry_run'
        CONSTRAINT tenants_dispatch_mode_check CHECK (dispatch_mode IN ('dry_run', 'live')),
    ADD COLUMN meeting_minutes integer NOT NULL DEFAULT 30
        CONSTRAINT tenants_meeting_minutes_check CHECK (meeting_minutes BETWEEN 1 AND 540);

-- The claim / send / record protocol. A row is claimed (and committed) before the provider is
-- called; the second transaction records `sent`, `failed` or `unknown`. `claimed_at` is the
-- latest claim (a retryable failure may be claimed again, at most 3 attempts in all, not
-- before `retry_at`); the sweeper turns claims older than the function's timeout to `unknown`.
ALTER TABLE dispatches
    ADD COLUMN run_id          text,
    ADD COLUMN template        text,
    ADD COLUMN local_date      date,
    ADD COLUMN attempt         integer NOT NULL DEFAULT 1
        CONSTRAINT dispatches_attempt_check CHECK (attempt BETWEEN 1 AND 3),
    ADD COLUMN error_code      text,
    ADD COLUMN retryable       boolean,
    ADD COLUMN retry_at        timestamptz,
    ADD COLUMN claimed_at      timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN updated_at      timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN delivery_status text
        CONSTRAINT dispatches_delivery_status_check CHECK (delivery_status IN
            ('accepted', 'delivered', 'read', 'failed', 'bounced', 'complained')),
    ADD CONSTRAINT dispatches_failed_has_code CHECK (status <> 'failed' OR error_code IS NOT NULL);
-- The sweeper's scan: only rows still claimed, oldest first.
CREATE INDEX dispatches_claimed_idx ON dispatches (claimed_at) WHERE status = 'claimed';
-- The caps' edge minutes count a tenant's claims by claim time (a retry counts when claimed).
CREATE INDEX dispatches_tenant_claimed_idx ON dispatches (tenant_id, claimed_at);
-- A replayed runId reads its claims; webhooks find a dispatch by the provider's message id.
CREATE INDEX dispatches_run_idx ON dispatches (run_id);
CREATE INDEX dispatches_provider_message_idx
    ON dispatches (provider_message_id) WHERE provider_message_id IS NOT NULL;

-- Failed sends are not sends: recording one takes it back out of its minute, so a minute's
-- count may fall to zero.
ALTER TABLE send_counts DROP CONSTRAINT send_counts_sends_check;
ALTER TABLE send_counts ADD CONSTRAINT send_counts_sends_check CHECK (sends >= 0);

-- The slot a calendar decision proposed (dry runs predict the live slots from these).
ALTER TABLE dry_run_log ADD COLUMN meeting_at timestamptz;
CREATE INDEX dry_run_log_meeting_idx ON dry_run_log (tenant_id, meeting_at)
    WHERE meeting_at IS NOT NULL;

-- Live mode's decision history: dry_run_log's columns, plus the provider's answer. Partitioned
-- by month of local_date like dry_run_log, so that retention never blocks a run.
CREATE TABLE live_log (
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    run_id              text NOT NULL,
    tenant_id           text NOT NULL,
    lead_id             uuid NOT NULL,
    channel             text CHECK (channel IN ('whatsapp', 'email', 'calendar')),
    action              text NOT NULL
        CHECK (action IN ('sent', 'failed', 'unknown', 'skipped', 'deferred')),
    reason              text NOT NULL,
    dispatch_key        text,
    template            text,
    flag_enabled        boolean NOT NULL,
    not_before          timestamptz,
    details             jsonb NOT NULL DEFAULT '[]'::jsonb,
    decided_at          timestamptz NOT NULL DEFAULT now(),
    local_date          date NOT NULL,
    meeting_at          timestamptz,
    provider_message_id text,
    error_code          text,
    CONSTRAINT live_log_send_has_key
        CHECK (action NOT IN ('sent', 'failed', 'unknown')
               OR (channel IS NOT NULL AND dispatch_key IS NOT NULL)),
    CONSTRAINT live_log_deferred_has_not_before CHECK (action <> 'deferred' OR not_before IS NOT NULL),
    CONSTRAINT live_log_pkey PRIMARY KEY (id, local_date),
    CONSTRAINT live_log_run_lead_key UNIQUE (run_id, lead_id, local_date)
) PARTITION BY RANGE (local_date);
CREATE INDEX live_log_tenant_time_idx ON live_log (tenant_id, decided_at);

-- Adds the month partition of live_log holding `day` unless it exists (CREATE + ATTACH, as
-- dry_run_log_add_partition: never blocks a run).
CREATE FUNCTION live_log_add_partition(day date) RETURNS text
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    first_day date := date_trunc('month', day)::date;
    next_day  date := (date_trunc('month', day) + interval '1 month')::date;
    name      text := format('live_log_%s', to_char(first_day, 'YYYY_MM'));
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format(
        'CREATE TABLE %I (LIKE live_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS, '
        'CHECK (local_date >= %L AND local_date < %L))', name, first_day, next_day);
    EXECUTE format(
        'ALTER TABLE live_log ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
        name, first_day, next_day);
    RETURN name;
END $$;

SELECT live_log_add_partition(month::date)
FROM generate_series(date_trunc('month', current_date - 1),
                     date_trunc('month', current_date + 1) + interval '6 months',
                     interval '1 month') AS month;

-- Who sends for a tenant on each channel. WhatsApp: the business phone number id and the
-- secret holding its token; email and calendar: the verified From address (and optionally a
-- configuration set of its own). A paused channel sends nothing until a person resumes it
-- (Meta's 131048 spam limit, 368 policy block, 190 bad token).
CREATE TABLE tenant_senders (
    tenant_id         text NOT NULL REFERENCES tenants (id),
    channel           text NOT NULL CHECK (channel IN ('whatsapp', 'email', 'calendar')),
    sender            text NOT NULL CHECK (length(sender) BETWEEN 1 AND 320),
    secret_arn        text,
    configuration_set text,
    paused_at         timestamptz,
    paused_reason     text,
    PRIMARY KEY (tenant_id, channel),
    CONSTRAINT tenant_senders_whatsapp_secret CHECK (channel <> 'whatsapp' OR secret_arn IS NOT NULL)
);
-- Meta's webhooks name the business number: it maps to one tenant.
CREATE UNIQUE INDEX tenant_senders_whatsapp_number_key
    ON tenant_senders (sender) WHERE channel = 'whatsapp';

-- Message content per template name: a tenant's own row, else the default (tenant_id NULL).
-- `body` and `subject` may use {first_name} (and {meeting_at} for invitations); `parameters`
-- are the WhatsApp template's body parameters, in order, with the same placeholders.
CREATE TABLE message_templates (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  text REFERENCES tenants (id),
    template   text NOT NULL,
    channel    text NOT NULL CHECK (channel IN ('whatsapp', 'email', 'calendar')),
    language   text,
    subject    text,
    body       text NOT NULL,
    parameters jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(parameters) = 'array'),
    CONSTRAINT message_templates_subject CHECK (channel = 'whatsapp' OR subject IS NOT NULL)
);
CREATE UNIQUE INDEX message_templates_default_key
    ON message_templates (template) WHERE tenant_id IS NULL;
CREATE UNIQUE INDEX message_templates_tenant_key
    ON message_templates (tenant_id, template) WHERE tenant_id IS NOT NULL;

INSERT INTO message_templates (template, channel, language, subject, body, parameters) VALUES
    ('first_touch_v1', 'whatsapp', 'pt_BR', NULL,
     'Olá {first_name}! Vimos seu interesse e podemos ajudar. Podemos conversar?',
     '["{first_name}"]'),
    ('nurture_follow_up_v1', 'whatsapp', 'pt_BR', NULL,
     'Oi {first_name}, passando para saber se ainda faz sentido conversarmos.',
     '["{first_name}"]'),
    ('meeting_follow_up_v1', 'whatsapp', 'pt_BR', NULL,
     '{first_name}, vamos marcar a reunião que você pediu?',
     '["{first_name}"]'),
    ('whatsapp_session_v1', 'whatsapp', NULL, NULL,
     'Oi {first_name}, obrigado pela mensagem! Podemos seguir por aqui?', '[]'),
    ('email_first_touch_v1', 'email', NULL, 'Podemos ajudar, {first_name}?',
     E'Olá {first_name},\n\nVimos seu interesse e gostaríamos de conversar.\n\nAbraços', '[]'),
    ('email_nurture_v1', 'email', NULL, 'Novidades para você, {first_name}',
     E'Olá {first_name},\n\nSeguimos à disposição para ajudar.\n\nAbraços', '[]'),
    ('email_meeting_follow_up_v1', 'email', NULL, 'Sobre a reunião, {first_name}',
     E'Olá {first_name},\n\nVamos marcar a reunião que você pediu?\n\nAbraços', '[]'),
    ('meeting_invite_v1', 'calendar', NULL, 'Reunião com {first_name}',
     E'Olá {first_name},\n\nReservamos {meeting_at} para a nossa conversa.\n\nAté lá!', '[]');

-- The meetings live invitations propose: one per tenant and start, booked in the transaction
-- that claims the invitation. A failed invitation cancels its meeting, freeing the slot.
CREATE TABLE meetings (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES tenants (id),
    lead_id      uuid NOT NULL,
    dispatch_key text NOT NULL UNIQUE,
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL,
    status       text NOT NULL DEFAULT 'booked' CHECK (status IN ('booked', 'cancelled')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE UNIQUE INDEX meetings_tenant_slot_key ON meetings (tenant_id, starts_at)
    WHERE status = 'booked';

-- A lead's opt-outs: a row makes the lead ineligible on its channel (every channel when NULL;
-- an email opt-out also blocks invitations). Written by the inbound webhooks and by live runs
-- (a provider's permanent "cannot reach"). Erasing a lead erases them.
CREATE TABLE opt_outs (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  text NOT NULL REFERENCES tenants (id),
    lead_id    uuid NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    channel    text CHECK (channel IN ('whatsapp', 'email', 'calendar')),
    source     text NOT NULL CHECK (source IN ('keyword', 'whatsapp_preferences', 'provider_error',
                                               'unsubscribe', 'complaint', 'bounce')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX opt_outs_lead_idx ON opt_outs (lead_id);

-- An all-channel opt-out is an LGPD revocation: it sets leads.opted_out_at, whoever wrote it
-- (the leads triggers then park the lead in both modes). SECURITY DEFINER: a writer of
-- opt_outs needs no grant on leads.
CREATE FUNCTION opt_outs_revoke_all() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE leads l SET opted_out_at = n.created_at
    FROM (SELECT lead_id, min(created_at) AS created_at FROM new_rows
          WHERE channel IS NULL GROUP BY lead_id) n
    WHERE l.id = n.lead_id AND l.opted_out_at IS NULL;
    RETURN NULL;
END $$;
CREATE TRIGGER opt_outs_revoke_all_insert AFTER INSERT ON opt_outs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION opt_outs_revoke_all();

-- The function's user (0011) runs live tenants too: claim and record dispatches, book
-- meetings, append live history, write a provider's "cannot reach" opt-out, pause a channel.
-- DELETE on dispatches only to release a claim that was never sent (quiet hours came, or the
-- invocation ran out of time, before the call).
GRANT SELECT ON tenant_senders, message_templates, opt_outs TO micro_agent_dry_run;
GRANT UPDATE (paused_at, paused_reason) ON tenant_senders TO micro_agent_dry_run;
GRANT INSERT ON opt_outs TO micro_agent_dry_run;
GRANT SELECT, INSERT, DELETE ON dispatches TO micro_agent_dry_run;
GRANT UPDATE (status, run_id, attempt, provider_message_id, error_code, retryable, retry_at,
              claimed_at, updated_at, sent_at) ON dispatches TO micro_agent_dry_run;
GRANT SELECT, INSERT ON live_log TO micro_agent_dry_run;
GRANT SELECT, INSERT, UPDATE (status, starts_at, ends_at) ON meetings TO micro_agent_dry_run;
