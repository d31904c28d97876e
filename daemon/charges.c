/* charges.c: every write to the charges table, and the claims on it.
 *
 * An attempt is claimed and its intent committed in one statement, before
 * any byte goes to the gateway; its outcome is written only by the process
 * that holds its lease; an open outcome is claimed again only for a
 * cc_query. The database enforces one open attempt per subscription, one
 * success per period and unique order numbers (migrations/0001_initial.sql). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "charges.h"
#include "log.h"
#include "owner_lock.h"

#define OPEN_STATES "('pending', 'unknown')"

const char *const charges_state_names[CHARGES_NSTATES] = {[CHARGES_PENDING] = "pending",
                                                          [CHARGES_SUCCEEDED] = "succeeded",
                                                          [CHARGES_FAILED] = "failed",
                                                          [CHARGES_UNKNOWN] = "unknown"};

int charges_state_parse(const char *s)
{
	return db_name_index(charges_state_names, CHARGES_NSTATES, s);
}

int charges_state_outcome(const char *s)
{
	switch (charges_state_parse(s)) {
	case CHARGES_SUCCEEDED:
		return GW_SUCCESS;
	case CHARGES_FAILED:
		return GW_FAIL;
	default:
		return GW_UNKNOWN;
	}
}

/* Columns of both claims' RETURNING; the due claim adds where it got to
 * (its last due row's time and subscription, on every row). */
enum { CL_ID, CL_ORDER_NO, CL_SUB, CL_CUSTOMER, CL_AMOUNT, CL_AT_US, CL_LAST_SUB };
/* The customer column is the gateway's customerId: the card charged. */
#define CLAIM_RETURNING                                                                            \
	" RETURNING id, mch_order_no, subscription_id, coalesce(binding_id, customer_id), "        \
	"amount_cents"

/* The attempts due are inserted ON CONFLICT DO NOTHING (so that one taken
 * number does not fail the whole claim); a due attempt that was not
 * inserted comes back with a NULL id, to be logged. The claim starts after
 * the cursor ($7, $8: the last due time in microseconds and subscription
 * claimed in this pass, NULL: from the start), walking the due index in its
 * order, so that it does not read again the subscriptions this pass has in
 * flight: they are still due until their outcomes are recorded. OFFSET 0
 * keeps the open-charge check a probe of charges_one_open per due row: as an
 * anti join, planned from statistics taken when few charges were open, it
 * read every open charge for every due row. The cursor comes back on every
 * row, and the attempts not inserted are looked for only when there are
 * some: joined to the inserted rows, a batch of n cost n * n comparisons
 * (the planner expects one row of each). */
static const struct db_stmt SQL_CLAIM_DUE = DB_STMT(
    "WITH due AS ("
    "  SELECT s.id, s.customer_id, s.plan_id, s.period,"
    "         (extract(epoch FROM s.next_charge_at) * 1000000)::bigint AS at_us"
    "    FROM subscriptions s"
    "   WHERE s.next_charge_at <= to_timestamp($1)"
    "     AND s.state IN ('trialing', 'active', 'past_due')"
    "     AND (s.next_charge_at, s.id) > (coalesce(timestamptz 'epoch' + $7::bigint *"
    "          interval '1 microsecond', '-infinity'), $8::bigint)"
    "     AND ($4::bigint IS NULL OR s.id = $4::bigint)"
    "     AND EXISTS (SELECT 1 FROM customers cu WHERE cu.customer_id = s.customer_id"
    "                  AND cu.state = 'bound')"
    "     AND NOT EXISTS (SELECT 1 FROM charges c WHERE c.subscription_id = s.id"
    "                      AND c.state IN " OPEN_STATES " OFFSET 0)"
    "   ORDER BY s.next_charge_at, s.id LIMIT $2"
    "   FOR UPDATE OF s SKIP LOCKED),"
    " attempt AS ("
    "  SELECT " ORDER_NO_ATTEMPT(
        "$3", "d.id", "d.period",
        "a.n") " AS mch_order_no, d.id,"
               "         d.period, a.n, d.customer_id, d.plan_id, p.amount_cents, d.at_us,"
               "         (SELECT cu.binding_id FROM customers cu"
               "           WHERE cu.customer_id = d.customer_id) AS binding_id"
               "    FROM due d JOIN plans p ON p.id = d.plan_id"
               "   CROSS JOIN LATERAL (SELECT coalesce(max(attempt), 0) + 1 AS n FROM charges c"
               "                        WHERE c.subscription_id = d.id AND c.period = d.period) a),"
               " ins AS ("
               "  INSERT INTO charges (mch_order_no, kind, subscription_id, period, attempt, "
               "customer_id,"
               "                       plan_id, amount_cents, lease_owner, lease_expires_at, "
               "attempted_at, binding_id)"
               "  SELECT mch_order_no, 'subscription', id, period, n, customer_id, plan_id, "
               "amount_cents,"
               "         $5, now() + make_interval(secs => $6::int), to_timestamp($1), binding_id"
               "    FROM attempt"
               "  ON CONFLICT DO NOTHING" CLAIM_RETURNING "),"
               " last_due AS (SELECT at_us, id FROM due ORDER BY at_us DESC, id DESC LIMIT 1)"
               " SELECT ins.*, l.at_us, l.id FROM ins, last_due l"
               " UNION ALL SELECT NULL, a.mch_order_no, a.id, coalesce(a.binding_id, "
               "a.customer_id),"
               "       a.amount_cents, l.at_us, l.id"
               "  FROM attempt a, last_due l"
               " WHERE (SELECT count(*) FROM ins) < (SELECT count(*) FROM attempt)"
               "   AND NOT EXISTS (SELECT 1 FROM ins WHERE ins.subscription_id = a.id)");

/* Leases run on the database's clock, not the billing clock. A pending
 * charge is claimable at its lease's end, or sooner when its owner's lock
 * is free (the process is gone or cut off from the database) and its claim
 * ($5 ms before the cutoff: created_at, on the same clock) is too old for an
 * answer to be in flight. The open charges are few (in flight, unknown):
 * the partial index charges_one_open holds them all (subscription_id IS NOT
 * NULL says so to the planner), and pg_locks is read once. */
#define ABANDONED                                                                                  \
	"(state = 'pending' AND created_at <= $4::timestamptz - $5::bigint * interval '1 ms'"      \
	" AND " OWNER_LOCK_FREE("lease_owner") ")"
static const struct db_stmt SQL_CLAIM_UNRESOLVED = DB_STMT(
    "UPDATE charges SET lease_owner = $1, lease_expires_at = now() + make_interval(secs => "
    "$2::int)"
    " WHERE id IN (SELECT id FROM charges"
    "               WHERE state IN " OPEN_STATES " AND subscription_id IS NOT NULL"
    "                 AND (lease_expires_at <= $4::timestamptz OR " ABANDONED ")"
    "               ORDER BY lease_expires_at LIMIT $3 FOR UPDATE SKIP LOCKED)" CLAIM_RETURNING);

/* Calls fn for each claimed row of r; moves cur (NULL: the claim has no
 * cursor) past every row. */
static int each_claimed(PGresult *r, struct charges_cursor *cur, charges_claim_fn fn, void *arg)
{
	int n = 0;

	if (!r)
		return -1;
	for (int i = 0; i < PQntuples(r); i++) {
		struct charges_claim cl = {.id = db_i64(r, i, CL_ID),
		                           .subscription_id = db_i64(r, i, CL_SUB),
		                           .amount_cents = db_i64(r, i, CL_AMOUNT)};

		if (cur) {
			cur->at_us = db_i64(r, i, CL_AT_US);
			cur->sub_id = db_i64(r, i, CL_LAST_SUB);
		}
		snprintf(cl.mch_order_no, sizeof(cl.mch_order_no), "%s", db_str(r, i, CL_ORDER_NO));
		snprintf(cl.customer_id, sizeof(cl.customer_id), "%s", db_str(r, i, CL_CUSTOMER));
		if (db_isnull(r, i, CL_ID)) {
			/* Its number is taken: the subscription stays due, and is
			 * skipped until someone looks. */
			char sub[24];

			snprintf(sub, sizeof(sub), "%lld", (long long)cl.subscription_id);
			log_event(
			    "error", "claim_conflict", "subscription", sub, "mch_order_no",
			    cl.mch_order_no, "detail",
			    "the attempt's order number or attempt is already taken: not charged",
			    (char *)NULL);
			continue;
		}
		fn(arg, &cl);
		n++;
	}
	PQclear(r);
	return n;
}

int charges_claim_due_send(PGconn *c, int64_t now, int64_t only_sub, int limit,
                           const char *order_prefix, const struct charges_lease *lease,
                           const struct charges_cursor *cur, char *err, size_t errlen)
{
	return db_stmt_send(c, err, errlen, &SQL_CLAIM_DUE, DB_I(now), DB_I(limit),
	                    DB_S(order_prefix), DB_N(only_sub), DB_S(lease->owner),
	                    DB_I(lease->seconds), DB_N(cur->at_us), DB_I(cur->sub_id));
}

int charges_claimed(PGconn *c, struct charges_cursor *cur, charges_claim_fn fn, void *arg,
                    char *err, size_t errlen)
{
	return each_claimed(db_stmt_wait(c, err, errlen), cur, fn, arg);
}

int charges_cutoff(PGconn *c, char *cutoff, size_t len, char *err, size_t errlen)
{
	PGresult *r = db_query(c, "SELECT clock_timestamp()", 0, NULL, err, errlen);

	if (!r)
		return -1;
	snprintf(cutoff, len, "%s", db_str(r, 0, 0));
	PQclear(r);
	return 0;
}

int charges_claim_unresolved_send(PGconn *c, const char *cutoff, int64_t answered_ms, int limit,
                                  const struct charges_lease *lease, char *err, size_t errlen)
{
	return db_stmt_send(c, err, errlen, &SQL_CLAIM_UNRESOLVED, DB_S(lease->owner),
	                    DB_I(lease->seconds), DB_I(limit), DB_S(cutoff), DB_I(answered_ms));
}

enum {
	OW_CHARGE,
	OW_SUB,
	OW_PLAN,
	OW_ANCHOR,
	OW_ANCHOR_PERIOD,
	OW_PERIOD,
	OW_CYCLES,
	OW_ATTEMPTS,
	OW_STATE,
	OW_NEXT,
	OW_CHARGE_PERIOD,
	OW_CHARGE_STATE
};
static const struct db_stmt SQL_LOCK_OWNED =
    DB_STMT("SELECT c.id, s.id, s.plan_id, extract(epoch FROM s.anchor)::bigint, s.anchor_period,"
            "       s.period, s.cycles_done, s.attempts, s.state,"
            "       coalesce(extract(epoch FROM s.next_charge_at)::bigint, 0), c.period, c.state"
            "  FROM charges c JOIN subscriptions s ON s.id = c.subscription_id"
            " WHERE c.id = ANY($1::bigint[]) AND c.lease_owner = $2 FOR UPDATE OF c, s");

int charges_lock_owned(PGconn *c, const char *ids, const char *owner, charges_owned_fn fn,
                       void *arg, char *err, size_t errlen)
{
	const char *p[2] = {ids, owner};
	PGresult *r = db_query_prepared(c, &SQL_LOCK_OWNED, 2, p, err, errlen);
	int rc = 0;

	if (!r)
		return -1;
	for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
		/* Open is checked here, on the locked row, and not in the query:
		 * a state condition there lets a plan cached while the table was
		 * small read the whole open-charges index (and its dead entries)
		 * instead of the batch's ids. */
		int st = charges_state_parse(db_str(r, i, OW_CHARGE_STATE));

		if (st != CHARGES_PENDING && st != CHARGES_UNKNOWN)
			continue;
		struct charges_owned o = {.charge_id = db_i64(r, i, OW_CHARGE),
		                          .charge_period = (int)db_i64(r, i, OW_CHARGE_PERIOD),
		                          .subscription_id = db_i64(r, i, OW_SUB),
		                          .plan_id = db_i64(r, i, OW_PLAN),
		                          .anchor = db_i64(r, i, OW_ANCHOR),
		                          .anchor_period = (int)db_i64(r, i, OW_ANCHOR_PERIOD),
		                          .period = (int)db_i64(r, i, OW_PERIOD),
		                          .cycles_done = (int)db_i64(r, i, OW_CYCLES),
		                          .attempts = (int)db_i64(r, i, OW_ATTEMPTS),
		                          .next_charge_at = db_i64(r, i, OW_NEXT)};

		snprintf(o.state, sizeof(o.state), "%s", db_str(r, i, OW_STATE));
		rc = fn(arg, &o, err, errlen);
	}
	PQclear(r);
	return rc < 0 ? -1 : 0;
}

/* When a charge's outcome is settled, on the billing clock $n (unix
 * seconds): the attempt's time when it has one, so that an outcome learnt
 * later is dated by the attempt that moved the money. Final once set
 * (migrations/0002_business_time.sql). */
#define SETTLED_AT(state, n)                                                                       \
	"settled_at = CASE WHEN " state " IN ('succeeded', 'failed') THEN "                        \
	"coalesce(settled_at, attempted_at, to_timestamp(" n "::bigint)) END"

static const struct db_stmt SQL_SET_OUTCOMES = DB_STMT(
    "UPDATE charges c SET state = u.state, pay_order_id = u.pay_order_id,"
    "       trans_id = u.trans_id, gateway_status = u.status, ret_msg = u.msg,"
    "       pay_succ_time = u.succ, lease_owner = NULL, updated_at = now(),"
    "       lease_expires_at = CASE WHEN u.state = 'unknown' THEN now() END,"
    "       " SETTLED_AT("u.state", "u.at") ""
                                            "  FROM unnest($1::bigint[], $2::text[], $3::text[], "
                                            "$4::text[], $5::int[], $6::text[],"
                                            "              $7::text[], $8::bigint[]) AS u(id, "
                                            "state, pay_order_id, trans_id, status, msg,"
                                            "                                             succ, at)"
                                            " WHERE c.id = u.id");

/* "" as SQL NULL */
static struct db_param opt_str(const char *v)
{
	return DB_S(v && v[0] ? v : NULL);
}

void charges_outcomes_add(struct charges_outcomes *o, int64_t id, const char *state,
                          const char *pay_order_id, const char *trans_id, int status,
                          const char *ret_msg, const char *pay_succ_time, int64_t now)
{
	db_batch_add(&o->rows, DB_I(id), DB_S(state), opt_str(pay_order_id), opt_str(trans_id),
	             status >= 0 ? DB_I(status) : DB_NULL, opt_str(ret_msg), opt_str(pay_succ_time),
	             DB_I(now));
}

int charges_outcomes_write(PGconn *c, struct charges_outcomes *o, char *err, size_t errlen)
{
	return db_batch_exec(c, &SQL_SET_OUTCOMES, &o->rows, err, errlen);
}

void charges_outcomes_free(struct charges_outcomes *o)
{
	db_batch_free(&o->rows);
}

/* Payment links only: a subscription's charge moves its subscription
 * when recorded, which the scheduler's recorder does. */
static const char SQL_PAID[] =
    "UPDATE charges SET state = 'succeeded', pay_order_id = $2, trans_id = nullif($3, ''),"
    "       gateway_status = $4::int, pay_succ_time = nullif($5, ''), lease_owner = NULL,"
    "       lease_expires_at = NULL, ret_msg = coalesce($7, ret_msg),"
    "       " SETTLED_AT(
        "'succeeded'",
        "current_setting('billing.now')") " WHERE mch_order_no = $1 AND state IN " OPEN_STATES
                                          " AND amount_cents = $6::bigint"
                                          "   AND kind = 'one_off' RETURNING id";

/* Why SQL_PAID matched nothing. */
enum { WHY_SAME, WHY_AMOUNT, WHY_LINK };
static const char SQL_PAID_WHY_NOT[] =
    "SELECT state = 'succeeded' AND pay_order_id = $2, amount_cents = $3::bigint,"
    "       kind = 'one_off'"
    "  FROM charges WHERE mch_order_no = $1";

enum charges_paid charges_mark_paid(PGconn *c, const char *mch_order_no,
                                    const struct charges_payment *pm, char *err, size_t errlen)
{
	PGresult *r;
	enum charges_paid rc;
	int n = db_count(c, err, errlen, SQL_PAID, DB_S(mch_order_no), DB_S(pm->pay_order_id),
	                 DB_S(pm->trans_id ? pm->trans_id : ""), DB_I(pm->status),
	                 DB_S(pm->pay_succ_time ? pm->pay_succ_time : ""), DB_I(pm->amount_cents),
	                 DB_S(pm->note));

	if (n < 0)
		return strcmp(db_last_sqlstate(), "23505") == 0 ? CHARGES_PAID_DUPLICATE
		                                                : CHARGES_PAID_ERROR;
	if (n > 0)
		return CHARGES_PAID_RECORDED;
	r = db_get(c, err, errlen, SQL_PAID_WHY_NOT, DB_S(mch_order_no), DB_S(pm->pay_order_id),
	           DB_I(pm->amount_cents));
	if (!r)
		return CHARGES_PAID_ERROR;
	rc = PQntuples(r) == 0                            ? CHARGES_PAID_UNKNOWN
	     : strcmp(db_str(r, 0, WHY_LINK), "t") != 0   ? CHARGES_PAID_NOT_LINK
	     : strcmp(db_str(r, 0, WHY_SAME), "t") == 0   ? CHARGES_PAID_ALREADY
	     : strcmp(db_str(r, 0, WHY_AMOUNT), "t") != 0 ? CHARGES_PAID_MISMATCH
	                                                  : CHARGES_PAID_CONFLICT;
	PQclear(r);
	return rc;
}

int charges_mark_failed(PGconn *c, int64_t id, const char *ret_msg, int64_t now, char *err,
                        size_t errlen)
{

	return db_run(c, err, errlen,
	              "UPDATE charges SET state = 'failed', ret_msg = $2, " SETTLED_AT(
	                  "'failed'", "$3") " WHERE id = $1 AND state = 'pending'",
	              DB_I(id), DB_S(ret_msg), DB_I(now));
}

/* The id is taken first so that the order number can derive from it. */
static const char SQL_CREATE_LINK[] =
    "WITH n AS (SELECT nextval(pg_get_serial_sequence('charges', 'id')) AS id)"
    " INSERT INTO charges (id, mch_order_no, kind, customer_id, amount_cents)"
    " SELECT n.id, " ORDER_NO_LINK("$1::text",
                                   "n.id") ", 'one_off', cu.customer_id, $3"
                                           "   FROM n, customers cu WHERE cu.customer_id = $2"
                                           " RETURNING id, mch_order_no";

int charges_create_link(PGconn *c, const char *order_prefix, const char *customer_id,
                        int64_t amount, int64_t *id, char *mch_order_no, size_t len, char *err,
                        size_t errlen)
{
	PGresult *r = db_one(db_get(c, err, errlen, SQL_CREATE_LINK, DB_S(order_prefix),
	                            DB_S(customer_id), DB_I(amount)),
	                     err, errlen, "unknown customer '%s'", customer_id);

	if (!r)
		return -1;
	*id = db_i64(r, 0, 0);
	snprintf(mch_order_no, len, "%s", db_str(r, 0, 1));
	PQclear(r);
	return 0;
}

enum { LA_ORDER_NO, LA_STATE, LA_MSG };

int charges_last_attempt(PGconn *c, int64_t sub, char *mch_order_no, size_t len, char *state,
                         size_t state_len, char *err, size_t errlen)
{
	PGresult *r;

	r = db_get(c, err, errlen,
	           "SELECT mch_order_no, state, coalesce(ret_msg, '') FROM charges"
	           " WHERE subscription_id = $1 ORDER BY id DESC LIMIT 1",
	           DB_I(sub));
	if (!r)
		return -1;
	snprintf(state, state_len, "%s", PQntuples(r) ? db_str(r, 0, LA_STATE) : "");
	if (PQntuples(r)) {
		snprintf(mch_order_no, len, "%s", db_str(r, 0, LA_ORDER_NO));
		snprintf(err, errlen, "%s", db_str(r, 0, LA_MSG));
	}
	PQclear(r);
	return 0;
}

/* Subscription attempts sent and then lost with the server that held their
 * intent (failover.c): back as unknown, leased to no one, so that the next
 * pass resolves them with cc_query before anything new is sent. Period and
 * attempt are read back from the number (ORDER_NO_ATTEMPT). A number the
 * server still has is left alone; one that cannot go back (its
 * subscription has another open charge) comes back in the second result. */
static const struct db_stmt SQL_RESTORE_SENT = {
    "WITH u AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[],"
    "                                $5::bigint[]) AS u(no, sub, customer, amount, at)),"
    " ins AS ("
    "  INSERT INTO charges (mch_order_no, kind, subscription_id, period, attempt, customer_id,"
    "                       plan_id, amount_cents, state, ret_msg, lease_expires_at,"
    "                       attempted_at)"
    "  SELECT u.no, 'subscription', u.sub, substring(u.no FROM '-([0-9]+)-[0-9]+$')::int,"
    "         substring(u.no FROM '-([0-9]+)$')::int, u.customer, s.plan_id, u.amount,"
    "         'unknown', 'sent before a failover lost its intent: cc_query decides', now(),"
    "         to_timestamp(u.at)"
    "    FROM u JOIN subscriptions s ON s.id = u.sub"
    "   WHERE NOT EXISTS (SELECT 1 FROM charges c WHERE c.mch_order_no = u.no)"
    "  ON CONFLICT DO NOTHING RETURNING mch_order_no)"
    " SELECT 'restored', mch_order_no FROM ins"
    " UNION ALL SELECT 'lost', u.no FROM u"
    "  WHERE NOT EXISTS (SELECT 1 FROM charges c WHERE c.mch_order_no = u.no)"
    "    AND NOT EXISTS (SELECT 1 FROM ins WHERE ins.mch_order_no = u.no)",
    0};

void charges_sent_add(struct charges_sent *s, const char *mch_order_no, int64_t sub,
                      const char *customer_id, int64_t amount_cents, int64_t at)
{
	db_batch_add(&s->rows, DB_S(mch_order_no), DB_I(sub), DB_S(customer_id), DB_I(amount_cents),
	             DB_I(at));
}

void charges_sent_free(struct charges_sent *s)
{
	db_batch_free(&s->rows);
}

int charges_restore_sent(PGconn *c, struct charges_sent *s, char *err, size_t errlen)
{
	PGresult *r;
	int n = 0;

	if (!s->rows.n)
		return 0;
	r = db_batch_query(c, &SQL_RESTORE_SENT, &s->rows, err, errlen);
	if (!r)
		return -1;
	for (int i = 0; i < PQntuples(r); i++) {
		if (strcmp(db_str(r, i, 0), "restored") == 0) {
			n++;
			continue;
		}
		log_event("error", "intent_lost", "mch_order_no", db_str(r, i, 1), "detail",
		          "sent before a failover, and its subscription has another open charge: "
		          "billctl reconcile",
		          (char *)NULL);
	}
	PQclear(r);
	return n;
}

void charges_attempt_after(const char *mch_order_no, int k, char *out, size_t len)
{
	const char *dash = strrchr(mch_order_no, '-');
	int prefix = dash ? (int)(dash - mch_order_no) : 0;

	snprintf(out, len, "%.*s-%d", prefix, mch_order_no, dash ? atoi(dash + 1) + k : k);
}
