/* refunds.h: the ledger side of refunds and voids: the intent is committed
 * before the gateway call and the outcome recorded after it; an unknown
 * outcome keeps counting against the charge until cc_query resolves it. */
#ifndef REFUNDS_H
#define REFUNDS_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "gateway.h"

struct refund_row {
	int64_t id;
	char mch_refund_no[31]; /* order_prefix "R" id */
	int is_void;
	int64_t charge_id;
	char charge_pay_order_id[64]; /* the refunded charge's payOrderId */
	int64_t amount_cents;
	char state[16];        /* pending, succeeded, failed, unknown */
	char pay_order_id[64]; /* the gateway's id of the refund order ("" until known) */
	char ret_msg[256];     /* the gateway's retMsg, or why the outcome is unknown */
	int64_t created_at;    /* unix seconds */
	int resolved_earlier;  /* refunds_request: an earlier request, settled now */
};

/* Refunds amount cents (0: all that remains) of the succeeded charge with
 * pay_order_id, or voids it; first, every open refund or void of that
 * charge (unknown, or pending past REFUNDS_IN_FLIGHT_SECONDS: one in flight
 * elsewhere counts against the charge) is settled with cc_query: one that cannot be
 * settled refuses the request (-1, nothing sent), and one found made is the
 * answer (GW_SUCCESS, out is that one with resolved_earlier set, nothing
 * new sent). Otherwise it (is_void: the whole charge, only while nothing
 * is refunded) commits the intent, calls cc_refund / cc_void, records the
 * outcome and fills out; now (the billing clock) dates the request and its
 * outcome. Returns GW_SUCCESS, GW_FAIL (out->ret_msg says why) or
 * GW_UNKNOWN (left 'unknown': refunds_resolve settles it), with a line in
 * err for the last two; -1 with err when nothing was sent (no such charge,
 * "refund of N cents exceeds the M cents remaining on <payOrderId>", void
 * after a refund, refused by the client, database errors). */
int refunds_request(PGconn *c, struct gw_client *gw, const char *order_prefix,
                    const char *pay_order_id, int is_void, int64_t amount, int64_t now,
                    struct refund_row *out, char *err, size_t errlen);

/* --dry-run: checks a refund (amount, 0 for all that remains) or void of
 * pay_order_id as refunds_request would, and sets *amount to what it would
 * send; writes nothing, sends nothing. 0, or -1 with err naming why it
 * would be refused. */
int refunds_preview(PGconn *c, const char *pay_order_id, int is_void, int64_t *amount, char *err,
                    size_t errlen);

/* Settles a pending or unknown refund with cc_query by its mchRefundNo: found
 * paid -> succeeded, proven absent -> failed, else it stays
 * unknown; a settled outcome is dated by the request (else now). A pending
 * refund younger than REFUNDS_IN_FLIGHT_SECONDS may still be on its way to
 * the gateway and is left alone (-1). Returns the refund's outcome
 * (GW_SUCCESS, GW_FAIL, GW_UNKNOWN; a settled refund is returned without a
 * call) and fills out; -1 with err on errors. */
#define REFUNDS_IN_FLIGHT_SECONDS 600
int refunds_resolve(PGconn *c, struct gw_client *gw, int64_t refund_id, int64_t now,
                    struct refund_row *out, char *err, size_t errlen);

/* A billingd pass: settles up to limit open refunds and voids (each
 * refunds_resolve); *settled says how many were. Returns how many were
 * open, or -1 with err when the database fails. */
int refunds_resolve_open(PGconn *c, struct gw_client *gw, int64_t now, int limit, int *settled,
                         char *err, size_t errlen);

/* The refunds and voids of subscription sub's charges, oldest first; *out
 * malloc'd (caller frees). 0 / -1 with err. */
int refunds_of_subscription(PGconn *c, int64_t sub, struct refund_row **out, int *n, char *err,
                            size_t errlen);

/* Reads refund refund_id into out. 0 / -1 with err (also when absent). */
int refunds_get(PGconn *c, int64_t refund_id, struct refund_row *out, char *err, size_t errlen);

#endif
