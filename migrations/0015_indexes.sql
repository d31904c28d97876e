-- 0015_indexes: fewer index entries written per charge and per event
-- (docs/design.md, "What a charge costs the database").
--
-- One index of the open charges instead of two. The open subscription
-- charges are all in charges_one_open (subscription_id), which holds the
-- invariant; charges_open (lease_expires_at) held them again, with the
-- payment links waiting to be paid. A claim probes the open charges of each
-- subscription it finds due: with both indexes, a plan made while charges
-- was empty could probe charges_open, every open charge for every due
-- subscription, instead of charges_one_open's one entry. The queries of open
-- charges say `subscription_id IS NOT NULL`, so that they read
-- charges_one_open (the few open, sorted where they need an order); a
-- payment link is never leased nor unknown.
DROP INDEX charges_open;

-- No query reads charges by created_at alone: the open ones are found
-- through charges_one_open, the rest by business time (charges_business).
DROP INDEX charges_created;

-- A charge has no gateway order until it succeeds, and an event has a
-- once_key only when it is a time-based one: NULLs need no index entry.
-- The same uniqueness, over the rows that have a value.
ALTER TABLE charges DROP CONSTRAINT charges_pay_order_id_key;
CREATE UNIQUE INDEX charges_pay_order_id ON charges (pay_order_id) WHERE pay_order_id IS NOT NULL;
ALTER TABLE events DROP CONSTRAINT events_once_key_key;
CREATE UNIQUE INDEX events_once_key ON events (once_key) WHERE once_key IS NOT NULL;
