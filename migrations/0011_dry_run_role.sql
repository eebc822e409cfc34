-- The dry-run function's own database user, with only what a run needs: read tenants, leads
-- and channel limits; claim runs; append to the ledger; update the due state and the contact
-- verdicts. No DDL, no DELETE, nothing on the live ledger. In AWS it logs in with IAM database
-- authentication (rds_iam); roles are cluster-wide, so creating it is idempotent.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'micro_agent_dry_run') THEN
        CREATE ROLE micro_agent_dry_run LOGIN;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam') THEN
        GRANT rds_iam TO micro_agent_dry_run;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO micro_agent_dry_run', current_database());
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO micro_agent_dry_run', current_schema());
END $$;

GRANT SELECT ON tenants, leads, channel_limits TO micro_agent_dry_run;
GRANT SELECT, INSERT ON runs, dry_run_log TO micro_agent_dry_run;
GRANT SELECT, UPDATE (ready, due_at, last_sent_at, recent_keys, recent_keys_date) ON lead_due TO micro_agent_dry_run;
GRANT SELECT, INSERT, UPDATE ON lead_contact_verdicts TO micro_agent_dry_run;
