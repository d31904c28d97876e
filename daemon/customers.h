/* customers.h: the customers table's one owner: enrolment (cc_adduser), the
 * card a customer bound, the binding state (pending, bound, failed,
 * unbound) and its follow-up with cc_isbinding, one rule for billctl and
 * billingd. */
#ifndef CUSTOMERS_H
#define CUSTOMERS_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "config.h"
#include "gateway.h"

struct customer {
	char id[31];
	char email[128];
	char name[128];
	char state[16];
	char card_masked[32]; /* 450116XXXXXX7214; "" when none */
	char card_type[8];
	char card_expiry[5];                                 /* MMYY */
	int64_t enrol_expires_at, next_check_at, created_at; /* 0 when NULL */
	char binding_id[31]; /* the gateway's customerId of the card in use (cards.h) */
};

/* A customer's binding state, indexed like customers_states. */
enum customers_state { CUSTOMERS_PENDING, CUSTOMERS_BOUND, CUSTOMERS_FAILED, CUSTOMERS_UNBOUND };
#define CUSTOMERS_NSTATES 4
/* "pending", "bound", "failed", "unbound": customers.state */
extern const char *const customers_states[CUSTOMERS_NSTATES];

/* New customer, or re-enrolment of one not bound: upserts it as pending
 * (enrolment expires in cfg->enrolment_expiry_hours, binding follow-up in 5
 * minutes), then calls cc_adduser with returnUrl = cfg->return_url carrying
 * customerId=<id>, and copies the hosted card page's URL into pay_url.
 * -1 with err for a bad id, a bound customer, a database or gateway error. */
int customers_enrol(PGconn *c, struct gw_client *gw, const struct cfg *cfg, const char *id,
                    const char *email, const char *name, int64_t now, char *pay_url, size_t url_len,
                    char *err, size_t errlen);

/* cfg->return_url with customerId=<id> (a customer's, or a card update's
 * binding id) and the enrolment's token appended (they need no escaping);
 * -1 with err when unset or longer than the gateway takes. */
int customers_return_url(const struct cfg *cfg, const char *id, const char *token, char *out,
                         size_t len, char *err, size_t errlen);

/* The gateway masks the card number (450116XXXXXX7214); anything that could
 * be a full card number is refused rather than stored. 0, or -1 with err
 * (also for a bad type or MMYY expiry). */
int customers_valid_card(const char *card, const char *type, const char *expiry, char *err,
                         size_t errlen);

/* 0, or -1 with err ("unknown customer 'X'" or a database error). */
int customers_get(PGconn *c, const char *id, struct customer *out, char *err, size_t errlen);

/* All customers by id (expiring_days < 0), or the bound ones whose card
 * expires (end of its MMYY month, UTC) within expiring_days of now, expired
 * cards included. *out is malloc'd (caller frees), *n its length. 0 / -1. */
int customers_list(PGconn *c, int expiring_days, int64_t now, struct customer **out, int *n,
                   char *err, size_t errlen);

enum customers_outcome {
	CUSTOMERS_ERROR = -1,    /* database error (err) */
	CUSTOMERS_CHANGED = 0,   /* recorded */
	CUSTOMERS_UNCHANGED = 1, /* already so (a replay), or a stale failure after binding */
	CUSTOMERS_UNKNOWN = 2,   /* no such customer (err) */
	CUSTOMERS_INVALID = 3    /* malformed card fields (err) */
};

/* The return URL's query split: the enrolment's token (our own pair in the
 * returnUrl, "" when absent) into token, the other pairs (the gateway's
 * signed fields) joined with '&' into rest. */
void customers_return_token(const char *query, char *token, size_t tlen, char *rest, size_t rlen);

/* The gateway's verdict on an enrolment (its signed return), taken only
 * with the token of the customer's current enrolment. Success binds the
 * card (masked number, type, MMYY expiry; an unmasked number is refused)
 * and spends the token: accepted once, never for a bound customer, so an
 * old return can neither re-bind nor move the card back. Failure marks a
 * pending enrolment failed and never undoes a binding. A replay, or a
 * return of another enrolment, writes nothing (CUSTOMERS_UNCHANGED). */
enum customers_outcome customers_record_return(PGconn *c, const char *id, const char *token,
                                               int success, const char *card, const char *type,
                                               const char *expiry, char *err, size_t errlen);

/* Sets the state (one of customers_states); -1 with err for an unknown
 * customer or state. */
int customers_set_state(PGconn *c, const char *id, const char *state, char *err, size_t errlen);

/* The binding rule, for `billctl customer check` and billingd's follow-up:
 * a bound answer binds a pending customer (and ends the follow-up of a
 * bound one); a not-bound answer unbinds a bound customer and fails a
 * pending enrolment past its expiry (never before: the customer may still be
 * on the card page, and never without that answer: a completed card page
 * whose return was lost is bound by it); anything else changes nothing. */
struct customers_binding {
	enum gw_outcome outcome; /* cc_isbinding's */
	char was[16];            /* state before */
	char state[16];          /* state after */
	char detail[256];        /* why the outcome is not definite */
};
/* Applies cc_isbinding's outcome for customer id at now (the billing clock)
 * and fills out (was, state, outcome). 0, or -1 with err (unknown customer,
 * database). */
int customers_record_binding(PGconn *c, const char *id, enum gw_outcome outcome, int64_t now,
                             struct customers_binding *out, char *err, size_t errlen);
/* cc_isbinding, then customers_record_binding. 0 with out filled (whatever
 * the gateway said), or -1 with err. */
int customers_check_binding(PGconn *c, struct gw_client *gw, const char *id, int64_t now,
                            struct customers_binding *out, char *err, size_t errlen);

/* billingd's follow-up: pending enrolments past their expiry are due for a
 * check at now (each pass until cc_isbinding answers: only its not-bound
 * answer fails them). 0 / -1. */
int customers_due_final_checks(PGconn *c, int64_t now, char *err, size_t errlen);

/* Claims up to limit customers whose check is due at now (pending, or bound
 * and flagged), pushing their next check out (from 5 minutes, doubling, at
 * most 6 hours) so that other daemons skip them; the gateway's customerId
 * of each (its binding id) into ids. Returns how many, or -1. */
int customers_claim_checks(PGconn *c, int64_t now, int limit, char (*ids)[31], char *err,
                           size_t errlen);

/* Flags bound customers (ids: a text array literal, db_arr_text, of
 * customer or binding ids) for a binding check at now: a charge was
 * declined for a binding reason. */
int customers_flag_recheck(PGconn *c, const char *ids, int64_t now, char *err, size_t errlen);

struct customers_counts {
	long state[CUSTOMERS_NSTATES]; /* indexed like customers_states */
	long expiring;                 /* as customers_list(expiring_days) counts them */
};
int customers_count(PGconn *c, int expiring_days, int64_t now, struct customers_counts *out,
                    char *err, size_t errlen);

#endif
