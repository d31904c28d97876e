-- 0006_pause: what admins' changes need remembered.
--
-- paused_at: when an admin paused a subscription, on the billing clock, so
-- that resuming keeps what the pause left: a trial's remaining time, a paid
-- period's end (billing_resume has the rule). NULL when not paused by an
-- admin (a subscription paused by the dunning rules has no paid time left).
--
-- starts_when_bound: subscribed with --when-bound while the customer's card
-- was not bound yet; the first pass that finds it bound starts a period due
-- before then at that pass's time, so that the wait is not billed in arrears.
ALTER TABLE subscriptions ADD COLUMN paused_at timestamptz,
	ADD COLUMN starts_when_bound boolean NOT NULL DEFAULT false;
