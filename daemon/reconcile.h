/* reconcile.h: our ledger checked against the gateway's: every charge and
 * refund/void made in a window is looked up with cc_query (concurrently), and
 * so is every order number we could have sent without keeping a row for it.
 * Open outcomes are resolved where that is ours to record (refunds, voids,
 * payment links); the rest is listed. */
#ifndef RECONCILE_H
#define RECONCILE_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "config.h"
#include "gateway.h"

/* Most urgent first: the report is sorted this way. */
enum reconcile_verdict {
	RECONCILE_DANGER,     /* the gateway has money moved that we say did not */
	RECONCILE_MISMATCH,   /* amount, status or ids differ, or one side only */
	RECONCILE_UNRESOLVED, /* the outcome is still unknown or not ours to record */
	RECONCILE_RESOLVED,   /* was open: recorded now from the gateway's answer */
	RECONCILE_OPEN,       /* a payment link not paid (yet): nothing to settle */
	RECONCILE_OK          /* both sides agree */
};

struct reconcile_item {
	enum reconcile_verdict verdict;
	char kind[8];            /* charge, refund, void */
	int64_t id;              /* our row; 0 when we have none */
	int64_t subscription_id; /* with id 0: the attempt number's subscription */
	char mch_order_no[31];
	char customer_id[31];
	int64_t amount_cents; /* ours; 0 when we have no row */
	char state[16];       /* ours (after resolution); "" when no row */
	char pay_order_id[64];
	int gw_found; /* 1 found, 0 proven absent, -1 not known */
	int gw_status;
	long gw_amount;
	char gw_pay_order_id[64];
	char detail[256]; /* one line: what differs */
};

struct reconcile_report {
	struct reconcile_item *items; /* sorted by verdict, then order number */
	int n;
	int count[RECONCILE_OK + 1]; /* items per verdict */
	/* Their money per verdict, in cents: charges positive, refunds and
	 * voids negative; ours, or the gateway's amount when we have no row. */
	int64_t cents[RECONCILE_OK + 1];
	int probed; /* numbers we could have sent without a row: proven absent */
};

/* What reconcile_run checks and how it reports progress. */
struct reconcile_opts {
	int64_t from, to; /* the window [from, to) of created_at */
	int64_t now;      /* the billing clock: dates what it resolves */
	/* A paid subscription attempt we have no row for (a promotion or a
	 * restore lost it) is inserted as unknown, for sched_resolve to record
	 * with its subscription's advance; reported as resolved. */
	int repair;
	/* Called (when not NULL) as the gateway's answers come in: done of
	 * total queries answered. */
	void (*progress)(void *udata, int done, int total);
	void *udata;
};

/* Checks the window. order_prefix derives the numbers we could have sent;
 * max_in_flight bounds concurrent queries. 0 with out filled (free with
 * reconcile_report_free), or -1 with err (database trouble). */
int reconcile_run(PGconn *c, struct gw_client *gw, const struct cfg *cfg,
                  const struct reconcile_opts *o, struct reconcile_report *out, char *err,
                  size_t errlen);
void reconcile_report_free(struct reconcile_report *r);

/* 1 when nothing needs a human: no danger, mismatch or unresolved item. */
int reconcile_clean(const struct reconcile_report *r);

/* "danger", "mismatch", "unresolved", "resolved", "open", "ok". */
const char *reconcile_verdict_name(enum reconcile_verdict v);

#endif
