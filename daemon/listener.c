/* listener.c: billingd's public HTTP listener on libmicrohttpd (http.h).
 *
 * GET /iotpay/return and POST /iotpay/notify take the gateway's signed
 * messages: anything not signed with our merchant key changes nothing; a
 * replay changes nothing either (the ledger updates are conditional).
 * Nothing else is served here: monitoring is on the admin address
 * (admin.c). Each request thread borrows a database connection from a pool
 * (db.h), reconnected when one is found down. Request sizes are checked
 * before anything is buffered beyond the limits; connections are limited
 * overall and per client address, and idle ones closed, so that slow
 * clients cannot take every slot. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "buf.h"
#include "http.h"
#include "charges.h"
#include "cards.h"
#include "customers.h"
#include "db.h"
#include "db_pool.h"
#include "gateway.h"
#include "listener.h"
#include "log.h"

#define THREADS     4
#define MAX_QUERY   4096
#define MAX_BODY    16384
#define MAX_DISCARD (1024 * 1024)
/* The gateway sends callbacks from a few addresses, a customer's browser
 * one return at a time: a client holding more than PER_IP connections is
 * not one of them. A slow client is cut off after TIMEOUT idle seconds. */
#define MAX_CONNS 4096
#define PER_IP    64
#define TIMEOUT   10

struct listener {
	struct cfg cfg;        /* a copy: the caller may reload its own */
	pthread_rwlock_t lock; /* cfg: read by requests, replaced by listener_reload */
	int64_t (*clock)(void);
	char actor[64];
	struct http_server srv; /* one connection per thread */
};

/* One HTTP request, created by the URI callback (which sees the raw query
 * string: MHD hands the handler only decoded arguments). */
struct request {
	char *query; /* raw, NULL when absent */
	int query_too_long;
	int headers_checked;
	int started;
	struct buf body; /* at most MAX_BODY */
	size_t dropped;  /* bytes of a body over MAX_BODY, read and dropped */
};

enum route { R_RETURN, R_NOTIFY, R_NONE };
static const struct {
	const char *path, *method;
} routes[] = {{"/iotpay/return", "GET"}, {"/iotpay/notify", "POST"}};

/* ---- responses ---- */

static enum MHD_Result reply_hdr(struct MHD_Connection *con, unsigned status, const char *text,
                                 const char *header, const char *value)
{
	return http_reply(con, status, text, header, value);
}

static enum MHD_Result reply(struct MHD_Connection *con, unsigned status, const char *text)
{
	return reply_hdr(con, status, text, NULL, NULL);
}

static void remote_addr(struct MHD_Connection *con, char *out, size_t len)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(con, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;

	snprintf(out, len, "?");
	if (sa && sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
		          (socklen_t)len);
	else if (sa && sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
		          out, (socklen_t)len);
}

static void log_rejected(struct MHD_Connection *con, const char *path, const char *reason,
                         const char *detail)
{
	char from[INET6_ADDRSTRLEN];

	remote_addr(con, from, sizeof(from));
	log_event("warn", "callback_rejected", "path", path, "remote", from, "reason", reason,
	          "detail", detail, (char *)NULL);
}

/* ---- GET /iotpay/return ---- */

/* A writer's call at the billing clock: the events its change writes are
 * stamped with it. */
struct clocked {
	struct listener *l;
	db_fn fn;
	void *arg;
};

static int at_clock(PGconn *c, void *arg, char *err, size_t errlen)
{
	const struct clocked *k = arg;

	if (db_set_now(c, k->l->clock ? k->l->clock() : (int64_t)time(NULL), err, errlen) < 0)
		return -1;
	return k->fn(c, k->arg, err, errlen);
}

struct enrolment_return {
	struct gw_return e;
	char token[64]; /* of the enrolment it claims to end */
};

static int record_return(PGconn *c, void *arg, char *err, size_t errlen)
{
	const struct enrolment_return *er = arg;
	const struct gw_return *e = &er->e;

	return cards_record_return(c, e->customer_id, er->token, e->success, e->card, e->card_type,
	                           e->expiry, err, errlen);
}

/* Where the customer lands after the card page: the operator's page when
 * one is configured, else a page of ours that says what happened (an empty
 * Location would leave the customer without any answer). */
static enum MHD_Result landing(struct MHD_Connection *con, int success, const char *url)
{
	if (url[0])
		return reply_hdr(con, MHD_HTTP_FOUND, "", MHD_HTTP_HEADER_LOCATION, url);
	return reply(con, MHD_HTTP_OK,
	             success ? "Thank you: your card is saved. You may close this page.\n"
	                     : "Your card was not saved. Please contact us for a new link.\n");
}

static enum MHD_Result enrol_return(struct listener *l, struct MHD_Connection *con,
                                    const char *path, const struct request *rq)
{
	char err[512], signed_part[MAX_QUERY + 1];
	struct gw_fields f;
	struct enrolment_return er;
	const struct gw_return *e = &er.e;
	int rc;

	if (rq->query)
		customers_return_token(rq->query, er.token, sizeof(er.token), signed_part,
		                       sizeof(signed_part));
	if (!rq->query ||
	    gw_fields_from_return(signed_part, l->cfg.return_url, &f, err, sizeof(err)) < 0) {
		log_rejected(con, path, "malformed", rq->query ? err : "no query string");
		return reply(con, MHD_HTTP_BAD_REQUEST, "bad request\n");
	}
	gw_return_read(&f, &er.e);
	if (!gw_fields_verify(&f, l->cfg.gateway.merchant_key)) {
		log_rejected(con, path, "bad signature", e->customer_id);
		gw_fields_free(&f);
		return reply(con, MHD_HTTP_FORBIDDEN, "forbidden\n");
	}
	if (e->success < 0) {
		log_rejected(con, path, "bad retCode", e->result);
		gw_fields_free(&f);
		return reply(con, MHD_HTTP_BAD_REQUEST, "bad request\n");
	}
	rc = db_pool_run(l->srv.pool, at_clock, &(struct clocked){l, record_return, &er}, err,
	                 sizeof(err));
	switch (rc) {
	case CUSTOMERS_CHANGED:
	case CUSTOMERS_UNCHANGED:
		log_event("info", "enrolment_return", "customer", e->customer_id, "result",
		          e->result, "replay", rc == CUSTOMERS_UNCHANGED ? "yes" : "no",
		          (char *)NULL);
		gw_fields_free(&f);
		return landing(con, e->success,
		               e->success ? l->cfg.success_url : l->cfg.failure_url);
	case CUSTOMERS_UNKNOWN:
		log_rejected(con, path, "unknown customer", e->customer_id);
		gw_fields_free(&f);
		return reply(con, MHD_HTTP_NOT_FOUND, "unknown customer\n");
	case CUSTOMERS_INVALID:
		log_rejected(con, path, "bad card fields", err);
		gw_fields_free(&f);
		return reply(con, MHD_HTTP_BAD_REQUEST, "bad request\n");
	default:
		log_event("error", "enrolment_return", "customer", e->customer_id, "error", err,
		          (char *)NULL);
		gw_fields_free(&f);
		return reply(con, MHD_HTTP_SERVICE_UNAVAILABLE, "try again later\n");
	}
}

/* ---- POST /iotpay/notify ---- */

static int record_notify(PGconn *c, void *arg, char *err, size_t errlen)
{
	const struct gw_notify *n = arg;
	struct charges_payment pm = {.pay_order_id = n->pay_order_id,
	                             .trans_id = n->trans_id,
	                             .pay_succ_time = n->pay_succ_time,
	                             .status = n->status,
	                             .amount_cents = n->amount};

	return charges_mark_paid(c, n->mch_order_no, &pm, err, errlen);
}

static enum MHD_Result answer(struct MHD_Connection *con, int ok)
{
	return reply(con, MHD_HTTP_OK, gw_notify_answer(ok));
}

/* The gateway retries until it reads SUCCESS. So SUCCESS means "recorded,
 * or nothing to record", and FAIL "not recorded": a forged message, and
 * also a genuine one we cannot record (unknown mchOrderNo, amount mismatch,
 * a charge we already settled otherwise, a database error) so that the
 * gateway keeps retrying while an operator looks at the logged error; the
 * reconciliation settles the charge with cc_query in any case. */
static enum MHD_Result notify(struct listener *l, struct MHD_Connection *con, const char *path,
                              const struct request *rq)
{
	char err[512];
	struct gw_fields f;
	struct gw_notify n;
	int rc, readable;

	if (gw_fields_from_json(rq->body.p ? rq->body.p : "", rq->body.len, &f, err, sizeof(err)) <
	    0) {
		log_rejected(con, path, "malformed", err);
		return answer(con, 0);
	}
	readable = gw_notify_read(&f, &n) == 0;
	if (!gw_fields_verify(&f, l->cfg.gateway.merchant_key) ||
	    strcmp(n.mch_id, l->cfg.gateway.mch_id) != 0) {
		log_rejected(con, path, "bad signature or mchId", n.mch_order_no);
		gw_fields_free(&f);
		return answer(con, 0);
	}
	if (!readable) {
		log_rejected(con, path, "missing or malformed field", n.mch_order_no);
		gw_fields_free(&f);
		return answer(con, 0);
	}
	if (gw_status_state(n.status) != GW_ORDER_PAID) {
		log_event("warn", "notify_not_paid", "mch_order_no", n.mch_order_no, "status",
		          n.status_text, (char *)NULL);
		gw_fields_free(&f);
		return answer(con, 1); /* nothing to record; reconciliation queries it */
	}
	rc = db_pool_run(l->srv.pool, at_clock, &(struct clocked){l, record_notify, &n}, err,
	                 sizeof(err));
	/* a subscription's charge moves its subscription: the scheduler
	 * records it (cc_query), so there is nothing to send again */
	if (rc == CHARGES_PAID_NOT_LINK)
		log_event("warn", "notify_not_link", "mch_order_no", n.mch_order_no, (char *)NULL);
	else if (rc == CHARGES_PAID_RECORDED || rc == CHARGES_PAID_ALREADY)
		log_event("info", "notify", "mch_order_no", n.mch_order_no, "pay_order_id",
		          n.pay_order_id, "replay", rc == CHARGES_PAID_ALREADY ? "yes" : "no",
		          (char *)NULL);
	else
		log_event("error", "notify_not_recorded", "mch_order_no", n.mch_order_no,
		          "pay_order_id", n.pay_order_id, "amount", n.amount_text, "reason",
		          rc == CHARGES_PAID_UNKNOWN    ? "unknown mchOrderNo"
		          : rc == CHARGES_PAID_MISMATCH ? "amount differs from the charge"
		          : rc == CHARGES_PAID_CONFLICT || rc == CHARGES_PAID_DUPLICATE
		              ? "charge already settled otherwise"
		              : err,
		          (char *)NULL);
	gw_fields_free(&f);
	return answer(con, rc == CHARGES_PAID_RECORDED || rc == CHARGES_PAID_ALREADY ||
	                       rc == CHARGES_PAID_NOT_LINK);
}

/* ---- MHD callbacks ---- */

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *con)
{
	struct request *rq = calloc(1, sizeof(*rq));
	const char *q = strchr(uri, '?');

	(void)cls;
	(void)con;
	if (rq)
		rq->body.max = MAX_BODY;
	if (rq && q) {
		if (strlen(q + 1) > MAX_QUERY)
			rq->query_too_long = 1;
		else if (!(rq->query = strdup(q + 1))) {
			free(rq);
			rq = NULL;
		}
	}
	return rq;
}

static void on_completed(void *cls, struct MHD_Connection *con, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct request *rq = *con_cls;

	(void)cls;
	(void)con;
	(void)toe;
	if (rq) {
		free(rq->query);
		buf_free(&rq->body);
		free(rq);
		*con_cls = NULL;
	}
}

/* Collects the notify body, refusing it (413) once it passes MAX_BODY: up
 * front when Content-Length says so, else at its end (MHD takes a response
 * only before or after the body), the excess read and dropped, not kept; a
 * sender that goes on past MAX_DISCARD is cut off. Returns 1 while more is
 * to come, 0 when complete, -1 when refused (*ret to return). */
static int collect_body(struct MHD_Connection *con, struct request *rq, const char *data,
                        size_t *size, enum MHD_Result *ret)
{
	const char *cl = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Content-Length");

	if (!rq->started) {
		rq->started = 1;
		if (cl && strtoull(cl, NULL, 10) > MAX_BODY) {
			*ret = reply(con, MHD_HTTP_CONTENT_TOO_LARGE, "body too large\n");
			return -1;
		}
		return 1;
	}
	if (*size == 0 && rq->dropped) {
		*ret = reply(con, MHD_HTTP_CONTENT_TOO_LARGE, "body too large\n");
		return -1;
	}
	if (*size == 0)
		return 0;
	if (!rq->dropped && buf_add(&rq->body, data, *size) == 0) {
		*size = 0;
		return 1;
	}
	if (rq->body.nomem) {
		*ret = MHD_NO;
		return -1;
	}
	rq->dropped += rq->body.len + *size;
	buf_free(&rq->body);
	*size = 0;
	*ret = MHD_NO;
	return rq->dropped > MAX_DISCARD ? -1 : 1;
}

static enum MHD_Result count_content_length(void *cls, enum MHD_ValueKind kind, const char *key,
                                            const char *value)
{
	(void)kind;
	(void)value;
	*(int *)cls += strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0;
	return MHD_YES;
}

/* More than one Content-Length: a proxy in front may frame the body by
 * another one than we do (request smuggling). */
static int smuggling(struct MHD_Connection *con)
{
	int n = 0;

	MHD_get_connection_values(con, MHD_HEADER_KIND, count_content_length, &n);
	return n > 1;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *con, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *size, void **con_cls)
{
	struct listener *l = cls;
	struct request *rq = *con_cls;
	enum MHD_Result ret = MHD_NO;
	int r;

	(void)version;
	if (!rq)
		return reply(con, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	if (!rq->headers_checked) {
		rq->headers_checked = 1;
		if (smuggling(con))
			return reply_hdr(con, MHD_HTTP_BAD_REQUEST, "duplicate Content-Length\n",
			                 MHD_HTTP_HEADER_CONNECTION, "close");
	}
	if (rq->query_too_long)
		return reply(con, MHD_HTTP_URI_TOO_LONG, "query string too long\n");
	for (r = 0; r < R_NONE && strcmp(url, routes[r].path) != 0; r++)
		;
	if (r == R_NONE)
		return reply(con, MHD_HTTP_NOT_FOUND, "not found\n");
	if (strcmp(method, routes[r].method) != 0)
		return reply_hdr(con, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n",
		                 MHD_HTTP_HEADER_ALLOW, routes[r].method);
	if (r == R_NOTIFY)
		switch (collect_body(con, rq, data, size, &ret)) {
		case 1:
			return MHD_YES;
		case -1:
			return ret;
		}
	/* the key and URLs as of now: a reload waits for this request */
	pthread_rwlock_rdlock(&l->lock);
	ret = r == R_RETURN ? enrol_return(l, con, url, rq) : notify(l, con, url, rq);
	pthread_rwlock_unlock(&l->lock);
	return ret;
}

/* ---- start / stop ---- */

struct listener *listener_start(const struct cfg *c, int64_t (*clock)(void), char *err,
                                size_t errlen)
{
	static const struct http_limits lim = {THREADS, MAX_CONNS, PER_IP, TIMEOUT};
	struct http_site site = {.setting = "listen.address",
	                         .address = c->listen_address,
	                         .event = "listening",
	                         .lim = &lim,
	                         .handler = on_request,
	                         .uri = on_uri,
	                         .done = on_completed,
	                         .db_url = c->database_url,
	                         .db_conns = THREADS};
	struct listener *l = calloc(1, sizeof(*l));
	pthread_rwlockattr_t attr;

	if (!l) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	l->cfg = *c;
	l->clock = clock;
	/* a reload waits for requests in progress, not for a stream of them */
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&l->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	snprintf(l->actor, sizeof(l->actor), "billingd-listener:%ld", (long)getpid());
	site.actor = l->actor;
	if (http_server_start(&l->srv, &site, l, err, errlen) < 0) {
		listener_stop(l);
		return NULL;
	}
	return l;
}

void listener_reload(struct listener *l, const struct cfg *c)
{
	char address[CFG_STR];

	pthread_rwlock_wrlock(&l->lock);
	/* where it listens and its database stay: they need a restart */
	memcpy(address, l->cfg.listen_address, sizeof(address));
	explicit_bzero(l->cfg.gateway.merchant_key, sizeof(l->cfg.gateway.merchant_key));
	l->cfg = *c;
	memcpy(l->cfg.listen_address, address, sizeof(address));
	pthread_rwlock_unlock(&l->lock);
}

int listener_port(const struct listener *l)
{
	return l->srv.port;
}

void listener_stop(struct listener *l)
{
	if (!l)
		return;
	http_server_stop(&l->srv);
	pthread_rwlock_destroy(&l->lock);
	explicit_bzero(l->cfg.gateway.merchant_key, sizeof(l->cfg.gateway.merchant_key));
	free(l);
}
