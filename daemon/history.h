/* history.h: what happened to a customer, as one timeline read from the
 * audit log (every state change of the customer, its subscriptions, their
 * charges and the refunds and voids of those, with the actor and the
 * reason), in the order the changes were made. */
#ifndef HISTORY_H
#define HISTORY_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

struct history_step {
	int64_t at;       /* when it was recorded (unix seconds, the database's clock) */
	int64_t business; /* its billing-clock time when the ledger has one, else 0 */
	char actor[96];
	char reason[512];   /* "" when none was given */
	char entity[16];    /* customer, subscription, charge, refund, void */
	char ref[40];       /* the customer id, subscription id, or order number */
	char of[40];        /* a charge's subscription id; a refund's charge order number */
	char old_state[16]; /* "" for a creation */
	char new_state[16];
	char detail[256];      /* a plan, or what changed besides the state */
	int64_t amount_cents;  /* charges, refunds, voids; else 0 */
	char pay_order_id[64]; /* the gateway's order, once settled */
	char ret_msg[256];     /* the gateway's word on a settled or unknown outcome */
};

/* The timeline of customer id, oldest first; *out malloc'd (caller frees).
 * 0, or -1 with err ("unknown customer 'x'", database). */
int history_customer(PGconn *c, const char *id, struct history_step **out, int *n, char *err,
                     size_t errlen);

#endif
