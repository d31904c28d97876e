-- 0001_initial: customers, plans, subscriptions, charges, refunds, audit log.
-- Money is integer cents (bigint); time is timestamptz. The invariants the
-- charge protocol depends on are enforced here, not only in C.

CREATE TABLE customers (
	customer_id     varchar(30) PRIMARY KEY CHECK (customer_id ~ '^[A-Za-z0-9_.-]+$'),
	email           text,
	name            text,
	state           text NOT NULL DEFAULT 'pending'
	                CHECK (state IN ('pending', 'bound', 'failed', 'unbound')),
	card_masked     text,
	card_type       text,
	card_expiry     char(4) CHECK (card_expiry ~ '^[0-9]{4}$'), -- MMYY as the gateway sends it
	enrol_expires_at timestamptz,
	next_check_at   timestamptz,        -- binding follow-up (cc_isbinding) while pending
	checks_done     integer NOT NULL DEFAULT 0,
	created_at      timestamptz NOT NULL DEFAULT now(),
	updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_pending_check ON customers (next_check_at) WHERE state = 'pending';

-- One row per version of a plan file: a changed file makes a new version and
-- subscriptions keep the version they were sold.
CREATE TABLE plans (
	id              bigserial PRIMARY KEY,
	code            text NOT NULL CHECK (code ~ '^[a-z0-9_-]{1,40}$'),
	version         integer NOT NULL CHECK (version > 0),
	name            text NOT NULL,
	amount_cents    bigint NOT NULL CHECK (amount_cents > 0),
	currency        char(3) NOT NULL CHECK (currency = 'CAD'),
	interval        text NOT NULL CHECK (interval IN ('day', 'week', 'month', 'year')),
	interval_count  integer NOT NULL CHECK (interval_count > 0),
	trial_days      integer NOT NULL DEFAULT 0 CHECK (trial_days >= 0),
	cycles          integer CHECK (cycles > 0),            -- NULL: until cancelled
	retry_schedule  text[] NOT NULL DEFAULT '{}',          -- durations: {1d,3d,7d}
	on_exhausted    text NOT NULL DEFAULT 'past_due'
	                CHECK (on_exhausted IN ('cancel', 'past_due', 'pause')),
	checksum        text NOT NULL,
	created_at      timestamptz NOT NULL DEFAULT now(),
	UNIQUE (code, version)
);

CREATE TABLE subscriptions (
	id              bigserial PRIMARY KEY,
	customer_id     varchar(30) NOT NULL REFERENCES customers,
	plan_id         bigint NOT NULL REFERENCES plans,
	next_plan_id    bigint REFERENCES plans,                -- change-plan: from the next period
	state           text NOT NULL
	                CHECK (state IN ('trialing', 'active', 'past_due', 'paused', 'canceled', 'ended')),
	-- Period n starts at calendar(anchor, interval, n - anchor_period): computed
	-- from the anchor, never by stepping. Period numbers never repeat.
	anchor          timestamptz NOT NULL,
	anchor_period   integer NOT NULL DEFAULT 0,
	period          integer NOT NULL DEFAULT 0 CHECK (period >= 0), -- the period to charge next
	period_start    timestamptz,                            -- of the last paid period
	period_end      timestamptz,
	trial_end       timestamptz,
	next_charge_at  timestamptz,                            -- NULL: nothing to charge
	attempts        integer NOT NULL DEFAULT 0,             -- failed attempts this period
	cycles_done     integer NOT NULL DEFAULT 0,
	cancel_at_period_end boolean NOT NULL DEFAULT false,
	created_at      timestamptz NOT NULL DEFAULT now(),
	updated_at      timestamptz NOT NULL DEFAULT now()
);
-- "What is due now" costs in proportion to what is due.
CREATE INDEX subscriptions_due ON subscriptions (next_charge_at)
	WHERE next_charge_at IS NOT NULL AND state IN ('trialing', 'active', 'past_due');
CREATE INDEX subscriptions_customer ON subscriptions (customer_id);

-- One row per attempt; the row (with its mch_order_no) is committed before any
-- byte goes to the gateway.
CREATE TABLE charges (
	id              bigserial PRIMARY KEY,
	mch_order_no    varchar(30) NOT NULL UNIQUE,
	kind            text NOT NULL CHECK (kind IN ('subscription', 'one_off')),
	subscription_id bigint REFERENCES subscriptions,
	period          integer,
	attempt         integer,
	customer_id     varchar(30) NOT NULL REFERENCES customers,
	plan_id         bigint REFERENCES plans,
	amount_cents    bigint NOT NULL CHECK (amount_cents > 0),
	currency        char(3) NOT NULL DEFAULT 'CAD' CHECK (currency = 'CAD'),
	state           text NOT NULL DEFAULT 'pending'
	                CHECK (state IN ('pending', 'succeeded', 'failed', 'unknown')),
	pay_order_id    text UNIQUE,
	trans_id        text,
	gateway_status  integer,
	ret_msg         text,
	pay_succ_time   text,
	lease_owner     text,
	lease_expires_at timestamptz,
	created_at      timestamptz NOT NULL DEFAULT now(),
	updated_at      timestamptz NOT NULL DEFAULT now(),
	CHECK (kind = 'one_off' OR (subscription_id IS NOT NULL AND period IS NOT NULL AND attempt > 0)),
	CHECK (state <> 'succeeded' OR pay_order_id IS NOT NULL)
);
-- At most one successful charge per (subscription, period).
CREATE UNIQUE INDEX charges_one_success ON charges (subscription_id, period)
	WHERE state = 'succeeded';
CREATE UNIQUE INDEX charges_attempt ON charges (subscription_id, period, attempt);
-- At most one open attempt per subscription: nothing new is sent while an
-- outcome is pending or unknown.
CREATE UNIQUE INDEX charges_one_open ON charges (subscription_id)
	WHERE state IN ('pending', 'unknown') AND subscription_id IS NOT NULL;
CREATE INDEX charges_open ON charges (lease_expires_at) WHERE state IN ('pending', 'unknown');
CREATE INDEX charges_created ON charges (created_at);

-- Refunds and voids of a charge.
CREATE TABLE refunds (
	id              bigserial PRIMARY KEY,
	mch_refund_no   varchar(30) NOT NULL UNIQUE,
	kind            text NOT NULL CHECK (kind IN ('refund', 'void')),
	charge_id       bigint NOT NULL REFERENCES charges,
	amount_cents    bigint NOT NULL CHECK (amount_cents > 0),
	state           text NOT NULL DEFAULT 'pending'
	                CHECK (state IN ('pending', 'succeeded', 'failed', 'unknown')),
	pay_order_id    text,                                   -- the gateway's id of the refund order
	ret_msg         text,
	requested_by    text NOT NULL
	                DEFAULT coalesce(nullif(current_setting('billing.actor', true), ''), current_user),
	created_at      timestamptz NOT NULL DEFAULT now(),
	updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_charge ON refunds (charge_id);
CREATE INDEX refunds_created ON refunds (created_at);

-- The refunds of a charge never exceed it, also under concurrent refunds:
-- the charge row is locked, then the sum is read with a fresh snapshot (each
-- statement of a READ COMMITTED function takes one). Unknown and pending
-- refunds count until proven failed. A void takes the whole charge, so it is
-- refused once anything is refunded, and a refund after a void exceeds it.
CREATE FUNCTION refunds_within_charge() RETURNS trigger LANGUAGE plpgsql AS $$
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
	SELECT coalesce(sum(amount_cents), 0) INTO taken FROM refunds
	 WHERE charge_id = NEW.charge_id AND id <> NEW.id AND state <> 'failed';
	IF NEW.state <> 'failed' AND taken + NEW.amount_cents > charged THEN
		RAISE EXCEPTION 'refunds of charge % would exceed % cents', NEW.charge_id, charged
		USING ERRCODE = 'check_violation';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER refunds_within_charge BEFORE INSERT ON refunds
	FOR EACH ROW EXECUTE FUNCTION refunds_within_charge();
-- A failed refund stops counting; reviving one counts it again.
CREATE TRIGGER refunds_within_charge_revived BEFORE UPDATE OF state ON refunds
	FOR EACH ROW WHEN (OLD.state = 'failed' AND NEW.state <> 'failed')
	EXECUTE FUNCTION refunds_within_charge();

-- What the ledger's sums and the gateway's records rely on never changes:
-- order numbers, what a refund is of, and a succeeded charge's money.
CREATE FUNCTION ledger_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_TABLE_NAME = 'charges' THEN
		IF NEW.mch_order_no <> OLD.mch_order_no OR (OLD.state = 'succeeded' AND
		   (NEW.state <> 'succeeded' OR NEW.amount_cents <> OLD.amount_cents
		    OR NEW.pay_order_id IS DISTINCT FROM OLD.pay_order_id)) THEN
			RAISE EXCEPTION 'charge %: order number and a succeeded charge are final', OLD.id
			USING ERRCODE = 'check_violation';
		END IF;
	ELSIF NEW.mch_refund_no <> OLD.mch_refund_no OR NEW.kind <> OLD.kind
	      OR NEW.charge_id <> OLD.charge_id OR NEW.amount_cents <> OLD.amount_cents
	      OR (OLD.state = 'succeeded' AND NEW.state <> 'succeeded') THEN
		RAISE EXCEPTION 'refund %: its order, charge, amount and success are final', OLD.id
		USING ERRCODE = 'check_violation';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER charges_final BEFORE UPDATE ON charges
	FOR EACH ROW EXECUTE FUNCTION ledger_final();
CREATE TRIGGER refunds_final BEFORE UPDATE ON refunds
	FOR EACH ROW EXECUTE FUNCTION ledger_final();

-- cc_query searches charges and refunds by one key (a refund order's
-- mchOrderNo is its mchRefundNo), so a number is used once across both
-- tables. The transaction lock on the number makes a concurrent insert of
-- the same number wait for this one and then see it.
CREATE FUNCTION order_no_unused() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	order_no text;
	used boolean;
BEGIN
	IF TG_TABLE_NAME = 'charges' THEN
		order_no := NEW.mch_order_no;
		PERFORM pg_advisory_xact_lock(72836, hashtext(order_no));
		used := EXISTS (SELECT 1 FROM refunds WHERE mch_refund_no = order_no);
	ELSE
		order_no := NEW.mch_refund_no;
		PERFORM pg_advisory_xact_lock(72836, hashtext(order_no));
		used := EXISTS (SELECT 1 FROM charges WHERE mch_order_no = order_no);
	END IF;
	IF used THEN
		RAISE EXCEPTION 'order number % is already used', order_no USING ERRCODE = 'unique_violation';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER charges_order_no BEFORE INSERT ON charges
	FOR EACH ROW EXECUTE FUNCTION order_no_unused();
CREATE TRIGGER refunds_order_no BEFORE INSERT ON refunds
	FOR EACH ROW EXECUTE FUNCTION order_no_unused();

-- Append-only audit log of every state change and who made it.
CREATE TABLE audit_log (
	id              bigserial PRIMARY KEY,
	at              timestamptz NOT NULL DEFAULT now(),
	actor           text NOT NULL,
	entity          text NOT NULL,
	entity_id       text NOT NULL,
	old_state       text,
	new_state       text,
	detail          text
);

CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit_log
	FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_log
	FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- Every insert and state change of the ledger's tables is recorded with the
-- actor the connection declared (SET billing.actor).
CREATE FUNCTION audit_state() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	ent_id text;
	prev_state text;
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
	END IF;
	IF TG_OP = 'INSERT' OR prev_state IS DISTINCT FROM NEW.state THEN
		INSERT INTO audit_log (actor, entity, entity_id, old_state, new_state)
		VALUES (coalesce(nullif(current_setting('billing.actor', true), ''), current_user),
		        TG_TABLE_NAME, ent_id, prev_state, NEW.state);
	END IF;
	NEW.updated_at := now();
	RETURN NEW;
END $$;
CREATE TRIGGER customers_audit BEFORE INSERT OR UPDATE ON customers
	FOR EACH ROW EXECUTE FUNCTION audit_state();
CREATE TRIGGER subscriptions_audit BEFORE INSERT OR UPDATE ON subscriptions
	FOR EACH ROW EXECUTE FUNCTION audit_state();
CREATE TRIGGER charges_audit BEFORE INSERT OR UPDATE ON charges
	FOR EACH ROW EXECUTE FUNCTION audit_state();
CREATE TRIGGER refunds_audit BEFORE INSERT OR UPDATE ON refunds
	FOR EACH ROW EXECUTE FUNCTION audit_state();
