-- transactional: false
-- Built concurrently so that adding it to a large production table never blocks writes.
-- Serves "the tenant's oldest unsuppressed leads" (the due-leads scan).
CREATE INDEX CONCURRENTLY IF NOT EXISTS leads_tenant_due_idx
    ON leads (tenant_id, created_at, id)
    WHERE opted_out_at IS NULL;
