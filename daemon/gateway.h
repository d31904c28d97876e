/* gateway.h: client for the IOTPay Credit Card API V2 (every endpoint), with
 * a three-way outcome, and verification of the signed messages it sends us. */
#ifndef GATEWAY_H
#define GATEWAY_H

#include <stddef.h>
#include "config.h"
#include "sign.h"

/* The only currency the gateway takes. */
#define GW_CURRENCY "CAD"

enum gw_outcome {
	GW_INVALID = -1, /* refused before sending: nothing left this process */
	GW_SUCCESS = 0,  /* definite success (query: order found; isbinding: bound) */
	GW_FAIL = 1,     /* definite failure (query: order proven absent; isbinding: not bound) */
	GW_UNKNOWN = 2   /* may or may not have happened: resolve with cc_query */
};

enum gw_call {
	GW_PURCHASE,       /* cc_purchase: hosted one-off payment page (payUrl) */
	GW_ADDUSER,        /* cc_adduser: hosted card enrolment page (payUrl) */
	GW_PURCHASE_TOKEN, /* cc_purchasewithtoken */
	GW_REFUND,         /* cc_refund */
	GW_VOID,           /* cc_void */
	GW_QUERY,          /* cc_query by mch_order_no or pay_order_id */
	GW_ISBINDING       /* cc_isbinding */
};

/* mchId, jobNo/loginName and currency (CAD) come from the client's config.
 * Empty strings count as absent; fields the call does not take are ignored. */
struct gw_request {
	enum gw_call call;
	const char *mch_order_no;  /* purchase, purchase_token, query */
	const char *customer_id;   /* purchase, adduser, purchase_token, isbinding */
	long amount;               /* cents: purchase, purchase_token, refund */
	const char *subject;       /* optional: purchase, purchase_token */
	const char *body;          /* optional: purchase, purchase_token */
	const char *notify_url;    /* purchase */
	const char *return_url;    /* purchase, adduser */
	const char *mch_refund_no; /* refund, void */
	const char *pay_order_id;  /* refund, void, query */
};

struct gw_order {
	char pay_order_id[64];
	char mch_order_no[64];
	char trans_id[64];
	char pay_succ_time[64];
	char original_order_id[64];
	char pay_type[16];
	int status;  /* -1 when absent; gw_order_state says what it means */
	long amount; /* -1 when absent */
};

/* Why the gateway said FAIL, classified from its retMsg here only. A FAIL
 * that is no answer (cc_query, cc_isbinding) is GW_UNKNOWN, and keeps
 * GW_R_BUSY or GW_R_AUTH when the gateway did not process it. */
enum gw_reason {
	GW_R_NONE,      /* not a FAIL */
	GW_R_DECLINED,  /* the card or the customer's bank said no */
	GW_R_NOT_BOUND, /* the customer has no card bound */
	GW_R_BUSY,      /* the gateway was busy: not processed */
	GW_R_AUTH,      /* our signature or merchant id was refused: not processed */
	GW_R_INVALID,   /* the gateway refused the request itself (a missing field) */
	GW_R_NOT_FOUND, /* no such order */
	/* A FAIL in words we do not know: taken as a decline of its customer,
	 * unless many customers get the same one (wave.h). */
	GW_R_UNFAMILIAR
};

struct gw_result {
	enum gw_outcome outcome;
	enum gw_reason reason;
	char ret_msg[256];  /* the gateway's retMsg */
	char pay_url[1024]; /* purchase, adduser */
	int has_order;
	struct gw_order order;
	char detail[256]; /* one line: why INVALID or UNKNOWN */
	long http_status; /* 0 when no response */
	double seconds;   /* time taken */
};

struct gw_client;
struct gw_multi;

/* The client keeps the merchant key and a pool of keep-alive connections.
 * Free every gw_multi made from a client before the client. */
struct gw_client *gw_client_new(const struct cfg_gateway *gc, char *err, size_t errlen);
void gw_client_free(struct gw_client *c);

/* Synchronous call (the same code path as gw_multi with one request). */
enum gw_outcome gw_call(struct gw_client *c, const struct gw_request *req, struct gw_result *res);

/* Asynchronous calls: one thread keeps up to max_in_flight requests going.
 *
 * Threads: a gw_multi belongs to one thread; several threads may each own a
 * gw_multi made from the same client (the client is only read by them), but
 * gw_call uses the client's own internal multi, so gw_call must not run in
 * two threads at once on one client. */
typedef void (*gw_done_fn)(void *udata, const struct gw_result *res);
struct gw_multi *gw_multi_new(struct gw_client *c, int max_in_flight);
void gw_multi_free(struct gw_multi *m);
/* Validates, signs and queues req (its strings are copied). Returns GW_INVALID
 * with res->detail filled (res may be NULL) when refused (done is not called),
 * else 0; done then gets the result, valid only during the call. */
int gw_multi_submit(struct gw_multi *m, const struct gw_request *req, gw_done_fn done, void *udata,
                    struct gw_result *res);
/* Requests submitted and not yet completed. */
int gw_multi_pending(const struct gw_multi *m);
/* Drives transfers for up to timeout_ms, calling done for each completed
 * request; returns how many completed, -1 on an internal error. Returns as
 * soon as at least one request completed (or nothing is pending), so that the
 * caller sees results promptly; done may submit further requests. Requests
 * still pending at gw_multi_free are abandoned without calling done. */
int gw_multi_run(struct gw_multi *m, int timeout_ms);
/* gw_multi_run that also returns when fd (-1: none) is readable, and waits
 * on it when nothing is pending: a thread's other work (the pump's claim
 * on its database connection) goes on while requests travel. */
int gw_multi_wait(struct gw_multi *m, int timeout_ms, int fd);

/* Classifies one gateway response to req (exposed for unit tests; gw_call
 * and gw_multi use it): fills res (outcome, retMsg, payUrl, order, detail)
 * from the HTTP status and body. */
enum gw_outcome gw_classify(const struct gw_request *req, long http_status, const char *body,
                            size_t len, struct gw_result *res);

/* Signed messages from the gateway (notify POST body, returnUrl query). */
#define GW_MAX_FIELDS 32
#define GW_MAX_INPUT  8192 /* longer messages are refused unparsed */
struct gw_fields {
	int n;
	struct sign_kv kv[GW_MAX_FIELDS];
	char *buf; /* owns the strings */
};
/* Parse "a=1&b=2" (URL-decoded) or a flat JSON object into f. 0 / -1
 * (malformed, too many fields). Free with gw_fields_free. */
int gw_fields_from_query(const char *qs, struct gw_fields *f, char *err, size_t errlen);
/* The signed fields of the card page's return: raw is its query string,
 * return_url the returnUrl we sent (its own query's pairs are dropped). */
int gw_fields_from_return(const char *raw, const char *return_url, struct gw_fields *f, char *err,
                          size_t errlen);
int gw_fields_from_json(const char *body, size_t len, struct gw_fields *f, char *err,
                        size_t errlen);
void gw_fields_free(struct gw_fields *f);
const char *gw_fields_get(const struct gw_fields *f, const char *key); /* NULL if absent */
/* 1 when f carries a "sign" field that matches the other fields. */
int gw_fields_verify(const struct gw_fields *f, const char *merchant_key);

/* The card page's signed return (returnUrl), read: strings "" when absent. */
struct gw_return {
	const char *customer_id, *card, *card_type, *expiry;
	const char *result; /* as sent, for logs */
	int success;        /* 1 bound, 0 failed, -1 neither (malformed) */
};
void gw_return_read(const struct gw_fields *f, struct gw_return *out);

/* A payment notification (notifyUrl), read: strings "" when absent. */
struct gw_notify {
	const char *mch_id, *mch_order_no, *pay_order_id, *trans_id, *pay_succ_time;
	const char *status_text, *amount_text; /* as sent, for logs */
	int status;
	long long amount;
};
/* 0, or -1 when a field we need is missing or malformed (also a currency
 * other than CAD); out is filled either way. */
int gw_notify_read(const struct gw_fields *f, struct gw_notify *out);
/* The body that tells the gateway a notify was taken (ok) or is to be sent
 * again. */
const char *gw_notify_answer(int ok);

const char *gw_outcome_name(enum gw_outcome o); /* "success", "fail", ... */
/* "declined", "auth", ...: a reason's name in logs and metrics. */
const char *gw_reason_name(enum gw_reason r);
/* When res is an authentication refusal (GW_R_AUTH): 1 with one line in err
 * naming what was refused (mch_id or the merchant key, never the key
 * itself); else 0. */
int gw_auth_error(const struct gw_result *res, char *err, size_t errlen);
/* Proves gateway.mch_id and the merchant key with one signed cc_query of an
 * order number that cannot exist: GW_SUCCESS when the gateway answers that
 * it does not exist (both accepted); GW_FAIL when it refuses either (err as
 * gw_auth_error); GW_UNKNOWN when nothing was proven (unreachable, another
 * answer; err says why). */
enum gw_outcome gw_prove(struct gw_client *c, char *err, size_t errlen);

/* What an order's status number means. */
enum gw_order_state {
	GW_ORDER_OPEN,  /* created or paying (or no status): not final yet */
	GW_ORDER_PAID,  /* the money moved */
	GW_ORDER_FAILED /* final without payment */
};
enum gw_order_state gw_status_state(int status);
/* 1 when o is paid. */
int gw_order_paid(const struct gw_order *o);
/* Whether the gateway's order o agrees with a charge we hold succeeded:
 * paid, or, once we voided or fully refunded it (reversed), any status: the
 * API defines none for a reversed payment, and gateways differ (some keep it
 * paid, some report another number). */
int gw_order_holds_charge(const struct gw_order *o, int reversed);

#endif
