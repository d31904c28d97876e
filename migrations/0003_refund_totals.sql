-- 0003_refund_totals: "refunds never exceed the charge" at every isolation
-- level. Summing the refunds after locking the charge holds only under READ
-- COMMITTED: under REPEATABLE READ and SERIALIZABLE the sum is read with the
-- transaction's snapshot, which misses a refund committed while it waited.
-- The running total of each charge is one row that every counting refund
-- writes: concurrent writers of it wait for each other and then either see
-- the new total (READ COMMITTED) or fail with a serialization error (40001),
-- which a retry in a new transaction turns into the usual refusal.
CREATE TABLE refund_totals (
	charge_id       bigint PRIMARY KEY REFERENCES charges,
	taken_cents     bigint NOT NULL CHECK (taken_cents >= 0)  -- refunds not failed
);
INSERT INTO refund_totals (charge_id, taken_cents)
	SELECT charge_id, sum(amount_cents) FROM refunds WHERE state <> 'failed' GROUP BY charge_id;

-- A refund starts counting (inserted, or revived from failed).
CREATE OR REPLACE FUNCTION refunds_within_charge() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	charged bigint;
	charge_state text;
	taken bigint;
BEGIN
	SELECT amount_cents, state INTO charged, charge_state
	  FROM charges WHERE id = NEW.charge_id FOR UPDATE;
	IF charge_state IS DISTINCT FROM 'succeeded' THEN
		RAISE EXCEPTION 'charge % is not succeeded', NEW.charge_id USING ERRCODE = 'check_violation';
	END IF;
	IF NEW.kind = 'void' AND NEW.amount_cents <> charged THEN
		RAISE EXCEPTION 'a void of charge % takes all of its % cents', NEW.charge_id, charged
		USING ERRCODE = 'check_violation';
	END IF;
	IF NEW.state = 'failed' THEN
		RETURN NEW;
	END IF;
	INSERT INTO refund_totals AS t (charge_id, taken_cents) VALUES (NEW.charge_id, NEW.amount_cents)
	ON CONFLICT (charge_id) DO UPDATE SET taken_cents = t.taken_cents + EXCLUDED.taken_cents
	RETURNING t.taken_cents INTO taken;
	IF taken > charged THEN
		RAISE EXCEPTION 'refunds of charge % would exceed % cents', NEW.charge_id, charged
		USING ERRCODE = 'check_violation';
	END IF;
	RETURN NEW;
END $$;

-- A refund proven failed stops counting.
CREATE FUNCTION refunds_total_failed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	UPDATE refund_totals SET taken_cents = taken_cents - OLD.amount_cents
	 WHERE charge_id = OLD.charge_id;
	RETURN NEW;
END $$;
CREATE TRIGGER refunds_total_failed AFTER UPDATE OF state ON refunds
	FOR EACH ROW WHEN (OLD.state <> 'failed' AND NEW.state = 'failed')
	EXECUTE FUNCTION refunds_total_failed();
