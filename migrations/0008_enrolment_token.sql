-- 0008_enrolment_token: a card page's return is accepted once, and only for
-- the enrolment it belongs to. Each enrolment gets a random token, carried
-- in the returnUrl we give cc_adduser; a successful return must carry the
-- pending token and spends it, so that an old signed return replayed later
-- neither binds an unbound customer again nor puts back an older card.
ALTER TABLE customers ADD COLUMN enrol_token text;
