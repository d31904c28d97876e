-- 0016_order_nos: the check that an order number is used once across
-- charges and refunds (0001's order_no_unused) runs once per statement
-- instead of once per row: a claim inserts a few dozen charges in one
-- statement, and each row paid for a PL/pgSQL call and two statements of its
-- own (docs/design.md, "What a charge costs the database").
--
-- The rows are in their table when the check runs, at the end of the
-- statement: their numbers' transaction locks are taken in one order (so
-- that two statements cannot deadlock), then the other table is read. A
-- concurrent insert of the same number in the other table waits for those
-- locks and then sees this one, as before.
CREATE FUNCTION order_nos_unused() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	used text;
BEGIN
	IF TG_TABLE_NAME = 'charges' THEN
		PERFORM pg_advisory_xact_lock(72836, k)
		   FROM (SELECT DISTINCT hashtext(n.mch_order_no) AS k FROM new_rows n ORDER BY 1) l;
		SELECT n.mch_order_no INTO used
		  FROM new_rows n JOIN refunds r ON r.mch_refund_no = n.mch_order_no LIMIT 1;
	ELSE
		PERFORM pg_advisory_xact_lock(72836, k)
		   FROM (SELECT DISTINCT hashtext(n.mch_refund_no) AS k FROM new_rows n ORDER BY 1) l;
		SELECT n.mch_refund_no INTO used
		  FROM new_rows n JOIN charges c ON c.mch_order_no = n.mch_refund_no LIMIT 1;
	END IF;
	IF used IS NOT NULL THEN
		RAISE EXCEPTION 'order number % is already used', used USING ERRCODE = 'unique_violation';
	END IF;
	RETURN NULL;
END $$;

DROP TRIGGER charges_order_no ON charges;
DROP TRIGGER refunds_order_no ON refunds;
DROP FUNCTION order_no_unused();
CREATE TRIGGER charges_order_no AFTER INSERT ON charges
	REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION order_nos_unused();
CREATE TRIGGER refunds_order_no AFTER INSERT ON refunds
	REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION order_nos_unused();
