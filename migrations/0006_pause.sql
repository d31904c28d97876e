-- 0006_pause: when an admin paused a subscription, on the billing clock, so
-- that resuming keeps what the pause left: a trial's remaining time, a paid
-- period's end (billing_resume has the rule). NULL when not paused by an
-- admin (a subscription paused by the dunning rules has no paid time left).
ALTER TABLE subscriptions ADD COLUMN paused_at timestamptz;
