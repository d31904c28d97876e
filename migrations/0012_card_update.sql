-- 0012_card_update: a bound customer's card is replaced through a new card
-- page. The gateway binds one card per customerId, so each replacement binds
-- under a new gateway id derived from the customer's own (alice~2, then
-- alice~3; '~' is never in a customer id, so the two never meet). The card
-- in use stays the old one until the new binding is confirmed (the card
-- page's return, or cc_isbinding); a replacement that fails or expires
-- leaves it in use.

-- The gateway's customerId of the card in use; NULL: the customer id.
ALTER TABLE customers ADD COLUMN binding_id varchar(30) UNIQUE;
-- The gateway's customerId the charge was sent to (the card charged); NULL:
-- the customer id.
ALTER TABLE charges ADD COLUMN binding_id varchar(30);

-- One row per replacement: the pending one is the customer's replacement in
-- progress (at most one), with its enrolment token, its card page and its
-- cc_isbinding follow-up, like an enrolment's (customers).
CREATE TABLE card_updates (
	id              bigserial PRIMARY KEY,
	binding_id      varchar(30) NOT NULL UNIQUE CHECK (binding_id ~ '^[A-Za-z0-9_.-]+~[0-9]+$'),
	customer_id     varchar(30) NOT NULL REFERENCES customers,
	n               integer NOT NULL CHECK (n >= 2),       -- the ~N of binding_id
	state           text NOT NULL DEFAULT 'pending'
	                CHECK (state IN ('pending', 'bound', 'failed')),
	enrol_token     text,
	pay_url         text,
	requested_at    timestamptz NOT NULL,                  -- billing clock
	expires_at      timestamptz NOT NULL,                  -- billing clock
	next_check_at   timestamptz,
	checks_done     integer NOT NULL DEFAULT 0,
	created_at      timestamptz NOT NULL DEFAULT now(),
	updated_at      timestamptz NOT NULL DEFAULT now(),
	UNIQUE (customer_id, n)
);
CREATE UNIQUE INDEX card_updates_one_pending ON card_updates (customer_id) WHERE state = 'pending';
CREATE INDEX card_updates_check ON card_updates (next_check_at) WHERE state = 'pending';
CREATE TRIGGER card_updates_audit BEFORE INSERT OR UPDATE ON card_updates
	FOR EACH ROW EXECUTE FUNCTION audit_state();

-- Events carry the gateway id of the card in use; a switch of cards is a
-- customer.bound (with the new binding id), written in its transaction.
CREATE OR REPLACE FUNCTION event_customer_data(c customers) RETURNS jsonb LANGUAGE sql STABLE AS $$
	SELECT jsonb_build_object('customer_id', c.customer_id, 'state', c.state,
	       'email', c.email, 'name', c.name, 'card', c.card_masked,
	       'card_type', c.card_type, 'card_expiry', c.card_expiry,
	       'binding_id', coalesce(c.binding_id, c.customer_id))
$$;
CREATE CONSTRAINT TRIGGER customers_events_card AFTER UPDATE ON customers
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
	WHEN (OLD.binding_id IS DISTINCT FROM NEW.binding_id
	      AND OLD.state = 'bound' AND NEW.state = 'bound')
	EXECUTE FUNCTION events_customers();

GRANT SELECT, INSERT, UPDATE ON card_updates TO billing_app;
GRANT USAGE ON SEQUENCE card_updates_id_seq TO billing_app;
