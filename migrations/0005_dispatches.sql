-- The live ledger: one row per intended send, claimed before the provider is called.
CREATE TABLE dispatches (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id           text NOT NULL REFERENCES tenants (id),
    lead_id             uuid NOT NULL REFERENCES leads (id),
    channel             text NOT NULL CHECK (channel IN ('whatsapp', 'email', 'calendar')),
    dispatch_key        text NOT NULL UNIQUE,
    status              text NOT NULL DEFAULT 'claimed'
                        CHECK (status IN ('claimed', 'sent', 'failed', 'unknown')),
    provider_message_id text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz
);
