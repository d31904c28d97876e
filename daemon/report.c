/* report.c: the accountants' export as data. Rows come from the ledger in
 * one statement; the totals are summed here from the same rows, so that the
 * totals always add up to the rows they sit beside. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calendar.h"
#include "db.h"
#include "report.h"

static const char SQL_MOVEMENTS[] =
    "SELECT extract(epoch FROM c.created_at)::bigint, 'charge', c.customer_id,"
    "       coalesce(p.code, ''), c.amount_cents, c.currency, c.mch_order_no,"
    "       coalesce(c.pay_order_id, ''), coalesce(c.trans_id, ''), c.state"
    "  FROM charges c LEFT JOIN plans p ON p.id = c.plan_id"
    " WHERE c.state = 'succeeded'"
    "   AND c.created_at >= to_timestamp($1) AND c.created_at < to_timestamp($2)"
    " UNION ALL"
    " SELECT extract(epoch FROM r.created_at)::bigint, r.kind, c.customer_id,"
    "        coalesce(p.code, ''), -r.amount_cents, c.currency, r.mch_refund_no,"
    "        coalesce(r.pay_order_id, ''), '', r.state"
    "   FROM refunds r JOIN charges c ON c.id = r.charge_id"
    "   LEFT JOIN plans p ON p.id = c.plan_id"
    "  WHERE r.state = 'succeeded'"
    "    AND r.created_at >= to_timestamp($1) AND r.created_at < to_timestamp($2)"
    " ORDER BY 1, 7";

#define COPY(dst, r, i, col) snprintf(dst, sizeof(dst), "%s", db_str(r, i, col))

static void add(struct report_total *t, const struct report_row *row)
{
	if (strcmp(row->type, "charge") == 0)
		t->charges_cents += row->amount_cents;
	else if (strcmp(row->type, "refund") == 0)
		t->refunds_cents += row->amount_cents;
	else
		t->voids_cents += row->amount_cents;
	t->net_cents += row->amount_cents;
}

static int by_date_plan(const void *a, const void *b)
{
	const struct report_total *x = a, *y = b;
	int d = strcmp(x->date, y->date);

	return d ? d : strcmp(x->plan, y->plan);
}

/* The (date, plan) total of row, added when missing; NULL when out of memory. */
static struct report_total *total_for(struct report *r, int *cap, const struct report_row *row)
{
	struct report_total *t;

	/* Rows come by time, so their day's totals are the last ones added. */
	for (int i = r->ntotals - 1; i >= 0 && strcmp(r->totals[i].date, row->date) == 0; i--)
		if (strcmp(r->totals[i].plan, row->plan) == 0)
			return &r->totals[i];
	if (r->ntotals == *cap) {
		int grown_cap = *cap ? *cap * 2 : 16;
		t = realloc(r->totals, (size_t)grown_cap * sizeof(*t));
		if (!t)
			return NULL;
		r->totals = t;
		*cap = grown_cap;
	}
	t = &r->totals[r->ntotals++];
	memset(t, 0, sizeof(*t));
	memcpy(t->date, row->date, sizeof(t->date));
	memcpy(t->plan, row->plan, sizeof(t->plan));
	return t;
}

int report_build(PGconn *c, int64_t from, int64_t to, struct report *out, char *err, size_t errlen)
{
	PGresult *r;
	int cap = 0;

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
		struct report_total *tot;

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
		tot = total_for(out, &cap, row);
		if (!tot)
			goto oom;
		add(tot, row);
		add(&out->all, row);
	}
	PQclear(r);
	qsort(out->totals, (size_t)out->ntotals, sizeof(*out->totals), by_date_plan);
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
	memset(r, 0, sizeof(*r));
}
