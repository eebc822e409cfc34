-- A tenant's leads. Contact data may be garbage: the agent validates it, the table does not.
CREATE TABLE leads (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       text NOT NULL REFERENCES tenants (id),
    full_name       text,
    phone           text,
    email           text,
    whatsapp_opt_in boolean NOT NULL DEFAULT false,
    email_opt_in    boolean NOT NULL DEFAULT false,
    opted_out_at    timestamptz,
    timezone        text,
    stage           text NOT NULL DEFAULT 'new'
                    CHECK (stage IN ('new', 'nurturing', 'meeting_requested', 'customer', 'lost')),
    last_inbound_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
