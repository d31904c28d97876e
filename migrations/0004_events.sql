-- 0004_events: the outbox of events for the operator's application.
-- An event row is written by triggers in the same transaction as the change
-- it reports, so no committed change is without its event and no event
-- describes a change that did not commit. Its time ("created") is the
-- billing clock, which the writer declares per connection or transaction
-- (set_config('billing.now', <unix seconds>)); a change that would write an
-- event without it is refused. Delivery times (attempts, retries, leases)
-- are operational and run on the database's clock.

CREATE TABLE events (
	id              bigserial PRIMARY KEY,
	event_id        text NOT NULL UNIQUE,                 -- evt_<32 hex>
	type            text NOT NULL,
	customer_id     varchar(30) NOT NULL,                 -- '': of no customer
	seq             bigint NOT NULL,                      -- per customer, from 1
	created_at      timestamptz NOT NULL,                 -- billing clock
	body            text NOT NULL,                        -- the bytes signed and sent
	once_key        text UNIQUE,                          -- time-based events: once each
	status          text NOT NULL DEFAULT 'pending'
	                CHECK (status IN ('pending', 'delivered', 'failed')),
	tries           integer NOT NULL DEFAULT 0,           -- since queued (or replayed)
	next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	lease_owner     text,
	lease_expires_at timestamptz,
	delivered_at    timestamptz
);
CREATE INDEX events_due ON events (next_attempt_at) WHERE status = 'pending';
CREATE UNIQUE INDEX events_customer ON events (customer_id, seq);
CREATE INDEX events_created ON events (created_at);

-- The last number given to each customer's events. One row updated per
-- event: at READ COMMITTED a concurrent writer waits for the row and sees
-- the new number; at REPEATABLE READ or SERIALIZABLE it fails with a
-- serialization error (which writers retry), never with a number taken from
-- an old snapshot.
CREATE TABLE event_seqs (
	customer_id     varchar(30) PRIMARY KEY,              -- '': of no customer
	seq             bigint NOT NULL
);

-- One row per delivery attempt: when, the HTTP status (NULL: no answer),
-- how long it took, and why it failed.
CREATE TABLE event_attempts (
	id              bigserial PRIMARY KEY,
	event_id        bigint NOT NULL REFERENCES events,
	at              timestamptz NOT NULL DEFAULT clock_timestamp(),
	http_status     integer,
	latency_ms      integer NOT NULL,
	error           text,
	owner           text NOT NULL
);
CREATE INDEX event_attempts_event ON event_attempts (event_id);

-- Writes one event. once_key (NULL: none) makes it happen at most once.
CREATE FUNCTION billing_event(p_type text, p_customer text, p_data jsonb, p_once text)
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
	VALUES (eid, p_type, coalesce(p_customer, ''), n, at, p_once,
	        '{"id":' || to_json(eid)::text || ',"type":' || to_json(p_type)::text ||
	        ',"created":"' || to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') ||
	        '+00:00","seq":' || n || ',"data":' || p_data::text || '}');
	-- One notification per transaction (same payload): `billctl events tail`
	-- and the delivery threads wake up.
	PERFORM pg_notify('billing_events', '');
END $$;

-- The data of each object is what `billctl --json` shows for it.
CREATE FUNCTION event_customer_data(c customers) RETURNS jsonb LANGUAGE sql STABLE AS $$
	SELECT jsonb_build_object('customer_id', c.customer_id, 'state', c.state,
	       'email', c.email, 'name', c.name, 'card', c.card_masked,
	       'card_type', c.card_type, 'card_expiry', c.card_expiry)
$$;

CREATE FUNCTION event_subscription_data(s subscriptions) RETURNS jsonb LANGUAGE sql STABLE AS $$
	SELECT jsonb_build_object('id', s.id, 'customer_id', s.customer_id, 'plan', p.code,
	       'plan_version', p.version, 'amount_cents', p.amount_cents, 'currency', p.currency,
	       'next_plan', n.code, 'state', s.state,
	       'cancel_at_period_end', s.cancel_at_period_end, 'period', s.period,
	       'attempts', s.attempts, 'cycles_done', s.cycles_done, 'anchor', s.anchor,
	       'trial_end', s.trial_end, 'period_start', s.period_start,
	       'period_end', s.period_end, 'next_charge_at', s.next_charge_at,
	       'created_at', s.created_at)
	  FROM plans p LEFT JOIN plans n ON n.id = s.next_plan_id
	 WHERE p.id = s.plan_id
$$;

-- Deferred to the commit, so that an event sees its transaction's final
-- rows (a failed charge's next retry is written after the charge) and the
-- events of a transaction follow the order of its statements.
CREATE FUNCTION events_customers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM billing_event(CASE NEW.state WHEN 'bound' THEN 'customer.bound'
	                                     WHEN 'failed' THEN 'customer.enrolment_failed'
	                                     ELSE 'customer.unbound' END,
	                      NEW.customer_id, event_customer_data(NEW), NULL);
	RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER customers_events_insert AFTER INSERT ON customers
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
	WHEN (NEW.state IN ('bound', 'failed'))
	EXECUTE FUNCTION events_customers();
CREATE CONSTRAINT TRIGGER customers_events AFTER UPDATE ON customers
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
	WHEN (OLD.state IS DISTINCT FROM NEW.state AND NEW.state IN ('bound', 'failed', 'unbound'))
	EXECUTE FUNCTION events_customers();

CREATE FUNCTION events_subscriptions() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	kind text;
BEGIN
	IF TG_OP = 'INSERT' THEN
		kind := 'subscription.created';
	ELSIF OLD.plan_id <> NEW.plan_id THEN
		PERFORM billing_event('subscription.plan_changed', NEW.customer_id,
		                      event_subscription_data(NEW), NULL);
	END IF;
	IF TG_OP = 'UPDATE' AND OLD.state <> NEW.state THEN
		kind := CASE WHEN NEW.state IN ('past_due', 'paused', 'canceled', 'ended')
		             THEN 'subscription.' || NEW.state
		             WHEN OLD.state = 'paused' THEN 'subscription.resumed' END;
	END IF;
	IF kind IS NOT NULL THEN
		PERFORM billing_event(kind, NEW.customer_id, event_subscription_data(NEW), NULL);
	END IF;
	RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER subscriptions_events_insert AFTER INSERT ON subscriptions
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION events_subscriptions();
CREATE CONSTRAINT TRIGGER subscriptions_events AFTER UPDATE ON subscriptions
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
	WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.plan_id IS DISTINCT FROM NEW.plan_id)
	EXECUTE FUNCTION events_subscriptions();

-- A charge's final outcome. A payment link paid is also a charge succeeded.
-- A declined subscription charge carries its next retry (NULL: none).
CREATE FUNCTION events_charges() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	data jsonb;
	retry timestamptz;
BEGIN
	data := jsonb_build_object('id', NEW.id, 'mch_order_no', NEW.mch_order_no,
	        'kind', NEW.kind, 'subscription_id', NEW.subscription_id, 'period', NEW.period,
	        'attempt', NEW.attempt, 'customer_id', NEW.customer_id,
	        'amount_cents', NEW.amount_cents, 'currency', NEW.currency, 'state', NEW.state,
	        'pay_order_id', NEW.pay_order_id, 'ret_msg', NEW.ret_msg,
	        'created_at', NEW.created_at);
	IF NEW.state = 'failed' THEN
		SELECT next_charge_at INTO retry FROM subscriptions
		 WHERE id = NEW.subscription_id AND state IN ('trialing', 'active', 'past_due');
		data := data || jsonb_build_object('next_retry_at', retry);
	END IF;
	PERFORM billing_event('charge.' || NEW.state, NEW.customer_id, data, NULL);
	IF NEW.state = 'succeeded' AND NEW.kind = 'one_off' THEN
		PERFORM billing_event('payment_link.paid', NEW.customer_id, data, NULL);
	END IF;
	RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER charges_events_insert AFTER INSERT ON charges
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
	WHEN (NEW.state IN ('succeeded', 'failed'))
	EXECUTE FUNCTION events_charges();
CREATE CONSTRAINT TRIGGER charges_events AFTER UPDATE ON charges
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
	WHEN (OLD.state IS DISTINCT FROM NEW.state AND NEW.state IN ('succeeded', 'failed'))
	EXECUTE FUNCTION events_charges();

-- A refund's or void's final outcome (a void that fails is a refund.failed
-- of kind void).
CREATE FUNCTION events_refunds() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	ch charges;
BEGIN
	SELECT * INTO ch FROM charges WHERE id = NEW.charge_id;
	PERFORM billing_event(CASE WHEN NEW.kind = 'void' AND NEW.state = 'succeeded'
	                           THEN 'void.succeeded' ELSE 'refund.' || NEW.state END,
	        ch.customer_id,
	        jsonb_build_object('id', NEW.id, 'type', NEW.kind, 'mch_refund_no', NEW.mch_refund_no,
	        'charge_id', NEW.charge_id, 'of_mch_order_no', ch.mch_order_no,
	        'of_pay_order_id', ch.pay_order_id, 'customer_id', ch.customer_id,
	        'amount_cents', NEW.amount_cents, 'currency', ch.currency, 'state', NEW.state,
	        'pay_order_id', NEW.pay_order_id, 'ret_msg', NEW.ret_msg,
	        'requested_by', NEW.requested_by, 'created_at', NEW.created_at), NULL);
	RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER refunds_events_insert AFTER INSERT ON refunds
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
	WHEN (NEW.state IN ('succeeded', 'failed'))
	EXECUTE FUNCTION events_refunds();
CREATE CONSTRAINT TRIGGER refunds_events AFTER UPDATE ON refunds
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
	WHEN (OLD.state IS DISTINCT FROM NEW.state AND NEW.state IN ('succeeded', 'failed'))
	EXECUTE FUNCTION events_refunds();

-- billing_events_failed is read at every scrape.
CREATE INDEX events_failed ON events (id) WHERE status = 'failed';
