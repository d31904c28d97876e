/* report.h: the accountants' export as data: one row per money movement in
 * a window (succeeded charges; succeeded refunds and voids, negative), dated
 * when the money moved on the billing clock, totals per local day, plan and
 * currency, and the window's movements whose outcome is still unknown.
 * billctl report writes it as CSV or JSON. */
#ifndef REPORT_H
#define REPORT_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

struct report_row {
	int64_t at;    /* when the money moved (settled_at), unix seconds */
	char date[11]; /* its local date, YYYY-MM-DD (billing.timezone) */
	char type[8];  /* charge, refund, void */
	char customer_id[31];
	char plan[41];        /* the plan's code; "" for a payment link */
	int64_t amount_cents; /* negative for refunds and voids */
	char currency[4];
	char mch_order_no[31]; /* a refund's or void's own mchRefundNo */
	char pay_order_id[64]; /* the gateway's id of this movement's order */
	char trans_id[64];
	char status[12];
	char original_pay_order_id[64]; /* refunds, voids: the charge reversed */
	char gateway_time[64];          /* the gateway's paySuccTime, as reported */
};

struct report_total {
	char date[11]; /* "" in the window's totals */
	char plan[41]; /* "" in the window's totals */
	char currency[4];
	int charges, refunds, voids;                       /* counts */
	int64_t charges_cents, refunds_cents, voids_cents; /* refunds, voids <= 0 */
	int64_t net_cents;
};

/* A movement whose outcome is not known yet (pending or unknown). */
struct report_open {
	char type[8];
	char mch_order_no[31];
	char state[12];
};

struct report {
	struct report_row *rows; /* by time */
	int n;
	struct report_total *totals; /* by date, plan, currency */
	int ntotals;
	struct report_total *all; /* the window's, one per currency */
	int nall;
	struct report_open *open; /* by order number */
	int nopen;
};

/* Movements that settled in [from, to), dates in the process timezone (TZ =
 * billing.timezone), and the open movements that may still settle into the
 * window: made since from (refunds: requested since from and before to).
 * 0 with out filled (free with report_free), -1 with err. */
int report_build(PGconn *c, int64_t from, int64_t to, struct report *out, char *err, size_t errlen);
void report_free(struct report *r);

#endif
