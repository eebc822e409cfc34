-- Rate caps and cooldown count a tenant's recent dispatches per channel and per lead.
CREATE INDEX dispatches_tenant_channel_time_idx ON dispatches (tenant_id, channel, created_at);
CREATE INDEX dispatches_tenant_lead_time_idx ON dispatches (tenant_id, lead_id, created_at);
