-- 0010_failover: which server history the ledger was last written on. A
-- primary promoted from an asynchronous standby, or a restore from backup,
-- may have lost intents that were committed (and sent) on the server it
-- replaces; billingd compares this row with the server it connects to
-- (system identifier: a restore into a new cluster changes it; timeline: a
-- promotion changes it) and, while they differ, asks cc_query for each
-- order number before sending it (docs/design.md, "Failover").
CREATE TABLE cluster_identity (
	only_row          boolean PRIMARY KEY DEFAULT true CHECK (only_row),
	system_identifier text NOT NULL,
	timeline          integer NOT NULL,
	recorded_at       timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE ON cluster_identity TO billing_app;
