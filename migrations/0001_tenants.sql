-- Sales teams using the micro-agent. The id is the tenant's public key (e.g. 'test-001').
CREATE TABLE tenants (
    id             text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    name           text NOT NULL,
    timezone       text NOT NULL DEFAULT 'America/Sao_Paulo',
    cooldown_hours integer NOT NULL DEFAULT 72 CHECK (cooldown_hours BETWEEN 0 AND 8760),
    created_at     timestamptz NOT NULL DEFAULT now()
);
