/* cards.h: card replacement (card_updates) and the card in use. The gateway
 * binds one card per customerId, so a bound customer's new card is bound
 * under a binding id derived from its own (alice~2, alice~3, ...). Charges
 * go to the binding in use (customers.binding_id); the switch to a new one
 * happens only once it is bound (its card page's return, or cc_isbinding),
 * in one transaction with its customer.bound event and audit row. A
 * replacement that fails or expires leaves the old card in use. */
#ifndef CARDS_H
#define CARDS_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "config.h"
#include "customers.h"
#include "gateway.h"

struct cards_update {
	char customer_id[31];
	char binding_id[31]; /* the gateway's customerId of the new card */
	char state[16];      /* pending, bound, failed */
	char pay_url[1024];  /* "" when none was handed out */
	int64_t requested_at, expires_at;
};

/* `billctl customer update-card`: a new card page for the bound customer
 * id, under the next derived binding id; out describes it. With dry_run
 * nothing is written or sent (out says what would be). -1 with err: an
 * unknown customer, one with no card bound (enrolment is for those), one
 * with a replacement pending, a database or gateway error (a page the
 * gateway did not give us is dropped: the current card stays in use). */
int cards_request(PGconn *c, struct gw_client *gw, const struct cfg *cfg, const char *id,
                  int64_t now, int dry_run, struct cards_update *out, char *err, size_t errlen);

/* The customer's pending replacement: 1 (out filled), 0 when none, -1. */
int cards_pending(PGconn *c, const char *id, struct cards_update *out, char *err, size_t errlen);

/* A card page's return for gateway id gwid: a card update's (a derived id)
 * switches the card in use when it carries that update's token (once: a
 * replay, or an older page's return, changes nothing); a failure marks it
 * failed, keeping the token and the old card. Any other id is an
 * enrolment's (customers_record_return). */
enum customers_outcome cards_record_return(PGconn *c, const char *gwid, const char *token,
                                           int success, const char *card, const char *type,
                                           const char *expiry, char *err, size_t errlen);

/* cc_isbinding's outcome for gateway id gwid at now: a pending card
 * update's is bound (the switch, the card's details unknown) or, past its
 * expiry, failed by a not-bound answer; a customer's binding in use follows
 * customers_record_binding. An id that no longer names either (the card in
 * use moved on since the claim) changes nothing. 0 / -1 with err. */
int cards_record_binding(PGconn *c, const char *gwid, enum gw_outcome outcome, int64_t now,
                         struct customers_binding *out, char *err, size_t errlen);

/* billingd's follow-up: customers_claim_checks, then the pending card
 * updates whose check is due (the same backoff), up to limit gateway ids in
 * all. Returns how many, or -1. */
int cards_claim_checks(PGconn *c, int64_t now, int limit, char (*ids)[31], char *err,
                       size_t errlen);

/* customers_due_final_checks, and pending card updates past their expiry
 * are due for a check at now (only a not-bound answer fails them). */
int cards_due_final_checks(PGconn *c, int64_t now, char *err, size_t errlen);

#endif
