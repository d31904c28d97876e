/* reconcile.c: the ledger against the gateway. cc_query is the only way to
 * see the gateway's side, so the window's rows are queried one by one, all
 * at once through gw_multi (max_in_flight), and so are the order numbers we
 * could have sent without keeping a row (gaps in the ids that payment-link
 * and refund numbers derive from, and in a period's attempt numbers). Then
 * each answer is compared with our row; open outcomes are recorded where the
 * recording is ours (refunds through refunds_resolve, payment links here);
 * open subscription charges are the scheduler's and are only listed. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "charges.h"
#include "db.h"
#include "failover.h"
#include "reconcile.h"
#include "refunds.h"

/* The window is business time, the billing clock's (migrations/0013): a
 * charge's attempt, else its payment (a link, paid when the customer opens
 * it); a refund's request. Only rows that have neither (an open link) fall
 * back to when they were written. */
#define CHARGE_TIME    "coalesce(attempted_at, settled_at, created_at)"
#define REFUND_TIME(r) "coalesce(" r "requested_at, " r "created_at)" /* r: "", "r." */
#define IN_WINDOW(t)   " " t " >= to_timestamp($1) AND " t " < to_timestamp($2)"
#define WINDOW         IN_WINDOW(CHARGE_TIME)

/* Columns: kind, id, order number, customer, amount, state, pay_order_id,
 * charge kind (one_off/subscription), the refunded charge's pay_order_id,
 * for a charge whether it is reversed (voided or fully refunded), and for
 * a subscription attempt we have no row for, its subscription. The last
 * part derives the next FAILOVER_AHEAD + 1 attempt numbers of every live
 * subscription due at the billing clock whose due time is in the window: a
 * promotion or a restore can lose an intent after its number was sent, and
 * with it its subscription's advance, which leaves the subscription due. */
/* clang-format off */
static const char SQL_ROWS[] =
    "SELECT 'charge', id, mch_order_no, customer_id, amount_cents, state,"
    "       coalesce(pay_order_id, ''), kind, '',"
    "       (SELECT coalesce(sum(r.amount_cents), 0) FROM refunds r"
    "         WHERE r.charge_id = charges.id AND r.state = 'succeeded') >= amount_cents, 0"
    "  FROM charges WHERE" WINDOW " UNION ALL"
    " SELECT r.kind, r.id, r.mch_refund_no, c.customer_id, r.amount_cents, r.state,"
    "        coalesce(r.pay_order_id, ''), '', coalesce(c.pay_order_id, ''), false, 0"
    "   FROM refunds r JOIN charges c ON c.id = r.charge_id"
    "  WHERE" IN_WINDOW(REFUND_TIME("r."))
    " UNION ALL"
    " SELECT 'charge', 0, " ORDER_NO_LINK("$3", "g") ", '', 0, '', '', 'one_off', '', false, 0"
    "   FROM generate_series((SELECT min(id) FROM charges WHERE" WINDOW "),"
    "                        (SELECT max(id) FROM charges WHERE" WINDOW ")) g"
    "  WHERE NOT EXISTS (SELECT 1 FROM charges WHERE id = g)"
    " UNION ALL"
    " SELECT 'refund', 0, " ORDER_NO_REFUND("$3", "g") ", '', 0, '', '', '', '', false, 0"
    "   FROM generate_series((SELECT min(id) FROM refunds WHERE" IN_WINDOW(REFUND_TIME("")) "),"
    "                        (SELECT max(id) FROM refunds WHERE" IN_WINDOW(REFUND_TIME("")) ")) g"
    "  WHERE NOT EXISTS (SELECT 1 FROM refunds WHERE id = g)"
    " UNION ALL"
    " SELECT 'charge', 0, " ORDER_NO_ATTEMPT("$3", "m.sid", "m.period", "a") ", m.customer_id,"
    "        0, '', '', 'subscription', '', false, m.sid"
    "   FROM (SELECT subscription_id AS sid, period, min(customer_id) AS customer_id,"
    "                max(attempt) AS mx"
    "           FROM charges WHERE kind = 'subscription' AND" WINDOW
    "          GROUP BY subscription_id, period) m,"
    "        generate_series(1, m.mx - 1) a"
    "  WHERE NOT EXISTS (SELECT 1 FROM charges WHERE subscription_id = m.sid"
    "                     AND period = m.period AND attempt = a)"
    " UNION ALL"
    " SELECT 'charge', 0, " ORDER_NO_ATTEMPT("$3", "s.id", "s.period", "a") ", s.customer_id,"
    "        0, '', '', 'subscription', '', false, s.id"
    "   FROM subscriptions s"
    "  CROSS JOIN LATERAL (SELECT coalesce(max(attempt), 0) AS mx FROM charges c"
    "                       WHERE c.subscription_id = s.id AND c.period = s.period) m,"
    "        generate_series(m.mx + 1, m.mx + $4::int) a"
    "  WHERE s.state IN ('trialing', 'active', 'past_due')"
    "    AND s.next_charge_at <= to_timestamp($5) AND" IN_WINDOW("s.next_charge_at");
/* clang-format on */

/* What judging needs of the gateway's answer (a whole gw_result per order
 * would cost kilobytes each over a year's orders). */
struct answer {
	enum gw_outcome outcome;
	int has_order;
	struct gw_order order;
	char detail[256];
};

struct pending {
	struct reconcile_item *item;
	char charge_kind[16];
	char charged_order[64]; /* refunds: the refunded charge's pay_order_id */
	int reversed;           /* charges: voided or fully refunded */
	struct answer res;
	int done;
};

const char *reconcile_verdict_name(enum reconcile_verdict v)
{
	static const char *names[] = {"danger", "mismatch", "unresolved", "resolved", "open", "ok"};
	return names[v];
}

int reconcile_clean(const struct reconcile_report *r)
{
	return r->count[RECONCILE_DANGER] + r->count[RECONCILE_MISMATCH] +
	           r->count[RECONCILE_UNRESOLVED] ==
	       0;
}

void reconcile_report_free(struct reconcile_report *r)
{
	free(r->items);
	memset(r, 0, sizeof(*r));
}

static void on_done(void *udata, const struct gw_result *res)
{
	struct pending *p = udata;

	p->res.outcome = res->outcome;
	p->res.has_order = res->has_order;
	p->res.order = res->order;
	snprintf(p->res.detail, sizeof(p->res.detail), "%s", res->detail);
	p->done = 1;
}

static void set(struct reconcile_item *it, enum reconcile_verdict v, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set(struct reconcile_item *it, enum reconcile_verdict v, const char *fmt, ...)
{
	va_list ap;

	it->verdict = v;
	va_start(ap, fmt);
	vsnprintf(it->detail, sizeof(it->detail), fmt, ap);
	va_end(ap);
}

static int paid(const struct reconcile_item *it)
{
	return it->gw_found == 1 && gw_status_state(it->gw_status) == GW_ORDER_PAID;
}

/* A row we could have sent but do not have: anything there is one-sided. */
static void judge_no_row(struct reconcile_item *it)
{
	if (it->gw_found == 0)
		return; /* verdict OK, dropped by the caller */
	if (it->gw_found < 0)
		set(it, RECONCILE_UNRESOLVED, "not ours, and cc_query could not say if it exists");
	else if (paid(it))
		set(it, RECONCILE_DANGER,
		    "only at the gateway: order %s of %ld cents is paid and we have no row for it",
		    it->gw_pay_order_id, it->gw_amount);
	else
		set(it, RECONCILE_MISMATCH, "only at the gateway: order %s (status %d)",
		    it->gw_pay_order_id, it->gw_status);
}

/* Our settled row (succeeded or failed) against the gateway's answer. */
static void judge_settled(struct reconcile_item *it, const struct pending *p)
{
	int ours_paid = charges_state_parse(it->state) == CHARGES_SUCCEEDED;

	if (!ours_paid) {
		if (paid(it))
			set(it, RECONCILE_DANGER,
			    "we say failed, the gateway has order %s paid (%ld cents)",
			    it->gw_pay_order_id, it->gw_amount);
		return;
	}
	if (it->gw_found == 0)
		set(it, RECONCILE_MISMATCH, "we say succeeded, the gateway has no such order");
	else if (!gw_order_holds_charge(&p->res.order, p->reversed))
		set(it, RECONCILE_MISMATCH, "we say succeeded, the gateway's status is %d",
		    it->gw_status);
	else if (it->gw_amount >= 0 && it->gw_amount != it->amount_cents)
		set(it, RECONCILE_MISMATCH, "amount: ours %" PRId64 " cents, the gateway's %ld",
		    it->amount_cents, it->gw_amount);
	else if (it->pay_order_id[0] && strcmp(it->pay_order_id, it->gw_pay_order_id) != 0)
		set(it, RECONCILE_MISMATCH, "payOrderId: ours %s, the gateway's %s",
		    it->pay_order_id, it->gw_pay_order_id);
}

static void judge_refund_of(struct reconcile_item *it, const struct pending *p)
{
	const struct gw_order *o = &p->res.order;

	if (it->verdict == RECONCILE_OK && it->gw_found == 1 && o->original_order_id[0] &&
	    strcmp(o->original_order_id, p->charged_order) != 0)
		set(it, RECONCILE_MISMATCH, "the gateway's order is of %s, ours of %s",
		    o->original_order_id, p->charged_order);
}

/* Resolves an open refund through the refunds ledger. */
static void resolve_refund(PGconn *c, struct gw_client *gw, int64_t now, struct reconcile_item *it)
{
	struct refund_row row;
	char err[256];
	int o = refunds_resolve(c, gw, it->id, now, &row, err, sizeof(err));

	if (o < 0) {
		set(it, RECONCILE_UNRESOLVED, "%s", err);
		return;
	}
	snprintf(it->state, sizeof(it->state), "%s", row.state);
	snprintf(it->pay_order_id, sizeof(it->pay_order_id), "%s", row.pay_order_id);
	if (o == GW_UNKNOWN)
		set(it, RECONCILE_UNRESOLVED, "still unknown: %s", row.ret_msg);
	else
		set(it, RECONCILE_RESOLVED, "recorded %s from the gateway's answer", row.state);
}

/* Records a paid payment link (its notify may have been lost). */
static int resolve_link(PGconn *c, struct reconcile_item *it, const struct gw_order *o, char *err,
                        size_t errlen)
{
	struct charges_payment pm = {.pay_order_id = o->pay_order_id,
	                             .trans_id = o->trans_id,
	                             .pay_succ_time = o->pay_succ_time,
	                             .status = o->status,
	                             .amount_cents = o->amount,
	                             .note = "paid: recorded by reconcile"};

	switch (charges_mark_paid(c, it->mch_order_no, &pm, err, errlen)) {
	case CHARGES_PAID_ERROR:
		return -1;
	case CHARGES_PAID_RECORDED:
		snprintf(it->state, sizeof(it->state), "%s",
		         charges_state_names[CHARGES_SUCCEEDED]);
		snprintf(it->pay_order_id, sizeof(it->pay_order_id), "%s", o->pay_order_id);
		set(it, RECONCILE_RESOLVED, "paid at the gateway: recorded succeeded");
		return 0;
	case CHARGES_PAID_DUPLICATE:
		/* Another charge has this payOrderId: a human must look. */
		set(it, RECONCILE_MISMATCH, "the gateway's order %s is already another charge's",
		    o->pay_order_id);
		return 0;
	default:
		set(it, RECONCILE_MISMATCH, "amount: ours %" PRId64 " cents, the gateway's %ld",
		    it->amount_cents, o->amount);
		return 0;
	}
}

/* An open row (pending or unknown). */
static int judge_open(PGconn *c, struct gw_client *gw, int64_t now, struct pending *p, char *err,
                      size_t errlen)
{
	struct reconcile_item *it = p->item;

	if (strcmp(it->kind, "charge") != 0) {
		resolve_refund(c, gw, now, it);
		return 0;
	}
	if (strcmp(p->charge_kind, "one_off") == 0) {
		if (paid(it))
			return resolve_link(c, it, &p->res.order, err, errlen);
		if (it->gw_found >= 0)
			set(it, RECONCILE_OPEN, "payment link not paid (yet)");
		else
			set(it, RECONCILE_UNRESOLVED, "cc_query: %s", p->res.detail);
		return 0;
	}
	/* The subscription advances with the outcome: billingd records it. */
	if (it->gw_found < 0)
		set(it, RECONCILE_UNRESOLVED, "outcome unknown; cc_query: %s", p->res.detail);
	else if (paid(it))
		set(it, RECONCILE_UNRESOLVED,
		    "outcome %s, paid at the gateway (order %s): billingd's next pass records it",
		    it->state, it->gw_pay_order_id);
	else
		set(it, RECONCILE_UNRESOLVED,
		    "outcome %s, %s at the gateway: billingd's next pass resolves it", it->state,
		    it->gw_found ? "not paid" : "absent");
	return 0;
}

static void take_answer(struct pending *p)
{
	struct reconcile_item *it = p->item;
	const struct answer *r = &p->res;

	it->gw_found = -1;
	it->gw_status = -1;
	it->gw_amount = -1;
	if (!p->done)
		return;
	if (r->outcome == GW_FAIL) {
		it->gw_found = 0;
	} else if (r->outcome == GW_SUCCESS && r->has_order) {
		it->gw_found = 1;
		it->gw_status = r->order.status;
		it->gw_amount = r->order.amount;
		snprintf(it->gw_pay_order_id, sizeof(it->gw_pay_order_id), "%s",
		         r->order.pay_order_id);
	}
}

/* The item's money as reconcile_report.cents counts it. */
static int64_t signed_cents(const struct reconcile_item *it)
{
	int64_t cents = it->id ? it->amount_cents : it->gw_amount > 0 ? it->gw_amount : 0;

	return strcmp(it->kind, "charge") == 0 ? cents : -cents;
}

static int by_verdict(const void *a, const void *b)
{
	const struct reconcile_item *x = a, *y = b;

	if (x->verdict != y->verdict)
		return (int)x->verdict - (int)y->verdict;
	return strcmp(x->mch_order_no, y->mch_order_no);
}

/* Sends every query and waits for all of them. Requests are queued a few
 * at a time, as slots free: a queued request holds its signed body. */
static int query_all(struct gw_client *gw, int max_in_flight, const struct reconcile_opts *o,
                     struct pending *ps, int n, char *err, size_t errlen)
{
	struct gw_multi *m = gw_multi_new(gw, max_in_flight);
	struct gw_result refused;
	int rc = 0, next = 0;

	if (!m) {
		snprintf(err, errlen, "gateway client: cannot start concurrent requests");
		return -1;
	}
	while (next < n || gw_multi_pending(m) > 0) {
		while (next < n && gw_multi_pending(m) < 2 * max_in_flight) {
			struct gw_request req = {.call = GW_QUERY,
			                         .mch_order_no = ps[next].item->mch_order_no};

			/* Refused before sending: stays "not known". */
			if (gw_multi_submit(m, &req, on_done, &ps[next], &refused) == GW_INVALID)
				snprintf(ps[next].res.detail, sizeof(ps[next].res.detail), "%s",
				         refused.detail);
			next++;
		}
		if (gw_multi_pending(m) > 0 && gw_multi_run(m, 200) < 0) {
			snprintf(err, errlen, "gateway client: internal error");
			rc = -1;
			break;
		}
		if (o->progress)
			o->progress(o->udata, next - gw_multi_pending(m), n);
	}
	gw_multi_free(m);
	return rc;
}

/* Columns of SQL_ROWS, in order. */
enum {
	ROW_KIND,
	ROW_ID,
	ROW_ORDER_NO,
	ROW_CUSTOMER,
	ROW_AMOUNT,
	ROW_STATE,
	ROW_PAY_ORDER_ID,
	ROW_CHARGE_KIND,
	ROW_CHARGED_ORDER,
	ROW_REVERSED,
	ROW_SUB,
};

static void fill_row(const PGresult *r, int i, struct pending *p)
{
	struct reconcile_item *it = p->item;

	snprintf(it->kind, sizeof(it->kind), "%s", db_str(r, i, ROW_KIND));
	it->id = db_i64(r, i, ROW_ID);
	snprintf(it->mch_order_no, sizeof(it->mch_order_no), "%s", db_str(r, i, ROW_ORDER_NO));
	snprintf(it->customer_id, sizeof(it->customer_id), "%s", db_str(r, i, ROW_CUSTOMER));
	it->amount_cents = db_i64(r, i, ROW_AMOUNT);
	snprintf(it->state, sizeof(it->state), "%s", db_str(r, i, ROW_STATE));
	snprintf(it->pay_order_id, sizeof(it->pay_order_id), "%s", db_str(r, i, ROW_PAY_ORDER_ID));
	snprintf(p->charge_kind, sizeof(p->charge_kind), "%s", db_str(r, i, ROW_CHARGE_KIND));
	snprintf(p->charged_order, sizeof(p->charged_order), "%s", db_str(r, i, ROW_CHARGED_ORDER));
	p->reversed = strcmp(db_str(r, i, ROW_REVERSED), "t") == 0;
	it->subscription_id = db_i64(r, i, ROW_SUB);
	it->verdict = RECONCILE_OK;
}

/* --repair: a paid subscription attempt we have no row for goes back as
 * unknown (charges_restore_sent), for the caller's sched_resolve to record
 * from cc_query with its subscription's advance. */
static int repair(PGconn *c, int64_t now, struct reconcile_item *items, int n, char *err,
                  size_t errlen)
{
	struct charges_sent s = {0};
	int k = 0, rc = 0;

	for (int i = 0; i < n; i++) {
		struct reconcile_item *it = &items[i];

		if (it->verdict != RECONCILE_DANGER || it->id || !it->subscription_id)
			continue;
		charges_sent_add(&s, it->mch_order_no, it->subscription_id, it->customer_id,
		                 it->gw_amount, now);
		set(it, RECONCILE_RESOLVED,
		    "only at the gateway: order %s of %ld cents is paid; repaired: recorded as "
		    "unknown, resolved with its subscription's advance",
		    it->gw_pay_order_id, it->gw_amount);
		k++;
	}
	if (k)
		rc = charges_restore_sent(c, &s, err, errlen) < 0 ? -1 : 0;
	charges_sent_free(&s);
	return rc;
}

static int judge(PGconn *c, struct gw_client *gw, int64_t now, struct pending *p, char *err,
                 size_t errlen)
{
	struct reconcile_item *it = p->item;

	take_answer(p);
	if (it->id == 0) {
		judge_no_row(it);
		return 0;
	}
	if (charges_state_outcome(it->state) == GW_UNKNOWN)
		return judge_open(c, gw, now, p, err, errlen);
	if (it->gw_found < 0) {
		set(it, RECONCILE_UNRESOLVED, "cc_query could not check it: %s", p->res.detail);
		return 0;
	}
	judge_settled(it, p);
	if (strcmp(it->kind, "charge") != 0)
		judge_refund_of(it, p);
	return 0;
}

int reconcile_run(PGconn *c, struct gw_client *gw, const struct cfg *cfg,
                  const struct reconcile_opts *o, struct reconcile_report *out, char *err,
                  size_t errlen)
{
	struct pending *ps = NULL;
	PGresult *r;
	int n, kept = 0, rc = -1;

	memset(out, 0, sizeof(*out));
	r = db_get(c, err, errlen, SQL_ROWS, DB_I(o->from), DB_I(o->to), DB_S(cfg->order_prefix),
	           DB_I(FAILOVER_AHEAD + 1), DB_I(o->now));
	if (!r)
		return -1;
	n = PQntuples(r);
	out->items = calloc(n ? (size_t)n : 1, sizeof(*out->items));
	ps = calloc(n ? (size_t)n : 1, sizeof(*ps));
	if (!out->items || !ps) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		ps[i].item = &out->items[i];
		fill_row(r, i, &ps[i]);
	}
	if (query_all(gw, cfg->gateway.max_in_flight, o, ps, n, err, errlen) < 0)
		goto out;
	for (int i = 0; i < n; i++)
		if (judge(c, gw, o->now, &ps[i], err, errlen) < 0)
			goto out;
	if (o->repair && repair(c, o->now, out->items, n, err, errlen) < 0)
		goto out;
	/* Numbers we never used and the gateway does not know are no finding. */
	for (int i = 0; i < n; i++) {
		struct reconcile_item *it = &out->items[i];
		if (it->id == 0 && it->verdict == RECONCILE_OK) {
			out->probed++;
			continue;
		}
		out->items[kept++] = *it;
		out->count[it->verdict]++;
		out->cents[it->verdict] += signed_cents(it);
	}
	out->n = kept;
	qsort(out->items, (size_t)kept, sizeof(*out->items), by_verdict);
	rc = 0;
out:
	PQclear(r);
	free(ps);
	if (rc < 0)
		reconcile_report_free(out);
	return rc;
}
