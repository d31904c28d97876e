-- 0009_roles: least privilege. The tables belong to the role that runs the
-- migrations (billctl migrate as the owner); billingd and billctl run as a
-- member of billing_app, which reads and writes the ledger but owns none of
-- it: it cannot drop or disable the triggers that guard the ledger and keep
-- the audit log append-only, and it may delete nothing (README, "Database
-- roles"). A migration that adds a table grants billing_app what it needs.
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'billing_app') THEN
		CREATE ROLE billing_app NOLOGIN;
	END IF;
END $$;

GRANT USAGE ON SCHEMA public TO billing_app;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO billing_app;
GRANT INSERT, UPDATE ON customers, plans, subscriptions, charges, refunds, refund_totals, events,
	event_seqs
	TO billing_app;
-- the audit triggers run as the writer: they append, nothing more; so do
-- the events' delivery attempts
GRANT INSERT ON audit_log, event_attempts TO billing_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO billing_app;
