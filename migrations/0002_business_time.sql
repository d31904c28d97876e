-- 0002_business_time: when the money moved on the billing clock (billctl
-- --now, billingd's clock), which the accountants' report dates rows by, and
-- what the gateway said about a refund or void order.
--
-- settled_at: for a charge, when the attempt's outcome was settled (the
-- attempt that succeeded, or the decline); for a refund or void, its own
-- success or failure (a refund resolved later by cc_query is dated by its
-- request: the gateway moved the money then, only the answer was lost). Written by the ledger's writers from their clock, never
-- from the database's now(); NULL on rows written before this migration
-- (readers fall back to updated_at). Once set it is final, so that a report
-- of a closed window never changes afterwards.
ALTER TABLE charges ADD COLUMN settled_at timestamptz;
ALTER TABLE refunds ADD COLUMN settled_at timestamptz,
	ADD COLUMN requested_at timestamptz, -- the request, on the billing clock
	ADD COLUMN trans_id text,       -- the gateway's transId of the refund order, when it gives one
	ADD COLUMN pay_succ_time text;  -- the gateway's paySuccTime of the refund order, as reported

CREATE INDEX charges_settled ON charges ((coalesce(settled_at, updated_at)))
	WHERE state IN ('succeeded', 'failed');
CREATE INDEX refunds_settled ON refunds ((coalesce(settled_at, updated_at)))
	WHERE state = 'succeeded';

CREATE FUNCTION settled_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF OLD.settled_at IS NOT NULL AND NEW.settled_at IS DISTINCT FROM OLD.settled_at THEN
		RAISE EXCEPTION '%.settled_at of % is final', TG_TABLE_NAME, OLD.id
		USING ERRCODE = 'check_violation';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER charges_settled_final BEFORE UPDATE OF settled_at ON charges
	FOR EACH ROW EXECUTE FUNCTION settled_final();
CREATE TRIGGER refunds_settled_final BEFORE UPDATE OF settled_at ON refunds
	FOR EACH ROW EXECUTE FUNCTION settled_final();

-- The summary reads a subscription's state at a month's edge from the audit
-- log: the last change of that entity before the edge.
CREATE INDEX audit_log_entity ON audit_log (entity, entity_id, id);
