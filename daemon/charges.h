/* charges.h: the charges table's one owner. A charge is a subscription's
 * attempt (claimed when due) or a payment link; its intent is committed
 * before the gateway is asked, its outcome recorded after (succeeded,
 * failed, or unknown until cc_query settles it). See docs/design.md, "The
 * charge protocol". */
#ifndef CHARGES_H
#define CHARGES_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "db.h"
#include "gateway.h"

/* The states of a charge (and of a refund: the refunds table uses the same
 * four), as the database spells them, indexed by the enum. */
enum charges_state { CHARGES_PENDING, CHARGES_SUCCEEDED, CHARGES_FAILED, CHARGES_UNKNOWN };
#define CHARGES_NSTATES 4
extern const char *const charges_state_names[CHARGES_NSTATES];
/* The state named s, or -1. */
int charges_state_parse(const char *s);
/* What a recorded state says of the money: GW_SUCCESS, GW_FAIL, else
 * GW_UNKNOWN (pending, unknown, or not a state). */
int charges_state_outcome(const char *s);

/* Our order numbers, spelled here only, as SQL over SQL expressions: a
 * subscription's attempt <prefix><subscription>-<period>-<attempt>, a
 * payment link <prefix>P<charge id>, a refund or void <prefix>R<refund id>.
 * Reconciliation derives from them every number we could have sent. */
#define ORDER_NO_ATTEMPT(prefix, sub, period, attempt)                                             \
	"(" prefix " || " sub " || '-' || " period " || '-' || " attempt ")"
#define ORDER_NO_LINK(prefix, id)   "(" prefix " || 'P' || " id ")"
#define ORDER_NO_REFUND(prefix, id) "(" prefix " || 'R' || " id ")"

/* A charge claimed for sending (an intent) or for a cc_query (an open
 * outcome), leased to the claiming process. */
struct charges_claim {
	int64_t id;
	char mch_order_no[31];
	int64_t subscription_id;
	char customer_id[31]; /* the gateway's customerId: the binding of the card charged */
	int64_t amount_cents;
};
typedef void (*charges_claim_fn)(void *arg, const struct charges_claim *cl);

struct charges_lease {
	const char *owner; /* this process, as leases and logs name it */
	int seconds;       /* on the database's clock */
};

/* Where a pass's claims got to in the due order: the last due time (unix
 * microseconds) and subscription claimed; {0, 0} before the first claim. */
struct charges_cursor {
	int64_t at_us;
	int64_t sub_id;
};

/* A claim is sent (charges_claim_*_send, 0 / -1 with err) and then, once
 * its answer has come (db_ready) or waiting for it, charges_claimed calls fn
 * for each charge claimed, moves *cur past them (NULL: a claim with no
 * cursor) and returns how many, or -1 with err. Nothing else may be sent on
 * c in between (db_stmt_send).
 *
 * charges_claim_due_send claims up to limit subscriptions due at now, after
 * *cur in the due order (only subscription only_sub when it is not 0),
 * whose customer is bound and which have no open charge, and commits an
 * attempt for each, in one statement. */
int charges_claim_due_send(PGconn *c, int64_t now, int64_t only_sub, int limit,
                           const char *order_prefix, const struct charges_lease *lease,
                           const struct charges_cursor *cur, char *err, size_t errlen);
int charges_claimed(PGconn *c, struct charges_cursor *cur, charges_claim_fn fn, void *arg,
                    char *err, size_t errlen);

/* The database's time now, as text: open outcomes whose lease ran out
 * before it are claimable by charges_claim_unresolved_send. */
int charges_cutoff(PGconn *c, char *cutoff, size_t len, char *err, size_t errlen);

/* Claims (charges_claimed) up to limit subscription charges left unknown,
 * or pending past their lease (a dead process), whose lease ended before
 * cutoff; and the pending ones claimed answered_ms or more before cutoff (no
 * answer can be in flight) whose owner's lock is free (owner_lock.h: the
 * process is gone or cut off from the database). */
int charges_claim_unresolved_send(PGconn *c, const char *cutoff, int64_t answered_ms, int limit,
                                  const struct charges_lease *lease, char *err, size_t errlen);

/* An open charge this process still owns, locked with its subscription for
 * the recording of its outcome. */
struct charges_owned {
	int64_t charge_id;
	int charge_period;
	int64_t subscription_id, plan_id;
	int64_t anchor;
	int anchor_period, period, cycles_done, attempts;
	char state[12];
	int64_t next_charge_at; /* 0: none */
};
typedef int (*charges_owned_fn)(void *arg, const struct charges_owned *o, char *err, size_t errlen);
/* Locks (FOR UPDATE, inside the caller's transaction) the charges of ids (a
 * bigint array literal, db_arr_text) that are still open and leased to
 * owner, and calls fn for each (fn < 0 stops). 0 / -1 with err. */
int charges_lock_owned(PGconn *c, const char *ids, const char *owner, charges_owned_fn fn,
                       void *arg, char *err, size_t errlen);

/* Outcomes written in one statement. */
struct charges_outcomes {
	struct db_batch rows;
};
/* state: succeeded, failed or unknown (an unknown one is claimable again
 * at once); "" and status < 0 are NULL. now: the billing clock, dating a
 * settled outcome that has no attempt time. */
void charges_outcomes_add(struct charges_outcomes *o, int64_t id, const char *state,
                          const char *pay_order_id, const char *trans_id, int status,
                          const char *ret_msg, const char *pay_succ_time, int64_t now);
int charges_outcomes_write(PGconn *c, struct charges_outcomes *o, char *err, size_t errlen);
void charges_outcomes_free(struct charges_outcomes *o);

/* A payment proven by the gateway (a signed notify, or cc_query). */
struct charges_payment {
	const char *pay_order_id, *trans_id, *pay_succ_time;
	int status;
	int64_t amount_cents;
	const char *note; /* ret_msg to record; NULL keeps it */
};
enum charges_paid {
	CHARGES_PAID_ERROR = -1, /* database error (err) */
	CHARGES_PAID_RECORDED,   /* the open charge is now succeeded */
	CHARGES_PAID_ALREADY,    /* recorded before with this payOrderId: a replay */
	CHARGES_PAID_UNKNOWN,    /* no charge with this mchOrderNo */
	CHARGES_PAID_MISMATCH,   /* the amount differs from the charge's */
	CHARGES_PAID_CONFLICT,   /* failed, or succeeded with another payOrderId */
	CHARGES_PAID_DUPLICATE,  /* this payOrderId is another charge's */
	CHARGES_PAID_NOT_LINK    /* a subscription's charge: the scheduler records it */
};
/* Marks the open payment link mch_order_no succeeded with pm, dated by its
 * attempt, else by the billing clock the connection declared (db_set_now). */
enum charges_paid charges_mark_paid(PGconn *c, const char *mch_order_no,
                                    const struct charges_payment *pm, char *err, size_t errlen);

/* Marks a pending charge failed at now on the billing clock (nothing can be
 * paid: the gateway refused it, or it was never sent). 0 / -1. */
int charges_mark_failed(PGconn *c, int64_t id, const char *ret_msg, int64_t now, char *err,
                        size_t errlen);

/* Commits a pending one-off charge (a payment link) of amount cents for the
 * existing customer customer_id; fills its id and order number. 0, or -1
 * with err ("unknown customer 'x'", database). */
int charges_create_link(PGconn *c, const char *order_prefix, const char *customer_id,
                        int64_t amount, int64_t *id, char *mch_order_no, size_t len, char *err,
                        size_t errlen);

/* The latest attempt of subscription sub: its order number, state and
 * ret_msg (into err, as the reason to show). 0, or -1 with err. */
int charges_last_attempt(PGconn *c, int64_t sub, char *mch_order_no, size_t len, char *state,
                         size_t state_len, char *err, size_t errlen);

/* Subscription attempts sent (failover.c, reconcile.c add them; at: the
 * billing clock): re-inserted as unknown where the server lost them. How
 * many were, or -1 with err; one that cannot be (its subscription has
 * another open charge) is logged. */
struct charges_sent {
	struct db_batch rows;
};
void charges_sent_add(struct charges_sent *s, const char *mch_order_no, int64_t sub,
                      const char *customer_id, int64_t amount_cents, int64_t at);
int charges_restore_sent(PGconn *c, struct charges_sent *s, char *err, size_t errlen);
void charges_sent_free(struct charges_sent *s);

/* The number of the attempt k past a subscription attempt's
 * (ORDER_NO_ATTEMPT), into out. */
void charges_attempt_after(const char *mch_order_no, int k, char *out, size_t len);

#endif
