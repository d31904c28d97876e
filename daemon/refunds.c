/* refunds.c: the ledger side of refunds and voids.
 *
 * Same rule as charges: the refund row (with its mchRefundNo, derived from our
 * own id so that reconciliation can always find it) is committed before any
 * byte goes to the gateway, and the outcome is recorded after. The database
 * refuses refunds beyond the charge (migrations/0001_initial.sql); the checks
 * here only turn that into a clear message before anything is sent. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "charges.h"
#include "db.h"
#include "refunds.h"

#define ROW_COLS                                                                                   \
	"SELECT r.id, r.mch_refund_no, r.kind = 'void', r.charge_id, c.pay_order_id, "             \
	"r.amount_cents, "                                                                         \
	"r.state, r.pay_order_id, r.ret_msg, extract(epoch FROM r.created_at)::bigint, "
#define ROW_SQL                                                                                    \
	ROW_COLS "r.created_at < now() - make_interval(secs => $2) "                               \
	         "FROM refunds r JOIN charges c ON c.id = r.charge_id WHERE r.id = $1"

/* ROW_COLS, in order (ROW_SQL adds whether it is stale). */
static const struct db_col REFUND_COLS[] = {
    DB_COL_I(struct refund_row, id),
    DB_COL_S(struct refund_row, mch_refund_no),
    DB_COL_B(struct refund_row, is_void),
    DB_COL_I(struct refund_row, charge_id),
    DB_COL_S(struct refund_row, charge_pay_order_id),
    DB_COL_I(struct refund_row, amount_cents),
    DB_COL_S(struct refund_row, state),
    DB_COL_S(struct refund_row, pay_order_id),
    DB_COL_S(struct refund_row, ret_msg),
    DB_COL_I(struct refund_row, created_at),
};

/* Reads the refund; *stale (may be NULL) says whether it was requested
 * longer than REFUNDS_IN_FLIGHT_SECONDS ago (a pending refund is never
 * updated before its outcome, so its age is the request's). */
static int load(PGconn *c, int64_t id, struct refund_row *out, int *stale, char *err, size_t errlen)
{
	PGresult *r =
	    db_one(db_get(c, err, errlen, ROW_SQL, DB_I(id), DB_I(REFUNDS_IN_FLIGHT_SECONDS)), err,
	           errlen, "no refund with id %" PRId64, id);

	if (!r)
		return -1;
	memset(out, 0, sizeof(*out));
	db_fill(r, 0, REFUND_COLS, DB_NCOLS(REFUND_COLS), out);
	if (stale)
		*stale = strcmp(db_str(r, 0, DB_NCOLS(REFUND_COLS)), "t") == 0;
	PQclear(r);
	return 0;
}

int refunds_get(PGconn *c, int64_t refund_id, struct refund_row *out, char *err, size_t errlen)
{
	return load(c, refund_id, out, NULL, err, errlen);
}

int refunds_of_subscription(PGconn *c, int64_t sub, struct refund_row **out, int *n, char *err,
                            size_t errlen)
{
	*out =
	    db_rows_of(db_get(c, err, errlen,
	                      ROW_COLS "false FROM refunds r JOIN charges c ON c.id = r.charge_id"
	                               " WHERE c.subscription_id = $1 ORDER BY r.id",
	                      DB_I(sub)),
	               sizeof(**out), n, REFUND_COLS, DB_NCOLS(REFUND_COLS), err, errlen);
	return *out ? 0 : -1;
}

/* How often a statement or transaction that lost a serialization conflict
 * with a concurrent refund of the same charge is run again. */
#define SERIAL_TRIES 20

/* Moves the refund from one of the states in `from` (a SQL array literal) to
 * state, and reloads it into out. A settled outcome (succeeded, failed) is
 * dated by its request (the gateway acted then, even when the answer came
 * later), else now; o (may be NULL) is the gateway's order. */
static int record(PGconn *c, struct refund_row *out, const char *from, const char *state,
                  const struct gw_order *o, const char *ret_msg, int64_t now, char *err,
                  size_t errlen)
{
	int rc;

	/* One statement: under SERIALIZABLE a concurrent refund of the same
	 * charge may fail it, and running it again is all there is to do (the
	 * outcome is known; leaving it pending would wait for reconcile). */
	for (int i = 1;; i++) {
		rc = db_run(
		    c, err, errlen,
		    "UPDATE refunds SET state = $3, pay_order_id = coalesce(nullif($4, ''), "
		    "pay_order_id), ret_msg = $5, trans_id = coalesce(nullif($7, ''), trans_id), "
		    "pay_succ_time = coalesce(nullif($8, ''), pay_succ_time), "
		    "settled_at = CASE WHEN $3 IN ('succeeded', 'failed') THEN "
		    "coalesce(settled_at, requested_at, to_timestamp($6::bigint)) END "
		    "WHERE id = $1 AND state = ANY ($2::text[])",
		    DB_I(out->id), DB_S(from), DB_S(state), DB_S(o ? o->pay_order_id : ""),
		    DB_S(ret_msg), DB_I(now), DB_S(o ? o->trans_id : ""),
		    DB_S(o ? o->pay_succ_time : ""));
		if (rc == 0 || i == SERIAL_TRIES || !db_retryable())
			break;
	}
	return rc < 0 ? -1 : load(c, out->id, out, NULL, err, errlen);
}

/* In the open transaction: locks the charge (so that concurrent requests for
 * it queue here) and checks the request against what remains. Sets
 * *charge_id and, for a void or amount 0, *amount. */
static int check_charge(PGconn *c, const char *pay_order_id, int is_void, int64_t *amount,
                        int64_t *charge_id, char *err, size_t errlen)
{
	const char *p[1] = {pay_order_id};
	PGresult *r;
	int64_t charged, taken;

	r = db_query(c,
	             "SELECT id, amount_cents, state FROM charges WHERE pay_order_id = $1 FOR "
	             "UPDATE",
	             1, p, err, errlen);
	if (!r)
		return -1;
	if (PQntuples(r) == 0 || charges_state_parse(db_str(r, 0, 2)) != CHARGES_SUCCEEDED) {
		snprintf(err, errlen, "no succeeded charge with payOrderId %s%s%s", pay_order_id,
		         PQntuples(r) ? ": it is " : "", PQntuples(r) ? db_str(r, 0, 2) : "");
		PQclear(r);
		return -1;
	}
	*charge_id = db_i64(r, 0, 0);
	charged = db_i64(r, 0, 1);
	PQclear(r);
	/* A statement of its own: its snapshot is taken after the lock. */
	r = db_get(c, err, errlen,
	           "SELECT coalesce(sum(amount_cents), 0) FROM refunds WHERE charge_id = $1 AND "
	           "state <> 'failed'",
	           DB_I(*charge_id));
	if (!r)
		return -1;
	taken = db_i64(r, 0, 0);
	PQclear(r);
	if (is_void && taken > 0) {
		snprintf(err, errlen,
		         "cannot void %s: %" PRId64 " cents of it are refunded or in doubt",
		         pay_order_id, taken);
		return -1;
	}
	if (is_void || *amount == 0)
		*amount = charged - taken;
	if (*amount <= 0) {
		snprintf(err, errlen, "nothing remains to refund on %s (%" PRId64 " cents charged)",
		         pay_order_id, charged);
		return -1;
	}
	if (*amount > charged - taken) {
		snprintf(err, errlen,
		         "refund of %" PRId64 " cents exceeds the %" PRId64
		         " cents remaining on %s",
		         *amount, charged - taken, pay_order_id);
		return -1;
	}
	return 0;
}

static int check_amount(int is_void, int64_t amount, char *err, size_t errlen)
{
	if (amount < 0 || (is_void && amount != 0)) {
		snprintf(err, errlen, "%s amount must be %s", is_void ? "a void's" : "a refund's",
		         is_void ? "left out (it takes the whole charge)"
		                 : "positive (or 0 for all that remains)");
		return -1;
	}
	return 0;
}

int refunds_preview(PGconn *c, const char *pay_order_id, int is_void, int64_t *amount, char *err,
                    size_t errlen)
{
	int64_t charge_id;
	int rc;

	if (check_amount(is_void, *amount, err, errlen) < 0 || db_begin(c, err, errlen) < 0)
		return -1;
	rc = check_charge(c, pay_order_id, is_void, amount, &charge_id, err, errlen);
	db_rollback(c);
	return rc;
}

/* Checks the request and commits the refund row ('pending'), in one try. */
static int try_intent(PGconn *c, const char *order_prefix, const char *pay_order_id, int is_void,
                      int64_t amount, int64_t now, struct refund_row *out, char *err, size_t errlen)
{
	int64_t charge_id;
	PGresult *r;

	if (db_begin(c, err, errlen) < 0)
		return -1;
	if (check_charge(c, pay_order_id, is_void, &amount, &charge_id, err, errlen) < 0) {
		db_rollback(c);
		return -1;
	}
	r = db_get(c, err, errlen,
	           "WITH n AS (SELECT nextval(pg_get_serial_sequence('refunds', 'id')) AS id) "
	           "INSERT INTO refunds (id, mch_refund_no, kind, charge_id, amount_cents, "
	           "requested_at) SELECT id, " ORDER_NO_REFUND(
	               "$1::text", "id") ", $2, $3, $4, "
	                                 "to_timestamp($5::bigint) FROM n RETURNING id",
	           DB_S(order_prefix), DB_S(is_void ? "void" : "refund"), DB_I(charge_id),
	           DB_I(amount), DB_I(now));
	if (!r) {
		db_rollback(c);
		return -1;
	}
	out->id = db_i64(r, 0, 0);
	PQclear(r);
	if (db_commit(c, err, errlen) < 0) {
		db_rollback(c);
		return -1;
	}
	return load(c, out->id, out, NULL, err, errlen);
}

/* Under REPEATABLE READ or SERIALIZABLE a refund of the same charge
 * committed meanwhile fails the intent with a serialization error (or a
 * deadlock): nothing was sent, so it is retried in a new transaction, which
 * sees that refund and checks against what truly remains. */

static int commit_intent(PGconn *c, const char *order_prefix, const char *pay_order_id, int is_void,
                         int64_t amount, int64_t now, struct refund_row *out, char *err,
                         size_t errlen)
{
	for (int i = 1;; i++) {
		int rc = try_intent(c, order_prefix, pay_order_id, is_void, amount, now, out, err,
		                    errlen);

		if (rc == 0 || i == SERIAL_TRIES || !db_retryable())
			return rc;
	}
}

/* Calls fn for up to limit open refunds and voids (unknown, or pending past
 * REFUNDS_IN_FLIGHT_SECONDS: one in flight in another process is left to it
 * and counts against the charge meanwhile), oldest first: of the charge
 * with payOrderId pay_order_id, or of any charge (NULL). fn < 0 stops.
 * Returns how many were open, or -1 with err. */
static int each_open(PGconn *c, const char *pay_order_id, int limit,
                     int (*fn)(void *arg, int64_t id), void *arg, char *err, size_t errlen)
{
	PGresult *r = db_get(c, err, errlen,
	                     "SELECT r.id FROM refunds r JOIN charges c ON c.id = r.charge_id"
	                     " WHERE (r.state = 'unknown' OR (r.state = 'pending'"
	                     "        AND r.created_at < now() - make_interval(secs => $3)))"
	                     "   AND ($1::text IS NULL OR c.pay_order_id = $1)"
	                     " ORDER BY r.id LIMIT $2",
	                     DB_S(pay_order_id), DB_I(limit), DB_I(REFUNDS_IN_FLIGHT_SECONDS));
	int n;

	if (!r)
		return -1;
	n = PQntuples(r);
	for (int i = 0; i < n; i++)
		if (fn(arg, db_i64(r, i, 0)) < 0) {
			n = -1;
			break;
		}
	PQclear(r);
	return n;
}

/* What resolving the open refunds of a charge found. */
struct settle {
	PGconn *c;
	struct gw_client *gw;
	int64_t now;
	struct refund_row *out; /* the last one that turned out succeeded */
	int succeeded;
	char *err;
	size_t errlen;
};

static int settle_one(void *arg, int64_t id)
{
	struct settle *st = arg;
	struct refund_row row = {0};
	char why[256];
	int o = refunds_resolve(st->c, st->gw, id, st->now, &row, why, sizeof(why));

	if (o == GW_SUCCESS) {
		*st->out = row;
		st->succeeded = 1;
		return 0;
	}
	if (o == GW_FAIL)
		return 0;
	if (o == GW_UNKNOWN)
		snprintf(why, sizeof(why), "%s", row.ret_msg);
	snprintf(st->err, st->errlen,
	         "%s %s of this charge has an outcome cc_query cannot settle now (%s): nothing "
	         "sent; do not retry: billingd's next pass (or billctl reconcile) resolves it, "
	         "then decide",
	         row.is_void ? "void" : "refund", row.mch_refund_no[0] ? row.mch_refund_no : "",
	         why);
	return -1;
}

/* A billingd pass: a refund in flight, or one that cc_query cannot settle
 * yet, waits for the next pass; only the database's own failure stops it. */
static int pass_one(void *arg, int64_t id)
{
	struct settle *st = arg;
	struct refund_row row = {0};
	int o = refunds_resolve(st->c, st->gw, id, st->now, &row, st->err, st->errlen);

	if (o == GW_SUCCESS || o == GW_FAIL)
		st->succeeded++;
	return o < 0 && db_is_down(st->c) ? -1 : 0;
}

int refunds_resolve_open(PGconn *c, struct gw_client *gw, int64_t now, int limit, int *settled,
                         char *err, size_t errlen)
{
	struct settle st = {.c = c, .gw = gw, .now = now, .err = err, .errlen = errlen};
	int n = each_open(c, NULL, limit, pass_one, &st, err, errlen);

	*settled = st.succeeded;
	return n;
}

int refunds_request(PGconn *c, struct gw_client *gw, const char *order_prefix,
                    const char *pay_order_id, int is_void, int64_t amount, int64_t now,
                    struct refund_row *out, char *err, size_t errlen)
{
	struct gw_request req;
	struct gw_result res;
	enum gw_outcome o;
	const char *state;
	char why[256];

	memset(out, 0, sizeof(*out));
	if (check_amount(is_void, amount, err, errlen) < 0)
		return -1;
	/* prefix + "R" + a bigint fits mchRefundNo's String(30). */
	if (strlen(order_prefix) > 8) {
		snprintf(err, errlen, "order prefix %s is longer than 8 characters", order_prefix);
		return -1;
	}
	/* Unknown is resolved before anything else: an earlier refund or void
	 * of this charge whose outcome is open is settled first; if it turns
	 * out made, that is the answer and nothing new is sent. */
	{
		struct settle st = {
		    .c = c, .gw = gw, .now = now, .out = out, .err = err, .errlen = errlen};

		if (each_open(c, pay_order_id, 100, settle_one, &st, err, errlen) < 0)
			return -1;
		if (st.succeeded) {
			out->resolved_earlier = 1;
			return GW_SUCCESS;
		}
	}
	if (commit_intent(c, order_prefix, pay_order_id, is_void, amount, now, out, err, errlen) <
	    0)
		return -1;

	memset(&req, 0, sizeof(req));
	req.call = is_void ? GW_VOID : GW_REFUND;
	req.mch_refund_no = out->mch_refund_no;
	req.pay_order_id = pay_order_id;
	req.amount = (long)out->amount_cents;
	o = gw_call(gw, &req, &res);

	if (o == GW_SUCCESS) {
		state = charges_state_names[CHARGES_SUCCEEDED];
		snprintf(why, sizeof(why), "%s", res.ret_msg);
	} else if (o == GW_FAIL || o == GW_INVALID) {
		/* INVALID: refused before sending, so it certainly did not happen. */
		state = charges_state_names[CHARGES_FAILED];
		snprintf(why, sizeof(why), "%s", o == GW_FAIL ? res.ret_msg : res.detail);
	} else {
		state = charges_state_names[CHARGES_UNKNOWN];
		snprintf(why, sizeof(why), "%s", res.detail);
	}
	if (record(c, out, "{pending}", state, res.has_order ? &res.order : NULL, why, now, err,
	           errlen) < 0) {
		char dberr[256];

		snprintf(dberr, sizeof(dberr), "%s", err);
		snprintf(err, errlen,
		         "%s %s: the gateway answered %s but recording it failed (%s): it stays "
		         "pending until billctl reconcile resolves it",
		         is_void ? "void" : "refund", out->mch_refund_no, gw_outcome_name(o),
		         dberr);
		return GW_UNKNOWN;
	}
	if (o == GW_INVALID) {
		snprintf(err, errlen, "%s %s not sent: %s", is_void ? "void" : "refund",
		         out->mch_refund_no, why);
		return -1;
	}
	if (o == GW_FAIL)
		snprintf(err, errlen, "%s %s refused by the gateway: %s",
		         is_void ? "void" : "refund", out->mch_refund_no, why);
	else if (o == GW_UNKNOWN)
		snprintf(
		    err, errlen,
		    "%s %s outcome unknown (%s): do not retry; it counts against the charge "
		    "until cc_query settles it: billingd's next pass, billctl reconcile, or the "
		    "next refund or void of this charge, which resolves it first",
		    is_void ? "void" : "refund", out->mch_refund_no, why);
	return o;
}

int refunds_resolve(PGconn *c, struct gw_client *gw, int64_t refund_id, int64_t now,
                    struct refund_row *out, char *err, size_t errlen)
{
	struct gw_request req;
	struct gw_result res;
	int stale;
	char why[300];
	const struct gw_order *o = &res.order;

	if (load(c, refund_id, out, &stale, err, errlen) < 0)
		return -1;
	if (charges_state_outcome(out->state) != GW_UNKNOWN)
		return charges_state_outcome(out->state);
	if (charges_state_parse(out->state) == CHARGES_PENDING && !stale) {
		snprintf(err, errlen,
		         "refund %s may still be on its way to the gateway: try again later",
		         out->mch_refund_no);
		return -1;
	}

	memset(&req, 0, sizeof(req));
	req.call = GW_QUERY;
	req.mch_order_no = out->mch_refund_no;
	switch (gw_call(gw, &req, &res)) {
	case GW_SUCCESS:
		if (!res.has_order || !gw_order_paid(o)) {
			snprintf(why, sizeof(why), "cc_query: order status %d",
			         res.has_order ? o->status : -1);
			break;
		}
		/* Found under our number but not of this charge or amount: a human
		 * must look, so nothing changes. */
		if ((o->original_order_id[0] &&
		     strcmp(o->original_order_id, out->charge_pay_order_id) != 0) ||
		    (o->amount >= 0 && o->amount != out->amount_cents)) {
			snprintf(
			    err, errlen,
			    "refund %s: the gateway's order %s (of %s, %ld cents) does not match "
			    "ours (of %s, %" PRId64 " cents)",
			    out->mch_refund_no, o->pay_order_id, o->original_order_id, o->amount,
			    out->charge_pay_order_id, out->amount_cents);
			return -1;
		}
		if (record(c, out, "{pending,unknown}", charges_state_names[CHARGES_SUCCEEDED], o,
		           res.ret_msg, now, err, errlen) < 0)
			return -1;
		return charges_state_outcome(out->state);
	case GW_FAIL:
		snprintf(why, sizeof(why), "not at the gateway: %s", res.ret_msg);
		if (record(c, out, "{pending,unknown}", charges_state_names[CHARGES_FAILED], NULL,
		           why, now, err, errlen) < 0)
			return -1;
		return charges_state_outcome(out->state);
	default:
		snprintf(why, sizeof(why), "cc_query: %s", res.detail);
		break;
	}
	if (record(c, out, "{pending,unknown}", charges_state_names[CHARGES_UNKNOWN], NULL, why,
	           now, err, errlen) < 0)
		return -1;
	return charges_state_outcome(out->state);
}
