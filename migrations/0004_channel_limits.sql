-- Per-tenant, per-channel send caps. No row = the service's documented defaults.
CREATE TABLE channel_limits (
    tenant_id text NOT NULL REFERENCES tenants (id),
    channel   text NOT NULL CHECK (channel IN ('whatsapp', 'email', 'calendar')),
    per_hour  integer NOT NULL CHECK (per_hour >= 0),
    per_day   integer NOT NULL CHECK (per_day >= 0),
    PRIMARY KEY (tenant_id, channel)
);
