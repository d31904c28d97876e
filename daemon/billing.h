/* billing.h: the billing rules, pure (no database, no gateway, no clock of
 * their own): a subscription's states as the database spells them, where
 * its calendar starts (trial), and how it moves after an attempt's result
 * (advance, dunning, exhaustion, an admin's pause or cancel in flight).
 * The scheduler applies them; docs/design.md says why they are so. */
#ifndef BILLING_H
#define BILLING_H

#include <stdint.h>

#include "plans.h"

enum billing_state {
	BILLING_TRIALING,
	BILLING_ACTIVE,
	BILLING_PAST_DUE,
	BILLING_PAUSED,
	BILLING_CANCELED,
	BILLING_ENDED,
	BILLING_NSTATES
};
/* "trialing", "active", ...: subscriptions.state, indexed by the enum. */
extern const char *const billing_state_names[BILLING_NSTATES];
/* The state named s, or -1. */
int billing_state_parse(const char *s);

/* An attempt's result, as the scheduler reads the gateway's answer. */
enum billing_result {
	BILLING_SUCCEEDED, /* paid */
	BILLING_DECLINED,  /* the customer's card said no: a dunning step */
	BILLING_BUSY,      /* not processed, not the customer's doing: retried soon */
	BILLING_ABSENT,    /* an unknown outcome proven absent: charged again */
	BILLING_UNKNOWN    /* still unknown: nothing moves */
};
#define BILLING_BUSY_RETRY_SECONDS 60
/* "success", "declined", "busy", "absent", "unknown": as logs name them. */
extern const char *const billing_result_names[BILLING_UNKNOWN + 1];

/* What the rules read and move. */
struct billing_sub {
	int64_t anchor;    /* start of period anchor_period */
	int anchor_period; /* the period the anchor starts */
	int period;        /* the period to charge next */
	int cycles_done;
	int attempts; /* failed attempts of this period */
	enum billing_state state;
	int64_t next_charge_at; /* 0: none */
	int64_t period_start, period_end;
};

/* Moves s after result r of an attempt for its current period made at now
 * under plan p: success pays the period (start and end from the anchor,
 * next charge at its end, ended after the plan's cycles); a decline steps
 * the retry schedule from now, then applies p->on_exhausted; busy retries
 * in BILLING_BUSY_RETRY_SECONDS; absent and unknown change nothing. A
 * subscription paused, canceled or ended meanwhile stays so, with nothing
 * due. */
void billing_apply(const struct plan *p, struct billing_sub *s, enum billing_result r, int64_t now);

/* Where period 0 of a subscription started at start begins: trial_days local
 * days later (the plan's trial_days unless the subscriber chose otherwise). */
int64_t billing_anchor(int64_t start, int trial_days);

/* An admin's resume at now of s, paused at paused_at (0: paused by the
 * dunning rules, not by an admin); *trial_end is its trial's end (0: none).
 * Paid time is kept and paused time never billed:
 *  - a trial paused before its end keeps its remaining time: it ends that
 *    long after now (*trial_end and the anchor move there);
 *  - a paid period still running at now (period_end > now) is charged for
 *    nothing more: the next charge is at its end, the anchor unchanged;
 *  - else a new period starts at now (the anchor moves there), due at once.
 * The state becomes trialing or active, attempts 0. */
void billing_resume(struct billing_sub *s, int64_t *trial_end, int64_t paused_at, int64_t now);

/* How many whole periods of plan p anchored at anchor (period 0) ended by
 * now: the number of the period that contains now (0 before the anchor),
 * at most the plan's last cycle. */
int billing_periods_passed(const struct plan *p, int64_t anchor, int64_t now);

#endif
