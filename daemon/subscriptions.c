/* subscriptions.c: the subscriptions ledger as admins change it. Every
 * change is one conditional UPDATE (the condition is the state it may leave),
 * so that a concurrent scheduler or admin never sees half of it; when the
 * condition fails the subscription is read again to say why. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing.h"
#include "calendar.h"
#include "customers.h"
#include "db.h"
#include "plans.h"
#include "subscriptions.h"

/* A subscription that still bills or may again. */
#define LIVE_STATES "('trialing', 'active', 'past_due', 'paused')"

#define COLS                                                                                       \
	"s.id, s.customer_id, s.plan_id, p.code, p.version, p.amount_cents,"                       \
	" coalesce(s.next_plan_id, 0), coalesce(np.code, ''), s.state,"                            \
	" extract(epoch FROM s.anchor)::bigint, s.anchor_period, s.period, s.attempts,"            \
	" s.cycles_done, s.cancel_at_period_end,"                                                  \
	" coalesce(extract(epoch FROM s.period_start)::bigint, 0),"                                \
	" coalesce(extract(epoch FROM s.period_end)::bigint, 0),"                                  \
	" coalesce(extract(epoch FROM s.trial_end)::bigint, 0),"                                   \
	" coalesce(extract(epoch FROM s.next_charge_at)::bigint, 0),"                              \
	" extract(epoch FROM s.created_at)::bigint,"                                               \
	" coalesce(extract(epoch FROM s.paused_at)::bigint, 0)"
#define FROM                                                                                       \
	" FROM subscriptions s JOIN plans p ON p.id = s.plan_id"                                   \
	" LEFT JOIN plans np ON np.id = s.next_plan_id"

/* COLS, in order. */
static const struct db_col SUBSCRIPTION_COLS[] = {
    DB_COL_I(struct subscription, id),
    DB_COL_S(struct subscription, customer_id),
    DB_COL_I(struct subscription, plan_id),
    DB_COL_S(struct subscription, plan_code),
    DB_COL_I(struct subscription, plan_version),
    DB_COL_I(struct subscription, amount_cents),
    DB_COL_I(struct subscription, next_plan_id),
    DB_COL_S(struct subscription, next_plan_code),
    DB_COL_S(struct subscription, state),
    DB_COL_I(struct subscription, anchor),
    DB_COL_I(struct subscription, anchor_period),
    DB_COL_I(struct subscription, period),
    DB_COL_I(struct subscription, attempts),
    DB_COL_I(struct subscription, cycles_done),
    DB_COL_B(struct subscription, cancel_at_period_end),
    DB_COL_I(struct subscription, period_start),
    DB_COL_I(struct subscription, period_end),
    DB_COL_I(struct subscription, trial_end),
    DB_COL_I(struct subscription, next_charge_at),
    DB_COL_I(struct subscription, created_at),
    DB_COL_I(struct subscription, paused_at),
};

int subscriptions_get(PGconn *c, int64_t id, struct subscription *out, char *err, size_t errlen)
{
	PGresult *r =
	    db_one(db_get(c, err, errlen, "SELECT " COLS FROM " WHERE s.id = $1", DB_I(id)), err,
	           errlen, "unknown subscription %" PRId64, id);

	if (!r)
		return -1;
	db_fill(r, 0, SUBSCRIPTION_COLS, DB_NCOLS(SUBSCRIPTION_COLS), out);
	PQclear(r);
	return 0;
}

/* Why subscriptions_create inserted nothing, as one line in err. */
static void why_not_created(PGconn *c, const struct subscriptions_new *n, char *err, size_t errlen)
{
	PGresult *r = db_get(c, err, errlen,
	                     "SELECT cu.state, (SELECT min(s.id) FROM subscriptions s"
	                     "   JOIN plans p ON p.id = s.plan_id WHERE s.customer_id = $1"
	                     "    AND p.code = $2 AND s.state IN " LIVE_STATES ")"
	                     "  FROM customers cu WHERE cu.customer_id = $1",
	                     DB_S(n->customer_id), DB_S(n->plan->code));

	if (!r)
		return;
	if (PQntuples(r) == 0)
		snprintf(err, errlen, "unknown customer '%s'", n->customer_id);
	else if (strcmp(db_str(r, 0, 0), customers_states[CUSTOMERS_PENDING]) == 0)
		snprintf(err, errlen,
		         "customer '%s' has no card bound yet (its enrolment is pending): "
		         "subscribe with --when-bound to charge once it is bound",
		         n->customer_id);
	else if (strcmp(db_str(r, 0, 0), customers_states[CUSTOMERS_BOUND]) != 0)
		snprintf(err, errlen,
		         "customer '%s' is %s: enrol a card again (customer enrol) before "
		         "subscribing",
		         n->customer_id, db_str(r, 0, 0));
	else
		snprintf(err, errlen,
		         "customer '%s' already has subscription %s on plan %s: "
		         "--allow-duplicate subscribes again",
		         n->customer_id, db_str(r, 0, 1), n->plan->code);
	PQclear(r);
}

int subscriptions_create(PGconn *c, const struct subscriptions_new *n, struct subscription *out,
                         int *passed, char *err, size_t errlen)
{
	const struct plan *p = n->plan;
	int64_t anchor = billing_anchor(n->start, n->trial_days);
	int period;
	int64_t due;
	PGresult *r;
	int64_t id;

	/* The period that contains now is billed; earlier ones only on request. */
	*passed = billing_periods_passed(p, anchor, n->now);
	period = n->bill_arrears ? 0 : *passed;
	due = cal_period_start(anchor, p->interval, p->interval_count, period);
	/* The customer's state and the duplicate are checked in the same
	 * statement as the insert. */
	r = db_get(c, err, errlen,
	           "INSERT INTO subscriptions (customer_id, plan_id, state, anchor, period,"
	           "                           trial_end, next_charge_at, starts_when_bound)"
	           " SELECT customer_id, $2, CASE WHEN $4::bigint IS NULL THEN 'active'"
	           "        ELSE 'trialing' END, to_timestamp($3), $5,"
	           "        to_timestamp($4::bigint), to_timestamp($6), state = 'pending'"
	           "   FROM customers cu WHERE customer_id = $1"
	           "    AND (state = 'bound' OR (state = 'pending' AND $7::int = 1))"
	           "    AND ($8::int = 1 OR NOT EXISTS (SELECT 1 FROM subscriptions s"
	           "          JOIN plans p ON p.id = s.plan_id WHERE s.customer_id = $1"
	           "           AND p.code = $9 AND s.state IN " LIVE_STATES "))"
	           " RETURNING id",
	           DB_S(n->customer_id), DB_I(p->id), DB_I(anchor),
	           DB_N(n->trial_days > 0 ? anchor : 0), DB_I(period), DB_I(due),
	           DB_I(n->when_bound), DB_I(n->allow_duplicate), DB_S(p->code));
	if (!r)
		return -1;
	if (PQntuples(r) == 0) {
		PQclear(r);
		why_not_created(c, n, err, errlen);
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

	*out = db_rows_of(
	    db_query(c,
	             "SELECT " COLS FROM " WHERE ($1::text IS NULL OR s.customer_id = $1)"
	             "   AND ($2::text IS NULL OR s.state = $2) ORDER BY s.id",
	             2, p, err, errlen),
	    sizeof(**out), n, SUBSCRIPTION_COLS, DB_NCOLS(SUBSCRIPTION_COLS), err, errlen);
	return *out ? 0 : -1;
}

/* The columns of a subscription's charges, in order. */
static const struct db_col CHARGE_COLS[] = {
    DB_COL_I(struct subscription_charge, id),
    DB_COL_S(struct subscription_charge, mch_order_no),
    DB_COL_I(struct subscription_charge, period),
    DB_COL_I(struct subscription_charge, attempt),
    DB_COL_I(struct subscription_charge, amount_cents),
    DB_COL_S(struct subscription_charge, state),
    DB_COL_S(struct subscription_charge, pay_order_id),
    DB_COL_S(struct subscription_charge, ret_msg),
    DB_COL_I(struct subscription_charge, created_at),
};

int subscriptions_charges(PGconn *c, int64_t id, struct subscription_charge **out, int *n,
                          char *err, size_t errlen)
{
	*out = db_rows_of(
	    db_get(c, err, errlen,
	           "SELECT c.id, c.mch_order_no, c.period, c.attempt, c.amount_cents,"
	           "       CASE WHEN c.state <> 'succeeded' THEN c.state"
	           "            WHEN EXISTS (SELECT 1 FROM refunds r WHERE r.charge_id = c.id"
	           "                          AND r.kind = 'void' AND r.state = 'succeeded')"
	           "            THEN 'voided'"
	           "            WHEN (SELECT sum(r.amount_cents) FROM refunds r"
	           "                   WHERE r.charge_id = c.id AND r.state = 'succeeded')"
	           "                 = c.amount_cents THEN 'refunded'"
	           "            ELSE c.state END,"
	           "       coalesce(c.pay_order_id, ''), coalesce(c.ret_msg, ''),"
	           "       extract(epoch FROM c.created_at)::bigint"
	           "  FROM charges c WHERE c.subscription_id = $1 ORDER BY c.id",
	           DB_I(id)),
	    sizeof(**out), n, CHARGE_COLS, DB_NCOLS(CHARGE_COLS), err, errlen);
	return *out ? 0 : -1;
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

int subscriptions_pause(PGconn *c, int64_t id, int64_t now, struct subscription *out, char *err,
                        size_t errlen)
{
	return change(c, id,
	              "UPDATE subscriptions SET state = 'paused', next_charge_at = NULL,"
	              "       paused_at = to_timestamp($2)"
	              " WHERE id = $1 AND state IN ('trialing', 'active', 'past_due') RETURNING id",
	              now, "only a trialing, active or past_due subscription can be paused", out,
	              err, errlen);
}

int subscriptions_resume(PGconn *c, int64_t id, int64_t now, struct subscription *out, char *err,
                         size_t errlen)
{
	struct billing_sub b;
	int64_t trial_end;
	int n;

	if (subscriptions_get(c, id, out, err, errlen) < 0)
		return -1;
	if (strcmp(out->state, billing_state_names[BILLING_PAUSED]) != 0 &&
	    !(strcmp(out->state, billing_state_names[BILLING_PAST_DUE]) == 0 &&
	      out->next_charge_at == 0)) {
		snprintf(err, errlen,
		         "subscription %" PRId64 " is %s: only a paused subscription, or a "
		         "past_due one whose retries are exhausted, can be resumed%s",
		         id, out->state,
		         out->cancel_at_period_end
		             ? " (to withdraw its cancel at the period's end: subscription keep)"
		             : "");
		return -1;
	}
	memset(&b, 0, sizeof(b));
	b.anchor = out->anchor;
	b.anchor_period = out->anchor_period;
	b.period = out->period;
	b.cycles_done = out->cycles_done;
	b.period_start = out->period_start;
	b.period_end = out->period_end;
	trial_end = out->trial_end;
	billing_resume(&b, &trial_end, out->paused_at, now);
	/* Written only over the subscription as it was read. */
	n = db_count(c, err, errlen,
	             "UPDATE subscriptions SET state = $3, anchor = to_timestamp($4),"
	             "       anchor_period = $5, attempts = 0, next_charge_at = to_timestamp($6),"
	             "       trial_end = to_timestamp($7::bigint), paused_at = NULL"
	             " WHERE id = $1 AND state = $2 AND period = $8"
	             "   AND coalesce(next_charge_at, 'epoch') = coalesce(to_timestamp($9::bigint),"
	             "                                                   'epoch')"
	             " RETURNING id",
	             DB_I(id), DB_S(out->state), DB_S(billing_state_names[b.state]), DB_I(b.anchor),
	             DB_I(b.anchor_period), DB_I(b.next_charge_at), DB_N(trial_end),
	             DB_I(out->period), DB_N(out->next_charge_at));
	if (n < 0 || subscriptions_get(c, id, out, err, errlen) < 0)
		return -1;
	if (n == 0) {
		snprintf(err, errlen,
		         "subscription %" PRId64 " changed meanwhile (now %s): try again", id,
		         out->state);
		return -1;
	}
	return 0;
}

int subscriptions_keep(PGconn *c, int64_t id, struct subscription *out, char *err, size_t errlen)
{
	return change(c, id,
	              "UPDATE subscriptions SET cancel_at_period_end = false"
	              " WHERE id = $1 AND cancel_at_period_end"
	              "   AND state IN ('trialing', 'active', 'past_due', 'paused') RETURNING id",
	              0, "only a subscription canceling at its period's end can be kept", out, err,
	              errlen);
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

/* A subscription that waited for its customer's card starts, once bound,
 * with a period due then at the earliest: the calendar moves to now when its
 * first charge fell due during the wait. */
static const char SQL_START_BOUND[] =
    "UPDATE subscriptions s SET starts_when_bound = false,"
    "       anchor = CASE WHEN s.next_charge_at < to_timestamp($1) THEN to_timestamp($1)"
    "                ELSE s.anchor END,"
    "       anchor_period = CASE WHEN s.next_charge_at < to_timestamp($1) THEN s.period"
    "                       ELSE s.anchor_period END,"
    "       next_charge_at = greatest(s.next_charge_at, to_timestamp($1))"
    " WHERE s.starts_when_bound AND s.state IN ('trialing', 'active')"
    "   AND EXISTS (SELECT 1 FROM customers cu WHERE cu.customer_id = s.customer_id"
    "                AND cu.state = 'bound')";

int subscriptions_boundaries(PGconn *c, int64_t now, char *err, size_t errlen)
{
	if (db_run(c, err, errlen, SQL_CANCEL_AT_END, DB_I(now)) < 0 ||
	    db_run(c, err, errlen, SQL_SWITCH_PLAN, DB_I(now)) < 0 ||
	    db_run(c, err, errlen, SQL_START_BOUND, DB_I(now)) < 0)
		return -1;
	return 0;
}

/* Owed: a past_due period, or a due one; --end-trial: a trial ends now (its
 * first period starts now). */
#define TRIAL_ENDS " s.state = 'trialing' AND s.next_charge_at > to_timestamp($2)"
static const char SQL_MAKE_DUE[] =
    "UPDATE subscriptions s"
    "   SET next_charge_at = least(coalesce(s.next_charge_at, to_timestamp($2)),"
    "                              to_timestamp($2)),"
    "       anchor = CASE WHEN" TRIAL_ENDS " THEN to_timestamp($2) ELSE s.anchor END,"
    "       anchor_period = CASE WHEN" TRIAL_ENDS " THEN s.period ELSE s.anchor_period END,"
    "       trial_end = CASE WHEN" TRIAL_ENDS " THEN to_timestamp($2) ELSE s.trial_end END"
    " WHERE id = $1 AND (s.state = 'past_due'"
    "                    OR (s.state IN ('trialing', 'active')"
    "                        AND s.next_charge_at <= to_timestamp($2))"
    "                    OR ($3::int = 1 AND s.state = 'trialing'))"
    "   AND EXISTS (SELECT 1 FROM customers cu WHERE cu.customer_id = s.customer_id"
    "                AND cu.state = 'bound')"
    "   AND" NO_OPEN_CHARGE " RETURNING id";

int subscriptions_make_due(PGconn *c, int64_t id, int64_t now, int end_trial, char *err,
                           size_t errlen)
{
	int n = db_count(c, err, errlen, SQL_MAKE_DUE, DB_I(id), DB_I(now), DB_I(end_trial));

	return n < 0 ? -1 : n > 0;
}

enum { WN_STATE, WN_CUSTOMER_STATE, WN_OPEN, WN_NEXT, WN_AMOUNT };
static const char SQL_WHY_NOT_DUE[] =
    "SELECT s.state, cu.state, " NO_OPEN_CHARGE ","
    "       coalesce(extract(epoch FROM s.next_charge_at)::bigint, 0), p.amount_cents"
    "  FROM subscriptions s JOIN customers cu ON cu.customer_id = s.customer_id"
    "  JOIN plans p ON p.id = coalesce(s.next_plan_id, s.plan_id)"
    " WHERE s.id = $1";

void subscriptions_why_not_due(PGconn *c, int64_t id, char *err, size_t errlen)
{
	PGresult *r = db_get(c, err, errlen, SQL_WHY_NOT_DUE, DB_I(id));
	const char *state;
	char next[64] = "", amount[32];
	int64_t cents;

	if (!r)
		return;
	if (PQntuples(r) == 0) {
		snprintf(err, errlen, "unknown subscription %" PRId64, id);
		PQclear(r);
		return;
	}
	state = db_str(r, 0, WN_STATE);
	if (db_i64(r, 0, WN_NEXT))
		cal_format(db_i64(r, 0, WN_NEXT), next, sizeof(next));
	cents = db_i64(r, 0, WN_AMOUNT);
	snprintf(amount, sizeof(amount), "%" PRId64 ".%02" PRId64, cents / 100, cents % 100);
	if (strcmp(db_str(r, 0, WN_OPEN), "f") == 0)
		snprintf(err, errlen,
		         "subscription %" PRId64 " has a charge whose outcome is not known yet: it "
		         "is resolved with cc_query first",
		         id);
	else if (strcmp(db_str(r, 0, WN_CUSTOMER_STATE), customers_states[CUSTOMERS_BOUND]) != 0)
		snprintf(err, errlen,
		         "subscription %" PRId64 ": its customer's card is %s, not bound", id,
		         db_str(r, 0, WN_CUSTOMER_STATE));
	else if (strcmp(state, billing_state_names[BILLING_TRIALING]) == 0 && next[0])
		snprintf(err, errlen,
		         "subscription %" PRId64 " is trialing: nothing is owed; its first charge "
		         "(%s CAD) is due %s (--end-trial ends the trial and charges now)",
		         id, amount, next);
	else if (strcmp(state, billing_state_names[BILLING_ACTIVE]) == 0 && next[0])
		snprintf(err, errlen,
		         "subscription %" PRId64 " is paid up: nothing is owed; its next charge "
		         "(%s CAD) is due %s",
		         id, amount, next);
	else
		snprintf(err, errlen, "subscription %" PRId64 " is %s: nothing to charge", id,
		         state);
	PQclear(r);
}

static const struct db_stmt SQL_MOVES = DB_STMT(
    "UPDATE subscriptions s SET period = u.period, state = u.state, attempts = u.attempts,"
    "       updated_at = now(),"
    "       cycles_done = u.cycles, next_charge_at = to_timestamp(u.next),"
    "       period_start = coalesce(to_timestamp(u.ps), s.period_start),"
    "       period_end = coalesce(to_timestamp(u.pe), s.period_end)"
    "  FROM unnest($1::bigint[], $2::int[], $3::text[], $4::int[], $5::int[], $6::bigint[],"
    "              $7::bigint[], $8::bigint[]) AS u(id, period, state, attempts, cycles, next,"
    "              ps, pe)"
    " WHERE s.id = u.id");

void subscriptions_moves_add(struct subscriptions_moves *m, int64_t id, int period,
                             const char *state, int attempts, int cycles, int64_t next,
                             int64_t period_start, int64_t period_end)
{
	db_batch_add(&m->rows, DB_I(id), DB_I(period), DB_S(state), DB_I(attempts), DB_I(cycles),
	             DB_N(next), DB_N(period_start), DB_N(period_end));
}

int subscriptions_moves_write(PGconn *c, struct subscriptions_moves *m, char *err, size_t errlen)
{
	return db_batch_exec(c, &SQL_MOVES, &m->rows, err, errlen);
}

void subscriptions_moves_free(struct subscriptions_moves *m)
{
	db_batch_free(&m->rows);
}
