/* report.c: the accountants' export as data. Rows come from the ledger in
 * one statement; the totals are summed here from the same rows, in integer
 * cents, so that the totals always add up to the rows they sit beside. Rows
 * are dated by settled_at (the billing clock); rows written before it existed
 * fall back to updated_at. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calendar.h"
#include "db.h"
#include "report.h"

#define SETTLED(t)   "coalesce(" t ".settled_at, " t ".updated_at)"
#define IN_WINDOW(t) SETTLED(t) " >= to_timestamp($1) AND " SETTLED(t) " < to_timestamp($2)"

static const char SQL_MOVEMENTS[] = "SELECT extract(epoch FROM " SETTLED(
    "c") ")::bigint, 'charge', c.customer_id,"
         "       coalesce(p.code, ''), c.amount_cents, c.currency, c.mch_order_no,"
         "       coalesce(c.pay_order_id, ''), coalesce(c.trans_id, ''), c.state, '',"
         "       coalesce(c.pay_succ_time, '')"
         "  FROM charges c LEFT JOIN plans p ON p.id = c.plan_id"
         " WHERE c.state = 'succeeded' AND " IN_WINDOW(
             "c") " UNION ALL"
                  " SELECT extract(epoch FROM " SETTLED(
                      "r") ")::bigint, r.kind, c.customer_id,"
                           "        coalesce(p.code, ''), -r.amount_cents, c.currency, "
                           "r.mch_refund_no,"
                           "        coalesce(r.pay_order_id, ''), coalesce(r.trans_id, ''), "
                           "r.state,"
                           "        c.pay_order_id, coalesce(r.pay_succ_time, '')"
                           "   FROM refunds r JOIN charges c ON c.id = r.charge_id"
                           "   LEFT JOIN plans p ON p.id = c.plan_id"
                           "  WHERE r.state = 'succeeded' AND " IN_WINDOW("r") " ORDER BY 1, 7";

/* Open movements that may still settle into the window. A charge has no
 * attempt time on the billing clock, so every open subscription charge made
 * since the window began counts (one made after it ends is a false alarm,
 * never a miss); a refund is dated by its request. A payment link's money
 * moves when the customer pays, so an unpaid link belongs to no past window. */
static const char SQL_OPEN[] =
    "SELECT 'charge', mch_order_no, state FROM charges"
    " WHERE subscription_id IS NOT NULL AND state IN ('pending', 'unknown')"
    "   AND created_at >= to_timestamp($1)"
    " UNION ALL"
    " SELECT kind, mch_refund_no, state FROM refunds"
    "  WHERE state IN ('pending', 'unknown')"
    "    AND coalesce(requested_at, created_at) >= to_timestamp($1)"
    "    AND coalesce(requested_at, created_at) < to_timestamp($2)"
    " ORDER BY 2";

#define COPY(dst, r, i, col) snprintf(dst, sizeof(dst), "%s", db_str(r, i, col))

static void add(struct report_total *t, const struct report_row *row)
{
	if (strcmp(row->type, "charge") == 0) {
		t->charges++;
		t->charges_cents += row->amount_cents;
	} else if (strcmp(row->type, "refund") == 0) {
		t->refunds++;
		t->refunds_cents += row->amount_cents;
	} else {
		t->voids++;
		t->voids_cents += row->amount_cents;
	}
	t->net_cents += row->amount_cents;
}

static int by_key(const void *a, const void *b)
{
	const struct report_total *x = a, *y = b;
	int d = strcmp(x->date, y->date);

	if (!d)
		d = strcmp(x->plan, y->plan);
	return d ? d : strcmp(x->currency, y->currency);
}

/* The total of (date, plan, currency) in *list, added when missing; NULL
 * when out of memory. */
static struct report_total *total_for(struct report_total **list, int *n, int *cap,
                                      const char *date, const char *plan, const char *currency)
{
	struct report_total *t;

	/* Rows come by time, so their day's totals are the last ones added. */
	for (int i = *n - 1; i >= 0 && strcmp((*list)[i].date, date) == 0; i--)
		if (strcmp((*list)[i].plan, plan) == 0 &&
		    strcmp((*list)[i].currency, currency) == 0)
			return &(*list)[i];
	if (*n == *cap) {
		int grown_cap = *cap ? *cap * 2 : 16;
		t = realloc(*list, (size_t)grown_cap * sizeof(*t));
		if (!t)
			return NULL;
		*list = t;
		*cap = grown_cap;
	}
	t = &(*list)[(*n)++];
	memset(t, 0, sizeof(*t));
	snprintf(t->date, sizeof(t->date), "%s", date);
	snprintf(t->plan, sizeof(t->plan), "%s", plan);
	snprintf(t->currency, sizeof(t->currency), "%s", currency);
	return t;
}

static int load_open(PGconn *c, int64_t from, int64_t to, struct report *out, char *err,
                     size_t errlen)
{
	PGresult *r = db_get(c, err, errlen, SQL_OPEN, DB_I(from), DB_I(to));

	if (!r)
		return -1;
	out->nopen = PQntuples(r);
	out->open = calloc(out->nopen ? (size_t)out->nopen : 1, sizeof(*out->open));
	if (!out->open) {
		PQclear(r);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (int i = 0; i < out->nopen; i++) {
		COPY(out->open[i].type, r, i, 0);
		COPY(out->open[i].mch_order_no, r, i, 1);
		COPY(out->open[i].state, r, i, 2);
	}
	PQclear(r);
	return 0;
}

int report_build(PGconn *c, int64_t from, int64_t to, struct report *out, char *err, size_t errlen)
{
	PGresult *r;
	int cap = 0, cap_all = 0;

	memset(out, 0, sizeof(*out));
	r = db_get(c, err, errlen, SQL_MOVEMENTS, DB_I(from), DB_I(to));
	if (!r)
		return -1;
	out->n = PQntuples(r);
	out->rows = calloc(out->n ? (size_t)out->n : 1, sizeof(*out->rows));
	if (!out->rows)
		goto oom;
	for (int i = 0; i < out->n; i++) {
		struct report_row *row = &out->rows[i];
		struct report_total *tot, *all;

		row->at = db_i64(r, i, 0);
		cal_format_date(row->at, row->date, sizeof(row->date));
		COPY(row->type, r, i, 1);
		COPY(row->customer_id, r, i, 2);
		COPY(row->plan, r, i, 3);
		row->amount_cents = db_i64(r, i, 4);
		COPY(row->currency, r, i, 5);
		COPY(row->mch_order_no, r, i, 6);
		COPY(row->pay_order_id, r, i, 7);
		COPY(row->trans_id, r, i, 8);
		COPY(row->status, r, i, 9);
		COPY(row->original_pay_order_id, r, i, 10);
		COPY(row->gateway_time, r, i, 11);
		tot = total_for(&out->totals, &out->ntotals, &cap, row->date, row->plan,
		                row->currency);
		all =
		    tot ? total_for(&out->all, &out->nall, &cap_all, "", "", row->currency) : NULL;
		if (!all)
			goto oom;
		add(tot, row);
		add(all, row);
	}
	PQclear(r);
	if (out->n) { /* no rows: no totals, and qsort takes no NULL */
		qsort(out->totals, (size_t)out->ntotals, sizeof(*out->totals), by_key);
		qsort(out->all, (size_t)out->nall, sizeof(*out->all), by_key);
	}
	if (load_open(c, from, to, out, err, errlen) < 0) {
		report_free(out);
		return -1;
	}
	return 0;
oom:
	PQclear(r);
	report_free(out);
	snprintf(err, errlen, "out of memory");
	return -1;
}

void report_free(struct report *r)
{
	free(r->rows);
	free(r->totals);
	free(r->all);
	free(r->open);
	memset(r, 0, sizeof(*r));
}
