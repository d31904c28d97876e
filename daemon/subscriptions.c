/* subscriptions.c: the subscriptions ledger as admins change it. Every
 * change is one conditional UPDATE (the condition is the state it may leave),
 * so that a concurrent scheduler or admin never sees half of it; when the
 * condition fails the subscription is read again to say why. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing.h"
#include "customers.h"
#include "db.h"
#include "plans.h"
#include "subscriptions.h"

#define COLS                                                                                       \
	"s.id, s.customer_id, s.plan_id, p.code, p.version, p.amount_cents,"                       \
	" coalesce(s.next_plan_id, 0), coalesce(np.code, ''), s.state,"                            \
	" extract(epoch FROM s.anchor)::bigint, s.anchor_period, s.period, s.attempts,"            \
	" s.cycles_done, s.cancel_at_period_end,"                                                  \
	" coalesce(extract(epoch FROM s.period_start)::bigint, 0),"                                \
	" coalesce(extract(epoch FROM s.period_end)::bigint, 0),"                                  \
	" coalesce(extract(epoch FROM s.trial_end)::bigint, 0),"                                   \
	" coalesce(extract(epoch FROM s.next_charge_at)::bigint, 0),"                              \
	" extract(epoch FROM s.created_at)::bigint"
#define FROM                                                                                       \
	" FROM subscriptions s JOIN plans p ON p.id = s.plan_id"                                   \
	" LEFT JOIN plans np ON np.id = s.next_plan_id"

/* Columns of COLS, in order. */
enum {
	COL_ID,
	COL_CUSTOMER,
	COL_PLAN,
	COL_PLAN_CODE,
	COL_PLAN_VERSION,
	COL_AMOUNT,
	COL_NEXT_PLAN,
	COL_NEXT_PLAN_CODE,
	COL_STATE,
	COL_ANCHOR,
	COL_ANCHOR_PERIOD,
	COL_PERIOD,
	COL_ATTEMPTS,
	COL_CYCLES,
	COL_CANCEL_AT_END,
	COL_PERIOD_START,
	COL_PERIOD_END,
	COL_TRIAL_END,
	COL_NEXT_CHARGE,
	COL_CREATED,
};

static void fill(const PGresult *r, int i, struct subscription *s)
{
	memset(s, 0, sizeof(*s));
	s->id = db_i64(r, i, COL_ID);
	snprintf(s->customer_id, sizeof(s->customer_id), "%s", db_str(r, i, COL_CUSTOMER));
	s->plan_id = db_i64(r, i, COL_PLAN);
	snprintf(s->plan_code, sizeof(s->plan_code), "%s", db_str(r, i, COL_PLAN_CODE));
	s->plan_version = (int)db_i64(r, i, COL_PLAN_VERSION);
	s->amount_cents = db_i64(r, i, COL_AMOUNT);
	s->next_plan_id = db_i64(r, i, COL_NEXT_PLAN);
	snprintf(s->next_plan_code, sizeof(s->next_plan_code), "%s",
	         db_str(r, i, COL_NEXT_PLAN_CODE));
	snprintf(s->state, sizeof(s->state), "%s", db_str(r, i, COL_STATE));
	s->anchor = db_i64(r, i, COL_ANCHOR);
	s->anchor_period = (int)db_i64(r, i, COL_ANCHOR_PERIOD);
	s->period = (int)db_i64(r, i, COL_PERIOD);
	s->attempts = (int)db_i64(r, i, COL_ATTEMPTS);
	s->cycles_done = (int)db_i64(r, i, COL_CYCLES);
	s->cancel_at_period_end = strcmp(db_str(r, i, COL_CANCEL_AT_END), "t") == 0;
	s->period_start = db_i64(r, i, COL_PERIOD_START);
	s->period_end = db_i64(r, i, COL_PERIOD_END);
	s->trial_end = db_i64(r, i, COL_TRIAL_END);
	s->next_charge_at = db_i64(r, i, COL_NEXT_CHARGE);
	s->created_at = db_i64(r, i, COL_CREATED);
}

int subscriptions_get(PGconn *c, int64_t id, struct subscription *out, char *err, size_t errlen)
{
	PGresult *r =
	    db_one(db_get(c, err, errlen, "SELECT " COLS FROM " WHERE s.id = $1", DB_I(id)), err,
	           errlen, "unknown subscription %" PRId64, id);

	if (!r)
		return -1;
	fill(r, 0, out);
	PQclear(r);
	return 0;
}

int subscriptions_create(PGconn *c, const char *customer_id, const struct plan *p, int64_t start,
                         int trial_days, struct subscription *out, char *err, size_t errlen)
{
	int64_t anchor = billing_anchor(start, trial_days);
	const char *cq[1] = {customer_id};
	PGresult *r;
	int64_t id;

	/* The customer's state is checked in the same statement as the insert. */
	r = db_get(c, err, errlen,
	           "INSERT INTO subscriptions (customer_id, plan_id, state, anchor, trial_end,"
	           "                           next_charge_at)"
	           " SELECT customer_id, $2, CASE WHEN $4::bigint IS NULL THEN 'active'"
	           "        ELSE 'trialing' END, to_timestamp($3), to_timestamp($4::bigint),"
	           "        to_timestamp($3)"
	           "   FROM customers WHERE customer_id = $1 AND state IN ('pending', 'bound')"
	           " RETURNING id",
	           DB_S(customer_id), DB_I(p->id), DB_I(anchor), DB_N(trial_days > 0 ? anchor : 0));
	if (!r)
		return -1;
	if (PQntuples(r) == 0) {
		PQclear(r);
		r = db_query(c, "SELECT state FROM customers WHERE customer_id = $1", 1, cq, err,
		             errlen);
		if (!r)
			return -1;
		if (PQntuples(r) == 0)
			snprintf(err, errlen, "unknown customer '%s'", customer_id);
		else
			snprintf(err, errlen,
			         "customer '%s' is %s: enrol a card again (customer enrol) before "
			         "subscribing",
			         customer_id, db_str(r, 0, 0));
		PQclear(r);
		return -1;
	}
	id = db_i64(r, 0, 0);
	PQclear(r);
	return subscriptions_get(c, id, out, err, errlen);
}

int subscriptions_list(PGconn *c, const char *customer_id, const char *state,
                       struct subscription **out, int *n, char *err, size_t errlen)
{
	const char *p[2] = {customer_id, state};
	PGresult *r = db_query(c,
	                       "SELECT " COLS FROM " WHERE ($1::text IS NULL OR s.customer_id = $1)"
	                       "   AND ($2::text IS NULL OR s.state = $2) ORDER BY s.id",
	                       2, p, err, errlen);

	if (!r)
		return -1;
	*out = db_rows_alloc(r, sizeof(**out), n, err, errlen);
	if (!*out)
		return -1;
	for (int i = 0; i < *n; i++)
		fill(r, i, &(*out)[i]);
	PQclear(r);
	return 0;
}

/* Columns of a subscription's charges. */
enum {
	CH_ID,
	CH_ORDER_NO,
	CH_PERIOD,
	CH_ATTEMPT,
	CH_AMOUNT,
	CH_STATE,
	CH_PAY_ORDER_ID,
	CH_RET_MSG,
	CH_CREATED,
};

int subscriptions_charges(PGconn *c, int64_t id, struct subscription_charge **out, int *n,
                          char *err, size_t errlen)
{
	PGresult *r;

	r = db_get(
	    c, err, errlen,
	    "SELECT c.id, c.mch_order_no, c.period, c.attempt, c.amount_cents,"
	    "       CASE WHEN c.state <> 'succeeded' THEN c.state"
	    "            WHEN EXISTS (SELECT 1 FROM refunds r WHERE r.charge_id = c.id"
	    "                          AND r.kind = 'void' AND r.state = 'succeeded')"
	    "            THEN 'voided'"
	    "            WHEN (SELECT sum(r.amount_cents) FROM refunds r WHERE r.charge_id = c.id"
	    "                   AND r.state = 'succeeded') = c.amount_cents THEN 'refunded'"
	    "            ELSE c.state END,"
	    "       coalesce(c.pay_order_id, ''), coalesce(c.ret_msg, ''),"
	    "       extract(epoch FROM c.created_at)::bigint"
	    "  FROM charges c WHERE c.subscription_id = $1 ORDER BY c.id",
	    DB_I(id));
	if (!r)
		return -1;
	*out = db_rows_alloc(r, sizeof(**out), n, err, errlen);
	if (!*out)
		return -1;
	for (int i = 0; i < *n; i++) {
		struct subscription_charge *ch = &(*out)[i];
		ch->id = db_i64(r, i, CH_ID);
		snprintf(ch->mch_order_no, sizeof(ch->mch_order_no), "%s",
		         db_str(r, i, CH_ORDER_NO));
		ch->period = (int)db_i64(r, i, CH_PERIOD);
		ch->attempt = (int)db_i64(r, i, CH_ATTEMPT);
		ch->amount_cents = db_i64(r, i, CH_AMOUNT);
		snprintf(ch->state, sizeof(ch->state), "%s", db_str(r, i, CH_STATE));
		snprintf(ch->pay_order_id, sizeof(ch->pay_order_id), "%s",
		         db_str(r, i, CH_PAY_ORDER_ID));
		snprintf(ch->ret_msg, sizeof(ch->ret_msg), "%s", db_str(r, i, CH_RET_MSG));
		ch->created_at = db_i64(r, i, CH_CREATED);
	}
	PQclear(r);
	return 0;
}

/* Runs a conditional UPDATE ... WHERE id = $1 AND <the states it may leave>
 * ($2: arg, when it is not 0). When it changes nothing, says why:
 * refused(state) names the rule. */
static int change(PGconn *c, int64_t id, const char *sql, int64_t arg, const char *refused,
                  struct subscription *out, char *err, size_t errlen)
{
	int n = arg ? db_count(c, err, errlen, sql, DB_I(id), DB_I(arg))
	            : db_count(c, err, errlen, sql, DB_I(id));

	if (n < 0 || subscriptions_get(c, id, out, err, errlen) < 0)
		return -1;
	if (n == 0) {
		snprintf(err, errlen, "subscription %" PRId64 " is %s%s: %s", id, out->state,
		         out->cancel_at_period_end ? " (canceling at the period's end)" : "",
		         refused);
		return -1;
	}
	return 0;
}

int subscriptions_cancel(PGconn *c, int64_t id, int at_period_end, struct subscription *out,
                         char *err, size_t errlen)
{
	if (at_period_end)
		return change(c, id,
		              "UPDATE subscriptions SET cancel_at_period_end = true"
		              " WHERE id = $1 AND NOT cancel_at_period_end"
		              "   AND state IN ('trialing', 'active', 'past_due')"
		              "   AND next_charge_at IS NOT NULL RETURNING id",
		              0,
		              "only a subscription with a next period can cancel at its end "
		              "(cancel it now instead)",
		              out, err, errlen);
	return change(c, id,
	              "UPDATE subscriptions SET state = 'canceled', next_charge_at = NULL,"
	              "       cancel_at_period_end = false"
	              " WHERE id = $1 AND state NOT IN ('canceled', 'ended') RETURNING id",
	              0, "nothing to cancel", out, err, errlen);
}

int subscriptions_pause(PGconn *c, int64_t id, struct subscription *out, char *err, size_t errlen)
{
	return change(c, id,
	              "UPDATE subscriptions SET state = 'paused', next_charge_at = NULL"
	              " WHERE id = $1 AND state IN ('trialing', 'active', 'past_due') RETURNING id",
	              0, "only a trialing, active or past_due subscription can be paused", out, err,
	              errlen);
}

int subscriptions_resume(PGconn *c, int64_t id, int64_t now, struct subscription *out, char *err,
                         size_t errlen)
{
	return change(
	    c, id,
	    "UPDATE subscriptions SET state = 'active', anchor = to_timestamp($2),"
	    "       anchor_period = period, attempts = 0, next_charge_at = to_timestamp($2)"
	    " WHERE id = $1 AND (state = 'paused'"
	    "                    OR (state = 'past_due' AND next_charge_at IS NULL))"
	    " RETURNING id",
	    now,
	    "only a paused subscription, or a past_due one whose retries are exhausted, "
	    "can be resumed",
	    out, err, errlen);
}

int subscriptions_change_plan(PGconn *c, int64_t id, const struct plan *p, struct subscription *out,
                              char *err, size_t errlen)
{
	if (subscriptions_get(c, id, out, err, errlen) < 0)
		return -1;
	if (out->plan_id == p->id) {
		snprintf(err, errlen, "subscription %" PRId64 " is already on plan %s version %d",
		         id, p->code, p->version);
		return -1;
	}
	return change(c, id,
	              "UPDATE subscriptions SET next_plan_id = $2"
	              " WHERE id = $1 AND plan_id <> $2"
	              "   AND state IN ('trialing', 'active', 'past_due', 'paused') RETURNING id",
	              p->id, "its plan can no longer change", out, err, errlen);
}

/* ---- the scheduler's writes ---- */

#define NO_OPEN_CHARGE                                                                             \
	" NOT EXISTS (SELECT 1 FROM charges c WHERE c.subscription_id = s.id"                      \
	"              AND c.state IN ('pending', 'unknown'))"

static const char SQL_CANCEL_AT_END[] =
    "UPDATE subscriptions s SET state = 'canceled', next_charge_at = NULL"
    " WHERE cancel_at_period_end AND next_charge_at <= to_timestamp($1)"
    "   AND state IN ('trialing', 'active', 'past_due') AND" NO_OPEN_CHARGE;

/* A plan change takes effect at the next period: that period starts the new
 * plan's calendar (anchored there) and its cycle count. */
static const char SQL_SWITCH_PLAN[] =
    "UPDATE subscriptions s SET plan_id = next_plan_id, next_plan_id = NULL,"
    "       anchor = next_charge_at, anchor_period = period, cycles_done = 0"
    " WHERE next_plan_id IS NOT NULL AND attempts = 0 AND next_charge_at <= to_timestamp($1)"
    "   AND state IN ('trialing', 'active', 'past_due') AND" NO_OPEN_CHARGE;

int subscriptions_boundaries(PGconn *c, int64_t now, char *err, size_t errlen)
{
	if (db_run(c, err, errlen, SQL_CANCEL_AT_END, DB_I(now)) < 0 ||
	    db_run(c, err, errlen, SQL_SWITCH_PLAN, DB_I(now)) < 0)
		return -1;
	return 0;
}

static const char SQL_MAKE_DUE[] =
    "UPDATE subscriptions s SET next_charge_at = to_timestamp($2)"
    " WHERE id = $1 AND state IN ('trialing', 'active', 'past_due')"
    "   AND EXISTS (SELECT 1 FROM customers cu WHERE cu.customer_id = s.customer_id"
    "                AND cu.state = 'bound')"
    "   AND" NO_OPEN_CHARGE " RETURNING id";

int subscriptions_make_due(PGconn *c, int64_t id, int64_t now, char *err, size_t errlen)
{
	int n = db_count(c, err, errlen, SQL_MAKE_DUE, DB_I(id), DB_I(now));

	return n < 0 ? -1 : n > 0;
}

enum { WN_STATE, WN_CUSTOMER_STATE, WN_OPEN };
static const char SQL_WHY_NOT_DUE[] =
    "SELECT s.state, cu.state, " NO_OPEN_CHARGE "  FROM subscriptions s"
    "  JOIN customers cu ON cu.customer_id = s.customer_id"
    " WHERE s.id = $1";

void subscriptions_why_not_due(PGconn *c, int64_t id, char *err, size_t errlen)
{
	PGresult *r = db_get(c, err, errlen, SQL_WHY_NOT_DUE, DB_I(id));

	if (!r)
		return;
	if (PQntuples(r) == 0)
		snprintf(err, errlen, "unknown subscription %" PRId64, id);
	else if (strcmp(db_str(r, 0, WN_OPEN), "f") == 0)
		snprintf(err, errlen,
		         "subscription %" PRId64 " has a charge whose outcome is not known yet: it "
		         "is resolved with cc_query first",
		         id);
	else if (strcmp(db_str(r, 0, WN_CUSTOMER_STATE), customers_states[CUSTOMERS_BOUND]) != 0)
		snprintf(err, errlen,
		         "subscription %" PRId64 ": its customer's card is %s, not bound", id,
		         db_str(r, 0, WN_CUSTOMER_STATE));
	else
		snprintf(err, errlen, "subscription %" PRId64 " is %s: nothing to charge", id,
		         db_str(r, 0, WN_STATE));
	PQclear(r);
}

static const char SQL_MOVES[] =
    "UPDATE subscriptions s SET period = u.period, state = u.state, attempts = u.attempts,"
    "       cycles_done = u.cycles, next_charge_at = to_timestamp(u.next),"
    "       period_start = coalesce(to_timestamp(u.ps), s.period_start),"
    "       period_end = coalesce(to_timestamp(u.pe), s.period_end)"
    "  FROM unnest($1::bigint[], $2::int[], $3::text[], $4::int[], $5::int[], $6::bigint[],"
    "              $7::bigint[], $8::bigint[]) AS u(id, period, state, attempts, cycles, next,"
    "              ps, pe)"
    " WHERE s.id = u.id";

static void opt_i64(struct db_arr *a, int64_t v)
{
	if (v)
		db_arr_i64(a, v);
	else
		db_arr_null(a);
}

void subscriptions_moves_add(struct subscriptions_moves *m, int64_t id, int period,
                             const char *state, int attempts, int cycles, int64_t next,
                             int64_t period_start, int64_t period_end)
{
	db_arr_i64(&m->id, id);
	db_arr_i64(&m->period, period);
	db_arr_str(&m->state, state);
	db_arr_i64(&m->attempts, attempts);
	db_arr_i64(&m->cycles, cycles);
	opt_i64(&m->next, next);
	opt_i64(&m->ps, period_start);
	opt_i64(&m->pe, period_end);
	m->n++;
}

int subscriptions_moves_write(PGconn *c, struct subscriptions_moves *m, char *err, size_t errlen)
{
	const char *p[8] = {db_arr_text(&m->id),     db_arr_text(&m->period),
	                    db_arr_text(&m->state),  db_arr_text(&m->attempts),
	                    db_arr_text(&m->cycles), db_arr_text(&m->next),
	                    db_arr_text(&m->ps),     db_arr_text(&m->pe)};

	return m->n ? db_exec(c, SQL_MOVES, 8, p, err, errlen) : 0;
}

void subscriptions_moves_free(struct subscriptions_moves *m)
{
	struct db_arr *all[] = {&m->id,     &m->period, &m->state, &m->attempts,
	                        &m->cycles, &m->next,   &m->ps,    &m->pe};

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		db_arr_free(all[i]);
	m->n = 0;
}
