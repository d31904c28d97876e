-- 0013_reconcile_window: reconcile's window is business time, the billing
-- clock's, not when rows were written: a charge's attempt (else its
-- payment: a link is paid when the customer opens it), a refund's request.
-- Rows with neither (an open payment link) fall back to created_at.
CREATE INDEX charges_business ON charges ((coalesce(attempted_at, settled_at, created_at)));
CREATE INDEX refunds_business ON refunds ((coalesce(requested_at, created_at)));
