/* summary.h: the monthly summary an accountant or a SaaS operator reads:
 * per local month and per plan, money in and out, charges, declines and
 * dunning, subscription movements and MRR, each figure one SQL aggregate
 * over the ledger (README defines them). billctl report summary prints it. */
#ifndef SUMMARY_H
#define SUMMARY_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

struct summary_row {
	char month[8]; /* YYYY-MM, local to billing.timezone */
	int all;       /* 1: every plan of the month (then plan is "") */
	char plan[41]; /* the plan's code; "" for payment links */
	int64_t gross_cents, refunded_cents, voided_cents, net_cents;
	int charges, declines, recoveries;
	int dunned, recovered;  /* periods first declined in the month; of them, paid since */
	char recovery_rate[16]; /* recovered / dunned in percent, one decimal; "" if none */
	int new_subs, canceled, ended, paused;
	int active;                          /* at the month's end */
	int64_t mrr_cents, mrr_change_cents; /* at the month's end; since its start */
};

struct summary {
	struct summary_row *rows; /* by month; each month's plans, then its total */
	int n;
};

/* The months of [from, to) (a partial month counts from `from` or up to
 * `to`), in timezone (an IANA name: billing.timezone). 0 with out filled
 * (free with summary_free), -1 with err. */
int summary_build(PGconn *c, int64_t from, int64_t to, const char *timezone, struct summary *out,
                  char *err, size_t errlen);
void summary_free(struct summary *s);

#endif
