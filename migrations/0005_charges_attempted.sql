-- 0005_charges_attempted: when a subscription's attempt was made, on the
-- billing clock (the claim's time), so that an outcome learnt later (a
-- cc_query after a lost answer, a notify, reconcile) is dated by the attempt
-- that moved the money, not by the day it was found out. NULL for payment
-- links (the customer pays when they open the page) and for rows written
-- before this migration.
ALTER TABLE charges ADD COLUMN attempted_at timestamptz;
