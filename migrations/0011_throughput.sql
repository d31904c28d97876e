-- 0011_throughput: what a charge costs the database (docs/design.md,
-- "What a charge costs the database"). The invariants stay where they were;
-- the same checks run in cheaper forms.
--
-- The due claim walks this index in its order from where the pass got to
-- (next_charge_at, id), so that it never reads again what is in flight.
DROP INDEX subscriptions_due;
CREATE INDEX subscriptions_due ON subscriptions (next_charge_at, id)
	WHERE next_charge_at IS NOT NULL AND state IN ('trialing', 'active', 'past_due');

-- Room on each page for the new version of a row that an outcome or a move
-- updates, so that the update stays on its page (HOT) when no indexed
-- column changes.
ALTER TABLE charges SET (fillfactor = 80);
ALTER TABLE subscriptions SET (fillfactor = 80);

-- ledger_final and settled_final are called only when they could refuse:
-- the WHEN clause is evaluated without calling PL/pgSQL for every row.
DROP TRIGGER charges_final ON charges;
CREATE TRIGGER charges_final BEFORE UPDATE ON charges
	FOR EACH ROW WHEN (NEW.mch_order_no IS DISTINCT FROM OLD.mch_order_no OR OLD.state = 'succeeded')
	EXECUTE FUNCTION ledger_final();
DROP TRIGGER charges_settled_final ON charges;
CREATE TRIGGER charges_settled_final BEFORE UPDATE OF settled_at ON charges
	FOR EACH ROW WHEN (OLD.settled_at IS NOT NULL AND NEW.settled_at IS DISTINCT FROM OLD.settled_at)
	EXECUTE FUNCTION settled_final();

-- The audit of charges and subscriptions, the tables every charge writes,
-- is appended once per statement from its transition tables instead of
-- once per row: the same rows (an insert, a state change, a subscription's
-- plan or cancel change), actor, reason and billing time, in the same
-- transaction. Transition tables have no statistics: a nested loop joining
-- old and new rows would cost the square of the batch.
CREATE FUNCTION audit_rows() RETURNS trigger LANGUAGE plpgsql SET enable_nestloop = off AS $$
DECLARE
	who text := coalesce(nullif(current_setting('billing.actor', true), ''), current_user);
	why text := nullif(current_setting('billing.reason', true), '');
	clk timestamptz := to_timestamp(nullif(current_setting('billing.now', true), '')::double precision);
BEGIN
	IF TG_OP = 'INSERT' THEN
		INSERT INTO audit_log (actor, entity, entity_id, new_state, reason, billing_at)
		SELECT who, TG_TABLE_NAME, n.id::text, n.state, why, clk FROM new_rows n ORDER BY n.id;
	ELSIF TG_TABLE_NAME = 'charges' THEN
		INSERT INTO audit_log (actor, entity, entity_id, old_state, new_state, reason, billing_at)
		SELECT who, TG_TABLE_NAME, n.id::text, o.state, n.state, why, clk
		  FROM new_rows n JOIN old_rows o ON o.id = n.id
		 WHERE o.state IS DISTINCT FROM n.state ORDER BY n.id;
	ELSE
		INSERT INTO audit_log (actor, entity, entity_id, old_state, new_state, detail, reason,
		                       billing_at)
		SELECT who, TG_TABLE_NAME, d.id::text, d.old_state, d.new_state, d.what, why, clk
		  FROM (SELECT n.id, o.state AS old_state, n.state AS new_state,
		               nullif(concat_ws('; ',
		                 CASE WHEN n.plan_id IS DISTINCT FROM o.plan_id
		                      THEN 'plan ' || plan_label(o.plan_id) || ' -> ' || plan_label(n.plan_id) END,
		                 CASE WHEN n.next_plan_id IS DISTINCT FROM o.next_plan_id
		                      THEN coalesce('plan change to ' || plan_label(n.next_plan_id) || ' at the period end',
		                                    'plan change withdrawn') END,
		                 CASE WHEN n.cancel_at_period_end IS DISTINCT FROM o.cancel_at_period_end
		                      THEN CASE WHEN n.cancel_at_period_end THEN 'cancel at the period end'
		                                ELSE 'cancel at the period end withdrawn' END END), '') AS what
		          FROM new_rows n JOIN old_rows o ON o.id = n.id) d
		 WHERE d.old_state IS DISTINCT FROM d.new_state OR d.what IS NOT NULL ORDER BY d.id;
	END IF;
	RETURN NULL;
END $$;

-- updated_at, which the row triggers kept: an insert takes the column's
-- default; an update that does not set it itself gets it here.
CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	NEW.updated_at := now();
	RETURN NEW;
END $$;

DROP TRIGGER charges_audit ON charges;
DROP TRIGGER subscriptions_audit ON subscriptions;
CREATE TRIGGER charges_audit_insert AFTER INSERT ON charges
	REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION audit_rows();
CREATE TRIGGER charges_audit AFTER UPDATE ON charges
	REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION audit_rows();
CREATE TRIGGER subscriptions_audit_insert AFTER INSERT ON subscriptions
	REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION audit_rows();
CREATE TRIGGER subscriptions_audit AFTER UPDATE ON subscriptions
	REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION audit_rows();
CREATE TRIGGER charges_updated_at BEFORE UPDATE ON charges
	FOR EACH ROW WHEN (NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at)
	EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER subscriptions_updated_at BEFORE UPDATE ON subscriptions
	FOR EACH ROW WHEN (NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at)
	EXECUTE FUNCTION touch_updated_at();
