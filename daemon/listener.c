/* listener.c: billingd's HTTP listener on libmicrohttpd.
 *
 * GET /iotpay/return and POST /iotpay/notify take the gateway's signed
 * messages: anything not signed with our merchant key changes nothing; a
 * replay changes nothing either (the ledger updates are conditional). GET
 * /healthz and GET /metrics serve monitoring. MHD runs a small thread pool
 * (epoll where available); each request thread borrows a database connection
 * from a mutex-guarded pool, reconnecting when one is found down. Request
 * sizes are checked before anything is buffered beyond the limits. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "customers.h"
#include "db.h"
#include "gateway.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"

#define THREADS     4
#define MAX_QUERY   4096
#define MAX_BODY    16384
#define MAX_DISCARD (1024 * 1024)
#define MAX_CONNS   4096
#define MAX_PARAMS  64

struct listener {
	struct cfg cfg; /* a copy: the caller may reload its own */
	int64_t (*clock)(void);
	struct MHD_Daemon *d;
	struct sockaddr_storage addr;
	int port;
	char actor[64];
	pthread_mutex_t mu;
	pthread_cond_t freed;
	PGconn *db[THREADS];
	int busy[THREADS];
};

/* One HTTP request, created by the URI callback (which sees the raw query
 * string: MHD hands the handler only decoded arguments). */
struct request {
	char *query; /* raw, NULL when absent */
	int query_too_long;
	int started;
	char *body;
	size_t body_len;
	size_t dropped; /* bytes of a body over MAX_BODY, read and dropped */
};

enum route { R_RETURN, R_NOTIFY, R_HEALTHZ, R_METRICS, R_NONE };
static const struct {
	const char *path, *method;
} routes[] = {{"/iotpay/return", "GET"},
              {"/iotpay/notify", "POST"},
              {"/healthz", "GET"},
              {"/metrics", "GET"}};

/* ---- responses ---- */

static enum MHD_Result send_body(struct MHD_Connection *con, unsigned status, char *body,
                                 size_t len, enum MHD_ResponseMemoryMode mode, const char *ctype,
                                 const char *header, const char *value)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) != MHD_YES ||
	    (header && MHD_add_response_header(r, header, value) != MHD_YES)) {
		MHD_destroy_response(r);
		return MHD_NO;
	}
	ret = MHD_queue_response(con, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result reply_hdr(struct MHD_Connection *con, unsigned status, const char *text,
                                 const char *header, const char *value)
{
	return send_body(con, status, (char *)text, strlen(text), MHD_RESPMEM_MUST_COPY,
	                 "text/plain; charset=utf-8", header, value);
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

/* ---- the database pool ---- */

typedef int (*db_fn)(PGconn *c, void *arg, char *err, size_t errlen);

/* Runs fn (which returns < 0 on a database error) on a pooled connection,
 * connecting first when needed. When fn fails because the connection was
 * down (the database restarted), it is run once more on a new one: every
 * fn here is idempotent. */
static int with_db(struct listener *l, db_fn fn, void *arg, char *err, size_t errlen)
{
	int slot, tries, rc = -1;

	pthread_mutex_lock(&l->mu);
	for (;;) {
		for (slot = 0; slot < THREADS && l->busy[slot]; slot++)
			;
		if (slot < THREADS)
			break;
		pthread_cond_wait(&l->freed, &l->mu);
	}
	l->busy[slot] = 1;
	pthread_mutex_unlock(&l->mu);

	for (tries = 0; tries < 2; tries++) {
		if (db_is_down(l->db[slot])) {
			PQfinish(l->db[slot]);
			l->db[slot] = db_connect(l->cfg.database_url, l->actor, err, errlen);
			if (!l->db[slot])
				break;
		}
		rc = db_set_now(l->db[slot], l->clock ? l->clock() : (int64_t)time(NULL), err,
		                errlen);
		if (rc >= 0)
			rc = fn(l->db[slot], arg, err, errlen);
		if (rc >= 0 || !db_is_down(l->db[slot]))
			break;
	}

	pthread_mutex_lock(&l->mu);
	l->busy[slot] = 0;
	pthread_cond_signal(&l->freed);
	pthread_mutex_unlock(&l->mu);
	return rc;
}

/* ---- GET /healthz, GET /metrics ---- */

static int check_schema(PGconn *c, void *arg, char *err, size_t errlen)
{
	(void)arg;
	return migrate_check(c, migrate_embedded, migrate_embedded_count, err, errlen);
}

static enum MHD_Result healthz(struct listener *l, struct MHD_Connection *con)
{
	char err[512], line[520];

	if (with_db(l, check_schema, NULL, err, sizeof(err)) == 0)
		return reply(con, MHD_HTTP_OK, "ok\n");
	snprintf(line, sizeof(line), "%s\n", err);
	return reply(con, MHD_HTTP_SERVICE_UNAVAILABLE, line);
}

struct render {
	struct listener *l;
	char *out;
};

static int render(PGconn *c, void *arg, char *err, size_t errlen)
{
	struct render *r = arg;

	return metrics_render(c, r->l->clock ? r->l->clock() : (int64_t)time(NULL), &r->out, err,
	                      errlen);
}

static enum MHD_Result metrics(struct listener *l, struct MHD_Connection *con)
{
	struct render r = {.l = l};
	char err[512];

	/* Without the database the process's own metrics are still served,
	 * with billing_database_up 0. */
	if (with_db(l, render, &r, err, sizeof(err)) < 0) {
		log_event("warn", "metrics_database", "error", err, (char *)NULL);
		if (render(NULL, &r, err, sizeof(err)) < 0)
			return reply(con, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	}
	return send_body(con, MHD_HTTP_OK, r.out, strlen(r.out), MHD_RESPMEM_MUST_FREE,
	                 "text/plain; version=0.0.4; charset=utf-8", NULL, NULL);
}

/* ---- GET /iotpay/return ---- */

/* Appends the '&'- or '?'-separated pairs of s not seen yet to seg[0..*n). */
static int add_pairs(const char *s, const char **seg, size_t *seglen, int *n)
{
	while (*s) {
		size_t k = strcspn(s, "&?");
		int i;

		for (i = 0; i < *n && (seglen[i] != k || memcmp(seg[i], s, k) != 0); i++)
			;
		if (k && i == *n) {
			if (*n == MAX_PARAMS)
				return -1;
			seg[*n] = s;
			seglen[(*n)++] = k;
		}
		s += k + (s[k] != '\0');
	}
	return 0;
}

/* The gateway's signed fields out of the return's query string. The
 * returnUrl we gave cc_adduser is enrolment.return_url (which may have a
 * query of its own) plus customerId=<id>, and the gateway appends its signed
 * fields (customerId again) with '&', or with a second '?'. So '?' separates
 * too (the gateway's values never hold one unescaped), the pairs of
 * return_url's own query are dropped, and so are exact repeats; any other
 * extra or altered pair still fails the signature. */
static int signed_query(const struct listener *l, const char *raw, char *out, size_t len)
{
	const char *seg[MAX_PARAMS], *ours = strchr(l->cfg.return_url, '?');
	size_t seglen[MAX_PARAMS], at = 0;
	int n = 0, first, i;

	if (ours && add_pairs(ours + 1, seg, seglen, &n) < 0)
		return -1;
	first = n;
	if (add_pairs(raw, seg, seglen, &n) < 0)
		return -1;
	for (i = first; i < n; i++) {
		if (at + seglen[i] + 2 > len)
			return -1;
		if (i > first)
			out[at++] = '&';
		memcpy(out + at, seg[i], seglen[i]);
		at += seglen[i];
	}
	out[at] = '\0';
	return 0;
}

struct enrolment {
	const char *id, *card, *type, *expiry;
	int success;
};

static int record_return(PGconn *c, void *arg, char *err, size_t errlen)
{
	const struct enrolment *e = arg;

	return customers_record_return(c, e->id, e->success, e->card, e->type, e->expiry, err,
	                               errlen);
}

static const char *field(const struct gw_fields *f, const char *key)
{
	const char *v = gw_fields_get(f, key);
	return v ? v : "";
}

static enum MHD_Result enrol_return(struct listener *l, struct MHD_Connection *con,
                                    const struct request *rq)
{
	static const char *const path = "/iotpay/return";
	char q[MAX_QUERY + 1], err[512];
	struct gw_fields f;
	struct enrolment e;
	const char *code;
	int rc;

	if (!rq->query || signed_query(l, rq->query, q, sizeof(q)) < 0 ||
	    gw_fields_from_query(q, &f, err, sizeof(err)) < 0) {
		log_rejected(con, path, "malformed", rq->query ? err : "no query string");
		return reply(con, MHD_HTTP_BAD_REQUEST, "bad request\n");
	}
	if (!gw_fields_verify(&f, l->cfg.gateway.merchant_key)) {
		log_rejected(con, path, "bad signature", field(&f, "customerId"));
		gw_fields_free(&f);
		return reply(con, MHD_HTTP_FORBIDDEN, "forbidden\n");
	}
	code = field(&f, "retCode");
	e = (struct enrolment){.id = field(&f, "customerId"),
	                       .card = field(&f, "cardNumber"),
	                       .type = field(&f, "cardType"),
	                       .expiry = field(&f, "expirationDate"),
	                       .success = strcmp(code, "SUCCESS") == 0};
	if (!e.success && strcmp(code, "FAIL") != 0) {
		log_rejected(con, path, "bad retCode", code);
		gw_fields_free(&f);
		return reply(con, MHD_HTTP_BAD_REQUEST, "bad request\n");
	}
	rc = with_db(l, record_return, &e, err, sizeof(err));
	switch (rc) {
	case CUSTOMERS_CHANGED:
	case CUSTOMERS_UNCHANGED:
		log_event("info", "enrolment_return", "customer", e.id, "result", code, "replay",
		          rc == CUSTOMERS_UNCHANGED ? "yes" : "no", (char *)NULL);
		gw_fields_free(&f);
		return reply_hdr(con, MHD_HTTP_FOUND, "", MHD_HTTP_HEADER_LOCATION,
		                 e.success ? l->cfg.success_url : l->cfg.failure_url);
	case CUSTOMERS_UNKNOWN:
		log_rejected(con, path, "unknown customer", e.id);
		gw_fields_free(&f);
		return reply(con, MHD_HTTP_NOT_FOUND, "unknown customer\n");
	case CUSTOMERS_INVALID:
		log_rejected(con, path, "bad card fields", err);
		gw_fields_free(&f);
		return reply(con, MHD_HTTP_BAD_REQUEST, "bad request\n");
	default:
		log_event("error", "enrolment_return", "customer", e.id, "error", err,
		          (char *)NULL);
		gw_fields_free(&f);
		return reply(con, MHD_HTTP_SERVICE_UNAVAILABLE, "try again later\n");
	}
}

/* ---- POST /iotpay/notify ---- */

enum notify_outcome {
	N_ERROR = -1,
	N_RECORDED,
	N_ALREADY,  /* this payOrderId was recorded before: a replay */
	N_UNKNOWN,  /* no charge with this mchOrderNo */
	N_MISMATCH, /* the amount differs from the charge's */
	N_CONFLICT  /* failed, or succeeded with another payOrderId */
};

struct notify {
	const char *mch_order_no, *pay_order_id, *trans_id, *status, *pay_succ_time, *amount;
};

static int record_notify(PGconn *c, void *arg, char *err, size_t errlen)
{
	const struct notify *n = arg;
	const char *p[6] = {n->mch_order_no, n->pay_order_id,  n->trans_id,
	                    n->status,       n->pay_succ_time, n->amount};
	PGresult *r;
	int rc;

	/* Any kind of charge: notifies come for cc_purchase (one-off pay links),
	 * but a payment is recorded wherever its mchOrderNo is ours. */
	r = db_query(c,
	             "UPDATE charges SET state = 'succeeded', pay_order_id = $2, "
	             "trans_id = nullif($3, ''), gateway_status = $4::int, "
	             "pay_succ_time = nullif($5, ''), lease_owner = NULL, lease_expires_at = NULL "
	             "WHERE mch_order_no = $1 AND state IN ('pending', 'unknown') "
	             "AND amount_cents = $6::bigint RETURNING id",
	             6, p, err, errlen);
	if (!r)
		return strcmp(db_last_sqlstate(), "23505") == 0 ? N_CONFLICT : N_ERROR;
	rc = PQntuples(r);
	PQclear(r);
	if (rc)
		return N_RECORDED;
	r = db_query(c,
	             "SELECT state = 'succeeded' AND pay_order_id = $2, amount_cents = $3::bigint "
	             "FROM charges WHERE mch_order_no = $1",
	             3, (const char *const[]){n->mch_order_no, n->pay_order_id, n->amount}, err,
	             errlen);
	if (!r)
		return N_ERROR;
	rc = PQntuples(r) == 0                   ? N_UNKNOWN
	     : strcmp(db_str(r, 0, 0), "t") == 0 ? N_ALREADY
	     : strcmp(db_str(r, 0, 1), "t") != 0 ? N_MISMATCH
	                                         : N_CONFLICT;
	PQclear(r);
	return rc;
}

static int is_int(const char *s)
{
	char *end;

	if (!*s)
		return 0;
	errno = 0;
	(void)strtoll(s, &end, 10);
	return errno == 0 && *end == '\0';
}

static enum MHD_Result answer(struct MHD_Connection *con, int ok)
{
	return reply(con, MHD_HTTP_OK, ok ? "SUCCESS" : "FAIL");
}

/* The gateway retries until it reads SUCCESS. So SUCCESS means "recorded,
 * or nothing to record", and FAIL "not recorded": a forged message, and
 * also a genuine one we cannot record (unknown mchOrderNo, amount mismatch,
 * a charge we already settled otherwise, a database error) so that the
 * gateway keeps retrying while an operator looks at the logged error; the
 * reconciliation settles the charge with cc_query in any case. */
static enum MHD_Result notify(struct listener *l, struct MHD_Connection *con,
                              const struct request *rq)
{
	static const char *const path = "/iotpay/notify";
	char err[512];
	struct gw_fields f;
	struct notify n;
	int rc;

	if (gw_fields_from_json(rq->body ? rq->body : "", rq->body_len, &f, err, sizeof(err)) < 0) {
		log_rejected(con, path, "malformed", err);
		return answer(con, 0);
	}
	n = (struct notify){.mch_order_no = field(&f, "mchOrderNo"),
	                    .pay_order_id = field(&f, "payOrderId"),
	                    .trans_id = field(&f, "transId"),
	                    .status = field(&f, "status"),
	                    .pay_succ_time = field(&f, "paySuccTime"),
	                    .amount = field(&f, "amount")};
	if (!gw_fields_verify(&f, l->cfg.gateway.merchant_key) ||
	    strcmp(field(&f, "mchId"), l->cfg.gateway.mch_id) != 0) {
		log_rejected(con, path, "bad signature or mchId", n.mch_order_no);
		gw_fields_free(&f);
		return answer(con, 0);
	}
	if (!n.mch_order_no[0] || !n.pay_order_id[0] || !is_int(n.amount) || !is_int(n.status) ||
	    strcmp(field(&f, "currency"), "CAD") != 0) {
		log_rejected(con, path, "missing or malformed field", n.mch_order_no);
		gw_fields_free(&f);
		return answer(con, 0);
	}
	if (strcmp(n.status, "2") != 0 && strcmp(n.status, "3") != 0) {
		log_event("warn", "notify_not_paid", "mch_order_no", n.mch_order_no, "status",
		          n.status, (char *)NULL);
		gw_fields_free(&f);
		return answer(con, 1); /* nothing to record; reconciliation queries it */
	}
	rc = with_db(l, record_notify, &n, err, sizeof(err));
	if (rc == N_RECORDED || rc == N_ALREADY)
		log_event("info", "notify", "mch_order_no", n.mch_order_no, "pay_order_id",
		          n.pay_order_id, "replay", rc == N_ALREADY ? "yes" : "no", (char *)NULL);
	else
		log_event("error", "notify_not_recorded", "mch_order_no", n.mch_order_no,
		          "pay_order_id", n.pay_order_id, "amount", n.amount, "reason",
		          rc == N_UNKNOWN    ? "unknown mchOrderNo"
		          : rc == N_MISMATCH ? "amount differs from the charge"
		          : rc == N_CONFLICT ? "charge already settled otherwise"
		                             : err,
		          (char *)NULL);
	gw_fields_free(&f);
	return answer(con, rc == N_RECORDED || rc == N_ALREADY);
}

/* ---- MHD callbacks ---- */

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *con)
{
	struct request *rq = calloc(1, sizeof(*rq));
	const char *q = strchr(uri, '?');

	(void)cls;
	(void)con;
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
		free(rq->body);
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
	char *b;

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
	if (rq->dropped || rq->body_len + *size > MAX_BODY) {
		free(rq->body);
		rq->body = NULL;
		rq->dropped += rq->body_len + *size;
		rq->body_len = 0;
		*size = 0;
		*ret = MHD_NO;
		return rq->dropped > MAX_DISCARD ? -1 : 1;
	}
	b = realloc(rq->body, rq->body_len + *size + 1);
	if (!b) {
		*ret = MHD_NO;
		return -1;
	}
	memcpy(b + rq->body_len, data, *size);
	rq->body = b;
	rq->body_len += *size;
	b[rq->body_len] = '\0';
	*size = 0;
	return 1;
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
	if (rq->query_too_long)
		return reply(con, MHD_HTTP_URI_TOO_LONG, "query string too long\n");
	for (r = 0; r < R_NONE && strcmp(url, routes[r].path) != 0; r++)
		;
	if (r == R_NONE)
		return reply(con, MHD_HTTP_NOT_FOUND, "not found\n");
	if (strcmp(method, routes[r].method) != 0)
		return reply_hdr(con, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n",
		                 MHD_HTTP_HEADER_ALLOW, routes[r].method);
	switch (r) {
	case R_RETURN:
		return enrol_return(l, con, rq);
	case R_NOTIFY:
		switch (collect_body(con, rq, data, size, &ret)) {
		case 1:
			return MHD_YES;
		case 0:
			return notify(l, con, rq);
		default:
			return ret;
		}
	case R_HEALTHZ:
		return healthz(l, con);
	default:
		return metrics(l, con);
	}
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[256];
	size_t n;

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
		msg[--n] = '\0';
	log_event("warn", "http_server", "msg", msg, (char *)NULL);
}

/* ---- start / stop ---- */

/* "host:port", "[v6]:port" or ":port" (every address). */
static int resolve(const char *address, struct sockaddr_storage *out, char *err, size_t errlen)
{
	char host[CFG_STR];
	const char *colon = strrchr(address, ':');
	struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV,
	                         .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai;
	size_t hl;
	int rc;

	if (!colon || !colon[1]) {
		snprintf(err, errlen, "listen.address '%s': expected host:port", address);
		return -1;
	}
	hl = (size_t)(colon - address);
	if (hl >= 2 && address[0] == '[' && address[hl - 1] == ']') {
		address++;
		hl -= 2;
	}
	snprintf(host, sizeof(host), "%.*s", (int)hl, address);
	rc = getaddrinfo(hl ? host : NULL, colon + 1, &hints, &ai);
	if (rc != 0) {
		snprintf(err, errlen, "listen.address '%s': %s", address, gai_strerror(rc));
		return -1;
	}
	memcpy(out, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	return 0;
}

/* Thousands of connections need as many descriptors: use the hard limit. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			log_event("warn", "rlimit_nofile", "error", strerror(errno), (char *)NULL);
	}
}

struct listener *listener_start(const struct cfg *c, int64_t (*clock)(void), char *err,
                                size_t errlen)
{
	struct listener *l = calloc(1, sizeof(*l));
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
	const union MHD_DaemonInfo *di;
	char port[8];

	if (!l) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	l->cfg = *c;
	l->clock = clock;
	snprintf(l->actor, sizeof(l->actor), "billingd-listener:%ld", (long)getpid());
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->freed, NULL);
	if (resolve(c->listen_address, &l->addr, err, errlen) < 0) {
		listener_stop(l);
		return NULL;
	}
	raise_nofile();
	flags |=
	    MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL : MHD_USE_POLL;
	if (l->addr.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	/* clang-format off */
	l->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, l,
		MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL, /* first, to catch all */
		MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&l->addr,
		MHD_OPTION_THREAD_POOL_SIZE, (unsigned)THREADS,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNS,
		MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)2048,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
		/* per connection: bounds the request line and headers */
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32768,
		MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
		MHD_OPTION_END);
	/* clang-format on */
	if (!l->d) {
		snprintf(err, errlen, "listen.address '%s': cannot listen there (in use?)",
		         c->listen_address);
		listener_stop(l);
		return NULL;
	}
	di = MHD_get_daemon_info(l->d, MHD_DAEMON_INFO_BIND_PORT);
	l->port = di ? di->port : 0;
	snprintf(port, sizeof(port), "%d", l->port);
	log_event("info", "listening", "address", c->listen_address, "port", port, (char *)NULL);
	return l;
}

int listener_port(const struct listener *l)
{
	return l->port;
}

void listener_stop(struct listener *l)
{
	int i;

	if (!l)
		return;
	if (l->d)
		MHD_stop_daemon(l->d);
	for (i = 0; i < THREADS; i++)
		PQfinish(l->db[i]);
	pthread_mutex_destroy(&l->mu);
	pthread_cond_destroy(&l->freed);
	explicit_bzero(l->cfg.gateway.merchant_key, sizeof(l->cfg.gateway.merchant_key));
	free(l);
}
