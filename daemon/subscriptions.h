/* subscriptions.h: the subscriptions table's one owner: create, read, list,
 * cancel (now or at the period's end), pause, resume and change plan as
 * admins ask; the period boundaries and the moves after each charge's
 * outcome as the scheduler computes them (billing.h has the rules). */
#ifndef SUBSCRIPTIONS_H
#define SUBSCRIPTIONS_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "db.h"

struct plan;

struct subscription {
	int64_t id;
	char customer_id[31];
	int64_t plan_id;
	char plan_code[41];
	int plan_version;
	int64_t amount_cents; /* the plan's price */
	int64_t next_plan_id; /* 0: none */
	char next_plan_code[41];
	char state[12]; /* trialing active past_due paused canceled ended */
	int64_t anchor;
	int anchor_period;
	int period; /* the period to charge next */
	int attempts, cycles_done;
	int cancel_at_period_end;
	/* unix seconds, 0 when NULL */
	int64_t period_start, period_end, trial_end, next_charge_at, created_at;
	int64_t paused_at; /* an admin's pause, on the billing clock */
};

/* One charge attempt of a subscription, for `subscription show`. */
struct subscription_charge {
	int64_t id;
	char mch_order_no[31];
	int period, attempt;
	int64_t amount_cents;
	char state[12]; /* a charge's state; a succeeded one voided or fully refunded says so */
	char pay_order_id[64];
	char ret_msg[256];
	int64_t created_at;
};

/* What `subscribe` asks for. */
struct subscriptions_new {
	const char *customer_id;
	const struct plan *plan; /* a plan's current version */
	int64_t start, now;
	int trial_days;
	int when_bound;      /* a pending enrolment is enough: charged once bound */
	int allow_duplicate; /* a second live subscription of the same plan */
	int bill_arrears;    /* a start in the past bills every period since */
};

/* New subscription of n->customer_id to n->plan starting at n->start:
 * trialing until start + trial_days local days when trial_days > 0 (its
 * first charge then), else active. *passed: how many of its periods ended
 * before now (a start in the past); they are billed only with bill_arrears,
 * else billing starts with the period that contains now. The customer
 * must be bound (or pending, with when_bound: billed from the pass that
 * finds it bound, subscriptions_boundaries) and have no live subscription
 * of the plan's code (unless allow_duplicate), checked in the same
 * statement as the insert. 0, or -1 with err naming what refused it. */
int subscriptions_create(PGconn *c, const struct subscriptions_new *n, struct subscription *out,
                         int *passed, char *err, size_t errlen);

/* 0, or -1 with err ("unknown subscription 7" or a database error). */
int subscriptions_get(PGconn *c, int64_t id, struct subscription *out, char *err, size_t errlen);

/* By id, optionally only one customer's and/or one state's (NULL: all).
 * *out is malloc'd (caller frees). 0 / -1. */
int subscriptions_list(PGconn *c, const char *customer_id, const char *state,
                       struct subscription **out, int *n, char *err, size_t errlen);

/* Its charge attempts, oldest first (a succeeded charge since voided is
 * "voided", one refunded in full "refunded"); *out malloc'd (caller frees). 0 / -1. */
int subscriptions_charges(PGconn *c, int64_t id, struct subscription_charge **out, int *n,
                          char *err, size_t errlen);

/* Each changes the subscription and refills out; -1 with err naming why it
 * does not apply (unknown id, a state it cannot leave that way):
 * cancel: now (canceled, nothing more charged) or, with at_period_end, when
 *   the current period ends (the scheduler cancels at the boundary);
 * pause: nothing is charged until resume; paused_at = now;
 * resume: a paused subscription, or one left past_due after its retries,
 *   keeps its paid time (billing_resume: a trial's remaining days, a paid
 *   period charged again only at its end, else a new period from now);
 * keep: withdraws a cancel at the period's end;
 * change_plan: p (a plan's current version) from the next period on.
 * A charge in flight does not prevent cancel or pause: the scheduler keeps
 * them when it records the outcome. */
int subscriptions_cancel(PGconn *c, int64_t id, int at_period_end, struct subscription *out,
                         char *err, size_t errlen);
int subscriptions_pause(PGconn *c, int64_t id, int64_t now, struct subscription *out, char *err,
                        size_t errlen);
int subscriptions_resume(PGconn *c, int64_t id, int64_t now, struct subscription *out, char *err,
                         size_t errlen);
int subscriptions_keep(PGconn *c, int64_t id, struct subscription *out, char *err, size_t errlen);
int subscriptions_change_plan(PGconn *c, int64_t id, const struct plan *p, struct subscription *out,
                              char *err, size_t errlen);

/* At the boundaries due by now: a cancel at the period's end takes effect,
 * a plan change starts the new plan's calendar, a subscription that waited
 * for its customer's card (--when-bound) starts once it is bound, its
 * calendar moved to now when its first charge fell due during the wait.
 * A subscription with an open charge waits for its outcome. 0 / -1. */
int subscriptions_boundaries(PGconn *c, int64_t now, char *err, size_t errlen);

/* billctl charge: makes subscription id due at now when something is owed
 * (a past_due period, or a period due by now), its customer bound and no
 * charge open; with end_trial, a trial ends at now (its first period starts
 * there). 1 when it was made due, 0 when not, -1 with err. */
int subscriptions_make_due(PGconn *c, int64_t id, int64_t now, int end_trial, char *err,
                           size_t errlen);

/* Why subscription id cannot be charged now, as one line in err (paid up
 * or trialing: when its next charge is due, and how much). */
void subscriptions_why_not_due(PGconn *c, int64_t id, char *err, size_t errlen);

/* Moves after charge outcomes, written in one statement (in the same
 * transaction as the outcomes). 0 in ps, pe and next means unchanged (ps,
 * pe) or none (next). */
struct subscriptions_moves {
	struct db_batch rows;
};
void subscriptions_moves_add(struct subscriptions_moves *m, int64_t id, int period,
                             const char *state, int attempts, int cycles, int64_t next,
                             int64_t period_start, int64_t period_end);
int subscriptions_moves_write(PGconn *c, struct subscriptions_moves *m, char *err, size_t errlen);
void subscriptions_moves_free(struct subscriptions_moves *m);

#endif
