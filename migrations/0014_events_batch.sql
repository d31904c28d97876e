-- 0014_events_batch: a charge's outcome events are written once per
-- statement, from its transition table, instead of once per row at the
-- commit (docs/design.md, "What a charge costs the database"). The same
-- events, in the same transaction, with the same data: what changed is that
-- a batch of outcomes numbers its events in one statement (billing_events)
-- instead of calling billing_event per row, which cost about a quarter of
-- the database's time per charge.

-- An event's body: the bytes signed and sent.
CREATE FUNCTION event_body(eid text, p_type text, at timestamptz, n bigint, p_data jsonb)
RETURNS text LANGUAGE sql STABLE AS $$
	SELECT '{"id":' || to_json(eid)::text || ',"type":' || to_json(p_type)::text ||
	       ',"created":"' || to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') ||
	       '+00:00","seq":' || n || ',"data":' || p_data::text || '}'
$$;

-- Writes events in the order given (types, customers and data: arrays of
-- one length), as billing_event does one: each customer's numbers follow on
-- from its last, in that order. The event_seqs rows are taken in customer
-- order, so that two writers of several customers each cannot deadlock.
-- For one event billing_event is the cheaper (this statement costs more to
-- start than one row costs to write).
CREATE FUNCTION billing_events(p_types text[], p_customers text[], p_data jsonb[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	clk text := current_setting('billing.now', true);
	at timestamptz;
BEGIN
	IF coalesce(cardinality(p_types), 0) = 0 THEN
		RETURN;
	END IF;
	IF clk IS NULL OR clk = '' THEN
		RAISE EXCEPTION 'event %: the billing clock is not set (billing.now)', p_types[1]
		USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	at := to_timestamp(clk::double precision);
	WITH e AS (
		SELECT x.t, coalesce(x.c, '') AS cust, x.d, x.i
		  FROM unnest(p_types, p_customers, p_data) WITH ORDINALITY AS x(t, c, d, i)
	), k AS (
		SELECT cust, count(*) AS n FROM e GROUP BY cust
	), s AS (
		INSERT INTO event_seqs AS q (customer_id, seq)
		SELECT cust, n FROM k ORDER BY cust
		ON CONFLICT (customer_id) DO UPDATE SET seq = q.seq + excluded.seq
		RETURNING q.customer_id, q.seq
	), numbered AS (
		SELECT e.*, s.seq - k.n + row_number() OVER (PARTITION BY e.cust ORDER BY e.i) AS n,
		       'evt_' || replace(gen_random_uuid()::text, '-', '') AS eid
		  FROM e JOIN k USING (cust) JOIN s ON s.customer_id = e.cust
	)
	INSERT INTO events (event_id, type, customer_id, seq, created_at, body)
	SELECT eid, t, cust, n, at, event_body(eid, t, at, n, d) FROM numbered ORDER BY i;
	-- One notification per transaction (same payload): `billctl events tail`
	-- and the delivery threads wake up.
	PERFORM pg_notify('billing_events', '');
END $$;

-- billing_event (0004) with its body from event_body, the one spelling of
-- an event's bytes.
CREATE OR REPLACE FUNCTION billing_event(p_type text, p_customer text, p_data jsonb, p_once text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	clk text := current_setting('billing.now', true);
	at timestamptz;
	n bigint;
	eid text;
BEGIN
	IF clk IS NULL OR clk = '' THEN
		RAISE EXCEPTION 'event %: the billing clock is not set (billing.now)', p_type
		USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	at := to_timestamp(clk::double precision);
	IF p_once IS NOT NULL THEN
		PERFORM pg_advisory_xact_lock(72837, hashtext(p_once));
		IF EXISTS (SELECT 1 FROM events WHERE once_key = p_once) THEN
			RETURN;
		END IF;
	END IF;
	INSERT INTO event_seqs AS q (customer_id, seq) VALUES (coalesce(p_customer, ''), 1)
	ON CONFLICT (customer_id) DO UPDATE SET seq = q.seq + 1
	RETURNING q.seq INTO n;
	eid := 'evt_' || replace(gen_random_uuid()::text, '-', '');
	INSERT INTO events (event_id, type, customer_id, seq, created_at, once_key, body)
	VALUES (eid, p_type, coalesce(p_customer, ''), n, at, p_once, event_body(eid, p_type, at, n, p_data));
	PERFORM pg_notify('billing_events', '');
END $$;

-- A charge's data, as `billctl --json` shows it; a failed one carries the
-- next retry of its subscription (NULL: none).
CREATE FUNCTION event_charge_data(c charges, retry timestamptz) RETURNS jsonb LANGUAGE sql AS $$
	SELECT jsonb_build_object('id', c.id, 'mch_order_no', c.mch_order_no,
	       'kind', c.kind, 'subscription_id', c.subscription_id, 'period', c.period,
	       'attempt', c.attempt, 'customer_id', c.customer_id,
	       'amount_cents', c.amount_cents, 'currency', c.currency, 'state', c.state,
	       'pay_order_id', c.pay_order_id, 'ret_msg', c.ret_msg,
	       'created_at', c.created_at)
	       || CASE WHEN c.state = 'failed' THEN jsonb_build_object('next_retry_at', retry)
	               ELSE '{}' END
$$;

-- The events of the charges ids made final, in id order: charge.<state>,
-- and a payment link's payment_link.paid after its charge.succeeded.
CREATE FUNCTION events_charges_final(ids bigint[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	IF cardinality(ids) = 0 THEN
		RETURN;
	END IF;
	PERFORM billing_events(array_agg(e.t ORDER BY e.id, e.k), array_agg(e.c ORDER BY e.id, e.k),
	                       array_agg(e.d ORDER BY e.id, e.k))
	   FROM (SELECT n.id, n.customer_id AS c, k.k, k.t,
	                event_charge_data(n, CASE WHEN n.state = 'failed' THEN
	                                      (SELECT s.next_charge_at FROM subscriptions s
	                                        WHERE s.id = n.subscription_id
	                                          AND s.state IN ('trialing', 'active', 'past_due'))
	                                      END) AS d
	           FROM charges n
	          CROSS JOIN LATERAL (VALUES (1, 'charge.' || n.state),
	                                     (2, CASE WHEN n.state = 'succeeded' AND n.kind = 'one_off'
	                                              THEN 'payment_link.paid' END)) AS k(k, t)
	          WHERE n.id = ANY(ids) AND k.t IS NOT NULL) e;
END $$;

-- At the end of the statement, for most: a charge that succeeded, or one
-- with no subscription. A failed subscription charge's event carries the
-- next retry of its subscription, which the recorder moves after writing the
-- outcome (the customer's history reads: the charge failed, then the
-- subscription fell past due), so that event is written at the commit, by
-- a deferred row trigger, as before: declines are the few.
CREATE FUNCTION events_charges_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'INSERT' THEN
		PERFORM events_charges_final(ARRAY(SELECT n.id FROM new_rows n
		                                    WHERE n.state = 'succeeded'
		                                       OR (n.state = 'failed' AND n.subscription_id IS NULL)
		                                    ORDER BY n.id));
	ELSE
		PERFORM events_charges_final(ARRAY(SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id
		                                    WHERE o.state IS DISTINCT FROM n.state
		                                      AND (n.state = 'succeeded'
		                                           OR (n.state = 'failed' AND n.subscription_id IS NULL))
		                                    ORDER BY n.id));
	END IF;
	RETURN NULL;
END $$;

CREATE FUNCTION events_charge_declined() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM events_charges_final(ARRAY[NEW.id]);
	RETURN NULL;
END $$;

DROP TRIGGER charges_events_insert ON charges;
DROP TRIGGER charges_events ON charges;
DROP FUNCTION events_charges();
CREATE TRIGGER charges_events_insert AFTER INSERT ON charges
	REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION events_charges_rows();
CREATE TRIGGER charges_events AFTER UPDATE ON charges
	REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION events_charges_rows();
CREATE CONSTRAINT TRIGGER charges_declined_insert AFTER INSERT ON charges
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
	WHEN (NEW.state = 'failed' AND NEW.subscription_id IS NOT NULL)
	EXECUTE FUNCTION events_charge_declined();
CREATE CONSTRAINT TRIGGER charges_declined AFTER UPDATE ON charges
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
	WHEN (OLD.state IS DISTINCT FROM NEW.state AND NEW.state = 'failed'
	      AND NEW.subscription_id IS NOT NULL)
	EXECUTE FUNCTION events_charge_declined();

-- A subscription's data. A SQL function that reads a table is planned
-- again at every call (it cannot be inlined); as PL/pgSQL its plan is kept
-- for the session, which bulk enrolments (one event per subscription) feel.
CREATE OR REPLACE FUNCTION event_subscription_data(s subscriptions) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
	RETURN (SELECT jsonb_build_object('id', s.id, 'customer_id', s.customer_id, 'plan', p.code,
	               'plan_version', p.version, 'amount_cents', p.amount_cents, 'currency', p.currency,
	               'next_plan', n.code, 'state', s.state,
	               'cancel_at_period_end', s.cancel_at_period_end, 'period', s.period,
	               'attempts', s.attempts, 'cycles_done', s.cycles_done, 'anchor', s.anchor,
	               'trial_end', s.trial_end, 'period_start', s.period_start,
	               'period_end', s.period_end, 'next_charge_at', s.next_charge_at,
	               'created_at', s.created_at)
	          FROM plans p LEFT JOIN plans n ON n.id = s.next_plan_id
	         WHERE p.id = s.plan_id);
END $$;
