/* listener.c: billingd's HTTP listener on libmicrohttpd.
 *
 * GET /iotpay/return and POST /iotpay/notify take the gateway's signed
 * messages: anything not signed with our merchant key changes nothing; a
 * replay changes nothing either (the ledger updates are conditional). GET
 * /healthz and GET /metrics serve monitoring. MHD runs a small thread pool
 * (epoll where available); each request thread borrows a database connection
 * from a pool (db.h), reconnected when one is found down. Request
 * sizes are checked before anything is buffered beyond the limits. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "buf.h"
#include "charges.h"
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

struct listener {
	struct cfg cfg; /* a copy: the caller may reload its own */
	int64_t (*clock)(void);
	struct MHD_Daemon *d;
	struct sockaddr_storage addr;
	int port;
	char actor[64];
	struct db_pool *pool; /* one connection per thread */
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

/* ---- GET /healthz, GET /metrics ---- */

static int check_schema(PGconn *c, void *arg, char *err, size_t errlen)
{
	(void)arg;
	return migrate_check(c, migrate_embedded, migrate_embedded_count, err, errlen);
}

static enum MHD_Result healthz(struct listener *l, struct MHD_Connection *con)
{
	char err[512], line[520];

	if (db_pool_run(l->pool, check_schema, NULL, err, sizeof(err)) == 0)
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
	if (db_pool_run(l->pool, render, &r, err, sizeof(err)) < 0) {
		log_event("warn", "metrics_database", "error", err, (char *)NULL);
		if (render(NULL, &r, err, sizeof(err)) < 0)
			return reply(con, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	}
	return send_body(con, MHD_HTTP_OK, r.out, strlen(r.out), MHD_RESPMEM_MUST_FREE,
	                 "text/plain; version=0.0.4; charset=utf-8", NULL, NULL);
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

static int record_return(PGconn *c, void *arg, char *err, size_t errlen)
{
	const struct gw_return *e = arg;

	return customers_record_return(c, e->customer_id, e->success, e->card, e->card_type,
	                               e->expiry, err, errlen);
}

static enum MHD_Result enrol_return(struct listener *l, struct MHD_Connection *con,
                                    const char *path, const struct request *rq)
{
	char err[512];
	struct gw_fields f;
	struct gw_return e;
	int rc;

	if (!rq->query ||
	    gw_fields_from_return(rq->query, l->cfg.return_url, &f, err, sizeof(err)) < 0) {
		log_rejected(con, path, "malformed", rq->query ? err : "no query string");
		return reply(con, MHD_HTTP_BAD_REQUEST, "bad request\n");
	}
	gw_return_read(&f, &e);
	if (!gw_fields_verify(&f, l->cfg.gateway.merchant_key)) {
		log_rejected(con, path, "bad signature", e.customer_id);
		gw_fields_free(&f);
		return reply(con, MHD_HTTP_FORBIDDEN, "forbidden\n");
	}
	if (e.success < 0) {
		log_rejected(con, path, "bad retCode", e.result);
		gw_fields_free(&f);
		return reply(con, MHD_HTTP_BAD_REQUEST, "bad request\n");
	}
	rc = db_pool_run(l->pool, at_clock, &(struct clocked){l, record_return, &e}, err,
	                 sizeof(err));
	switch (rc) {
	case CUSTOMERS_CHANGED:
	case CUSTOMERS_UNCHANGED:
		log_event("info", "enrolment_return", "customer", e.customer_id, "result", e.result,
		          "replay", rc == CUSTOMERS_UNCHANGED ? "yes" : "no", (char *)NULL);
		gw_fields_free(&f);
		return reply_hdr(con, MHD_HTTP_FOUND, "", MHD_HTTP_HEADER_LOCATION,
		                 e.success ? l->cfg.success_url : l->cfg.failure_url);
	case CUSTOMERS_UNKNOWN:
		log_rejected(con, path, "unknown customer", e.customer_id);
		gw_fields_free(&f);
		return reply(con, MHD_HTTP_NOT_FOUND, "unknown customer\n");
	case CUSTOMERS_INVALID:
		log_rejected(con, path, "bad card fields", err);
		gw_fields_free(&f);
		return reply(con, MHD_HTTP_BAD_REQUEST, "bad request\n");
	default:
		log_event("error", "enrolment_return", "customer", e.customer_id, "error", err,
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
	rc = db_pool_run(l->pool, at_clock, &(struct clocked){l, record_notify, &n}, err,
	                 sizeof(err));
	if (rc == CHARGES_PAID_RECORDED || rc == CHARGES_PAID_ALREADY)
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
	return answer(con, rc == CHARGES_PAID_RECORDED || rc == CHARGES_PAID_ALREADY);
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
	switch (r) {
	case R_RETURN:
		return enrol_return(l, con, url, rq);
	case R_NOTIFY:
		switch (collect_body(con, rq, data, size, &ret)) {
		case 1:
			return MHD_YES;
		case 0:
			return notify(l, con, url, rq);
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
    __attribute__((format(printf, 2, 0)));
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
	l->pool = db_pool_new(c->database_url, l->actor, THREADS);
	if (!l->pool) {
		snprintf(err, errlen, "out of memory");
		listener_stop(l);
		return NULL;
	}
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
	if (!l)
		return;
	if (l->d)
		MHD_stop_daemon(l->d);
	db_pool_free(l->pool);
	explicit_bzero(l->cfg.gateway.merchant_key, sizeof(l->cfg.gateway.merchant_key));
	free(l);
}
