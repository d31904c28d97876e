-- 0007_audit_reason: the audit log answers "what happened to customer X":
-- why a change was made (billctl --reason, declared per connection as
-- billing.reason beside billing.actor), and the subscription changes that
-- are not state changes: a plan change scheduled or made, a cancel at the
-- period end set or withdrawn. Such a row keeps old_state = new_state (the
-- state did not move) and says what changed in detail. billing_at: the
-- change's business time, the billing clock its writer declared for the
-- connection (billing.now, unix seconds); NULL when none was declared.
ALTER TABLE audit_log ADD COLUMN reason text, ADD COLUMN billing_at timestamptz;

-- A plan as people name it: code v<version>.
CREATE FUNCTION plan_label(p_id bigint) RETURNS text LANGUAGE sql STABLE AS $$
	SELECT code || ' v' || version FROM plans WHERE id = p_id
$$;

CREATE OR REPLACE FUNCTION audit_state() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	ent_id text;
	prev_state text;
	what text;
BEGIN
	-- Separate statements: PL/pgSQL resolves every field an expression names,
	-- and customers has no id column.
	IF TG_TABLE_NAME = 'customers' THEN
		ent_id := NEW.customer_id;
	ELSE
		ent_id := NEW.id::text;
	END IF;
	IF TG_OP = 'UPDATE' THEN
		prev_state := OLD.state;
		IF TG_TABLE_NAME = 'subscriptions' THEN
			what := concat_ws('; ',
				CASE WHEN NEW.plan_id IS DISTINCT FROM OLD.plan_id
				     THEN 'plan ' || plan_label(OLD.plan_id) || ' -> ' || plan_label(NEW.plan_id) END,
				CASE WHEN NEW.next_plan_id IS DISTINCT FROM OLD.next_plan_id
				     THEN coalesce('plan change to ' || plan_label(NEW.next_plan_id) || ' at the period end',
				                   'plan change withdrawn') END,
				CASE WHEN NEW.cancel_at_period_end IS DISTINCT FROM OLD.cancel_at_period_end
				     THEN CASE WHEN NEW.cancel_at_period_end THEN 'cancel at the period end'
				               ELSE 'cancel at the period end withdrawn' END END);
			what := nullif(what, '');
		END IF;
	END IF;
	IF TG_OP = 'INSERT' OR prev_state IS DISTINCT FROM NEW.state OR what IS NOT NULL THEN
		INSERT INTO audit_log (actor, entity, entity_id, old_state, new_state, detail, reason,
		                       billing_at)
		VALUES (coalesce(nullif(current_setting('billing.actor', true), ''), current_user),
		        TG_TABLE_NAME, ent_id, prev_state, NEW.state, what,
		        nullif(current_setting('billing.reason', true), ''),
		        to_timestamp(nullif(current_setting('billing.now', true), '')::double precision));
	END IF;
	NEW.updated_at := now();
	RETURN NEW;
END $$;
